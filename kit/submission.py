"""The submission format in one place: reference ids, columns, label formats, validation.

A submission has the sample submission's columns (else ``comp.submission.id_column`` and
``label_column``), one row per reference id, and labels written as ``comp.submission.label_format``:

* ``index``: integer class indices;
* ``probability``: the probability of the positive class, in [0, 1] (binary competitions);
* ``name``: class names.

The reference ids are the sample submission's when there is one; without one the caller hands in the
test split's ids (``kit.data.sources.reference_ids``), because this module sits below the data layer
and cannot read the index. The same :func:`compare_ids` checks the test table against the sample
submission when the index is built and a submission against its reference before it is written or sent.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kit.config.files import confined
from kit.errors import KitError, listing, quoted
from kit.inputs import read_csv, require_columns

if TYPE_CHECKING:
    from kit.config import Config


# ----------------------------------------------------------------------------------------------------
# Reference ids and columns
# ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Reference:
    """The ids a submission must have, in order, and where they come from (as messages name it)."""

    ids: list[str]
    source: str  # the sample submission's path, or "the test index"


@dataclass(frozen=True)
class IdDifference:
    """How a set of ids differs from the reference's; false when they are the same set."""

    lacking: list[str] = field(default_factory=list)  # reference ids not among the ids, in reference order
    surplus: list[str] = field(default_factory=list)  # ids not in the reference, in their order

    def __bool__(self) -> bool:
        return bool(self.lacking or self.surplus)


def compare_ids(ids: Sequence[str], reference: Sequence[str]) -> IdDifference:
    """The ids of ``reference`` that ``ids`` lacks and the ids that ``reference`` lacks."""
    have, want = set(ids), set(reference)
    if have == want:
        return IdDifference()
    return IdDifference([i for i in reference if i not in have], [i for i in ids if i not in want])


def sample_submission_path(cfg: Config) -> Path | None:
    """``<data.root>/<comp.sample_submission>`` when it is set and the file exists."""
    if not cfg.comp.sample_submission:
        return None
    path = confined(cfg.data.root, "comp.sample_submission", cfg.comp.sample_submission)
    try:
        return path if path.is_file() else None
    except OSError as exc:  # a name too long, no permission on a folder, ...
        raise KitError(
            f"{path}: cannot be read ({exc.strerror or type(exc).__name__})", "check comp.sample_submission and data.root"
        ) from None


def read_sample(cfg: Config, path: Path) -> pd.DataFrame:
    """The sample submission, checked when it is read, so a submission kit writes can match it.

    Kit writes one id column and one label column (``comp.submission``): the sample must have exactly
    those, and each id once, none empty; each mistake is one line naming the sample file.
    """
    sample = read_csv(path, fix="re-download the sample submission, or check comp.sample_submission")
    sub = cfg.comp.submission
    require_columns(sample, str(path), {"comp.submission.id_column": sub.id_column})
    others = [c for c in sample.columns if c != sub.id_column]
    if sub.label_column not in sample.columns and len(others) == 1:  # the one other column is the label, named otherwise
        raise KitError(
            f"{path}: no column '{sub.label_column}' (columns: {listing(sample.columns)})",
            f"set comp.submission.label_column={quoted(others[0])}",
        )
    require_columns(sample, str(path), {"comp.submission.label_column": sub.label_column})
    extra = [c for c in sample.columns if c not in (sub.id_column, sub.label_column)]
    if extra:
        raise KitError(
            f"{path}: column '{quoted(extra[0])}' besides '{sub.id_column}' and '{sub.label_column}' "
            f"(columns: {listing(sample.columns)}): kit writes one id and one label column",
            "set comp.submission.id_column / label_column to the sample's, or drop comp.sample_submission",
        )
    ids = sample[sub.id_column].astype(str).str.strip()
    blank = (ids == "").to_numpy()
    if blank.any():
        row = int(np.flatnonzero(blank)[0])
        raise KitError(f"{path}: row {row + 1} (line {row + 2}) has an empty id", "re-download the sample submission")
    duplicated = ids.duplicated(keep=False).to_numpy()
    if duplicated.any():
        first = ids.iloc[int(np.flatnonzero(duplicated)[0])]
        rows = np.flatnonzero((ids == first).to_numpy())
        raise KitError(
            f"{path}: id '{quoted(first)}' appears {len(rows)} times (rows {', '.join(str(r + 1) for r in rows[:5])}); "
            "a submission has one row per id",
            "re-download the sample submission, or delete the repeated rows",
        )
    sample[sub.id_column] = ids
    return sample


def sample_reference(cfg: Config) -> Reference | None:
    """The sample submission's ids (column ``comp.submission.id_column``, stripped), or None without one."""
    path = sample_submission_path(cfg)
    if path is None:
        return None
    sample = read_sample(cfg, path)
    return Reference(sample[cfg.comp.submission.id_column].tolist(), str(path))


def expected_columns(cfg: Config) -> list[str]:
    """The sample submission's columns (its id and label column, in its order), else those of ``comp.submission``."""
    path = sample_submission_path(cfg)
    if path is not None:
        return list(read_sample(cfg, path).columns)
    return [cfg.comp.submission.id_column, cfg.comp.submission.label_column]


def check_test_ids(cfg: Config, ids: pd.Series, source: str, *, by_stem: bool = False) -> pd.Series:
    """The test table's ids, checked against the sample submission's (when there is one).

    ``by_stem``: loose test images are often listed by stem ("123" for 123.jpg); the stems are
    returned instead of the file names when they, and not the names, match. ``source`` is the test
    table's file or folder, as messages name it.
    """
    sample = sample_reference(cfg)
    if sample is None:
        return ids
    difference = compare_ids(ids.tolist(), sample.ids)
    if not difference:
        return ids
    if by_stem:
        stems = ids.map(lambda name: os.path.splitext(name)[0])
        if not compare_ids(stems.tolist(), sample.ids) and not stems.duplicated().any():
            return stems
    path = Path(sample.source)
    only_test, only_sample = sorted(set(difference.surplus)), sorted(set(difference.lacking))
    parts = [f"{len(set(ids))} test ids vs {len(set(sample.ids))} in {path.name}"]
    if only_test:
        parts.append(f"{len(only_test)} test ids are not in it (e.g. '{only_test[0]}')")
    if only_sample:
        parts.append(f"{len(only_sample)} of its ids are not in the test table (e.g. '{only_sample[0]}')")
    raise KitError(
        f"{source}: test ids do not match {path}: " + "; ".join(parts),
        "check comp.test (id_column, image_ext, dir) and comp.submission.id_column, or re-download the data",
    )


# ----------------------------------------------------------------------------------------------------
# Label formats
# ----------------------------------------------------------------------------------------------------


def guess_label_format(values: list[str]) -> str:
    """How a sample submission writes labels: integers (index), numbers in [0, 1] (probability), names."""
    values = [v for v in values if v != ""]
    if all(re.fullmatch(r"-?\d+", v) for v in values):
        return "index"
    try:
        numbers = [float(v) for v in values]
    except ValueError:
        return "name"
    return "probability" if all(0.0 <= x <= 1.0 for x in numbers) else "name"


def format_labels(
    cfg: Config, class_probs: np.ndarray, classes: list[str], to_labels: Callable[[np.ndarray], np.ndarray]
) -> list:
    """The label column for (N, C) class probabilities; ``to_labels`` turns them into class indices."""
    fmt = cfg.comp.submission.label_format
    if fmt == "probability":
        if class_probs.shape[1] != 2:
            raise KitError(
                f"label_format=probability needs a binary competition, this one has {class_probs.shape[1]} classes",
                "set comp.submission.label_format=index or name",
            )
        return [float(p) for p in class_probs[:, 1]]
    labels = to_labels(class_probs)
    if fmt == "name":
        if len(classes) != class_probs.shape[1]:
            raise KitError(
                f"label_format=name needs {class_probs.shape[1]} class names, found {len(classes)}",
                "set comp.classes in the competition YAML (names in label-index order)",
            )
        return [classes[i] for i in labels]
    return [int(i) for i in labels]


def submission_frame(
    cfg: Config,
    ids: np.ndarray,
    class_probs: np.ndarray,
    reference: Reference,
    classes: list[str],
    to_labels: Callable[[np.ndarray], np.ndarray],
) -> pd.DataFrame:
    """Rows in the reference order; examples the records skipped (unreadable images) get the mean prediction."""
    sub = cfg.comp.submission
    by_id = pd.DataFrame(class_probs, index=pd.Index(ids.astype(str)))
    by_id = by_id[~by_id.index.duplicated()]
    lacking = [i for i in reference.ids if i not in by_id.index]
    if lacking:
        print(
            f"warning: {len(lacking)} ids of {reference.source} have no prediction (e.g. '{lacking[0]}', probably unreadable "
            "images skipped by kit records): they get the mean test prediction"
        )
    by_id = by_id.reindex(reference.ids)
    by_id = by_id.fillna(pd.Series(class_probs.mean(axis=0), index=by_id.columns))
    labels = format_labels(cfg, by_id.to_numpy(), classes, to_labels)
    frame = pd.DataFrame({sub.id_column: by_id.index.astype(str), sub.label_column: labels})
    columns = expected_columns(cfg)
    if set(columns) == set(frame.columns):
        frame = frame[columns]
    return frame


# ----------------------------------------------------------------------------------------------------
# Validation
# ----------------------------------------------------------------------------------------------------


def _read_submission(path: Path) -> pd.DataFrame:
    # strings everywhere: ids such as "007" keep their zeros; only empty cells count as missing
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def validate_submission(
    cfg: Config, frame_or_path: pd.DataFrame | str | Path, reference: Reference, classes: Sequence[str]
) -> pd.DataFrame:
    """Check a submission against the competition; return it with the columns in the expected order.

    Columns as the sample submission (or the submission config), no empty cell, no duplicate id, exactly
    the ``reference`` ids, and labels valid for ``comp.submission.label_format`` (``classes``: the class
    names in label-index order; empty when unknown). Any failure is one KitError naming the file, the row
    and the fix.
    """
    if isinstance(frame_or_path, pd.DataFrame):
        name, frame = "submission", frame_or_path.copy()
    else:
        path = Path(frame_or_path)
        name = str(path)
        try:
            if not path.is_file():  # a FIFO or device is not a file and is never opened
                raise KitError(f"submission file {path} does not exist", "run kit predict first, or pass --file <submission.csv>")
            frame = _read_submission(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise KitError(
                f"{name}: not a readable CSV ({str(exc).splitlines()[0]})", "write it with a header row and comma separators"
            ) from None
        except OSError as exc:  # a name too long, no permission, ...
            raise KitError(
                f"{name}: cannot be read ({exc.strerror or type(exc).__name__})", "pass --file <a readable submission.csv>"
            ) from None

    sub = cfg.comp.submission
    columns = expected_columns(cfg)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KitError(
            f"{name}: missing column '{quoted(missing[0])}' (has {listing(frame.columns)}; expected {listing(columns)})",
            f"write the columns {', '.join(columns)} as in the sample submission",
        )
    extra = [c for c in frame.columns if c not in columns]
    if extra:
        raise KitError(
            f"{name}: unexpected column '{quoted(extra[0])}' (expected exactly {listing(columns)})",
            f"drop the column '{quoted(extra[0])}'",
        )
    frame = frame[columns]
    id_col = sub.id_column if sub.id_column in columns else columns[0]
    label_col = sub.label_column if sub.label_column in columns else columns[-1]

    empty = frame.isna().to_numpy()
    if empty.any():
        row, col = (int(v) for v in np.argwhere(empty)[0])
        raise KitError(
            f"{name}: row {row + 1} (line {row + 2}) has no value in column '{columns[col]}' ({int(empty.sum())} empty cells)",
            "fill every cell; predict every test image",
        )
    ids = frame[id_col].astype(str)
    duplicated = ids.duplicated(keep=False)
    if duplicated.any():
        rows = np.flatnonzero(duplicated.to_numpy())
        first = ids.iloc[rows[0]]
        same = np.flatnonzero((ids == first).to_numpy())
        raise KitError(
            f"{name}: id '{quoted(first)}' appears {len(same)} times (rows {', '.join(str(r + 1) for r in same[:5])}); "
            f"{int(ids.duplicated().sum())} duplicate rows in all",
            "keep one row per id",
        )
    difference = compare_ids(ids.tolist(), reference.ids)
    if difference:
        parts = []
        if difference.lacking:
            parts.append(
                f"{len(difference.lacking)} ids of {reference.source} are missing (e.g. '{quoted(difference.lacking[0])}')"
            )
        if difference.surplus:
            surplus = difference.surplus[0]
            row = int(np.flatnonzero((ids == surplus).to_numpy())[0])
            parts.append(
                f"{len(difference.surplus)} ids are not in {reference.source} (e.g. '{quoted(surplus)}' at row {row + 1})"
            )
        raise KitError(
            f"{name}: {'; '.join(parts)} ({len(ids)} rows, {len(reference.ids)} expected)",
            f"write exactly one row for each id of {reference.source}",
        )
    _check_labels(cfg, frame[label_col], name, label_col, list(classes))
    return frame


def _check_labels(cfg: Config, labels: pd.Series, name: str, column: str, classes: list[str]) -> None:
    fmt = cfg.comp.submission.label_format

    def fail(bad: np.ndarray, what: str, fix: str) -> None:
        row = int(np.flatnonzero(bad)[0])
        label = quoted(labels.iloc[row])
        raise KitError(f"{name}: row {row + 1} (line {row + 2}) has {column}='{label}': {what} ({int(bad.sum())} such rows)", fix)

    if fmt == "name":
        if classes:
            bad = ~labels.astype(str).isin(classes).to_numpy()
            if bad.any():
                fail(
                    bad,
                    f"not a class name ({listing(classes)})",
                    "write class names",
                )
        return
    numbers = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=float)
    if fmt == "probability":
        bad = ~((numbers >= 0.0) & (numbers <= 1.0))  # NaN from non-numbers fails too
        if bad.any():
            fail(bad, "not a probability in [0, 1]", "write the probability of the positive class")
        return
    upper = len(classes) if classes else np.inf
    bad = ~((numbers >= 0) & (numbers < upper) & (np.floor(numbers) == numbers))
    if bad.any():
        what = f"not a class index in 0..{len(classes) - 1}" if classes else "not a class index"
        fail(bad, what, "write integer class indices")
