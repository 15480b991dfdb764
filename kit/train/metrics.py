"""Loss and metrics, with stable names so the logs always hold ``val_f1_score`` and ``val_accuracy``.

Binary problems have one sigmoid output and targets shaped ``[B, 1]`` (float), which is what Keras'
``F1Score`` needs; multi-class problems have softmax outputs and one-hot (or CutMix-soft) targets.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from kit.config import Config, Metric
from kit.errors import unknown_choice

if TYPE_CHECKING:
    import keras

F1_METRICS = (Metric.f1, Metric.macro_f1)  # competition metrics that training follows with f1_score
LOSS = "loss"

# The metrics a model logs, by name: how to make each for a binary problem and for a multi-class one (None: not
# logged). Binary F1 uses ``average="micro"``: over a single output unit that is exactly the F1 of class 1, but
# reported as a scalar (the default ``average=None`` gives a 1-element array that CSV logs and EarlyStopping
# would carry around as ``[0.83]``).
MetricMaker = Callable[[Any, str], "keras.metrics.Metric"]
METRICS: dict[str, tuple[MetricMaker, MetricMaker | None]] = {
    "accuracy": (
        lambda keras, name: keras.metrics.BinaryAccuracy(name=name),
        lambda keras, name: keras.metrics.CategoricalAccuracy(name=name),
    ),
    "f1_score": (
        lambda keras, name: keras.metrics.F1Score(average="micro", threshold=0.5, name=name),
        lambda keras, name: keras.metrics.F1Score(average="macro", name=name),
    ),
    "auc": (lambda keras, name: keras.metrics.AUC(name=name), None),
    "precision": (lambda keras, name: keras.metrics.Precision(name=name), None),
    "recall": (lambda keras, name: keras.metrics.Recall(name=name), None),
}


def build_metrics(binary: bool, num_classes: int) -> list[keras.metrics.Metric]:
    """The rows of METRICS for the problem: ``f1_score``, ``accuracy`` (both) and ``auc``, ``precision``, ``recall``
    (binary)."""
    import keras

    if not binary and num_classes < 2:
        raise ValueError(f"num_classes={num_classes}: a classifier needs at least 2 classes")
    makers = [(name, both[0] if binary else both[1]) for name, both in METRICS.items()]
    return [make(keras, name) for name, make in makers if make is not None]


def logged_names(binary: bool | None, has_val: bool) -> list[str]:
    """What training logs and a monitor or tuner objective may name: the loss and the metrics of the problem
    (``binary=None``: of either problem), with their ``val_`` forms when there is a validation split."""
    problems = (0, 1) if binary is None else (0,) if binary else (1,)  # the columns of METRICS: binary, multi-class
    names = [LOSS, *(name for name, makers in METRICS.items() if any(makers[p] is not None for p in problems))]
    return [*names, *(f"val_{name}" for name in names)] if has_val else names


def check_metric_name(name: str, setting: str, binary: bool | None = None, has_val: bool = True) -> None:
    """A monitor or objective that training cannot log (a typo, ``val_auc`` of a multi-class model) is one KitError
    before anything trains, not a search whose every trial fails or a run that never keeps a best.keras."""
    names = logged_names(binary, has_val)
    if name not in names:
        raise unknown_choice(f"metric for {setting}", name, names)


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
    check_metric_name(monitor, "train.monitor", binary, has_val)
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
