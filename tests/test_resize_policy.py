"""data.resize: stretch, pad (letterbox) and crop (native resolution, random crops in training, the centre crop or a
grid of crops at inference), checked pixel by pixel on known images and end to end through records and predictions."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from kit.config import load_config, to_yaml
from kit.data import records, resizing
from kit.data.manifest import read_manifest, records_dir
from kit.data.pipeline import make_dataset
from kit.errors import KitError
from kit.settings import load_settings

CLASSES = ["real", "fake"]
SIDES = [(20, 30), (9, 12), (64, 48), (25, 25), (40, 16), (12, 40)]  # (height, width): smaller, larger, both


def ramp(height: int, width: int) -> np.ndarray:
    """A known image: pixel (y, x) = (y, x, y + x) (uint8), so every crop's position shows in its values."""
    y, x = np.mgrid[0:height, 0:width]
    return np.stack([y, x, y + x], axis=-1).astype(np.uint8)


def symmetric(image: np.ndarray, top: int, left: int, side: int) -> np.ndarray:
    """numpy's own mirrored window (np.pad symmetric), the reference for kit's."""
    pad = side + max(image.shape[:2])
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    return padded[pad + top : pad + top + side, pad + left : pad + left + side]


# --- storing: numpy, as the records workers do ---------------------------------------------------------------


def test_pad_letterboxes_to_the_model_size_on_black_without_distortion():
    image = np.full((10, 20, 3), 200, np.uint8)  # 2:1
    out = resizing.letterbox(image, 8, 768)
    assert out.shape == (8, 8, 3) and out.dtype == np.uint8
    assert (out[2:6] == 200).all()  # 4 rows of image: 20 -> 8 wide, 10 -> 4 high, centred
    assert (out[:2] == 0).all() and (out[6:] == 0).all()
    tall = resizing.letterbox(np.full((9, 3, 3), 50, np.uint8), 6, 768)  # enlarged: 9 -> 6 high, 3 -> 2 wide
    assert (tall[:, 2:4] == 50).all() and (tall[:, :2] == 0).all() and (tall[:, 4:] == 0).all()


def test_crop_records_shrink_only_what_exceeds_max_side_and_never_enlarge():
    small = ramp(30, 20)
    np.testing.assert_array_equal(resizing.within_max_side(small, 16, 40), small)  # 30 <= 40: untouched
    big = np.zeros((100, 60, 3), np.uint8)
    assert resizing.within_max_side(big, 16, 50).shape == (50, 30, 3)  # longer side to 50, aspect kept


# --- cutting: TensorFlow, as the pipeline does -----------------------------------------------------------------


def test_the_centre_crop_is_the_middle_window_exactly():
    image = ramp(6, 9)
    crop = resizing.grid_crops(image, 4, 1).numpy()
    assert crop.shape == (1, 4, 4, 3)
    np.testing.assert_array_equal(crop[0], image[1:5, 2:6])  # offsets (6-4)//2 = 1, (9-4)//2 = 2


def test_a_window_past_the_border_is_mirrored_with_the_edge_repeated():
    image = ramp(3, 2)
    crop = resizing.grid_crops(image, 5, 1).numpy()[0]  # offsets -1 and -2
    np.testing.assert_array_equal(crop, symmetric(image, -1, -2, 5))
    assert crop[:, :, 0].tolist()[0] == [0] * 5 and crop[:, 0, 0].tolist() == [0, 0, 1, 2, 2]
    tiny = ramp(1, 1) + 7  # far more padding than image: still defined, every pixel the one pixel
    assert (resizing.grid_crops(tiny, 4, 1).numpy() == 7).all()


def test_grid_crops_run_from_edge_to_edge_row_by_row():
    image = ramp(10, 12)
    grid = resizing.grid_crops(image, 4, 9).numpy()  # 3 x 3
    tops, lefts = [0, 3, 6], [0, 4, 8]  # (10-4) * i // 2, (12-4) * j // 2
    for k, (top, left) in enumerate((t, left) for t in tops for left in lefts):
        np.testing.assert_array_equal(grid[k], image[top : top + 4, left : left + 4])
    narrow = resizing.grid_crops(ramp(3, 12), 4, 4).numpy()  # rows shorter than the crop: every row centred
    np.testing.assert_array_equal(narrow[0], narrow[2])
    np.testing.assert_array_equal(narrow[3], symmetric(ramp(3, 12), -1, 8, 4))


def test_a_training_crop_is_the_same_for_a_seed_and_lies_inside_a_large_image():
    import tensorflow as tf

    image = ramp(50, 60)
    crops = [resizing.random_crop(image, 16, tf.constant([s, 7], tf.int64)).numpy() for s in (1, 1, 2, 3, 4)]
    np.testing.assert_array_equal(crops[0], crops[1])
    assert len({c.tobytes() for c in crops[1:]}) == 4  # other seeds, other places
    for crop in crops:  # a plain window of the ramp: y and x count up by one, no padding inside a large image
        top, left = int(crop[0, 0, 0]), int(crop[0, 0, 1])
        np.testing.assert_array_equal(crop, image[top : top + 16, left : left + 16])
    scaled = resizing.random_crop(image, 16, tf.constant([5, 5], tf.int64), min_scale=0.25).numpy()
    assert scaled.shape == (16, 16, 3) and scaled.dtype == np.uint8
    steps = np.diff(scaled[0, :, 1].astype(int))
    assert steps.max() >= 2  # a window up to 32 px shrunk to 16: x advances 2 a pixel
    small = ramp(5, 6)  # smaller than the crop: the image lies somewhere inside the mirrored window
    crop = resizing.random_crop(small, 8, tf.constant([3, 3], tf.int64)).numpy()
    windows = [symmetric(small, top, left, 8) for top in range(-3, 1) for left in range(-2, 1)]
    assert crop.shape == (8, 8, 3) and any(np.array_equal(crop, w) for w in windows)


# --- records of mixed sizes, end to end ------------------------------------------------------------------------


def write_images(folder: Path, sides=SIDES) -> tuple[pd.DataFrame, list[np.ndarray]]:
    """PNG files of the given sizes (each a ramp plus its number): the first two val, the next two test, the rest train."""
    folder.mkdir(parents=True, exist_ok=True)
    rows, images = [], []
    for i, (height, width) in enumerate(sides):
        image = ramp(height, width) + np.uint8(i)
        path = folder / f"img{i}.png"
        cv2.imwrite(str(path), image[..., ::-1])
        split = ("val", "test")[i // 2] if i < 4 else "train"
        rows.append({"id": f"img{i}", "path": str(path), "label": -1 if split == "test" else i % 2, "split": split, "fold": -1})
        images.append(image)
    return pd.DataFrame(rows), images


def crop_config(tmp: Path, *extra: str):
    settings = ["comp=demo", f"data.records_root={tmp / 'records'}", "model.image_size=16", "data.workers=1"]
    return load_config([*settings, "data.resize=crop", "data.max_side=40", *extra])


@pytest.mark.slow
@pytest.mark.parametrize("image_format", ["png", "raw"])
def test_records_of_mixed_sizes_round_trip_and_predictions_take_their_centre_crop(tmp_path, image_format):
    index, images = write_images(tmp_path / "img")
    cfg = crop_config(tmp_path, f"data.image_format={image_format}")
    manifest = records.build_records(cfg, index, CLASSES)
    assert (manifest.resize, manifest.max_side, manifest.image_format) == ("crop", 40, image_format)
    assert read_manifest(records_dir(cfg)).to_json()["resize"] == "crop"
    stored = [resizing.within_max_side(image, 16, 40) for image in images]
    assert stored[2].shape == (40, 30, 3)  # 64x48 shrunk to a longer side of 40; the others as they were
    import tensorflow as tf

    from kit.data.schema import feature_spec

    first_test = next(iter(tf.data.TFRecordDataset(manifest.shard_paths("test"))))
    parsed = tf.io.parse_single_example(first_test, feature_spec(2))
    sizes = [int(parsed[key]) for key in ("height", "width", "stored_height", "stored_width")]
    assert sizes == [64, 48, 40, 30]  # the original's size, and the stored image's
    for split, first in (("val", 0), ("test", 2)):
        batches = list(make_dataset(cfg, split, training=False, batch_size=8, manifest=manifest, with_ids=True))
        (got, _, ids) = batches[0]
        assert [i.decode() for i in ids.numpy()] == [f"img{first}", f"img{first + 1}"]
        for k in range(2):
            expected = resizing.grid_crops(stored[first + k], 16, 1).numpy()[0]
            np.testing.assert_array_equal(got.numpy()[k], expected.astype(np.float32))
    grid = next(iter(make_dataset(cfg, "test", training=False, batch_size=8, manifest=manifest, crops=4)))[0]
    assert grid.shape == (2, 4, 16, 16, 3)
    np.testing.assert_array_equal(grid.numpy()[0], resizing.grid_crops(stored[2], 16, 4).numpy())


@pytest.mark.slow
def test_training_crops_have_the_models_size_and_repeat_for_a_seed(tmp_path):
    index, _ = write_images(tmp_path / "img", SIDES * 3)
    cfg = crop_config(tmp_path, "augment.mode=none", "augment.crop_min_scale=0.5")
    manifest = records.build_records(cfg, index, CLASSES)

    def one_epoch() -> dict[str, np.ndarray]:  # by id: the parallel map may hand the batches out in any order
        dataset = make_dataset(cfg, "train", training=True, batch_size=6, manifest=manifest, with_ids=True)
        crops = {}
        for images, _, ids in dataset:
            crops.update(zip([i.decode() for i in ids.numpy()], images.numpy(), strict=True))
        return crops

    one, two = one_epoch(), one_epoch()
    assert len(one) == len(SIDES * 3) - 4 and next(iter(one.values())).shape == (16, 16, 3)
    assert one.keys() == two.keys() and all(np.array_equal(one[k], two[k]) for k in one)


def test_each_policy_has_its_own_records_folder_and_fingerprint(tmp_path):
    index, _ = write_images(tmp_path / "img")
    base = ["comp=demo", f"data.records_root={tmp_path}", "model.image_size=16"]
    configs = {
        policy: load_config([*base, *extra])
        for policy, extra in (
            ("stretch", []),
            ("pad", ["data.resize=pad"]),
            ("crop", ["data.resize=crop"]),
            ("crop512", ["data.resize=crop", "data.max_side=512"]),
        )
    }
    folders = {policy: records_dir(cfg).parent.name for policy, cfg in configs.items()}
    assert folders == {"stretch": "16", "pad": "16-pad", "crop": "16-crop768", "crop512": "16-crop512"}
    prints = {records.fingerprint(cfg, index, CLASSES) for cfg in configs.values()}
    assert len(prints) == 4
    assert records.fingerprint(load_config([*base, "data.max_side=512"]), index, CLASSES) == records.fingerprint(
        configs["stretch"], index, CLASSES
    )  # max_side means nothing to stretched records: the same records, not a rebuild
    with pytest.raises(KitError) as info:
        read_manifest(records_dir(configs["crop512"]))
    assert "data.resize=crop data.max_side=512 (image size 16)" in info.value.hint


def test_pad_records_hold_letterboxed_images(tmp_path):
    index, images = write_images(tmp_path / "img")
    cfg = load_config(["comp=demo", f"data.records_root={tmp_path}", "model.image_size=16", "data.workers=1", "data.resize=pad"])
    manifest = records.build_records(cfg, index, CLASSES)
    got = next(iter(make_dataset(cfg, "val", training=False, batch_size=8, manifest=manifest)))[0].numpy()
    np.testing.assert_array_equal(got[0], resizing.letterbox(images[0], 16, 0))


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["data.resize=squash"], "data.resize 'squash'"),
        (["data.resize=crop", "predict.crops=5"], "predict.crops=5 is not a square number"),
        (["predict.crops=4"], "predict.crops=4 needs records at native size"),
        (["augment.crop_min_scale=0.5"], "augment.crop_min_scale=0.5 needs records at native size"),
        (["data.resize=crop", "data.max_side=16", "model.image_size=32"], "data.max_side=16 is below model.image_size=32"),
        (["data.resize=crop", "augment.mode=offline"], "augment.mode=offline needs images of one size"),
        (["data.max_side=4"], "data.max_side=4 is outside its allowed range"),
        (["predict.crops=100"], "MAX_CROPS"),
    ],
)
def test_bad_resize_settings_are_one_line_errors(overrides, expected):
    with pytest.raises(KitError) as info:
        load_settings(overrides)
    line = info.value.one_line()
    assert "\n" not in line and expected in line, line


# --- inference over crops --------------------------------------------------------------------------------------


def left_half_model(size: int):
    """A real Keras model: the mean of the left half of its input / 255 (not flip-symmetric), checkable by hand."""
    import keras

    inputs = keras.Input((size, size, 3))
    left = keras.layers.Cropping2D(((0, 0), (0, size // 2)))(inputs)
    mean = keras.layers.Rescaling(1 / 255.0)(keras.layers.GlobalAveragePooling2D()(left))
    return keras.Model(inputs, keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")(mean) / 3.0)


def test_predictions_average_every_crop_and_each_crops_tta_views():
    import tensorflow as tf

    from kit.inference import predict_probabilities

    crops = np.random.default_rng(0).integers(0, 256, (3, 4, 8, 8, 3)).astype(np.float32)  # 3 images, 4 crops each
    dataset = tf.data.Dataset.from_tensor_slices((crops, np.array([b"a", b"b", b"c"]))).batch(2)
    model = left_half_model(8)
    ids, plain = predict_probabilities(model, dataset, (), progress=False)
    assert ids.tolist() == ["a", "b", "c"]
    np.testing.assert_allclose(plain[:, 0], crops[:, :, :, :4].mean(axis=(1, 2, 3, 4)) / 255.0, rtol=1e-5)
    _, flipped = predict_probabilities(model, dataset, ("flip",), progress=False)  # each crop's left and right half
    np.testing.assert_allclose(flipped[:, 0], crops.mean(axis=(1, 2, 3, 4)) / 255.0, rtol=1e-5)


# --- export ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_an_exported_crop_model_predicts_a_raw_image_file_as_kit_predicts_its_records(tmp_path):
    """The export takes S x S pixels; a raw image file, decoded, stored as the records store it and cut by
    kit.data.resizing, gives through the SavedModel what kit predict gives from the records (centre crop and grid)."""
    import keras
    import tensorflow as tf

    from kit.data.images import decode
    from kit.export import EXPORT_JSON, export
    from kit.inference import predict_probabilities, split_dataset
    from kit.io import read_json
    from kit.run_model import load_model, run_config
    from kit.runs import runs_of

    index, _ = write_images(tmp_path / "img")
    cfg = crop_config(tmp_path, f"run.root={tmp_path / 'runs'}", "comp.classes=[real,fake]", "data.image_format=png")
    manifest = records.build_records(cfg, index, CLASSES)
    model = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Rescaling(1 / 255.0), keras.layers.Flatten()])
    model.add(keras.layers.Dense(1, activation="sigmoid", kernel_initializer=keras.initializers.RandomNormal(0, 0.1, seed=3)))
    run = runs_of(cfg) / "r1"
    run.mkdir(parents=True)
    model.save(run / "best.keras")
    (run / "config.yaml").write_text(to_yaml(cfg))

    path = export(cfg, run, "savedmodel")
    assert "crops at native resolution" in read_json(path.parent / EXPORT_JSON)["input"]["pixels"]
    served = tf.saved_model.load(str(path))
    files = index[index["split"] == "test"]["path"].tolist()
    for crops in (1, 4):
        cfg.predict.crops = crops
        run_cfg = run_config(cfg, run)
        ids, probs = predict_probabilities(load_model(run), split_dataset(run_cfg, manifest, "test"), progress=False)
        assert ids.tolist() == ["img2", "img3"]
        for file, expected in zip(files, probs[:, 0], strict=True):
            stored = resizing.within_max_side(decode(file), 16, 40)
            pixels = tf.cast(resizing.grid_crops(stored, 16, crops), tf.float32)
            assert float(tf.reduce_mean(served.serve(pixels))) == pytest.approx(float(expected), abs=1e-6)


def test_kit_show_draws_the_centre_crops_prediction_takes_and_says_so(tmp_path):
    from kit.show import gather, show, title_of

    index, images = write_images(tmp_path / "img")
    cfg = crop_config(tmp_path, f"run.root={tmp_path / 'runs'}", "comp.classes=[real,fake]", "data.image_format=png")
    manifest = records.build_records(cfg, index, CLASSES)
    shown = gather(cfg, manifest, "val", augmented=False, per_class=1)
    np.testing.assert_array_equal(shown["real"].images[0], resizing.grid_crops(images[0], 16, 1).numpy()[0])
    title = title_of(cfg, manifest, "val", False, 2)
    assert "16 px crops at native resolution (records up to 40 px), centre crops, as prediction reads them" in title
    assert show(cfg, "val", per_class=1) == tmp_path / "runs" / "demo" / "show" / "val-16px-crop40.png"


# --- the detection presets -------------------------------------------------------------------------------------

DETECTION_PRESETS = sorted((Path(__file__).resolve().parents[1] / "configs" / "detection").glob("*.yaml"))


@pytest.mark.parametrize("preset", DETECTION_PRESETS, ids=lambda p: p.stem)
def test_each_detection_preset_says_its_resize_policy_and_loads_with_every_competition(preset):
    from kit.config import presets

    assert "# Resize policy: crop." in preset.read_text()  # and why, on the lines that follow
    for comp in presets("competitions"):
        cfg = load_settings([f"comp={comp}", f"model={preset}"])
        assert cfg.data.resize == "crop" and cfg.model.options["stem_stride"] == 1, comp
        assert cfg.model.options["inputs"] == ["rgb", "residual", "fft"] and cfg.augment.jpeg > 0, comp
        assert cfg.data.max_side >= cfg.model.image_size and cfg.predict.crops > 1, comp


def test_the_default_policy_is_the_schemas_and_every_policy_is_a_choice():
    from kit.config import Config
    from kit.config.schema import ResizePolicy

    assert Config().data.resize == resizing.DEFAULT and set(ResizePolicy.__members__) == set(resizing.POLICIES)
