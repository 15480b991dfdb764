"""Offline augmentation: one augmented copy of a numpy batch, as the records writer bakes it in.

numpy (+ OpenCV for a rotation) and :mod:`kit.data.augment.ops`, the same pixel maths as the online
augmenter; nothing here imports TensorFlow, since the records workers never do. The draws come from one
``np.random.Generator`` seeded per call, so a rebuilt shard is byte-identical.

The degradations (:mod:`kit.data.augment.degrade`) run first on the whole batch, erasing after the jitter, as online:
their uniforms come from a stream per row (seeded by ``(seed, 2, row)``), so turning one on leaves every other draw,
and the records without it, as they were. The pixel maths is the online maths; the result is rounded to uint8 before
the JPEG re-encoding (OpenCV) and after erasing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from kit.config.checks import check_ranges
from kit.config.symmetry import FLIP_AXES, HEIGHT, WIDTH
from kit.data.augment import degrade, ops
from kit.errors import KitError

if TYPE_CHECKING:
    from kit.config import AugmentConfig


def _augment_one(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Flip, rotate, shift and jitter one uint8 image; every random draw happens whether or not it is used,
    so the stream (and so every other image's augmentation) does not depend on earlier outcomes."""
    flip_h, flip_v, angle = rng.random() < 0.5, rng.random() < 0.5, rng.uniform(-1.0, 1.0)
    h, w = image.shape[:2]
    most_y, most_x = round(cfg.translate * h), round(cfg.translate * w)
    shift_y, shift_x = int(rng.integers(-most_y, most_y + 1)), int(rng.integers(-most_x, most_x + 1))
    out = image[None]  # a batch of one: the ops work on [B, H, W, C]
    flip_axes = FLIP_AXES[str(cfg.flip)]
    if WIDTH in flip_axes:
        out = ops.flip(out, np.array([flip_h]), WIDTH, ops.NUMPY)
    if HEIGHT in flip_axes:
        out = ops.flip(out, np.array([flip_v]), HEIGHT, ops.NUMPY)
    if cfg.rotation > 0:
        import cv2

        degrees = angle * cfg.rotation * 360.0  # Keras: factor is a fraction of 2*pi, angle in [-f, f]
        matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), degrees, 1.0)
        # BORDER_REFLECT matches Keras' fill_mode="reflect" (d c b a | a b c d | d c b a).
        image = np.ascontiguousarray(out[0])
        out = cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)[None]
    if shift_y or shift_x:
        out = ops.shift(out, np.array([shift_y]), np.array([shift_x]), ops.NUMPY)
    if cfg.color_jitter > 0:
        ranges = ops.jitter_ranges(cfg.color_jitter)
        brightness = rng.uniform(*ranges["brightness"], 1).astype(np.float32)
        contrast = rng.uniform(*ranges["contrast"], 1).astype(np.float32)
        saturation_u, hue = rng.uniform(*ranges["saturation"], 1), rng.uniform(-ranges["hue"][1], ranges["hue"][1], 1)
        matrix = ops.color_matrix(saturation_u, hue, ops.NUMPY)
        jittered = ops.jitter(out.astype(np.float32), brightness, contrast, matrix, ops.NUMPY)
        out = np.clip(np.rint(jittered), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out[0])


def _cutmix(
    base: np.ndarray, soft_labels: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """With probability ``cfg.cutmix`` per image, the box :func:`ops.cutmix_box` (lam ~ Beta(alpha, alpha),
    a uniform centre, clipped at the border) pasted from another image of the batch, never itself; labels
    mixed by the pasted pixel fraction, as online."""
    n, h, w = base.shape[:3]
    mixes = rng.random(n) < cfg.cutmix
    partner = rng.integers(0, n - 1, n)
    partner += partner >= np.arange(n)  # another image, never itself
    lam = rng.beta(cfg.cutmix_alpha, cfg.cutmix_alpha, n)
    center_y, center_x = rng.integers(0, h, n), rng.integers(0, w, n)
    box = ops.cutmix_box(lam, center_y, center_x, h, w, ops.NUMPY)
    rows, cols = ops.box_masks(box, h, w, ops.NUMPY)
    rows *= mixes[:, None]
    area = rows.mean(axis=1) * cols.mean(axis=1)
    images = ops.paste(base.astype(np.float32), partner, rows, cols, ops.NUMPY).astype(np.uint8)  # a 0/1 blend: exact
    return images, ops.mix_labels(soft_labels, partner, area, ops.NUMPY).astype(np.float32)


def _mixup_draws(n: int, cfg: AugmentConfig, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mixes [N] bool, partner [N], weight [N]) from a stream of their own (seeded by ``(seed, 1)``), so turning
    MixUp on leaves every other draw, and so the records without it, byte for byte as they were."""
    rng = np.random.default_rng((seed, 1))
    mixes = rng.random(n) < cfg.mixup
    partner = rng.integers(0, n - 1, n)
    partner += partner >= np.arange(n)  # another image, never itself
    weight = rng.beta(cfg.mixup_alpha, cfg.mixup_alpha, n) * mixes
    return mixes, partner, weight


def _degradation_draws(shape: tuple[int, ...], cfg: AugmentConfig, seed: int) -> dict[str, object]:
    """Each degradation that is on, drawn for a batch of ``shape`` [N, H, W, C] from its own stream: the uniforms and
    the per-pixel field as numpy arrays, mapped to parameters by the row, as :func:`kit.data.augment.draws.degradation`
    does online."""
    fields = {
        "normal": lambda rng: rng.standard_normal(shape, dtype=np.float32),
        "uniform": lambda rng: rng.random(shape, np.float32),
    }
    drawn = {}
    for row in degrade.chosen(cfg, degrade.ROWS):
        rng = np.random.default_rng((seed, 2, degrade.ROWS.index(row)))
        uniforms = rng.random((row.uniforms, shape[0]))
        field = fields[row.field](rng) if row.field else None
        drawn[row.name] = row.params(uniforms, getattr(cfg, row.name), getattr(cfg, row.parameter), *shape[1:3], field, ops.NUMPY)
    return drawn


def _degrade(images: np.ndarray, drawn: dict[str, object]) -> np.ndarray:
    """uint8 images with the drawn pixel degradations applied (rounded to uint8), then the drawn JPEG re-encodings."""
    pixel_rows = {name: params for name, params in drawn.items() if name != "jpeg"}
    if pixel_rows:
        degraded = degrade.apply_pixel_rows(images.astype(np.float32), pixel_rows, ops.NUMPY)
        images = np.clip(np.rint(degraded), 0, 255).astype(np.uint8)
    return degrade.reencode_numpy(images, drawn["jpeg"]) if "jpeg" in drawn else images


def offline_augment(images: np.ndarray, soft_labels: np.ndarray, cfg: AugmentConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One augmented copy of a batch, as baked into the records in offline mode.

    Each image is degraded (:mod:`kit.data.augment.degrade`, each row with its probability), flipped/rotated/shifted/
    jittered and erased (``cfg.erase``); then, with probability ``cfg.cutmix`` per image, a box from
    another (augmented, unmixed) image of the batch is pasted in and the soft label becomes
    ``(1 - a) * own + a * other`` with ``a`` the exact pasted pixel fraction. With probability ``cfg.mixup``
    per image it is instead blended with another one, ``(1 - w) * own + w * other`` for pixels (rounded to
    uint8) and labels alike, ``w ~ Beta(mixup_alpha, mixup_alpha)``. Deterministic for ``seed``.

    Args:
        images: uint8 [N, H, W, 3].
        soft_labels: float [N, C], one-hot or soft, rows summing to 1.
    Returns:
        (uint8 [N, H, W, 3], float32 [N, C]).
    """
    check_ranges(cfg, "augment.")  # a config edited in Python never passed load_config's checks
    images = np.asarray(images)
    soft_labels = np.asarray(soft_labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise KitError(
            f"offline_augment needs uint8 images [N, H, W, 3], got {images.dtype} {images.shape}", "pass decoded RGB images"
        )
    if soft_labels.ndim != 2 or soft_labels.shape[0] != images.shape[0] or not np.issubdtype(soft_labels.dtype, np.floating):
        raise KitError(
            f"offline_augment needs float soft labels [{images.shape[0]}, C], got {soft_labels.dtype} {soft_labels.shape}",
            "one-hot encode the class indices, e.g. np.eye(C, dtype=np.float32)[labels]",
        )
    rng = np.random.default_rng(seed)
    n = images.shape[0]
    drawn = _degradation_draws(images.shape, cfg, seed) if n else {}
    erasing = drawn.pop(degrade.ERASING.name, None)
    images = _degrade(images, drawn) if drawn else images
    base = np.stack([_augment_one(image, cfg, rng) for image in images]) if n else images.copy()
    if erasing is not None:  # a 0/1 box filled with whole grey levels: exact in uint8
        base = degrade.ERASING.apply(base.astype(np.float32), erasing, ops.NUMPY).astype(np.uint8)
    labels = soft_labels.astype(np.float32, copy=True)
    out_images, out_labels = base, labels
    if cfg.cutmix > 0 and n > 1:
        out_images, out_labels = _cutmix(base, labels, cfg, rng)
    if cfg.mixup > 0 and n > 1:
        # MixUp blends two augmented, unmixed images; an image MixUped is not CutMixed too (timm switches too).
        mixes, partner, weight = _mixup_draws(n, cfg, seed)
        blended = ops.blend(base.astype(np.float32), partner, weight, ops.NUMPY)
        out_images = np.where(mixes[:, None, None, None], np.clip(np.rint(blended), 0, 255).astype(np.uint8), out_images)
        mixed_labels = ops.mix_labels(labels, partner, weight, ops.NUMPY).astype(np.float32)
        out_labels = np.where(mixes[:, None], mixed_labels, out_labels)
    return out_images, out_labels
