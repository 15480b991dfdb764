"""All the online augmenter's randomness: small pure functions of a seed tensor.

Each function takes ``seed``, an int32/int64 tensor of shape [2] (the online augmenter makes one per batch
with ``tf.random.Generator.make_seeds``), and draws with the ``tf.random.stateless_*`` ops, so the same
seed gives the same draw, in eager mode, in a graph and in tf.data alike, and nothing here holds state.
What is drawn is applied by :mod:`kit.data.augment.ops`; the split follows Keras' ``cut_mix.py``
(``get_random_transformation`` draws, ``transform_images`` applies) and timm's ``mixup.py`` (``rand_bbox``,
``cutmix_bbox_and_lam(correct_lam=True)``).

Imported by :mod:`kit.data.augment.online` only, inside its functions: TensorFlow loads with the first batch.
"""

from __future__ import annotations

from typing import Any

import tensorflow as tf

from kit.data.augment import ops
from kit.data.augment.degrade import Degradation


def split(seed: Any, count: int) -> list[Any]:
    """``count`` independent seeds [2] from one."""
    return list(tf.unstack(tf.random.experimental.stateless_split(seed, count)))


def fold(seed: Any, key: int) -> Any:
    """A seed [2] of its own for ``key``, independent of :func:`split`'s: a stream added later (a degradation) leaves
    every draw made from ``split(seed, n)`` as it was."""
    return tf.random.experimental.stateless_fold_in(seed, key)


def uniform(seed: Any, shape: Any, low: float | Any, high: float | Any, dtype: Any = tf.float32) -> Any:
    """Uniform in [low, high) (integers: [low, high - 1])."""
    return tf.random.stateless_uniform(shape, seed, minval=low, maxval=high, dtype=dtype)


def coin_flips(seed: Any, batch: Any) -> Any:
    """[B] booleans, each true with probability 1/2 (whether to flip an image)."""
    return uniform(seed, [batch], 0.0, 1.0) < 0.5


def shifts(seed: Any, batch: Any, height: Any, width: Any, fraction: float) -> tuple[Any, Any]:
    """Whole-pixel shifts (dy [B], dx [B]), uniform in [-round(fraction * side), round(fraction * side)]."""
    seed_y, seed_x = split(seed, 2)

    def draw(seed_axis: Any, length: Any) -> Any:
        most = tf.cast(tf.round(fraction * tf.cast(length, tf.float32)), tf.int32)
        return uniform(seed_axis, [batch], -most, most + 1, dtype=tf.int32)

    return draw(seed_y, height), draw(seed_x, width)


def jitter(seed: Any, batch: Any, strength: float) -> tuple[Any, Any, Any]:
    """Per-image jitter for a batch: brightness delta [B], contrast factor [B], colour matrix [B, 3, 3], drawn
    uniformly in :func:`ops.jitter_ranges` (the hue's sign with equal odds, so uniform in [-most, most])."""
    ranges = ops.jitter_ranges(strength)
    ranges["hue"] = (-ranges["hue"][1], ranges["hue"][1])
    names = ("brightness", "contrast", "saturation", "hue")
    low = tf.constant([ranges[name][0] for name in names])[:, None]
    high = tf.constant([ranges[name][1] for name in names])[:, None]
    # One [4, B] draw: one random op a batch instead of four.
    brightness, contrast, saturation_u, hue = tf.unstack(low + (high - low) * uniform(seed, [4, batch], 0.0, 1.0))
    return brightness, contrast, ops.color_matrix(saturation_u, hue, ops.tensorflow_ops())


def beta(seed: Any, shape: Any, alpha: float) -> Any:
    """Beta(alpha, alpha) samples as g1 / (g1 + g2) of two independent Gamma(alpha) draws (0 where both
    gammas underflow to 0, which a tiny alpha can do)."""
    g1, g2 = tf.unstack(tf.random.stateless_gamma(tf.concat([[2], shape], 0), seed, alpha=alpha))
    return tf.math.divide_no_nan(g1, g1 + g2)


def permutation(seed: Any, batch: Any) -> Any:
    """A uniformly random permutation of 0..batch-1 (int32 [B]); an image may map to itself."""
    return tf.cast(tf.argsort(uniform(seed, [batch], 0.0, 1.0)), tf.int32)


def cutmix(seed: Any, batch: Any, height: Any, width: Any, alpha: float, probability: float) -> tuple[Any, Any, Any, Any]:
    """One batch's CutMix: (partner [B], rows [B, H], cols [B, W], area [B]).

    Image b gets the box (row and column 0/1 masks) pasted from image ``partner[b]``; ``area[b]`` is the
    fraction of its pixels that changed, the weight of the partner's label. Per image, the kept fraction is
    lam ~ Beta(alpha, alpha) and the box :func:`ops.cutmix_box` around a uniform centre, clipped at the
    border; ``area`` counts the clipped box (timm's ``correct_lam``). A partner that is the image itself
    changes nothing and counts 0. With ``probability < 1`` the whole batch is mixed or not.
    """
    tf_ops = ops.tensorflow_ops()
    seed_lam, seed_y, seed_x, seed_perm, seed_apply = split(seed, 5)
    lam = beta(seed_lam, [batch], alpha)
    center_y = uniform(seed_y, [batch], 0, height, dtype=tf.int32)
    center_x = uniform(seed_x, [batch], 0, width, dtype=tf.int32)
    box = ops.cutmix_box(lam, center_y, center_x, height, width, tf_ops)
    rows, cols = ops.box_masks(box, height, width, tf_ops)
    partner = permutation(seed_perm, batch)
    mixes = tf.cast(tf.not_equal(partner, tf.range(batch)), tf.float32)
    if probability < 1.0:
        mixes *= tf.cast(uniform(seed_apply, [], 0.0, 1.0) < probability, tf.float32)
    rows *= mixes[:, None]
    area = tf.reduce_mean(rows, axis=1) * tf.reduce_mean(cols, axis=1)
    return partner, rows, cols, area


def mixup(seed: Any, batch: Any, alpha: float, probability: float) -> tuple[Any, Any, Any]:
    """One batch's MixUp: (partner [B], weight [B], applied []).

    Image b becomes ``(1 - weight[b]) * itself + weight[b] * image partner[b]``, the weight drawn per image
    from Beta(alpha, alpha) (Zhang et al. 2018; timm's ``elem`` mode), the partner from a random permutation.
    With ``probability < 1`` the whole batch is mixed or not: ``applied`` is 1.0 or 0.0 and the weights are 0
    on a batch left alone (a batch is MixUped or CutMixed, never both, as timm's ``Mixup`` switches).
    """
    seed_weight, seed_perm, seed_apply = split(seed, 3)
    weight = beta(seed_weight, [batch], alpha)
    partner = permutation(seed_perm, batch)
    applied = tf.constant(1.0)
    if probability < 1.0:
        applied = tf.cast(uniform(seed_apply, [], 0.0, 1.0) < probability, tf.float32)
    return partner, weight * applied, applied


def degradation(seed: Any, shape: Any, row: Degradation, probability: float, parameter: float) -> Any:
    """One batch's draw of a degradation row (:mod:`kit.data.augment.degrade`) for images of ``shape`` [B, H, W, C]:
    ``row.uniforms`` uniforms per image and, when the row needs one, a per-pixel field, mapped to the row's
    parameters by ``row.params`` (the same mapping the offline numpy draws use)."""
    seed_uniforms, seed_field = split(seed, 2)
    uniforms = uniform(seed_uniforms, [row.uniforms, shape[0]], 0.0, 1.0)
    fields = {
        "normal": lambda: tf.random.stateless_normal(shape, seed_field),
        "uniform": lambda: uniform(seed_field, shape, 0.0, 1.0),
    }
    field = fields[row.field]() if row.field else None
    return row.params(uniforms, probability, parameter, shape[1], shape[2], field, ops.tensorflow_ops())
