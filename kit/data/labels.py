"""Raw labels -> class indices: which classes the labels name (``comp.classes``, or inferred from the training
tables), and each table's ``label`` column. A label that names no class is one line naming the file and row."""

from __future__ import annotations

import re
import sys

import numpy as np
import pandas as pd

from kit.data.tables import Table, row_position
from kit.errors import KitError, listing, quoted

INT_LABEL = re.compile(r"-?\d+(\.0*)?")
INT64 = np.iinfo(np.int64)
# Without comp.classes, integer labels are class indices 0..max: at least this fraction of those classes must
# occur, or one odd label (a typo 99999, an id in the label column) would make a huge, mostly empty class list.
# A competition with sparser labels lists its classes in comp.classes, which lifts the limit.
MIN_USED_CLASS_FRACTION = 0.5


def integer_labels(raw: pd.Series) -> pd.Series | None:
    """Integer labels ("3", "3.0") as ints, or None when any label is not an integer.

    Works on the few distinct values rather than on every row: labels repeat.
    """
    values = {}
    for value in pd.unique(raw.astype(str)):
        if not INT_LABEL.fullmatch(value):
            return None
        values[value] = min(max(int(value.split(".")[0]), INT64.min), INT64.max)  # beyond int64 is out of range anyway
    return raw.map(values).astype(np.int64)


def sparse_label(ints: pd.Series) -> int | None:
    """The largest label when classes ``0..max`` would be mostly unused (see MIN_USED_CLASS_FRACTION), else None."""
    top = int(ints.max())
    return top if top + 1 > ints.nunique() / MIN_USED_CLASS_FRACTION else None


def _sparse_message(label: str, ints: pd.Series) -> tuple[str, str]:
    return (
        f"integer label {label} would make {int(ints.max()) + 1} classes (0..{int(ints.max())}), "
        f"but the labels use only {ints.nunique()} distinct values",
        "fix the label if it is a typo, or list the classes in comp.classes (integer labels are class indices 0..N-1)",
    )


def default_classes(raw: pd.Series) -> list[str]:
    """The classes that labels name when ``comp.classes`` is not given.

    ``0..max`` for integer labels (refused when that would be mostly empty classes); the distinct values in
    numeric order when some are negative (-1/1 are not indices); else the sorted names.
    """
    ints = integer_labels(raw)
    if ints is None:
        return sorted(raw.unique().tolist())
    if not len(ints):
        return []
    if int(ints.min()) < 0:
        return [str(v) for v in sorted(set(ints.tolist()))]
    top = sparse_label(ints)
    if top is not None:
        raise KitError(*_sparse_message(str(top), ints))
    return [str(i) for i in range(int(ints.max()) + 1)]


def _label_error(table: Table, i: int, message: str, fix: str = "fix the label, or list every class in comp.classes") -> KitError:
    return KitError(f"{row_position(table, i)}: {message}", fix)


def map_labels(tables: list[Table], given: list[str]) -> list[str]:
    """Turn raw labels into class indices in place (``label`` column) and return the class names.

    Names are matched against ``comp.classes`` first; if they are all integers instead, they are
    class indices (ai-vs-human labels 0/1 with classes [human, ai]). Without ``comp.classes`` the
    classes are the sorted label names, or ``0..max`` for integer labels. Only the training tables (train, val)
    decide the classes: a labelled test table's label that is no class leaves its row unlabelled (said once), it
    never adds a class.
    """
    labelled = [t for t in tables if t.labelled]
    for t in tables:
        t.frame["label"] = np.int64(-1)
    if not labelled:
        return list(given)
    training = [t for t in labelled if t.split != "test"]
    training_raw = pd.concat([t.frame["raw_label"] for t in training], ignore_index=True)
    if given:
        classes = [str(c) for c in given]
        by_index = not training_raw.isin(classes).all() and integer_labels(training_raw) is not None
    else:
        ints = integer_labels(training_raw)
        if ints is not None and int(ints.min()) >= 0 and sparse_label(ints) is not None:
            top = int(ints.max())
            t = next(t for t in training if (integer_labels(t.frame["raw_label"]) == top).any())
            bad = int(np.flatnonzero((integer_labels(t.frame["raw_label"]) == top).to_numpy())[0])
            raise _label_error(t, bad, *_sparse_message(t.frame["raw_label"].iloc[bad], ints))
        classes = default_classes(training_raw)
        by_index = ints is not None
        if len(classes) < 2:
            raise KitError(
                f"{training[0].source}: only one class ('{quoted(classes[0])}') found in the labels",
                "check comp.train.label_column (or the class folders); a classifier needs at least two classes",
            )
    for t in labelled:
        _set_labels(t, classes, by_index, given=bool(given))
    return classes


def _set_labels(table: Table, classes: list[str], by_index: bool, given: bool) -> None:
    """``table``'s label column from its raw labels: class names, or integers (class indices 0..N-1 when the classes
    were given; the rank among the distinct integers otherwise). A training table's label that is no class is one
    KitError; a test table's leaves its row unlabelled."""
    raw = table.frame["raw_label"]
    if by_index:
        ints = integer_labels(raw)
        # given classes: the integer is the index; inferred 0..max: itself; inferred with negative labels: the rank
        position = {i: i for i in range(len(classes))} if given else {int(name): i for i, name in enumerate(classes)}
        indices = ints.map(position) if ints is not None else pd.Series(np.nan, index=raw.index)
    else:
        indices = raw.map({name: i for i, name in enumerate(classes)})
    unknown = indices.isna().to_numpy()
    if unknown.any() and table.split != "test":
        bad = int(np.flatnonzero(unknown)[0])
        if by_index and given:
            message = f"label {quoted(raw.iloc[bad])} is not a class index (0..{len(classes) - 1} for classes {listing(classes)})"
        else:
            message = f"label '{quoted(raw.iloc[bad])}' is not in the class list ({listing(classes)})"
        raise _label_error(table, bad, message, "fix the label, or list every class in comp.classes")
    if unknown.any():
        first = quoted(raw.iloc[int(np.flatnonzero(unknown)[0])])
        print(
            f"warning: {table.source}: {int(unknown.sum())} test label(s) name no class of the training data "
            f"(e.g. '{first}'; classes {listing(classes)}): those rows are kept unlabelled, not a new class",
            file=sys.stderr,
        )
    table.frame["label"] = indices.fillna(-1).astype(np.int64).to_numpy()
