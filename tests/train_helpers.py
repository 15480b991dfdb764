"""Tiny models, data and configs for the training tests (also imported by their subprocess scripts)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SIZE = 16


def data(n: int = 64, seed: int = 0, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """Easy binary data: bright images are class 1. Pixels 0..255 float32, labels [n, 1] float32."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype("float32")
    x = rng.uniform(0, 120, (n, size, size, 3)) + y[:, None, None, None] * 120
    return x.astype("float32"), y[:, None]


def datasets(batch: int, n_train: int = 64, n_val: int = 32):
    import tensorflow as tf

    x, y = data(n_train, 0)
    xv, yv = data(n_val, 1)
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(n_train, seed=0).batch(batch).repeat()
    val = tf.data.Dataset.from_tensor_slices((xv, yv)).batch(batch)
    return train, val


def tiny_pretrained(size: int = SIZE):
    """The pretrained-model contract in miniature: a nested model named "backbone" called with training=False."""
    import keras

    b_in = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(b_in)
    x = keras.layers.Conv2D(4, 3, padding="same", name="conv1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)
    x = keras.layers.ReLU(name="relu1")(x)
    x = keras.layers.Conv2D(8, 3, strides=2, padding="same", name="conv2")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)
    x = keras.layers.ReLU(name="relu2")(x)
    backbone = keras.Model(b_in, x, name="backbone")
    inputs = keras.Input((size, size, 3))
    x = backbone(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="head")(x)
    return keras.Model(inputs, outputs, name="tiny_pretrained")


def tiny_scratch(size: int = SIZE):
    import keras

    inputs = keras.Input((size, size, 3))
    x = keras.layers.Rescaling(1 / 255.0)(inputs)
    x = keras.layers.Conv2D(4, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", dtype="float32")(x)
    return keras.Model(inputs, outputs)


def config(run_root: str | Path, **train):
    """A binary Config for fit_phases tests; ``train`` overrides TrainConfig fields (fine_tune as a dict)."""
    import dataclasses

    from kit.config import Config, FineTuneConfig

    cfg = Config()
    fine_tune = FineTuneConfig(**train.pop("fine_tune", {}))
    defaults = {"epochs": 2, "learning_rate": 1e-2, "schedule": "constant", "verbose": 0, "early_stopping_patience": 50}
    cfg.train = dataclasses.replace(cfg.train, fine_tune=fine_tune, **{**defaults, **train})
    cfg.comp = dataclasses.replace(cfg.comp, name="tiny", classes=["human", "ai"], metric="f1")
    cfg.run = dataclasses.replace(cfg.run, root=str(run_root))
    return cfg


def tiny_cnn_overrides(tmp_path: Path, augment_mode: str = "none") -> list[str]:
    """Settings of a two-epoch CNN run on the tiny records ``test_trainer._write_records`` writes under tmp_path."""
    return [
        "model=cnn",
        "comp.name=tiny",
        "comp.classes=[]",
        f"data.records_root={tmp_path / 'records'}",
        f"run.root={tmp_path / 'runs'}",
        f"model.image_size={SIZE}",
        "model.options={filters: [4]}",
        f"augment.mode={augment_mode}",
        "train.epochs=2",
        "train.batch_size=16",
        "train.verbose=0",
    ]


def free_ports(n: int) -> list[int]:
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def python(script: str, env: dict | None = None, **kwargs) -> subprocess.Popen:
    """Start ``script`` in a fresh interpreter of this venv (logical devices and TF_CONFIG need one)."""
    full_env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", **(env or {})}
    return subprocess.Popen(
        [sys.executable, "-c", script],
        env=full_env,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        **kwargs,
    )
