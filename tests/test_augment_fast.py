"""The online augmenter's fused Keras path equals the Keras layers bit for bit (kit.data.augment).

The XLA kernel applies ``keras.layers.RandomFlip``'s own random draw and pastes the box of
``keras.layers.CutMix``'s own draws with an exact 0/1 blend, counting labels from it. Each is run against
the slow reference (the layer itself; the layer on images plus a source-index channel) with fresh layers of
the same seed, so both draw the same random numbers. The kernel with and without XLA does the same maths.
"""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from kit.config import AugmentConfig
from kit.data.augment import FLIP_MODES, build_online_augmenter


def batch(n: int = 12, size: int = 16, classes: int = 5) -> tuple[tf.Tensor, tf.Tensor]:
    rng = np.random.default_rng(3)
    images = rng.integers(0, 256, (n, size, size, 3)).astype(np.float32)
    labels = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, n)]
    return tf.constant(images), tf.constant(labels)


@pytest.mark.parametrize("mode", ["horizontal", "vertical", "both"])
def test_fast_flip_equals_the_layer(mode: str) -> None:
    import keras

    images, labels = batch()
    augment = build_online_augmenter(AugmentConfig(flip=mode, seed=9), 5)
    layer = keras.layers.RandomFlip(mode=FLIP_MODES[mode], seed=9, dtype="float32")
    fast = tf.function(lambda x, y: augment(x, y)[0])
    slow = tf.function(lambda x: layer(x, training=True))
    flipped = 0
    for _ in range(4):  # successive draws of the same seed stream
        ours, theirs = fast(images, labels).numpy(), slow(images).numpy()
        np.testing.assert_array_equal(ours, theirs)
        flipped += int(not np.array_equal(ours, images.numpy()))
    assert flipped  # it does flip


@pytest.mark.parametrize("alpha", [1.0, 0.3])
def test_keras_cutmix_equals_the_tagged_layer_run(alpha: float) -> None:
    images, labels = batch()
    cfg = AugmentConfig(flip="none", cutmix=1.0, cutmix_alpha=alpha, seed=4)
    fast_aug, slow_aug = build_online_augmenter(cfg, 5), build_online_augmenter(cfg, 5)
    fast = tf.function(fast_aug)
    slow = tf.function(slow_aug._cutmix_tagged)  # the layer itself on images + a source-index channel
    mixed = 0
    for _ in range(4):
        (ours, our_labels), (theirs, their_labels) = fast(images, labels), slow(images, labels)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
        np.testing.assert_array_equal(our_labels.numpy(), their_labels.numpy())
        mixed += int(not np.array_equal(our_labels.numpy(), labels.numpy()))
    assert mixed


def test_xla_kernel_matches_plain_ops_and_takes_uint8() -> None:
    images, labels = batch(n=16)
    cfg = AugmentConfig(flip="horizontal", color_jitter=0.3, cutmix=1.0, seed=8)
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


def test_full_keras_augmenter_in_tf_data_is_in_range_with_exact_label_sums() -> None:
    images, labels = batch(n=16)
    augment = build_online_augmenter(AugmentConfig(flip="horizontal", color_jitter=0.2, cutmix=1.0), 5)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat(3).map(augment)
    for out_images, out_labels in dataset.as_numpy_iterator():
        assert out_images.dtype == np.float32 and out_images.shape == tuple(images.shape)
        assert out_images.min() >= 0.0 and out_images.max() <= 255.0
        np.testing.assert_allclose(out_labels.sum(axis=1), 1.0, atol=1e-6)
