"""Which labelled rows validate, and which fold each is in: stratified, with duplicate groups kept whole.

Without duplicate groups, scikit-learn's stratified split (``train_test_split``) and ``StratifiedKFold``. With
them, :func:`grouped_parts`: each group of more than one row goes whole to one part, then the single rows of each
class fill every part up to its share of that class. So the validation fraction and each class's share hold
whatever ``data.val_fraction`` is (scikit-learn's ``StratifiedGroupKFold`` can only give 1/k), as long as the
single rows can make up the difference; :func:`check_balance` then holds the result to the stated tolerance
(``SHARE_TOLERANCE``, ``CLASS_TOLERANCE``) or raises one line naming the largest groups.
"""

from __future__ import annotations

import math
import warnings

import numpy as np

from kit.errors import KitError

SHARE_TOLERANCE = 0.02  # a grouped part's share of the labelled rows may miss its target by this much (+ one row)
CLASS_TOLERANCE = 0.05  # a class's share of a grouped part may differ from its share of all rows by this (+ one row)


def split_val(labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int, source: str) -> np.ndarray:
    """Boolean mask of the validation rows: stratified when every class can be split; duplicate groups whole.

    Both sides must keep an example (scikit-learn's rounding: ``ceil(fraction * n)`` rows go to validation);
    otherwise a one-line error names data.val_fraction instead of scikit-learn's traceback.
    """
    from sklearn.model_selection import train_test_split

    n_val = math.ceil(fraction * len(labels))
    n_train = len(labels) - n_val
    if n_train < 1 or n_val < 1:
        raise KitError(
            f"{source}: data.val_fraction={fraction} of {len(labels)} labelled examples leaves {n_train} for training "
            f"and {n_val} for validation",
            "add labelled rows, lower data.val_fraction (0 trains without validation), or give a comp.val table",
        )
    if groups is not None:
        parts = grouped_parts(labels, groups, [1 - fraction, fraction], seed)
        check_balance(labels, groups, parts, [1 - fraction, fraction], ["training", "validation"], source)
        return parts == 1
    positions = np.arange(len(labels))
    try:
        _, val = train_test_split(positions, test_size=fraction, stratify=labels, random_state=seed)
    except ValueError:
        # a class with a single example (or more classes than validation rows) cannot be stratified
        warnings.warn("validation split is not stratified: some classes have too few examples", stacklevel=3)
        _, val = train_test_split(positions, test_size=fraction, random_state=seed)
    mask = np.zeros(len(labels), dtype=bool)
    mask[val] = True
    return mask


def assign_folds(labels: np.ndarray, groups: np.ndarray | None, folds: int, seed: int, source: str) -> np.ndarray:
    """Fold number per row; depends only on row order, labels, groups and seed, so every model gets the same folds."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if len(labels) < folds:
        raise KitError(f"{source}: {len(labels)} labelled examples cannot make {folds} folds", "use fewer data.folds")
    if groups is not None:
        parts = grouped_parts(labels, groups, [1 / folds] * folds, seed)
        check_balance(labels, groups, parts, [1 / folds] * folds, [f"fold {k}" for k in range(folds)], source)
        return parts
    out = np.full(len(labels), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only n members"
        try:
            splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
            for k, (_, held) in enumerate(splits):
                out[held] = k
        except ValueError:
            for k, (_, held) in enumerate(KFold(n_splits=folds, shuffle=True, random_state=seed).split(labels)):
                out[held] = k
    return out


def _apportion(total: int, weights: np.ndarray) -> np.ndarray:
    """``total`` split in proportion to ``weights`` in whole numbers (largest remainders; ties to the first)."""
    exact = total * weights / weights.sum()
    counts = np.floor(exact).astype(np.int64)
    counts[np.argsort(-(exact - counts), kind="stable")[: total - counts.sum()]] += 1
    return counts


def grouped_parts(labels: np.ndarray, groups: np.ndarray, shares: list[float], seed: int) -> np.ndarray:
    """Part number per row (0 .. len(shares) - 1), every group inside one part.

    The groups of more than one row go first, in a seeded random order, each to a part drawn in proportion to
    ``shares`` among the parts it fits in without passing any class's target (the least-overfull part when none
    fits); then each class's single rows are shared out so that every part reaches its target for that class.
    """
    rng = np.random.default_rng(seed)
    weights = np.asarray(shares, dtype=float)
    _, y = np.unique(labels, return_inverse=True)
    n_classes = int(y.max(initial=-1)) + 1
    target = np.outer(weights, np.bincount(y, minlength=n_classes))  # parts x classes
    counts = np.zeros_like(target)
    part = np.full(len(y), -1, dtype=np.int64)
    _, member_of, sizes = np.unique(groups, return_inverse=True, return_counts=True)
    rows_of = np.split(np.argsort(member_of, kind="stable"), np.cumsum(sizes)[:-1])
    for g in rng.permutation(np.flatnonzero(sizes > 1)):
        need = np.bincount(y[rows_of[g]], minlength=n_classes)
        room = (target - counts - need).min(axis=1)  # the tightest class of each part once the group is in
        fits = np.flatnonzero(room >= 0)
        choices = fits if len(fits) else np.array([int(np.argmax(room))])
        chosen = int(rng.choice(choices, p=weights[choices] / weights[choices].sum()))
        part[rows_of[g]] = chosen
        counts[chosen] += need
    single = sizes[member_of] == 1
    for c in range(n_classes):
        rows = rng.permutation(np.flatnonzero(single & (y == c)))
        room = np.clip(target[:, c] - counts[:, c], 0, None)
        quota = _apportion(len(rows), room if room.sum() > 0 else weights)
        part[rows] = np.repeat(np.arange(len(weights)), quota)
        counts[:, c] += quota
    return part


def check_balance(
    labels: np.ndarray, groups: np.ndarray, parts: np.ndarray, shares: list[float], names: list[str], source: str
) -> None:
    """Raise one line when a part's share of the rows, or a class's share of a part, is off by more than the
    tolerance (SHARE_TOLERANCE / CLASS_TOLERANCE, each widened by one row's share for rounding)."""
    n = len(labels)
    classes, overall = np.unique(labels, return_counts=True)
    problem = ""
    for k in np.argsort(shares, kind="stable"):  # the smallest part first: validation, where a miss shows most
        share, name, inside = shares[k], names[k], labels[parts == k]
        if abs(len(inside) / n - share) > SHARE_TOLERANCE + 1 / n:
            problem = (
                f"{name} gets {len(inside) / n:.1%} of the {n} labelled rows, not {share:.1%} "
                f"(± {SHARE_TOLERANCE * 100:.0f} points)"
            )
            break
        per_class = np.array([(inside == c).sum() for c in classes]) / max(len(inside), 1)
        off = np.abs(per_class - overall / n)
        if off.max() > CLASS_TOLERANCE + 1 / max(len(inside), 1):
            c = int(np.argmax(off))
            problem = (
                f"label {classes[c]} is {per_class[c]:.0%} of {name} against {overall[c] / n:.0%} of all labelled rows "
                f"(± {CLASS_TOLERANCE * 100:.0f} points)"
            )
            break
    if problem:
        _, sizes = np.unique(groups, return_counts=True)
        largest = ", ".join(str(s) for s in sorted(sizes[sizes > 1].tolist(), reverse=True)[:5])
        raise KitError(
            f"{source}: keeping duplicate groups whole, {problem}; the largest groups: {largest} images",
            "lower data.group_max_share so such groups are reported and not used, or set data.duplicate_groups=none",
        )
