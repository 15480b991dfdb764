"""The degradations (kit.data.augment.degrade): the pixel maths equals OpenCV's in numpy, TensorFlow and XLA; the
far-from-identity end of each range does something and the near end nothing; the draws stay in the declared ranges
and follow the probability; the same seed gives the same batches online and offline; the labels never change what
is drawn (both classes alike); turning one on leaves every other draw as it was; bad values are one line."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import cv2
import numpy as np
import pytest
import tensorflow as tf

from kit.config import AugmentConfig, load_config
from kit.data.augment import build_online_augmenter, degrade, draws, offline_augment, ops
from kit.errors import KitError

TF = ops.tensorflow_ops()
H, W = 24, 40
ROW = {row.name: row for row in degrade.ROWS}
ALL_ON = {row.name: 0.5 for row in degrade.ROWS}


def images(n: int = 4, seed: int = 0) -> np.ndarray:
    """Photo-like float images (smooth, so resampling and blur change them by a few levels, not by noise)."""
    rng = np.random.default_rng(seed)
    small = rng.uniform(0, 255, (n, 6, 10, 3)).astype(np.float32)
    return np.stack([cv2.resize(image, (W, H), interpolation=cv2.INTER_CUBIC) for image in small]).clip(0, 255)


def three_ways(function, x: np.ndarray) -> list[np.ndarray]:
    """``function(x, ops)`` in numpy, in TensorFlow op by op, and compiled by XLA."""
    compiled = tf.function(lambda t: function(t, TF), jit_compile=True)
    return [function(x, ops.NUMPY), function(tf.constant(x), TF).numpy(), compiled(tf.constant(x)).numpy()]


CROPS = (np.array([3, 0, 10, 0]), np.array([5, 2, 0, 0]), np.array([10, 24, 14, H]), np.array([16, 7, 40, W]))
SCALES = np.array([0.3, 0.5, 0.72, 1.0], np.float32)
SIGMAS = np.array([0.0, 0.8, 1.7, 3.0], np.float32)


def opencv_crop(image: np.ndarray, i: int) -> np.ndarray:
    top, left, height, width = (int(side[i]) for side in CROPS)
    return cv2.resize(image[top : top + height, left : left + width], (W, H), interpolation=cv2.INTER_LINEAR)


def opencv_down_up(image: np.ndarray, i: int) -> np.ndarray:
    small = (max(1, round(SCALES[i] * W)), max(1, round(SCALES[i] * H)))
    return cv2.resize(cv2.resize(image, small, interpolation=cv2.INTER_LINEAR), (W, H), interpolation=cv2.INTER_LINEAR)


def opencv_blur(image: np.ndarray, i: int) -> np.ndarray:
    if SIGMAS[i] == 0:
        return image
    side = 2 * degrade.blur_radius(3.0) + 1
    return cv2.GaussianBlur(image, (side, side), float(SIGMAS[i]), borderType=cv2.BORDER_REFLECT)


MATHS = {
    "resized_crop": (lambda x, o: degrade.resized_crop(x, CROPS, o), opencv_crop),
    "resample": (lambda x, o: degrade.down_up(x, SCALES, o), opencv_down_up),
    "blur": (lambda x, o: degrade.blur(x, SIGMAS, degrade.blur_radius(3.0), o), opencv_blur),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MATHS))
def test_the_pixel_maths_equals_opencv_in_numpy_tensorflow_and_xla(name: str) -> None:
    function, opencv = MATHS[name]
    x = images()
    expected = np.stack([opencv(image, i) for i, image in enumerate(x)])
    for got in three_ways(function, x):
        assert got.shape == x.shape and got.dtype == np.float32
        np.testing.assert_allclose(got, expected, atol=2e-3)
    assert np.abs(expected[1] - x[1]).mean() > 0.5  # the degradation did something


@pytest.mark.slow
def test_the_identity_end_of_every_range_leaves_the_images_exactly_as_they_were() -> None:
    x = images()
    n = len(x)
    whole = (np.zeros(n, np.int32), np.zeros(n, np.int32), np.full(n, H, np.int32), np.full(n, W, np.int32))
    nothing_erased = (np.zeros(n, np.int32), np.zeros(n, np.int32), np.zeros(n, np.int32), np.full(n, W, np.int32))
    identities = [
        lambda t, o: degrade.resized_crop(t, whole, o),
        lambda t, o: degrade.down_up(t, np.ones(n, np.float32), o),
        lambda t, o: degrade.blur(t, np.zeros(n, np.float32), 4, o),
        lambda t, o: degrade.add_noise(t, np.zeros(n, np.float32), np.ones_like(x)),
        lambda t, o: degrade.erase(t, nothing_erased, np.zeros_like(x), o),
    ]
    for identity in identities:
        for got in three_ways(identity, x):
            np.testing.assert_array_equal(got, x)


def test_erasing_fills_exactly_the_box_with_the_fill() -> None:
    x, fill = images(2), np.full((2, H, W, 3), 7.0, np.float32)
    box = (np.array([2, 0]), np.array([5, 0]), np.array([10, 3]), np.array([30, 9]))  # the second box is empty
    for got in three_ways(lambda t, o: degrade.erase(t, box, fill, o), x):
        assert (got[0, 2:5, 10:30] == 7.0).all()
        inside = np.zeros((H, W, 3), bool)
        inside[2:5, 10:30] = True
        np.testing.assert_array_equal(got[0][~inside], x[0][~inside])
        np.testing.assert_array_equal(got[1], x[1])


def test_tensorflow_and_opencv_jpeg_agree_lose_more_at_low_quality_and_leave_the_others_alone() -> None:
    x = np.rint(images(4)).astype(np.uint8)
    drawn = (np.array([True, True, False, True]), np.array([30, 95, 30, 100], np.int32))
    ours = degrade.reencode_numpy(x, drawn)
    theirs = degrade.reencode_tf(tf.constant(x, tf.float32), tuple(tf.constant(a) for a in drawn)).numpy()
    assert theirs.dtype == np.float32 and theirs.shape == x.shape
    assert np.abs(theirs - ours.astype(np.float32)).mean() < 1.5  # two libjpeg builds, two IDCTs: about a level
    np.testing.assert_array_equal(ours[2], x[2])
    np.testing.assert_array_equal(theirs[2], x[2])
    loss = np.abs(ours.astype(float) - x).mean(axis=(1, 2, 3))
    assert loss[0] > loss[1] > 0  # quality 30 loses more than 95; even 100 re-encodes (chroma subsampling)
    assert loss[3] > 0


def uniforms(n: int, row: degrade.Degradation, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((row.uniforms, n))


@pytest.mark.parametrize("probability", [0.0, 0.3, 1.0])
def test_the_draws_follow_the_probability_and_stay_in_the_declared_ranges(probability: float) -> None:
    n, field = 4000, np.random.default_rng(1).random((4000, 2, 2, 3), np.float32)

    def params(name: str, parameter: float):
        return ROW[name].params(uniforms(n, ROW[name]), probability, parameter, H, W, field, ops.NUMPY)

    sigma, radius = params("blur", 2.5)
    assert radius == 8 and sigma.min() >= 0 and sigma.max() <= 2.5
    assert abs((sigma > 0).mean() - probability) < 0.03
    on, quality = params("jpeg", 30)
    assert abs(on.mean() - probability) < 0.03 and set(np.unique(quality)) == set(range(30, 101))
    std, _ = params("noise", 10.0)
    assert std.max() <= 10.0 and abs((std > 0).mean() - probability) < 0.03
    scale = params("resample", 0.25)
    assert scale.min() >= 0.25 and scale.max() <= 1.0 and abs((scale < 1).mean() - probability) < 0.03
    top, left, height, width = params("resized_crop", 0.08)
    assert (top >= 0).all() and (top + height <= H).all() and (left >= 0).all() and (left + width <= W).all()
    area = height * width / (H * W)
    assert area.min() >= 0.08 - 0.04 and abs((area < 1).mean() - probability) < 0.03  # sides rounded to pixels
    (y0, y1, x0, x1), fill = params("erase", 0.4)
    assert (y0 >= 0).all() and (y1 <= H).all() and (x0 >= 0).all() and (x1 <= W).all()
    erased = (y1 - y0) * (x1 - x0) / (H * W)
    assert erased.max() <= 0.4 + 0.05 and abs((erased > 0).mean() - probability) < 0.03
    assert fill.min() >= 0 and fill.max() <= 255 and (fill == np.floor(fill)).all()


def test_tensorflow_draws_are_the_same_for_a_seed_and_use_the_rows_mapping() -> None:
    shape = tf.constant([64, H, W, 3])
    for row in degrade.ROWS:
        first, again, other = (
            tf.nest.flatten(
                draws.degradation(tf.constant([s, 1], tf.int64), shape, row, 0.5, getattr(AugmentConfig(), row.parameter))
            )
            for s in (1, 1, 2)
        )
        for a, b in zip(first, again, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert any(not np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(first, other, strict=True)), row.name


def degraded_batch(
    cfg: AugmentConfig, x: np.ndarray, labels: np.ndarray, batches: int = 2
) -> list[tuple[np.ndarray, np.ndarray]]:
    dataset = tf.data.Dataset.from_tensors((tf.constant(x), tf.constant(labels))).repeat(batches)
    return list(dataset.map(build_online_augmenter(cfg, labels.shape[1])).as_numpy_iterator())


@pytest.mark.slow
def test_online_with_every_degradation_keeps_shape_and_range_is_seeded_and_ignores_the_labels() -> None:
    x = np.rint(images(6)).astype(np.uint8)
    labels = np.eye(2, dtype=np.float32)[[0, 1, 0, 1, 0, 1]]
    # XLA is tested row by row below; a small blur kernel keeps the graph small (the seconds here are tracing)
    cfg = AugmentConfig(seed=5, flip="none", jit_compile=False, blur_max_sigma=1.0, **ALL_ON)
    first, again = degraded_batch(cfg, x, labels), degraded_batch(cfg, x, labels)
    swapped = degraded_batch(cfg, x, labels[:, ::-1].copy())  # the other class for every image
    for (a, _), (b, _), (c, _) in zip(first, again, swapped, strict=True):
        assert a.shape == x.shape and a.dtype == np.float32 and a.min() >= 0 and a.max() <= 255
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)  # both classes alike: what is drawn never depends on the label
    assert not np.array_equal(first[0][0], first[1][0])  # successive batches draw anew (other seeds: the draw test)
    assert not np.array_equal(first[0][0], x.astype(np.float32))


@pytest.mark.slow
@pytest.mark.parametrize("name", [row.name for row in degrade.ROWS])
def test_each_degradation_alone_runs_the_same_maths_with_and_without_xla(name: str) -> None:
    x = np.rint(images(4)).astype(np.uint8)
    labels = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
    outs = [
        degraded_batch(AugmentConfig(seed=2, flip="none", jit_compile=jit, **{name: 1.0}), x, labels, batches=1)[0][0]
        for jit in (True, False)
    ]
    assert not np.array_equal(outs[0], x.astype(np.float32))
    if name == "jpeg":  # rounding before the codec may differ by one level at .5: the codec spreads it a little
        assert np.abs(outs[0] - outs[1]).mean() < 0.05
    else:
        np.testing.assert_allclose(outs[0], outs[1], atol=1e-2)


@pytest.mark.slow
def test_turning_a_degradation_on_leaves_the_other_draws_as_they_were() -> None:
    x = np.rint(images(8)).astype(np.uint8)
    labels = np.eye(2, dtype=np.float32)[[0, 1] * 4]
    base = AugmentConfig(seed=4, cutmix=1.0, jit_compile=False)
    plain = degraded_batch(base, x, labels)
    blurred = degraded_batch(dataclasses.replace(base, blur=1.0, erase=0.5), x, labels)
    for (_, y1), (_, y2) in zip(plain, blurred, strict=True):
        np.testing.assert_array_equal(y1, y2)  # the same CutMix partners and boxes
    soft = np.eye(2, dtype=np.float32)[[0, 1] * 4]
    offline_plain = offline_augment(x, soft, base, seed=3)
    offline_blurred = offline_augment(x, soft, dataclasses.replace(base, blur=1.0), seed=3)
    np.testing.assert_array_equal(offline_plain[1], offline_blurred[1])
    assert not np.array_equal(offline_plain[0], offline_blurred[0])


@pytest.mark.slow
@pytest.mark.parametrize("library", ["keras", "keras_cv"])
def test_the_keras_cv_path_runs_the_same_degradations(library: str) -> None:
    x = np.rint(images(4)).astype(np.uint8)
    labels = np.eye(2, dtype=np.float32)[[0, 1, 0, 1]]
    cfg = AugmentConfig(seed=8, flip="none", library=library, blur=1.0, erase=1.0)
    out = degraded_batch(cfg, x, labels, batches=1)[0][0]
    assert out.shape == x.shape and out.min() >= 0 and out.max() <= 255
    assert repr(build_online_augmenter(cfg, 2)).count("(p=1.0") == 2


def test_offline_with_every_degradation_is_seeded_uint8_and_in_shape() -> None:
    x = np.rint(images(6)).astype(np.uint8)
    soft = np.eye(2, dtype=np.float32)[[0, 1, 0, 1, 0, 1]]
    cfg = AugmentConfig(**ALL_ON)
    first, again, other = (offline_augment(x, soft, cfg, seed=s) for s in (1, 1, 2))
    assert first[0].dtype == np.uint8 and first[0].shape == x.shape
    np.testing.assert_array_equal(first[0], again[0])
    assert not np.array_equal(first[0], other[0]) and not np.array_equal(first[0], x)
    swapped = offline_augment(x, soft[:, ::-1].copy(), cfg, seed=1)
    np.testing.assert_array_equal(first[0], swapped[0])  # both classes alike


def test_offline_applies_the_online_maths_to_the_drawn_parameters() -> None:
    x = np.rint(images(3)).astype(np.uint8)
    cfg = AugmentConfig(flip="none", blur=1.0, resample=1.0)
    drawn = {
        name: ROW[name].params(uniforms(3, ROW[name], 5), 1.0, getattr(cfg, ROW[name].parameter), H, W, None, ops.NUMPY)
        for name in ("resample", "blur")
    }
    as_tensors = tf.nest.map_structure(lambda value: tf.constant(value) if isinstance(value, np.ndarray) else value, drawn)
    online = degrade.apply_pixel_rows(tf.constant(x, tf.float32), as_tensors, TF)
    offline = degrade.apply_pixel_rows(x.astype(np.float32), drawn, ops.NUMPY)
    np.testing.assert_allclose(online.numpy(), offline, atol=2e-3)


@pytest.mark.parametrize(
    ("setting", "fragment"),
    [
        ("augment.jpeg=1.5", "augment.jpeg=1.5 is outside its allowed range [0, 1]"),
        ("augment.jpeg_min_quality=0", "augment.jpeg_min_quality=0 is outside its allowed range [1, 100]"),
        ("augment.blur_max_sigma=0", "augment.blur_max_sigma=0.0 is outside its allowed range (0, 8]"),
        ("augment.erase_max_area=0.01", "augment.erase_max_area=0.01 is outside its allowed range [0.02, 1]"),
        ("augment.resized_crop_min_scale=0", "augment.resized_crop_min_scale=0.0 is outside its allowed range (0, 1]"),
    ],
)
def test_a_degradation_setting_out_of_range_is_one_line(setting: str, fragment: str) -> None:
    with pytest.raises(KitError) as info:
        load_config([setting])
    assert fragment in info.value.one_line() and "\n" not in info.value.one_line()


def test_every_row_names_two_declared_settings_and_every_setting_has_a_row() -> None:
    names = {f.name for f in dataclasses.fields(AugmentConfig)}
    for row in degrade.ROWS:
        assert {row.name, row.parameter} <= names
        assert getattr(AugmentConfig(), row.name) == 0.0  # off by default: presets and results do not change
    assert build_online_augmenter(AugmentConfig(flip="none"), 2).names == []  # all off: the identity, TF not needed


@pytest.mark.slow  # starts a Python process
def test_offline_degradations_import_no_tensorflow() -> None:
    code = (
        "import sys, numpy as np\n"
        "from kit.config import AugmentConfig\n"
        "from kit.data.augment import offline_augment\n"
        f"cfg = AugmentConfig(**{ALL_ON!r})\n"
        "offline_augment(np.zeros((2, 16, 16, 3), np.uint8), np.eye(2, dtype=np.float32), cfg, 0)\n"
        "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules, 'TensorFlow was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
