"""Honest scores: no score is measured on the rows its threshold was chosen on; a constant model is named."""

from __future__ import annotations

import json

import numpy as np
import pytest
from run_fixtures import SIZE, make_config, make_run, random_images, write_split
from sklearn import metrics as skm

from kit.evaluate import evaluate
from kit.scores import (
    best_f1_threshold,
    bootstrap_interval,
    cross_fitted_labels,
    degenerate_warning,
    honest_binary_scores,
    threshold_parts,
)


def _f1(y: np.ndarray, pred: np.ndarray) -> float:
    return float(skm.f1_score(y, pred, zero_division=0))


def _noise(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probabilities that carry no information about each other."""
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2, n), rng.uniform(0.3, 0.7, n)


def test_each_part_is_cut_at_the_threshold_of_the_other_parts_only():
    y, prob = _noise(200, seed=1)
    parts = threshold_parts(y)
    labels, thresholds = cross_fitted_labels(y, prob, parts)
    assert len(thresholds) == 5
    for part, threshold in enumerate(thresholds):
        held = parts == part
        assert threshold == best_f1_threshold(y[~held], prob[~held])[0]  # chosen without the held part
        np.testing.assert_array_equal(labels[held], prob[held] >= threshold)
        moved = prob.copy()
        moved[held] = 1 - moved[held]  # whatever the held rows say, their threshold does not move
        assert cross_fitted_labels(y, moved, parts)[1][part] == threshold


@pytest.mark.slow
def test_the_tuned_score_on_noise_is_no_longer_flattering():
    """Before: F1 at the threshold chosen on the same rows (in-sample); after: chosen on the other parts."""
    y, prob = _noise(200, seed=2)
    _, in_sample = best_f1_threshold(y, prob)  # what `kit evaluate` printed as "score (f1)" before
    honest = honest_binary_scores(y, prob, _f1, "hold-out", threshold_parts(y))
    chosen = honest["at_chosen"]
    assert in_sample == pytest.approx(0.6757, abs=1e-4)
    assert chosen["value"] == pytest.approx(0.6403, abs=1e-4)  # the honest figure is lower on noise
    assert chosen["value"] < in_sample
    assert honest["at_0.5"]["value"] == pytest.approx(_f1(y, prob >= 0.5))
    assert honest["at_0.5"]["what"] == "hold-out at the fixed threshold 0.5"
    assert chosen["what"].startswith("hold-out at the F1-best threshold chosen on the other 4 of 5 parts")
    assert honest["threshold"] == best_f1_threshold(y, prob)[0]  # the saved threshold uses every row
    for entry in (honest["at_0.5"], chosen):
        low, high = entry["interval"]
        assert low <= entry["value"] <= high and entry["interval_level"] == 0.95


def test_bootstrap_interval_matches_the_binomial_width():
    y = np.ones(400, dtype=int)
    pred = np.r_[np.ones(320, dtype=int), np.zeros(80, dtype=int)]  # accuracy 0.8
    low, high = bootstrap_interval(y, pred, lambda t, p: float((t == p).mean()))
    half = 1.96 * np.sqrt(0.8 * 0.2 / 400)  # 0.0392
    assert low == pytest.approx(0.8 - half, abs=0.01) and high == pytest.approx(0.8 + half, abs=0.01)
    assert (low, high) == bootstrap_interval(y, pred, lambda t, p: float((t == p).mean()))  # seeded: reproducible


@pytest.mark.slow
def test_too_few_rows_of_a_class_give_no_tuned_score():
    y = np.array([0] * 9 + [1])
    prob = np.linspace(0.1, 0.9, 10)
    parts = np.zeros(10, dtype=np.int64)
    honest = honest_binary_scores(y, prob, _f1, "hold-out", parts)
    assert "at_chosen" not in honest and "at_0.5" in honest


def test_degenerate_models_are_named():
    y = np.array([0, 1] * 50)
    assert "same probabilities (0.5000, 0.5000)" in degenerate_warning(np.full((100, 2), 0.5), 0.5, y)
    one_class = np.c_[np.linspace(0.6, 0.9, 100), np.linspace(0.4, 0.1, 100)]
    assert degenerate_warning(one_class, 0.5) == "the model predicts class 0 for every one of the 100 rows"
    rng = np.random.default_rng(3)
    p = rng.uniform(0.2, 0.8, 100)
    chance = degenerate_warning(np.c_[1 - p, p], 0.5, y)
    assert chance is not None and chance.startswith("AUC ") and "within noise of 0.5" in chance
    good = np.where(y == 1, 0.8, 0.2) + rng.normal(0, 0.05, 100)
    assert degenerate_warning(np.c_[1 - good, good], 0.5, y) is None
    multi = np.tile([0.2, 0.5, 0.3], (30, 1))
    assert "predicts a constant" in degenerate_warning(multi)


@pytest.mark.slow
def test_evaluate_reports_both_scores_and_never_the_in_sample_one(tmp_path, capsys):
    import keras

    cfg = make_config(tmp_path, ["neg", "pos"])
    labels = np.array([0, 1] * 20)
    rng = np.random.default_rng(6)
    brightness = np.clip(rng.normal(110 + 40 * labels, 30), 0, 255)  # positives brighter, with overlap
    images = np.broadcast_to(brightness[:, None, None, None], (40, SIZE, SIZE, 3)).astype(np.uint8)
    write_split(cfg, "val", images, labels, [f"v{i}" for i in range(40)])
    model = keras.Sequential(
        [keras.Input((SIZE, SIZE, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(1, activation="sigmoid")]
    )
    model.layers[-1].set_weights([np.full((3, 1), 0.02, np.float32), np.array([-8.0], np.float32)])  # p = 0.5 at 133
    run = make_run(cfg, tmp_path / "runs" / "tiny" / "cnn" / "r1", model)

    evaluate(cfg, run)

    out = capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    saved = json.loads((run / "threshold.json").read_text())
    prob = np.asarray(model(images.astype(np.float32), training=False))[:, 0]
    threshold, in_sample = best_f1_threshold(labels, prob)
    honest, _ = cross_fitted_labels(labels, prob, threshold_parts(labels))
    assert metrics["score"]["value"] == pytest.approx(_f1(labels, prob >= 0.5))
    assert metrics["score_at_threshold"]["value"] == pytest.approx(_f1(labels, honest))
    assert metrics["score_at_threshold"]["value"] < in_sample  # before, the in-sample figure was the headline
    assert f"{in_sample:.4f}" not in out
    assert saved == {
        "threshold": pytest.approx(threshold),
        "rule": "F1-best",
        "chosen_on": "val",
        "examples": 40,
        "honest_score": metrics["score_at_threshold"],
    }
    assert "hold-out at the fixed threshold 0.5" in out and "hold-out at the F1-best threshold chosen on the other" in out
    assert "WARNING" not in out and "degenerate" not in metrics
    assert (run / "plots" / "scores.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_evaluate_warns_loudly_about_a_constant_model(tmp_path, capsys):
    import keras

    cfg = make_config(tmp_path, ["neg", "pos"])
    labels = np.array([0, 1] * 8)
    write_split(cfg, "val", random_images(16, seed=7), labels, [f"v{i}" for i in range(16)])
    model = keras.Sequential([keras.Input((SIZE, SIZE, 3)), keras.layers.Flatten(), keras.layers.Dense(1, activation="sigmoid")])
    model.layers[-1].set_weights([np.zeros((SIZE * SIZE * 3, 1), np.float32), np.zeros(1, np.float32)])  # p = 0.5 always
    run = make_run(cfg, tmp_path / "runs" / "tiny" / "cnn" / "r1", model)

    evaluate(cfg, run)

    out = capsys.readouterr().out
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["degenerate"].startswith("the model gives every one of the 16 rows the same probabilities")
    warning = [line for line in out.splitlines() if line.startswith("WARNING: ")]
    assert len(warning) == 1 and "kit submit refuses without --force" in warning[0]
