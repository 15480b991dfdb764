"""Blending several runs' probabilities: the weights, the threshold, and an honest score of the blend.

An ensemble is scored on the rows held out from every one of its runs (a hold-out run's val rows, a k-fold run's
out-of-fold rows: the ids they all share), where each run's probability is one of a model that never trained on
the row. The weights (``predict.weights``):

- ``equal``: 1/M each (a k-fold run counts once, as the mean of its folds).
- ``score``: each run's score on the rows the weights are chosen on, as 1 / (1 - score): a run making half the
  errors of another gets twice its weight.
- ``fit``: the non-negative weights, summing to 1, with the lowest log loss of the blend on those rows.

The reported score is cross-fitted: the rows are cut into parts, and each part is blended with the weights (and,
for ``threshold=auto``, cut at the F1-best threshold) chosen on the *other* parts, so neither is chosen on the rows
it is scored on. The weights and threshold the submission uses are chosen on all the rows. Pure numpy / SciPy.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kit.errors import KitError
from kit.scores import Metric, best_f1_threshold, scored, threshold_parts

WEIGHT_RULES = ("equal", "score", "fit")
PARTS = 5  # parts of the shared rows for the cross-fitted score
MIN_ERROR = 1e-6  # a perfect run's error, so that 1 / error stays finite


@dataclass(frozen=True)
class Blend:
    """How the test probabilities are blended, and what that blend scored on the shared held-out rows."""

    weights: np.ndarray  # one per run, summing to 1
    threshold: float | None  # binary: the threshold the submission is cut at; None: argmax
    score: dict | None  # kit.scores.scored of the blend (cross-fitted); None when the rows cannot be cut into parts
    run_scores: list[float]  # each run's score on the shared rows (at the threshold, 0.5 for auto, or argmax)


def blend(probs: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """The weighted mean of (M, N, C) class probabilities: (N, C)."""
    return np.tensordot(np.asarray(weights, dtype=np.float64), np.asarray(probs, dtype=np.float64), axes=1)


def labels_at(class_probs: np.ndarray, threshold: float | None) -> np.ndarray:
    """Binary: class 1 when p >= threshold (0.5 when None); otherwise the argmax."""
    if class_probs.shape[1] == 2:
        return (class_probs[:, 1] >= (0.5 if threshold is None else threshold)).astype(np.int64)
    return class_probs.argmax(axis=1)


def choose_weights(rule: str, probs: np.ndarray, y_true: np.ndarray, metric: Metric) -> np.ndarray:
    """The weights of ``rule`` (equal | score | fit) chosen on these rows of (M, N, C) probabilities."""
    runs = len(probs)
    if rule == "equal":
        return np.full(runs, 1.0 / runs)
    if rule == "score":
        errors = np.array([max(1.0 - metric(y_true, labels_at(p, None)), MIN_ERROR) for p in probs])
        return (1.0 / errors) / (1.0 / errors).sum()
    if rule == "fit":
        return _log_loss_weights(probs[:, np.arange(len(y_true)), y_true])
    raise KitError(f"unknown ensemble weights '{rule}'", f"use one of: {', '.join(WEIGHT_RULES)}")


def _log_loss_weights(true_class_probs: np.ndarray) -> np.ndarray:
    """Simplex weights minimising -mean log(sum_m w_m p_m), where p_m is run m's probability of each row's true class
    (all the log loss of a blend depends on); softmax-parameterised, so SciPy's L-BFGS-B needs no constraints."""
    from scipy.optimize import minimize

    p = np.clip(true_class_probs, 1e-12, 1.0)

    def softmax(z: np.ndarray) -> np.ndarray:
        e = np.exp(z - z.max())
        return e / e.sum()

    def loss_and_grad(z: np.ndarray) -> tuple[float, np.ndarray]:
        w = softmax(z)
        mixed = w @ p
        grad_w = -(p / mixed).mean(axis=1)
        return float(-np.log(mixed).mean()), w * (grad_w - w @ grad_w)  # the chain rule through the softmax

    result = minimize(loss_and_grad, np.zeros(len(p)), jac=True, method="L-BFGS-B")
    return softmax(result.x)


def _parts(y_true: np.ndarray) -> np.ndarray | None:
    """A part per row for cross-fitting: stratified by label where every class allows it; None for too few rows."""
    try:
        return threshold_parts(y_true, PARTS)
    except ValueError:
        if len(y_true) < 2 * PARTS:
            return None
        return np.random.default_rng(0).permutation(len(y_true)) % PARTS


def _choose(rule: str, probs: np.ndarray, y_true: np.ndarray, metric: Metric, threshold: float | None, auto: bool):
    """The weights and (binary) threshold chosen on these rows."""
    weights = choose_weights(rule, probs, y_true, metric)
    if auto and probs.shape[2] == 2:
        threshold, _ = best_f1_threshold(y_true, blend(probs, weights)[:, 1])
    return weights, threshold


def fit_blend(
    rule: str, probs: np.ndarray, y_true: np.ndarray, metric: Metric, threshold: float | None, auto: bool, where: str
) -> Blend:
    """Blend (M, N, C) held-out probabilities of the same N rows (true classes ``y_true``) by ``rule``.

    ``threshold``: the binary threshold to cut at, or with ``auto`` the F1-best one is chosen (on the rows the
    weights are chosen on). ``where`` names the rows in the score's label ("hold-out", "5-fold OOF").
    """
    probs, y_true = np.asarray(probs, dtype=np.float64), np.asarray(y_true).reshape(-1).astype(int)
    binary = probs.shape[2] == 2
    threshold = threshold if binary else None
    weights, chosen = _choose(rule, probs, y_true, metric, threshold, auto)
    run_scores = [float(metric(y_true, labels_at(p, None if auto else threshold))) for p in probs]
    cut = "at the F1-best threshold" if auto and binary else (f"at {threshold:g}" if binary else "argmax")
    what = f"{where} blend of {len(probs)} runs ({rule} weights) on the {len(y_true)} rows held out from every run, {cut}"
    parts = _parts(y_true)
    if rule == "equal" and not (auto and binary):  # nothing is chosen on the rows: score them all as they are
        score = scored(y_true, labels_at(blend(probs, weights), threshold), metric, what)
    elif parts is None:
        score = None
    else:
        labels = np.zeros(len(y_true), dtype=np.int64)
        for part in np.unique(parts):
            held = parts == part
            part_weights, part_threshold = _choose(rule, probs[:, ~held], y_true[~held], metric, threshold, auto)
            labels[held] = labels_at(blend(probs[:, held], part_weights), part_threshold)
        k = len(np.unique(parts))
        chosen_what = "weights and threshold" if auto and binary else "weights"
        score = scored(y_true, labels, metric, f"{what}; {chosen_what} chosen on the other {k - 1} of {k} parts")
    return Blend(weights, chosen, score, run_scores)
