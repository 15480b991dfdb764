"""Sharded TFRecords: parallel, atomic, resumable, and honest about bad images.

``build_records`` turns the index (id, path, label, split, fold) into
``<records_dir>/<split>-<NNNNN>.tfrecord`` shards in the format of :mod:`kit.data.schema`, then writes
``manifest.json`` last. How it stays correct when things go wrong:

- **Plan, atomic shards, parallel writers, bounded memory**: see :mod:`kit.data.shards`, which plans the
  rows of every shard and runs the workers that write them.
- **Resume.** After a kill, a rerun with the same fingerprint removes temp files, keeps done shards and
  writes only the missing ones; the result equals an uninterrupted build. A different fingerprint (index
  rows, file sizes/mtimes, image size/format, shard size, offline-augment settings) wipes the old
  shards and manifest first. An up-to-date manifest makes the build a no-op.
- **Bad images** never crash the build and are never dropped silently: each becomes an entry of the
  manifest's ``skipped`` list with a reason (from :mod:`kit.data.images`), and a warning on stderr.
- **Disk full** (ENOSPC): the temp file is removed, finished shards stay, and a :class:`KitError` says so.
- **Start-up**: a fresh build starts the workers before fingerprinting so that their start-up overlaps it.
  One build per records folder at a time (an ``flock`` on the folder guards it).
- **Image format**: ``data.image_format`` resolved by :func:`kit.data.schema.resolve_image_format` (``auto``
  = raw pixels up to 128 px, JPEG above); the manifest and fingerprint hold the resolved format (and a JPEG's
  quality and colour sampling), so records of another format, PNG ones written when ``auto`` meant PNG included,
  are rebuilt rather than mixed with new shards.

Offline augmentation (``augment.mode=offline``): each train shard holds its originals followed by
``augment.offline_copies`` copies made by :func:`kit.data.augment.offline_augment` from the shard's
resized images; copies get ids ``<id>#aug<k>``, ``label`` = argmax of their (possibly CutMix-mixed)
soft label and ``soft_label`` = the mixed vector. They keep the fold of their original.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.config.checks import check_ranges
from kit.data.image_headers import max_file_bytes, max_pixels
from kit.data.manifest import VERSION, FoldCount, Manifest, SplitCounts, records_dir, records_source
from kit.data.resizing import check_resize, policy_of
from kit.data.schema import MANIFEST, SHARD_SUFFIX, SPLITS
from kit.data.shards import (
    PROGRESS_DIR,
    ShardTask,
    ShardWriters,
    disk_full_error,
    image_format,
    is_disk_full,
    offline,
    plan_shards,
    remove_temps,
    worker_count,
    write_tasks,
)
from kit.errors import KitError
from kit.io import read_json, write_json
from kit.locks import exclusive

if TYPE_CHECKING:
    import pandas as pd

    from kit.config import Config

REQUIRED_COLUMNS = ("id", "path", "label", "split")


def _check_index(index: pd.DataFrame, classes: list[str]) -> pd.DataFrame:
    missing = [c for c in REQUIRED_COLUMNS if c not in index.columns]
    if missing:
        raise KitError(f"the index lacks column(s) {', '.join(missing)}", "rebuild it with `kit data`")
    if not classes:
        raise KitError("no class names for the records", "set comp.classes or label the training data")
    # Convert only what needs it: a copy of a 100k-row index (its Arrow string buffers) cost ~25 MB.
    import pandas as pd
    from pandas.api.types import is_integer_dtype, is_string_dtype

    fixes: dict[str, Any] = {}
    if "fold" not in index.columns:
        fixes["fold"] = -1
    for name in ("id", "path"):
        if not is_string_dtype(index[name]):
            fixes[name] = index[name].astype(str)
    for name in ("label", "fold"):
        if name in index.columns and not is_integer_dtype(index[name]):
            fixes[name] = index[name].fillna(-1).astype(int)
    if fixes:
        index = index.assign(**fixes)
    bad_split = sorted(set(index["split"]) - set(SPLITS))
    if bad_split:
        raise KitError(f"unknown split(s) {bad_split} in the index", f"use {', '.join(SPLITS)}")
    bad_label = index[(index["label"] < -1) | (index["label"] >= len(classes))]
    if len(bad_label):
        row = bad_label.iloc[0]
        raise KitError(f"label {row['label']} of id {row['id']} is outside 0..{len(classes) - 1}", "check comp.classes")
    for split in SPLITS:
        ids = pd.Index(index.loc[index["split"] == split, "id"])
        if not ids.is_unique:  # an Index's hash check; DataFrame.duplicated took ~25 MB at 100k rows
            raise KitError(f"id {ids[ids.duplicated()][0]} appears twice in split {split}", "ids must be unique")
    return index


def _records_augment(cfg: Config) -> dict:
    """The augmentation baked into the records: the offline settings, or mode none."""
    if offline(cfg):
        return dataclasses.asdict(cfg.augment)
    return {"mode": "none"}


def _resize_settings(cfg: Config) -> dict:
    """The resize policy the records are built with; data.max_side only where the records keep native sizes."""
    native = policy_of(cfg.data.resize).native
    return {"resize": str(cfg.data.resize), "max_side": int(cfg.data.max_side) if native else None}


def fingerprint(cfg: Config, index: pd.DataFrame, classes: list[str]) -> str:
    """A hash of everything the records depend on: index rows with file sizes/mtimes, and the settings.

    Online augmentation settings and the worker count are left out: they do not change the records.
    """
    digest = hashlib.sha256()
    fmt = image_format(cfg)  # resolved: "auto" and the format it stands for give the same records
    settings = {
        "version": VERSION,
        "comp": cfg.comp.name,
        "image_size": cfg.model.image_size,
        "image_format": fmt,
        "jpeg_quality": cfg.data.jpeg_quality if fmt == "jpeg" else None,
        "jpeg_colour": "4:4:4" if fmt == "jpeg" else None,  # records of 4:2:0 JPEGs (kit before) are rebuilt, not mixed
        "shard_mb": cfg.data.shard_mb,
        "seed": cfg.data.seed,
        "classes": list(classes),
        "augment": _records_augment(cfg),
        "image_limits": [max_pixels(), max_file_bytes()],  # a raised limit admits images skipped before
        **_resize_settings(cfg),  # (also in the folder's name)
    }
    digest.update(json.dumps(settings, sort_keys=True).encode())
    for row in index[["id", "path", "label", "split", "fold"]].itertuples(index=False):
        try:
            stat = os.stat(row.path)
            size, mtime = stat.st_size, stat.st_mtime_ns
        except OSError:
            size, mtime = -1, -1
        digest.update(f"{row.id}\0{row.path}\0{row.label}\0{row.split}\0{row.fold}\0{size}\0{mtime}\n".encode())
    return digest.hexdigest()[:32]


# ---------------------------------------------------------------------------------------------- driver


def _locked(folder: Path) -> contextlib.AbstractContextManager[None]:
    """Hold an exclusive flock on the records folder: one build at a time (released even on SIGKILL)."""
    return exclusive(folder, lambda _holder: KitError(f"another `kit records` is writing {folder}", "wait for it to finish"))


def _clear(folder: Path) -> None:
    """Remove a previous build: the manifest first (so no reader trusts half a folder), then shards."""
    (folder / MANIFEST).unlink(missing_ok=True)
    for split in SPLITS:
        for shard in folder.glob(f"{split}-*{SHARD_SUFFIX}"):
            shard.unlink()
    remove_temps(folder)
    shutil.rmtree(folder / PROGRESS_DIR, ignore_errors=True)


def _note_old_layout(folder: Path) -> None:
    """One line when the image-size folder still holds shards of the layout before one folder per split plan."""
    old = [p for split in SPLITS for p in folder.parent.glob(f"{split}-*{SHARD_SUFFIX}")]
    if old:
        size = sum(p.stat().st_size for p in old) / 1e6
        print(
            f"note: {folder.parent} holds {len(old)} shards ({size:.0f} MB) of records written before each split plan "
            f"had its own folder; kit no longer reads them: delete them to free the space",
            file=sys.stderr,
        )


def _manifest(cfg: Config, classes: list[str], tasks: list[ShardTask], folder: Path, fp: str) -> Manifest:
    """The manifest of a finished build, summed from the shards' progress files."""
    totals = {split: dict.fromkeys(("total", "originals", "augmented", "unlabelled"), 0) for split in SPLITS}
    per_class = {split: dict.fromkeys(classes, 0) for split in SPLITS}
    per_fold: dict[str, dict[int, list[int]] | None] = {split: {} for split in SPLITS}
    shards: dict[str, list[str]] = {split: [] for split in SPLITS}
    skipped: list[dict] = []
    for task in tasks:
        done = read_json(folder / PROGRESS_DIR / f"{task.name}.json")
        for key, n in totals[task.split].items():
            totals[task.split][key] = n + done[key]
        for name, n in zip(classes, done["per_class"], strict=True):
            per_class[task.split][name] += n
        folds = per_fold[task.split]
        if folds is not None and "per_fold" in done:
            for fold, examples, originals in done["per_fold"]:
                count = folds.setdefault(fold, [0, 0])
                count[0], count[1] = count[0] + examples, count[1] + originals
        else:  # a shard written by a kit before per-fold counts (a resumed build): the split's folds are unknown
            per_fold[task.split] = None
        shards[task.split].append(task.name)
        skipped.extend(done["skipped"])
    counts = {}
    for split in SPLITS:
        folds = per_fold[split]
        fold_counts = None if folds is None else {k: FoldCount(*folds[k]) for k in sorted(folds)}
        counts[split] = SplitCounts(per_class=per_class[split], per_fold=fold_counts, **totals[split])
    return Manifest(
        version=VERSION,
        comp=cfg.comp.name,
        image_size=cfg.model.image_size,
        classes=tuple(classes),
        num_classes=len(classes),
        image_format=image_format(cfg),
        jpeg_quality=cfg.data.jpeg_quality if image_format(cfg) == "jpeg" else None,
        counts=counts,
        shards={split: tuple(names) for split, names in shards.items()},
        skipped=tuple(skipped),
        augment=_records_augment(cfg),
        fingerprint=fp,
        records_dir=folder,
        source=records_source(cfg),  # no build time: a resumed build writes the manifest of an uninterrupted one
        **_resize_settings(cfg),
    )


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def build_records(cfg: Config, index: pd.DataFrame, classes: list[str]) -> Manifest:
    """Write the records for ``cfg`` from ``index`` (columns id, path, label, split, fold) and return the manifest.

    A no-op when the manifest is up to date; resumes an interrupted build; see the module docstring.
    """
    index = _check_index(index, classes)
    check_ranges(cfg.data, "data.")  # data.shard_mb and the rest, should a config edited in Python reach here
    check_resize(cfg)
    folder = Path(records_dir(cfg))  # local: the build holds an flock on it
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KitError(f"cannot create {folder} ({exc.strerror})", "set data.records_root to a writable folder") from None
    if offline(cfg):
        try:
            from kit.data.augment import offline_augment  # noqa: F401  (fail here, not in every worker)
        except ImportError as exc:
            raise KitError(
                f"augment.mode=offline needs kit.data.augment.offline_augment ({exc})", "use augment.mode=online"
            ) from None

    with _locked(folder), contextlib.ExitStack() as stack:
        tasks = plan_shards(cfg, index)
        settings = {
            "size": cfg.model.image_size,
            **_resize_settings(cfg),
            "format": image_format(cfg),
            "quality": cfg.data.jpeg_quality,
            "num_classes": len(classes),
            "out_dir": str(folder),
            "augment": cfg.augment,
            "augment_seed": cfg.augment.seed,
        }
        writers = ShardWriters(worker_count(cfg, len(tasks)), settings)
        stack.callback(writers.close)
        manifest_path = folder / MANIFEST
        if not manifest_path.is_file():
            # Nothing to keep, so there will be shards to write: start the workers now, and their start-up
            # (~0.3 s each: interpreter, numpy, OpenCV) overlaps the fingerprint's stat of every image.
            writers.start()
        fp = fingerprint(cfg, index, classes)
        if manifest_path.is_file():
            with contextlib.suppress(ValueError, OSError):
                old = read_json(manifest_path)
                if old.get("fingerprint") == fp and all(
                    (folder / n).is_file() for names in old["shards"].values() for n in names
                ):
                    print(f"records in {folder} are up to date ({fp})", file=sys.stderr)
                    remove_temps(folder)
                    shutil.rmtree(folder / PROGRESS_DIR, ignore_errors=True)
                    return Manifest.from_json(old, folder)

        progress = folder / PROGRESS_DIR
        state = progress / "build.json"
        resuming = False
        with contextlib.suppress(ValueError, OSError):
            resuming = read_json(state).get("fingerprint") == fp
        try:
            if resuming:
                (folder / MANIFEST).unlink(missing_ok=True)
                remove_temps(folder)
            else:
                _clear(folder)
                write_json(state, {"fingerprint": fp})
        except OSError as exc:
            if is_disk_full(exc):
                raise KitError(
                    f"disk full while preparing {folder}", "free space or set data.records_root=<a folder with room>"
                ) from None
            raise

        todo = [t for t in tasks if not ((folder / t.name).is_file() and (progress / f"{t.name}.json").is_file())]
        planned = {t.name for t in tasks}
        for split in SPLITS:  # shards of an older plan with the same fingerprint cannot exist, but be tidy
            for shard in folder.glob(f"{split}-*{SHARD_SUFFIX}"):
                if shard.name not in planned:
                    shard.unlink()
        if len(todo) < len(tasks):
            print(f"resuming: {len(tasks) - len(todo)} of {len(tasks)} shards already written", file=sys.stderr)
        if todo:
            write_tasks(cfg, todo, writers, folder)
        writers.close()

        manifest = _manifest(cfg, classes, tasks, folder, fp)
        _fsync_dir(folder)
        try:
            write_json(manifest_path, manifest.to_json())
        except OSError as exc:
            if is_disk_full(exc):
                raise disk_full_error({"shard": MANIFEST}, folder) from None
            raise
        shutil.rmtree(progress, ignore_errors=True)
    _note_old_layout(folder)
    skipped = len(manifest.skipped)
    totals = ", ".join(f"{s} {manifest.counts[s].total}" for s in SPLITS if manifest.counts[s].total)
    print(
        f"records written to {folder}: {totals}" + (f"; {skipped} bad images skipped (see manifest)" if skipped else ""),
        file=sys.stderr,
    )
    return manifest


def build_from_config(cfg: Config) -> Manifest:
    """``kit records``: load (or build) the index, then write the records for ``cfg``."""
    from kit.data.sources import duplicate_groups_line, load_index

    index, classes = load_index(cfg)
    print(duplicate_groups_line(cfg), file=sys.stderr)
    return build_records(cfg, index, classes)
