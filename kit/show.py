"""``kit show``: a grid of a split's images, a row per class, as the model gets them (fastai's ``show_batch``).

The images come from the competition's records through :func:`kit.data.pipeline.make_dataset`, so they are
what training and prediction read: cut by the resize policy (``data.resize``, :mod:`kit.data.resizing`: stretched,
letterboxed, or with ``crop`` the centre crop prediction takes, random crops in training), and with ``augmented``
what the training pipeline makes of them (flips, rotation, shifts, colour jitter, CutMix/MixUp). A mixed image is shown in the row
of its larger share, captioned with its soft label. Each image is captioned with its file name (from the
competition's cached index; the example id when there is none) and its class.

The PNG goes to ``<run.root>/<comp>/show/<split>-<size>px[-<policy>][-augmented].png`` by default: beside the audit's report
and the runs, where kit's other pictures of a competition are, rather than in the records folder, which is data
that ``kit records`` rebuilds (and may be a gs:// bucket).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kit.data import resizing
from kit.data.manifest import Manifest, read_manifest, records_dir, source_split
from kit.data.pipeline import make_dataset
from kit.data.resizing import policy_of
from kit.errors import KitError
from kit.image_grids import write_grid
from kit.inference import to_class_probs
from kit.interpret import example_paths, file_name

if TYPE_CHECKING:
    from kit.config import Config

PER_CLASS = 8  # images per class by default
MAX_PER_CLASS = 64
MAX_CLASSES = 20  # rows: beyond this the picture is too tall to read; the title says how many were left out
UNLABELLED = "unlabelled"  # the one row of a split without labels (test)
MIXED = 1e-6  # a soft label whose largest share is below 1 - this is a mix (CutMix, MixUp)


@dataclass
class Shown:
    """The examples drawn for one row: images (uint8), their soft labels (C,) and ids."""

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)


def check_request(split: str, augmented: bool, per_class: int) -> None:
    """A one-line KitError for a split kit does not know, augmentation of a split it never augments, a bad count."""
    source_split(split, None)
    if augmented and split != "train":
        raise KitError(f"split={split} is never augmented: only the training split is", "drop augmented, or use split=train")
    if not 1 <= per_class <= MAX_PER_CLASS:
        raise KitError(f"per_class={per_class} is outside 1..{MAX_PER_CLASS}", f"show 1 to {MAX_PER_CLASS} images per class")


def default_path(cfg: Config, split: str, augmented: bool) -> Path:
    policy = resizing.folder_name(cfg).removeprefix(str(cfg.model.image_size))  # "", "-pad", "-crop768"
    name = f"{split}-{cfg.model.image_size}px{policy}{'-augmented' if augmented else ''}.png"
    return Path(cfg.run.root) / cfg.comp.name / "show" / name


def is_labelled(manifest: Manifest, split: str) -> bool:
    counts = manifest.counts.get(split)
    return counts is None or counts.unlabelled < counts.total


def row_of(label: np.ndarray, classes: tuple[str, ...], labelled: bool) -> str:
    """The row an example is drawn in: its (largest) class, or the unlabelled row."""
    return classes[int(np.argmax(label))] if labelled else UNLABELLED


def label_text(label: np.ndarray, classes: tuple[str, ...], labelled: bool) -> str:
    """The caption of a soft label: its class ("ai"); a mix as "mix: ai 63% · human 37%" (largest share first);
    "" without labels."""
    if not labelled:
        return ""
    if label.max() >= 1.0 - MIXED:
        return classes[int(np.argmax(label))]
    shares = [k for k in np.argsort(-label, kind="stable") if label[k] > MIXED][:3]
    return "mix: " + " · ".join(f"{classes[k]} {percent(label[k])}" for k in shares)


def percent(share: float) -> str:
    """A share as a whole percentage, with a decimal when rounding would make it 0% or 100%."""
    whole = f"{share:.0%}"
    return f"{share:.1%}" if whole in ("0%", "100%") else whole


def gather(cfg: Config, manifest: Manifest, split: str, *, augmented: bool, per_class: int) -> dict[str, Shown]:
    """Up to ``per_class`` examples of each row (the first MAX_CLASSES classes), read in batches until every row
    is full or the split ends.

    ``augmented``: the training pipeline (shuffled, augmented as ``cfg.augment`` says); otherwise the records in
    their order, as prediction reads them.
    """
    labelled = is_labelled(manifest, split)
    rows = list(manifest.classes) if labelled else [UNLABELLED]
    shown = {row: Shown() for row in rows[:MAX_CLASSES]}
    batch_size = cfg.train.batch_size if augmented else cfg.predict.batch_size
    dataset = make_dataset(cfg, split, training=augmented, batch_size=batch_size, manifest=manifest, with_ids=True)
    for images, targets, ids in dataset:
        labels = to_class_probs(np.asarray(targets))  # binary targets are p(class 1): back to one share per class
        for image, label, example_id in zip(np.asarray(images), labels, np.asarray(ids), strict=True):
            row = shown.get(row_of(label, manifest.classes, labelled))
            if row is not None and len(row.ids) < per_class:
                row.images.append(np.clip(image, 0, 255).astype(np.uint8))
                row.labels.append(label)
                row.ids.append(example_id.decode("utf-8"))
        if all(len(row.ids) >= per_class for row in shown.values()):
            break
    return shown


def augmentation_words(cfg: Config, manifest: Manifest) -> str:
    """What the training pipeline does to the images, in the augmenter's own names."""
    mode = str(cfg.augment.mode)
    if mode == "offline":
        return "shuffled as training reads them, augmented copies (#aug) among the originals (augment.mode=offline)"
    if mode != "online":
        return f"shuffled as training reads them, not augmented (augment.mode={mode})"
    from kit.data.augment import build_online_augmenter

    names = build_online_augmenter(cfg.augment, manifest.num_classes).names
    return (
        f"after the training pipeline's {', '.join(names)}"
        if names
        else "shuffled as training reads them, every augmentation off"
    )


def title_of(cfg: Config, manifest: Manifest, split: str, augmented: bool, rows: int) -> str:
    """What the grid shows; ``rows``: classes drawn (0 for an unlabelled split)."""
    how = augmentation_words(cfg, manifest) if augmented else "as prediction reads them (no augmentation)"
    if policy_of(manifest.resize).native:
        how = ("random crops " if augmented else "centre crops, ") + how
    title = f"{cfg.comp.name}: {split} split, {resizing.describe(cfg)}, {how}"
    if 0 < rows < len(manifest.classes):
        title += f"; the first {rows} of {len(manifest.classes)} classes"
    return title


def panels(
    shown: dict[str, Shown], manifest: Manifest, labelled: bool, paths: dict[str, str], per_class: int
) -> tuple[list[np.ndarray], list[str]]:
    """Images and captions, ``per_class`` a row: a row short of images is filled with blank panels (the first
    saying so when the row has none), so every class starts a row of its own."""
    blank = np.full((manifest.image_size, manifest.image_size, 3), 255, np.uint8)
    images: list[np.ndarray] = []
    captions: list[str] = []
    for name, row in shown.items():
        for image, label, example_id in zip(row.images, row.labels, row.ids, strict=True):
            text = label_text(label, manifest.classes, labelled)
            images.append(image)
            captions.append("\n".join(part for part in (file_name(example_id, paths), text) if part))
        missing = per_class - len(row.ids)
        images += [blank] * missing
        captions += [""] * missing
        if not row.ids:
            captions[-per_class] = f"no {name} images"
    return images, captions


def show(
    cfg: Config, split: str = "train", *, augmented: bool = False, per_class: int = PER_CLASS, output: str | Path | None = None
) -> Path:
    """Draw ``per_class`` images of each class of ``split`` (a row each) to a PNG and return its path."""
    check_request(split, augmented, per_class)
    manifest = read_manifest(records_dir(cfg))
    shown = gather(cfg, manifest, split, augmented=augmented, per_class=per_class)
    images, captions = panels(shown, manifest, is_labelled(manifest, split), example_paths(cfg), per_class)
    path = Path(output) if output is not None else default_path(cfg, split, augmented)
    title = title_of(cfg, manifest, split, augmented, len(shown) if is_labelled(manifest, split) else 0)
    return write_grid(images, captions, path, cols=per_class, title=title)
