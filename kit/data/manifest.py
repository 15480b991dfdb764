"""The records manifest, typed: what ``kit records`` wrote, read once per command and handed down.

``<records_dir>/manifest.json`` is written last by :mod:`kit.data.records`; its keys on disk::

    {"version", "comp", "image_size", "classes", "num_classes", "image_format", "jpeg_quality",
     "counts": {split: {"total", "per_class": {name: n}, "originals", "augmented", "unlabelled",
                        "per_fold": {fold: {"total", "originals"}}}},
     "shards": {split: [file names]}, "skipped": [{"id", "path", "reason", "split"}], "augment": {...},
     "fingerprint", "source": {"data_root", "split_plan"}, "resize", "max_side"}

``per_fold`` came later: a manifest without it still reads (its fold counts are then ``None`` and
callers scan the shards, as before). The records folder of a config is :func:`records_dir`: one folder per
competition, image size and *split plan* (:func:`split_plan`), so records cut for hold-out validation and for
k folds live side by side and a run can always read the records it was trained on. ``source`` (what data and
plan the records were built from) came with the plan folders.
"""

from __future__ import annotations

import dataclasses
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.config.checks import check_folders
from kit.data.resizing import folder_name, folder_settings
from kit.data.schema import MANIFEST, SPLITS
from kit.errors import KitError
from kit.io import URLPath, as_path, join, read_json

if TYPE_CHECKING:
    from kit.config import Config

VERSION = 1
AS_GIVEN = "as-given"  # the competition's own val table
NO_VAL = "no-val"  # data.val_fraction=0 and no val table: training without validation, as asked
_HOLDOUT = re.compile(r"^holdout(?P<fraction>[0-9.e-]+)-seed(?P<seed>\d+)$")
_KFOLD = re.compile(r"^kfold(?P<folds>\d+)-seed(?P<seed>\d+)$")


def split_plan(cfg: Config) -> str:
    """How the labelled rows are split, as a folder name: ``kfold5-seed42`` (data.folds > 1: every labelled row in
    train, with a fold), ``as-given`` (the competition's val table), ``no-val`` (data.val_fraction=0 and no val
    table), else ``holdout0.2-seed42`` (a stratified data.val_fraction of train held out, drawn with data.seed)."""
    from kit.data.tables import table_defined

    data = cfg.data
    if data.folds > 1:
        return f"kfold{data.folds}-seed{data.seed}"
    if table_defined(cfg.comp.val):
        return AS_GIVEN
    if data.val_fraction <= 0:
        return NO_VAL
    return f"holdout{data.val_fraction:g}-seed{data.seed}"


def plan_settings(plan: str) -> str:
    """The settings that give ``plan`` (the inverse of :func:`split_plan`), for a command that rebuilds its records."""
    if match := _KFOLD.match(plan):
        return f"data.folds={match['folds']} data.seed={match['seed']}"
    if match := _HOLDOUT.match(plan):
        return f"data.val_fraction={match['fraction']} data.seed={match['seed']}"
    return "data.val_fraction=0" if plan == NO_VAL else ""


def records_dir(cfg: Config) -> Path | URLPath:
    """``<data.records_root>/<comp>/<size folder>/<split plan>``: where the records of ``cfg`` live (a gs:// root stays
    a URL). The size folder is model.image_size, with the resize policy beside it when it is not stretch
    (:func:`kit.data.resizing.folder_name`: ``224``, ``224-pad``, ``224-crop768``).

    The names are checked here, not only at load: a config edited in Python (``cfg.comp.name = "../x"``) reaches
    this function without passing load_config."""
    check_folders(cfg)
    return as_path(cfg.data.records_root) / cfg.comp.name / folder_name(cfg) / split_plan(cfg)


def records_source(cfg: Config) -> dict[str, str]:
    """What the manifest's ``source`` records: the data folder (resolved) and the split plan the records come from."""
    return {"data_root": str(Path(cfg.data.root).resolve()), "split_plan": split_plan(cfg)}


def source_split(split: str, fold: int | None) -> str:
    """The split whose shards hold ``split``: with a fold, both "train" and "val" come from the train shards."""
    if split not in SPLITS:
        raise KitError(f"unknown split '{split}'", f"use one of: {', '.join(SPLITS)}")
    if fold is not None and split == "test":
        raise KitError("fold= applies to the train and val splits only", "drop fold= for the test split")
    return "train" if fold is not None else split


@dataclass(frozen=True)
class FoldCount:
    """Examples of one ``fold`` value in a split's shards."""

    total: int  # offline-augmented copies included: what training on the other folds reads of it
    originals: int  # without the copies: what validating on this fold reads


@dataclass(frozen=True)
class SplitCounts:
    """Examples of one split: in all, per class name, originals/augmented/unlabelled, and per fold."""

    total: int = 0
    per_class: dict[str, int] = field(default_factory=dict)
    originals: int = 0
    augmented: int = 0
    unlabelled: int = 0
    per_fold: dict[int, FoldCount] | None = None  # None: written before the records counted folds

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> SplitCounts:
        per_fold = value.get("per_fold")
        return cls(
            total=int(value.get("total", 0)),
            per_class={str(k): int(n) for k, n in value.get("per_class", {}).items()},
            originals=int(value.get("originals", 0)),
            augmented=int(value.get("augmented", 0)),
            unlabelled=int(value.get("unlabelled", 0)),
            per_fold=None
            if per_fold is None
            else {int(k): FoldCount(int(v["total"]), int(v["originals"])) for k, v in per_fold.items()},
        )

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "total": self.total,
            "per_class": dict(self.per_class),
            "originals": self.originals,
            "augmented": self.augmented,
            "unlabelled": self.unlabelled,
        }
        if self.per_fold is not None:
            out["per_fold"] = {str(k): dataclasses.asdict(self.per_fold[k]) for k in sorted(self.per_fold)}
        return out


@dataclass(frozen=True)
class Manifest:
    """One finished build of records: what it holds and where (``records_dir``, not stored in the file)."""

    version: int
    comp: str
    image_size: int
    classes: tuple[str, ...]
    num_classes: int
    image_format: str
    jpeg_quality: int | None
    counts: dict[str, SplitCounts]
    shards: dict[str, tuple[str, ...]]
    skipped: tuple[dict[str, Any], ...]
    augment: dict[str, Any]
    fingerprint: str | None
    records_dir: Path | URLPath
    source: dict[str, str] = field(default_factory=dict)  # empty: built before the records said where they came from
    resize: str = "stretch"  # data.resize the records were built with (kit.data.resizing); absent before policies
    max_side: int | None = None  # data.max_side, for records that keep native sizes

    @classmethod
    def from_json(cls, value: dict[str, Any], records_dir: str | os.PathLike) -> Manifest:
        classes = tuple(str(c) for c in value["classes"])
        return cls(
            version=int(value.get("version", VERSION)),
            comp=str(value.get("comp", "")),
            image_size=int(value["image_size"]),
            classes=classes,
            num_classes=int(value.get("num_classes", len(classes))),
            image_format=str(value.get("image_format", "png")),  # manifests before raw existed were png or jpeg
            jpeg_quality=value.get("jpeg_quality"),
            counts={split: SplitCounts.from_json(c) for split, c in value.get("counts", {}).items()},
            shards={split: tuple(names) for split, names in value.get("shards", {}).items()},
            skipped=tuple(value.get("skipped", [])),
            augment=dict(value.get("augment", {"mode": "none"})),
            fingerprint=value.get("fingerprint"),
            records_dir=as_path(records_dir),
            source={str(k): str(v) for k, v in (value.get("source") or {}).items()},
            resize=str(value.get("resize", "stretch")),
            max_side=value.get("max_side"),
        )

    def to_json(self) -> dict[str, Any]:
        """What manifest.json holds (the keys and their order as the records writer has always written them)."""
        return {
            "version": self.version,
            "comp": self.comp,
            "image_size": self.image_size,
            "classes": list(self.classes),
            "num_classes": self.num_classes,
            "image_format": self.image_format,
            "jpeg_quality": self.jpeg_quality,
            "counts": {split: counts.to_json() for split, counts in self.counts.items()},
            "shards": {split: list(names) for split, names in self.shards.items()},
            "skipped": list(self.skipped),
            "augment": dict(self.augment),
            "fingerprint": self.fingerprint,
            "source": dict(self.source),
            "resize": self.resize,
            "max_side": self.max_side,
        }

    def describe_source(self) -> str:
        """``built from <data root> (<split plan>)``, or that an older kit did not record it."""
        if not self.source.get("data_root"):
            return "built by an older kit that did not record from which data"
        return f"built from {self.source['data_root']} ({self.source.get('split_plan', '?')})"

    def reference(self) -> dict[str, Any]:
        """What a run records of the records it trained on (``records.json``): folder, fingerprint and source."""
        return {"records_dir": str(self.records_dir), "fingerprint": self.fingerprint, **self.source}

    @property
    def binary(self) -> bool:
        return self.num_classes == 2

    def shard_paths(self, split: str) -> list[str]:
        """Full paths (local or URL) of the shards of ``split``, in plan order; empty when the split has none."""
        if split not in SPLITS:
            raise KitError(f"unknown split '{split}'", f"use one of {', '.join(SPLITS)}")
        return [join(self.records_dir, name) for name in self.shards.get(split, ())]

    def fold_counts(self) -> dict[int, int] | None:
        """Examples per ``fold`` value in the train shards (-1: rows without a fold); None for an old manifest."""
        per_fold = self.counts.get("train", SplitCounts()).per_fold
        return None if per_fold is None else {k: per_fold[k].total for k in sorted(per_fold)}

    @property
    def folds(self) -> int | None:
        """How many folds the records were built with (0: none); None when the manifest does not say."""
        counts = self.fold_counts()
        if counts is None:
            return None
        return max((k + 1 for k in counts if k >= 0), default=0)

    def count(self, split: str, fold: int | None = None) -> int | None:
        """Examples in one pass over ``split``; with ``fold=k``: train = fold != k, val = fold == k without the
        offline copies (both from the train shards). None when that needs fold counts this manifest lacks."""
        source = source_split(split, fold)
        counts = self.counts.get(source, SplitCounts())
        if fold is None:
            return counts.total
        if counts.per_fold is None:
            return None
        own = counts.per_fold.get(int(fold), FoldCount(0, 0))
        return counts.total - own.total if split == "train" else own.originals


def read_manifest(folder: str | os.PathLike) -> Manifest:
    """The manifest of a finished build (local or a gs:// URL); a KitError naming ``kit records`` when there is none."""
    folder = as_path(folder)
    path = folder / MANIFEST
    settings = plan_settings(folder.name)
    size, resize_settings = folder_settings(folder.parent.name)
    settings = " ".join(part for part in (settings, resize_settings) if part)
    command = f"kit records comp={folder.parent.parent.name} model=<model>{f' {settings}' if settings else ''}"
    command += f" (image size {size})"
    if not path.is_file():
        if (folder.parent / MANIFEST).is_file():  # one folder for every split plan, as kits before the plan folders wrote
            raise KitError(
                f"no records in {folder}; those in {folder.parent} were written before records had a folder per split plan",
                f"run `{command}` (then delete the old {folder.parent}/*.tfrecord to free their space)",
            )
        raise KitError(f"no records in {folder} (manifest.json missing)", f"run `{command}`")
    try:
        value = read_json(path)
    except (ValueError, OSError) as exc:
        raise KitError(f"cannot read {path} ({exc})", f"rerun `{command}`") from None
    if value.get("version") != VERSION:
        raise KitError(f"{path} was written by another version of kit", f"rerun `{command}`")
    try:
        return Manifest.from_json(value, folder)
    except (KeyError, TypeError, ValueError) as exc:
        raise KitError(f"cannot read {path} (bad or missing entry {exc})", f"rerun `{command}`") from None
