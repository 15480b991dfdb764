"""Which labelled rows validate, and which fold each is in: stratified, with groups kept whole.

The groups are the duplicate groups (:mod:`kit.data.duplicates`) joined with the groups of ``comp.group_column``
(source, generator, photographer, subject: a column of the competition's CSV): two rows go to the same side when
either puts them together (:func:`joined_groups`). ``data.holdout_group`` puts one group of that column (and every
group joined to it) in validation whole, so the validation score says how the model does on a generator it never
saw (:func:`holdout_rows`).

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

from kit.errors import KitError, nearest

SHARE_TOLERANCE = 0.02  # a grouped part's share of the labelled rows may miss its target by this much (+ one row)
CLASS_TOLERANCE = 0.05  # a class's share of a grouped part may differ from its share of all rows by this (+ one row)
DUPLICATES_ONLY = "duplicate groups"  # what the split keeps whole, as its refusal names it
DUPLICATES_FIX = "lower data.group_max_share so such groups are reported and not used, or set data.duplicate_groups=none"


def joined_groups(*labellings: np.ndarray | None) -> np.ndarray | None:
    """One group number per row joining every labelling: two rows share a group when any labelling puts them in
    one (the union of the constraints, chains followed). A labelling is an array of group keys per row; None, and
    the key "" in a text labelling (a row with no group), join nothing. None when no two rows share a group."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    given = [np.asarray(keys) for keys in labellings if keys is not None]
    if not given:
        return None
    n = len(given[0])
    rows, firsts = [], []
    for keys in given:
        _, first, member_of = np.unique(keys, return_index=True, return_inverse=True)
        linked = keys != "" if keys.dtype.kind in "OUS" else np.ones(n, dtype=bool)
        rows.append(np.flatnonzero(linked))
        firsts.append(first[member_of][linked])  # each row to the first row of its group
    edges = np.concatenate(rows), np.concatenate(firsts)
    graph = coo_matrix((np.ones(len(edges[0]), dtype=np.int8), edges), shape=(n, n))
    _, groups = connected_components(graph, directed=False)
    return groups if len(np.unique(groups)) < n else None


def holdout_rows(keys: np.ndarray, name: str, joined: np.ndarray | None, source: str) -> np.ndarray:
    """Boolean mask of the rows ``data.holdout_group=name`` puts in validation: the rows whose group key is ``name``,
    with every row joined to them (a duplicate of a held-out image goes with it). One line naming the nearest keys
    when no row has that key."""
    held = np.asarray(keys) == name
    if not held.any():
        known = sorted({str(k) for k in keys if k != ""})
        near = nearest(name, known) or known[:3]
        raise KitError(
            f"{source}: data.holdout_group={name} is not a value of comp.group_column ({len(known)} groups)",
            f"hold out one of its groups, e.g. data.holdout_group={near[0]}"
            if near
            else "set comp.group_column to a column with groups",
        )
    if joined is not None:
        held = np.isin(joined, joined[held])
    return held


def split_val(
    labels: np.ndarray,
    groups: np.ndarray | None,
    fraction: float,
    seed: int,
    source: str,
    kept: tuple[str, str] = (DUPLICATES_ONLY, DUPLICATES_FIX),
) -> np.ndarray:
    """Boolean mask of the validation rows: stratified when every class can be split; ``groups`` whole (``kept``:
    what they are and how to loosen them, for the refusal when the split cannot keep its balance).

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
        check_balance(labels, groups, parts, [1 - fraction, fraction], ["training", "validation"], source, kept)
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


def assign_folds(
    labels: np.ndarray,
    groups: np.ndarray | None,
    folds: int,
    seed: int,
    source: str,
    kept: tuple[str, str] = (DUPLICATES_ONLY, DUPLICATES_FIX),
) -> np.ndarray:
    """Fold number per row, ``groups`` whole (StratifiedGroupKFold's promise at any balance the groups allow); depends
    only on row order, labels, groups and seed, so every model gets the same folds."""
    from sklearn.model_selection import KFold, StratifiedKFold

    if len(labels) < folds:
        raise KitError(f"{source}: {len(labels)} labelled examples cannot make {folds} folds", "use fewer data.folds")
    if groups is not None:
        parts = grouped_parts(labels, groups, [1 / folds] * folds, seed)
        check_balance(labels, groups, parts, [1 / folds] * folds, [f"fold {k}" for k in range(folds)], source, kept)
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
    labels: np.ndarray,
    groups: np.ndarray,
    parts: np.ndarray,
    shares: list[float],
    names: list[str],
    source: str,
    kept: tuple[str, str] = (DUPLICATES_ONLY, DUPLICATES_FIX),
) -> None:
    """Raise one line when a part's share of the rows, or a class's share of a part, is off by more than the
    tolerance (SHARE_TOLERANCE / CLASS_TOLERANCE, each widened by one row's share for rounding); ``kept`` names the
    groups and the fix."""
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
        what, fix = kept
        raise KitError(f"{source}: keeping {what} whole, {problem}; the largest groups: {largest} images", fix)
