"""Augmentation: CutMix really mixes (both libraries, online and offline), labels follow the pasted area,
pixels stay in 0..255, everything-off is the identity, and wrong label shapes fail loudly."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import tensorflow as tf

from kit.config import AugmentConfig
from kit.data.augment import build_online_augmenter, offline_augment, ops
from kit.errors import KitError

SIZE = 16
LIBRARIES = ["keras", "keras_cv"]


def constant_batch(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Image i is one flat colour (unique per image) and belongs to class i (one-hot labels)."""
    colours = np.stack([np.arange(n) * 25 + 10, 250 - np.arange(n) * 25, (np.arange(n) * 97) % 256], axis=1)
    images = np.broadcast_to(colours[:, None, None, :], (n, SIZE, SIZE, 3)).astype(np.uint8)
    return images, np.eye(n, dtype=np.float32)


def colour_fractions(image: np.ndarray, colours: np.ndarray) -> np.ndarray:
    """Fraction of the image's pixels that carry each source image's colour."""
    pixels = image.reshape(-1, 3).astype(np.int64)
    return np.array([np.all(pixels == c, axis=1).mean() for c in colours.astype(np.int64)])


@pytest.mark.slow
@pytest.mark.parametrize("library", LIBRARIES)
def test_online_cutmix_mixes_by_pasted_area(library: str) -> None:
    n = 8
    images, labels = constant_batch(n)
    colours = images[:, 0, 0, :]
    cfg = AugmentConfig(library=library, flip="none", cutmix=1.0, cutmix_alpha=1.0, seed=3)
    augment = build_online_augmenter(cfg, num_classes=n)
    # Through tf.data.map, i.e. in graph mode as the pipeline runs it.
    dataset = tf.data.Dataset.from_tensors((images.astype(np.float32), labels)).repeat(3).map(augment)
    mixed_images = 0
    for out_images, out_labels in dataset.as_numpy_iterator():
        assert out_images.shape == images.shape and out_images.dtype == np.float32
        np.testing.assert_allclose(out_labels.sum(axis=1), 1.0, atol=1e-5)
        for image, label in zip(out_images, out_labels, strict=True):
            fractions = colour_fractions(image, colours)
            assert fractions.sum() == pytest.approx(1.0)  # every pixel comes from some source image
            mixed_images += int((fractions > 0).sum() == 2)
            # Labels follow the pixels exactly: the true pasted area, not the library's nominal box.
            np.testing.assert_allclose(label, fractions, atol=1e-5)
    assert mixed_images >= 3


@pytest.mark.slow
@pytest.mark.parametrize("library", LIBRARIES)
def test_online_flip_rotation_jitter_keep_shape_dtype_range(library: str) -> None:
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (4, SIZE, SIZE, 3)).astype(np.float32)
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 0]]
    cfg = AugmentConfig(library=library, flip="both", rotation=0.1, color_jitter=0.4, seed=1)
    out_images, out_labels = build_online_augmenter(cfg, 3)(tf.constant(images), tf.constant(labels))
    out_images = out_images.numpy()
    assert out_images.shape == images.shape and out_images.dtype == np.float32
    assert out_images.min() >= 0.0 and out_images.max() <= 255.0
    assert not np.array_equal(out_images, images)
    np.testing.assert_array_equal(out_labels.numpy(), labels)  # no CutMix: labels untouched


def test_online_everything_off_is_identity() -> None:
    images = np.random.default_rng(1).uniform(0, 255, (3, SIZE, SIZE, 3)).astype(np.float32)
    labels = np.eye(2, dtype=np.float32)[[0, 1, 1]]
    cfg = AugmentConfig(flip="none", rotation=0.0, color_jitter=0.0, cutmix=0.0)
    augment = build_online_augmenter(cfg, 2)
    out_images, out_labels = augment(tf.constant(images), tf.constant(labels))
    np.testing.assert_array_equal(out_images.numpy(), images)
    np.testing.assert_array_equal(out_labels.numpy(), labels)


@pytest.mark.parametrize(
    ("images_shape", "labels", "match"),
    [
        ((4, SIZE, SIZE, 3), np.array([0, 1, 0, 1], np.int64), "one-hot float labels"),  # class indices
        ((4, SIZE, SIZE, 3), np.eye(2, dtype=np.int32)[[0, 1, 0, 1]], "one-hot float labels"),  # int one-hot
        ((SIZE, SIZE, 3), np.array([0.0, 1.0], np.float32), "batched RGB images"),  # unbatched example
        ((4, SIZE, SIZE, 3), np.eye(3, dtype=np.float32)[[0, 1, 2, 0]], "built for 2 classes"),
    ],
)
def test_online_rejects_wrong_inputs(images_shape: tuple, labels: np.ndarray, match: str) -> None:
    augment = build_online_augmenter(AugmentConfig(cutmix=1.0), 2)
    with pytest.raises(KitError, match=match):
        augment(tf.zeros(images_shape), tf.constant(labels))


def test_config_errors_are_kit_errors() -> None:
    with pytest.raises(KitError, match="cutmix_alpha"):
        build_online_augmenter(AugmentConfig(cutmix=0.5, cutmix_alpha=0.0), 2)
    with pytest.raises(KitError, match="augment.translate"):
        offline_augment(np.zeros((1, SIZE, SIZE, 3), np.uint8), np.ones((1, 1), np.float32), AugmentConfig(translate=0.7), 0)


@pytest.mark.slow
def test_keras_cutmix_takes_any_positive_alpha() -> None:
    """kit draws Beta(alpha, alpha) itself (two gammas), so alpha > 1 works on Keras core as on keras-cv."""
    images, labels = constant_batch(8)
    augment = build_online_augmenter(AugmentConfig(flip="none", cutmix=1.0, cutmix_alpha=4.0, seed=2), 8)
    _, out_labels = augment(tf.constant(images), tf.constant(labels))
    np.testing.assert_allclose(out_labels.numpy().sum(axis=1), 1.0, atol=1e-6)
    assert not np.array_equal(out_labels.numpy(), labels)


def test_color_matrix_tf_matches_numpy_and_neutral_is_identity() -> None:
    neutral = ops.color_matrix(np.array([0.5]), np.array([0.0]), ops.NUMPY)[0]  # u = 0.5: saturation x1, no hue
    np.testing.assert_allclose(neutral, np.eye(3), atol=1e-5)
    u, hue = np.array([0.375, 0.583], np.float32), np.array([-0.06, 0.1], np.float32)
    batched = ops.color_matrix(tf.constant(u), tf.constant(hue), ops.tensorflow_ops()).numpy()
    np.testing.assert_allclose(batched, ops.color_matrix(u, hue, ops.NUMPY), atol=1e-5)
    grey = np.full(3, 100.0, np.float32)  # chroma-free pixels are unchanged by saturation and hue
    np.testing.assert_allclose(ops.color_matrix(np.array([0.63]), np.array([0.2]), ops.NUMPY)[0] @ grey, grey, atol=1e-3)


def test_offline_cutmix_labels_equal_pasted_fraction_exactly() -> None:
    n = 6
    images, labels = constant_batch(n)
    colours = images[:, 0, 0, :]
    cfg = AugmentConfig(flip="none", cutmix=1.0, cutmix_alpha=1.0)
    out_images, out_labels = offline_augment(images, labels, cfg, seed=7)
    assert out_images.dtype == np.uint8 and out_images.shape == images.shape
    assert out_labels.dtype == np.float32 and out_labels.shape == labels.shape
    np.testing.assert_allclose(out_labels.sum(axis=1), 1.0, atol=1e-6)
    mixed = 0
    for i in range(n):
        fractions = colour_fractions(out_images[i], colours)
        np.testing.assert_allclose(out_labels[i], fractions, atol=1e-6)
        assert fractions[i] > 0  # the image keeps part of itself; the pasted box never comes from itself
        mixed += int((fractions > 0).sum() == 2)
    assert mixed >= n // 2


def test_offline_deterministic_and_in_range() -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 1, 0]]
    cfg = AugmentConfig(flip="both", rotation=0.1, color_jitter=0.3, cutmix=0.5)
    first = offline_augment(images, labels, cfg, seed=11)
    second = offline_augment(images, labels, cfg, seed=11)
    other = offline_augment(images, labels, cfg, seed=12)
    np.testing.assert_array_equal(first[0], second[0])
    np.testing.assert_array_equal(first[1], second[1])
    assert not np.array_equal(first[0], other[0])
    assert first[0].dtype == np.uint8 and first[0].shape == images.shape
    np.testing.assert_allclose(first[1].sum(axis=1), 1.0, atol=1e-6)
    # Everything off: an exact copy.
    off = AugmentConfig(flip="none", rotation=0.0, color_jitter=0.0, cutmix=0.0)
    same_images, same_labels = offline_augment(images, labels, off, seed=0)
    np.testing.assert_array_equal(same_images, images)
    np.testing.assert_array_equal(same_labels, labels)


def test_offline_rejects_wrong_inputs() -> None:
    images = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    with pytest.raises(KitError, match="soft labels"):
        offline_augment(images, np.array([0, 1]), AugmentConfig(), seed=0)
    with pytest.raises(KitError, match="uint8 images"):
        offline_augment(images.astype(np.float32), np.eye(2, dtype=np.float32), AugmentConfig(), seed=0)


@pytest.mark.slow
def test_online_cutmix_probability_mixes_some_batches_only() -> None:
    images, labels = constant_batch(4)
    augment = build_online_augmenter(AugmentConfig(flip="none", cutmix=0.5, seed=5), 4)
    dataset = tf.data.Dataset.from_tensors((images.astype(np.float32), labels)).repeat(16).map(augment)
    mixed = [not np.array_equal(y, labels) for _, y in dataset.as_numpy_iterator()]
    assert any(mixed) and not all(mixed)


def reflect_shift(image: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """Independent reference: shift by whole pixels, mirrored at the border (Keras' fill_mode="reflect")."""
    h, w = image.shape[:2]
    padded = np.pad(image, ((h, h), (w, w), (0, 0)), mode="symmetric")  # d c b a | a b c d | d c b a
    return padded[h - dy : 2 * h - dy, w - dx : 2 * w - dx]


def find_shift(source: np.ndarray, shifted: np.ndarray, most: int) -> tuple[int, int] | None:
    for dy in range(-most, most + 1):
        for dx in range(-most, most + 1):
            if np.array_equal(reflect_shift(source, dy, dx), shifted):
                return dy, dx
    return None


@pytest.mark.slow
@pytest.mark.parametrize("jit", [True, False])
def test_online_translate_is_a_whole_pixel_reflected_shift_within_bounds(jit: bool) -> None:
    rng = np.random.default_rng(2)
    images = rng.integers(0, 256, (12, SIZE, SIZE, 3)).astype(np.uint8)  # distinct pixels: one shift fits
    labels = np.eye(3, dtype=np.float32)[rng.integers(0, 3, 12)]
    augment = build_online_augmenter(AugmentConfig(flip="none", translate=0.25, jit_compile=jit, seed=6), 3)
    out, out_labels = augment(tf.constant(images), tf.constant(labels))
    shifts = [find_shift(src.astype(np.float32), got, most=4) for src, got in zip(images, out.numpy(), strict=True)]
    assert None not in shifts  # every image is its source shifted by at most 0.25 x 16 = 4 pixels
    assert len(set(shifts)) > 3  # and the shifts vary
    np.testing.assert_array_equal(out_labels.numpy(), labels)


def test_offline_translate_is_the_same_shift() -> None:
    rng = np.random.default_rng(4)
    images = rng.integers(0, 256, (8, SIZE, SIZE, 3)).astype(np.uint8)
    out, _ = offline_augment(images, np.eye(8, dtype=np.float32), AugmentConfig(flip="none", translate=0.125), seed=1)
    shifts = [find_shift(src, got, most=2) for src, got in zip(images, out, strict=True)]
    assert None not in shifts and len(set(shifts)) > 2


def test_keras_cv_missing_is_one_line_naming_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "keras_cv", None)  # what `import keras_cv` meets on an install without the extra
    with pytest.raises(KitError, match="augment.library=keras_cv needs keras-cv, which is not installed") as raised:
        build_online_augmenter(AugmentConfig(library="keras_cv"), 2)
    assert "pip install -e '.[keras-cv]'" in raised.value.hint


def test_keras_cv_translate_keeps_shape_and_range() -> None:
    images = np.random.default_rng(5).uniform(0, 255, (4, SIZE, SIZE, 3)).astype(np.float32)
    augment = build_online_augmenter(AugmentConfig(library="keras_cv", flip="none", translate=0.2), 2)
    out, _ = augment(tf.constant(images), tf.constant(np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]))
    assert out.shape == images.shape and 0.0 <= float(tf.reduce_min(out)) <= float(tf.reduce_max(out)) <= 255.0
    assert not np.allclose(out.numpy(), images)
