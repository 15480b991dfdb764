"""kit predict on a labelled test split (CIFAKE's test/REAL, test/FAKE): the score is printed, written and plotted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from run_fixtures import make_config, make_model, make_run, random_images, write_sample_submission, write_split
from sklearn.metrics import f1_score

from kit.inference import predict_probabilities
from kit.io import read_json, write_json
from kit.predict import TEST_CONFUSION_FILE, TEST_METRICS_FILE, predict

N_TEST = 12


def _test_dataset(cfg):
    from kit.data.manifest import read_manifest, records_dir
    from kit.data.pipeline import make_dataset

    return make_dataset(cfg, "test", training=False, batch_size=4, manifest=read_manifest(records_dir(cfg)), with_ids=True)


@pytest.fixture()
def labelled_test(tmp_path: Path):
    """A binary competition whose 12 test records carry labels (6 REAL, 6 FAKE)."""
    cfg = make_config(tmp_path, ["REAL", "FAKE"])
    ids = [f"t{i}" for i in range(N_TEST)]
    labels = np.array([0, 1] * (N_TEST // 2))
    write_split(cfg, "test", random_images(N_TEST, seed=4), labels, ids)
    write_sample_submission(cfg, ids)
    return cfg, labels


@pytest.mark.slow
def test_labelled_test_split_is_scored_at_the_validation_threshold(labelled_test, tmp_path, capsys):
    cfg, labels = labelled_test
    model = make_model(1, seed=7)
    run = make_run(cfg, tmp_path / "runs" / "r0", model)
    probs = predict_probabilities(model, _test_dataset(cfg), (), progress=False)[1][:, 0]
    threshold = float(np.sort(probs)[3])  # chosen elsewhere (threshold.json), so not 0.5: the two scores differ
    write_json(run / "threshold.json", {"threshold": threshold})
    cfg.predict.threshold = "auto"

    predict(cfg, [run])

    expected = f1_score(labels, (probs >= threshold).astype(int))
    at_half = f1_score(labels, (probs >= 0.5).astype(int))
    out = capsys.readouterr().out
    line = f"test f1 {expected:.4f} (12 labelled test images, threshold {threshold:.4f} from validation; at 0.5: {at_half:.4f})"
    assert line in out
    metrics = read_json(run / TEST_METRICS_FILE)
    assert metrics["split"] == "test" and metrics["metric"] == "f1" and metrics["examples"] == N_TEST
    assert metrics["score"] == pytest.approx(expected) and metrics["score_at_0.5"] == pytest.approx(at_half)
    assert metrics["threshold"] == pytest.approx(threshold)
    predicted = (probs >= threshold).astype(int)
    matrix = np.array(metrics["confusion_matrix"])
    assert matrix.sum() == N_TEST and matrix[1, 1] == int(((labels == 1) & (predicted == 1)).sum())
    assert (run / TEST_CONFUSION_FILE).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_unlabelled_test_split_prints_no_test_score(tmp_path, capsys):
    cfg = make_config(tmp_path, ["REAL", "FAKE"])
    ids = [f"t{i}" for i in range(N_TEST)]
    write_split(cfg, "test", random_images(N_TEST, seed=4), np.full(N_TEST, -1), ids)
    write_sample_submission(cfg, ids)
    run = make_run(cfg, tmp_path / "runs" / "r0", make_model(1, seed=7))
    predict(cfg, [run])
    assert "test f1" not in capsys.readouterr().out
    assert not (run / TEST_METRICS_FILE).exists()


@pytest.mark.slow
def test_multiclass_labelled_test_is_scored_on_the_ensemble_mean(tmp_path, capsys):
    cfg = make_config(tmp_path, ["cat", "dog", "cow"], metric="accuracy")
    ids = [f"t{i}" for i in range(N_TEST)]
    labels = np.arange(N_TEST) % 3
    write_split(cfg, "test", random_images(N_TEST, seed=5), labels, ids)
    write_sample_submission(cfg, ids)
    models = [make_model(3, seed=s) for s in (1, 2)]
    runs = [make_run(cfg, tmp_path / "runs" / f"r{i}", m) for i, m in enumerate(models)]
    out = predict(cfg, runs)
    mean = np.mean([predict_probabilities(m, _test_dataset(cfg), (), progress=False)[1] for m in models], axis=0)
    expected = float((mean.argmax(axis=1) == labels).mean())
    assert f"test accuracy {expected:.4f} (12 labelled test images)" in capsys.readouterr().out
    assert not (runs[0] / TEST_METRICS_FILE).exists()  # the ensemble's own folder holds it
    metrics = read_json(out.parent / TEST_METRICS_FILE)
    assert metrics["threshold"] is None and metrics["score"] == pytest.approx(expected) and len(metrics["runs"]) == 2
