"""The frozen backbone's pooled features of every record, computed once and cached beside the records.

A linear probe (:mod:`kit.train.probe`) fits on features, not pixels: each image goes through the frozen network
once, here, and the features are kept in ``<records>/features/<model>-<key>/<split>.npz`` (features, targets, ids,
and for the train split each example's fold). The key is a hash of what the features depend on: the model's name,
options and image size, the weights (a keras-hub row's own preset by its Kaggle handle), the records' fingerprint,
and the network's weights themselves (so a weights file or preset changed in place, or another seed for
``weights=none``, cannot be read back as the old features).
``key.json`` in the folder says what the key was made of. Any change gives another folder, computed anew.

The images come through :func:`kit.data.pipeline.make_dataset` with ``training=False``: records order, no
augmentation, the pixels every model sees.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from kit.io import as_path, atomic_write, join, write_json

if TYPE_CHECKING:
    from pathlib import Path

    import keras

    from kit.config import Config
    from kit.data.manifest import Manifest
    from kit.io import URLPath

FEATURES_DIR = "features"
KEY_FILE = "key.json"
FORMAT = 1  # the cache's layout; a change makes every older cache a miss


@dataclass(frozen=True)
class Features:
    """One split's features, in records order."""

    features: np.ndarray  # float32 [N, F]
    targets: np.ndarray  # float32 [N, 1] (binary: probability of class 1) or [N, C], as the pipeline gives them
    ids: np.ndarray  # str [N]
    folds: np.ndarray  # int64 [N]: each example's fold (-1 without folds; train split only, else all -1)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, keep: np.ndarray) -> Features:
        return Features(self.features[keep], self.targets[keep], self.ids[keep], self.folds[keep])

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, features=self.features, targets=self.targets, ids=self.ids, folds=self.folds)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Features:
        with np.load(io.BytesIO(data), allow_pickle=False) as arrays:
            return cls(arrays["features"], arrays["targets"], arrays["ids"], arrays["folds"])


def feature_extractor(model: keras.Model, feature_layer: str) -> keras.Model:
    """The part of ``model`` that computes the input of its ``feature_layer`` (the linear head): the features."""
    import keras

    return keras.Model(model.inputs, model.get_layer(feature_layer).input, name=f"{model.name}_features")


def weights_digest(network: keras.Model) -> str:
    """sha256 of every weight of ``network``, in order: the same digest means the same features."""
    digest = hashlib.sha256()
    for weight in network.weights:
        digest.update(np.ascontiguousarray(np.asarray(weight)).tobytes())
    return digest.hexdigest()


def cache_key(cfg: Config, manifest: Manifest, network: keras.Model) -> dict:
    """What the features of ``network`` on these records depend on (key.json)."""
    records = manifest.fingerprint or hashlib.sha256(json.dumps(manifest.to_json(), sort_keys=True).encode()).hexdigest()
    return {
        "format": FORMAT,
        "model": cfg.model.name,
        "options": cfg.model.options,
        "image_size": int(manifest.image_size),
        "weights": weights_identity(cfg),
        "records": records,
        "network": weights_digest(network),
    }


def weights_identity(cfg: Config) -> str:
    """``model.weights`` as the features depend on it: a keras-hub row's own preset by its Kaggle handle (its version
    included), a preset folder or weights file by its path; with the network's digest beside it in the key, a
    preset changed in place is also a new key."""
    from kit.models.hub_backbones import hub_row
    from kit.models.hub_presets import preset_identity

    row = hub_row(cfg.model.name)
    return preset_identity(cfg.model.weights, row) if row is not None else str(cfg.model.weights)


def cache_dir(cfg: Config, manifest: Manifest, network: keras.Model) -> tuple[Path | URLPath, dict]:
    """The cache folder of ``network``'s features on the records of ``manifest``, and its key."""
    key = cache_key(cfg, manifest, network)
    name = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return as_path(join(join(manifest.records_dir, FEATURES_DIR), f"{cfg.model.name}-{name}")), key


def split_features(
    cfg: Config, manifest: Manifest, network: keras.Model, split: str, *, batch_size: int
) -> tuple[Features, bool]:
    """``split``'s features, read from the cache or computed (and cached); True when they were computed."""
    folder, key = cache_dir(cfg, manifest, network)
    path = folder / f"{split}.npz"
    if path.is_file():
        print(f"features: {split} read from {path}", flush=True)
        return Features.from_bytes(path.read_bytes()), False
    features = extract(cfg, manifest, network, split, batch_size=batch_size)
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / KEY_FILE, key)
    atomic_write(path, features.to_bytes())
    return features, True


def extract(cfg: Config, manifest: Manifest, network: keras.Model, split: str, *, batch_size: int) -> Features:
    """Every record of ``split`` through ``network`` (records order, no augmentation), with a progress bar."""
    import tensorflow as tf
    from tqdm import tqdm

    from kit.data.pipeline import count_examples, make_dataset

    dataset = make_dataset(cfg, split, training=False, batch_size=batch_size, manifest=manifest, with_ids=True)
    # One trace for every batch size (the last batch is smaller): a retrace costs seconds, as much as many batches.
    batch_spec = tf.TensorSpec([None, manifest.image_size, manifest.image_size, 3], tf.float32)
    forward = tf.function(lambda images: network(images, training=False), input_signature=[batch_spec])
    total = count_examples(manifest, split)
    parts, targets, ids = [], [], []
    started = time.monotonic()
    with tqdm(total=total, desc=f"features: {split}", unit="img", mininterval=2.0) as bar:
        for images, batch_targets, batch_ids in dataset:
            parts.append(np.asarray(forward(images), np.float32))
            targets.append(batch_targets.numpy())
            ids.extend(i.decode("utf-8") for i in batch_ids.numpy())
            bar.update(len(batch_ids))
    seconds = max(time.monotonic() - started, 1e-9)
    print(f"features: {split} computed for {len(ids)} images in {seconds:.1f} s ({len(ids) / seconds:.0f} img/s)", flush=True)
    folds = record_folds(manifest) if split == "train" else np.full(len(ids), -1, np.int64)  # the same shards, same order
    return Features(np.concatenate(parts), np.concatenate(targets), np.array(ids, dtype=str), folds)


def record_folds(manifest: Manifest) -> np.ndarray:
    """The ``fold`` feature of every train record, in records order (a cheap pass: no image is decoded)."""
    import tensorflow as tf

    from kit.data import schema

    spec = {"fold": schema.feature_spec(1)["fold"]}
    records = tf.data.TFRecordDataset(manifest.shard_paths("train")).batch(4096)
    batches = [batch.numpy() for batch in records.map(lambda serialized: tf.io.parse_example(serialized, spec)["fold"])]
    return np.concatenate(batches).astype(np.int64) if batches else np.zeros(0, np.int64)
