"""Reliability, interruptions and full disks: a SIGKILL at any moment loses no finished work, rerunning the
same command completes with the result of an uninterrupted run, and no half-written file is ever read.

Covered elsewhere (not repeated): SIGKILL during a records build and a full disk during one
(tests/test_records.py), SIGKILL during training then --resume (tests/test_trainer.py), corrupt or hostile
archives (tests/test_kaggle.py). Tuning is the tuner's own tests' business.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import COMMAND_TIMEOUT_S, REAP_TIMEOUT_S, wait_until
from disk import fill, small_tmpfs
from fake_kaggle import demo_files, make_zip, write_comp_yaml

from kit.config import load_config
from kit.kaggle import download as kaggle  # the module: download(), MARKER, PARTIAL_DIR

pytest_plugins = ["fake_kaggle"]  # the fake_kaggle fixture

ROOT = Path(__file__).resolve().parent.parent
TF_NOISE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")  # TF's C++ start-up lines


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "PYTHONUNBUFFERED": "1"}


def _kit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kit", *args], cwd=cwd, env=_env(), capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )


def _kill_when(proc: subprocess.Popen, ready, what: str) -> None:
    """SIGKILL ``proc`` as soon as ``ready()`` is true; fail if it ends first."""
    try:
        wait_until(ready, what, proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()  # a no-op after the SIGKILL; a failed wait must not leave the child running
        proc.wait(timeout=REAP_TIMEOUT_S)
    assert proc.returncode == -signal.SIGKILL


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------- download


@pytest.mark.slow
def test_sigkill_during_download_then_rerun_equals_a_clean_download(fake_kaggle, tmp_path: Path) -> None:
    # The client writes in 1 MB pieces: 3 MB of incompressible bytes, held after 2 MB, give a partial archive on disk.
    files = {**demo_files(), "extra/blob.bin": np.random.default_rng(0).bytes(3_000_000)}
    fake_kaggle.competitions["fake-comp"] = make_zip(files)
    fake_kaggle.file_hold_after = 2_000_000
    comp = write_comp_yaml(tmp_path)
    raw = tmp_path / "raw"
    args = ["data", f"comp={comp}", f"data.root={raw}", f"data.records_root={tmp_path / 'rec'}"]
    partial = raw / kaggle.PARTIAL_DIR / "fake-comp.zip"
    proc = subprocess.Popen(
        [sys.executable, "-m", "kit", *args], cwd=tmp_path, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    _kill_when(proc, lambda: partial.is_file() and partial.stat().st_size > 0, "the archive started arriving")
    assert not (raw / kaggle.MARKER).exists() and not (raw / "train.csv").exists()  # nothing looks finished
    assert partial.stat().st_size < len(fake_kaggle.competitions["fake-comp"])

    fake_kaggle.file_hold_after = None
    fake_kaggle.file_release.set()
    result = _kit(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (raw / kaggle.MARKER).is_file() and not (raw / kaggle.PARTIAL_DIR).exists()

    clean = tmp_path / "clean"
    kaggle.download(load_config([f"comp={comp}", f"data.root={clean}"]))
    got, want = _tree(raw), _tree(clean)
    got.pop(kaggle.MARKER), want.pop(kaggle.MARKER)  # holds the date
    assert got == want
    assert got["extra/blob.bin"] == files["extra/blob.bin"]


# ---------------------------------------------------------------------------------------------- predict

PREDICT_COMP = """\
comp:
  name: tiny
  source: local
  classes: [a, b]
  metric: f1
  sample_submission: sample_submission.csv
  submission: {id_column: id, label_column: label, label_format: index}
"""


@pytest.fixture
def predict_setup(tmp_path: Path) -> tuple[list[str], Path]:
    """A run (best.keras of a small dense model) and 1000 test records of 8x8 pixels: prediction takes a second or two."""
    from run_fixtures import make_config, make_model, make_run, random_images, write_sample_submission, write_split

    cfg = make_config(tmp_path, ["a", "b"])
    n = 1000
    ids = [f"t{i:05d}" for i in range(n)]
    write_split(cfg, "test", random_images(n, 1), np.full(n, -1), ids)
    write_sample_submission(cfg, ids)
    run_dir = make_run(cfg, tmp_path / "runs" / "tiny" / "cnn" / "r1", make_model(1, seed=3))
    comp = tmp_path / "tiny.yaml"
    comp.write_text(PREDICT_COMP)
    args = [
        "predict",
        f"comp={comp}",
        "model=cnn",
        f"data.root={cfg.data.root}",
        f"data.records_root={cfg.data.records_root}",
        f"run.root={cfg.run.root}",
        "predict.batch_size=2",
        "threshold=0.5",
        "tta=flip",
        f"run={run_dir}",
    ]
    return args, run_dir


# `kit ARGS` whose model answers its first batches and then waits to be killed: the kill lands mid-prediction
# however fast the child runs compared with the test watching it.
KIT_PREDICT_THEN_HOLD = """
import runpy, sys, time
from kit import inference
predict_probabilities = inference.predict_probabilities
class HeldModel:
    def __init__(self, model):
        self.model, self.calls = model, 0
    def __getattr__(self, name):
        return getattr(self.model, name)
    def predict_on_batch(self, batch):
        self.calls += 1
        while self.calls > 10:
            time.sleep(1)
        return self.model.predict_on_batch(batch)
inference.predict_probabilities = lambda model, *args, **kwargs: predict_probabilities(HeldModel(model), *args, **kwargs)
sys.argv = ["kit", *sys.argv[1:]]
runpy.run_module("kit", run_name="__main__")
"""


@pytest.mark.slow
def test_sigkill_during_predict_leaves_no_submission_and_rerun_matches(predict_setup, tmp_path: Path) -> None:
    args, run_dir = predict_setup
    submission = run_dir / "submission.csv"
    log = tmp_path / "predict.log"
    with open(log, "w") as handle:
        command = [sys.executable, "-c", KIT_PREDICT_THEN_HOLD, *args]
        proc = subprocess.Popen(command, cwd=tmp_path, env=_env(), stdout=handle, stderr=handle)
        _kill_when(proc, lambda: "predict:" in log.read_text(errors="replace"), "prediction started")
    assert not submission.exists(), "predict finished before the kill; make it slower"
    assert not (run_dir / "probabilities.csv").exists()

    # The rerun, watched by a reader that must only ever see a complete file.
    seen: list[int] = []
    stop = threading.Event()

    def watch() -> None:
        while True:
            finished = stop.is_set()  # one last look after the run ended: a busy machine may not have let us look before
            if submission.exists():
                seen.append(len(pd.read_csv(submission)))
            if finished:
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        result = _kit(*args, cwd=tmp_path)
    finally:
        stop.set()
        watcher.join()
    assert result.returncode == 0, result.stderr
    rerun = submission.read_bytes()
    assert seen and set(seen) == {1000}
    assert not [p.name for p in run_dir.iterdir() if p.name.startswith(".") and not p.name.endswith(".tmp")]

    from kit.predict import predict

    clean = tmp_path / "clean" / "submission.csv"  # an uninterrupted run (in-process: no second TF start-up)
    settings = [a for a in args[1:] if not a.startswith("run=")] + [f"predict.output={clean}"]
    predict(load_config(settings), [run_dir])
    assert clean.read_bytes() == rerun


# ---------------------------------------------------------------------------------------------- full disk


@pytest.fixture
def small_disk(tmp_path: Path):
    """A 4 MB tmpfs (needs root and mount rights; skipped elsewhere)."""
    with small_tmpfs(tmp_path, "4m") as mount:
        yield mount


@pytest.mark.slow
def test_full_disk_while_training_is_one_line_and_keeps_the_previous_best(small_disk: Path, tmp_path: Path) -> None:
    import keras
    from run_fixtures import tiny_cnn_records

    from kit.runs import DONE
    from kit.train import trainer

    settings = [*tiny_cnn_records(tmp_path), f"run.root={small_disk}"]
    first = trainer.train(load_config([*settings, "run.id=first"]))
    best = first / "best.keras"
    before = best.read_bytes()

    filler = fill(small_disk, leave=16384)  # room for the small files of a new run, not for a model
    result = _kit("train", *settings, "run.id=second", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not TF_NOISE.match(line)]
    errors = [line for line in lines if line.startswith("error:")]
    assert len(errors) == 1 and "no space left on device" in errors[0] and "run.root" in errors[0], result.stderr
    assert best.read_bytes() == before  # the previous good state is untouched and loads
    keras.models.load_model(best, compile=False)
    second = small_disk / "demo" / "cnn" / "second"
    assert not [p for p in second.rglob(".*") if p.is_file()], "a temp file was left behind"
    assert not (second / "best.keras").exists() or keras.models.load_model(second / "best.keras", compile=False)

    filler.unlink()  # space again: rerunning with --resume completes the run (in-process: no second TF start-up)
    assert trainer.train(load_config([*settings, "run.id=second"]), resume=True) == second
    assert (second / DONE).is_file()
    keras.models.load_model(second / "best.keras", compile=False)
