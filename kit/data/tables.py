"""One split's table, read from its CSV or folder, and its labels mapped to class indices.

:mod:`kit.data.sources` describes the three layouts (a CSV of paths, a CSV of ids beside an image
folder, a folder of class folders or loose images) and joins the tables of all splits into the index.
Every mistake in a CSV is caught here with a one-line :class:`~kit.errors.KitError` naming the file,
the row and the fix. Rows are numbered as a spreadsheet shows them: "row 3" is the third data row,
"line 4" the same row counted in the file with its header.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.config import TableConfig
from kit.errors import KitError, nearest
from kit.io import read_csv, require_columns

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
# Cells that mean "no value" in a label column (pandas' usual NA spellings; we read everything as text).
NA_TOKENS = frozenset({"", "nan", "NaN", "NAN", "NA", "N/A", "n/a", "null", "NULL", "None", "none", "<NA>"})
INT_LABEL = re.compile(r"\d+(\.0*)?")


def is_image(name: str) -> bool:
    """An image file by its extension; hidden files (``._x.jpg`` from macOS zips) are not."""
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _where(source: str, i: int) -> str:
    """Spreadsheet-style position of data row ``i`` (0-based) of a CSV with a header line."""
    return f"{source} row {i + 1} (line {i + 2})"


# ----------------------------------------------------------------------------------------------------
# One table per split
# ----------------------------------------------------------------------------------------------------


@dataclass
class Table:
    """One split as read from its CSV or folder, before labels are mapped to class indices."""

    split: str
    source: str  # the file or folder, as shown in messages
    frame: pd.DataFrame  # columns id, path (absolute), raw_label (str or None), row (0-based), where (folders)
    labelled: bool
    from_folder: bool = False


def table_defined(table: TableConfig) -> bool:
    """Whether a split is configured at all (``comp.val`` and ``comp.test`` are optional)."""
    return bool(table.csv or table.dir)


def _join(base: str, rel: pd.Series) -> pd.Series:
    """``base/rel`` for every row, normalised so it can be matched against directory listings."""
    values = [rel_path if rel_path.startswith("/") else f"{base}/{rel_path}" for rel_path in rel.tolist()]
    return pd.Series([os.path.normpath(v) for v in values], index=rel.index, dtype=object)


def _read_csv_table(root: Path, table: TableConfig, split: str) -> Table:
    path = root / table.csv
    source = str(path)
    frame = read_csv(path, fix=f"check comp.{split}.csv and data.root={root}")
    require_columns(
        frame,
        source,
        {
            f"comp.{split}.id_column": table.id_column,
            f"comp.{split}.path_column": table.path_column,
            f"comp.{split}.label_column": table.label_column,
        },
    )
    if not table.id_column and not table.path_column:
        near = nearest("id", frame.columns, n=1)
        raise KitError(
            f"{source}: comp.{split} names neither an id_column nor a path_column",
            f"set comp.{split}.id_column={near[0] if near else frame.columns[0]} (or path_column)",
        )
    if len(frame) == 0:
        raise KitError(f"{source}: the CSV has a header but no rows", f"re-download it, or drop comp.{split}")

    id_column = table.id_column or table.path_column
    ids = frame[id_column].astype(str).str.strip()
    blank = ids.isin(NA_TOKENS).to_numpy()
    if blank.any():
        i = int(np.flatnonzero(blank)[0])
        raise KitError(f"{_where(source, i)}: empty id in column '{id_column}'", "fill in the id or delete the row")
    duplicated = ids.duplicated(keep=False).to_numpy()
    if duplicated.any():
        first = int(np.flatnonzero(duplicated)[0])
        second = int(np.flatnonzero((ids == ids.iloc[first]).to_numpy())[1])
        raise KitError(
            f"{source}: duplicate id '{ids.iloc[first]}' in row {first + 1} (line {first + 2})"
            f" and row {second + 1} (line {second + 2})",
            f"delete one of the rows (or set comp.{split}.id_column to a unique column)",
        )

    if table.path_column:
        rel = frame[table.path_column].astype(str).str.strip()
    else:
        rel = ids
        if table.image_ext:
            lacks = ~rel.str.endswith(table.image_ext)
            rel = rel.where(~lacks, rel + table.image_ext)
    base = os.path.normpath(str((root / table.image_dir).resolve()))
    out = pd.DataFrame({"id": ids.to_numpy(dtype=object), "path": _join(base, rel).to_numpy(), "row": np.arange(len(frame))})
    labelled = bool(table.label_column)
    if labelled:
        raw = frame[table.label_column].astype(str).str.strip()
        missing = raw.isin(NA_TOKENS).to_numpy()
        if missing.any():
            i = int(np.flatnonzero(missing)[0])
            raise KitError(
                f"{_where(source, i)}: empty label in column '{table.label_column}' ({int(missing.sum())} rows have none)",
                "fill in the labels, delete those rows, or move them to the test CSV",
            )
        out["raw_label"] = raw.to_numpy(dtype=object)
    else:
        out["raw_label"] = None
    _check_files_exist(out, source, f"check comp.{split}.image_dir / image_ext / path_column and data.root")
    return Table(split, source, out, labelled)


def _read_folder_table(root: Path, table: TableConfig, split: str) -> Table:
    folder = root / table.dir
    source = str(folder)
    if not folder.is_dir():
        raise KitError(f"{folder}: folder not found", f"check comp.{split}.dir and data.root={root}")
    base = Path(os.path.normpath(str(folder.resolve())))
    with os.scandir(base) as entries:
        entries = sorted(entries, key=lambda e: e.name)
    subdirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    loose = [e.name for e in entries if e.is_file() and is_image(e.name)]

    ids, paths, labels, where = [], [], [], []
    for sub in subdirs:
        with os.scandir(sub.path) as inner:
            names = sorted(e.name for e in inner if e.is_file() and is_image(e.name))
        # ids are relative to data.root so train/REAL/1.jpg and test/REAL/1.jpg stay distinct
        rel = os.path.relpath(sub.path, root.resolve()).replace(os.sep, "/")
        ids.extend(f"{rel}/{n}" for n in names)
        paths.extend(f"{sub.path}/{n}" for n in names)
        labels.extend([sub.name] * len(names))
        where.extend([sub.path] * len(names))
    if ids:
        labelled = True
    elif loose:
        labelled = False
        ids, paths, labels, where = loose, [f"{base}/{n}" for n in loose], [None] * len(loose), [source] * len(loose)
    else:
        found = ", ".join(e.name for e in entries[:5]) or "nothing"
        raise KitError(
            f"{folder}: no images and no class folders with images (found: {found})",
            f"point comp.{split}.dir at a folder of class folders or of images ({', '.join(IMAGE_EXTENSIONS)})",
        )
    frame = pd.DataFrame({"id": ids, "path": paths, "raw_label": labels, "row": np.arange(len(ids)), "where": where})
    frame["id"] = frame["id"].astype(object)
    frame["path"] = frame["path"].astype(object)
    return Table(split, source, frame, labelled, from_folder=True)


def _check_files_exist(frame: pd.DataFrame, source: str, fix: str) -> None:
    """Every path must exist: one directory listing per folder instead of one stat per row."""
    paths = frame["path"]
    listed = paths.tolist()
    existing: set[str] = set()
    for parent in {p.rpartition("/")[0] for p in listed}:
        try:
            with os.scandir(parent) as entries:
                existing.update(f"{parent}/{e.name}" for e in entries)
        except (FileNotFoundError, NotADirectoryError):
            continue
    missing = np.fromiter((p not in existing for p in listed), dtype=bool, count=len(listed))
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        raise KitError(
            f"{_where(source, int(frame['row'].iloc[i]))}: image {paths.iloc[i]} does not exist "
            f"({int(missing.sum())} of {len(paths)} listed images are missing)",
            fix,
        )


def read_table(root: Path, table: TableConfig, split: str) -> Table:
    """One split as configured by ``table``: its CSV (``csv`` set) or its folder (``dir``)."""
    return _read_csv_table(root, table, split) if table.csv else _read_folder_table(root, table, split)


# ----------------------------------------------------------------------------------------------------
# Labels -> class indices
# ----------------------------------------------------------------------------------------------------


def integer_labels(raw: pd.Series) -> pd.Series | None:
    """Integer labels ("3", "3.0") as ints, or None when any label is not an integer.

    Works on the few distinct values rather than on every row: labels repeat.
    """
    values = {}
    for value in pd.unique(raw.astype(str)):
        if not INT_LABEL.fullmatch(value):
            return None
        values[value] = int(value.split(".")[0])
    return raw.map(values).astype(np.int64)


def default_classes(raw: pd.Series) -> list[str]:
    """The classes that labels name when ``comp.classes`` is not given: ``0..max`` for integer labels, else the sorted names."""
    ints = integer_labels(raw)
    if ints is not None:
        return [str(i) for i in range(int(ints.max()) + 1)] if len(ints) else []
    return sorted(raw.unique().tolist())


def _label_error(table: Table, i: int, message: str, fix: str) -> KitError:
    row = int(table.frame["row"].iloc[i])
    where = table.frame["where"].iloc[i] if table.from_folder else _where(table.source, row)
    return KitError(f"{where}: {message}", fix)


def map_labels(tables: list[Table], given: list[str]) -> list[str]:
    """Turn raw labels into class indices in place (``label`` column) and return the class names.

    Names are matched against ``comp.classes`` first; if they are all integers instead, they are
    class indices (ai-vs-human labels 0/1 with classes [human, ai]). Without ``comp.classes`` the
    classes are the sorted label names, or ``0..max`` for integer labels.
    """
    labelled = [t for t in tables if t.labelled]
    for t in tables:
        t.frame["label"] = np.int64(-1)
    if not labelled:
        return list(given)
    all_raw = pd.concat([t.frame["raw_label"] for t in labelled], ignore_index=True)
    ints = integer_labels(all_raw)
    if given:
        classes = [str(c) for c in given]
        lookup = {name: i for i, name in enumerate(classes)}
        if all_raw.isin(lookup.keys()).all():
            for t in labelled:
                t.frame["label"] = t.frame["raw_label"].map(lookup).astype(np.int64)
            return classes
        if ints is None:  # names, and at least one of them is not a class: report the first
            for t in labelled:
                unknown = ~t.frame["raw_label"].isin(lookup.keys()).to_numpy()
                if unknown.any():
                    bad = int(np.flatnonzero(unknown)[0])
                    raise _label_error(
                        t,
                        bad,
                        f"label '{t.frame['raw_label'].iloc[bad]}' is not in the class list ({_short(classes)})",
                        "fix the label, or list every class in comp.classes",
                    )
        for t in labelled:  # all integers: class indices
            as_int = integer_labels(t.frame["raw_label"])
            out_of_range = (as_int >= len(classes)).to_numpy()
            if out_of_range.any():
                bad = int(np.flatnonzero(out_of_range)[0])
                raise _label_error(
                    t,
                    bad,
                    f"label {as_int.iloc[bad]} is not a class index (0..{len(classes) - 1} for classes {_short(classes)})",
                    "fix the label, or list every class in comp.classes",
                )
            t.frame["label"] = as_int.to_numpy()
        return classes
    classes = default_classes(all_raw)
    if ints is not None:
        for t in labelled:
            t.frame["label"] = integer_labels(t.frame["raw_label"]).to_numpy()
    else:
        lookup = {name: i for i, name in enumerate(classes)}
        for t in labelled:
            t.frame["label"] = t.frame["raw_label"].map(lookup).astype(np.int64)
    if len(classes) < 2:
        raise KitError(
            f"{labelled[0].source}: only one class ('{classes[0]}') found in the labels",
            "check comp.train.label_column (or the class folders); a classifier needs at least two classes",
        )
    return classes


def _short(names: list[str], n: int = 8) -> str:
    return ", ".join(names[:n]) + (f", ... ({len(names)} classes)" if len(names) > n else "")
