"""kit.predict: TTA, ensembles, thresholds, submission order (tiny records and models); validation: test_submission.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from run_fixtures import make_config, make_model, make_run, random_images, write_sample_submission, write_split
from sklearn.metrics import f1_score

from kit.data.manifest import read_manifest, records_dir
from kit.errors import KitError
from kit.inference import predict_labelled, predict_probabilities, split_dataset
from kit.io import read_json, write_json
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
    from kit.data.pipeline import make_dataset

    return make_dataset(cfg, "test", training=False, batch_size=4, manifest=read_manifest(records_dir(cfg)), with_ids=True)


@pytest.mark.slow
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


@pytest.mark.slow
def test_an_ensemble_gets_its_own_folder_and_a_validation_score_and_leaves_its_runs_alone(binary_comp, tmp_path, capsys):
    """Before: runs=A,B wrote into A's folder (its submission.csv and probabilities.csv replaced)."""
    cfg, order = binary_comp
    write_split(cfg, "val", random_images(8, seed=9), np.array([0, 1] * 4), [f"v{i}" for i in range(8)])
    models = [make_model(1, seed=s) for s in (5, 6)]
    runs = [make_run(cfg, tmp_path / "runs" / f"r{i}", m) for i, m in enumerate(models)]
    (runs[0] / "submission.csv").write_text("id,label\nthe run's own file\n")
    out = predict(cfg, runs)
    printed = capsys.readouterr().out
    assert "hold-out blend f1" in printed  # the blend's score on the shared val rows, labelled as such

    assert out.parent.parent == tmp_path / "runs" / "tiny" / "ensembles" and out.name == "submission.csv"
    assert (runs[0] / "submission.csv").read_text() == "id,label\nthe run's own file\n"
    assert not (runs[0] / "probabilities.csv").exists() and not (runs[1] / "submission.csv").exists()
    submission = pd.read_csv(out, dtype=str)
    assert list(submission.columns) == ["id", "label"]
    assert submission["id"].tolist() == order
    probs = pd.read_csv(out.parent / "probabilities.csv", dtype={"id": str}).set_index("id")
    each = [predict_probabilities(m, _dataset(cfg), (), progress=False)[1][:, 0] for m in models]
    mean = pd.Series(np.mean(each, axis=0), index=[f"t{i}" for i in range(N_TEST)])
    np.testing.assert_allclose(probs.loc[mean.index, "pos"], mean, atol=1e-6)
    labels = submission.set_index("id")["label"].astype(int)
    assert (labels.loc[mean.index].to_numpy() == (mean >= 0.5).astype(int).to_numpy()).all()

    val = [predict_labelled(m, split_dataset(cfg, read_manifest(records_dir(cfg)), "val"))[1][:, 0] for m in models]
    blended_val = np.mean(val, axis=0)
    expected = f1_score(np.array([0, 1] * 4), (blended_val >= 0.5).astype(int), zero_division=0)
    record = read_json(out.parent / "ensemble.json")
    assert [r["weight"] for r in record["runs"]] == [0.5, 0.5] and record["weights"] == "equal"
    assert record["score"]["value"] == pytest.approx(expected) and "8 rows held out from every run" in record["score"]["what"]
    assert read_json(out.parent / "submission.json")["score"] == record["score"]


def _kfold_member(cfg, tmp_path: Path, labelled: list[str], labels: np.ndarray, folds: int = 2) -> tuple[Path, list]:
    """A k-fold parent (data.folds=folds) over ``labelled``: its records (train shards with folds, the same test rows)
    in the folds' own split-plan folder, and one tiny model a fold."""
    kcfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, folds=folds))
    fold_of = np.arange(len(labelled)) % folds
    write_split(kcfg, "train", random_images(len(labelled), seed=9), labels, labelled, folds=fold_of)
    write_split(kcfg, "test", random_images(N_TEST, seed=1), np.full(N_TEST, -1), [f"t{i}" for i in range(N_TEST)])
    models = [make_model(1, seed=20 + k) for k in range(folds)]
    parent = tmp_path / "runs" / "tiny" / "cnn" / "kfold"
    for k, model in enumerate(models):
        make_run(kcfg, parent / f"fold{k}", model)
    return parent, models


@pytest.mark.slow
def test_a_kfold_run_counts_once_and_is_blended_on_the_rows_held_out_from_both(binary_comp, tmp_path, capsys):
    """Before: a 2-fold parent beside a single run was two of three equal votes (its folds flattened), and unscored."""
    cfg, _ = binary_comp
    labels = np.array([0, 1] * 8)
    val_ids = [f"v{i}" for i in range(8)]
    write_split(cfg, "val", random_images(16, seed=9)[:8], labels[:8], val_ids)  # the hold-out run's val rows
    single = make_run(cfg, tmp_path / "runs" / "tiny" / "cnn" / "single", make_model(1, seed=5))
    parent, fold_models = _kfold_member(cfg, tmp_path, [*val_ids, *(f"w{i}" for i in range(8))], labels)
    cfg.predict.weights = "score"
    out = predict(cfg, [single, parent])

    test = [predict_probabilities(m, _dataset(cfg), (), progress=False)[1][:, 0] for m in [make_model(1, seed=5), *fold_models]]
    members = np.array([test[0], np.mean(test[1:], axis=0)])
    record = read_json(out.parent / "ensemble.json")
    weights = np.array([r["weight"] for r in record["runs"]])
    assert len(weights) == 2 and weights.sum() == pytest.approx(1.0)
    probs = pd.read_csv(out.parent / "probabilities.csv", dtype={"id": str}).set_index("id")
    np.testing.assert_allclose(probs.loc[[f"t{i}" for i in range(N_TEST)], "pos"], weights @ members, atol=1e-6)
    assert "8 rows held out from every run" in record["score"]["what"]  # the single run's val rows, OOF for the folds
    assert "held-out (val and OOF) blend f1" in capsys.readouterr().out


@pytest.mark.slow
def test_runs_validated_on_different_rows_are_not_scored_and_not_fitted(binary_comp, tmp_path, capsys):
    cfg, _ = binary_comp
    write_split(cfg, "val", random_images(8, seed=9), np.array([0, 1] * 4), [f"v{i}" for i in range(8)])
    other = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, seed=7))  # another hold-out draw: its own records
    write_split(other, "val", random_images(8, seed=10), np.array([0, 1] * 4), [f"u{i}" for i in range(8)])
    write_split(other, "test", random_images(N_TEST, seed=1), np.full(N_TEST, -1), [f"t{i}" for i in range(N_TEST)])
    runs = [
        make_run(cfg, tmp_path / "runs" / "a", make_model(1, seed=5)),
        make_run(other, tmp_path / "runs" / "b", make_model(1, seed=6)),
    ]
    out = predict(cfg, runs)
    assert "validated on different rows" in capsys.readouterr().out
    record = read_json(out.parent / "submission.json")
    assert record["score"] is None and "not scored" in record["why"]
    cfg.predict.weights = "fit"
    with pytest.raises(KitError, match="predict.weights=fit needs rows held out from every run"):
        predict(cfg, runs)


@pytest.mark.slow
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


@pytest.mark.slow  # the message names the git commit: `git rev-parse` runs
def test_the_submission_message_comes_from_how_the_file_was_predicted_not_todays_settings(binary_comp, tmp_path):
    """Before: a file cut at threshold=auto was described by `kit submit` with today's predict.threshold=0.5 as
    'hold-out f1 at 0.5 ...', a score of another cut."""
    from kit.kaggle.submit import submission_message

    cfg, _ = binary_comp
    run = make_run(cfg, tmp_path / "runs" / "tiny" / "cnn" / "run1", make_model(1, seed=5))
    at_half = {"metric": "f1", "value": 0.9062, "interval": [0.88, 0.93], "what": "hold-out at the fixed threshold 0.5"}
    what = "hold-out at the F1-best threshold chosen on the other 4 of 5 parts (never on the rows scored)"
    at_chosen = {"metric": "f1", "value": 0.8875, "interval": [0.86, 0.91], "what": what}
    write_json(run / "metrics.json", {"score": at_half, "score_at_threshold": at_chosen})
    write_json(run / "threshold.json", {"threshold": 0.3925, "rule": "F1-best", "chosen_on": "val", "examples": 400})
    cfg.predict.threshold, cfg.predict.tta = "auto", ["hflip"]
    out = predict(cfg, [run])

    cfg.predict.threshold, cfg.predict.tta = "0.5", []  # the settings of the day `kit submit` runs
    message = submission_message(cfg, out)
    assert message.startswith("kit cnn run run1 threshold 0.3925 (auto) tta hflip hold-out f1 at chosen threshold")
    assert "0.8875 [0.8600-0.9100]" in message and "0.9062" not in message
    record = read_json(out.parent / "submission.json")
    assert record["threshold_source"] == f"{run / 'threshold.json'} (chosen on 400 val rows)" and record["tta"] == ["hflip"]


@pytest.mark.slow
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
