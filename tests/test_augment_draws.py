"""The pure draw functions (kit.data.augment.draws) and the shared pixel maths (kit.data.augment.ops): boxes
inside the image, the label weight from the clipped area, same seed -> same draw, other seed -> other draw,
ranges as documented, and numpy and TensorFlow computing the same formulas."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from kit.data.augment import draws, ops

TF = ops.tensorflow_ops()
B, H, W = 64, 24, 40


def seed(n: int) -> tf.Tensor:
    return tf.constant([n, 7], tf.int64)


DRAWS = {
    "coin_flips": lambda s: draws.coin_flips(s, B),
    "shifts": lambda s: draws.shifts(s, B, H, W, 0.25),
    "jitter": lambda s: draws.jitter(s, B, 0.4),
    "beta": lambda s: draws.beta(s, [B], 0.7),
    "permutation": lambda s: draws.permutation(s, B),
    "cutmix": lambda s: draws.cutmix(s, B, H, W, 1.0, 1.0),
}


def as_arrays(draw: object) -> list[np.ndarray]:
    return [np.asarray(t) for t in tf.nest.flatten(draw)]


@pytest.mark.slow
@pytest.mark.parametrize("name", list(DRAWS))
def test_same_seed_same_draw_other_seed_other_draw(name: str) -> None:
    first, again, other = (as_arrays(DRAWS[name](seed(n))) for n in (1, 1, 2))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert any(not np.array_equal(a, c) for a, c in zip(first, other, strict=True))
    graph = as_arrays(tf.function(DRAWS[name])(seed(1)))  # a pure function: the same inside a graph
    for a, g in zip(first, graph, strict=True):
        np.testing.assert_array_equal(a, g)


def test_split_seeds_are_distinct() -> None:
    parts = [tuple(s.numpy()) for s in draws.split(seed(3), 5)]
    assert len(set(parts)) == 5


def test_shifts_stay_within_the_fraction_and_vary() -> None:
    dy, dx = (t.numpy() for t in draws.shifts(seed(4), 512, H, W, 0.25))
    assert dy.min() == -6 and dy.max() == 6  # round(0.25 * 24), both ends reached in 512 draws
    assert dx.min() == -10 and dx.max() == 10


def test_jitter_draws_fall_in_the_documented_ranges() -> None:
    strength = 0.4
    ranges = ops.jitter_ranges(strength)
    brightness, contrast, matrix = draws.jitter(seed(5), 512, strength)
    brightness, contrast = brightness.numpy(), contrast.numpy()
    assert ranges["brightness"][0] <= brightness.min() < brightness.max() <= ranges["brightness"][1]
    assert ranges["contrast"][0] <= contrast.min() < contrast.max() <= ranges["contrast"][1]
    assert brightness.min() < -0.3 and brightness.max() > 0.3  # it covers the range, not a corner of it
    # Each matrix is a colour matrix of a saturation and a signed hue in their ranges: find them back.
    grid_u = np.linspace(*ranges["saturation"], 201)
    grid_hue = np.linspace(-ranges["hue"][1], ranges["hue"][1], 201)
    candidates = ops.color_matrix(np.repeat(grid_u, 201), np.tile(grid_hue, 201), ops.NUMPY)  # [201 * 201, 3, 3]
    hues = []
    for m in matrix.numpy()[:64]:
        best = int(np.argmin(np.abs(candidates - m).sum(axis=(1, 2))))
        assert np.abs(candidates[best] - m).max() < 0.01
        hues.append(grid_hue[best % 201])
    assert min(hues) < 0 < max(hues)  # both signs of hue
    assert matrix.shape == (512, 3, 3)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 4.0])
def test_beta_is_in_unit_interval_with_mean_one_half(alpha: float) -> None:
    lam = draws.beta(seed(6), [4000], alpha).numpy()
    assert lam.min() >= 0.0 and lam.max() <= 1.0
    assert abs(lam.mean() - 0.5) < 0.03
    expected_var = 1.0 / (4.0 * (2.0 * alpha + 1.0))  # Var of Beta(a, a)
    assert abs(lam.var() - expected_var) < 0.2 * expected_var


def test_permutation_is_a_permutation() -> None:
    perm = draws.permutation(seed(7), B).numpy()
    assert sorted(perm.tolist()) == list(range(B))
    assert not np.array_equal(perm, np.arange(B))


def test_cutmix_box_inside_the_image_and_area_from_the_clipped_box() -> None:
    partner, rows, cols, area = (t.numpy() for t in draws.cutmix(seed(8), 256, H, W, 1.0, 1.0))
    moved = partner != np.arange(256)
    for b in range(256):
        r, c = np.flatnonzero(rows[b]), np.flatnonzero(cols[b])
        if not moved[b]:
            assert area[b] == 0.0 and r.size == 0  # pasting an image onto itself counts nothing
            continue
        assert r.size == 0 or r[-1] - r[0] + 1 == r.size  # one run of rows and one of columns: a rectangle
        assert c.size == 0 or c[-1] - c[0] + 1 == c.size
        np.testing.assert_allclose(area[b], r.size * c.size / (H * W), rtol=1e-6)  # the pixels actually pasted
    assert area.max() > 0.3 and (area[moved] < 1.0).all()  # big boxes happen; none replaces a whole image


def test_cutmix_box_is_inside_the_image_for_any_lambda_and_centre() -> None:
    rng = np.random.default_rng(9)
    lam = np.concatenate([[0.0, 1.0, 1e-9], rng.uniform(0, 1, 997)])
    center_y, center_x = rng.integers(0, H, lam.size), rng.integers(0, W, lam.size)
    y0, y1, x0, x1 = ops.cutmix_box(lam, center_y, center_x, H, W, ops.NUMPY)
    assert (y0 >= 0).all() and (y0 <= y1).all() and (y1 <= H).all()
    assert (x0 >= 0).all() and (x0 <= x1).all() and (x1 <= W).all()
    nominal = (H * np.sqrt(1 - lam)).astype(int) // 2 * 2  # timm: half a side either way of the centre
    assert (y1 - y0 <= nominal).all() and (y1 - y0 < nominal).any()  # clipped at the border, never grown


def test_cutmix_box_clips_at_the_border_and_corrects_lambda() -> None:
    # lam = 0.75: nominal sides 12 x 20 (half 6 and 10); centred at the corner, a quarter of it is left.
    lam, zero = np.array([0.75, 0.75]), np.array([0, 12])
    box = ops.cutmix_box(lam, zero, np.array([0, 20]), H, W, ops.NUMPY)
    np.testing.assert_array_equal(np.stack(box), [[0, 6], [6, 18], [0, 10], [10, 30]])
    rows, cols = ops.box_masks(box, H, W, ops.NUMPY)
    area = rows.mean(axis=1) * cols.mean(axis=1)
    np.testing.assert_allclose(area, [6 * 10 / (H * W), 12 * 20 / (H * W)])  # corner box: a quarter of 1 - lam
    tf_box = ops.cutmix_box(tf.constant(lam), tf.constant(zero), tf.constant([0, 20]), H, W, TF)
    np.testing.assert_array_equal(np.stack([t.numpy() for t in tf_box]), np.stack(box))  # one formula, two backends


@pytest.mark.slow
def test_cutmix_probability_mixes_whole_batches() -> None:
    areas = [draws.cutmix(seed(n), 8, H, W, 1.0, 0.5)[3].numpy() for n in range(40)]
    mixed = [bool(a.any()) for a in areas]
    assert any(mixed) and not all(mixed)


def test_reflect_index_and_shift_agree_between_numpy_and_tensorflow() -> None:
    index = np.arange(-5, 15)
    expected = [4, 3, 2, 1, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 8, 7, 6, 5]  # d c b a | a b c d | d c b a
    np.testing.assert_array_equal(ops.reflect_index(index, 10, ops.NUMPY), expected)
    np.testing.assert_array_equal(ops.reflect_index(tf.constant(index), 10, TF).numpy(), expected)
    images = np.random.default_rng(0).uniform(0, 255, (3, H, W, 3)).astype(np.float32)
    dy, dx = np.array([-3, 0, 5], np.int32), np.array([7, -2, 0], np.int32)
    np.testing.assert_array_equal(
        ops.shift(tf.constant(images), tf.constant(dy), tf.constant(dx), TF).numpy(), ops.shift(images, dy, dx, ops.NUMPY)
    )


def test_jitter_agrees_between_numpy_and_tensorflow() -> None:
    rng = np.random.default_rng(1)
    images = rng.uniform(0, 255, (3, H, W, 3)).astype(np.float32)
    brightness, contrast = np.float32([-0.2, 0.0, 0.3]), np.float32([0.7, 1.0, 1.3])
    matrix = ops.color_matrix(np.float32([0.3, 0.5, 0.7]), np.float32([0.1, 0.0, -0.1]), ops.NUMPY)
    ours = ops.jitter(images, brightness, contrast, matrix, ops.NUMPY)
    for fused in (False, True):
        theirs = ops.jitter(*(tf.constant(a) for a in (images, brightness, contrast, matrix)), TF, fused=fused).numpy()
        np.testing.assert_allclose(theirs, ours, atol=1e-3)
    assert ours.min() >= 0.0 and ours.max() <= 255.0
    np.testing.assert_allclose(ours[1], images[1], atol=1e-3)  # neutral parameters leave the image as it was


@pytest.mark.slow
def test_offline_path_imports_no_tensorflow() -> None:
    code = (
        "import sys, numpy as np\n"
        "from kit.config import AugmentConfig\n"
        "from kit.data.augment import offline_augment\n"
        "cfg = AugmentConfig(flip='both', translate=0.2, color_jitter=0.3, cutmix=1.0)\n"
        "offline_augment(np.zeros((2, 8, 8, 3), np.uint8), np.eye(2, dtype=np.float32), cfg, 0)\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
