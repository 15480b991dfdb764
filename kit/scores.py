"""Honest scores: a threshold is never scored on the rows it was chosen on; every figure has a bootstrap interval.

Pure numpy / scikit-learn on arrays, so ``kit.evaluate`` (one run's hold-out) and ``kit.train.kfold`` (out-of-fold
predictions) compute the same numbers the same way, and ``kit.predict`` / ``kit.kaggle.submit`` can ask whether a
model is degenerate (one probability for every row) before anything is written or uploaded.

- ``best_f1_threshold``: the F1-best threshold of some rows (what ``threshold=auto`` saves).
- ``cross_fitted_labels``: labels at a threshold chosen on the *other* parts only (k-fold inside the hold-out, or
  the OOF folds): the score of these labels is the honest score of "choose the F1-best threshold, then predict".
- ``bootstrap_interval``: a percentile interval of a metric over row resamples.
- ``degenerate_warning``: a loud one-line description of a model that predicts a constant, else None.
- ``group_scores``: the metric of each group's rows on its own (``comp.group_column``: a source or generator), with a
  bootstrap interval: a detector that is good on average can still fail on one generator.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

Metric = Callable[[np.ndarray, np.ndarray], float]  # (true class indices, predicted class indices) -> score

BOOTSTRAP_RESAMPLES = 1000
BOOTSTRAP_LEVEL = 0.95
THRESHOLD_PARTS = 5  # parts of the hold-out for the cross-fitted threshold
CONSTANT_SPREAD = 1e-6  # probabilities closer than this across all rows count as one value
AUC_NOISE_SE = 2.0  # an AUC within this many standard errors of 0.5 is "no better than chance"
GROUPS_SCORED = 30  # the largest groups scored one by one; the others are counted
GROUP_RESAMPLES = 200  # bootstrap resamples per group (groups are many and small: their intervals are wide anyway)


def best_f1_threshold(y_true: Sequence[int] | np.ndarray, prob: Sequence[float] | np.ndarray) -> tuple[float, float]:
    """The threshold t (predict 1 when prob >= t) with the highest F1 on these rows, and that (in-sample) F1.

    Exact: ``precision_recall_curve`` evaluates every distinct probability as a threshold, which are the
    only points where F1 can change. Ties go to the highest threshold (fewest positives).
    """
    from sklearn.metrics import precision_recall_curve

    y_true = np.asarray(y_true).reshape(-1).astype(int)
    prob = np.asarray(prob, dtype=np.float64).reshape(-1)
    if len(y_true) == 0 or y_true.sum() == 0:
        return 0.5, 0.0  # no positives: every threshold gives F1 = 0
    precision, recall, thresholds = precision_recall_curve(y_true, prob)
    precision, recall = precision[:-1], recall[:-1]  # the last point (recall 0) has no threshold
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(denom), where=denom > 0)
    best = np.flatnonzero(f1 == f1.max())[-1]
    return float(thresholds[best]), float(f1[best])


def threshold_parts(y_true: np.ndarray, parts: int = THRESHOLD_PARTS, seed: int = 0) -> np.ndarray:
    """A part index 0..k-1 for each row, stratified by label (fewer parts when a class has fewer rows than ``parts``)."""
    from sklearn.model_selection import StratifiedKFold

    y_true = np.asarray(y_true).reshape(-1).astype(int)
    smallest = int(np.bincount(y_true).min()) if len(np.unique(y_true)) > 1 else 0
    k = min(parts, smallest)
    if k < 2:
        raise ValueError(f"a cross-fitted threshold needs at least 2 rows of each class, found {smallest}")
    out = np.empty(len(y_true), dtype=np.int64)
    splitter = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    for part, (_, held) in enumerate(splitter.split(np.zeros(len(y_true)), y_true)):
        out[held] = part
    return out


def cross_fitted_labels(y_true: np.ndarray, prob: np.ndarray, parts: np.ndarray) -> tuple[np.ndarray, list[float]]:
    """Labels where each part's rows are cut at the F1-best threshold of the *other* parts; the per-part thresholds."""
    y_true = np.asarray(y_true).reshape(-1).astype(int)
    prob = np.asarray(prob, dtype=np.float64).reshape(-1)
    labels = np.zeros(len(y_true), dtype=np.int64)
    thresholds: list[float] = []
    for part in np.unique(parts):
        held = parts == part
        threshold, _ = best_f1_threshold(y_true[~held], prob[~held])
        labels[held] = (prob[held] >= threshold).astype(np.int64)
        thresholds.append(threshold)
    return labels, thresholds


def bootstrap_interval(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    metric: Metric,
    resamples: int = BOOTSTRAP_RESAMPLES,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
) -> tuple[float, float]:
    """The ``level`` percentile interval of ``metric`` over ``resamples`` resamples of the rows (with replacement)."""
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    rng = np.random.default_rng(seed)
    values = np.array([metric(y_true[rows], y_pred[rows]) for rows in rng.integers(0, len(y_true), (resamples, len(y_true)))])
    tail = (1.0 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def scored(y_true: np.ndarray, y_pred: np.ndarray, metric: Metric, what: str, **extra: object) -> dict:
    """``{"value", "interval", "what", ...}``: a metric, its bootstrap interval and a label for what it is."""
    low, high = bootstrap_interval(y_true, y_pred, metric)
    out: dict = {"value": float(metric(np.asarray(y_true), np.asarray(y_pred))), "interval": [low, high]}
    out["interval_level"] = BOOTSTRAP_LEVEL
    out["what"] = what
    out.update(extra)
    return out


def honest_binary_scores(y_true: np.ndarray, prob: np.ndarray, metric: Metric, where: str, parts: np.ndarray) -> dict:
    """The score at a fixed 0.5 and at the F1-best threshold chosen on the other parts, side by side.

    ``where`` names the rows ("hold-out", "5-fold OOF"); ``parts`` splits them (the folds for OOF rows).
    Also the threshold to save: chosen on all rows, never scored on them.
    """
    y_true = np.asarray(y_true).reshape(-1).astype(int)
    prob = np.asarray(prob, dtype=np.float64).reshape(-1)
    fixed = scored(y_true, (prob >= 0.5).astype(np.int64), metric, f"{where} at the fixed threshold 0.5", threshold=0.5)
    threshold, _ = best_f1_threshold(y_true, prob)
    out = {"at_0.5": fixed, "threshold": threshold}
    if len(np.unique(parts)) < 2:
        return out  # too few rows of a class to choose and score on separate parts: no tuned score at all
    labels, per_part = cross_fitted_labels(y_true, prob, parts)
    k = len(per_part)
    out["at_chosen"] = scored(
        y_true,
        labels,
        metric,
        f"{where} at the F1-best threshold chosen on the other {k - 1} of {k} parts (never on the rows scored)",
        part_thresholds=per_part,
    )
    return out


def group_scores(
    y_true: np.ndarray, y_pred: np.ndarray, groups: np.ndarray, metric: Metric, limit: int = GROUPS_SCORED
) -> tuple[list[dict], int]:
    """Each group's rows scored on their own, largest groups first (ties by name), at most ``limit`` of them.

    Per group: ``group`` (its key; "" for rows without one), ``examples``, ``classes`` (rows per true class),
    ``value`` (the metric), ``accuracy`` and ``interval`` (a GROUP_RESAMPLES bootstrap). A group holding one class
    is scored all the same: on a held-out generator's images the accuracy is its detection rate. Also the number of
    groups left unscored.
    """
    y_true, y_pred = np.asarray(y_true).reshape(-1).astype(int), np.asarray(y_pred).reshape(-1).astype(int)
    names = np.asarray(groups).reshape(-1).astype(str)
    keys, sizes = np.unique(names, return_counts=True)
    order = sorted(range(len(keys)), key=lambda k: (-sizes[k], keys[k]))
    out = []
    for k in order[:limit]:
        rows = names == keys[k]
        truth, pred = y_true[rows], y_pred[rows]
        low, high = bootstrap_interval(truth, pred, metric, resamples=GROUP_RESAMPLES)
        classes, counts = np.unique(truth, return_counts=True)
        out.append(
            {
                "group": str(keys[k]),
                "examples": int(rows.sum()),
                "classes": {str(c): int(n) for c, n in zip(classes, counts, strict=True)},
                "value": float(metric(truth, pred)),
                "accuracy": float((truth == pred).mean()),
                "interval": [low, high],
                "interval_level": BOOTSTRAP_LEVEL,
            }
        )
    return out, max(0, len(keys) - limit)


def degenerate_warning(class_probs: np.ndarray, threshold: float = 0.5, y_true: np.ndarray | None = None) -> str | None:
    """Why this model's predictions look constant, or None: all probabilities equal, one class for every row, or
    (with labels, binary) an AUC within noise of 0.5."""
    class_probs = np.asarray(class_probs, dtype=np.float64)
    n = len(class_probs)
    if n == 0:
        return None
    spread = float(np.ptp(class_probs, axis=0).max())
    if spread < CONSTANT_SPREAD:
        row = ", ".join(f"{p:.4f}" for p in class_probs[0])
        return f"the model gives every one of the {n} rows the same probabilities ({row}): it predicts a constant"
    labels = (class_probs[:, 1] >= threshold).astype(int) if class_probs.shape[1] == 2 else class_probs.argmax(axis=1)
    if n > 1 and len(np.unique(labels)) == 1:
        return f"the model predicts class {int(labels[0])} for every one of the {n} rows"
    if y_true is not None and class_probs.shape[1] == 2:
        y = np.asarray(y_true).reshape(-1).astype(int)
        positives, negatives = int(y.sum()), int(len(y) - y.sum())
        if positives and negatives:
            from sklearn.metrics import roc_auc_score

            auc = float(roc_auc_score(y, class_probs[:, 1]))
            se = _auc_standard_error(0.5, positives, negatives)
            if abs(auc - 0.5) <= AUC_NOISE_SE * se:
                return f"AUC {auc:.4f} on {n} rows is within noise of 0.5 (+/- {AUC_NOISE_SE * se:.4f}): no better than chance"
    return None


def _auc_standard_error(auc: float, positives: int, negatives: int) -> float:
    """Hanley & McNeil (1982): the standard error of an AUC estimated on these class counts."""
    q1, q2 = auc / (2 - auc), 2 * auc * auc / (1 + auc)
    var = (auc * (1 - auc) + (positives - 1) * (q1 - auc * auc) + (negatives - 1) * (q2 - auc * auc)) / (positives * negatives)
    return float(np.sqrt(max(var, 0.0)))
