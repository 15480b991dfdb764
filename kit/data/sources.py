"""Competition layouts -> one table: ``id, path, label, split, fold, group``.

Kaggle image competitions list their examples in one of three ways, all described by a
:class:`~kit.config.TableConfig` per split (``comp.train``, ``comp.val``, ``comp.test``):

1. a CSV of image paths (+ labels): ``path_column`` set; the id is the path unless ``id_column`` is set;
2. a CSV of ids (+ labels) and an image folder: images are ``<image_dir>/<id><image_ext>``;
3. a folder: class sub-folders (labelled) or loose images (unlabelled; the id is the file name).

Everything downstream (records, pipeline, predict) only sees the table built here, so every mistake in
a CSV is caught while it is built, once, with a one-line :class:`~kit.errors.KitError` naming the file,
the row and the fix: :mod:`kit.data.tables` reads each split and maps its labels, and
:func:`kit.submission.check_test_ids` checks the test ids against the sample submission.

Without a ``comp.val`` table, ``data.val_fraction`` of the labelled rows validate (or, with ``data.folds > 1``,
every row gets a fold): :mod:`kit.data.splits` stratifies by class and keeps the duplicate groups that
``data.duplicate_groups`` asks for whole; :mod:`kit.data.duplicates` computes them here, from the files, so
no other command's leftovers change a split. ``comp.group_column`` names a CSV column (source, generator,
photographer, subject) whose groups are kept whole too, joined with the duplicate groups; its value is each row's
``group`` (empty: none), which ``kit evaluate`` scores group by group. ``data.holdout_group=<value>`` puts that
group in validation whole, beside the usual validation share of the other rows: the model never trains on it.

The index is cached as ``<data.records_root>/<comp>/index.csv`` (+ ``classes.json`` and ``index.json``,
the settings it was built with and the duplicate groups its split used) beside the records built from it;
:func:`load_index` rebuilds it when the CSVs or folders are newer or the settings changed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pandas as pd

from kit.config import Config, TableConfig
from kit.config.checks import check_folders
from kit.data.labels import map_labels
from kit.data.splits import DUPLICATES_FIX, DUPLICATES_ONLY, assign_folds, holdout_rows, joined_groups, split_val
from kit.data.tables import check_index_paths, read_table, table_defined
from kit.errors import KitError
from kit.io import atomic_write, write_json
from kit.submission import Reference, check_test_ids, sample_reference

COLUMNS = ["id", "path", "label", "split", "fold", "group"]
SPLITS = ("train", "val", "test")
INDEX_VERSION = 3  # 2: duplicate groups computed here (data.duplicate_groups); 3: the group column (comp.group_column)


# ----------------------------------------------------------------------------------------------------
# Duplicate groups: computed here, with the split that keeps them whole
# ----------------------------------------------------------------------------------------------------


def _row_groups(cfg: Config, paths: pd.Series) -> tuple[np.ndarray | None, dict]:
    """Duplicate group per labelled row under data.duplicate_groups, groups over data.group_max_share split up;
    None when no two rows share a group. Also the summary index.json keeps (:func:`duplicate_groups_line`)."""
    from kit.data import duplicates

    rule = str(cfg.data.duplicate_groups)
    if rule not in duplicates.RULES:
        return None, {"rule": "none", "reason": f"data.duplicate_groups={rule}: rows are split one by one"}
    listed = paths.astype(str).tolist()
    workers = cfg.data.workers or min(16, os.cpu_count() or 1)
    if rule == "exact":
        groups = duplicates.duplicate_groups(duplicates.content_hashes(listed, workers))
    else:
        sha1, phash = duplicates.image_hashes(listed, workers)
        groups = duplicates.duplicate_groups(sha1, phash, cfg.audit.near_distance)
    limit = duplicates.group_limit(cfg.data.group_max_share, len(listed))
    groups, unused = duplicates.cap_groups(groups, limit)
    summary = duplicates.group_summary(groups, unused, rule, limit)
    return (groups if summary["groups"] else None), summary


def duplicate_groups_line(cfg: Config) -> str:
    """One line: the duplicate groups the cached index's split kept whole, and comp.group_column's groups with the
    group data.holdout_group held out (``kit records`` prints it)."""
    from kit.data.duplicates import describe

    try:
        meta = json.loads((index_dir(cfg) / "index.json").read_text())
        summary, column = meta["duplicate_groups"], meta.get("group_column")
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        summary, column = {"rule": "none", "reason": "no index"}, None
    line = describe(summary, cfg.audit.near_distance)
    if isinstance(column, dict) and column.get("column"):
        line += f"; comp.group_column={column['column']}: {column['groups']} groups kept whole"
        if column.get("held_out"):
            line += f", {column['held_out']} ({column['held_out_rows']} rows) held out in validation"
    return line


def _group_column_summary(cfg: Config, frame: pd.DataFrame) -> dict | None:
    """comp.group_column's groups among the labelled rows, and the rows data.holdout_group put in validation."""
    if not cfg.comp.group_column:
        return None
    labelled = frame[frame["split"].isin(["train", "val"])]
    held = labelled["group"] == cfg.data.holdout_group
    return {
        "column": cfg.comp.group_column,
        "groups": int(labelled.loc[labelled["group"] != "", "group"].nunique()),
        "held_out": cfg.data.holdout_group,
        "held_out_rows": int(held.sum()) if cfg.data.holdout_group else 0,
    }


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
        frame, classes, _ = _read_index(cfg)
    return frame, classes


def _read_index(cfg: Config) -> tuple[pd.DataFrame, list[str], dict]:
    root = data_root(cfg)
    comp = cfg.comp
    if not table_defined(comp.train):
        raise KitError(f"competition {comp.name}: comp.train has neither csv nor dir", "set comp.train.csv or comp.train.dir")
    tables = [read_table(root, comp.train, "train", comp.group_column)]
    if not tables[0].labelled:
        raise KitError(f"{tables[0].source}: the training table has no labels", "set comp.train.label_column or use class dirs")
    for split in ("val", "test"):
        table = getattr(comp, split)
        if table_defined(table):
            tables.append(read_table(root, table, split, comp.group_column if split == "val" else ""))
    classes = map_labels(tables, list(comp.classes))
    test = next((t for t in tables if t.split == "test"), None)
    if test is not None:
        # loose test images are often listed by stem in the sample submission
        test.frame["id"] = check_test_ids(cfg, test.frame["id"], test.source, by_stem=test.from_folder and not test.labelled)

    parts = []
    for t in tables:
        part = t.frame[["id", "path", "label"]].copy()
        part["split"] = t.split
        part["group"] = t.frame.get("group", "")
        parts.append(part)
    frame = pd.concat(parts, ignore_index=True)
    frame["fold"] = np.int64(-1)

    groups_used = _split(cfg, frame, any(t.split == "val" for t in tables), tables[0].source)
    frame["id"] = frame["id"].astype(str)
    frame["path"] = frame["path"].astype(str)
    frame["group"] = frame["group"].astype(str)
    frame["label"] = frame["label"].astype(np.int64)
    frame["fold"] = frame["fold"].astype(np.int64)
    return frame[COLUMNS], classes, groups_used


def _split(cfg: Config, frame: pd.DataFrame, val_table: bool, source: str) -> dict:
    """Set the folds (data.folds > 1) or the validation rows (data.holdout_group; without a comp.val table, a
    data.val_fraction share of the rest) of ``frame`` in place, keeping duplicate groups and comp.group_column's
    groups whole; return the summary of the duplicate groups used."""
    labelled = frame["split"].isin(["train", "val"]).to_numpy()
    positions = np.flatnonzero(labelled)
    splitting = cfg.data.folds > 1 or bool(cfg.data.holdout_group) or (not val_table and cfg.data.val_fraction > 0)
    if not splitting:
        return {"rule": "none", "reason": "no split made: the validation rows come from comp.val"}
    duplicates, summary = _row_groups(cfg, frame["path"].iloc[positions])
    keys = frame["group"].to_numpy()[positions] if cfg.comp.group_column else None
    groups = joined_groups(duplicates, keys)
    kept = _kept(cfg)
    if cfg.data.holdout_group:
        held = _held_out(cfg, keys, groups, source)
        frame.loc[positions[held], "split"] = "val"
        positions, groups = positions[~held], None if groups is None else joined_groups(groups[~held])
    labels = frame["label"].to_numpy()[positions]
    if cfg.data.folds > 1:
        frame.loc[positions, "split"] = "train"
        frame.loc[positions, "fold"] = assign_folds(labels, groups, cfg.data.folds, cfg.data.seed, source, kept)
    elif not val_table and cfg.data.val_fraction > 0:
        val = split_val(labels, groups, cfg.data.val_fraction, cfg.data.seed, source, kept)
        frame.loc[positions[val], "split"] = "val"
    return summary


def _held_out(cfg: Config, keys: np.ndarray | None, groups: np.ndarray | None, source: str) -> np.ndarray:
    """The labelled rows data.holdout_group puts in validation (:func:`kit.data.splits.holdout_rows`); one line when
    there is no group column to hold a group of, or when k-fold would choose the validation rows as well."""
    if keys is None:
        raise KitError(
            f"{source}: data.holdout_group={cfg.data.holdout_group} holds out a group of comp.group_column, which is empty",
            "set comp.group_column to the CSV column naming each row's source or generator",
        )
    if cfg.data.folds > 1:
        raise KitError(
            f"data.holdout_group={cfg.data.holdout_group} and data.folds={cfg.data.folds} both choose the validation rows",
            "hold out one group (data.folds=0) or cross-validate (data.holdout_group='')",
        )
    return holdout_rows(keys, cfg.data.holdout_group, groups, source)


def _kept(cfg: Config) -> tuple[str, str]:
    """What the split keeps whole and how to loosen it, as a refusal names them."""
    if not cfg.comp.group_column:
        return DUPLICATES_ONLY, DUPLICATES_FIX
    return (
        f"the groups of comp.group_column={cfg.comp.group_column} (with duplicate groups)",
        "choose data.val_fraction (or data.folds) near the share of a few whole groups, hold one group out "
        "(data.holdout_group), or leave comp.group_column empty",
    )


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
        "groups": [cfg.comp.group_column, cfg.data.holdout_group],
        "duplicate_groups": [cfg.data.duplicate_groups, cfg.data.group_max_share, cfg.audit.near_distance],
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
    with table_errors(cfg):
        frame, classes, groups_used = _read_index(cfg)
    folder = index_dir(cfg)
    atomic_write(folder / "index.csv", frame.to_csv(index=False))
    write_json(folder / "classes.json", classes)
    counts = {split: int(n) for split, n in frame.groupby("split").size().items()}
    meta = {"fingerprint": _fingerprint(cfg), "classes": classes, "counts": counts, "duplicate_groups": groups_used}
    meta["group_column"] = _group_column_summary(cfg, frame)
    write_json(folder / "index.json", meta)
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
            frame = pd.read_csv(index_csv, dtype={"id": str, "path": str, "split": str, "group": str}, keep_default_na=False)
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
