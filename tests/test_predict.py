"""kit.predict: TTA, ensembles, thresholds, submission order (tiny records and models); validation: test_submission.py."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from run_fixtures import make_config, make_model, make_run, random_images, write_sample_submission, write_split

from kit.errors import KitError
from kit.inference import predict_probabilities
from kit.io import write_json
from kit.predict import predict
from kit.runs import expand_runs

N_TEST = 10


@pytest.fixture()
def binary_comp(tmp_path: Path):
    """A binary competition: 10 test records (ids t0..t9) and a sample submission in another order."""
    cfg = make_config(tmp_path, ["neg", "pos"])
    ids = [f"t{i}" for i in range(N_TEST)]
    write_split(cfg, "test", random_images(N_TEST, seed=1), np.full(N_TEST, -1), ids)
    order = [ids[i] for i in np.random.default_rng(0).permutation(N_TEST)]
    write_sample_submission(cfg, order)
    return cfg, order


def _dataset(cfg):
    from kit.data.manifest import read_manifest, records_dir
    from kit.data.pipeline import make_dataset

    return make_dataset(cfg, "test", training=False, batch_size=4, manifest=read_manifest(records_dir(cfg)), with_ids=True)


def test_tta_is_the_mean_of_the_flipped_predictions(binary_comp):
    cfg, _ = binary_comp
    model = make_model(1, seed=3)
    ids, probs = predict_probabilities(model, _dataset(cfg), ["hflip", "vflip"], progress=False)

    images = np.concatenate([np.asarray(x) for x, _, _ in _dataset(cfg)])
    views = [images, images[:, :, ::-1], images[:, ::-1]]
    expected = np.mean([np.asarray(model(np.ascontiguousarray(v), training=False)) for v in views], axis=0)
    plain = np.asarray(model(images, training=False))
    assert ids.tolist() == [f"t{i}" for i in range(N_TEST)]
    assert probs.shape == (N_TEST, 1)
    np.testing.assert_allclose(probs, expected, atol=1e-6)
    assert not np.allclose(probs, plain, atol=1e-4)  # the views really changed something


def test_unknown_tta_name_is_a_kit_error(binary_comp):
    cfg, _ = binary_comp
    with pytest.raises(KitError, match="TTA"):
        predict_probabilities(make_model(1, seed=3), _dataset(cfg), ["hflp"], progress=False)


def test_ensemble_averages_runs_and_follows_the_sample_order(binary_comp, tmp_path, capsys):
    cfg, order = binary_comp
    write_split(cfg, "val", random_images(8, seed=9), np.array([0, 1] * 4), [f"v{i}" for i in range(8)])
    models = [make_model(1, seed=s) for s in (5, 6)]
    runs = [make_run(cfg, tmp_path / "runs" / f"r{i}", m) for i, m in enumerate(models)]
    out = predict(cfg, runs)
    assert "ensemble of 2 runs" in capsys.readouterr().out  # the shared val split is scored too

    assert out == runs[0] / "submission.csv"
    submission = pd.read_csv(out, dtype=str)
    assert list(submission.columns) == ["id", "label"]
    assert submission["id"].tolist() == order
    probs = pd.read_csv(out.parent / "probabilities.csv", dtype={"id": str}).set_index("id")
    each = [predict_probabilities(m, _dataset(cfg), (), progress=False)[1][:, 0] for m in models]
    mean = pd.Series(np.mean(each, axis=0), index=[f"t{i}" for i in range(N_TEST)])
    np.testing.assert_allclose(probs.loc[mean.index, "pos"], mean, atol=1e-6)
    labels = submission.set_index("id")["label"].astype(int)
    assert (labels.loc[mean.index].to_numpy() == (mean >= 0.5).astype(int).to_numpy()).all()


def test_threshold_auto_reads_threshold_json(binary_comp, tmp_path):
    cfg, _ = binary_comp
    run = make_run(cfg, tmp_path / "runs" / "r0", make_model(1, seed=5))
    cfg.predict.threshold = "auto"
    with pytest.raises(KitError) as info:
        predict(cfg, [run])
    assert "threshold.json" in info.value.one_line() and "kit evaluate" in info.value.one_line()
    probs = predict_probabilities(make_model(1, seed=5), _dataset(cfg), (), progress=False)[1][:, 0]
    threshold = float(np.sort(probs)[N_TEST // 2])  # half the examples above
    write_json(run / "threshold.json", {"threshold": threshold})
    cfg.predict.output = str(tmp_path / "out" / "sub.csv")
    out = predict(cfg, [run])
    assert out == tmp_path / "out" / "sub.csv"
    submission = pd.read_csv(out, dtype={"id": str}).set_index("id")
    assert int(submission["label"].sum()) == int((probs >= threshold).sum()) == N_TEST - N_TEST // 2


def test_multiclass_names_and_kfold_expansion(tmp_path):
    cfg = make_config(tmp_path, ["cat", "dog", "cow"], metric="accuracy", label_format="name")
    ids = [f"t{i}" for i in range(N_TEST)]
    write_split(cfg, "test", random_images(N_TEST, seed=2), np.full(N_TEST, -1), ids)
    write_sample_submission(cfg, ids)
    parent = tmp_path / "runs" / "kfold"
    models = [make_model(3, seed=s) for s in (7, 8)]
    for k, m in enumerate(models):
        make_run(cfg, parent / f"fold{k}", m)
    assert expand_runs([parent]) == [parent / "fold0", parent / "fold1"]
    out = predict(cfg, [parent])
    assert out == parent / "submission.csv"
    submission = pd.read_csv(out, dtype=str)
    mean = np.mean([predict_probabilities(m, _dataset(cfg), (), progress=False)[1] for m in models], axis=0)
    assert submission["label"].tolist() == [cfg.comp.classes[i] for i in mean.argmax(axis=1)]


def test_missing_run_is_a_kit_error(tmp_path):
    with pytest.raises(KitError, match="does not exist"):
        expand_runs([tmp_path / "nope"])
