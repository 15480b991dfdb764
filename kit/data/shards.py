"""The shard plan and the shard writers: which rows go into which shard, and the processes that write them.

- **Deterministic plan.** The same index and settings always give the same shards: train rows are
  shuffled once with ``data.seed`` (so each shard mixes classes even when the source lists them class by
  class), val/test rows keep the index order, and rows are cut into runs of :func:`examples_per_shard`.
- **Atomic shards.** A worker writes a whole shard to a hidden temp file in the same folder
  (``.<shard>.<pid>.partial``), fsyncs it and ``os.replace``s it under its final name, then records the
  shard's counts (per class and per fold) and skips in ``.progress/<shard>.json``. A shard counts as done
  only when both exist.
- **Parallel** with a ``spawn`` process pool (:mod:`kit.data.workers`: no fork, no rerun of the caller's script)
  whose workers each write whole shards. Workers never import TensorFlow: examples are encoded and framed by
  :mod:`kit.data.tfrecord` (byte-identical to ``tf.io.TFRecordWriter``); importing TensorFlow cost each worker
  7-15 s of start-up and ~0.6 GiB (BENCHMARKS.md, records build speed). With one worker all runs in this process.
- **Memory** does not grow with the number of images beyond the index table the caller holds: shard rows
  are made into Python objects only when the shard is handed to a worker (:class:`ShardRows`), at most
  ``IN_FLIGHT_PER_WORKER`` shards per worker wait in the pool's queue, and the index is not copied.
- **Disk full** (ENOSPC): the temp file is removed and the worker reports it (the caller raises a KitError).
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import json
import os
import signal
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kit.data.resizing import folder_name, policy_of, stored_side
from kit.data.schema import SHARD_SUFFIX, SPLITS, resolve_image_format
from kit.data.workers import SPAWN, starting_workers
from kit.errors import KitError
from kit.io import atomic_write

if TYPE_CHECKING:
    import pandas as pd

    from kit.config import Config

PROGRESS_DIR = ".progress"  # per-shard done files of an unfinished build; removed when the manifest is written
TEMP_SUFFIX = ".partial"
# Estimated bytes of one encoded example, per pixel: raw is RGB exactly, PNG of natural images rarely
# compresses below ~75 % of raw RGB, JPEG (quality 90, 4:4:4) 1/10-1/6 of it. Plus the id, labels and framing.
BYTES_PER_PIXEL = {"raw": 3.0, "png": 3.0, "jpeg": 0.5}
EXAMPLE_OVERHEAD = 256
MAX_WARNINGS = 20  # bad-image lines printed to stderr before only counting
IN_FLIGHT_PER_WORKER = 2


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

    def __getitem__(self, item: int | slice) -> Any:
        if isinstance(item, slice):
            return ShardRows(self.columns, self.positions[item]).rows()
        position = self.positions[item]  # one row: never the whole shard's
        ids, paths, labels, folds = self.columns
        return (str(ids[position]), str(paths[position]), int(labels[position]), int(folds[position]))

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
        return resolve_image_format(cfg.data.image_format, stored_side(cfg))
    except ValueError as exc:
        raise KitError(str(exc), "set data.image_format=auto") from None


def offline(cfg: Config) -> bool:
    return cfg.augment.mode == "offline" and cfg.augment.offline_copies > 0


def examples_per_shard(cfg: Config, split: str) -> int:
    """How many source images go into one shard so that it is about ``data.shard_mb`` MB.

    Estimated from the image size alone (``size^2 x BYTES_PER_PIXEL[format]`` per example, times
    1 + offline copies for train; size: the longest side a stored image may have), which needs no sampling and
    keeps the plan a pure function of the settings and the index, as resuming requires.
    """
    size = stored_side(cfg)
    per_example = size * size * BYTES_PER_PIXEL[image_format(cfg)] + EXAMPLE_OVERHEAD
    if split == "train" and offline(cfg):
        per_example *= 1 + cfg.augment.offline_copies
    return max(1, int(cfg.data.shard_mb * 1_000_000 // per_example))


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
        copies = cfg.augment.offline_copies if split == "train" and offline(cfg) else 0
        for number, start in enumerate(range(0, len(part), per_shard)):
            rows = ShardRows(columns, order[start : start + per_shard])
            tasks.append(ShardTask(shard_name(split, number), split, number, rows, copies))
    return tasks


# ---------------------------------------------------------------------------------------------- worker

_STATE: dict[str, Any] = {}


def _init_worker(settings: dict, queue: Any) -> None:
    """Pool initializer: settings shared by all shards, and the progress queue (None in-process)."""
    if queue is not None:  # a spawned worker: one OpenCV thread each (the pool is the parallelism)
        import cv2

        cv2.setNumThreads(1)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # also in a worker the pool starts later (kit.data.workers)
    _STATE.clear()
    _STATE.update(settings, queue=queue)


def is_disk_full(exc: BaseException) -> bool:
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
    from kit.data.images import ImageError, decode_with_size
    from kit.data.schema import Example, encode_image, serialize
    from kit.data.tfrecord import TFRecordWriter

    state = _STATE
    size, fmt, quality, num_classes = state["size"], state["format"], state["quality"], state["num_classes"]
    policy, max_side = policy_of(state["resize"]), state["max_side"]
    out_dir, queue = Path(state["out_dir"]), state["queue"]
    final = out_dir / task.name
    temp = out_dir / f".{task.name}.{os.getpid()}{TEMP_SUFFIX}"
    per_class = [0] * num_classes
    counts = {"originals": 0, "augmented": 0, "unlabelled": 0}
    per_fold: dict[int, list[int]] = {}  # fold -> [examples, originals]: fold sizes without scanning the shards
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

    def count(label: int, fold: int, original: bool) -> None:
        fold_count = per_fold.setdefault(fold, [0, 0])
        fold_count[0] += 1
        fold_count[1] += original
        if label >= 0:
            per_class[label] += 1
        else:
            counts["unlabelled"] += 1

    try:
        with TFRecordWriter(temp) as writer:
            for row_id, path, label, fold in task.rows:  # a list in a worker, ShardRows in-process
                try:
                    image, (height, width) = decode_with_size(path, max_side=max_side if policy.native else size)
                    image = policy.store(image, size, max_side)
                except ImageError as exc:
                    skipped.append({"id": row_id, "path": path, "reason": exc.reason, "split": task.split})
                    report(1)
                    continue
                soft = np.zeros(num_classes, np.float32)
                if label >= 0:
                    soft[label] = 1.0
                stored = image.shape[:2] if policy.native else (0, 0)  # written only where sizes vary
                example = Example(encode_image(image, fmt, quality), label, soft, row_id, height, width, fold, *stored)
                writer.write(serialize(example))
                counts["originals"] += 1
                count(label, fold, original=True)
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
                        pixels = encode_image(np.asarray(image, np.uint8), fmt, quality)
                        writer.write(serialize(Example(pixels, label, soft, f"{row_id}#aug{copy}", height, width, fold)))
                        counts["augmented"] += 1
                        count(label, fold, original=False)
        with open(temp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(temp, final)
        done = {"shard": task.name, "split": task.split, "total": sum(per_class) + counts["unlabelled"], **counts}
        done.update(per_class=per_class, per_fold=sorted([k, *v] for k, v in per_fold.items()), skipped=skipped)
        atomic_write(out_dir / PROGRESS_DIR / f"{task.name}.json", json.dumps(done))
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if is_disk_full(exc):
            return {"error": "disk_full", "shard": task.name, "detail": str(exc).splitlines()[0][:200]}
        raise
    finally:
        report(0, force=True)
    return done


# ---------------------------------------------------------------------------------------------- pool


def remove_temps(folder: Path) -> None:
    for temp in folder.glob(f".*{TEMP_SUFFIX}"):
        temp.unlink(missing_ok=True)
    for temp in folder.glob(".*.tmp"):  # kit.io.atomic_path leftovers (manifest)
        temp.unlink(missing_ok=True)
    progress = folder / PROGRESS_DIR
    if progress.is_dir():
        for temp in progress.glob(".*.tmp"):
            temp.unlink(missing_ok=True)


def worker_count(cfg: Config, tasks: int) -> int:
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


def disk_full_error(result: dict, folder: Path) -> KitError:
    return KitError(
        f"disk full while writing {folder / result['shard']}",
        "free space or set data.records_root=<a folder with room>; rerun to resume (finished shards are kept)",
    )


class ShardWriters:
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
            self.progress = SPAWN.Queue()
            with starting_workers():  # the pool starts all its workers here
                self.pool = SPAWN.Pool(self.workers, initializer=_init_worker, initargs=(self.settings, self.progress))

    def close(self) -> None:
        if self.pool is not None:
            self.pool.terminate()  # every result has been collected (or the build failed)
            self.pool.join()
            self.pool = None


def write_tasks(cfg: Config, tasks: list[ShardTask], writers: ShardWriters, folder: Path) -> None:
    """Write ``tasks`` with a progress bar over images: in-process for one worker, else on the pool."""
    import queue as queue_mod

    from kit.progress import progress_bar

    warnings = _Warnings()
    bar = progress_bar(f"records {cfg.comp.name}/{folder_name(cfg)}", sum(len(t.rows) for t in tasks), "img")
    try:
        if writers.workers == 1:
            _init_worker(writers.settings, None)
            for task in tasks:
                result = _write_shard(task)
                if "error" in result:
                    raise disk_full_error(result, folder)
                bar.update(len(task.rows))
                warnings.add(result["skipped"], bar)
            return
        writers.start()
        # Finished shards come back through the pool's callbacks into ``finished``, so the loop wakes the
        # moment one is done (polling job.ready() between progress reads cost up to 0.15 s at the end of
        # every build: ~10% of a 10k-image build; BENCHMARKS.md, records build speed).
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
                raise disk_full_error(result, folder)
            warnings.add(result["skipped"], bar)
        bar.update(bar.total - bar.n)  # progress messages still in flight: every shard is written
    except BaseException:
        writers.close()
        remove_temps(folder)  # a worker killed by terminate() leaves its temp file behind
        raise
    finally:
        bar.close()
        warnings.close()
