"""The backbone table: every row builds, trains a step, saves and reloads as best.keras does; its facts (hash, file
name, parameter count, preprocessing) agree with Keras; wrong weight files are one line naming what they fit.

Each row is built with weights=none at its smallest input (32 px, or the row's minimum). The smallest row of each
family runs by default: it exercises the family's constructor, preprocessing and post-load fix, and the deeper
rows differ only in depth and width. The others are marked ``large_backbone`` and run with KIT_TEST_LARGE=1.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import COMMAND_TIMEOUT_S

from kit.config import ModelConfig
from kit.errors import KitError
from kit.models.backbones import BACKBONES, PREPROCESSING, by_family, row_settings

RUN_LARGE = os.environ.get("KIT_TEST_LARGE", "").strip() == "1"
SMALLEST = {min(rows, key=lambda row: row.params).name for rows in by_family().values()}


def row_param(name: str):
    if name in SMALLEST:
        return name
    skip = pytest.mark.skipif(not RUN_LARGE, reason="a larger row of a tested family: set KIT_TEST_LARGE=1")
    return pytest.param(name, marks=[pytest.mark.large_backbone, skip])


def model_cfg(name: str, **overrides) -> ModelConfig:
    size = max(32, BACKBONES[name].min_size)
    return ModelConfig(**{"name": name, "image_size": size, "weights": "none", **overrides})


def build(cfg: ModelConfig, num_classes: int = 2):
    from kit.models.registry import build_model

    return build_model(cfg, num_classes)


def pixels(size: int, n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, size, 3)).astype("float32")


@pytest.mark.slow
@pytest.mark.parametrize("name", [row_param(name) for name in BACKBONES])
def test_every_backbone_trains_a_step_saves_and_reloads_the_same(name: str, tmp_path: Path) -> None:
    import keras

    from kit.models.pretrained import first_strided_conv, get_backbone

    row = BACKBONES[name]
    cfg = model_cfg(name)
    model = build(cfg)
    backbone = get_backbone(model)
    assert backbone.count_params() == row.params, "the table's parameter count is stale"
    assert first_strided_conv(backbone).strides == (row.stem_stride, row.stem_stride), "the table's stem stride is stale"
    if row.feature_layer is not None:
        assert backbone.layers[-1].name == row.feature_layer
    preprocessing = [layer.name for layer in model.layers if layer.name.endswith("_preprocess")]
    assert preprocessing == ([] if PREPROCESSING[row.preprocessing] is None else [f"{row.preprocessing}_preprocess"])

    images, labels = pixels(cfg.image_size), np.array([[0.0], [1.0]], "float32")
    head_before = model.get_layer("predictions").get_weights()[0].copy()
    model.compile(keras.optimizers.SGD(0.1), "binary_crossentropy", run_eagerly=True)  # eager: no minute-long trace
    loss = model.train_on_batch(images, labels)
    assert np.isfinite(loss)
    assert not np.array_equal(model.get_layer("predictions").get_weights()[0], head_before)

    path = tmp_path / "best.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, compile=False)
    assert get_backbone(loaded) is not None
    want = np.asarray(model(images, training=False))
    np.testing.assert_allclose(np.asarray(loaded(images, training=False)), want, rtol=1e-6, atol=1e-6)


@pytest.mark.slow
def test_a_backbone_without_weights_learns_its_batchnorm_statistics_as_it_trains() -> None:
    """With model.weights=none there are no ImageNet statistics to keep: BatchNorm must learn them, or a random
    backbone normalises nothing and training learns a constant."""
    import keras

    from kit.models.pretrained import get_backbone

    model = build(model_cfg("mobilenetv3_small"))
    norms = [layer for layer in get_backbone(model).layers if isinstance(layer, keras.layers.BatchNormalization)]

    def statistics() -> list[np.ndarray]:
        return [np.concatenate([layer.moving_mean.numpy(), layer.moving_variance.numpy()]) for layer in norms]

    before = statistics()
    model.compile(keras.optimizers.SGD(0.01), "binary_crossentropy", run_eagerly=True)
    model.train_on_batch(pixels(model.input_shape[1], n=4), np.array([[0.0], [1.0], [0.0], [1.0]], "float32"))
    kept = sum(np.array_equal(now, then) for now, then in zip(statistics(), before, strict=True))
    assert kept == 0, f"{kept} of {len(norms)} BatchNorm layers kept their initial statistics"


# The keras.applications module of each family: Keras' own preprocess_input and source, the oracles for the table.
KERAS_MODULE = {
    "ConvNeXt": "convnext",
    "EfficientNet": "efficientnet",
    "EfficientNetV2": "efficientnet_v2",
    "ResNet": "resnet",
    "ResNetV2": "resnet_v2",
    "DenseNet": "densenet",
    "Xception": "xception",
    "InceptionV3": "inception_v3",
    "MobileNetV3": "mobilenet_v3",
}


@pytest.mark.parametrize("family", list(by_family()))
def test_each_family_preprocessing_is_what_keras_expects(family: str) -> None:
    """Keras' preprocess_input of the family is kit's mode; 'included' families' preprocess_input is the identity."""
    import keras

    row = by_family()[family][0]
    keras_function = getattr(keras.applications, KERAS_MODULE[family]).preprocess_input
    images = pixels(8)
    steps = PREPROCESSING[row.preprocessing]
    if steps is None:
        np.testing.assert_array_equal(keras_function(images.copy()), images)
        return
    from kit.models.pretrained import preprocess

    inputs = keras.Input((8, 8, 3))
    graph = keras.Model(inputs, preprocess(inputs, row.preprocessing))
    np.testing.assert_allclose(graph.predict(images, verbose=0), keras_function(images.copy()), atol=1e-4)


def keras_source(family: str) -> str:
    """The family's keras/src/applications/<module>.py as text (read as data, never imported), strings joined."""
    import keras

    module = "resnet" if family == "ResNetV2" else KERAS_MODULE[family]  # ResNetV2's weights live in resnet.py
    text = (Path(keras.__file__).parent / "src" / "applications" / f"{module}.py").read_text()
    return re.sub(r'"\s*\n\s*"', "", text)


@pytest.mark.parametrize("name", list(BACKBONES))
def test_table_weights_facts_are_keras_own(name: str) -> None:
    import inspect

    import keras

    row = BACKBONES[name]
    text = keras_source(row.family.title)
    assert f'"{row.file_hash}"' in text
    assert row.weights_url in text or f'"{row.family.weights_url}"' in text
    default_name = inspect.signature(getattr(keras.applications, row.constructor)).parameters["name"].default

    def plain(word: str) -> str:
        return re.sub(r"[-_]", "", word.lower())

    assert plain(default_name) in plain(row.weights_file)


def test_every_row_names_known_modes_and_fixes() -> None:
    from kit.models.pretrained import POST_LOAD

    assert len(BACKBONES) >= 25
    for row in BACKBONES.values():
        assert row.preprocessing in PREPROCESSING and row.native_size >= row.min_size
        assert row.post_load is None or row.post_load in POST_LOAD
        assert 0 < row.unfreeze < 100


@pytest.mark.slow
def test_efficientnetv2_scales_its_input_as_its_variant_expects() -> None:
    """EfficientNetV2 picks its input scaling from the model's name: ImageNet mean/std for B0-B3, [-1, 1] for
    S/M/L. Built as "backbone" every variant would take the B-variant scaling; kit keeps Keras' choice."""
    import keras

    from kit.models.backbones import IMAGENET_MEAN_RGB, IMAGENET_STDDEV_RGB
    from kit.models.pretrained import make_backbone

    images = pixels(32)
    for name, expected in [
        ("effnetv2_b0", (images / 255.0 - np.array(IMAGENET_MEAN_RGB)) / np.array(IMAGENET_STDDEV_RGB)),
        ("effnetv2_s", images / 128.0 - 1.0),
    ]:
        backbone = make_backbone(BACKBONES[name], 32)
        stem = keras.Model(backbone.input, backbone.get_layer("stem_conv").input)
        np.testing.assert_allclose(stem.predict(images, verbose=0), expected, atol=1e-4, err_msg=name)


@pytest.mark.slow
def test_keras_notop_h5_format_loads_into_the_backbone(tmp_path: Path) -> None:
    """Keras' *_notop.h5 files are legacy HDF5 model files, loaded by layer order; kit's backbone (the constructor's
    model wrapped under the name "backbone") takes them as the constructor's own model does."""
    import warnings

    import keras

    from kit.models.pretrained import get_backbone

    native = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
    path = tmp_path / "weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        native.save(path)  # the legacy HDF5 format Keras' notop files are in
    loaded = get_backbone(build(model_cfg("mobilenetv3_small", weights=str(path)))).get_weights()
    saved = native.get_weights()
    assert len(loaded) == len(saved) > 100
    for want, got in zip(saved, loaded, strict=True):
        np.testing.assert_array_equal(got, want)


def test_presets_agree_with_their_rows() -> None:
    import yaml

    for name in ("effnetb4", "resnet50"):
        preset = yaml.safe_load((Path(__file__).parents[1] / "configs" / "models" / f"{name}.yaml").read_text())
        row = row_settings(name)
        assert {key: preset["model"][key] for key in row["model"]} == row["model"]
        assert preset["train"]["fine_tune"] == row["train"]["fine_tune"]
    assert row_settings("cnn") is None


@pytest.mark.slow
def test_a_row_without_a_preset_yaml_is_a_model_of_its_own() -> None:
    """`model=convnext_tiny` works without configs/models/convnext_tiny.yaml: defaults/backbone.yaml, then the row
    (native size, ImageNet weights, phase 2 unfreezing its top layers); the command line still wins, a preset YAML
    of the same name wins over the row, and a misspelt row name suggests the rows."""
    from kit.config import load_config_with_origins
    from kit.models.backbones import row_presets
    from kit.settings import load_settings

    row = BACKBONES["convnext_tiny"]
    cfg = load_settings(["model=convnext_tiny"])
    assert (cfg.model.name, cfg.model.image_size, cfg.model.weights) == ("convnext_tiny", row.native_size, "imagenet")
    assert cfg.train.fine_tune.unfreeze == row.unfreeze and cfg.train.fine_tune.epochs > 0
    assert cfg.model.dense_units == 256 and cfg.train.batch_size == 16  # configs/defaults/backbone.yaml
    _, origins = load_config_with_origins(["model=convnext_tiny"], model_defaults=row_presets())
    assert origins["model.image_size"] == "backbone table row convnext_tiny (kit list)"
    assert origins["train.batch_size"].endswith("defaults/backbone.yaml")
    assert load_settings(["model=convnext_tiny", "model.image_size=64"]).model.image_size == 64
    assert load_settings(["model=effnetb4"]).train.schedule == "cosine_restarts"  # its own YAML preset
    with pytest.raises(KitError) as misspelt:
        load_settings(["model=convnext_tinny"])
    assert "convnext_tiny" in misspelt.value.one_line()


# --- wrong weight files ---------------------------------------------------------------------------------------


def hdf5_file(path: Path, value: float = 1.0) -> Path:
    import h5py

    with h5py.File(path, "w") as handle:
        handle["x"] = np.full(4, value, "float32")
    return path


def wrong_files(folder: Path, file_name: str) -> list[tuple[str, Path]]:
    """(what, path) for a directory, an empty file, non-HDF5 bytes and an HDF5 file that is no backbone's, each
    at ``<folder>/<what>/models/<file_name>``: a Keras home per kind of wrong file."""
    made = []
    for what in ("directory", "empty", "text", "hdf5"):
        path = folder / what / "models" / file_name
        path.parent.mkdir(parents=True)
        if what == "directory":
            path.mkdir()
        elif what == "empty":
            path.touch()
        elif what == "text":
            path.write_bytes(b"<html>404 not found</html>")
        else:
            hdf5_file(path)
        made.append((what, path))
    return made


EXPECTED = {"directory": "is a directory", "empty": "is empty", "text": "is not an HDF5 file", "hdf5": "hash differs"}


def test_wrong_file_in_the_keras_cache_is_one_line_naming_it(tmp_path: Path, monkeypatch) -> None:
    spec = BACKBONES["effnetb0"]
    for what, path in wrong_files(tmp_path, spec.weights_file):
        monkeypatch.setenv("KERAS_HOME", str(tmp_path / what))
        with pytest.raises(KitError) as err:
            build(model_cfg("effnetb0", weights="imagenet"))
        text = err.value.one_line()
        assert str(path) in text and EXPECTED[what] in text and "effnetb0" in text, text
        assert "\n" not in text


def test_another_backbones_keras_file_is_named_by_its_hash(tmp_path: Path) -> None:
    """The table finds a file by the hash Keras publishes; a stand-in row carries the hash of a small file."""
    from kit.models.weights import check_cached, digests, fits

    path = hdf5_file(tmp_path / "efficientnetb0_notop.h5")
    md5 = next(d for d in digests(path) if len(d) == 32)
    stand_in = dataclasses.replace(BACKBONES["resnet50"], file_hash=md5)
    with pytest.raises(KitError) as err:
        check_cached(path, BACKBONES["effnetb0"], rows=[BACKBONES["effnetb0"], stand_in])
    text = err.value.one_line()
    assert str(path) in text and "is the resnet50 notop file (resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5)" in text
    assert "not the effnetb0 weights" in text
    assert fits(path, rows=[stand_in]).startswith("it is the resnet50 notop file")
    assert fits(path) == "it is none of the table's Keras notop files"
    check_cached(path, stand_in)  # its own file passes


@pytest.mark.parametrize("what", ["directory", "empty", "text"])
def test_wrong_weights_path_is_one_line_before_building(what: str, tmp_path: Path) -> None:
    path = dict(wrong_files(tmp_path, "b.weights.h5"))[what]
    with pytest.raises(KitError) as err:
        build(model_cfg("effnetb0", weights=str(path)))
    text = err.value.one_line()
    assert str(path) in text and EXPECTED[what] in text and "fits no backbone" in text, text


@pytest.mark.slow
def test_another_backbones_weights_path_names_the_backbone_it_was_given_for(tmp_path: Path) -> None:
    from kit.models.pretrained import get_backbone

    path = tmp_path / "mobile.weights.h5"
    get_backbone(build(model_cfg("mobilenetv3_small"))).save_weights(path)
    with pytest.raises(KitError) as err:
        build(model_cfg("effnetb0", weights=str(path)))
    text = err.value.one_line()
    assert f"weights file {path} does not fit the effnetb0 backbone" in text and "none of the table's" in text


@pytest.mark.slow
def test_kit_list_groups_the_backbones_by_family_with_native_size_and_parameters() -> None:
    result = subprocess.run([sys.executable, "-m", "kit", "list"], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    lines = [line.strip() for line in result.stdout.splitlines()]
    for family, rows in by_family().items():
        start = lines.index(family)
        for offset, row in enumerate(rows, start=1):
            assert lines[start + offset].split() == [row.name, str(row.native_size), "px", f"{row.params / 1e6:.1f}", "M"]


@pytest.mark.slow
def test_weights_list_prints_every_backbone_file_presence_and_size(tmp_path: Path) -> None:
    models = tmp_path / "models"
    models.mkdir()
    hdf5_file(models / BACKBONES["effnetb0"].weights_file)
    (models / BACKBONES["resnet50"].weights_file).mkdir()
    (models / BACKBONES["densenet121"].weights_file).touch()
    env = {**os.environ, "KERAS_HOME": str(tmp_path)}
    for verify in ([], ["--verify"]):
        result = subprocess.run(
            [sys.executable, "-m", "kit", "weights", "list", *verify],
            capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, env=env,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        keras_files = result.stdout.split("keras-hub presets:")[0]  # the hub rows' presets follow (test_hub_backbones)
        lines = {line.split()[0]: line for line in keras_files.splitlines()[2:]}
        assert set(lines) == set(BACKBONES)
        for name, row in BACKBONES.items():
            assert row.weights_file in lines[name]
        size = (models / BACKBONES["effnetb0"].weights_file).stat().st_size
        assert ("hash differs" if verify else "present") in lines["effnetb0"] and f"{size / 1e6:.1f} MB" in lines["effnetb0"]
        assert "is a directory" in lines["resnet50"] and "is empty" in lines["densenet121"]
        assert "missing" in lines["convnext_tiny"] and lines["convnext_tiny"].rstrip().endswith("-")
