"""kit.evaluate: the F1-best threshold, metrics against scikit-learn, the files a run gets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from run_fixtures import make_config, make_model, make_run, random_images, write_split
from sklearn import metrics as skm

from kit.evaluate import classification_metrics, evaluate, score
from kit.scores import best_f1_threshold

PNG = b"\x89PNG\r\n\x1a\n"


def test_best_threshold_finds_the_known_optimum():
    y = [0, 0, 0, 1, 1, 1, 0, 1]
    prob = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8]
    # >= 0.4 predicts 5 positives, 4 of them right: P = 0.8, R = 1, F1 = 8/9; every other cut is worse
    threshold, f1 = best_f1_threshold(y, prob)
    assert threshold == pytest.approx(0.4)
    assert f1 == pytest.approx(8 / 9)


def test_best_threshold_matches_a_brute_force_sweep():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    prob = np.clip(0.3 * y + rng.normal(0.35, 0.25, 200), 0, 1).round(2)  # ties on purpose
    threshold, f1 = best_f1_threshold(y, prob)
    brute = max(skm.f1_score(y, prob >= t) for t in np.unique(prob))
    assert f1 == pytest.approx(brute)
    assert skm.f1_score(y, prob >= threshold) == pytest.approx(brute)
    assert best_f1_threshold([0, 0], [0.2, 0.9]) == (0.5, 0.0)  # no positives: nothing to tune


def test_metrics_match_sklearn_on_a_hand_case():
    y = np.array([0, 1, 1, 0, 1, 0])
    p1 = np.array([0.2, 0.7, 0.4, 0.6, 0.9, 0.1])
    m = classification_metrics(y, np.stack([1 - p1, p1], axis=1), ["a", "b"], 0.5)
    pred = (p1 >= 0.5).astype(int)
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["precision"] == pytest.approx(skm.precision_score(y, pred))
    assert m["recall"] == pytest.approx(skm.recall_score(y, pred))
    assert m["f1"] == pytest.approx(skm.f1_score(y, pred))
    assert m["auc"] == pytest.approx(skm.roc_auc_score(y, p1))
    assert m["confusion_matrix"] == [[2, 1], [1, 2]]

    y3 = np.array([0, 1, 2, 2, 1, 0, 2])
    probs = np.eye(3)[[0, 2, 2, 1, 1, 0, 2]] * 0.8 + 0.2 / 3
    m3 = classification_metrics(y3, probs, ["x", "y", "z"])
    pred3 = probs.argmax(axis=1)
    assert m3["macro_f1"] == pytest.approx(skm.f1_score(y3, pred3, average="macro"))
    assert m3["per_class"]["z"]["recall"] == pytest.approx(skm.recall_score(y3, pred3, average=None)[2])


def test_score_uses_the_competition_metric(tmp_path):
    y, pred = [0, 1, 2, 2, 1], [0, 2, 2, 2, 1]
    cfg = make_config(tmp_path, ["a", "b", "c"], metric="accuracy")
    assert score(cfg, y, pred) == pytest.approx(0.8)
    cfg.comp.metric = "macro_f1"
    assert score(cfg, y, pred) == pytest.approx(skm.f1_score(y, pred, average="macro"))
    binary = make_config(tmp_path, ["a", "b"], metric="f1")
    assert score(binary, [0, 1, 1, 0], None, np.array([0.2, 0.7, 0.3, 0.6])) == pytest.approx(0.5)


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 100 and path.read_bytes()[:8] == PNG


@pytest.mark.slow
def test_evaluate_writes_metrics_threshold_and_plots(tmp_path, capsys):
    cfg = make_config(tmp_path, ["neg", "pos"])
    labels = np.array([0, 1] * 8)
    images = random_images(16, seed=4)
    write_split(cfg, "val", images, labels, [f"v{i}" for i in range(16)])
    history = pd.DataFrame(
        {
            "epoch": [0, 1, 0, 1],
            "loss": [0.9, 0.7, 0.6, 0.5],
            "val_loss": [1.0, 0.8, 0.7, 0.65],
            "f1_score": [0.5, 0.6, 0.7, 0.75],
            "val_f1_score": [0.4, 0.5, 0.6, 0.62],
            "phase": [1, 1, 2, 2],
        }
    )
    model = make_model(1, seed=11)
    run = make_run(cfg, tmp_path / "runs" / "tiny" / "cnn" / "r1", model, history)

    result = evaluate(cfg, run)

    metrics = json.loads((run / "metrics.json").read_text())
    threshold = json.loads((run / "threshold.json").read_text())
    prob = np.asarray(model(images.astype(np.float32), training=False))[:, 0]
    best_t, _ = best_f1_threshold(labels, prob)
    assert threshold["threshold"] == pytest.approx(best_t, abs=1e-6)
    assert threshold["chosen_on"] == "val" and threshold["honest_score"] == metrics["score_at_threshold"]
    assert metrics["score"]["value"] == pytest.approx(skm.f1_score(labels, prob >= 0.5))
    assert metrics["accuracy"] == pytest.approx(skm.accuracy_score(labels, prob >= 0.5))
    assert metrics["auc"] == pytest.approx(skm.roc_auc_score(labels, prob), abs=1e-6)
    assert result["examples"] == 16
    for name in ("learning_curves", "confusion_matrix", "roc", "pr", "top_losses", "scores"):
        assert _is_png(run / "plots" / f"{name}.png"), name
    out = capsys.readouterr().out
    assert "hold-out at the fixed threshold 0.5" in out and "never scored on them" in out


@pytest.mark.slow
def test_evaluate_multiclass(tmp_path):
    cfg = make_config(tmp_path, ["a", "b", "c"], metric="macro_f1")
    labels = np.array([0, 1, 2] * 4)
    images = random_images(12, seed=5)
    write_split(cfg, "val", images, labels, [f"v{i}" for i in range(12)])
    model = make_model(3, seed=12)
    run = make_run(cfg, tmp_path / "runs" / "r1", model)
    result = evaluate(cfg, run)
    pred = np.asarray(model(images.astype(np.float32), training=False)).argmax(axis=1)
    assert result["macro_f1"] == pytest.approx(skm.f1_score(labels, pred, average="macro"))
    assert result["score"]["value"] == pytest.approx(result["macro_f1"])
    assert not (run / "threshold.json").exists()
    assert _is_png(run / "plots" / "confusion_matrix.png") and _is_png(run / "plots" / "top_losses.png")
