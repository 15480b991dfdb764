"""The degradations AI-image detection trains with: random resized crop, down-then-up resampling, Gaussian blur,
Gaussian noise, JPEG re-encoding and random erasing, each a row of :data:`DEGRADATIONS` (erasing: :data:`ERASING`).

Why: a detector finds what separates its two classes most cheaply, and in collected data that is often how the files
were made (real photos stored as JPEG, generated images as PNG at one size: GenImage's bias study) rather than the
generator's own traces. Applied to both classes alike, at random, these degradations make compression, sharpness,
noise and resampling say nothing about the label, so the model has to learn from what they leave intact; they also
make it robust to the re-encoding and resizing a test image went through.

Each row is one pair of :class:`~kit.config.AugmentConfig` settings: a probability per image (0, the default, turns
it off and the augmenter does not change) and the far end of its parameter's range, whose other end leaves the image
as it was. Where each setting comes from:

- ``resized_crop`` / ``resized_crop_min_scale``: random resized crop, C. Szegedy et al. "Going Deeper with
  Convolutions", CVPR 2015 (crops of 8%-100% of the area, aspect ratio in [3/4, 4/3]); torchvision's
  ``RandomResizedCrop(scale=(0.08, 1.0), ratio=(3/4, 4/3))``. The crop is stretched back to the image's size.
- ``resample`` / ``resample_min_scale``: shrink by a factor uniform in [min_scale, 1] and enlarge back, linear
  interpolation without antialiasing. Upsampling leaves periodic spectral traces (J. Frank et al. "Leveraging
  Frequency Analysis for Deep Fake Image Recognition", ICML 2020; R. Durall et al. "Watch your Up-Convolution",
  CVPR 2020); resampling both classes teaches the model that a benign resize is not such a trace.
- ``blur`` / ``blur_max_sigma`` and ``jpeg`` / ``jpeg_min_quality``: S.-Y. Wang et al. "CNN-generated images are
  surprisingly easy to spot... for now", CVPR 2020: blur with sigma uniform in [0, 3] and JPEG at a quality uniform
  in {30..100}, each with probability 0.5 ("Blur+JPEG (0.5)") or 0.1; their code, CNNDetection: ``--blur_sig 0.0,3.0
  --jpg_qual 30,100``.
- ``noise`` / ``noise_max_std``: additive Gaussian noise, std uniform in [0, max] grey levels of 0..255, per pixel
  and channel; E. Rusak et al. "A simple way to make neural networks robust against diverse image corruptions",
  ECCV 2020 (Gaussian-noise training). The default range (up to 10 levels, sensor-like noise) is kit's choice.
- ``erase`` / ``erase_max_area``: random erasing, Z. Zhong et al. "Random Erasing Data Augmentation", AAAI 2020:
  a box of area [0.02, max] of the image (the paper's s_l = 0.02, s_h = 0.4), aspect ratio in [0.3, 1/0.3], filled
  with random pixel values (the paper's best fill), probability 0.5 in the paper; after the colour jitter.

Order (online and offline alike): crop, resample, blur, noise, JPEG (the re-encoding last, as an image meets it
on its way to a dataset), then the flips, shifts and colour jitter, then erasing, then CutMix/MixUp. The pixel maths
below is written once for numpy and TensorFlow (:class:`~kit.data.augment.ops.ArrayOps`) and agrees with OpenCV
(``resize`` INTER_LINEAR, ``GaussianBlur`` BORDER_REFLECT; tested). The draws are uniforms mapped to parameters by
each row's ``params``, so :mod:`~kit.data.augment.draws` (online) and :mod:`~kit.data.augment.offline` (numpy)
differ only in where the uniforms come from. JPEG is a codec, not maths: ``tf.image.adjust_jpeg_quality`` per image
online (a CPU op on one image, outside the XLA kernel), OpenCV offline.

keras-cv has layers for three of these, but kit does not use them on its keras-cv path: ``RandomJpegQuality`` hands
kit's 0..255 float pixels to ``tf.image.adjust_jpeg_quality``, which reads floats as 0..1 (every image comes back
in 0..1); ``RandomGaussianBlur`` pads with zeros (a dark frame, a trace of its own); ``RandomCutout`` draws sides,
not Zhong et al.'s area and aspect ratio. Both libraries run the rows below.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kit.data.augment import ops as array_ops
from kit.data.augment.ops import ArrayOps

if TYPE_CHECKING:
    from kit.config import AugmentConfig

CROP_RATIOS = (3.0 / 4.0, 4.0 / 3.0)  # Szegedy et al. 2015; torchvision RandomResizedCrop(ratio=(3/4, 4/3))
ERASE_MIN_AREA = 0.02  # Zhong et al. 2020: s_l
ERASE_RATIOS = (0.3, 1.0 / 0.3)  # Zhong et al. 2020: r_1 = 0.3, ratios in [r_1, 1/r_1]
BLUR_TRUNCATE = 3.0  # taps to 3 sigma each side: OpenCV's kernel size for 8-bit images (getGaussianKernel)
BEST_JPEG_QUALITY = 100


# --------------------------------------------------------------------------------------------------
# The pixel maths, numpy and TensorFlow alike
# --------------------------------------------------------------------------------------------------


def blur_radius(max_sigma: float) -> int:
    """Taps each side of the blur kernel for sigmas up to ``max_sigma`` (one size for every image of a batch)."""
    return max(1, math.ceil(BLUR_TRUNCATE * float(max_sigma)))


def resample_axis(x: Any, coords: Any, axis: int, ops: ArrayOps, low: Any = 0.0, high: Any = None) -> Any:
    """Images [B, H, W, C] sampled along ``axis`` (1: rows, 2: columns) at per-image float positions ``coords``
    [B, L] by linear interpolation between the two nearest pixels. Positions are clamped to [low, high] (each [B], or
    the image's first and last pixel), as OpenCV's INTER_LINEAR and ``tf.image.resize(antialias=False)`` clamp at the
    border of what they resize."""
    xp = ops.module
    last = ops.cast(xp.shape(x)[axis] - 1, "float32")
    top = last if high is None else xp.minimum(ops.cast(high, "float32"), last)[:, None]
    bottom = low if isinstance(low, float) else ops.cast(low, "float32")[:, None]
    coords = xp.maximum(xp.minimum(ops.cast(coords, "float32"), top), bottom)
    below = xp.floor(coords)
    weight = coords - below
    low_index = ops.cast(below, "int32")
    high_index = xp.minimum(low_index + 1, ops.cast(last, "int32"))
    lower, upper = ops.take(x, low_index, axis), ops.take(x, high_index, axis)
    weight = weight[:, :, None, None] if axis == 1 else weight[:, None, :, None]
    return lower + (upper - lower) * weight


def pixel_centres(start: Any, step: Any, length: Any, ops: ArrayOps) -> Any:
    """Source positions [B, length] of ``length`` output pixels, each ``step`` [B] source pixels apart from ``start``
    [B], half-pixel centres as in OpenCV and ``tf.image.resize``: output i samples start + (i + 0.5) * step - 0.5.
    ``start=0, step=1`` gives 0, 1, 2, ... exactly (the identity)."""
    centres = ops.cast(ops.arange(length), "float32")[None, :] + 0.5
    return ops.cast(start, "float32")[:, None] + centres * ops.cast(step, "float32")[:, None] - 0.5


def resized_crop(x: Any, box: tuple[Any, Any, Any, Any], ops: ArrayOps) -> Any:
    """Random resized crop: the box ``(top, left, height, width)`` (each [B], whole pixels) of each image cut out and
    stretched back to the image's size by linear interpolation, as OpenCV's ``resize`` of the cut-out (torchvision's
    ``resized_crop``). The whole image as the box leaves the image as it was."""
    top, left, height, width = (ops.cast(value, "float32") for value in box)
    shape = ops.module.shape(x)
    for axis, start, extent in ((1, top, height), (2, left, width)):
        step = extent / ops.cast(shape[axis], "float32")
        x = resample_axis(x, pixel_centres(start, step, shape[axis], ops), axis, ops, low=start, high=start + extent - 1.0)
    return x


def down_up(x: Any, scale: Any, ops: ArrayOps) -> Any:
    """Each image shrunk by ``scale`` [B] (in (0, 1]; its sides rounded, at least 1 pixel) and enlarged back, both by
    linear interpolation without antialiasing (OpenCV INTER_LINEAR): the resampling trace of an image that was made or
    stored smaller and upscaled. The small image is held at the full size (its first rows and columns used), so every
    image of a batch keeps one shape; ``scale=1`` leaves the image as it was."""
    xp = ops.module
    shape = xp.shape(x)
    for axis in (1, 2):
        length = ops.cast(shape[axis], "float32")
        small = xp.maximum(xp.round(ops.cast(scale, "float32") * length), 1.0)  # [B] pixels of the small side
        x = resample_axis(x, pixel_centres(small * 0.0, length / small, shape[axis], ops), axis, ops)  # shrink
        x = resample_axis(x, pixel_centres(small * 0.0, small / length, shape[axis], ops), axis, ops, high=small - 1.0)
    return x


def gaussian_taps(sigma: Any, radius: int, ops: ArrayOps) -> Any:
    """Normalised Gaussian weights [B, 2 * radius + 1] for per-image ``sigma`` [B] (0: the identity tap)."""
    xp = ops.module
    offsets = ops.cast(ops.arange(2 * radius + 1), "float32") - float(radius)
    spread = xp.maximum(ops.cast(sigma, "float32"), 1e-6)[:, None]
    weights = xp.exp(-(offsets[None, :] ** 2) / (2.0 * spread**2))
    return weights / ops.sum(weights, axis=1)[:, None]


def blur(x: Any, sigma: Any, radius: int, ops: ArrayOps) -> Any:
    """Gaussian blur of each image [B, H, W, C] with its own ``sigma`` [B]: a separable convolution with
    :func:`gaussian_taps`, the border reflected (``d c b a | a b c d``, scipy's ``gaussian_filter`` default and
    OpenCV's BORDER_REFLECT). A sigma of 0 leaves the image as it was."""
    xp = ops.module
    taps = gaussian_taps(sigma, radius, ops)
    shape = xp.shape(x)
    batch = shape[0]
    for axis in (1, 2):
        length = shape[axis]
        index = array_ops.reflect_index(ops.arange(-radius, length + radius), length, ops)
        index = ops.clip(index, 0, length - 1)  # an image narrower than the kernel: edge pixels repeat beyond one reflection
        padded = ops.take(x, xp.reshape(index, [1, -1]) + xp.reshape(ops.arange(batch) * 0, [-1, 1]), axis)
        out = 0.0
        for k in range(2 * radius + 1):
            window = padded[:, k : k + length] if axis == 1 else padded[:, :, k : k + length]
            out = out + window * taps[:, k][:, None, None, None]
        x = out
    return x


def add_noise(x: Any, std: Any, field: Any) -> Any:
    """Additive Gaussian noise: ``x + std[b] * field`` with a standard normal ``field`` [B, H, W, C] (the caller
    clips to 0..255)."""
    return x + std[:, None, None, None] * field


def erase(x: Any, box: tuple[Any, Any, Any, Any], fill: Any, ops: ArrayOps) -> Any:
    """Random erasing (Zhong et al. 2020): the half-open box ``(y0, y1, x0, x1)`` (each [B]; empty: nothing erased)
    of each image replaced by ``fill`` [B, H, W, C] (random pixel values, the paper's best variant)."""
    shape = ops.module.shape(x)
    rows, cols = array_ops.box_masks(box, shape[1], shape[2], ops)
    inside = rows[:, :, None, None] * cols[:, None, :, None]
    return x * (1.0 - inside) + fill * inside


def area_box(
    uniforms: Any, areas: tuple[float, float], ratios: tuple[float, float], height: Any, width: Any, ops: ArrayOps
) -> Any:
    """A box per image from four uniforms in [0, 1) ``(area, ratio, top, left)`` (each [B]): its area a fraction of the
    image uniform in ``areas``, its aspect ratio (width / height) log-uniform in ``ratios``, its sides rounded to
    whole pixels and clipped to the image (the papers draw again until a box fits; clipping keeps one draw per
    image), placed uniformly. Returns ``(top, left, box_height, box_width)``, int32 [B] each."""
    xp = ops.module
    u_area, u_ratio, u_top, u_left = (ops.cast(u, "float32") for u in uniforms)
    rows, cols = ops.cast(height, "float32"), ops.cast(width, "float32")
    pixels = (areas[0] + (areas[1] - areas[0]) * u_area) * rows * cols
    ratio = xp.exp(math.log(ratios[0]) + (math.log(ratios[1]) - math.log(ratios[0])) * u_ratio)
    box_height = xp.minimum(xp.maximum(xp.round(xp.sqrt(pixels / ratio)), 1.0), rows)
    box_width = xp.minimum(xp.maximum(xp.round(xp.sqrt(pixels * ratio)), 1.0), cols)
    top = xp.floor(u_top * (rows - box_height + 1.0))
    left = xp.floor(u_left * (cols - box_width + 1.0))
    return tuple(ops.cast(value, "int32") for value in (top, left, box_height, box_width))


# --------------------------------------------------------------------------------------------------
# Uniforms -> parameters: each row's draw, whoever drew the uniforms ([k, B], in [0, 1); the first: degrade or not)
# --------------------------------------------------------------------------------------------------


def crop_params(u: Any, probability: float, min_scale: float, height: Any, width: Any, field: Any, ops: ArrayOps) -> Any:
    """The crop box ``(top, left, height, width)`` [B]: area in [min_scale, 1] of the image; the whole image when not drawn."""
    on = u[0] < probability
    box = area_box((u[1], u[2], u[3], u[4]), (min_scale, 1.0), CROP_RATIOS, height, width, ops)
    return tuple(ops.where(on, value, whole) for value, whole in zip(box, (0, 0, height, width), strict=True))


def resample_params(u: Any, probability: float, min_scale: float, height: Any, width: Any, field: Any, ops: ArrayOps) -> Any:
    """The scale [B], uniform in [min_scale, 1]; 1 when not drawn."""
    return ops.where(u[0] < probability, min_scale + (1.0 - min_scale) * ops.cast(u[1], "float32"), 1.0)


def blur_params(u: Any, probability: float, max_sigma: float, height: Any, width: Any, field: Any, ops: ArrayOps) -> Any:
    """(sigma [B] uniform in [0, max_sigma], 0 when not drawn; the kernel's radius for max_sigma)."""
    return ops.where(u[0] < probability, max_sigma * ops.cast(u[1], "float32"), 0.0), blur_radius(max_sigma)


def noise_params(u: Any, probability: float, max_std: float, height: Any, width: Any, field: Any, ops: ArrayOps) -> Any:
    """(std [B] uniform in [0, max_std], 0 when not drawn; the standard normal field [B, H, W, C])."""
    return ops.where(u[0] < probability, max_std * ops.cast(u[1], "float32"), 0.0), field


def jpeg_params(u: Any, probability: float, min_quality: int, height: Any, width: Any, field: Any, ops: ArrayOps) -> Any:
    """(whether [B], quality [B] int32 uniform in {min_quality .. 100})."""
    levels = BEST_JPEG_QUALITY + 1 - int(min_quality)
    return u[0] < probability, ops.cast(int(min_quality) + ops.module.floor(ops.cast(u[1], "float32") * levels), "int32")


def erase_params(u: Any, probability: float, max_area: float, height: Any, width: Any, field: Any, ops: ArrayOps) -> Any:
    """(the box ``(y0, y1, x0, x1)`` [B], empty when not drawn; the fill [B, H, W, C], whole grey levels 0..255)."""
    top, left, rows, cols = area_box((u[1], u[2], u[3], u[4]), (ERASE_MIN_AREA, max_area), ERASE_RATIOS, height, width, ops)
    rows = ops.where(u[0] < probability, rows, 0)
    return (top, top + rows, left, left + cols), ops.module.floor(ops.cast(field, "float32") * 256.0)


# --------------------------------------------------------------------------------------------------
# The rows
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Degradation:
    """One degradation: its two settings, what it draws and what it does."""

    name: str  # the AugmentConfig field holding the probability per image
    parameter: str  # the AugmentConfig field holding the far end of the parameter's range
    uniforms: int  # uniforms per image the draw needs (the first decides whether the image is degraded)
    field: str  # a per-pixel random field the draw needs: "normal" (standard), "uniform" ([0, 1)) or ""
    params: Callable[..., Any]  # (uniforms [k, B], probability, parameter, height, width, field, ops) -> params
    apply: Callable[..., Any] | None  # (float images [B, H, W, C], params, ops) -> images; None: the JPEG codec


DEGRADATIONS = (  # in the order they are applied; erasing comes after the colour jitter (ERASING)
    Degradation("resized_crop", "resized_crop_min_scale", 5, "", crop_params, resized_crop),
    Degradation("resample", "resample_min_scale", 2, "", resample_params, down_up),
    Degradation("blur", "blur_max_sigma", 2, "", blur_params, lambda x, params, ops: blur(x, *params, ops)),
    Degradation("noise", "noise_max_std", 2, "normal", noise_params, lambda x, params, ops: add_noise(x, *params)),
    Degradation("jpeg", "jpeg_min_quality", 2, "", jpeg_params, None),
)
ERASING = Degradation("erase", "erase_max_area", 5, "uniform", erase_params, lambda x, params, ops: erase(x, *params, ops))
ROWS = (*DEGRADATIONS, ERASING)  # a row's position here keys its random stream, whichever others are on


def chosen(cfg: AugmentConfig, rows: tuple[Degradation, ...] = DEGRADATIONS) -> list[Degradation]:
    """The rows ``cfg`` turns on (a probability above 0)."""
    return [row for row in rows if getattr(cfg, row.name) > 0]


def describe(cfg: AugmentConfig) -> list[str]:
    """The rows ``cfg`` turns on, as the augmenter's description names them: ``blur(p=0.5, blur_max_sigma=3.0)``."""
    return [f"{row.name}(p={getattr(cfg, row.name)}, {row.parameter}={getattr(cfg, row.parameter)})" for row in chosen(cfg, ROWS)]


def apply_pixel_rows(x: Any, drawn: dict[str, Any], ops: ArrayOps) -> Any:
    """Float images with every drawn row that is pixel maths applied, in the table's order (JPEG is not: a codec)."""
    for row in DEGRADATIONS:
        if row.apply is not None and row.name in drawn:
            x = row.apply(x, drawn[row.name], ops)
    return x


# --------------------------------------------------------------------------------------------------
# JPEG re-encoding: TensorFlow per image (online), OpenCV (offline)
# --------------------------------------------------------------------------------------------------


def reencode_tf(images: Any, drawn: tuple[Any, Any]) -> Any:
    """Float images [B, H, W, 3] in 0..255 with each drawn one rounded to uint8 and re-encoded as JPEG at its quality
    (``tf.image.adjust_jpeg_quality``, one image at a time: a CPU op on one image); the others as they were."""
    import tensorflow as tf

    on, quality = drawn

    def one(args: tuple[Any, Any, Any]) -> Any:
        image, degrade, level = args

        def encoded() -> Any:
            pixels = tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)
            return tf.cast(tf.image.adjust_jpeg_quality(pixels, level), tf.float32)

        return tf.cond(degrade, encoded, lambda: image)

    out = tf.map_fn(one, (tf.cast(images, tf.float32), on, quality), fn_output_signature=tf.float32)
    return tf.ensure_shape(out, images.shape)


def reencode_numpy(images: np.ndarray, drawn: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """uint8 images [N, H, W, 3] with each drawn one re-encoded as JPEG at its quality by OpenCV (libjpeg's 4:2:0
    chroma subsampling, as TensorFlow's encoder); the others as they were."""
    import cv2

    on, quality = drawn
    out = images.copy()
    for i in np.flatnonzero(on):
        ok, encoded = cv2.imencode(
            ".jpg", np.ascontiguousarray(images[i, :, :, ::-1]), [cv2.IMWRITE_JPEG_QUALITY, int(quality[i])]
        )
        if ok:
            out[i] = cv2.imdecode(encoded, cv2.IMREAD_COLOR)[:, :, ::-1]
    return out
