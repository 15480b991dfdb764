"""The online augmenter's fast Keras paths equal the Keras layers bit for bit (kit.data.augment).

The flip applies ``keras.layers.RandomFlip``'s own random draw with a row ``Select``; CutMix pastes the box of
``keras.layers.CutMix``'s own transformation with an exact 0/1 blend and counts labels from it. Each is run
against the slow reference (the layer itself; the layer on images plus a source-index channel) with fresh
layers of the same seed, so both draw the same random numbers.
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
    fast = tf.function(fast_aug._cutmix_keras)
    slow = tf.function(slow_aug._cutmix_tagged)  # the layer on images + a source-index channel
    mixed = 0
    for _ in range(4):
        (ours, our_labels), (theirs, their_labels) = fast(images, labels), slow(images, labels)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
        np.testing.assert_array_equal(our_labels.numpy(), their_labels.numpy())
        mixed += int(not np.array_equal(our_labels.numpy(), labels.numpy()))
    assert mixed


def test_full_keras_augmenter_in_tf_data_is_in_range_with_exact_label_sums() -> None:
    images, labels = batch(n=16)
    augment = build_online_augmenter(AugmentConfig(flip="horizontal", color_jitter=0.2, cutmix=1.0), 5)
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat(3).map(augment)
    for out_images, out_labels in dataset.as_numpy_iterator():
        assert out_images.dtype == np.float32 and out_images.shape == tuple(images.shape)
        assert out_images.min() >= 0.0 and out_images.max() <= 255.0
        np.testing.assert_allclose(out_labels.sum(axis=1), 1.0, atol=1e-6)
