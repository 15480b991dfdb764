"""Tiny runs for the evaluate/predict tests: hand-written records, a Keras model with known weights, a run dir.

The records are written with ``kit.data.schema.serialize`` and a hand-made manifest (no image files, no
multiprocessing), so these tests only depend on the record format and ``kit.data.pipeline``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from kit.config import Config, to_yaml
from kit.data.schema import MANIFEST, Example, serialize
from kit.io import read_json, write_json

SIZE = 8


def make_config(tmp: Path, classes: list[str], *, metric: str = "f1", label_format: str = "index") -> Config:
    cfg = Config()
    cfg.comp.name = "tiny"
    cfg.comp.classes = list(classes)
    cfg.comp.metric = metric
    cfg.comp.sample_submission = "sample_submission.csv"
    cfg.comp.submission.label_format = label_format
    cfg.model.name = "cnn"
    cfg.model.image_size = SIZE
    cfg.data.root = str(tmp / "raw")
    cfg.data.records_root = str(tmp / "records")
    cfg.run.root = str(tmp / "runs")
    cfg.predict.batch_size = 4
    cfg.predict.threshold = "0.5"
    return cfg


def write_split(
    cfg: Config, split: str, images: np.ndarray, labels: np.ndarray, ids: list[str], folds: np.ndarray | None = None
) -> None:
    """One shard of ``split`` plus the manifest entry (merged into an existing manifest); ``folds``: each row's fold
    (train shards of k-fold records), counted per fold in the manifest as the records writer does."""
    import tensorflow as tf

    from kit.data.manifest import records_dir

    folder = records_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    classes = cfg.comp.classes
    name = f"{split}-00000.tfrecord"
    folds = np.full(len(ids), -1) if folds is None else np.asarray(folds)
    with tf.io.TFRecordWriter(str(folder / name)) as writer:
        for image, label, example_id, fold in zip(images, labels, ids, folds, strict=True):
            png = cv2.imencode(".png", image[..., ::-1])[1].tobytes()  # cv2 writes BGR
            soft = np.zeros(len(classes), np.float32)
            if label >= 0:
                soft[label] = 1.0
            writer.write(serialize(Example(png, int(label), soft, example_id, SIZE, SIZE, int(fold))))
    path = folder / MANIFEST
    from kit.data.manifest import VERSION

    manifest = (
        read_json(path)
        if path.is_file()
        else {
            "version": VERSION,
            "comp": cfg.comp.name,
            "image_size": SIZE,
            "classes": classes,
            "num_classes": len(classes),
            "image_format": "png",
            "counts": {},
            "shards": {},
            "skipped": [],
            "augment": {"mode": "none"},
            "fingerprint": "test",
        }
    )
    per_class = {c: int((labels == i).sum()) for i, c in enumerate(classes)}
    manifest["counts"][split] = {"total": len(ids), "per_class": per_class}
    if (folds >= 0).any():
        found, counts = np.unique(folds, return_counts=True)
        manifest["counts"][split]["per_fold"] = {
            str(k): {"total": int(n), "originals": int(n)} for k, n in zip(found, counts, strict=True)
        }
    manifest["shards"][split] = [name]
    write_json(path, manifest)


def random_images(n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def make_model(num_outputs: int, seed: int):
    """Rescale -> flatten -> dense with seeded weights: not flip-symmetric, so TTA changes the output."""
    import keras

    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Rescaling(1 / 255.0),
            keras.layers.Flatten(),
            keras.layers.Dense(num_outputs, activation="sigmoid" if num_outputs == 1 else "softmax"),
        ]
    )
    rng = np.random.default_rng(seed)
    kernel = rng.normal(0, 0.15, (SIZE * SIZE * 3, num_outputs)).astype(np.float32)
    model.layers[-1].set_weights([kernel, np.zeros(num_outputs, np.float32)])
    return model


def make_run(cfg: Config, run_dir: Path, model, history: pd.DataFrame | None = None) -> Path:
    run_dir.mkdir(parents=True, exist_ok=True)
    model.save(run_dir / "best.keras")
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    if history is not None:
        history.to_csv(run_dir / "history.csv", index=False)
    return run_dir


def write_sample_submission(cfg: Config, ids: list[str]) -> Path:
    path = Path(cfg.data.root) / cfg.comp.sample_submission
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({cfg.comp.submission.id_column: ids, cfg.comp.submission.label_column: 0}).to_csv(path, index=False)
    return path


def folder_comp_config(tmp: Path, name: str, test: bool = True) -> Config:
    """A local two-class competition of class folders under ``tmp/raw`` (train/, and test/ when ``test``)."""
    cfg = Config()
    cfg.comp.name = name
    cfg.comp.source = "local"
    cfg.comp.train.dir = "train"
    if test:
        cfg.comp.test.dir = "test"
    cfg.comp.classes = ["a", "b"]
    cfg.data.root = str(tmp / "raw")
    cfg.data.records_root = str(tmp / "records")
    cfg.run.root = str(tmp / "runs")
    cfg.audit.workers = 2
    return cfg


def tiny_cnn_records(folder: Path) -> list[str]:
    """Records of eight 16 px images (6 train, 2 val) built in ``folder``, and the settings of a 2-epoch CNN run on
    them. ``data.root`` names the data they say they came from, so ``kit train`` run from any folder uses them."""
    from kit.config import load_config
    from kit.data import records

    rows = []
    for i in range(8):
        path = folder / f"{i}.png"
        cv2.imwrite(str(path), np.full((16, 16, 3), 30 * i, np.uint8))
        rows.append({"id": str(i), "path": str(path), "label": i % 2, "split": "train" if i < 6 else "val", "fold": -1})
    settings = [
        "comp=demo",
        f"data.root={folder / 'raw'}",
        f"data.records_root={folder / 'records'}",
        "model=cnn",
        "model.image_size=16",
        "model.options.filters=[4]",
        "model.dense_units=0",
        "data.workers=1",
        "train.epochs=2",
        "train.batch_size=4",
        "train.verbose=0",
    ]
    records.build_records(load_config(settings), pd.DataFrame(rows), ["0", "1"])
    return settings
