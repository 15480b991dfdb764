"""Sharded TFRecords: parallel, atomic, resumable, and honest about bad images.

``build_records`` turns the index (id, path, label, split, fold) into
``<records_dir>/<split>-<NNNNN>.tfrecord`` shards in the format of :mod:`kit.data.schema`, then writes
``manifest.json`` last. How it stays correct when things go wrong:

- **Deterministic plan.** The same index and settings always give the same shards: train rows are
  shuffled once with ``data.seed`` (so each shard mixes classes even when the source lists them class by
  class), val/test rows keep the index order, and rows are cut into runs of :func:`examples_per_shard`.
- **Atomic shards.** A worker writes a whole shard to a hidden temp file in the same folder
  (``.<shard>.<pid>.partial``), fsyncs it and ``os.replace``s it under its final name, then records the
  shard's counts and skips in ``.progress/<shard>.json``. A shard counts as done only when both exist.
- **Resume.** After a kill, a rerun with the same fingerprint removes temp files, keeps done shards and
  writes only the missing ones; the result equals an uninterrupted build. A different fingerprint (index
  rows, file sizes/mtimes, image size/format, shard size, offline-augment settings) wipes the old
  shards and manifest first. An up-to-date manifest makes the build a no-op.
- **Bad images** never crash the build and are never dropped silently: each becomes an entry of the
  manifest's ``skipped`` list with a reason (from :mod:`kit.data.images`), and a warning on stderr.
- **Disk full** (ENOSPC): the temp file is removed, finished shards stay, and a :class:`KitError` says so.
- **Parallel** with a ``spawn`` process pool (never fork after TensorFlow is imported) whose workers each
  write whole shards. Workers never import TensorFlow: examples are encoded and framed by
  :mod:`kit.data.tfrecord` (byte-identical to ``tf.io.TFRecordWriter``), because importing TensorFlow cost
  each worker 7-15 s of start-up and ~0.6 GiB (BENCHMARKS.md, P1); a worker now starts in well under a
  second, and a fresh build starts them before fingerprinting so that their start-up overlaps it. With one
  worker everything runs in this process. One build per records folder at a time (an ``flock`` on the
  folder guards it).
- **Memory** does not grow with the number of images beyond the index table the caller holds: shard rows
  are made into Python objects only when the shard is handed to a worker (:class:`ShardRows`), at most
  ``IN_FLIGHT_PER_WORKER`` shards per worker wait in the pool's queue, and the index is not copied.
- **Image format**: ``data.image_format`` resolved by :func:`kit.data.schema.resolve_image_format` (``auto``
  = raw pixels up to 128 px, PNG above); the manifest and fingerprint hold the resolved format.

Offline augmentation (``augment.mode=offline``): each train shard holds its originals followed by
``augment.offline_copies`` copies made by :func:`kit.data.augment.offline_augment` from the shard's
resized images; copies get ids ``<id>#aug<k>``, ``label`` = argmax of their (possibly CutMix-mixed)
soft label and ``soft_label`` = the mixed vector. They keep the fold of their original.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kit.data.schema import MANIFEST, SHARD_SUFFIX, SPLITS, resolve_image_format
from kit.errors import KitError
from kit.io import atomic_write, read_json, write_json

if TYPE_CHECKING:
    import pandas as pd

    from kit.config import Config

VERSION = 1
PROGRESS_DIR = ".progress"  # per-shard done files of an unfinished build; removed when the manifest is written
TEMP_SUFFIX = ".partial"
# Estimated bytes of one encoded example, per pixel: raw is RGB exactly, PNG of natural images rarely
# compresses below ~75 % of raw RGB, JPEG at quality ~95 is about 1/6 of it. Plus the id, labels and framing.
BYTES_PER_PIXEL = {"raw": 3.0, "png": 3.0, "jpeg": 0.5}
EXAMPLE_OVERHEAD = 256
MAX_WARNINGS = 20  # bad-image lines printed to stderr before only counting

REQUIRED_COLUMNS = ("id", "path", "label", "split")


# ---------------------------------------------------------------------------------------------- plan


class ShardRows(Sequence):
    """The rows (id, path, label, fold) of one shard, made into Python objects only when used.

    The plan holds, per split, the index's columns (compact: pandas keeps strings in Arrow buffers) and the
    shard's row positions; a list of 100k (id, path, label, fold) tuples for the whole plan cost the build's
    parent ~30 MB more at 100k images. Pickled (to a worker) it becomes a plain list of its rows.
    """

    def __init__(self, columns: tuple[Any, Any, Any, Any], positions: np.ndarray) -> None:
        self.columns = columns
        self.positions = positions

    def __len__(self) -> int:
        return len(self.positions)

    def __getitem__(self, item: Any) -> Any:
        return self.rows()[item]

    def __iter__(self) -> Iterator[tuple[str, str, int, int]]:
        return iter(self.rows())

    def rows(self) -> list[tuple[str, str, int, int]]:
        ids, paths, labels, folds = (column.take(self.positions).tolist() for column in self.columns)
        return list(zip(map(str, ids), map(str, paths), map(int, labels), map(int, folds), strict=True))

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return list, (self.rows(),)


@dataclasses.dataclass
class ShardTask:
    """One shard to write: its file name and the rows (id, path, label, fold) that go into it."""

    name: str
    split: str
    index: int
    rows: Sequence[tuple[str, str, int, int]]
    copies: int  # offline augmented copies appended after the originals (train only)


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:05d}{SHARD_SUFFIX}"


def image_format(cfg: Config) -> str:
    """The format the records store images in: ``data.image_format`` with ``auto`` resolved."""
    try:
        return resolve_image_format(cfg.data.image_format, cfg.model.image_size)
    except ValueError as exc:
        raise KitError(str(exc), "set data.image_format=auto") from None


def _offline(cfg: Config) -> bool:
    return cfg.augment.mode == "offline" and cfg.augment.offline_copies > 0


def examples_per_shard(cfg: Config, split: str) -> int:
    """How many source images go into one shard so that it is about ``data.shard_mb`` MB.

    Estimated from the image size alone (``size^2 x BYTES_PER_PIXEL[format]`` per example, times
    1 + offline copies for train), which needs no sampling and keeps the plan a pure function of the
    settings and the index, as resuming requires.
    """
    size = cfg.model.image_size
    per_example = size * size * BYTES_PER_PIXEL[image_format(cfg)] + EXAMPLE_OVERHEAD
    if split == "train" and _offline(cfg):
        per_example *= 1 + cfg.augment.offline_copies
    return max(1, int(cfg.data.shard_mb * 1_000_000 // per_example))


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


def plan_shards(cfg: Config, index: pd.DataFrame) -> list[ShardTask]:
    """The deterministic assignment of index rows to shards (see the module docstring)."""
    tasks: list[ShardTask] = []
    for split in SPLITS:
        part = index[index["split"] == split]
        columns = tuple(part[name].array for name in ("id", "path", "label", "fold"))
        order = np.arange(len(part))
        if split == "train":
            order = np.random.default_rng(cfg.data.seed).permutation(len(part))
        per_shard = examples_per_shard(cfg, split)
        copies = cfg.augment.offline_copies if split == "train" and _offline(cfg) else 0
        for number, start in enumerate(range(0, len(part), per_shard)):
            rows = ShardRows(columns, order[start : start + per_shard])
            tasks.append(ShardTask(shard_name(split, number), split, number, rows, copies))
    return tasks


def _records_augment(cfg: Config) -> dict:
    """The augmentation baked into the records: the offline settings, or mode none."""
    if _offline(cfg):
        return dataclasses.asdict(cfg.augment)
    return {"mode": "none"}


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
        "shard_mb": cfg.data.shard_mb,
        "seed": cfg.data.seed,
        "classes": list(classes),
        "augment": _records_augment(cfg),
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


# ---------------------------------------------------------------------------------------------- worker

_STATE: dict[str, Any] = {}


def _init_worker(settings: dict, queue: Any) -> None:
    """Pool initializer: settings shared by all shards, and the progress queue (None in-process)."""
    if queue is not None:  # a spawned worker: one OpenCV thread each (the pool is the parallelism)
        import cv2

        cv2.setNumThreads(1)
    _STATE.clear()
    _STATE.update(settings, queue=queue)


def _is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    return "No space left on device" in text or "Disk quota exceeded" in text


def _augment_seed(base: int, shard_index: int, copy: int) -> int:
    return (base * 1_000_003 + shard_index * 1_009 + copy) % (2**31 - 1)


def _write_shard(task: ShardTask) -> dict:
    """Decode, resize, encode and write one whole shard (in a worker); return its counts and skips.

    A full disk returns ``{"error": "disk_full"}`` instead of raising, because a KitError's hint does
    not survive pickling back to the parent.
    """
    from kit.data.images import ImageError, decode_with_size, resize
    from kit.data.schema import Example, encode_image, serialize
    from kit.data.tfrecord import TFRecordWriter

    state = _STATE
    size, fmt, quality, num_classes = state["size"], state["format"], state["quality"], state["num_classes"]
    out_dir = Path(state["out_dir"])
    queue = state["queue"]
    final = out_dir / task.name
    temp = out_dir / f".{task.name}.{os.getpid()}{TEMP_SUFFIX}"
    per_class = [0] * num_classes
    counts = {"originals": 0, "augmented": 0, "unlabelled": 0}
    skipped: list[dict] = []
    kept_images: list[np.ndarray] = []
    kept_meta: list[tuple[str, int, int, int]] = []
    kept_soft: list[np.ndarray] = []
    pending, last_report = 0, time.monotonic()

    def report(done: int, force: bool = False) -> None:
        nonlocal pending, last_report
        pending += done
        if queue is not None and pending and (force or time.monotonic() - last_report > 0.2):
            queue.put(pending)
            pending, last_report = 0, time.monotonic()

    def count(label: int) -> None:
        if label >= 0:
            per_class[label] += 1
        else:
            counts["unlabelled"] += 1

    try:
        with TFRecordWriter(temp) as writer:
            for row_id, path, label, fold in task.rows:  # a list in a worker, ShardRows in-process
                try:
                    image, (height, width) = decode_with_size(path, max_side=size)
                    image = resize(image, size)
                except ImageError as exc:
                    skipped.append({"id": row_id, "path": path, "reason": exc.reason, "split": task.split})
                    report(1)
                    continue
                soft = np.zeros(num_classes, np.float32)
                if label >= 0:
                    soft[label] = 1.0
                writer.write(serialize(Example(encode_image(image, fmt, quality), label, soft, row_id, height, width, fold)))
                counts["originals"] += 1
                count(label)
                if task.copies:
                    kept_images.append(image)
                    kept_soft.append(soft)
                    kept_meta.append((row_id, height, width, fold))
                report(1)
            if task.copies and kept_images:
                from kit.data.augment import offline_augment

                batch, soft_batch = np.stack(kept_images), np.stack(kept_soft)
                for copy in range(1, task.copies + 1):
                    seed = _augment_seed(state["augment_seed"], task.index, copy)
                    images, softs = offline_augment(batch, soft_batch, state["augment"], seed)
                    for (row_id, height, width, fold), image, soft in zip(kept_meta, images, softs, strict=True):
                        soft = np.asarray(soft, np.float32)
                        label = int(np.argmax(soft)) if soft.sum() > 0 else -1
                        example = Example(
                            encode_image(np.asarray(image, np.uint8), fmt, quality),
                            label,
                            soft,
                            f"{row_id}#aug{copy}",
                            height,
                            width,
                            fold,
                        )
                        writer.write(serialize(example))
                        counts["augmented"] += 1
                        count(label)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, final)
        done = {
            "shard": task.name,
            "split": task.split,
            "total": sum(per_class) + counts["unlabelled"],
        }
        done.update(counts, per_class=per_class, skipped=skipped)
        atomic_write(out_dir / PROGRESS_DIR / f"{task.name}.json", json.dumps(done))
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if _is_disk_full(exc):
            return {"error": "disk_full", "shard": task.name, "detail": str(exc).splitlines()[0][:200]}
        raise
    finally:
        report(0, force=True)
    return done


# ---------------------------------------------------------------------------------------------- driver


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold an exclusive flock on the records folder: one build at a time (released even on SIGKILL)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise KitError(f"another `kit records` is writing {folder}", "wait for it to finish") from None
        yield
    finally:
        os.close(fd)


def _remove_temps(folder: Path) -> None:
    for temp in folder.glob(f".*{TEMP_SUFFIX}"):
        temp.unlink(missing_ok=True)
    for temp in folder.glob(".*.tmp"):  # kit.io.atomic_path leftovers (manifest)
        temp.unlink(missing_ok=True)
    progress = folder / PROGRESS_DIR
    if progress.is_dir():
        for temp in progress.glob(".*.tmp"):
            temp.unlink(missing_ok=True)


def _clear(folder: Path) -> None:
    """Remove a previous build: the manifest first (so no reader trusts half a folder), then shards."""
    (folder / MANIFEST).unlink(missing_ok=True)
    for split in SPLITS:
        for shard in folder.glob(f"{split}-*{SHARD_SUFFIX}"):
            shard.unlink()
    _remove_temps(folder)
    shutil.rmtree(folder / PROGRESS_DIR, ignore_errors=True)


def _worker_count(cfg: Config, tasks: int) -> int:
    cores = cfg.data.workers or (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count())
    return max(1, min(int(cores or 1), tasks))


class _Warnings:
    """At most MAX_WARNINGS bad-image lines on stderr, then one count at the end."""

    def __init__(self) -> None:
        self.shown = 0
        self.hidden = 0

    def add(self, skipped: list[dict], bar: Any) -> None:
        for item in skipped:
            if self.shown < MAX_WARNINGS:
                bar.write(f"warning: skipping {item['path']} (id {item['id']}): {item['reason']}", file=sys.stderr)
                self.shown += 1
            else:
                self.hidden += 1

    def close(self) -> None:
        if self.hidden:
            print(f"warning: {self.hidden} more bad images skipped (all are listed in the manifest)", file=sys.stderr)


def _disk_full(result: dict, folder: Path) -> KitError:
    return KitError(
        f"disk full while writing {folder / result['shard']}",
        "free space or set data.records_root=<a folder with room>; rerun to resume (finished shards are kept)",
    )


class _ShardWriters:
    """The spawn pool of shard writers (none for one worker), startable early and closed with the build.

    At most ``IN_FLIGHT_PER_WORKER`` shards per worker are handed to the pool at a time: the pool pickles
    every submitted task into its queue, which for 100k images held an extra copy of the whole plan.
    """

    def __init__(self, workers: int, settings: dict) -> None:
        self.workers = workers
        self.settings = settings
        self.pool: Any = None
        self.progress: Any = None

    def start(self) -> None:
        """Start the worker processes (if not yet); they import numpy and OpenCV while this process goes on."""
        if self.workers > 1 and self.pool is None:
            import multiprocessing

            ctx = multiprocessing.get_context("spawn")
            self.progress = ctx.Queue()
            self.pool = ctx.Pool(self.workers, initializer=_init_worker, initargs=(self.settings, self.progress))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()  # every result has been collected (or the build failed)
            self.pool.join()
            self.pool = None


IN_FLIGHT_PER_WORKER = 2


def _run(cfg: Config, tasks: list[ShardTask], writers: _ShardWriters, folder: Path) -> None:
    """Write ``tasks`` with a progress bar over images: in-process for one worker, else on the pool."""
    import queue as queue_mod

    from tqdm import tqdm

    warnings = _Warnings()
    bar = tqdm(
        total=sum(len(t.rows) for t in tasks),
        unit="img",
        desc=f"records {cfg.comp.name}/{cfg.model.image_size}",
        file=sys.stderr,
        mininterval=0.5,
        dynamic_ncols=True,
    )
    try:
        if writers.workers == 1:
            _init_worker(writers.settings, None)
            for task in tasks:
                result = _write_shard(task)
                if "error" in result:
                    raise _disk_full(result, folder)
                bar.update(len(task.rows))
                warnings.add(result["skipped"], bar)
            return
        writers.start()
        # Finished shards come back through the pool's callbacks into ``finished``, so the loop wakes the
        # moment one is done (polling job.ready() between progress reads cost up to 0.15 s at the end of
        # every build: ~10% of a 10k-image build; BENCHMARKS.md, P1).
        finished: queue_mod.SimpleQueue = queue_mod.SimpleQueue()
        waiting, running = list(reversed(tasks)), 0
        while waiting or running:
            while waiting and running < IN_FLIGHT_PER_WORKER * writers.workers:
                writers.pool.apply_async(_write_shard, (waiting.pop(),), callback=finished.put, error_callback=finished.put)
                running += 1
            try:
                result = finished.get(timeout=0.2)
            except queue_mod.Empty:
                result = None
            with contextlib.suppress(queue_mod.Empty):
                while True:
                    bar.update(writers.progress.get_nowait())
            if result is None:
                continue
            running -= 1
            if isinstance(result, BaseException):
                raise result  # a worker's unexpected exception, with its remote traceback as the cause
            if "error" in result:
                raise _disk_full(result, folder)
            warnings.add(result["skipped"], bar)
        bar.update(bar.total - bar.n)  # progress messages still in flight: every shard is written
    except BaseException:
        writers.close()
        _remove_temps(folder)  # a worker killed by terminate() leaves its temp file behind
        raise
    finally:
        bar.close()
        warnings.close()


def _manifest(cfg: Config, classes: list[str], tasks: list[ShardTask], folder: Path, fp: str) -> dict:
    counts = {
        split: {"total": 0, "per_class": dict.fromkeys(classes, 0), "originals": 0, "augmented": 0, "unlabelled": 0}
        for split in SPLITS
    }
    shards: dict[str, list[str]] = {split: [] for split in SPLITS}
    skipped: list[dict] = []
    for task in tasks:
        done = read_json(folder / PROGRESS_DIR / f"{task.name}.json")
        entry = counts[task.split]
        entry["total"] += done["total"]
        for key in ("originals", "augmented", "unlabelled"):
            entry[key] += done[key]
        for name, n in zip(classes, done["per_class"], strict=True):
            entry["per_class"][name] += n
        shards[task.split].append(task.name)
        skipped.extend(done["skipped"])
    return {
        "version": VERSION,
        "comp": cfg.comp.name,
        "image_size": cfg.model.image_size,
        "classes": list(classes),
        "num_classes": len(classes),
        "image_format": image_format(cfg),
        "jpeg_quality": cfg.data.jpeg_quality,
        "counts": counts,
        "shards": shards,
        "skipped": skipped,
        "augment": _records_augment(cfg),
        "fingerprint": fp,
    }


def _fsync_dir(folder: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def build_records(cfg: Config, index: pd.DataFrame, classes: list[str]) -> dict:
    """Write the records for ``cfg`` from ``index`` (columns id, path, label, split, fold) and return the manifest.

    A no-op when the manifest is up to date; resumes an interrupted build; see the module docstring.
    """
    index = _check_index(index, classes)
    if cfg.data.shard_mb <= 0:
        raise KitError(f"data.shard_mb={cfg.data.shard_mb} must be positive", "use e.g. data.shard_mb=100")
    folder = Path(cfg.records_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise KitError(f"cannot create {folder} ({exc.strerror})", "set data.records_root to a writable folder") from None
    if _offline(cfg):
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
            "format": image_format(cfg),
            "quality": cfg.data.jpeg_quality,
            "num_classes": len(classes),
            "out_dir": str(folder),
            "augment": cfg.augment,
            "augment_seed": cfg.augment.seed,
        }
        writers = _ShardWriters(_worker_count(cfg, len(tasks)), settings)
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
                    _remove_temps(folder)
                    shutil.rmtree(folder / PROGRESS_DIR, ignore_errors=True)
                    return old

        progress = folder / PROGRESS_DIR
        state = progress / "build.json"
        resuming = False
        with contextlib.suppress(ValueError, OSError):
            resuming = read_json(state).get("fingerprint") == fp
        try:
            if resuming:
                (folder / MANIFEST).unlink(missing_ok=True)
                _remove_temps(folder)
            else:
                _clear(folder)
                write_json(state, {"fingerprint": fp})
        except OSError as exc:
            if _is_disk_full(exc):
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
            _run(cfg, todo, writers, folder)
        writers.close()

        manifest = _manifest(cfg, classes, tasks, folder, fp)
        _fsync_dir(folder)
        try:
            write_json(manifest_path, manifest)
        except OSError as exc:
            if _is_disk_full(exc):
                raise _disk_full({"shard": MANIFEST}, folder) from None
            raise
        shutil.rmtree(progress, ignore_errors=True)
    skipped = len(manifest["skipped"])
    totals = ", ".join(f"{s} {manifest['counts'][s]['total']}" for s in SPLITS if manifest["counts"][s]["total"])
    print(
        f"records written to {folder}: {totals}" + (f"; {skipped} bad images skipped (see manifest)" if skipped else ""),
        file=sys.stderr,
    )
    return manifest


def build_from_config(cfg: Config) -> dict:
    """``kit records``: load (or build) the index, then write the records for ``cfg``."""
    from kit.data.sources import load_index

    index, classes = load_index(cfg)
    return build_records(cfg, index, classes)


def read_manifest(records_dir: str | os.PathLike) -> dict:
    """The manifest of a finished build (local or a gs:// URL); a KitError naming ``kit records`` when there is none."""
    from kit.io import as_path

    folder = as_path(records_dir)
    path = folder / MANIFEST
    command = f"kit records comp={folder.parent.name} model=<model>  (image size {folder.name})"
    if not path.is_file():
        raise KitError(f"no records in {folder} (manifest.json missing)", f"run `{command}`")
    try:
        manifest = read_json(path)
    except (ValueError, OSError) as exc:
        raise KitError(f"cannot read {path} ({exc})", f"rerun `{command}`") from None
    if manifest.get("version") != VERSION:
        raise KitError(f"{path} was written by another version of kit", f"rerun `{command}`")
    return manifest


def shard_paths(records_dir: str | os.PathLike, manifest: dict, split: str) -> list[str]:
    """Full paths of the shards of ``split`` (empty when the split has none), in plan order."""
    if split not in SPLITS:
        raise KitError(f"unknown split '{split}'", f"use one of {', '.join(SPLITS)}")
    return [os.path.join(os.fspath(records_dir), name) for name in manifest["shards"].get(split, [])]
