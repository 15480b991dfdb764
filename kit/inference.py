"""Predicting with a trained model: test-time augmentation, probabilities over a split, labels from them.

Every model takes raw 0..255 pixels and does its own preprocessing, so a TTA view is just a flipped or
rotated copy of the batch; the views are rows of :data:`kit.config.symmetry.TTA_VIEWS` (beside the flips each
needs, which config loading reads). With records at native size (``data.resize=crop``) an image is its centre crop,
or with ``predict.crops`` = k*k the k x k grid of crops (:mod:`kit.data.resizing`): its probabilities are the mean over
every crop and every view of each crop. ``kit predict``, ``kit evaluate`` and the k-fold driver all predict through here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from kit.config.symmetry import TTA_VIEWS, check_tta
from kit.data.manifest import read_manifest, records_dir
from kit.data.pipeline import make_dataset
from kit.data.sources import load_index
from kit.errors import KitError
from kit.runs import read_threshold, threshold_runs

if TYPE_CHECKING:
    from pathlib import Path

    import keras
    import tensorflow as tf

    from kit.config import Config
    from kit.data.manifest import Manifest


# --- the data ---------------------------------------------------------------------------------------------


def split_dataset(cfg: Config, manifest: Manifest, split: str, fold: int | None = None) -> tf.data.Dataset:
    """``split`` of the records in prediction batches, with ids; ``fold=k``: fold k's val examples (k-fold runs)."""
    kwargs: dict[str, Any] = {"training": False, "batch_size": cfg.predict.batch_size, "with_ids": True}
    kwargs["crops"] = int(cfg.predict.crops)
    if fold is not None:
        kwargs["fold"] = fold
    return make_dataset(cfg, split, manifest=manifest, **kwargs)


def batches_in_split(manifest: Manifest, split: str, batch_size: int, fold: int | None = None) -> int | None:
    """Batches in one split (or fold) of the records, for the progress bar; None when the manifest does not say."""
    count = manifest.count(split, fold)
    return None if count is None else -(-count // batch_size)


def class_names(cfg: Config, manifest: Manifest | None = None) -> list[str]:
    """Class names in label-index order: the config, else the records' manifest, else the index."""
    if cfg.comp.classes:
        return [str(c) for c in cfg.comp.classes]
    try:
        classes = (manifest or read_manifest(records_dir(cfg))).classes
        if classes:
            return list(classes)
    except KitError:
        pass
    return [str(c) for c in load_index(cfg)[1]]


# --- probabilities ----------------------------------------------------------------------------------------


def _unpack(element: Any) -> tuple[Any, Any, Any]:
    """(images, targets or None, ids or None) from the elements make_dataset yields."""
    if not isinstance(element, tuple | list):
        return element, None, None
    if len(element) >= 3:
        return element[0], element[1], element[2]
    if len(element) == 2:
        second = element[1]
        if getattr(second, "dtype", None) is not None and "string" in str(second.dtype):
            return element[0], None, second
        return element[0], second, None
    return element[0], None, None


def predict_probabilities(
    model: keras.Model,
    dataset: tf.data.Dataset,
    tta: Sequence[str] = (),
    *,
    total: int | None = None,
    progress: bool = True,
    on_batch: Callable[[np.ndarray, np.ndarray | None, np.ndarray], None] | None = None,
    source: str = "the model",
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over ``dataset``; return ``(ids, probs)`` with probs shaped like the model output.

    With TTA the probabilities are the mean over the original batch and each transformed view; a batch of crops
    [B, N, S, S, 3] (``predict.crops``) the mean over the N crops, each with its views.
    ``on_batch(images, targets, probs)`` sees every batch, the first crop of each image where there are several
    (evaluate uses it to keep the worst errors
    without holding the whole split in memory). ``total`` is the number of batches, for the bar.
    A NaN or infinite probability (a diverged model) is a KitError naming ``source`` (e.g. "run <dir>"): no label,
    submission or score is ever made from one.
    """
    from kit.progress import progress as progress_lines

    views = [TTA_VIEWS[name].transform for name in check_tta(tta)]
    all_ids: list[np.ndarray] = []
    all_probs: list[np.ndarray] = []
    counter = 0
    for element in progress_lines(dataset, "predict", total, "batch", disable=not progress, leave=False):
        images, targets, ids = _unpack(element)
        batch = np.asarray(images, dtype=np.float32)
        crops = batch.shape[1] if batch.ndim == 5 else 1
        flat = batch.reshape(-1, *batch.shape[-3:])  # [B * crops, S, S, 3], each image's crops side by side
        probs = np.asarray(model.predict_on_batch(flat), dtype=np.float64)
        for view in views:
            probs += np.asarray(model.predict_on_batch(np.ascontiguousarray(view(flat))), dtype=np.float64)
        probs = probs.reshape(len(batch), crops, -1).mean(axis=1) / (1 + len(views))
        batch = batch[:, 0] if batch.ndim == 5 else batch  # what on_batch shows of an image: its first crop
        if ids is None:  # no ids in the dataset: number the examples
            ids = np.arange(counter, counter + len(batch)).astype(str)
        else:
            ids = np.array([i.decode("utf-8") if isinstance(i, bytes) else str(i) for i in np.asarray(ids).reshape(-1)])
        counter += len(batch)
        if on_batch is not None:
            on_batch(batch, None if targets is None else np.asarray(targets), probs)
        all_ids.append(ids)
        all_probs.append(probs)
    if not all_probs:
        raise KitError("the dataset to predict is empty", "check that the records hold this split (kit records)")
    ids, probs = np.concatenate(all_ids), np.concatenate(all_probs)
    check_finite(probs, ids, source)
    return ids, probs.astype(np.float32)


def check_finite(probs: np.ndarray, ids: np.ndarray, source: str) -> None:
    """Refuse probabilities that are NaN or infinite, naming ``source`` and the first such example."""
    bad = ~np.isfinite(probs.reshape(len(probs), -1)).all(axis=1)
    if bad.any():
        raise KitError(
            f"{source} predicted non-finite probabilities (NaN or inf) for {int(bad.sum())} of {len(probs)} examples "
            f"(first: id {ids[bad][0]}); nothing was written from them",
            "the model diverged in training (see the loss in its history.csv): retrain it, e.g. with a lower train.learning_rate",
        )


def predict_labelled(
    model: keras.Model, dataset: tf.data.Dataset, tta: Sequence[str] = (), **options: Any
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``predict_probabilities`` over a labelled split, plus its true class indices: ``(ids, probs, y_true)``.
    ``options``: its keywords (``total``, ``progress``, ``source``), passed on with their defaults there."""
    targets: list[np.ndarray] = []
    ids, probs = predict_probabilities(
        model, dataset, tta, on_batch=lambda _images, batch_targets, _probs: targets.append(batch_targets), **options
    )
    return ids, probs, true_labels(np.concatenate(targets))


# --- labels -----------------------------------------------------------------------------------------------


def to_class_probs(probs: np.ndarray) -> np.ndarray:
    """(N, C) class probabilities; a single sigmoid column becomes [1 - p, p]."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        probs = probs[:, None]
    if probs.shape[1] == 1:
        return np.concatenate([1.0 - probs, probs], axis=1)
    return probs


def labels_from_probs(class_probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Binary: class 1 when p >= threshold; otherwise the argmax."""
    if class_probs.shape[1] == 2:
        return (class_probs[:, 1] >= threshold).astype(np.int64)
    return class_probs.argmax(axis=1).astype(np.int64)


def true_labels(targets: np.ndarray) -> np.ndarray:
    """Class indices from pipeline targets: (B, 1) probability of class 1, or (B, C) one-hot/soft."""
    targets = np.asarray(targets)
    if targets.ndim == 1 or targets.shape[1] == 1:
        return (targets.reshape(-1) >= 0.5).astype(np.int64)
    return targets.argmax(axis=1).astype(np.int64)


def resolve_threshold(setting: str, run_dirs: Sequence[Path]) -> float:
    """The binary threshold of a submission: ``predict.threshold`` as a number; ``auto``: the runs' saved thresholds
    (a k-fold parent's own, else its folds'; their mean for an ensemble). One rule for kit predict and kernels."""
    if str(setting).strip().lower() != "auto":
        return float(setting)
    return float(np.mean([read_threshold(run) for run in threshold_runs(list(run_dirs))]))
