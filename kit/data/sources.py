"""Competition layouts -> one table: ``id, path, label, split, fold``.

Kaggle image competitions list their examples in one of three ways, all described by a
:class:`~kit.config.TableConfig` per split (``comp.train``, ``comp.val``, ``comp.test``):

1. a CSV of image paths (+ labels): ``path_column`` set; the id is the path unless ``id_column`` is set;
2. a CSV of ids (+ labels) and an image folder: images are ``<image_dir>/<id><image_ext>``;
3. a folder: class sub-folders (labelled) or loose images (unlabelled; the id is the file name).

Everything downstream (records, pipeline, predict) only sees the table built here, so every mistake in
a CSV is caught here, once, with a one-line :class:`~kit.errors.KitError` naming the file, the row and
the fix. Rows are numbered as a spreadsheet shows them: "row 3" is the third data row, "line 4" the
same row counted in the file with its header.

The index is cached as ``<data.records_root>/<comp>/index.csv`` (+ ``classes.json`` and ``index.json``,
the settings it was built with) beside the records built from it; :func:`load_index` rebuilds it when
the CSVs or folders are newer or the settings changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from kit.config import Config, TableConfig
from kit.errors import KitError, nearest
from kit.io import atomic_write, write_json

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif")
COLUMNS = ["id", "path", "label", "split", "fold"]
SPLITS = ("train", "val", "test")
# Cells that mean "no value" in a label column (pandas' usual NA spellings; we read everything as text).
NA_TOKENS = frozenset({"", "nan", "NaN", "NAN", "NA", "N/A", "n/a", "null", "NULL", "None", "none", "<NA>"})
INDEX_VERSION = 1
INT_LABEL = re.compile(r"\d+(\.0*)?")


# ----------------------------------------------------------------------------------------------------
# Reading CSV files robustly
# ----------------------------------------------------------------------------------------------------


def read_csv(path: str | os.PathLike, fix: str = "re-download the file or fix it by hand") -> pd.DataFrame:
    """Read a CSV as text columns (ids keep leading zeros), with one-line errors for broken files.

    UTF-8 with or without a byte-order mark is accepted (``utf-8-sig`` decodes both; plain ``utf-8``
    would leave the mark glued to the first column name). Column names are stripped of spaces.
    """
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path}: CSV file not found", fix)
    raw = path.read_bytes()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise KitError(
            f"{path} line {line}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at offset {exc.start})",
            f"re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > fixed.csv",
        ) from None
    if not text.strip():
        raise KitError(f"{path}: the CSV file is empty", fix)
    try:
        frame = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, skipinitialspace=True)
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1]
        fix_fields = "every row needs as many comma-separated fields as the header"
        raise KitError(f"{path}: not a valid CSV ({detail})", fix_fields) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.shape[1] == 1:
        header = frame.columns[0]
        for sep, word in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if sep in header:
                raise KitError(
                    f"{path} line 1: read as one column '{header}': the file looks {word}-separated",
                    "save it comma-separated (e.g. pandas: pd.read_csv(f, sep=...).to_csv(f, index=False))",
                )
    return frame


def _where(source: str, i: int) -> str:
    """Spreadsheet-style position of data row ``i`` (0-based) of a CSV with a header line."""
    return f"{source} row {i + 1} (line {i + 2})"


def _require_columns(frame: pd.DataFrame, source: str, wanted: dict[str, str]) -> None:
    """``wanted`` maps a setting name (e.g. comp.train.label_column) to the column it names."""
    for setting, column in wanted.items():
        if column and column not in frame.columns:
            near = nearest(column, frame.columns, n=1)
            raise KitError(
                f"{source}: no column '{column}' (columns: {', '.join(map(str, frame.columns))})",
                f"set {setting}={near[0]}" if near else f"set {setting} to one of the columns",
            )


# ----------------------------------------------------------------------------------------------------
# One table per split
# ----------------------------------------------------------------------------------------------------


@dataclass
class _Table:
    """One split as read from its CSV or folder, before labels are mapped to class indices."""

    split: str
    source: str  # the file or folder, as shown in messages
    frame: pd.DataFrame  # columns id, path (absolute), raw_label (str or None), row (0-based), where (folders)
    labelled: bool
    from_folder: bool = False


def _table_defined(table: TableConfig) -> bool:
    return bool(table.csv or table.dir)


def _join(base: str, rel: pd.Series) -> pd.Series:
    """``base/rel`` for every row, normalised so it can be matched against directory listings."""
    values = [rel_path if rel_path.startswith("/") else f"{base}/{rel_path}" for rel_path in rel.tolist()]
    return pd.Series([os.path.normpath(v) for v in values], index=rel.index, dtype=object)


def _read_csv_table(root: Path, table: TableConfig, split: str) -> _Table:
    path = root / table.csv
    source = str(path)
    frame = read_csv(path, fix=f"check comp.{split}.csv and data.root={root}")
    _require_columns(
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
    return _Table(split, source, out, labelled)


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith(".")


def _read_folder_table(root: Path, table: TableConfig, split: str) -> _Table:
    folder = root / table.dir
    source = str(folder)
    if not folder.is_dir():
        raise KitError(f"{folder}: folder not found", f"check comp.{split}.dir and data.root={root}")
    base = Path(os.path.normpath(str(folder.resolve())))
    with os.scandir(base) as entries:
        entries = sorted(entries, key=lambda e: e.name)
    subdirs = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
    loose = [e.name for e in entries if e.is_file() and _is_image(e.name)]

    ids, paths, labels, where = [], [], [], []
    for sub in subdirs:
        with os.scandir(sub.path) as inner:
            names = sorted(e.name for e in inner if e.is_file() and _is_image(e.name))
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
    return _Table(split, source, frame, labelled, from_folder=True)


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


def _read_table(root: Path, table: TableConfig, split: str) -> _Table:
    return _read_csv_table(root, table, split) if table.csv else _read_folder_table(root, table, split)


# ----------------------------------------------------------------------------------------------------
# Labels -> class indices
# ----------------------------------------------------------------------------------------------------


def _as_int(raw: pd.Series) -> pd.Series | None:
    """Integer labels ("3", "3.0") as ints, or None when any label is not an integer.

    Works on the few distinct values rather than on every row: labels repeat.
    """
    values = {}
    for value in pd.unique(raw.astype(str)):
        if not INT_LABEL.fullmatch(value):
            return None
        values[value] = int(value.split(".")[0])
    return raw.map(values).astype(np.int64)


def _label_error(table: _Table, i: int, message: str, fix: str) -> KitError:
    row = int(table.frame["row"].iloc[i])
    where = table.frame["where"].iloc[i] if table.from_folder else _where(table.source, row)
    return KitError(f"{where}: {message}", fix)


def _map_labels(tables: list[_Table], given: list[str]) -> list[str]:
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
    ints = _as_int(all_raw)
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
            as_int = _as_int(t.frame["raw_label"])
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
    if ints is not None:
        classes = [str(i) for i in range(int(ints.max()) + 1)]
        for t in labelled:
            t.frame["label"] = _as_int(t.frame["raw_label"]).to_numpy()
    else:
        classes = sorted(all_raw.unique().tolist())
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


# ----------------------------------------------------------------------------------------------------
# Splits and folds
# ----------------------------------------------------------------------------------------------------


def _split_val(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """Boolean mask of the validation rows: stratified when every class can be split."""
    from sklearn.model_selection import train_test_split

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


def _assign_folds(labels: np.ndarray, folds: int, seed: int, source: str) -> np.ndarray:
    """Fold number per row; depends only on row order, labels and seed, so every model gets the same folds."""
    from sklearn.model_selection import StratifiedKFold

    if len(labels) < folds:
        raise KitError(f"{source}: {len(labels)} labelled examples cannot make {folds} folds", "use fewer data.folds")
    out = np.full(len(labels), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only n members"
        try:
            splits = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels)
            for k, (_, held) in enumerate(splits):
                out[held] = k
        except ValueError:
            from sklearn.model_selection import KFold

            for k, (_, held) in enumerate(KFold(n_splits=folds, shuffle=True, random_state=seed).split(labels)):
                out[held] = k
    return out


# ----------------------------------------------------------------------------------------------------
# Test ids vs sample_submission.csv
# ----------------------------------------------------------------------------------------------------


def _check_sample_submission(cfg: Config, root: Path, test: _Table) -> None:
    if not cfg.comp.sample_submission:
        return
    path = root / cfg.comp.sample_submission
    if not path.is_file():
        return
    sample = read_csv(path)
    column = cfg.comp.submission.id_column
    _require_columns(sample, str(path), {"comp.submission.id_column": column})
    expected = set(sample[column].astype(str).str.strip())
    ids = test.frame["id"]
    if set(ids) == expected:
        return
    if test.from_folder and not test.labelled:
        # Loose test images are often listed by stem ("123" for 123.jpg): adopt that when it matches.
        stems = ids.map(lambda name: os.path.splitext(name)[0])
        if set(stems) == expected and not stems.duplicated().any():
            test.frame["id"] = stems
            return
    ours = set(ids)
    only_test = sorted(ours - expected)
    only_sample = sorted(expected - ours)
    parts = [f"{len(ours)} test ids vs {len(expected)} in {path.name}"]
    if only_test:
        parts.append(f"{len(only_test)} test ids are not in it (e.g. '{only_test[0]}')")
    if only_sample:
        parts.append(f"{len(only_sample)} of its ids are not in the test table (e.g. '{only_sample[0]}')")
    raise KitError(
        f"{test.source}: test ids do not match {path}: " + "; ".join(parts),
        "check comp.test (id_column, image_ext, dir) and comp.submission.id_column, or re-download the data",
    )


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------


def data_root(cfg: Config) -> Path:
    """The competition folder; a one-line error naming the download command when it is missing."""
    root = Path(cfg.data.root)
    if root.exists() and not root.is_dir():
        raise KitError(f"data.root {root} is a file, not a folder", "point data.root=... at the competition's folder")
    if not root.is_dir():
        how = "kit demo" if cfg.comp.name == "demo" else f"make data COMP={cfg.comp.name}"
        raise KitError(f"data folder {root} does not exist", f"download it with `{how}` or point data.root=... at the folder")
    return root


def read_index(cfg: Config) -> tuple[pd.DataFrame, list[str]]:
    """Read every split of the competition into one table and return it with the class names.

    Columns: ``id`` (str), ``path`` (str, absolute), ``label`` (int, -1 unlabelled), ``split``
    (train | val | test), ``fold`` (int, -1 unless ``data.folds > 1``). A labelled test set (CIFAKE)
    keeps its labels so it can be scored.
    """
    root = data_root(cfg)
    comp = cfg.comp
    if not _table_defined(comp.train):
        raise KitError(f"competition {comp.name}: comp.train has neither csv nor dir", "set comp.train.csv or comp.train.dir")
    tables = [_read_table(root, comp.train, "train")]
    if not tables[0].labelled:
        raise KitError(f"{tables[0].source}: the training table has no labels", "set comp.train.label_column or use class dirs")
    for split in ("val", "test"):
        table = getattr(comp, split)
        if _table_defined(table):
            tables.append(_read_table(root, table, split))
    classes = _map_labels(tables, list(comp.classes))
    test = next((t for t in tables if t.split == "test"), None)
    if test is not None:
        _check_sample_submission(cfg, root, test)

    parts = []
    for t in tables:
        part = t.frame[["id", "path", "label"]].copy()
        part["split"] = t.split
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    frame["fold"] = np.int64(-1)

    labelled_train = frame["split"].isin(["train", "val"]).to_numpy()
    if cfg.data.folds > 1:
        frame.loc[labelled_train, "split"] = "train"
        positions = np.flatnonzero(labelled_train)
        labels = frame["label"].to_numpy()[positions]
        frame.loc[positions, "fold"] = _assign_folds(labels, cfg.data.folds, cfg.data.seed, tables[0].source)
    elif not any(t.split == "val" for t in tables) and cfg.data.val_fraction > 0:
        positions = np.flatnonzero(labelled_train)
        val = _split_val(frame["label"].to_numpy()[positions], cfg.data.val_fraction, cfg.data.seed)
        frame.loc[positions[val], "split"] = "val"

    frame["id"] = frame["id"].astype(str)
    frame["path"] = frame["path"].astype(str)
    frame["label"] = frame["label"].astype(np.int64)
    frame["fold"] = frame["fold"].astype(np.int64)
    return frame[COLUMNS], classes


def index_dir(cfg: Config) -> Path:
    """Where the index is cached: beside the records (``<records_root>/<comp>/``), or ``data/index/<comp>``
    when the records live on a remote file system (gs:// on TPU) that plain file writes cannot reach."""
    records_root = str(cfg.data.records_root)
    if "://" in records_root:
        return Path("data") / "index" / cfg.comp.name
    return Path(records_root) / cfg.comp.name


def _fingerprint(cfg: Config) -> str:
    """What the index depends on besides the files: the tables, classes and split settings."""
    comp = dataclasses.asdict(cfg.comp)
    keys = ("train", "val", "test", "sample_submission", "classes", "submission")
    payload = {
        "version": INDEX_VERSION,
        "comp": {k: comp[k] for k in keys},
        "root": str(Path(cfg.data.root).resolve()),
        "val_fraction": cfg.data.val_fraction,
        "seed": cfg.data.seed,
        "folds": cfg.data.folds,
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _sources_mtime(cfg: Config) -> float:
    """Newest modification time among the CSVs and listed folders (a folder's mtime changes when files come or go)."""
    root = Path(cfg.data.root)
    candidates = [root / cfg.comp.sample_submission] if cfg.comp.sample_submission else []
    for split in SPLITS:
        table: TableConfig = getattr(cfg.comp, split)
        if table.csv:
            candidates += [root / table.csv, root / table.image_dir]
        elif table.dir:
            folder = root / table.dir
            candidates.append(folder)
            if folder.is_dir():
                with os.scandir(folder) as entries:
                    candidates += [Path(e.path) for e in entries if e.is_dir()]
    return max((p.stat().st_mtime for p in candidates if p.exists()), default=0.0)


def write_index(cfg: Config) -> pd.DataFrame:
    """Build the index and write ``index.csv``, ``classes.json`` and ``index.json`` atomically."""
    frame, classes = read_index(cfg)
    folder = index_dir(cfg)
    atomic_write(folder / "index.csv", frame.to_csv(index=False))
    write_json(folder / "classes.json", classes)
    counts = {split: int(n) for split, n in frame.groupby("split").size().items()}
    write_json(folder / "index.json", {"fingerprint": _fingerprint(cfg), "classes": classes, "counts": counts})
    return frame


def load_index(cfg: Config) -> tuple[pd.DataFrame, list[str]]:
    """The cached index when it is up to date (same settings, newer than the sources), else a fresh one."""
    folder = index_dir(cfg)
    index_csv, meta_path = folder / "index.csv", folder / "index.json"
    data_root(cfg)
    if index_csv.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {}
        fresh = meta.get("fingerprint") == _fingerprint(cfg) and index_csv.stat().st_mtime >= _sources_mtime(cfg)
        if fresh:
            frame = pd.read_csv(index_csv, dtype={"id": str, "path": str, "split": str}, keep_default_na=False)
            frame["label"] = frame["label"].astype(np.int64)
            frame["fold"] = frame["fold"].astype(np.int64)
            return frame[COLUMNS], list(meta["classes"])
    frame = write_index(cfg)
    return frame, json.loads((folder / "classes.json").read_text())
