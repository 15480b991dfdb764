"""train.mode=probe: a logistic regression on the frozen backbone's cached features, in a run folder like any other.

A tiny generated competition of class folders (dark and bright 32 px noise, PNGs), the smallest backbone row
(mobilenetv3_small) with weights=none: records -> probe -> evaluate -> predict (with TTA) -> export, the feature
cache read back and recomputed when the network, the image size or the records change, and k-fold probes.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from run_fixtures import folder_comp_config
from sklearn.linear_model import LogisticRegression

from kit.config import Config, ProbeConfig
from kit.errors import KitError
from kit.io import read_json
from kit.train.probe import fit_linear_head, head_probabilities

BACKBONE = "mobilenetv3_small"
PER_CLASS, TEST = 24, 8


def _write_competition(root: Path, seed: int = 0) -> None:
    """Class ``a``: dark noise, class ``b``: bright noise, and unlabelled test images of both."""
    rng = np.random.default_rng(seed)
    for split, count in (("train", PER_CLASS), ("test", TEST // 2)):
        for label, low in (("a", 0), ("b", 110)):
            folder = root / split / label if split == "train" else root / split
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                image = rng.integers(low, low + 146, (32, 32, 3), dtype=np.uint8)
                cv2.imwrite(str(folder / f"{label}{i:02d}.png"), image)


def _config(tmp: Path, *overrides: str) -> Config:
    cfg = folder_comp_config(tmp, "probe")
    cfg.model = dataclasses.replace(cfg.model, name=BACKBONE, image_size=32, weights="none", dense_units=8, dropout=0.2)
    cfg.data = dataclasses.replace(cfg.data, val_fraction=0.25, workers=1)
    cfg.augment = dataclasses.replace(cfg.augment, mode="none")
    cfg.train = dataclasses.replace(cfg.train, mode="probe", batch_size=16, verbose=0)
    cfg.predict = dataclasses.replace(cfg.predict, batch_size=16)
    return cfg


def _train(cfg: Config, capsys: pytest.CaptureFixture) -> tuple[Path, str]:
    from kit.data.records import build_from_config
    from kit.train.trainer import train

    build_from_config(cfg)
    run = train(cfg)
    return Path(run), capsys.readouterr().out


def _features_dirs(cfg: Config) -> list[Path]:
    from kit.data.manifest import records_dir

    return sorted((Path(records_dir(cfg)) / "features").glob(f"{BACKBONE}-*"))


# --- the head: scikit-learn's probabilities, carried by a Dense layer -------------------------------------------


def _blobs(classes: int, n: int = 90, features: int = 6) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(classes)
    labels = np.arange(n) % classes
    centres = rng.normal(0, 3, (classes, features))
    x = centres[labels] + rng.normal(0, 1, (n, features)) * rng.uniform(0.5, 40, features)  # unequal scales
    return x + rng.uniform(-50, 50, features), labels


@pytest.mark.parametrize("classes", [2, 3])
def test_linear_head_gives_scikit_learns_probabilities_on_raw_features(classes: int) -> None:
    x, labels = _blobs(classes)
    kernel, bias = fit_linear_head(ProbeConfig(c=0.7), x, labels, classes, seed=0)
    probs = head_probabilities(x, kernel, bias)
    assert probs.shape == (len(x), 1 if classes == 2 else classes)
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    reference = make_pipeline(StandardScaler(), LogisticRegression(C=0.7, max_iter=1000, random_state=0)).fit(x, labels)
    expected = reference.predict_proba(x)
    np.testing.assert_allclose(probs[:, 0] if classes == 2 else probs, expected[:, 1] if classes == 2 else expected, atol=1e-5)


def test_balanced_class_weight_moves_the_boundary_toward_the_rare_class() -> None:
    x, labels = _blobs(2, n=200)
    keep = (labels == 0) | (np.arange(len(labels)) % 10 == 1)  # class 1 rare
    x, labels = x[keep], labels[keep]
    plain = head_probabilities(x, *fit_linear_head(ProbeConfig(), x, labels, 2, seed=0))[:, 0]
    balanced = head_probabilities(x, *fit_linear_head(ProbeConfig(class_weight="balanced"), x, labels, 2, seed=0))[:, 0]
    assert balanced.mean() > plain.mean()  # the rare class weighs more: more probability on it everywhere


def test_classes_missing_from_training_get_no_probability() -> None:
    x, labels = _blobs(3)
    labels = np.where(labels == 1, 0, labels)  # class 1 of 4 never seen, nor class 3
    kernel, bias = fit_linear_head(ProbeConfig(), x, labels, 4, seed=0)
    probs = head_probabilities(x, kernel, bias)
    assert probs.shape == (len(x), 4) and probs[:, [1, 3]].max() < 1e-9
    np.testing.assert_allclose(probs.sum(1), 1.0, atol=1e-6)


def test_scores_are_keras_metrics_of_the_heads_probabilities() -> None:
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    from kit.train.features import Features
    from kit.train.probe import scores

    x, labels = _blobs(3)
    kernel, bias = fit_linear_head(ProbeConfig(c=0.05), x, labels, 3, seed=0)
    part = Features(x.astype(np.float32), np.eye(3, dtype=np.float32)[labels], np.array([str(i) for i in labels]), labels * 0 - 1)
    logs = scores(part, kernel, bias, binary=False, num_classes=3)
    probs = head_probabilities(x, kernel, bias)
    assert set(logs) == {"loss", "f1_score", "accuracy"}
    assert logs["accuracy"] == pytest.approx(accuracy_score(labels, probs.argmax(1)))
    assert logs["f1_score"] == pytest.approx(f1_score(labels, probs.argmax(1), average="macro"), abs=1e-5)
    assert logs["loss"] == pytest.approx(log_loss(labels, probs), abs=1e-4)
    assert 0.5 < logs["accuracy"] < 1.0  # C=0.05: a real fit, not a separable toy


def test_one_class_in_training_is_one_line() -> None:
    x, _ = _blobs(2)
    with pytest.raises(KitError, match="all of one class"):
        fit_linear_head(ProbeConfig(), x, np.zeros(len(x), int), 2, seed=0)


def test_a_model_without_a_pretrained_backbone_is_refused(tmp_path: Path) -> None:
    from kit.train.probe import probe_model

    cfg = _config(tmp_path)
    cfg.model = dataclasses.replace(cfg.model, name="cnn")
    with pytest.raises(KitError, match="train.mode=probe needs a pretrained backbone; cnn trains from scratch"):
        probe_model(cfg, 2)


# --- a probe run, end to end --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_probe_run_evaluates_predicts_with_tta_and_exports(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    import keras

    from kit.data.manifest import read_manifest, records_dir
    from kit.evaluate import evaluate
    from kit.export import export
    from kit.inference import predict_labelled, split_dataset
    from kit.predict import predict
    from kit.run_model import load_model

    cfg = _config(tmp_path)
    _write_competition(Path(cfg.data.root))
    run, out = _train(cfg, capsys)

    assert "features: train computed for 36 images" in out and "features: val computed for 12 images" in out
    assert "model.dense_units=8, model.dropout=0.2 not used" in out
    metrics = read_json(run / "metrics.json")
    assert metrics["split"] == "val" and metrics["monitor"] == "val_f1_score" and metrics["epochs"] == 1
    assert metrics["probe"]["train_examples"] == 36 and metrics["probe"]["features"] == 576  # MobileNetV3Small's pooled width
    history = pd.read_csv(run / "history.csv")
    assert len(history) == 1 and {"loss", "f1_score", "val_loss", "val_f1_score", "val_auc"} <= set(history.columns)
    assert (run / "done").is_file()

    # best.keras is the frozen backbone + the fitted Dense layer: its val scores are the ones metrics.json holds.
    model = load_model(run)
    assert [layer.name for layer in model.layers][-1] == "predictions" and not any(
        isinstance(layer, keras.layers.Dropout) for layer in model.layers
    )
    manifest = read_manifest(records_dir(cfg))
    _, probs, labels = predict_labelled(model, split_dataset(cfg, manifest, "val"), (), progress=False)
    accuracy = float(((probs[:, 0] >= 0.5) == labels).mean())
    assert accuracy == pytest.approx(metrics["metrics"]["val_accuracy"], abs=1e-6)
    assert accuracy >= 0.9  # dark against bright: even random features tell them apart

    scored = evaluate(cfg, run)
    assert scored["examples"] == 12 and scored["accuracy"] == pytest.approx(accuracy)
    cfg.predict = dataclasses.replace(cfg.predict, tta=["flip"])
    submission = pd.read_csv(predict(cfg, [run]))
    assert len(submission) == TEST  # the test images are named after their class: the probe gets them right
    assert (submission["label"] == submission["id"].str.startswith("b").astype(int)).all()
    path = export(cfg, run, "savedmodel")
    assert path.exists()


# --- the feature cache -----------------------------------------------------------------------------------------


@pytest.mark.slow
def test_features_are_read_back_and_recomputed_when_the_network_size_or_records_change(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    from kit.models.pretrained import get_backbone
    from kit.train.probe import probe_model

    cfg = _config(tmp_path)
    _write_competition(Path(cfg.data.root))
    first, out = _train(cfg, capsys)
    assert "features: train computed" in out and "features: val computed" in out
    [folder] = _features_dirs(cfg)
    stamps = {path.name: path.stat().st_mtime_ns for path in folder.glob("*.npz")}
    assert sorted(stamps) == ["train.npz", "val.npz"]
    key = read_json(folder / "key.json")
    assert key["model"] == BACKBONE and key["image_size"] == 32 and key["weights"] == "none"

    second, out = _train(cfg, capsys)  # the same network on the same records: nothing is extracted again
    assert "features: train read from" in out and "features: val read from" in out and "computed" not in out
    assert _features_dirs(cfg) == [folder] and {p.name: p.stat().st_mtime_ns for p in folder.glob("*.npz")} == stamps
    assert read_json(second / "metrics.json")["metrics"] == read_json(first / "metrics.json")["metrics"]

    # Other weights: a backbone weights file from a network drawn with another seed.
    other = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=7))
    weights = tmp_path / "other.weights.h5"
    get_backbone(probe_model(other, 2)).save_weights(str(weights))
    with_weights = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, weights=str(weights)))
    _, out = _train(with_weights, capsys)
    assert "features: train computed" in out and len(_features_dirs(cfg)) == 2

    # Another image size: its own records, its own features.
    bigger = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, image_size=48))
    _, out = _train(bigger, capsys)
    assert "features: train computed" in out and len(_features_dirs(bigger)) == 1

    # The records rebuilt from a changed image: a new fingerprint, so the features are computed again.
    image = Path(cfg.data.root) / "train" / "a" / "a00.png"
    cv2.imwrite(str(image), np.full((32, 32, 3), 60, np.uint8))
    _, out = _train(cfg, capsys)
    assert "features: train computed" in out and len(_features_dirs(cfg)) == 3
    assert folder.is_dir()  # the older key's cache is left for the settings that still match it


# --- k-fold --------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kfold_probe_extracts_once_and_scores_every_fold_out_of_fold(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from kit.data.records import build_from_config
    from kit.predict import predict
    from kit.train.kfold import train_folds

    cfg = _config(tmp_path)
    cfg.data = dataclasses.replace(cfg.data, folds=3)
    _write_competition(Path(cfg.data.root))
    build_from_config(cfg)
    parent = Path(train_folds(cfg))

    out = capsys.readouterr().out
    assert out.count("features: train computed") == 1 and out.count("features: train read from") == 2
    assert "features: val" not in out  # each fold validates on its part of the train records
    oof = pd.read_csv(parent / "oof.csv")
    assert len(oof) == 2 * PER_CLASS and oof["id"].is_unique
    for k in range(3):
        metrics = read_json(parent / f"fold{k}" / "metrics.json")
        assert metrics["split"] == "val" and metrics["probe"]["train_examples"] == 2 * PER_CLASS - len(oof[oof["fold"] == k])
    assert read_json(parent / "cv.json")["score"] >= 0.9
    submission = pd.read_csv(predict(cfg, [parent]))  # the folds' mean
    assert (submission["label"] == submission["id"].str.startswith("b").astype(int)).all()
