"""Resize policies (``data.resize``): how the records store an image, and how training and inference cut it to the
model's size S. One row of :data:`POLICIES` a policy; nothing else in kit branches on the policy's name.

======== =============================================== ====================== ==================================
policy   records hold                                     training takes         validation / test / predict take
======== =============================================== ====================== ==================================
stretch  S x S, aspect ratio ignored (kit's default)      the stored image       the stored image
pad      S x S letterbox: longer side to S, black bars    the stored image       the stored image
crop     native size, longer side shrunk to data.max_side a random S x S crop    the centre S x S crop, or the mean
         when above it (never enlarged); shapes vary      (augment.crop_min_scale over ``predict.crops`` = k x k
         (``stored_height``/``stored_width`` per example)  for a resized crop)    crops on a grid over the image
======== =============================================== ====================== ==================================

Why: stretching a 768x512 photo to 224 px averages away the high-frequency traces an AI-image detector needs
(DESIGN.md); crops keep every pixel at the resolution the camera or generator wrote it, and the grid at inference
sees the whole image. ``pad`` keeps the proportions at the model's size (no distortion) at the cost of bars.

A window that reaches past the image's border (an image smaller than S, or S past its edge) is filled by
mirroring the image, edge pixel repeated (numpy's ``symmetric`` mode), for any amount of padding: constant padding
would give small images a border that a model could learn as a size shortcut.

``patch`` (native-resolution patches, the whole covering grid at inference) is not a policy of its own: it is
``crop`` with ``predict.crops=k*k``, k = ceil(data.max_side / S).

The cutting runs in TensorFlow (the input pipeline, on single images in eager mode too, e.g. before an exported
model); the storing in numpy and OpenCV (the records workers never import TensorFlow).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kit.data import schema
from kit.data.images import resize
from kit.errors import KitError

if TYPE_CHECKING:
    from kit.config import Config


def letterbox(image: np.ndarray, size: int, max_side: int) -> np.ndarray:
    """uint8 (size, size, 3): the image scaled so its longer side is ``size``, centred on black (``max_side`` unused)."""
    height, width = image.shape[:2]
    scale = size / max(height, width)
    inner = (max(1, min(size, round(height * scale))), max(1, min(size, round(width * scale))))
    out = np.zeros((size, size, 3), np.uint8)
    top, left = (size - inner[0]) // 2, (size - inner[1]) // 2
    out[top : top + inner[0], left : left + inner[1]] = resize(image, inner)
    return out


def within_max_side(image: np.ndarray, size: int, max_side: int) -> np.ndarray:
    """The image as it is, or shrunk (aspect ratio kept) so that its longer side is ``max_side``; never enlarged."""
    height, width = image.shape[:2]
    if max(height, width) <= max_side:
        return np.ascontiguousarray(image)
    scale = max_side / max(height, width)
    return resize(image, (max(1, round(height * scale)), max(1, round(width * scale))))


@dataclass(frozen=True)
class Policy:
    """One resize policy: how the records store an image and whether they keep its native size."""

    store: Callable[[np.ndarray, int, int], np.ndarray]  # (decoded image, model size S, data.max_side) -> stored image
    native: bool  # records keep native sizes (shapes vary): training crops at random, inference a centre/grid crop
    folder: str  # the records' size folder: stretch keeps the plain size it had before policies
    words: str  # what the model sees, for kit show and export.json


POLICIES: dict[str, Policy] = {
    "stretch": Policy(
        lambda image, size, _: resize(image, size), False, "{size}", "stretched to {size} px (aspect ratio ignored)"
    ),
    "pad": Policy(letterbox, False, "{size}-pad", "letterboxed to {size} px (black bars, aspect ratio kept)"),
    "crop": Policy(
        within_max_side, True, "{size}-crop{max_side}", "{size} px crops at native resolution (records up to {max_side} px)"
    ),
}


DEFAULT = "stretch"  # data.resize's default (kit.config.schema), whose folder is the plain size


def policy_of(name: str) -> Policy:
    if str(name) not in POLICIES:
        raise KitError(f"data.resize={name} is not a resize policy", f"use one of: {', '.join(POLICIES)}")
    return POLICIES[str(name)]


def stored_side(cfg: Config) -> int:
    """The longest side a record's image may have: the model's size, or data.max_side for native-size records."""
    return int(cfg.data.max_side) if policy_of(cfg.data.resize).native else int(cfg.model.image_size)


def folder_name(cfg: Config) -> str:
    """The records' size folder: ``224`` (stretch, as before policies), ``224-pad``, ``224-crop768``; so records of two
    policies (or two max_sides) never replace each other."""
    return policy_of(cfg.data.resize).folder.format(size=cfg.model.image_size, max_side=cfg.data.max_side)


def folder_settings(folder: str) -> tuple[str, str]:
    """The image size and the resize settings a size folder's name stands for (the inverse of :func:`folder_name`)."""
    for name, policy in POLICIES.items():
        pattern = re.escape(policy.folder).replace(r"\{size\}", r"(?P<size>\d+)").replace(r"\{max_side\}", r"(?P<max_side>\d+)")
        if match := re.fullmatch(pattern, folder):
            words = [] if name == DEFAULT else [f"data.resize={name}"]  # the default goes without saying
            words += [f"data.max_side={match['max_side']}"] if "max_side" in match.groupdict() else []
            return match["size"], " ".join(words)
    return folder, ""


def describe(cfg: Config) -> str:
    """What the model sees under the policy, in words."""
    return policy_of(cfg.data.resize).words.format(size=cfg.model.image_size, max_side=cfg.data.max_side)


def grid_side(crops: int) -> int:
    """k of predict.crops = k x k."""
    return math.isqrt(int(crops))


def check_resize(cfg: Config) -> None:
    """The combinations of the resize settings that cannot work, each a one-line KitError."""
    policy, size, crops = policy_of(cfg.data.resize), int(cfg.model.image_size), int(cfg.predict.crops)
    if grid_side(crops) ** 2 != crops:
        below = grid_side(crops) ** 2
        raise KitError(
            f"predict.crops={crops} is not a square number (the crops form a k x k grid)",
            f"use predict.crops={below} or {(grid_side(crops) + 1) ** 2}",
        )
    if not policy.native:
        for key, value, off in (("predict.crops", crops, 1), ("augment.crop_min_scale", cfg.augment.crop_min_scale, 1.0)):
            if value != off:
                raise KitError(
                    f"{key}={value} needs records at native size; data.resize={cfg.data.resize} stores {size} px images",
                    f"set data.resize=crop, or drop {key}",
                )
        return
    if cfg.data.max_side < size:
        raise KitError(
            f"data.max_side={cfg.data.max_side} is below model.image_size={size}: every crop would be mostly padding",
            f"set data.max_side to at least {size} (e.g. 768)",
        )
    if str(cfg.augment.mode) == "offline":
        raise KitError(
            f"augment.mode=offline needs images of one size; data.resize={cfg.data.resize} keeps native sizes",
            "use augment.mode=online",
        )


# --- cutting (TensorFlow) -----------------------------------------------------------------------------------


def mirrored(index: Any, length: Any) -> Any:
    """Positions ``index`` (any integers) folded into 0..length-1 by mirroring, edge repeated: ..1 0 | 0 1 .. n-1 | n-1.."""
    import tensorflow as tf

    period = 2 * length
    folded = tf.math.floormod(index, period)
    return tf.where(folded < length, folded, period - 1 - folded)


def window(image: Any, top: Any, left: Any, side: Any) -> Any:
    """The ``side`` x ``side`` window of ``image`` [H, W, 3] at (top, left), mirrored past the border."""
    import tensorflow as tf

    shape = tf.shape(image)
    rows = mirrored(top + tf.range(side), shape[0])
    cols = mirrored(left + tf.range(side), shape[1])
    return tf.gather(tf.gather(image, rows, axis=0), cols, axis=1)


def offsets(length: Any, size: int, count: int) -> Any:
    """``count`` window starts along a side of ``length``: the centre for one; else spread from one edge to the other
    (the first at 0, the last at length - size); all centred when the side is no longer than the window."""
    import tensorflow as tf

    slack = tf.cast(length, tf.int32) - size
    centre = tf.fill([count], tf.math.floordiv(slack, 2))
    if count == 1:
        return centre
    spread = tf.math.floordiv(slack * tf.range(count), count - 1)
    return tf.where(slack > 0, spread, centre)


def grid_crops(image: Any, size: int, crops: int = 1) -> Any:
    """uint8 [crops, size, size, 3]: the k x k grid of ``size`` crops over ``image`` [H, W, 3], row by row (one: the
    centre crop)."""
    import tensorflow as tf

    side = grid_side(crops)
    shape = tf.shape(image)
    tops, lefts = offsets(shape[0], size, side), offsets(shape[1], size, side)
    cut = [window(image, tops[i], lefts[j], size) for i in range(side) for j in range(side)]
    return tf.ensure_shape(tf.stack(cut), [crops, size, size, 3])


def random_crop(image: Any, size: int, seed: Any, min_scale: float = 1.0) -> Any:
    """uint8 [size, size, 3]: a random crop of ``image`` [H, W, 3] drawn from ``seed`` [2] (stateless: the same seed,
    the same crop). ``min_scale`` < 1: the crop is a fraction in [min_scale, 1] of a larger square window's area
    (the window at most the image's shorter side), shrunk to ``size`` with area averaging."""
    import tensorflow as tf

    seed_scale, seed_top, seed_left = tf.unstack(tf.random.experimental.stateless_split(seed, 3))
    shape = tf.shape(image)
    side = tf.constant(size)
    if min_scale < 1.0:
        area = tf.random.stateless_uniform([], seed_scale, minval=min_scale, maxval=1.0)
        wanted = tf.cast(tf.round(size / tf.sqrt(area)), tf.int32)
        side = tf.minimum(wanted, tf.maximum(size, tf.minimum(shape[0], shape[1])))

    def start(length: Any, draw_seed: Any) -> Any:
        slack = length - side
        low, high = tf.minimum(slack, 0), tf.maximum(slack, 0)
        return tf.random.stateless_uniform([], draw_seed, minval=low, maxval=high + 1, dtype=tf.int32)

    crop = window(image, start(shape[0], seed_top), start(shape[1], seed_left), side)
    if min_scale < 1.0:
        crop = tf.image.resize(crop, [size, size], method="area")
        crop = tf.cast(tf.clip_by_value(tf.round(crop), 0, 255), tf.uint8)
    return tf.ensure_shape(crop, [size, size, 3])


class Cutter:
    """Parsed examples of native-size records -> uint8 [B, S, S, 3] crops (training: random; else the centre) or,
    with ``crops`` > 1, [B, crops, S, S, 3] grids. A training batch's crops are drawn from the seed (``seed``, the
    batch's number), split into one per image: the same seed and batch number give the same crops."""

    def __init__(self, size: int, image_format: str, *, training: bool, seed: int, min_scale: float = 1.0, crops: int = 1):
        self.size, self.image_format, self.training, self.min_scale, self.crops = size, image_format, training, min_scale, crops
        self.seed = int(seed)

    def __call__(self, parsed: dict, number: Any) -> Any:
        import tensorflow as tf

        data, heights, widths = parsed["image"], parsed["stored_height"], parsed["stored_width"]
        count = tf.shape(data)[0]
        if self.training:
            batch_seed = tf.stack([tf.constant(self.seed, tf.int64), tf.cast(number, tf.int64)])
            seeds = tf.random.experimental.stateless_split(batch_seed, count)
            shape = [self.size, self.size, 3]
        else:
            seeds = tf.zeros([count, 2], tf.int64)
            shape = [self.size, self.size, 3] if self.crops == 1 else [self.crops, self.size, self.size, 3]

        def cut(item: tuple[Any, Any, Any, Any]) -> Any:
            one, height, width, seed = item
            image = schema.decode_stored(one, self.image_format, tf.cast(height, tf.int32), tf.cast(width, tf.int32))
            if self.training:
                return random_crop(image, self.size, seed, self.min_scale)
            crops = grid_crops(image, self.size, self.crops)
            return crops[0] if self.crops == 1 else crops

        return tf.map_fn(
            cut,
            (data, heights, widths, tf.cast(seeds, tf.int64)),
            fn_output_signature=tf.TensorSpec(shape, tf.uint8),
            parallel_iterations=16,
        )
