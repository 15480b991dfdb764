"""Trainer: two-phase fine-tuning, best checkpoint, history, resume after SIGKILL, run directories."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import numpy as np
import pytest
from conftest import COMMAND_TIMEOUT_S, REAP_TIMEOUT_S, wait_until
from train_helpers import SIZE, config, data, datasets, python, tiny_cnn_overrides, tiny_pretrained

from kit.errors import KitError


def _history(run_dir: Path) -> list[dict]:
    with open(run_dir / "history.csv", newline="") as handle:
        return list(csv.DictReader(handle))


@pytest.mark.slow
def test_a_backbone_without_weights_learns_batchnorm_statistics_in_phase_two(tmp_path: Path) -> None:
    """model.weights=none: no ImageNet statistics to keep, so phase 2 trains the BatchNorm layers it unfreezes (a
    frozen one normalises with mean 0 and variance 1 for good, and a random backbone then learns nothing)."""
    import dataclasses

    import keras
    import tensorflow as tf

    from kit.models.common import BN_MOMENTUM
    from kit.models.pretrained import get_backbone
    from kit.models.registry import build_model
    from kit.train.fitting import fit_phases

    cfg = config(tmp_path, epochs=1, fine_tune={"epochs": 1, "learning_rate": 1e-2, "unfreeze": -1})
    cfg.model = dataclasses.replace(cfg.model, name="mobilenetv3_small", image_size=32, weights="none")
    model = build_model(cfg.model, 2)
    norms = [layer for layer in get_backbone(model).layers if isinstance(layer, keras.layers.BatchNormalization)]
    before = [layer.moving_mean.numpy().copy() for layer in norms]
    x, y = data(32, 0, size=32)
    train_ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).repeat()
    val_ds = tf.data.Dataset.from_tensor_slices(data(16, 1, size=32)).batch(8)

    fit_phases(cfg, model, train_ds, val_ds, tmp_path / "run", steps_per_epoch=2)

    assert all(layer.trainable for layer in norms)
    assert {layer.momentum for layer in norms} == {BN_MOMENTUM}  # keras.applications' 0.999 would lag for thousands of steps
    # The weights after phase 2's epoch (the model in memory holds the best epoch's, which may be phase 1's).
    model.load_weights(tmp_path / "run" / "checkpoint" / "epoch-0002.weights.h5")
    kept = sum(np.array_equal(layer.moving_mean.numpy(), then) for layer, then in zip(norms, before, strict=True))
    assert kept == 0, f"{kept} of {len(norms)} BatchNorm layers kept their initial statistics"


@pytest.mark.slow
def test_two_phase_fine_tuning(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import keras

    from kit.train.fitting import fit_phases

    cfg = config(tmp_path, epochs=3, learning_rate=3e-2, fine_tune={"epochs": 3, "learning_rate": 1e-2, "unfreeze": 3})
    cfg.model.weights = "imagenet"  # a pretrained backbone: its BatchNorm statistics are kept (not loaded here)
    model = tiny_pretrained()
    backbone = model.get_layer("backbone")
    moving = {
        layer.name: np.array(layer.moving_mean) for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)
    }
    train_ds, val_ds = datasets(16)
    run_dir = tmp_path / "run"

    result = fit_phases(cfg, model, train_ds, val_ds, run_dir, steps_per_epoch=4)

    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("phase ")]
    assert len(lines) == 2
    assert "phase 1/2: head only" in lines[0] and " 9 trainable parameters" in lines[0]  # Dense(8 -> 1)
    # Phase 2, unfreeze=3: the top three backbone layers are conv2, bn2, relu2; only conv2 has trainable weights.
    assert "phase 2/2" in lines[1] and f" {9 + 3 * 3 * 4 * 8 + 8} trainable parameters" in lines[1]
    assert sorted(w.path for w in model.trainable_weights) == ["conv2/bias", "conv2/kernel", "head/bias", "head/kernel"]
    for layer in backbone.layers:  # BatchNorm stays frozen and in inference mode: statistics untouched
        if isinstance(layer, keras.layers.BatchNormalization):
            assert not layer.trainable
            np.testing.assert_array_equal(np.array(layer.moving_mean), moving[layer.name])

    rows = _history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5, 6]  # counted from 1, as the log's "Epoch 1/3"
    assert [int(r["phase"]) for r in rows] == [1, 1, 1, 2, 2, 2]
    for phase in ("1", "2"):
        losses = [float(r["loss"]) for r in rows if r["phase"] == phase]
        assert losses[-1] < losses[0], f"loss did not fall in phase {phase}: {losses}"
    assert {"val_f1_score", "val_accuracy", "val_auc", "learning_rate"} <= set(rows[0])

    assert result["monitor"] == "val_f1_score" and result["split"] == "val"
    best = max(float(r["val_f1_score"]) for r in rows)
    assert result["best"] == pytest.approx(best)
    loaded = keras.models.load_model(run_dir / "best.keras")
    assert loaded.get_layer("backbone") is not None
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["metrics"]["val_f1_score"] == pytest.approx(best, abs=1e-4)  # final metrics are the best model's
    best_row = next(r for r in rows if int(r["epoch"]) == metrics["best_epoch"])  # counted from 1 in both files
    assert float(best_row["val_f1_score"]) == pytest.approx(best) and int(best_row["phase"]) == metrics["best_phase"]
    assert (run_dir / "plots" / "learning_curves.png").stat().st_size > 0
    assert any((run_dir / "tensorboard").rglob("events.out.tfevents.*"))
    state = json.loads((run_dir / "checkpoint" / "state.json").read_text())
    assert state["phase"] == 2 and state["next_epoch"] == 6 and state["phase_done"]
    assert [p.name for p in (run_dir / "checkpoint").glob("*.weights.h5")] == ["epoch-0006.weights.h5"]


RESUME_SCRIPT = """
import os, sys, tensorflow as tf
from train_helpers import config, datasets, tiny_pretrained
from kit.train.fitting import fit_phases
tf.random.set_seed(0)
hold_at = int(os.environ.get("HOLD_AT_EPOCH", "0"))
state_path = os.path.join(sys.argv[2], "checkpoint", "state.json")
def hold():  # once state.json says next_epoch >= HOLD_AT_EPOCH, batches stop coming: the test kills it there, at any speed
    import json, time
    while hold_at and os.path.isfile(state_path) and json.load(open(state_path))["next_epoch"] >= hold_at:
        time.sleep(0.05)
    return 0.0
def pause(x, y):
    zero = tf.py_function(hold, [], tf.float32)
    return x + tf.ensure_shape(zero, []), y
cfg = config(sys.argv[1], epochs=2, fine_tune={"epochs": 3, "learning_rate": 1e-3}, early_stopping_patience=3, schedule="cosine")
train_ds, val_ds = datasets(16)
fit_phases(cfg, tiny_pretrained(), train_ds.map(pause), val_ds, sys.argv[2], steps_per_epoch=4, resume=sys.argv[3] == "1")
print("FINISHED")
"""


@pytest.mark.slow
def test_sigkill_then_resume_has_the_epochs_of_an_uninterrupted_run(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    state_path = run_dir / "checkpoint" / "state.json"
    script = RESUME_SCRIPT.replace("sys.argv[1]", repr(str(tmp_path))).replace("sys.argv[2]", repr(str(run_dir)))

    proc = python(script.replace("sys.argv[3]", "'0'"), env={"HOLD_AT_EPOCH": "3"})
    try:
        # Kill inside phase 2, after its first epoch: the resume must skip phase 1 and continue phase 2.
        wait_until(lambda: state_path.is_file() and json.loads(state_path.read_text())["next_epoch"] >= 3, "epoch 3", proc)
        proc.send_signal(signal.SIGKILL)
        output = proc.communicate(timeout=REAP_TIMEOUT_S)[0]
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, output
    killed_at = json.loads(state_path.read_text())["next_epoch"]
    assert 3 <= killed_at < 5

    proc = python(script.replace("sys.argv[3]", "'1'"))
    output = proc.communicate(timeout=COMMAND_TIMEOUT_S)[0]
    assert proc.returncode == 0 and "FINISHED" in output, output
    assert f"resuming {run_dir} at epoch {killed_at + 1} (phase 2)" in output

    rows = _history(run_dir)
    # An uninterrupted run has 2 + 3 epochs (patience 3 never triggers within 3 epochs of a phase).
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4, 5]  # 1-based in the file; the resume kept them in step
    assert [int(r["phase"]) for r in rows] == [1, 1, 2, 2, 2]
    state = json.loads(state_path.read_text())
    assert state["next_epoch"] == 5 and state["phase"] == 2 and state["phase_done"]
    assert json.loads((run_dir / "metrics.json").read_text())["epochs"] == 5
    leftovers = [p.name for p in run_dir.rglob("*") if ".tmp" in p.name]
    assert not leftovers


# --- the entry point on real records ----------------------------------------------------------------------


def _write_records(records_dir: Path, n_train: int = 48, n_val: int = 16) -> None:
    """A two-shard binary record set in the format of kit.data.records (manifest + TFRecords)."""
    import tensorflow as tf
    from train_helpers import data

    from kit.data import schema

    records_dir.mkdir(parents=True)
    shards, counts = {}, {}
    for split, n, seed in (("train", n_train, 0), ("val", n_val, 1)):
        x, y = data(n, seed)
        name = f"{split}-00000{schema.SHARD_SUFFIX}"
        with tf.io.TFRecordWriter(str(records_dir / name)) as writer:
            for i in range(n):
                label = int(y[i, 0])
                image = tf.io.encode_png(x[i].astype("uint8")).numpy()
                soft = np.eye(2, dtype="float32")[label]
                writer.write(schema.serialize(schema.Example(image, label, soft, f"{split}{i}", SIZE, SIZE)))
        shards[split] = [name]
        per_class = {"human": int((y == 0).sum()), "ai": int((y == 1).sum())}
        counts[split] = {"total": n, "per_class": per_class}
    manifest = {
        "version": 1,
        "comp": "tiny",
        "image_size": SIZE,
        "classes": ["human", "ai"],
        "num_classes": 2,
        "image_format": "png",
        "counts": counts,
        "shards": shards,
        "skipped": [],
    }
    (records_dir / schema.MANIFEST).write_text(json.dumps(manifest))


@pytest.mark.slow
def test_train_entry_point_writes_the_run_directory(tmp_path: Path) -> None:
    import keras

    from kit.config import load_config
    from kit.data.manifest import records_dir
    from kit.runs import find_resumable, latest_run
    from kit.train.trainer import train

    overrides = tiny_cnn_overrides(tmp_path)
    cfg = load_config(overrides)
    with pytest.raises(KitError, match="no finished run of tiny/cnn"):
        latest_run(cfg)
    _write_records(records_dir(cfg))

    run_dir = train(cfg)

    assert run_dir.parent == tmp_path / "runs" / "tiny" / "cnn"
    for name in ("config.yaml", "versions.json", "strategy.json", "history.csv", "best.keras", "metrics.json", "done"):
        assert (run_dir / name).is_file(), name
    assert "classes:\n  - human\n  - ai" in (run_dir / "config.yaml").read_text()  # from the manifest
    assert json.loads((run_dir / "strategy.json").read_text())["replicas"] == 1
    assert set(json.loads((run_dir / "versions.json").read_text())) >= {"python", "tensorflow", "keras", "numpy", "kit"}
    rows = _history(run_dir)
    assert [int(r["epoch"]) for r in rows] == [1, 2] and "val_f1_score" in rows[0]  # binary: F1 monitored
    assert keras.models.load_model(run_dir / "best.keras").output_shape == (None, 1)
    assert latest_run(cfg) == run_dir
    assert find_resumable(cfg) is None  # finished runs are never resumed

    # An unfinished run (killed before its first epoch ended) is what --resume picks up; it restarts.
    (run_dir / "done").unlink()
    assert find_resumable(cfg) == run_dir
    (tmp_path / "runs" / "tiny" / "cnn" / "fixed").mkdir()
    (tmp_path / "runs" / "tiny" / "cnn" / "fixed" / "config.yaml").write_text("{}")
    with pytest.raises(KitError, match="already exists"):
        train(load_config([*overrides, "run.id=fixed"]))


@pytest.mark.slow
def test_one_session_setup_from_the_records_handed_down(tmp_path: Path) -> None:
    from kit.config import load_config
    from kit.data.manifest import read_manifest, records_dir
    from kit.data.schema import MANIFEST
    from kit.train.session import start_session

    overrides = ["comp.name=tiny", "comp.classes=[]", f"data.records_root={tmp_path / 'records'}", f"model.image_size={SIZE}"]
    cfg = load_config([*overrides, "train.batch_size=10", "train.strategy=cpu"])
    _write_records(records_dir(cfg), n_train=48, n_val=16)
    manifest = read_manifest(records_dir(cfg))
    (records_dir(cfg) / MANIFEST).unlink()  # handed down: the session never reads it again
    session = start_session(cfg, manifest=manifest)
    assert session.manifest is manifest and session.cfg.comp.classes == ["human", "ai"] and session.binary
    assert (session.global_batch, session.replicas, session.precision, session.device) == (10, 1, "float32", "cpu")
    assert (session.steps_per_epoch, session.val_examples, session.validation_steps) == (5, 16, 2)  # ceil(48/10), ceil(16/10)
    assert session.describe()["global_batch"] == 10 and "global batch 10 (10 x 1 replicas)" in session.summary()
    train_ds, val_ds = session.datasets()
    assert val_ds is not None and sum(1 for _ in val_ds) == 2
    with pytest.raises(KitError, match="no records"):
        start_session(cfg)


# --- schedules and optimizers (pure) ----------------------------------------------------------------------


def test_schedules() -> None:
    import keras

    from kit.config import TrainConfig
    from kit.train.lr_schedules import build_optimizer, make_schedule

    warm = make_schedule(TrainConfig(schedule="constant", warmup_epochs=1), 0.1, steps_per_epoch=10, epochs=3)
    assert [round(warm(s), 3) for s in (0, 4, 9)] == [0.01, 0.05, 0.1]
    assert warm(10) == pytest.approx(0.1) and warm(11) is None
    assert make_schedule(TrainConfig(schedule="plateau"), 0.1, 10, 3)(5) is None  # ReduceLROnPlateau owns it

    cosine = make_schedule(TrainConfig(schedule="cosine", warmup_epochs=1), 0.1, steps_per_epoch=10, epochs=3)
    assert cosine(0) < cosine(5) < cosine(10) == pytest.approx(0.1, rel=1e-3)
    assert cosine(20) == pytest.approx(0.05, rel=1e-2) and cosine(30) == pytest.approx(0.0, abs=1e-6)

    restarts = make_schedule(TrainConfig(schedule="cosine_restarts", first_decay_steps=5), 0.1, steps_per_epoch=10, epochs=3)
    assert restarts(0) == pytest.approx(0.1) and restarts(4) < 0.02 and restarts(5) > restarts(4)

    assert isinstance(build_optimizer(TrainConfig(optimizer="adamw", weight_decay=1e-4), 1e-3), keras.optimizers.AdamW)
    sgd = build_optimizer(TrainConfig(optimizer="sgd"), 1e-2)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.momentum == 0.9


def test_metrics_names() -> None:
    from kit.train.metrics import build_metrics, monitor_mode

    assert [m.name for m in build_metrics(True, 2)] == ["accuracy", "f1_score", "auc", "precision", "recall"]
    assert [m.name for m in build_metrics(False, 5)] == ["accuracy", "f1_score"]
    assert monitor_mode("val_loss") == "min" and monitor_mode("val_f1_score") == "max"


def test_best_checkpoint_breaks_a_saturated_metric_tie_by_val_loss(tmp_path: Path) -> None:
    import keras

    from kit.train.callbacks import BestCheckpoint, Tracker

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    tracker = Tracker("val_accuracy", "max")
    callback = BestCheckpoint(tmp_path / "best.keras", tracker, phase=1)
    callback.set_model(model)
    epochs = [(0.9, 0.5), (1.0, 0.4), (1.0, 0.45), (1.0, 0.2), (0.95, 0.1), (1.0, 0.2)]
    saved_at = []
    for epoch, (accuracy, loss) in enumerate(epochs):
        before = (tmp_path / "best.keras").stat().st_ino if (tmp_path / "best.keras").exists() else None
        callback.on_epoch_end(epoch, {"val_accuracy": accuracy, "val_loss": loss})
        if (tmp_path / "best.keras").stat().st_ino != before:  # each save renames a new file over it
            saved_at.append(epoch)
    # 1.0 first at epoch 1; epoch 3 ties it with a lower loss; a lower accuracy (4) or an equal loss (5) does not win.
    assert saved_at == [0, 1, 3]
    assert (tracker.best, tracker.best_epoch, tracker.best_loss) == (1.0, 3, 0.2)
    assert tracker.to_json()["best_loss"] == 0.2


def test_learning_curves_of_one_epoch_have_one_whole_tick() -> None:
    """A one-epoch history is plotted at epoch 1 with tick 1 only (matplotlib's default gave 0.945 .. 1.05)."""
    import pandas as pd

    from kit.plots import learning_curves_figure

    one = learning_curves_figure(pd.DataFrame({"epoch": [1], "phase": [1], "loss": [0.7], "val_loss": [0.69]}))
    assert list(one.axes[0].get_xticks()) == [1]
    three = learning_curves_figure(pd.DataFrame({"epoch": [1, 2, 3], "phase": [1, 1, 1], "loss": [0.7, 0.5, 0.4]}))
    assert list(three.axes[0].get_xticks()) == [1, 2, 3]
