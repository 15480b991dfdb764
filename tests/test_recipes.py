"""Fast-converging recipes: one-cycle rates, the linear batch scaling rule, weight EMA, XLA, and `kit lr-find`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from train_helpers import config, datasets, tiny_scratch

from kit.config import TrainConfig


def test_one_cycle_rises_from_a_25th_of_the_peak_then_anneals_to_about_zero() -> None:
    """fastai's fit_one_cycle shape: peak/25 at step 0, the peak at the end of the warmup (25 % of the phase
    when warmup_epochs is 0, else warmup_epochs), cosine both ways, peak/1e5 at the last step."""
    from kit.train.lr_schedules import make_schedule

    rate = make_schedule(TrainConfig(schedule="one_cycle"), 0.4, steps_per_epoch=10, epochs=4)  # 40 steps, peak at 10
    values = [rate(step) for step in range(40)]
    assert values[0] == pytest.approx(0.016) and values[10] == pytest.approx(0.4)
    assert values[5] == pytest.approx((0.016 + 0.4) / 2)  # half-way up the cosine
    assert values[39] == pytest.approx(4e-6)
    assert all(a < b for a, b in zip(values[:10], values[1:11], strict=True))
    assert all(a > b for a, b in zip(values[10:39], values[11:40], strict=True))
    warm = make_schedule(TrainConfig(schedule="one_cycle", warmup_epochs=2), 0.4, steps_per_epoch=10, epochs=4)
    assert max(range(40), key=warm) == 20


def test_the_rate_is_scaled_linearly_to_the_batch() -> None:
    """Goyal et al. 2017: train.learning_rate is the rate at train.lr_scale_batch; batch 512 gets twice the rate of 256."""
    from kit.train.lr_schedules import build_optimizer, make_schedule

    train = TrainConfig(batch_size=512, lr_scale_batch=256, optimizer="sgd", schedule="one_cycle")
    assert float(build_optimizer(train, 0.1).learning_rate) == pytest.approx(0.2)
    assert float(build_optimizer(train, 0.1, replicas=2).learning_rate) == pytest.approx(0.4)  # global batch 1024
    assert max(make_schedule(train, 0.1, 10, 4)(s) for s in range(40)) == pytest.approx(0.2)
    unscaled = TrainConfig(batch_size=512, optimizer="sgd")  # lr_scale_batch 0: the rate as written
    assert float(build_optimizer(unscaled, 0.1).learning_rate) == pytest.approx(0.1)


def test_jit_compile_setting() -> None:
    from kit.train.lr_schedules import jit_compile

    assert [jit_compile(TrainConfig(jit_compile=v), "cpu") for v in ("auto", "on", "off")] == [False, True, False]
    assert [jit_compile(TrainConfig(jit_compile=v), "gpu") for v in ("auto", "on", "off")] == ["auto", True, False]


def _fit(tmp_path: Path, name: str, epochs: int = 3, **train) -> tuple[Path, list[np.ndarray], dict]:
    import keras

    from kit.train.fitting import fit_phases

    keras.utils.set_random_seed(0)
    model = tiny_scratch()
    initial = [np.array(w) for w in model.trainable_weights]
    train_ds, val_ds = datasets(16)
    cfg = config(tmp_path, epochs=epochs, learning_rate=5e-2, optimizer="adam", warmup_epochs=1, **train)
    result = fit_phases(cfg, model, train_ds, val_ds, tmp_path / name, steps_per_epoch=4)
    return tmp_path / name, initial, result


@pytest.mark.slow
def test_ema_best_keras_holds_the_averaged_weights_the_val_metrics_came_from(tmp_path: Path) -> None:
    """With train.ema the validation metrics, best.keras and the tracker are the EMA weights' (Keras' SwapEMAWeights
    swapped in at each epoch's end), not the raw weights': with ema_momentum ~1 the average stays at the weights
    after the first step (Adam moves each of the 117 weights by about the warmup's first rate, 0.0125), so best.keras
    is much nearer the initial weights than the best epoch of the same run without EMA."""
    import keras

    raw_dir, initial, _ = _fit(tmp_path, "raw")
    ema_dir, initial_again, result = _fit(tmp_path, "ema", ema=True, ema_momentum=0.999999)
    for a, b in zip(initial, initial_again, strict=True):
        np.testing.assert_array_equal(a, b)  # the same seeded start

    def moved(run_dir: Path) -> float:
        weights = keras.models.load_model(run_dir / "best.keras").trainable_weights
        return sum(float(np.abs(np.array(w) - w0).sum()) for w, w0 in zip(weights, initial, strict=True))

    assert moved(ema_dir) < 0.2 * moved(raw_dir), (moved(ema_dir), moved(raw_dir))
    # The val_loss logged at the best epoch is what best.keras scores on the val set: the same weights.
    best = keras.models.load_model(ema_dir / "best.keras")
    _, val_ds = datasets(16)
    val_loss = best.evaluate(val_ds, verbose=0, return_dict=True)["loss"]
    assert result["best_loss"] == pytest.approx(val_loss, rel=1e-4)
    # A resume restores whether the EMA weights are in the model (swapped back at the next epoch's start).
    state = json.loads((ema_dir / "checkpoint" / "state.json").read_text())
    assert state["ema_swapped"] is True


@pytest.mark.slow
def test_lr_find_writes_its_plot_and_a_suggested_rate_without_a_run(tmp_path: Path, recwarn, capsys) -> None:
    """The range test on real (tiny) records: rates rise exponentially, the test stops once the smoothed loss passes
    4x its minimum, lr_find.json holds min/10 as the suggestion (and the steepest-descent rate), lr_find.png is
    written, and no run folder or best.keras appears."""
    from run_fixtures import make_config, write_split

    from kit.train.lr_find import lr_find, smooth

    cfg = make_config(tmp_path, ["dark", "bright"])
    cfg.model.options = {"filters": [4, 8]}
    cfg.model.dense_units = 8
    cfg.train.batch_size, cfg.train.verbose, cfg.train.lr_scale_batch = 8, 0, 16
    rng = np.random.default_rng(0)
    labels = np.arange(64) % 2
    images = (rng.integers(0, 100, (64, 8, 8, 3)) + labels[:, None, None, None] * 150).astype(np.uint8)
    write_split(cfg, "train", images, labels, [f"t{i}" for i in range(64)])

    path = lr_find(cfg, steps=80, start=1e-5, end=1e4)
    found = json.loads(path.read_text())
    assert path == tmp_path / "runs" / "tiny" / "cnn" / "lr_find.json"
    assert (path.parent / "lr_find.png").stat().st_size > 10_000
    assert sorted(p.name for p in path.parent.iterdir()) == ["lr_find.json", "lr_find.png"]  # no run folder
    rates, smoothed = found["rates"], found["smoothed"]
    assert rates[0] == pytest.approx(1e-5) and all(
        b / a == pytest.approx(10 ** (9 / 79)) for a, b in zip(rates, rates[1:], strict=False)
    )
    assert found["stopped"] == "loss diverged" and found["steps_run"] < 80  # Adam at rates near 1e4 explodes
    assert smoothed == pytest.approx(smooth(found["losses"]))
    lowest = int(np.argmin(smoothed))
    assert found["suggested"] == pytest.approx(rates[lowest] / 10) and found["rule"].startswith("min/10")
    assert found["steepest"] <= rates[lowest]
    assert found["learning_rate_setting"] == pytest.approx(2 * found["suggested"])  # the rate to write at batch 16
    assert smoothed[lowest] < 0.8 * smoothed[0]  # the loss did fall before it rose
    assert not [w for w in recwarn if "shuffle" in str(w.message)]  # no Keras warning about the pipeline's shuffling
    shown = capsys.readouterr().err  # not a terminal: progress as whole lines
    assert "\r" not in shown and f"lr-find: {found['steps_run']}/80 batches" in shown


@pytest.mark.slow
def test_resnet9_preset_is_the_fast_recipe() -> None:
    from kit.config import load_config

    cfg = load_config(["model=resnet9"])
    train = cfg.train
    assert (cfg.model.name, train.schedule, train.optimizer, train.early_stopping_patience) == ("resnet9", "one_cycle", "sgd", 0)
    assert 0.1 <= train.label_smoothing <= 0.2 and train.lr_scale_batch > 0
    # The rate used at the preset's batch is the one the range test suggested on the demo (0.197 at batch 128).
    assert train.learning_rate * train.batch_size / train.lr_scale_batch == pytest.approx(0.2)
    assert cfg.augment.translate > 0  # flips (and flip TTA) as the competition allows: the demo digits have none


@pytest.mark.slow
def test_a_resumed_ema_run_trains_on_from_the_raw_weights_not_the_average(tmp_path: Path) -> None:
    """The resume checkpoint is written with the EMA weights swapped into the model (they are what best.keras and
    the val metrics hold); state.json says so and the resumed run swaps the raw weights back before training on.
    With ema_momentum ~1 the average is the weights after step 1: training on from it would put the loss back
    near epoch 1's; training on from the raw weights keeps it near the last epoch's."""
    import keras

    from kit.train.fitting import fit_phases

    # The average barely moves, so val_f1_score does not improve and patience 2 stops the run after epoch 3 of 4
    # (not its last epoch: Keras' SwapEMAWeights copies the average over the raw weights only at the last one).
    run_dir, _, _ = _fit(tmp_path, "ema", epochs=4, ema=True, ema_momentum=0.999999, early_stopping_patience=2)
    state_path = run_dir / "checkpoint" / "state.json"
    state = json.loads(state_path.read_text())
    assert state["next_epoch"] == 3 and state["ema_swapped"] is True
    state["phase_done"] = False  # as if killed after epoch 3 of 4 instead
    state_path.write_text(json.dumps(state))
    keras.utils.set_random_seed(1)
    train_ds, val_ds = datasets(16)
    cfg = config(tmp_path, epochs=4, learning_rate=5e-2, optimizer="adam", warmup_epochs=1, ema=True, ema_momentum=0.999999)
    fit_phases(cfg, tiny_scratch(), train_ds, val_ds, run_dir, steps_per_epoch=4, resume=True)
    with open(run_dir / "history.csv", newline="") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert len(losses) == 4
    assert losses[3] < losses[2] + 0.3 * (losses[0] - losses[2]), losses  # on from epoch 3, not back to epoch 1
