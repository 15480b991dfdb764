"""kit.train.kfold: every fold under one parent, out-of-fold predictions, CV score, predict on the parent, resume.

Tiny on purpose: 8 px images, 60 labelled examples in 3 folds, 1 epoch of a one-block CNN per fold. The
k-fold run is trained once per test module (and per xdist worker) and the tests read it; the resume test
works on a copy.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from run_fixtures import SIZE, make_config, write_sample_submission
from train_helpers import data

from kit.config import Config
from kit.errors import KitError

N_TRAIN, N_TEST, FOLDS = 60, 12, 3


def _config(tmp: Path, name: str = "tiny") -> Config:
    cfg = make_config(tmp, ["dark", "bright"], metric="f1")
    cfg.comp.name = name
    cfg.model.options = {"filters": [4]}
    cfg.augment.mode = "none"
    cfg.data.folds = FOLDS
    cfg.train.epochs = 1
    cfg.train.batch_size = 16
    cfg.train.verbose = 0
    cfg.train.schedule = "constant"
    cfg.predict.threshold = "auto"
    return cfg


def _write_records(cfg: Config, with_folds: bool = True) -> pd.DataFrame:
    """Train (with folds) and test shards in the kit.data.records format; returns the train truth."""
    import tensorflow as tf

    from kit.data import schema
    from kit.data.manifest import records_dir
    from kit.io import write_json

    folder = records_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    x, y = data(N_TRAIN, seed=0, size=SIZE)
    labels = y[:, 0].astype(int)
    folds = np.arange(N_TRAIN) % FOLDS if with_folds else np.full(N_TRAIN, -1)
    truth = pd.DataFrame({"id": [f"tr{i:03d}" for i in range(N_TRAIN)], "fold": folds, "label": labels})
    xt, _ = data(N_TEST, seed=1, size=SIZE)
    test_ids = [f"te{i:02d}" for i in range(N_TEST)]
    splits = {"train": (x, labels, list(truth["id"]), folds), "test": (xt, np.full(N_TEST, -1), test_ids, np.full(N_TEST, -1))}
    shards, counts = {}, {}
    for split, (images, split_labels, ids, split_folds) in splits.items():
        name = f"{split}-00000{schema.SHARD_SUFFIX}"
        with tf.io.TFRecordWriter(str(folder / name)) as writer:
            for image, label, example_id, fold in zip(images, split_labels, ids, split_folds, strict=True):
                png = tf.io.encode_png(image.astype("uint8")).numpy()
                soft = np.eye(2, dtype="float32")[label] if label >= 0 else np.zeros(2, "float32")
                writer.write(schema.serialize(schema.Example(png, int(label), soft, example_id, SIZE, SIZE, int(fold))))
        shards[split] = [name]
        counts[split] = {"total": len(ids)}
    manifest = {"version": 1, "comp": cfg.comp.name, "image_size": SIZE, "classes": cfg.comp.classes, "num_classes": 2}
    write_json(folder / schema.MANIFEST, {**manifest, "counts": counts, "shards": shards, "skipped": [], "fingerprint": "t1"})
    write_sample_submission(cfg, test_ids[::-1])
    return truth


@pytest.fixture(scope="module")
def kfold_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Config, Path, pd.DataFrame]:
    from kit.train.kfold import train_folds

    cfg = _config(tmp_path_factory.mktemp("kfold"))
    truth = _write_records(cfg)
    parent = train_folds(cfg)
    return cfg, parent, truth


@pytest.mark.slow
def test_parent_layout_and_one_run_id(kfold_run) -> None:
    from kit.runs import latest_run, runs_of

    cfg, parent, _ = kfold_run
    assert parent.parent == runs_of(cfg) and [d.name for d in runs_of(cfg).iterdir()] == [parent.name]
    for name in ("config.yaml", "kfold.json", "oof.csv", "cv.json", "threshold.json", "done"):
        assert (parent / name).is_file(), name
    for k in range(FOLDS):
        assert (parent / f"fold{k}" / "best.keras").is_file() and (parent / f"fold{k}" / "done").is_file()
    assert latest_run(cfg) == parent


@pytest.mark.slow
def test_every_training_example_is_out_of_fold_once(kfold_run) -> None:
    _, parent, truth = kfold_run
    oof = pd.read_csv(parent / "oof.csv", dtype={"id": str})
    assert list(oof.columns) == ["id", "fold", "label", "p_dark", "p_bright"]  # val_predictions.csv's p_<class>
    assert len(oof) == N_TRAIN and not oof["id"].duplicated().any()
    merged = truth.merge(oof, on="id", suffixes=("", "_oof"), validate="one_to_one")
    assert len(merged) == N_TRAIN
    assert (merged["fold"] == merged["fold_oof"]).all()  # predicted by the fold it was validated in
    assert (merged["label"] == merged["label_oof"]).all()
    np.testing.assert_allclose(oof[["p_dark", "p_bright"]].sum(axis=1), 1.0, atol=1e-5)


@pytest.mark.slow
def test_cv_score_is_the_metric_of_oof_csv(kfold_run) -> None:
    from kit.evaluate import score
    from kit.inference import labels_from_probs
    from kit.io import read_json
    from kit.scores import best_f1_threshold, cross_fitted_labels

    cfg, parent, _ = kfold_run
    oof = pd.read_csv(parent / "oof.csv", dtype={"id": str})
    probs = oof[["p_dark", "p_bright"]].to_numpy()
    cv = read_json(parent / "cv.json")
    assert cv["metric"] == "f1" and cv["examples"] == N_TRAIN
    assert cv["score"] == pytest.approx(score(cfg, oof["label"], labels_from_probs(probs, 0.5), probs))
    for entry in cv["folds"]:
        part = oof[oof["fold"] == entry["fold"]]
        part_probs = part[["p_dark", "p_bright"]].to_numpy()
        assert entry["examples"] == len(part) == N_TRAIN // FOLDS
        assert entry["score"] == pytest.approx(score(cfg, part["label"], labels_from_probs(part_probs, 0.5), part_probs))
    threshold, _ = best_f1_threshold(oof["label"], probs[:, 1])
    assert read_json(parent / "threshold.json")["threshold"] == pytest.approx(threshold) == cv["threshold"]
    # the score at a chosen threshold: each fold cut at the threshold of the other folds' OOF rows, never its own
    labels, _ = cross_fitted_labels(oof["label"].to_numpy(), probs[:, 1], oof["fold"].to_numpy())
    assert cv["at_chosen"]["value"] == pytest.approx(score(cfg, oof["label"], labels))
    assert cv["at_chosen"]["what"].startswith(f"{FOLDS}-fold OOF") and cv["at_0.5"]["value"] == pytest.approx(cv["score"])
    low, high = cv["at_chosen"]["interval"]
    assert low <= cv["at_chosen"]["value"] <= high


@pytest.mark.slow
def test_evaluate_of_the_parent_scores_its_out_of_fold_rows_as_the_driver_did(kfold_run, capsys) -> None:
    from kit.evaluate import evaluate
    from kit.io import read_json

    cfg, parent, _ = kfold_run
    cv, threshold = read_json(parent / "cv.json"), read_json(parent / "threshold.json")

    result = evaluate(cfg, parent)  # a k-fold parent has no best.keras of its own: its folds' OOF rows are scored

    assert result["split"] == "out-of-fold" and result["examples"] == N_TRAIN
    assert result["score"]["value"] == pytest.approx(cv["at_0.5"]["value"])
    assert result["score_at_threshold"]["value"] == pytest.approx(cv["at_chosen"]["value"])
    assert result["score_at_threshold"]["what"].startswith(f"{FOLDS}-fold OOF")
    rewritten = read_json(parent / "threshold.json")  # chosen on all OOF rows, as the driver chose it
    assert rewritten["chosen_on"] == threshold["chosen_on"] == "oof" and rewritten["examples"] == N_TRAIN
    assert rewritten["threshold"] == pytest.approx(threshold["threshold"])
    assert rewritten["honest_score"]["value"] == pytest.approx(threshold["honest_score"]["value"])
    assert read_json(parent / "metrics.json")["f1"] == pytest.approx(cv["score"])
    for name in ("confusion_matrix", "roc", "pr", "scores", "top_losses", "gradcam"):
        assert (parent / "plots" / f"{name}.png").read_bytes()[:4] == b"\x89PNG", name
    assert "out-of-fold rows" in capsys.readouterr().out


@pytest.mark.slow
def test_predict_on_the_parent_averages_the_folds(kfold_run) -> None:
    from kit.data.manifest import read_manifest, records_dir
    from kit.data.pipeline import make_dataset
    from kit.inference import predict_probabilities
    from kit.io import read_json
    from kit.predict import predict
    from kit.run_model import load_model

    cfg, parent, _ = kfold_run
    out = predict(cfg, [])  # latest_run -> the parent -> its folds; threshold=auto -> the parent's threshold.json
    assert out == parent / "submission.csv"
    per_fold = []
    for k in range(FOLDS):
        dataset = make_dataset(cfg, "test", training=False, batch_size=4, manifest=read_manifest(records_dir(cfg)), with_ids=True)
        ids, probs = predict_probabilities(load_model(parent / f"fold{k}"), dataset, progress=False)
        per_fold.append(probs[:, 0])
    expected = pd.Series(np.mean(per_fold, axis=0), index=ids)
    written = pd.read_csv(parent / "probabilities.csv", dtype={"id": str}).set_index("id")
    np.testing.assert_allclose(written.loc[ids, "bright"].to_numpy(), expected.to_numpy(), atol=1e-6)
    threshold = read_json(parent / "threshold.json")["threshold"]
    submission = pd.read_csv(out, dtype={"id": str}).set_index("id")
    assert (submission.loc[ids, "label"].to_numpy() == (expected.to_numpy() >= threshold)).all()


@pytest.mark.slow
def test_resume_skips_finished_folds_and_finishes_the_rest(kfold_run, tmp_path: Path) -> None:
    import dataclasses

    from kit.train.kfold import train_folds

    cfg, parent, _ = kfold_run
    cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, root=str(tmp_path / "runs")))
    copy = tmp_path / "runs" / parent.relative_to(parent.parents[2])
    shutil.copytree(parent, copy)
    # As if killed during the last fold: its done marker, its OOF file and the parent's results are missing.
    for name in ("done", "oof.csv", "cv.json", "threshold.json", "fold2/done", "fold2/oof.csv"):
        (copy / name).unlink()
    finished = {p: p.stat().st_mtime_ns for k in (0, 1) for p in (copy / f"fold{k}").rglob("*") if p.is_file()}

    assert train_folds(cfg, resume=True) == copy
    assert {p: p.stat().st_mtime_ns for p in finished} == finished  # folds 0 and 1 were not retrained
    assert (copy / "fold2" / "done").is_file() and (copy / "done").is_file()
    assert len(pd.read_csv(copy / "fold2" / "history.csv")) == 1  # resumed, not retrained from scratch
    assert len(pd.read_csv(copy / "oof.csv")) == N_TRAIN
    assert [d.name for d in copy.parent.iterdir()] == [copy.name]  # no second parent


def test_the_top_loss_images_of_out_of_fold_rows_are_read_from_the_records_by_id(tmp_path: Path) -> None:
    from kit.data.manifest import read_manifest, records_dir
    from kit.interpret import record_images

    cfg = _config(tmp_path, name="byid")
    _write_records(cfg)
    images, _ = data(N_TRAIN, seed=0, size=SIZE)

    found = record_images(read_manifest(records_dir(cfg)), "train", ["tr017", "tr005", "absent"])

    assert sorted(found) == ["tr005", "tr017"]
    np.testing.assert_array_equal(found["tr005"], images[5].astype("uint8"))
    np.testing.assert_array_equal(found["tr017"], images[17].astype("uint8"))


def test_records_without_folds_name_the_rebuild(tmp_path: Path) -> None:
    from kit.train.kfold import train_folds

    cfg = _config(tmp_path, name="nofolds")
    _write_records(cfg, with_folds=False)
    with pytest.raises(KitError, match="without folds") as info:
        train_folds(cfg)
    assert "kit records comp=nofolds model=cnn folds=3" in info.value.one_line()
