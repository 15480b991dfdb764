"""Loss and metrics, with stable names so the logs always hold ``val_f1_score`` and ``val_accuracy``.

Binary problems have one sigmoid output and targets shaped ``[B, 1]`` (float), which is what Keras'
``F1Score`` needs; multi-class problems have softmax outputs and one-hot (or CutMix-soft) targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from kit.config import Config, Metric

if TYPE_CHECKING:
    import keras

F1_METRICS = (Metric.f1, Metric.macro_f1)  # competition metrics that training follows with f1_score


def build_metrics(binary: bool, num_classes: int) -> list[keras.metrics.Metric]:
    """Metrics named ``f1_score``, ``accuracy`` (both problems) and ``auc``, ``precision``, ``recall`` (binary).

    Binary F1 uses ``average="micro"``: over a single output unit that is exactly the F1 of class 1, but
    reported as a scalar (the default ``average=None`` gives a 1-element array that CSV logs and
    EarlyStopping would carry around as ``[0.83]``).
    """
    import keras

    if binary:
        return [
            keras.metrics.BinaryAccuracy(name="accuracy"),
            keras.metrics.F1Score(average="micro", threshold=0.5, name="f1_score"),
            keras.metrics.AUC(name="auc"),
            keras.metrics.Precision(name="precision"),
            keras.metrics.Recall(name="recall"),
        ]
    if num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: a classifier needs at least 2 classes")
    return [
        keras.metrics.CategoricalAccuracy(name="accuracy"),
        keras.metrics.F1Score(average="macro", name="f1_score"),
    ]


def build_loss(binary: bool, label_smoothing: float = 0.0) -> keras.losses.Loss:
    """Cross-entropy matching the output layer; label smoothing as ``train.label_smoothing``."""
    import keras

    if binary:
        return keras.losses.BinaryCrossentropy(label_smoothing=label_smoothing, name="binary_crossentropy")
    return keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing, name="categorical_crossentropy")


def monitored_metric(cfg: Config, binary: bool, has_val: bool) -> str:
    """The one rule for what training (checkpoint, early stopping, plateau) and the tuner's ``auto`` objective
    follow: ``train.monitor`` when set, else ``val_f1_score`` for binary problems and F1 competitions and
    ``val_accuracy`` otherwise; without a validation split, the same metric on the training data.

    ``binary`` comes from the caller (the records' classes or the model's output), not from ``cfg.comp.classes``,
    which may be empty until the records are read.
    """
    if cfg.train.monitor != "auto":
        monitor = cfg.train.monitor
    else:
        monitor = "val_f1_score" if binary or cfg.comp.metric in F1_METRICS else "val_accuracy"
    if not has_val and monitor.startswith("val_"):
        print(f"no validation split: monitoring the training metric {monitor[4:]} instead of {monitor}")
        monitor = monitor[4:]
    return monitor


def monitor_mode(monitor: str) -> str:
    """``min`` for losses, ``max`` for scores: which direction is better for ``monitor``."""
    return "min" if monitor.endswith("loss") else "max"


def is_better(value: float, best: float | None, mode: str) -> bool:
    """True when ``value`` improves on ``best`` (None: nothing yet) in direction ``mode``."""
    if best is None:
        return True
    return value < best if mode == "min" else value > best


def scalar_logs(logs: Mapping[str, Any] | None) -> dict[str, float]:
    """Epoch logs as plain floats (tensors and 1-element arrays averaged), for CSV, JSON and comparisons."""
    import numpy as np

    out: dict[str, float] = {}
    for key, value in (logs or {}).items():
        try:
            out[key] = float(np.mean(np.asarray(value, dtype="float64")))
        except (TypeError, ValueError):
            continue
    return out
