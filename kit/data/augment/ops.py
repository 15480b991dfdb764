"""The pixel maths of augmentation, written once for numpy (offline) and TensorFlow (online).

Every function here is deterministic: it applies parameters that :mod:`kit.data.augment.draws` (online) or
:mod:`kit.data.augment.offline` (numpy) drew. Each takes an :class:`ArrayOps`, the handful of array
functions whose names differ between numpy and TensorFlow, so the reflect index, the shift, the colour
jitter, the CutMix box and the label mixing have a single definition. This module imports numpy only, so
the records workers (which never import TensorFlow) can use it.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ArrayOps:
    """The array functions the pixel maths uses. numpy and TensorFlow spell these differently; every other
    function used here (``cos``, ``sin``, ``sqrt``, ``einsum``, ``shape``, ``reshape``) has the same name and
    signature in both, and comes from ``module``."""

    module: Any
    where: Callable[..., Any]
    clip: Callable[..., Any]  # (x, low, high)
    mean: Callable[..., Any]  # (x, axis=, keepdims=)
    sum: Callable[..., Any]  # (x, axis=)
    reverse: Callable[[Any, int], Any]  # (x, axis)
    take: Callable[[Any, Any, int], Any]  # (x [B, ...], index [B, L], axis): per-image gather along axis
    gather: Callable[[Any, Any], Any]  # (x, index [B]): x[index] along the first axis
    arange: Callable[[Any], Any]
    cast: Callable[[Any, str], Any]


def _numpy_take(x: np.ndarray, index: np.ndarray, axis: int) -> np.ndarray:
    shape = [1] * x.ndim
    shape[0], shape[axis] = index.shape
    return np.take_along_axis(x, index.reshape(shape), axis=axis)


NUMPY = ArrayOps(
    module=np,
    where=np.where,
    clip=np.clip,
    mean=np.mean,
    sum=np.sum,
    reverse=np.flip,
    take=_numpy_take,
    gather=lambda x, index: np.take(x, index, axis=0),
    arange=np.arange,
    cast=lambda x, dtype: np.asarray(x).astype(dtype),
)


@functools.cache
def tensorflow_ops() -> ArrayOps:
    """The TensorFlow :class:`ArrayOps` (imports TensorFlow on first use)."""
    import tensorflow as tf

    return ArrayOps(
        module=tf,
        where=tf.where,
        clip=tf.clip_by_value,
        mean=tf.reduce_mean,
        sum=tf.reduce_sum,
        reverse=lambda x, axis: tf.reverse(x, [axis]),
        take=lambda x, index, axis: tf.gather(x, index, axis=axis, batch_dims=1),
        gather=tf.gather,
        arange=tf.range,
        cast=tf.cast,
    )


# --------------------------------------------------------------------------------------------------
# Flips and whole-pixel shifts
# --------------------------------------------------------------------------------------------------


def flip(x: Any, flips: Any, axis: int, ops: ArrayOps) -> Any:
    """Images [B, H, W, C] reversed along ``axis`` (1: vertical, 2: horizontal) where ``flips[b]``."""
    return ops.where(flips[:, None, None, None], ops.reverse(x, axis), x)


def reflect_index(index: Any, length: Any, ops: ArrayOps) -> Any:
    """Source positions for shifted positions, mirrored at the border like Keras' fill_mode="reflect" and
    OpenCV's BORDER_REFLECT (d c b a | a b c d | d c b a); valid for shifts of at most one side."""
    index = ops.where(index < 0, -index - 1, index)
    return ops.where(index >= length, 2 * length - index - 1, index)


def shift(x: Any, dy: Any, dx: Any, ops: ArrayOps) -> Any:
    """Shift image b of [B, H, W, C] by (dy[b], dx[b]) whole pixels, reflecting at the border: output row y
    is source row y - dy. Two per-image gathers (rows, then columns), which XLA fuses with what follows."""
    shape = ops.module.shape(x)
    rows = reflect_index(ops.arange(shape[1])[None, :] - dy[:, None], shape[1], ops)  # [B, H]
    cols = reflect_index(ops.arange(shape[2])[None, :] - dx[:, None], shape[2], ops)  # [B, W]
    return ops.take(ops.take(x, rows, 1), cols, 2)


# --------------------------------------------------------------------------------------------------
# Colour jitter: brightness and contrast as affine steps, saturation + hue as one colour matrix
# --------------------------------------------------------------------------------------------------

# RGB <-> YIQ (NTSC); Y is luma, (I, Q) the chroma plane that saturation scales and hue rotates.
RGB_TO_YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.59590059, -0.27455667, -0.32134392], [0.21153661, -0.52273617, 0.31119955]], np.float32
)
YIQ_TO_RGB = np.linalg.inv(RGB_TO_YIQ).astype(np.float32)


def jitter_ranges(strength: float) -> dict[str, tuple[float, float]]:
    """Sampling ranges of the four jitter parameters for strength ``s`` (0 = off).

    brightness: additive delta in [-s, s] of the value range; contrast: factor in [1-s, 1+s] around the
    per-channel mean; saturation: Keras' u in [0.5(1-s), 0.5(1+s)], mapped to the multiplier u/(1-u)
    (0.5 = unchanged); hue: Keras' RandomHue(s/4) factor, a shift of +-[0, s/4] half-turns of the colour
    circle (the sign drawn with equal odds, so the signed draw is uniform in [-s/4, s/4]).
    """
    s = float(strength)
    return {
        "brightness": (-s, s),
        "contrast": (1.0 - s, 1.0 + s),
        "saturation": (0.5 * (1.0 - s), 0.5 * (1.0 + s)),
        "hue": (0.0, s / 4.0),
    }


# The colour matrix is YIQ_TO_RGB @ [[1, 0, 0], [0, c, -s], [0, s, c]] @ RGB_TO_YIQ: the luma part stays, the
# chroma plane is scaled by c and turned by s. Written out, it is LUMA + c * CHROMA + s * TURN.
LUMA = np.outer(YIQ_TO_RGB[:, 0], RGB_TO_YIQ[0])
CHROMA = np.outer(YIQ_TO_RGB[:, 1], RGB_TO_YIQ[1]) + np.outer(YIQ_TO_RGB[:, 2], RGB_TO_YIQ[2])
TURN = np.outer(YIQ_TO_RGB[:, 2], RGB_TO_YIQ[1]) - np.outer(YIQ_TO_RGB[:, 1], RGB_TO_YIQ[2])


def color_matrix(saturation_u: Any, hue: Any, ops: ArrayOps) -> Any:
    """[B] draws -> [B, 3, 3] RGB->RGB matrices scaling chroma by u/(1-u) and rotating hue by ``hue`` half-turns.

    Saturation scales the YIQ chroma (I, Q): the blend-with-luma definition of PIL ``ImageEnhance.Color`` and
    torchvision ``adjust_saturation``. Hue rotates it (the classic hue-rotation matrix, an approximation of an
    HSV hue shift). Grey pixels (no chroma) are fixed points of both.
    """
    xp = ops.module
    scale = ops.cast(saturation_u / (1.0 - saturation_u), "float32")
    angle = math.pi * ops.cast(hue, "float32")
    c, s = (scale * xp.cos(angle))[:, None, None], (scale * xp.sin(angle))[:, None, None]
    return c * CHROMA + s * TURN + LUMA


def jitter(x: Any, brightness: Any, contrast: Any, matrix: Any, ops: ArrayOps, *, fused: bool = False) -> Any:
    """Float images [B, H, W, 3] in 0..255 with per-image brightness delta [B], contrast factor [B] and colour
    matrix [B, 3, 3] applied, clipped to 0..255 after each step.

    ``fused`` (under XLA): the matrix as a broadcast multiply-add over the channel axis, which fuses with the
    steps around it; otherwise a batched einsum, the fast form for ops run one by one.
    """
    xp = ops.module
    x = ops.clip(x + brightness[:, None, None, None] * 255.0, 0.0, 255.0)
    mean = channel_means(x, ops, fused=fused)[:, None, None, :]
    x = ops.clip((x - mean) * contrast[:, None, None, None] + mean, 0.0, 255.0)
    x = color_mix(x, matrix[:, None, None, :, :], ops) if fused else xp.einsum("bhwc,bdc->bhwd", x, matrix)
    return ops.clip(x, 0.0, 255.0)


def color_mix(x: Any, matrix: Any, ops: ArrayOps) -> Any:
    """``x @ matrix^T`` over the channel axis, each output channel as three multiply-adds: one elementwise loop
    under XLA (a size-3 reduce is ~2x slower). ``matrix`` broadcasts against [..., 3, 3]."""
    r, g, b = x[..., 0:1], x[..., 1:2], x[..., 2:3]
    return ops.module.concat([r * matrix[..., d, 0:1] + g * matrix[..., d, 1:2] + b * matrix[..., d, 2:3] for d in range(3)], -1)


def channel_means(x: Any, ops: ArrayOps, *, fused: bool = False) -> Any:
    """Per-image channel means [B, 3] of images [B, H, W, 3].

    The mean over a [B, H*W, 3] view (XLA's CPU reduction over two spatial axes is ~2x slower). Under XLA
    (``fused``), when H*W is a known multiple of 16, the sums are taken over a [B, H*W/16, 48] view first and
    the 16 partial sums of each channel added after: a reduction whose kept axis is 48 wide vectorises, one
    3 wide does not (1.7x faster at 380 px; the same sum in another order, equal to float rounding).
    """
    xp = ops.module
    height, width, channels = (x.shape[1], x.shape[2], x.shape[3]) if fused else (None, None, None)
    pixels = height * width if height is not None and width is not None else None
    if fused and channels == 3 and pixels and pixels % 16 == 0:
        partial = ops.sum(xp.reshape(x, [-1, pixels // 16, 48]), axis=1)  # [B, 48]: 16 partial sums per channel
        return ops.sum(xp.reshape(partial, [-1, 16, 3]), axis=1) / float(pixels)
    shape = xp.shape(x)
    return ops.mean(xp.reshape(x, [-1, shape[1] * shape[2], shape[3]]), axis=1)


# --------------------------------------------------------------------------------------------------
# CutMix: the box (timm's rand_bbox), its clipped area (correct_lam), the paste; MixUp's blend; the labels
# --------------------------------------------------------------------------------------------------


def cutmix_box(lam: Any, center_y: Any, center_x: Any, height: Any, width: Any, ops: ArrayOps) -> tuple[Any, Any, Any, Any]:
    """The CutMix box ``(y0, y1, x0, x1)`` (half-open, int32, [B]) for kept fractions ``lam`` [B] and centres.

    As timm's ``rand_bbox``: sides ``int(side * sqrt(1 - lam))`` (Yun et al. 2019, eq. 2) around the centre,
    clipped at the border; the clipped box may be smaller than the nominal one, so the labels take the
    area actually pasted (:func:`box_masks`), as timm's ``cutmix_bbox_and_lam(correct_lam=True)``.
    """
    xp = ops.module
    ratio = xp.sqrt(1.0 - ops.cast(lam, "float32"))

    def bounds(center: Any, length: Any) -> tuple[Any, Any]:
        half = ops.cast(ops.cast(length, "float32") * ratio, "int32") // 2
        center = ops.cast(center, "int32")
        return ops.clip(center - half, 0, length), ops.clip(center + half, 0, length)

    y0, y1 = bounds(center_y, height)
    x0, x1 = bounds(center_x, width)
    return y0, y1, x0, x1


def box_masks(box: tuple[Any, Any, Any, Any], height: Any, width: Any, ops: ArrayOps) -> tuple[Any, Any]:
    """The box as 0/1 float32 row [B, H] and column [B, W] masks; their outer product is the pasted region and
    ``mean(rows) * mean(cols)`` its exact pixel fraction."""
    y0, y1, x0, x1 = box

    def inside(start: Any, end: Any, length: Any) -> Any:
        grid = ops.arange(length)[None, :]
        return ops.cast((grid >= start[:, None]) & (grid < end[:, None]), "float32")

    return inside(y0, y1, height), inside(x0, x1, width)


def paste(x: Any, partner: Any, rows: Any, cols: Any, ops: ArrayOps) -> Any:
    """``x * (1 - box) + x[partner] * box`` per image, for float images [B, H, W, C]: exact for a 0/1 box."""
    box = rows[:, :, None, None] * cols[:, None, :, None]
    return x * (1.0 - box) + ops.gather(x, partner) * box


def blend(x: Any, partner: Any, weight: Any, ops: ArrayOps) -> Any:
    """MixUp: ``(1 - w) * x + w * x[partner]`` per image, for float images [B, H, W, C] and weights ``w`` [B]
    in [0, 1] (Zhang et al. 2018); the labels take the same weights (:func:`mix_labels`)."""
    weight = ops.cast(weight, "float32")[:, None, None, None]
    return x * (1.0 - weight) + ops.gather(x, partner) * weight


def mix_labels(labels: Any, partner: Any, area: Any, ops: ArrayOps) -> Any:
    """Soft labels [B, C] mixed by the pasted fraction (CutMix) or the blend weight (MixUp) ``area`` [B]:
    ``(1 - a) * own + a * partner's``."""
    return (1.0 - area[:, None]) * labels + area[:, None] * ops.gather(labels, partner)
