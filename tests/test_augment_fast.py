"""The online augmenter's fused Keras-core path (kit.data.augment.online): flips only along the allowed axes,
the same seed gives the same batches, the CutMix paste is one rectangle whose pixel fraction is the label
weight, and the kernel with and without XLA does the same maths."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from kit.config import AugmentConfig
from kit.data.augment import build_online_augmenter

ALLOWED_FLIPS = {
    "horizontal": [(), (1,)],  # axes of one [H, W, C] image
    "vertical": [(), (0,)],
    "both": [(), (1,), (0,), (0, 1)],
}


def batch(n: int = 12, size: int = 16, classes: int = 5) -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (n, size, size, 3)).astype(np.float32)
    labels = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, n)]
    return tf.constant(images), tf.constant(labels)


@pytest.mark.slow
@pytest.mark.parametrize("jit", [True, False])
@pytest.mark.parametrize("mode", ["horizontal", "vertical", "both"])
def test_flips_only_along_the_allowed_axes(mode: str, jit: bool) -> None:
    images, labels = batch()
    augment = tf.function(build_online_augmenter(AugmentConfig(flip=mode, jit_compile=jit, seed=9), 5))
    seen = set()
    for _ in range(4):  # successive batches of the same seed stream
        out = augment(images, labels)[0].numpy()
        for source, got in zip(images.numpy(), out, strict=True):
            matches = [axes for axes in ALLOWED_FLIPS[mode] if np.array_equal(np.flip(source, axes) if axes else source, got)]
            assert matches, "an image came out as something other than an allowed flip of itself"
            seen.add(matches[0])
    assert seen == set(ALLOWED_FLIPS[mode])  # every allowed outcome happens, "both" flips each axis on its own draw


@pytest.mark.slow
def test_same_seed_same_batches_other_seed_other_batches() -> None:
    images, labels = batch()

    def run(seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
        cfg = AugmentConfig(flip="both", translate=0.2, color_jitter=0.3, cutmix=1.0, seed=seed)
        dataset = tf.data.Dataset.from_tensors((images, labels)).repeat(3).map(build_online_augmenter(cfg, 5))
        return list(dataset.as_numpy_iterator())

    first, again, other = run(4), run(4), run(5)
    for (x1, y1), (x2, y2) in zip(first, again, strict=True):
        np.testing.assert_array_equal(x1, x2)
        np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(first[0][0], first[1][0])  # successive batches draw anew
    assert not np.array_equal(first[0][0], other[0][0])


@pytest.mark.parametrize("alpha", [1.0, 0.3, 3.0])
def test_keras_cutmix_pastes_one_rectangle_weighted_by_its_pixels(alpha: float) -> None:
    n, size = 10, 16
    images = np.broadcast_to(np.arange(n, dtype=np.float32)[:, None, None, None] * 20.0, (n, size, size, 3))
    labels = np.eye(n, dtype=np.float32)
    augment = build_online_augmenter(AugmentConfig(flip="none", cutmix=1.0, cutmix_alpha=alpha, seed=1), n)
    mixed = 0
    for _ in range(3):
        out, out_labels = (t.numpy() for t in augment(tf.constant(images), tf.constant(labels)))
        for i in range(n):
            pasted = out[i, :, :, 0] != images[i, 0, 0, 0]
            if pasted.any():
                rows, cols = np.flatnonzero(pasted.any(axis=1)), np.flatnonzero(pasted.any(axis=0))
                assert pasted[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1].all()  # one filled rectangle
                partner = int(round(out[i][pasted][0, 0] / 20.0))
                assert partner != i and np.all(out[i][pasted] == images[partner, 0, 0])
                mixed += 1
            fraction = pasted.mean()
            np.testing.assert_allclose(out_labels[i, i], 1.0 - fraction, atol=1e-6)
            np.testing.assert_allclose(out_labels[i].sum(), 1.0, atol=1e-6)
    assert mixed


@pytest.mark.slow
def test_xla_kernel_matches_plain_ops_and_takes_uint8() -> None:
    images, labels = batch(n=16)
    cfg = AugmentConfig(flip="horizontal", translate=0.1, color_jitter=0.3, cutmix=1.0, seed=8)
    runs = {}
    for name, jit, pixels in [("xla", True, images), ("plain", False, images), ("uint8", True, tf.cast(images, tf.uint8))]:
        augment = build_online_augmenter(AugmentConfig(**{**cfg.__dict__, "jit_compile": jit}), 5)
        dataset = tf.data.Dataset.from_tensors((pixels, labels)).repeat(3).map(augment)
        runs[name] = list(dataset.as_numpy_iterator())
    for (xla_images, xla_labels), (plain_images, plain_labels), (u8_images, _) in zip(*runs.values(), strict=True):
        assert xla_images.dtype == u8_images.dtype == np.float32
        np.testing.assert_allclose(xla_images, plain_images, atol=0.02)  # float rounding only
        np.testing.assert_array_equal(xla_labels, plain_labels)
        np.testing.assert_array_equal(xla_images, u8_images)  # the batch's pixels were whole numbers already
    assert not np.allclose(runs["xla"][0][0], images.numpy())


@pytest.mark.slow
def test_full_keras_augmenter_in_tf_data_is_in_range_with_exact_label_sums() -> None:
    images, labels = batch(n=16)
    augment = build_online_augmenter(AugmentConfig(flip="horizontal", color_jitter=0.2, cutmix=1.0), 5)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat(3).map(augment)
    for out_images, out_labels in dataset.as_numpy_iterator():
        assert out_images.dtype == np.float32 and out_images.shape == tuple(images.shape)
        assert out_images.min() >= 0.0 and out_images.max() <= 255.0
        np.testing.assert_allclose(out_labels.sum(axis=1), 1.0, atol=1e-6)


def old_fused_jitter(x: tf.Tensor, brightness: tf.Tensor, contrast: tf.Tensor, matrix: tf.Tensor) -> tf.Tensor:
    """The fused jitter as it was before the 380 px speed-up: a plain mean over [B, H*W, 3] and the colour matrix
    as a broadcast multiply summed over a size-3 axis."""
    shape = tf.shape(x)
    x = tf.clip_by_value(x + brightness[:, None, None, None] * 255.0, 0.0, 255.0)
    mean = tf.reduce_mean(tf.reshape(x, [-1, shape[1] * shape[2], 3]), axis=1)[:, None, None, :]
    x = tf.clip_by_value((x - mean) * contrast[:, None, None, None] + mean, 0.0, 255.0)
    return tf.clip_by_value(tf.reduce_sum(x[..., None, :] * matrix[:, None, None, :, :], axis=-1), 0.0, 255.0)


@pytest.mark.slow
@pytest.mark.parametrize("size", [48, 38])  # 48*48 is a multiple of 16 (the wide reduction), 38*38 is not
def test_faster_fused_jitter_equals_the_old_ops_on_fixed_seeds(size: int) -> None:
    from kit.data.augment import draws, ops

    rng = np.random.default_rng(5)
    images = tf.constant(rng.integers(0, 256, (6, size, size, 3)).astype(np.float32))
    for seed in ([1, 2], [3, 4], [9, 1]):
        brightness, contrast, matrix = draws.jitter(tf.constant(seed), 6, 0.4)
        new = tf.function(lambda x, b, c, m: ops.jitter(x, b, c, m, ops.tensorflow_ops(), fused=True), jit_compile=True)
        old = tf.function(old_fused_jitter, jit_compile=True)
        got, want = new(images, brightness, contrast, matrix).numpy(), old(images, brightness, contrast, matrix).numpy()
        np.testing.assert_allclose(got, want, atol=0.01)  # float summation order only: 1/100 of a grey level
        assert np.abs(got - want).mean() < 1e-3
    means = ops.channel_means(images, ops.tensorflow_ops(), fused=True).numpy()
    np.testing.assert_allclose(means, images.numpy().astype(np.float64).mean(axis=(1, 2)), rtol=1e-5)


@pytest.mark.slow
def test_augmenter_with_faster_jitter_gives_the_same_batches_as_the_plain_ops() -> None:
    # The whole XLA augmenter (flip + jitter + CutMix) against the same augmenter run op by op (einsum jitter).
    images, labels = batch(n=16, size=32)
    cfg = AugmentConfig(flip="horizontal", color_jitter=0.2, cutmix=1.0, seed=21)
    runs = []
    for jit in (True, False):
        augment = build_online_augmenter(AugmentConfig(**{**cfg.__dict__, "jit_compile": jit}), 5)
        runs.append(
            list(tf.data.Dataset.from_tensors((tf.cast(images, tf.uint8), labels)).repeat(3).map(augment).as_numpy_iterator())
        )
    for (xla_images, xla_labels), (plain_images, plain_labels) in zip(*runs, strict=True):
        np.testing.assert_allclose(xla_images, plain_images, atol=0.01)
        np.testing.assert_array_equal(xla_labels, plain_labels)
