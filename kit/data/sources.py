"""Competition layouts -> one table: ``id, path, label, split, fold``.

Kaggle image competitions list their examples in one of three ways, all described by a
:class:`~kit.config.TableConfig` per split (``comp.train``, ``comp.val``, ``comp.test``):

1. a CSV of image paths (+ labels): ``path_column`` set; the id is the path unless ``id_column`` is set;
2. a CSV of ids (+ labels) and an image folder: images are ``<image_dir>/<id><image_ext>``;
3. a folder: class sub-folders (labelled) or loose images (unlabelled; the id is the file name).

Everything downstream (records, pipeline, predict) only sees the table built here, so every mistake in
a CSV is caught while it is built, once, with a one-line :class:`~kit.errors.KitError` naming the file,
the row and the fix: :mod:`kit.data.tables` reads each split and maps its labels, and
:func:`kit.submission.check_test_ids` checks the test ids against the sample submission.

The index is cached as ``<data.records_root>/<comp>/index.csv`` (+ ``classes.json`` and ``index.json``,
the settings it was built with) beside the records built from it; :func:`load_index` rebuilds it when
the CSVs or folders are newer or the settings changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from kit.config import Config, TableConfig
from kit.config.checks import check_folders
from kit.data.tables import check_index_paths, map_labels, read_table, table_defined
from kit.errors import KitError
from kit.io import atomic_write, write_json
from kit.submission import Reference, check_test_ids, sample_reference

COLUMNS = ["id", "path", "label", "split", "fold"]
GROUPS_FILE = "duplicate_groups.csv"  # written by kit audit: path, group of every image with an exact or near copy
SPLITS = ("train", "val", "test")
INDEX_VERSION = 1


# ----------------------------------------------------------------------------------------------------
# Splits and folds
# ----------------------------------------------------------------------------------------------------


def _split_val(labels: np.ndarray, fraction: float, seed: int, source: str) -> np.ndarray:
    """Boolean mask of the validation rows: stratified when every class can be split.

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


def _group_folds(labels: np.ndarray, groups: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold number per row with every duplicate group inside one fold (StratifiedGroupKFold)."""
    from sklearn.model_selection import StratifiedGroupKFold

    out = np.full(len(labels), -1, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class has only n members"
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        for k, (_, held) in enumerate(splitter.split(np.zeros(len(labels)), labels, groups)):
            out[held] = k
    return out


def _assign_group_folds(labels: np.ndarray, groups: np.ndarray | None, folds: int, seed: int, source: str) -> np.ndarray:
    if groups is None:
        return _assign_folds(labels, folds, seed, source)
    distinct = len(np.unique(groups))
    if distinct < folds:
        raise KitError(f"{source}: {distinct} groups of distinct images cannot make {folds} folds", "use fewer data.folds")
    return _group_folds(labels, groups, folds, seed)


def _split_val_grouped(labels: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int, source: str) -> np.ndarray:
    """Like :func:`_split_val`; with duplicate groups, one fold of ``round(1 / fraction)`` stratified group folds,
    so no group straddles train and validation (the validation share is then ``1 / round(1 / fraction)``)."""
    if groups is None:
        return _split_val(labels, fraction, seed, source)
    n_splits = max(2, round(1 / fraction))
    if len(np.unique(groups)) < n_splits:
        raise KitError(
            f"{source}: {len(np.unique(groups))} duplicate-free groups cannot give data.val_fraction={fraction}",
            "add labelled rows, raise data.val_fraction, or give a comp.val table",
        )
    return _group_folds(labels, groups, n_splits, seed) == 0


def _groups_path(cfg: Config) -> Path:
    return index_dir(cfg) / GROUPS_FILE


def write_duplicate_groups(cfg: Config, groups: dict[str, int]) -> None:
    """Keep the audit's duplicate groups (path -> group) beside the index; the next index keeps each group on one
    side of the validation split and inside one fold. An empty mapping removes the file."""
    path = _groups_path(cfg)
    if not groups:
        path.unlink(missing_ok=True)
        return
    frame = pd.DataFrame({"path": list(groups), "group": list(groups.values())})
    atomic_write(path, frame.to_csv(index=False))


def _row_groups(cfg: Config, paths: pd.Series) -> np.ndarray | None:
    """Group per row: the audit's duplicate group, or a group of its own; None when no two rows share one."""
    path = _groups_path(cfg)
    if not path.is_file():
        return None
    try:
        table = pd.read_csv(path, dtype={"path": str}, keep_default_na=False)
        by_path = dict(zip(table["path"].astype(str), table["group"].astype(np.int64), strict=True))
    except (OSError, ValueError, KeyError) as exc:
        raise KitError(f"{path}: unreadable duplicate groups ({exc})", "run `kit audit` again, or delete the file") from None
    own = len(by_path) + np.arange(len(paths))  # group numbers no listed group uses
    groups = np.array([by_path.get(p, own[i]) for i, p in enumerate(paths.astype(str))], dtype=np.int64)
    return groups if len(np.unique(groups)) < len(groups) else None


# ----------------------------------------------------------------------------------------------------
# Public API
# ----------------------------------------------------------------------------------------------------


@contextmanager
def table_errors(cfg: Config) -> Iterator[None]:
    """Any OSError while listing or reading the competition's files (a name too long, no permission, a folder
    that vanished) becomes one line naming the path, instead of a traceback."""
    try:
        yield
    except OSError as exc:
        path = exc.filename or cfg.data.root
        raise KitError(
            f"{path}: cannot be read ({exc.strerror or type(exc).__name__})",
            "check data.root and the comp.train / comp.val / comp.test / comp.sample_submission settings",
        ) from None


def data_root(cfg: Config) -> Path:
    """The competition folder; a one-line error naming the download command when it is missing."""
    with table_errors(cfg):
        return _existing_root(cfg)


def _existing_root(cfg: Config) -> Path:
    root = Path(cfg.data.root)
    if root.exists() and not root.is_dir():
        raise KitError(f"data.root {root} is a file, not a folder", "point data.root=... at the competition's folder")
    if not root.is_dir():
        how = f"kit data comp={cfg.comp.name}"  # the demo is written locally in seconds; others come from Kaggle
        raise KitError(f"data folder {root} does not exist", f"get it with `{how}` or point data.root=... at the folder")
    return root


def read_index(cfg: Config) -> tuple[pd.DataFrame, list[str]]:
    """Read every split of the competition into one table and return it with the class names.

    Columns: ``id`` (str), ``path`` (str, absolute), ``label`` (int, -1 unlabelled), ``split``
    (train | val | test), ``fold`` (int, -1 unless ``data.folds > 1``). A labelled test set (CIFAKE)
    keeps its labels so it can be scored.
    """
    with table_errors(cfg):
        return _read_index(cfg)


def _read_index(cfg: Config) -> tuple[pd.DataFrame, list[str]]:
    root = data_root(cfg)
    comp = cfg.comp
    if not table_defined(comp.train):
        raise KitError(f"competition {comp.name}: comp.train has neither csv nor dir", "set comp.train.csv or comp.train.dir")
    tables = [read_table(root, comp.train, "train")]
    if not tables[0].labelled:
        raise KitError(f"{tables[0].source}: the training table has no labels", "set comp.train.label_column or use class dirs")
    for split in ("val", "test"):
        table = getattr(comp, split)
        if table_defined(table):
            tables.append(read_table(root, table, split))
    classes = map_labels(tables, list(comp.classes))
    test = next((t for t in tables if t.split == "test"), None)
    if test is not None:
        # loose test images are often listed by stem in the sample submission
        test.frame["id"] = check_test_ids(cfg, test.frame["id"], test.source, by_stem=test.from_folder and not test.labelled)

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
        groups = _row_groups(cfg, frame["path"].iloc[positions])
        frame.loc[positions, "fold"] = _assign_group_folds(labels, groups, cfg.data.folds, cfg.data.seed, tables[0].source)
    elif not any(t.split == "val" for t in tables) and cfg.data.val_fraction > 0:
        positions = np.flatnonzero(labelled_train)
        groups = _row_groups(cfg, frame["path"].iloc[positions])
        labels = frame["label"].to_numpy()[positions]
        val = _split_val_grouped(labels, groups, cfg.data.val_fraction, cfg.data.seed, tables[0].source)
        frame.loc[positions[val], "split"] = "val"

    frame["id"] = frame["id"].astype(str)
    frame["path"] = frame["path"].astype(str)
    frame["label"] = frame["label"].astype(np.int64)
    frame["fold"] = frame["fold"].astype(np.int64)
    return frame[COLUMNS], classes


def index_dir(cfg: Config) -> Path:
    """Where the index is cached: beside the records (``<records_root>/<comp>/``), or ``data/index/<comp>``
    when the records live on a remote file system (gs:// on TPU) that plain file writes cannot reach."""
    check_folders(cfg)  # again: a config edited in Python has not been through load_config
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
        "duplicate_groups": _file_digest(_groups_path(cfg)),
    }
    return hashlib.sha1(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _file_digest(path: Path) -> str:
    try:
        return hashlib.sha1(path.read_bytes()).hexdigest()
    except OSError:
        return ""


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
    root = data_root(cfg)
    if index_csv.is_file() and meta_path.is_file():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, ValueError):
            meta = {}
        with table_errors(cfg):
            fresh = meta.get("fingerprint") == _fingerprint(cfg) and index_csv.stat().st_mtime >= _sources_mtime(cfg)
        if fresh:
            frame = pd.read_csv(index_csv, dtype={"id": str, "path": str, "split": str}, keep_default_na=False)
            frame["label"] = frame["label"].astype(np.int64)
            frame["fold"] = frame["fold"].astype(np.int64)
            check_index_paths(frame, root, str(index_csv))  # kit's own file is input too: it may have been edited
            return frame[COLUMNS], list(meta["classes"])
    frame = write_index(cfg)
    return frame, json.loads((folder / "classes.json").read_text())


def reference_ids(cfg: Config) -> Reference:
    """The ids a submission must have, in order: the sample submission's, else the test split's of the index."""
    sample = sample_reference(cfg)
    if sample is not None:
        return sample
    index, _ = load_index(cfg)
    return Reference(index.loc[index["split"] == "test", "id"].astype(str).tolist(), "the test index")
