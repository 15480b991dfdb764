"""``train.mode=probe``: a linear probe, a logistic regression on the frozen backbone's pooled features.

The probe of UnivFD (Ojha et al., CVPR 2023) and of Cozzolino et al. (CLIP features for synthetic-image detection):
the backbone never trains, so each image's features are computed once (:mod:`kit.train.features`, cached beside the
records) and scikit-learn's ``LogisticRegression`` fits on them in seconds (``train.probe.c``,
``train.probe.class_weight``, ``train.probe.max_iter``). The features are standardised for the solver, and the
scaling folded back into the coefficients, which then become the kernel and bias of the model's own classifier
layer. So the run folder holds what any run holds: ``best.keras`` (the frozen backbone and that Dense layer: raw
0-255 pixels in, probabilities out, so evaluate, predict with its TTA views, k-fold, export and kernels use it as
they use any model), ``history.csv`` (one row), ``metrics.json`` with the validation scores under Keras' own metric
names, and config.yaml and the rest written by :mod:`kit.train.trainer`.

The head is linear: the model is built without ``model.dense_units`` and ``model.dropout`` (a hidden layer would
stay random). The network is built under ``train.seed``, so ``weights=none`` gives the same features every run.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kit.errors import KitError
from kit.io import write_json
from kit.runs import BEST_MODEL

if TYPE_CHECKING:
    import keras

    from kit.config import Config, ProbeConfig
    from kit.io import URLPath
    from kit.train.features import Features
    from kit.train.session import Session

LINEAR_HEAD = "predictions"  # the classifier layer every kit model ends in (kit.models.common.classifier_output)
ABSENT_CLASS_BIAS = -30.0  # a class the training split lacks: a softmax probability of ~1e-13


def fit_probe(session: Session, run_dir: Path | URLPath) -> dict[str, Any]:
    """Fit the probe of ``session`` into ``run_dir``: best.keras, history.csv, metrics.json; returns metrics.json."""
    import tensorflow as tf

    from kit.data.manifest import source_split
    from kit.train.callbacks import save_model_atomic
    from kit.train.features import feature_extractor, split_features

    cfg, manifest, fold = session.cfg, session.manifest, session.fold
    if isinstance(session.strategy, tf.distribute.MultiWorkerMirroredStrategy):
        raise KitError("train.mode=probe runs on one machine", "unset TF_CONFIG (the probe extracts features once)")
    with session.precision_policy(), session.strategy.scope():
        model = probe_model(cfg, len(session.classes))
    network = feature_extractor(model, LINEAR_HEAD)
    extract = {"batch_size": session.global_batch}
    pool, _ = split_features(cfg, manifest, network, source_split("train", fold), **extract)
    if fold is not None:
        train, val = fold_parts(pool, fold)
    else:
        train = pool
        val = split_features(cfg, manifest, network, "val", **extract)[0] if session.val_examples else None

    started = time.monotonic()
    num_classes = len(session.classes)
    kernel, bias = fit_linear_head(cfg.train.probe, train.features, hard_labels(train.targets), num_classes, cfg.train.seed)
    seconds = time.monotonic() - started
    model.get_layer(LINEAR_HEAD).set_weights([kernel.astype(np.float32), bias.astype(np.float32)])
    save_model_atomic(model, run_dir / BEST_MODEL)

    logs = scores(train, kernel, bias, session.binary, num_classes)
    if val is not None:
        logs.update({f"val_{name}": value for name, value in scores(val, kernel, bias, session.binary, num_classes).items()})
    result = write_run_scores(cfg, run_dir, logs, has_val=val is not None, binary=session.binary)
    result["probe"] = {
        "features": int(train.features.shape[1]),
        "train_examples": len(train),
        "fit_seconds": round(seconds, 3),
        "c": cfg.train.probe.c,
        "class_weight": str(cfg.train.probe.class_weight),
    }
    write_json(run_dir / "metrics.json", result)
    print(
        f"probe: logistic regression on {len(train)} x {train.features.shape[1]} features fitted in {seconds:.1f} s; "
        f"{result['monitor']} {result['best']:.4f}",
        flush=True,
    )
    return result


def probe_model(cfg: Config, num_classes: int) -> keras.Model:
    """The run's model with a linear head (no hidden layer, no dropout), built under ``train.seed``; a model with no
    pretrained backbone is refused (its random features would teach a probe nothing)."""
    from kit.models.registry import MODELS, build_model

    entry = MODELS.get(cfg.model.name)
    if entry is not None and not entry.pretrained:
        raise KitError(
            f"train.mode=probe needs a pretrained backbone; {cfg.model.name} trains from scratch",
            "pick a backbone (`kit list`), e.g. model=effnetv2_b0 model.weights=imagenet, or train.mode=finetune",
        )
    head = {"dense_units": cfg.model.dense_units, "dropout": cfg.model.dropout}
    unused = [f"model.{name}={value}" for name, value in head.items() if value]
    if unused:
        print(f"probe: a linear head on the pooled features ({', '.join(unused)} not used)", flush=True)
    import keras

    keras.utils.set_random_seed(cfg.train.seed)  # weights=none: the same network, so the same (cached) features
    return build_model(dataclasses.replace(cfg.model, dense_units=0, dropout=0.0), num_classes)


def fold_parts(pool: Features, fold: int) -> tuple[Features, Features]:
    """Fold ``fold`` of the train records' features: train = the other folds, val = this fold's originals (no
    offline-augmented copies), as :func:`kit.data.pipeline.make_dataset` splits them."""
    from kit.data.pipeline import AUGMENTED_MARK

    copies = np.char.find(pool.ids.astype(str), AUGMENTED_MARK) >= 0
    return pool.take(pool.folds != fold), pool.take((pool.folds == fold) & ~copies)


def hard_labels(targets: np.ndarray) -> np.ndarray:
    """Class indices from the pipeline's targets: [N, 1] probabilities of class 1, or [N, C] (soft) one-hot rows."""
    if targets.shape[1] == 1:
        return (targets[:, 0] >= 0.5).astype(np.int64)
    return targets.argmax(axis=1).astype(np.int64)


def fit_linear_head(
    settings: ProbeConfig, x: np.ndarray, labels: np.ndarray, num_classes: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Logistic regression of ``labels`` on ``x``; returns the Dense layer's kernel [F, U] and bias [U] that compute
    its probabilities from the raw features (U = 1 sigmoid unit for binary problems, else one softmax unit a class)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    present = np.unique(labels)
    if len(present) < 2:
        raise KitError(
            f"the probe's training examples are all of one class (index {present[0] if len(present) else '-'})",
            "rebuild the records with both classes in the training split",
        )
    scaler = StandardScaler().fit(x)
    weight = None if str(settings.class_weight) == "none" else str(settings.class_weight)
    head = LogisticRegression(C=settings.c, class_weight=weight, max_iter=settings.max_iter, random_state=seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        head.fit(scaler.transform(x), labels)
    if any(issubclass(w.category, ConvergenceWarning) for w in caught):
        print(f"probe: the solver did not converge in {settings.max_iter} iterations (raise train.probe.max_iter)", flush=True)
    # (x - mean) / scale @ coef.T + b  ==  x @ (coef / scale).T + (b - (coef / scale) @ mean)
    coef = head.coef_ / scaler.scale_
    intercept = head.intercept_ - coef @ scaler.mean_
    if num_classes == 2:
        return coef.T, intercept
    return softmax_head(coef, intercept, head.classes_, num_classes)


def softmax_head(coef: np.ndarray, intercept: np.ndarray, present: np.ndarray, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """The softmax layer's kernel [F, C] and bias [C] from scikit-learn's rows for the classes it saw (``present``):
    one row a class, or (two classes seen) one row for the second against the first; unseen classes get no weight."""
    if len(coef) == 1:  # two classes seen: logit(second) - logit(first) = coef @ x + b
        coef, intercept = np.vstack([np.zeros_like(coef), coef]), np.concatenate([[0.0], intercept])
    kernel = np.zeros((coef.shape[1], num_classes))
    bias = np.full(num_classes, ABSENT_CLASS_BIAS)
    kernel[:, present], bias[present] = coef.T, intercept
    return kernel, bias


def scores(part: Features, kernel: np.ndarray, bias: np.ndarray, binary: bool, num_classes: int) -> dict[str, float]:
    """The loss and metrics training logs (:func:`kit.train.metrics.build_metrics`), of the head on ``part``."""
    from kit.train.metrics import build_loss, build_metrics

    probs = head_probabilities(part.features, kernel, bias)
    logs = {"loss": float(build_loss(binary)(part.targets, probs))}
    for metric in build_metrics(binary, num_classes):
        metric.update_state(part.targets, probs)
        logs[metric.name] = float(np.mean(np.asarray(metric.result())))
    return logs


def head_probabilities(features: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    """What the classifier layer outputs for ``features``: sigmoid of one unit, or softmax over several."""
    logits = features.astype(np.float64) @ kernel + bias
    if logits.shape[1] == 1:
        return (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    logits -= logits.max(axis=1, keepdims=True)
    exp = np.exp(logits)
    return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)


def write_run_scores(
    cfg: Config, run_dir: Path | URLPath, logs: dict[str, float], *, has_val: bool, binary: bool
) -> dict[str, Any]:
    """history.csv (the probe is one epoch of one phase) and metrics.json's fields, as a trained run writes them."""
    from kit.train.callbacks import Tracker, write_history
    from kit.train.metrics import monitor_mode, monitored_metric

    monitor = monitored_metric(cfg, binary, has_val)
    write_history(run_dir / "history.csv", [{"epoch": 0, "phase": 1, **logs}])
    best = {"best": logs[monitor], "best_epoch": 0, "best_phase": 1, "best_loss": logs.get("val_loss")}
    tracker = Tracker(monitor, monitor_mode(monitor), **best)
    result = {**tracker.to_json(), "epochs": 1, "phases": 1, "best_epoch": 1}
    if has_val:
        result["split"], result["metrics"] = "val", {k: v for k, v in logs.items() if k.startswith("val_")}
    else:
        result["split"], result["metrics"] = "train (no val split)", dict(logs)
    return result
