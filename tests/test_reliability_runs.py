"""Hostile and odd input on run folders: concurrent writers, runs without a model, resumes with other
settings, models that predict NaN or cannot be loaded, a full disk under the submission.

Every case runs real training, real Keras files and real processes on tiny generated records; a concurrent
writer is a real second process, stopped (SIGSTOP) while it holds its run, so nothing depends on timing.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import COMMAND_TIMEOUT_S, STATE_TIMEOUT_S
from disk import small_tmpfs
from run_fixtures import make_config, make_model, make_run, random_images, write_sample_submission, write_split
from train_helpers import SIZE, data, python

from kit.errors import KitError

LIVE = "live"  # run.id of the runs these tests make
OUTER_TIMEOUT = COMMAND_TIMEOUT_S  # seconds: generous outer limits only, never a measure of speed
N_TEST = 10


# --- tiny records and configs -----------------------------------------------------------------------------


def _write_records(records_root: Path, folds: int = 3, n_train: int = 48, n_val: int = 16) -> None:
    """Binary train (with a fold column), val and test shards of comp ``tiny`` in the kit.data.records format."""
    for plan in ("holdout0.2-seed42", f"kfold{folds}-seed42"):  # the same rows serve `kit train` and `kit train folds=N`
        _write_plan(records_root / "tiny" / str(SIZE) / plan, folds, n_train, n_val)


def _raw(tmp: Path) -> Path:
    """The data root the tiny records say they were built from (it holds no files: `kit train` uses the records)."""
    return (tmp / "raw").resolve()


def _write_plan(folder: Path, folds: int, n_train: int, n_val: int) -> None:
    import tensorflow as tf

    from kit.data import schema
    from kit.data.manifest import VERSION

    folder.mkdir(parents=True)
    shards, counts = {}, {}
    for split, n, seed in (("train", n_train, 0), ("val", n_val, 1), ("test", N_TEST, 2)):
        x, y = data(n, seed)
        name = f"{split}-00000{schema.SHARD_SUFFIX}"
        with tf.io.TFRecordWriter(str(folder / name)) as writer:
            for i in range(n):
                label = int(y[i, 0]) if split != "test" else -1
                soft = np.eye(2, dtype="float32")[label] if label >= 0 else np.zeros(2, "float32")
                fold = i % folds if split == "train" else -1
                png = tf.io.encode_png(x[i].astype("uint8")).numpy()
                writer.write(schema.serialize(schema.Example(png, label, soft, f"{split}{i}", SIZE, SIZE, fold)))
        shards[split], counts[split] = [name], {"total": n}
    manifest = {"version": VERSION, "comp": "tiny", "image_size": SIZE, "classes": ["human", "ai"], "num_classes": 2}
    manifest |= {"image_format": "png", "counts": counts, "shards": shards, "skipped": [], "fingerprint": "runs-t1"}
    manifest["source"] = {"data_root": str(_raw(folder.parents[3])), "split_plan": folder.name}
    (folder / schema.MANIFEST).write_text(json.dumps(manifest))


def _settings(tmp: Path, *extra: str) -> list[str]:
    return [
        "model=cnn",
        "comp.name=tiny",
        "comp.classes=[]",
        f"data.root={_raw(tmp)}",
        f"data.records_root={tmp / 'records'}",
        f"run.root={tmp / 'runs'}",
        f"run.id={LIVE}",
        f"model.image_size={SIZE}",
        "model.options={filters: [4]}",
        "augment.mode=none",
        "train.batch_size=16",
        "train.verbose=0",
        "train.schedule=constant",
        "train.early_stopping_patience=1000",
        *extra,
    ]


def _runs(tmp: Path) -> Path:
    return tmp / "runs" / "tiny" / "cnn"


def _snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (but the lock) and its bytes: what "the run was not touched" compares."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "lock"}


# --- case 8: one writer per run folder ----------------------------------------------------------------------

TRAIN_SCRIPT = """
import sys
from kit.config import load_config
from kit.train import kfold, trainer
cfg = load_config(sys.argv[1:])
(kfold.train_folds if cfg.data.folds > 1 else trainer.train)(cfg)
"""


def _stopped_writer(settings: list[str], state: Path) -> subprocess.Popen:
    """A real ``kit train`` in another process, stopped (SIGSTOP) once its first epoch is checkpointed: it holds its
    run the way a live training does, for as long as the test needs."""
    proc = python(TRAIN_SCRIPT.replace("sys.argv[1:]", repr(settings)))
    deadline = time.monotonic() + STATE_TIMEOUT_S
    while not state.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGSTOP)
    assert proc.poll() is None, proc.communicate()[0]  # still training when stopped: the test never passes by luck
    return proc


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "extra", "state"),
    [
        ("train --resume", [], "checkpoint/state.json"),
        ("train folds=3 --resume", ["data.folds=3"], "fold0/checkpoint/state.json"),
    ],
)
def test_a_second_writer_of_a_live_run_is_refused_naming_the_process(tmp_path: Path, kind: str, extra: list, state: str):
    from kit.config import load_config
    from kit.runs import writing
    from kit.train import kfold, trainer

    _write_records(tmp_path / "records")
    run_dir = _runs(tmp_path) / LIVE
    live = _stopped_writer(_settings(tmp_path, "train.epochs=500", *extra), run_dir / state)
    try:
        before = _snapshot(run_dir)
        cfg = load_config(_settings(tmp_path, "train.epochs=500", *extra))
        entry = kfold.train_folds if cfg.data.folds > 1 else trainer.train
        with pytest.raises(KitError, match=f"is being written by process {live.pid} \\(python -c") as refused:
            entry(cfg, resume=True)
        assert str(run_dir) in refused.value.one_line() and "\n" not in refused.value.one_line()
        # The command line: one line, exit 2, no traceback.
        cli = subprocess.run(
            [sys.executable, "-m", "kit", "train", *_settings(tmp_path, "train.epochs=500", *extra), "--resume"],
            cwd=Path(__file__).resolve().parent.parent,
            capture_output=True,
            text=True,
            timeout=OUTER_TIMEOUT,
        )
        errors = [line for line in cli.stderr.splitlines() if line.startswith("error:")]
        assert cli.returncode == 2 and len(errors) == 1 and f"process {live.pid}" in errors[0], cli.stderr
        assert "Traceback" not in cli.stdout + cli.stderr
        assert _snapshot(run_dir) == before, kind  # nothing of the live run was touched
    finally:
        live.send_signal(signal.SIGKILL)
        live.communicate(timeout=OUTER_TIMEOUT)
    # SIGKILLed, the writer's lock is gone with it: the next writer (a --resume) gets the run.
    with writing(run_dir):
        assert (run_dir / "lock").read_text() == f"{os.getpid()}\n"


# --- case 9: only runs with a model are finished, and latest -----------------------------------------------


def _good_run(cfg, name: str) -> Path:
    run_dir = make_run(cfg, _runs_root(cfg) / name, make_model(1, seed=0))
    (run_dir / "done").write_text("x\n")
    return run_dir


def _runs_root(cfg) -> Path:
    return Path(cfg.run.root) / cfg.comp.name / cfg.model.name


def _newer(path: Path, than: Path) -> None:
    stamp = than.stat().st_mtime + 10
    os.utime(path, (stamp, stamp))


def _done_without_model(cfg, run_dir: Path) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("{}\n")
    (run_dir / "done").write_text("x\n")  # what an epochs=0 run was marked on the old code


def _kfold_parent_missing_a_fold(cfg, run_dir: Path) -> None:
    make_run(cfg, run_dir / "fold0", make_model(1, seed=0))
    (run_dir / "fold1").mkdir()
    (run_dir / "kfold.json").write_text('{"folds": 2}')
    (run_dir / "done").write_text("x\n")


def _model_without_done(cfg, run_dir: Path) -> None:
    make_run(cfg, run_dir, make_model(1, seed=1))


@pytest.mark.slow
@pytest.mark.parametrize("newer", [_done_without_model, _kfold_parent_missing_a_fold, _model_without_done])
def test_latest_run_and_predict_skip_runs_without_a_model(tmp_path: Path, newer):
    from kit.predict import predict
    from kit.runs import latest_run

    cfg = make_config(tmp_path, ["neg", "pos"])
    ids = [f"t{i}" for i in range(N_TEST)]
    write_split(cfg, "test", random_images(N_TEST, seed=1), np.full(N_TEST, -1), ids)
    write_sample_submission(cfg, ids)
    good = _good_run(cfg, "good")
    newer(cfg, _runs_root(cfg) / "newer")
    _newer(_runs_root(cfg) / "newer", good)
    assert latest_run(cfg) == good
    assert predict(cfg, []) == good / "submission.csv"


@pytest.mark.slow
def test_a_run_that_ends_without_best_keras_is_not_marked_done(tmp_path: Path):
    """train.epochs=0 (now refused at load time too) or an epoch that never yields a model: said, never `done`."""
    from kit.config import load_config
    from kit.runs import latest_run
    from kit.train.trainer import train

    _write_records(tmp_path / "records")
    cfg = load_config(_settings(tmp_path, "train.epochs=1"))
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=0))  # past the load-time check
    with pytest.raises(KitError, match="ended without a best.keras .*not marked done"):
        train(cfg)
    assert not (_runs(tmp_path) / LIVE / "done").exists()
    with pytest.raises(KitError, match="no finished run"):
        latest_run(cfg)


# --- case 11: a resume keeps the settings the run was started with -------------------------------------------


@pytest.fixture(scope="module")
def interrupted_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained epoch of run ``live``, then "killed" before ``done``: what --resume continues."""
    from kit.config import load_config
    from kit.train.trainer import train

    tmp = tmp_path_factory.mktemp("resume")
    _write_records(tmp / "records")
    run_dir = train(load_config(_settings(tmp, "train.epochs=1")))
    (run_dir / "done").unlink()
    return tmp


@pytest.mark.slow
@pytest.mark.parametrize(
    ("change", "named"),
    [
        ("model.options={filters: [8]}", "model.options.filters=[4] there, [8] now"),
        ("model.dropout=0.5", "model.dropout=0.3 there, 0.5 now"),  # the cnn preset's 0.3
        ("model=resnet20", None),  # another model is another run folder: nothing to resume there
        ("augment.mode=online", "augment.mode='none' there, 'online' now"),
        ("train.learning_rate=0.5", ", 0.5 now"),
        ("train.label_smoothing=0.1", "train.label_smoothing=0.0 there, 0.1 now"),
        ("train.epochs=3", "train.epochs=1 there, 3 now"),  # phase 1 is finished: more epochs would never run
    ],
)
def test_resume_with_other_settings_is_refused_before_touching_the_run(interrupted_run: Path, change: str, named):
    from kit.config import load_config
    from kit.train.trainer import train

    run_dir = _runs(interrupted_run) / LIVE
    before = _snapshot(run_dir)
    cfg = load_config(_settings(interrupted_run, "train.epochs=1", change))
    if named is None:
        assert train(cfg, resume=True) != run_dir  # a new run of that model: this one is not involved
    else:
        with pytest.raises(KitError, match="cannot resume .* with other settings") as refused:
            train(cfg, resume=True)
        line = refused.value.one_line()
        assert named in line and change.split("=")[0] in line and str(run_dir) in line
    assert _snapshot(run_dir) == before


@pytest.mark.slow
def test_resume_with_the_same_settings_or_a_free_one_continues(interrupted_run: Path):
    from kit.config import load_config
    from kit.train.trainer import train

    run_dir = _runs(interrupted_run) / LIVE
    # How it reports and what comes after training are free: a resume may be quieter, or predict in other batches.
    cfg = load_config(_settings(interrupted_run, "train.epochs=1", "train.verbose=2", "predict.batch_size=7"))
    assert train(cfg, resume=True) == run_dir
    assert (run_dir / "done").is_file() and len(pd.read_csv(run_dir / "history.csv")) == 1


# --- case 12: model outputs ------------------------------------------------------------------------------------


@pytest.fixture()
def binary_comp(tmp_path: Path):
    cfg = make_config(tmp_path, ["neg", "pos"])
    ids = [f"t{i}" for i in range(N_TEST)]
    write_split(cfg, "test", random_images(N_TEST, seed=1), np.full(N_TEST, -1), ids)
    write_sample_submission(cfg, ids)
    return cfg


def _nan_weights(model, rows: slice = slice(None)):
    kernel, bias = model.layers[-1].get_weights()
    kernel[rows] = np.nan
    model.layers[-1].set_weights([kernel, bias])
    return model


@pytest.mark.slow
@pytest.mark.parametrize(
    ("outputs", "classes", "poison"),
    [
        (1, ["neg", "pos"], slice(None)),  # sigmoid of NaN
        (3, ["a", "b", "c"], slice(None)),  # softmax of NaN
        (1, ["neg", "pos"], slice(0, 1)),  # one NaN weight is enough to poison every example
    ],
)
def test_non_finite_probabilities_are_refused_naming_the_run(tmp_path: Path, outputs: int, classes: list, poison):
    from kit.predict import predict

    cfg = make_config(tmp_path, classes)
    ids = [f"t{i}" for i in range(N_TEST)]
    write_split(cfg, "test", random_images(N_TEST, seed=1), np.full(N_TEST, -1), ids)
    write_sample_submission(cfg, ids)
    run_dir = make_run(cfg, tmp_path / "runs" / "nan", _nan_weights(make_model(outputs, seed=0), poison))
    with pytest.raises(KitError, match=f"run {run_dir} predicted non-finite probabilities") as refused:
        predict(cfg, [run_dir])
    assert "history.csv" in refused.value.one_line()
    assert not (run_dir / "submission.csv").exists() and not (run_dir / "probabilities.csv").exists()


def _truncated(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _not_a_zip(path: Path) -> None:
    path.write_text("this is not a Keras file\n")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _garbage_config(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("metadata.json", '{"keras_version": "3.0.0"}')
        archive.writestr("config.json", '{"class_name": "NoSuchLayer", "config": {}}')


def _code_inside(path: Path, marker: Path) -> None:
    """A model whose Lambda layer writes ``marker`` whenever its code runs (Keras stores the function's bytecode)."""
    import keras

    hostile = eval(f"lambda x: (__import__('pathlib').Path({str(marker)!r}).write_text('ran'), x)[1]")  # noqa: S307
    inputs = keras.Input((8, 8, 3))
    outputs = keras.layers.Dense(1, activation="sigmoid")(keras.layers.Flatten()(keras.layers.Lambda(hostile)(inputs)))
    keras.Model(inputs, outputs).save(path)
    marker.unlink(missing_ok=True)  # building the model above ran it once, here


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncated", "not a zip", "empty", "garbage config", "code inside"])
def test_a_damaged_or_hostile_best_keras_is_one_line_naming_it(binary_comp, tmp_path: Path, damage: str):
    from kit.predict import predict

    run_dir = make_run(binary_comp, tmp_path / "runs" / "bad", make_model(1, seed=0))
    path, marker = run_dir / "best.keras", tmp_path / "ran.txt"
    {
        "truncated": _truncated,
        "not a zip": _not_a_zip,
        "empty": _empty,
        "garbage config": _garbage_config,
        "code inside": lambda p: _code_inside(p, marker),
    }[damage](path)
    with pytest.raises(KitError, match=f"{path} cannot be loaded as a Keras model") as refused:
        predict(binary_comp, [run_dir])
    assert "\n" not in refused.value.one_line()
    assert not marker.exists()  # safe_mode kept: the file's code never ran
    assert not (run_dir / "submission.csv").exists()


# --- case 13: a full disk under predict.output ------------------------------------------------------------------


def _fill(mount: Path, leave_pages: int) -> None:
    """Fill the tmpfs at ``mount``, then free ``leave_pages`` pages (4 KiB each) again."""
    filler = mount / "filler"
    with open(filler, "wb", buffering=0) as handle:
        try:
            while True:
                handle.write(b"\0" * 4096)
        except OSError:
            pass
    pages = -(-filler.stat().st_size // 4096)
    os.truncate(filler, max(0, pages - leave_pages) * 4096)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("leave_pages", "previous"),
    [(0, False), (1, False), (1, True), (0, True)],  # 1 page: room for submission.csv but not probabilities.csv
)
def test_a_full_disk_names_the_path_and_leaves_both_outputs_in_step(binary_comp, tmp_path, leave_pages, previous):
    from kit.predict import predict

    run_dir = make_run(binary_comp, tmp_path / "runs" / "good", make_model(1, seed=0))
    with small_tmpfs(tmp_path, "64k") as mount:
        out = mount / "submission.csv"
        old = {"submission.csv": "old submission\n", "probabilities.csv": "old probabilities\n"}
        if previous:
            for name, text in old.items():
                (mount / name).write_text(text)
        cfg = dataclasses.replace(binary_comp, predict=dataclasses.replace(binary_comp.predict, output=str(out)))
        _fill(mount, leave_pages)
        with pytest.raises(KitError, match=f"cannot write {mount}/(submission|probabilities).csv: no space left") as failed:
            predict(cfg, [run_dir])
        assert "predict.output=" in failed.value.one_line()
        left = {p.name: p.read_text() for p in mount.iterdir() if p.name != "filler"}
        assert left == (old if previous else {})  # no temp file, nothing half-written, the pair never out of step


@pytest.mark.slow
@pytest.mark.parametrize(
    ("damaged", "named"),
    [
        ("checkpoint weights", "cannot be loaded to resume the run"),  # killed mid-phase: the resume loads them
        ("best.keras", "best.keras cannot be loaded as a Keras model"),  # killed before `done`: the end loads it
    ],
)
def test_a_resume_from_damaged_files_is_one_line_naming_them(tmp_path: Path, damaged: str, named: str):
    from kit.config import load_config
    from kit.io import write_json
    from kit.runs import read_state
    from kit.train.trainer import train

    _write_records(tmp_path / "records")
    settings = _settings(tmp_path, "train.epochs=2")
    run_dir = train(load_config(settings))
    (run_dir / "done").unlink()
    state = read_state(run_dir)
    if damaged == "checkpoint weights":  # the resume point of a run killed during its second epoch
        write_json(run_dir / "checkpoint" / "state.json", {**state, "next_epoch": 1, "phase_done": False})
        target = run_dir / "checkpoint" / state["weights"]
    else:
        target = run_dir / "best.keras"
    target.write_bytes(target.read_bytes()[: target.stat().st_size // 3])
    with pytest.raises(KitError, match=named) as refused:
        train(load_config(settings), resume=True)
    assert str(target) in refused.value.one_line()
    assert not (run_dir / "done").exists()
