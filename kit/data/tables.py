"""One split's table, read from its CSV or folder (its labels become class indices in :mod:`kit.data.labels`).

:mod:`kit.data.sources` describes the three layouts (a CSV of paths, a CSV of ids beside an image
folder, a folder of class folders or loose images) and joins the tables of all splits into the index.
Every mistake in a CSV is caught here with a one-line :class:`~kit.errors.KitError` naming the file,
the row and the fix. Rows are numbered as a spreadsheet shows them: "row 3" is the third data row,
"line 4" the same row counted in the file with its header.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.config import TableConfig
from kit.config.files import PATH_CHARS, confined, inside
from kit.errors import KitError, listing, nearest, quoted
from kit.inputs import read_csv, require_columns

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
# Cells that mean "no value" in a label column (pandas' usual NA spellings; we read everything as text).
NA_TOKENS = frozenset({"", "nan", "NaN", "NAN", "NA", "N/A", "n/a", "null", "NULL", "None", "none", "<NA>"})


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
    frame: pd.DataFrame  # columns id, path (absolute), raw_label (str or None), row (0-based), where (folders), group
    labelled: bool
    from_folder: bool = False


def table_defined(table: TableConfig) -> bool:
    """Whether a split is configured at all (``comp.val`` and ``comp.test`` are optional)."""
    return bool(table.csv or table.dir)


def _join(base: str, rel: pd.Series) -> pd.Series:
    """``base/rel`` for every row, normalised so it can be matched against directory listings."""
    values = [rel_path if rel_path.startswith("/") else f"{base}/{rel_path}" for rel_path in rel.tolist()]
    return pd.Series([os.path.normpath(v) for v in values], index=rel.index, dtype=object)


def _read_csv_table(root: Path, table: TableConfig, split: str, group_column: str = "") -> Table:
    path = confined(root, f"comp.{split}.csv", table.csv)
    source = str(path)
    frame = read_csv(path, fix=f"check comp.{split}.csv and data.root={root}")
    require_columns(
        frame,
        source,
        {
            f"comp.{split}.id_column": table.id_column,
            f"comp.{split}.path_column": table.path_column,
            f"comp.{split}.label_column": table.label_column,
            "comp.group_column": group_column,
        },
    )
    if not table.id_column and not table.path_column:
        near = nearest("id", frame.columns, n=1)
        raise KitError(
            f"{source}: comp.{split} names neither an id_column nor a path_column",
            f"set comp.{split}.id_column={quoted(near[0] if near else frame.columns[0])} (or path_column)",
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
            f"{source}: duplicate id '{quoted(ids.iloc[first])}' in row {first + 1} (line {first + 2})"
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
    base = os.path.normpath(str(confined(root, f"comp.{split}.image_dir", table.image_dir).resolve()))
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
    if group_column:  # the groups the split keeps whole (kit.data.splits); an empty cell groups nothing
        groups = frame[group_column].astype(str).str.strip()
        out["group"] = groups.where(~groups.isin(NA_TOKENS), "").to_numpy(dtype=object)
    read = Table(split, source, out, labelled)
    check_files(read, root, f"check comp.{split}.image_dir / image_ext / path_column and data.root")
    return read


def _read_folder_table(root: Path, table: TableConfig, split: str) -> Table:
    folder = confined(root, f"comp.{split}.dir", table.dir)
    source = str(folder)
    if not folder.is_dir():
        raise KitError(f"{folder}: folder not found", f"check comp.{split}.dir and data.root={root}")
    base = Path(os.path.normpath(str(folder.resolve())))
    with os.scandir(base) as entries:
        entries = sorted(entries, key=lambda e: e.name)
    subdirs = [e for e in entries if _is_dir(e) and not e.name.startswith(".")]
    loose = [e.name for e in entries if is_image(e.name) and not _is_dir(e)]

    ids, paths, labels, where = [], [], [], []
    for sub in subdirs:
        with os.scandir(sub.path) as inner:
            names = sorted(e.name for e in inner if is_image(e.name) and not _is_dir(e))
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
        found = listing(e.name for e in entries[:5]) or "nothing"
        raise KitError(
            f"{folder}: no images and no class folders with images (found: {found})",
            f"point comp.{split}.dir at a folder of class folders or of images ({', '.join(IMAGE_EXTENSIONS)})",
        )
    frame = pd.DataFrame({"id": ids, "path": paths, "raw_label": labels, "row": np.arange(len(ids)), "where": where})
    frame["id"] = frame["id"].astype(object)
    frame["path"] = frame["path"].astype(object)
    read = Table(split, source, frame, labelled, from_folder=True)
    check_files(read, root, f"keep comp.{split}.dir and its class folders inside data.root")
    return read


def _is_dir(entry: os.DirEntry) -> bool:
    """A folder, links followed (a symlink loop is none). Every other entry named like an image is listed, a dangling
    or looping link and a FIFO too: the records build puts it in its skip list with the reason, never drops it unsaid."""
    try:
        return entry.is_dir()
    except OSError:  # ELOOP
        return False


def _folder(path: str) -> str:
    """The folder of a normalised absolute path ("/" for "/x.png", which has an empty head)."""
    return path.rpartition("/")[0] or "/"


def _shown(path: str) -> str:
    """A path from a table as a message shows it: control characters (a NUL, a newline) escaped, cut when long."""
    return quoted(path, limit=PATH_CHARS)


def check_files(table: Table, root: Path, fix: str) -> None:
    """Every path must be an entry of its folder and resolve inside ``data.root``, symlinks followed.

    One listing and one ``realpath`` per folder, not one stat per row; only rows that are symlinks are
    resolved one by one. A path leaving the root (``../``, an absolute path elsewhere, a link out of it) is
    refused before anything reads it; a folder that cannot be listed names the reason (e.g. a name too long).
    """
    root_real = os.path.realpath(root)
    listed = table.frame["path"].tolist()
    existing: set[str] = set()
    links: set[str] = set()
    outside: dict[str, str] = {}  # folder -> where it really is, when outside the root
    unlistable: dict[str, str] = {}  # folder -> why it cannot be listed
    for parent in {_folder(p) for p in listed}:
        try:
            real = os.path.realpath(parent)
        except ValueError as exc:  # a NUL byte in the path: no such folder can exist
            unlistable[parent] = str(exc)
            continue
        if not inside(real, root_real):
            outside[parent] = real
            continue
        try:
            with os.scandir(parent) as entries:
                for entry in entries:
                    listed_path = os.path.join(parent, entry.name)
                    existing.add(listed_path)
                    if entry.is_symlink():
                        links.add(listed_path)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except OSError as exc:
            unlistable[parent] = exc.strerror or type(exc).__name__
    for i, path in enumerate(listed):
        parent = _folder(path)
        real = outside.get(parent)
        if real is None and path in links:
            real = os.path.realpath(path)
            real = None if inside(real, root_real) else real
        elif real is not None:
            real = os.path.join(real, os.path.basename(path))
        if real is not None:
            really = f" (really {real})" if real != path else ""
            raise KitError(
                f"{row_position(table, i)}: image {_shown(path)}{really} is outside data.root {root_real}",
                "list only images inside data.root (no '..', no absolute paths or symlinks leading out of it), "
                "or point data.root at a folder that holds them",
            )
    missing = np.fromiter((p not in existing for p in listed), dtype=bool, count=len(listed))
    if missing.any():
        i = int(np.flatnonzero(missing)[0])
        path = listed[i]
        why = unlistable.get(_folder(path))
        raise KitError(
            f"{row_position(table, i)}: image {_shown(path)} "
            + (f"cannot be read ({why})" if why else "does not exist")
            + f" ({int(missing.sum())} of {len(listed)} listed images are missing)",
            fix,
        )


def check_index_paths(index: pd.DataFrame, root: Path, source: str) -> None:
    """kit's own index (``index.csv``) read back is input too: every path it lists passes :func:`check_files`."""
    table = Table("index", source, pd.DataFrame({"path": index["path"], "row": np.arange(len(index))}), labelled=False)
    check_files(table, root, f"delete {source}: kit rebuilds it from the competition's tables")


def read_table(root: Path, table: TableConfig, split: str, group_column: str = "") -> Table:
    """One split as configured by ``table``: its CSV (``csv`` set) or its folder (``dir``); ``group_column``, a column
    of the CSV, becomes the frame's ``group`` (``comp.group_column``)."""
    if group_column and not table.csv:
        raise KitError(
            f"comp.group_column={group_column} names a CSV column, but comp.{split} is the folder {root / table.dir}",
            f"list the images and their groups in a CSV (comp.{split}.csv), or leave comp.group_column empty",
        )
    return _read_csv_table(root, table, split, group_column) if table.csv else _read_folder_table(root, table, split)


def row_position(table: Table, i: int) -> str:
    """Where frame row ``i`` of ``table`` comes from, as messages name it: the CSV row, or the image's folder."""
    if table.from_folder:
        return str(table.frame["where"].iloc[i])
    return _where(table.source, int(table.frame["row"].iloc[i]))
