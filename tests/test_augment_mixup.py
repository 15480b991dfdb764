"""MixUp (augment.mixup, augment.mixup_alpha) beside CutMix: every output image is the convex combination of
two inputs that its label says, labels sum to 1, a batch is MixUped or CutMixed but never both, the same seed
gives the same batches, and the offline path blends the same way (rounded to uint8)."""

from __future__ import annotations

import numpy as np
import pytest
import tensorflow as tf

from kit.config import AugmentConfig
from kit.data.augment import build_online_augmenter, offline_augment
from kit.errors import KitError

SIZE = 12


def flat_batch(n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Image i is one flat colour (unique per image) of class i: (uint8 images, one-hot labels, colours [n, 3])."""
    colours = np.stack([np.arange(n) * 25 + 10, 250 - np.arange(n) * 25, (np.arange(n) * 97) % 256], axis=1).astype(np.float32)
    images = np.broadcast_to(colours[:, None, None, :], (n, SIZE, SIZE, 3)).astype(np.uint8)
    return images, np.eye(n, dtype=np.float32), colours


def online_batches(cfg: AugmentConfig, images: np.ndarray, labels: np.ndarray, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
    augment = build_online_augmenter(cfg, num_classes=labels.shape[1])
    dataset = tf.data.Dataset.from_tensors((images, labels)).repeat(count).map(augment)  # graph mode, as the pipeline
    return list(dataset.as_numpy_iterator())


@pytest.mark.slow
@pytest.mark.parametrize("library", ["keras", "keras_cv"])
def test_online_mixup_images_are_the_convex_combinations_their_labels_say(library: str) -> None:
    n = 8
    images, labels, colours = flat_batch(n)
    cfg = AugmentConfig(library=library, flip="none", mixup=1.0, mixup_alpha=1.0, seed=4)
    blended = 0
    for out_images, out_labels in online_batches(cfg, images, labels, 3):
        assert out_images.dtype == np.float32 and out_images.shape == images.shape
        np.testing.assert_allclose(out_labels.sum(axis=1), 1.0, atol=1e-6)
        assert (out_labels >= 0).all() and ((out_labels > 0).sum(axis=1) <= 2).all()  # two images at most
        # Every pixel of image i is sum_k label[i, k] * colour k: the same weights for pixels and labels.
        expected = out_labels @ colours
        np.testing.assert_allclose(out_images, np.broadcast_to(expected[:, None, None, :], out_images.shape), atol=1e-3)
        blended += int(((out_labels > 1e-3) & (out_labels < 1 - 1e-3)).any(axis=1).sum())
    assert blended >= 2 * n  # alpha=1: weights uniform in [0, 1], almost every image is visibly blended


@pytest.mark.slow
def test_online_mixup_same_seed_same_batches_other_seed_other_batches() -> None:
    images, labels, _ = flat_batch(6)
    runs = {
        seed: online_batches(AugmentConfig(flip="none", mixup=1.0, mixup_alpha=0.4, seed=seed), images, labels, 2)
        for seed in (7, 8)
    }
    first = online_batches(AugmentConfig(flip="none", mixup=1.0, mixup_alpha=0.4, seed=7), images, labels, 2)
    for (a_images, a_labels), (b_images, b_labels) in zip(first, runs[7], strict=True):
        np.testing.assert_array_equal(a_images, b_images)
        np.testing.assert_array_equal(a_labels, b_labels)
    assert not np.array_equal(first[0][1], runs[8][0][1])
    assert not np.array_equal(first[0][1], first[1][1])  # successive batches draw anew


@pytest.mark.slow
def test_online_mixup_or_cutmix_never_both_and_labels_follow_pixels() -> None:
    n = 8
    images, labels, colours = flat_batch(n)
    cfg = AugmentConfig(flip="none", mixup=0.5, mixup_alpha=1.0, cutmix=1.0, seed=2)
    kinds = []
    for out_images, out_labels in online_batches(cfg, images, labels, 12):
        np.testing.assert_allclose(out_labels.sum(axis=1), 1.0, atol=1e-6)
        # Either way the mean colour of an image is its label times the colours (pasted area or blend weight).
        np.testing.assert_allclose(out_images.mean(axis=(1, 2)), out_labels @ colours, atol=1e-3)
        flat = [np.allclose(image, image[0, 0]) for image in out_images]
        pasted = [np.unique(image.reshape(-1, 3), axis=0).shape[0] == 2 for image in out_images]
        assert all(f or p for f, p in zip(flat, pasted, strict=True))  # blended (flat) or pasted, never both
        kinds.append("cutmix" if any(pasted) else "mixup")
    assert "cutmix" in kinds and "mixup" in kinds  # probability 0.5: both kinds of batches in 12


def test_offline_mixup_blends_pixels_and_labels_alike_and_is_seeded() -> None:
    n = 6
    images, labels, colours = flat_batch(n)
    cfg = AugmentConfig(flip="none", mixup=1.0, mixup_alpha=1.0)
    out_images, out_labels = offline_augment(images, labels, cfg, seed=5)
    assert out_images.dtype == np.uint8 and out_labels.dtype == np.float32
    np.testing.assert_allclose(out_labels.sum(axis=1), 1.0, atol=1e-6)
    assert ((out_labels > 0).sum(axis=1) == 2).all() and (np.diag(out_labels) > 0).all()  # itself and one other
    expected = out_labels @ colours
    np.testing.assert_allclose(out_images, np.broadcast_to(expected[:, None, None, :], images.shape), atol=0.5 + 1e-4)
    again = offline_augment(images, labels, cfg, seed=5)
    other = offline_augment(images, labels, cfg, seed=6)
    np.testing.assert_array_equal(out_images, again[0])
    np.testing.assert_array_equal(out_labels, again[1])
    assert not np.array_equal(out_labels, other[1])


def test_offline_mixup_off_leaves_the_cutmix_records_byte_for_byte() -> None:
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (5, SIZE, SIZE, 3), dtype=np.uint8)
    labels = np.eye(3, dtype=np.float32)[[0, 1, 2, 1, 0]]
    cutmix_only = AugmentConfig(flip="both", color_jitter=0.3, cutmix=1.0)
    with_mixup = AugmentConfig(flip="both", color_jitter=0.3, cutmix=1.0, mixup=0.5, mixup_alpha=0.4)
    plain, mixed = offline_augment(images, labels, cutmix_only, seed=3), offline_augment(images, labels, with_mixup, seed=3)
    np.testing.assert_array_equal(plain[0], offline_augment(images, labels, cutmix_only, seed=3)[0])
    # The images MixUp left alone are the CutMix-only ones exactly: its draws come from a stream of their own.
    kept = [i for i in range(5) if np.array_equal(mixed[1][i], plain[1][i])]
    assert 0 < len(kept) < 5
    for i in kept:
        np.testing.assert_array_equal(mixed[0][i], plain[0][i])


@pytest.mark.parametrize(
    ("settings", "match"),
    [
        ({"mixup": 1.5}, r"augment.mixup=1.5 is outside its allowed range \[0, 1\]"),
        ({"mixup": 0.5, "mixup_alpha": 0.0}, r"augment.mixup_alpha=0.0 is outside its allowed range \(0, 100\]"),
    ],
)
def test_mixup_settings_out_of_range_are_one_line_kit_errors(settings: dict, match: str) -> None:
    images, labels, _ = flat_batch(4)
    with pytest.raises(KitError, match=match):
        build_online_augmenter(AugmentConfig(**settings), num_classes=4)
    with pytest.raises(KitError, match=match):
        offline_augment(images, labels, AugmentConfig(**settings), seed=0)
