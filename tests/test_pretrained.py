"""Pretrained backbones at tiny inputs with weights=none: head, preprocessing, weights files, freezing."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from conftest import COMMAND_TIMEOUT_S

from kit.config import ModelConfig
from kit.errors import KitError

SIZE = 32  # the smallest input keras.applications accept; 380/224 would be far too slow here


def model_cfg(name: str, **overrides) -> ModelConfig:
    return ModelConfig(**{"name": name, "image_size": SIZE, "weights": "none", **overrides})


def build(cfg: ModelConfig, num_classes: int = 2):
    from kit.models.registry import build_model

    return build_model(cfg, num_classes)


def pixels(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["effnetb4", "resnet50"])
def test_builds_with_named_backbone_and_head(name: str) -> None:
    import keras

    from kit.models.pretrained import get_backbone

    model = build(model_cfg(name, dropout=0.2, dense_units=8), 5)
    backbone = get_backbone(model)
    assert isinstance(backbone, keras.Model) and backbone.name == "backbone"
    assert [layer.name for layer in model.layers[-5:]] == ["gap", "head_dropout", "head_dense", "dense_dropout", "predictions"]
    prob = model.predict(pixels(), verbose=0)
    assert prob.shape == (2, 5) and prob.dtype == np.float32
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)
    # EfficientNet normalizes its own 0-255 input; nothing else may rescale in front of it.
    if name == "effnetb4":
        assert model.layers[1] is backbone


@pytest.mark.slow
def test_output_is_float32_under_mixed_precision() -> None:
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build(model_cfg("resnet50"))
        assert model.output.dtype == "float32"
        assert model.get_layer("predictions").compute_dtype == "float32"
        assert model.predict(pixels(), verbose=0).dtype == np.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.slow
def test_resnet50_preprocessing_equals_keras_preprocess_input() -> None:
    import keras

    model = build(model_cfg("resnet50"))
    preprocess = keras.Model(model.input, model.get_layer("caffe_preprocess").output)
    images = pixels(3)
    expected = keras.applications.resnet50.preprocess_input(images.copy())
    np.testing.assert_allclose(preprocess.predict(images, verbose=0), expected, atol=1e-4)


@pytest.mark.slow
def test_backbone_weights_file_round_trip_and_mismatch(tmp_path: Path) -> None:
    from kit.models.pretrained import get_backbone

    source = build(model_cfg("resnet50"))
    path = tmp_path / "b.weights.h5"
    get_backbone(source).save_weights(path)
    loaded = get_backbone(build(model_cfg("resnet50", weights=str(path))))
    saved = get_backbone(source).get_weights()
    assert len(saved) == len(loaded.get_weights()) > 100
    for want, got in zip(saved, loaded.get_weights(), strict=True):
        np.testing.assert_array_equal(got, want)

    with pytest.raises(KitError, match="does not fit the effnetb4 backbone"):
        build(model_cfg("effnetb4", weights=str(path)))
    with pytest.raises(KitError, match="no such file"):
        build(model_cfg("resnet50", weights=str(tmp_path / "missing.weights.h5")))


@pytest.mark.slow
def test_efficientnet_file_in_keras_convention_is_normalized_like_keras(tmp_path: Path) -> None:
    """Keras' EfficientNet files hold the ImageNet std as 'variance' (tensorflow#49930); the stem must
    still compute (x/255 - mean) / std, as EfficientNetB4(weights="imagenet") does."""
    import keras

    from kit.models.backbones import IMAGENET_MEAN_RGB, IMAGENET_STDDEV_RGB
    from kit.models.pretrained import get_backbone

    source = get_backbone(build(model_cfg("effnetb4")))
    norm = next(layer for layer in source.layers if isinstance(layer, keras.layers.Normalization))
    norm.set_weights([np.array(IMAGENET_MEAN_RGB, "float32"), np.array(IMAGENET_STDDEV_RGB, "float32"), np.array(1, "int64")])
    path = tmp_path / "effnet_keras_style.weights.h5"
    source.save_weights(path)

    backbone = get_backbone(build(model_cfg("effnetb4", weights=str(path))))
    stem = keras.Model(
        backbone.input, next(layer for layer in backbone.layers if isinstance(layer, keras.layers.Normalization)).output
    )
    images = pixels()
    expected = (images / 255.0 - np.array(IMAGENET_MEAN_RGB)) / np.array(IMAGENET_STDDEV_RGB)
    np.testing.assert_allclose(stem.predict(images, verbose=0), expected, atol=1e-4)
    conv = "stem_conv"
    np.testing.assert_array_equal(backbone.get_layer(conv).get_weights()[0], source.get_layer(conv).get_weights()[0])


@pytest.mark.parametrize(
    ("name", "file_name"),
    [("effnetb4", "efficientnetb4_notop.h5"), ("resnet50", "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5")],
)
def test_imagenet_offline_without_cache_names_the_file(name: str, file_name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.setenv("KIT_OFFLINE", "1")
    with pytest.raises(KitError) as err:
        build(model_cfg(name, weights="imagenet"))
    text = err.value.one_line()
    assert file_name in text
    assert str(tmp_path / "models") in text
    assert "model.weights=<path" in text


@pytest.mark.slow
def test_freeze_and_unfreeze_top(tmp_path: Path) -> None:
    import keras

    from kit.models.pretrained import freeze_backbone, get_backbone, unfreeze_top

    model = build(model_cfg("resnet50", dense_units=8))
    backbone = get_backbone(model)
    head = {id(v) for name in ("head_dense", "predictions") for v in model.get_layer(name).trainable_weights}
    bn = (keras.layers.BatchNormalization,)

    assert freeze_backbone(model)
    assert {id(v) for v in model.trainable_weights} == head

    n = 12
    assert unfreeze_top(model, n)
    top = backbone.layers[-n:]
    expected = head | {id(v) for layer in top if not isinstance(layer, bn) for v in layer.weights}
    assert len(expected) > len(head)
    assert {id(v) for v in model.trainable_weights} == expected
    assert not any(layer.trainable for layer in backbone.layers if isinstance(layer, bn))

    unfreeze_top(model, -1)
    everything = head | {id(v) for layer in backbone.layers if not isinstance(layer, bn) for v in layer.weights}
    assert {id(v) for v in model.trainable_weights} == everything
    assert not any(isinstance(layer, bn) and layer.trainable for layer in backbone.layers)

    assert freeze_backbone(model)
    assert {id(v) for v in model.trainable_weights} == head
    with pytest.raises(KitError):
        unfreeze_top(model, -2)

    from kit.models.registry import build_model

    scratch = build_model(ModelConfig(name="cnn", image_size=16, options={"filters": [4]}), 2)
    assert get_backbone(scratch) is None and not freeze_backbone(scratch) and not unfreeze_top(scratch, 3)


@pytest.mark.slow
def test_saves_and_loads_in_a_fresh_python_without_kit(tmp_path: Path) -> None:
    """The .keras file needs no custom objects: a new interpreter that never imports kit loads it."""
    model = build(model_cfg("resnet50", dense_units=4))
    path = tmp_path / "resnet50.keras"
    model.save(path)
    images = pixels(2)
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "want.npy", model.predict(images, verbose=0))
    script = textwrap.dedent(
        f"""
        import sys, numpy as np, keras
        model = keras.models.load_model({str(path)!r})
        got = model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0)
        assert "kit" not in sys.modules
        np.testing.assert_allclose(got, np.load({str(tmp_path / "want.npy")!r}), atol=1e-5)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-2000:]


def test_pretrained_models_refuse_unknown_options_and_small_images() -> None:
    with pytest.raises(KitError, match="model.options.depth"):
        build(model_cfg("effnetb4", options={"depth": 3}))
    with pytest.raises(KitError, match=">= 32"):
        build(model_cfg("resnet50", image_size=16))
