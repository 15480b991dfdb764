"""Scratch models (ResNet-9, ResNet20, CNN, LSTM) and the registry: the model contract, learning, saving, options."""

from __future__ import annotations

import numpy as np
import pytest

from kit.config import ModelConfig
from kit.errors import KitError

SCRATCH = ["resnet9", "resnet20", "cnn", "lstm"]
# Small but real settings: tiny images, narrow layers, so each test runs in seconds on 2 shared cores.
SMALL = {
    "resnet9": {"options": {"widths": [8, 8, 16, 16]}},
    "resnet20": {"options": {"blocks": 1}},
    "cnn": {"options": {"filters": [8, 16]}, "dense_units": 16},
    "lstm": {"options": {"units": [16, 16]}},
}


def model_cfg(name: str, size: int = 16, **overrides) -> ModelConfig:
    settings = {"name": name, "image_size": size, **SMALL.get(name, {}), **overrides}
    return ModelConfig(**settings)


def build(cfg: ModelConfig, num_classes: int):
    from kit.models.registry import build_model

    return build_model(cfg, num_classes)


def bright_vs_dark(n: int = 64, size: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A trivially learnable set: class 1 images are bright (155-255), class 0 dark (0-100)."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 2).astype("float32")
    low = np.where(labels == 1, 155.0, 0.0)[:, None, None, None]
    images = (low + rng.uniform(0, 100, (n, size, size, 3))).astype("float32")
    return images, labels[:, None]


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRATCH)
def test_output_contract(name: str) -> None:
    images, _ = bright_vs_dark(4)
    binary = build(model_cfg(name), 2)
    assert binary.input_shape == (None, 16, 16, 3)
    prob = binary.predict(images, verbose=0)
    assert prob.shape == (4, 1) and prob.dtype == np.float32
    assert binary.layers[-1].activation.__name__ == "sigmoid"
    assert np.all((prob >= 0) & (prob <= 1))

    multi = build(model_cfg(name), 10)
    prob = multi.predict(images, verbose=0)
    assert prob.shape == (4, 10) and prob.dtype == np.float32
    np.testing.assert_allclose(prob.sum(axis=1), 1.0, rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("name", SCRATCH)
def test_learns_then_saves_and_loads(name: str, tmp_path) -> None:
    import keras

    keras.utils.set_random_seed(0)
    images, labels = bright_vs_dark(64)
    model = build(model_cfg(name, dropout=0.1), 2)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="binary_crossentropy")
    history = model.fit(images, labels, batch_size=16, epochs=6, verbose=0)
    losses = history.history["loss"]
    assert losses[-1] < 0.8 * losses[0], losses

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # no custom_objects: only built-in layers
    np.testing.assert_allclose(loaded.predict(images[:8], verbose=0), model.predict(images[:8], verbose=0), atol=1e-6)


@pytest.mark.parametrize("name", SCRATCH)
def test_output_is_float32_under_mixed_precision(name: str) -> None:
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build(model_cfg(name), 3)
        assert model.layers[-1].compute_dtype == "float32"
        assert model.output.dtype == "float32"
        assert any(layer.compute_dtype == "float16" for layer in model.layers)  # the body does use float16
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    ("name", "typo", "suggestion"),
    [("resnet9", "width", "widths"), ("resnet20", "block", "blocks"), ("cnn", "filter", "filters"), ("lstm", "unit", "units")],
)
def test_unknown_option_suggests_the_nearest(name: str, typo: str, suggestion: str) -> None:
    with pytest.raises(KitError) as err:
        build(model_cfg(name, options={typo: 1}), 2)
    assert f"model.options.{typo}" in err.value.message
    assert f"model.options.{suggestion}" in err.value.hint


def test_bad_option_values_are_kit_errors() -> None:
    with pytest.raises(KitError, match="positive integers"):
        build(model_cfg("lstm", options={"units": [16, 0]}), 2)
    with pytest.raises(KitError, match="too many"):
        build(model_cfg("cnn", size=8, options={"filters": [4, 4, 4, 4]}), 2)
    with pytest.raises(KitError, match="at least 2 classes"):
        build(model_cfg("cnn"), 1)


@pytest.mark.slow
def test_resnet20_has_the_papers_shape() -> None:
    """He et al. 2016, sec. 4.2: 20 weighted layers and 0.27M parameters for CIFAR-10."""
    import keras

    model = build(ModelConfig(name="resnet20", image_size=32, l2=1e-4), 10)
    assert 0.26e6 < model.count_params() < 0.28e6, model.count_params()
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3)]
    assert len(convs) + 1 == 20  # 19 3x3 convs + the classifier; 1x1 projections are not counted
    assert model.get_layer("stage3_block1_proj").strides == (2, 2)
    assert model.get_layer("gap").output.shape == (None, 64)
    assert len(model.losses) > 0  # L2 terms are in place


@pytest.mark.slow
@pytest.mark.parametrize("size", [28, 32, 64])
def test_resnet9_has_myrtles_shape_at_kaggle_sizes(size: int) -> None:
    """Page's ResNet-9 at kit's CPU widths 16-32-64-128: 8 3x3 convs + the classifier, three 2x2 pools, a global
    max pool, two residual adds and the logits scaled by 0.125; any side from 28 to 64 px gives (None, 10)."""
    import keras

    model = build(ModelConfig(name="resnet9", image_size=size), 10)
    assert model.output.shape == (None, 10)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]
    assert [layer.filters for layer in convs] == [16, 32, 32, 32, 64, 128, 128, 128]
    assert sum(isinstance(layer, keras.layers.Add) for layer in model.layers) == 2
    assert model.get_layer("layer3_add").output.shape == (None, size // 8, size // 8, 128)
    assert model.get_layer("global_max_pool").output.shape == (None, 128)
    assert model.get_layer("head_scale").scale == 0.125
    # A quarter of myrtle's widths: about a sixteenth of its 6.6M parameters.
    assert 0.40e6 < model.count_params() < 0.42e6, model.count_params()
    wide = build(ModelConfig(name="resnet9", image_size=32, options={"widths": [64, 128, 256, 512]}), 10)
    assert 6.5e6 < wide.count_params() < 6.6e6, wide.count_params()
    images, _ = bright_vs_dark(2, size=size)
    np.testing.assert_allclose(model.predict(images, verbose=0).sum(axis=1), 1.0, rtol=1e-5)


def test_resnet9_bad_options_are_kit_errors() -> None:
    with pytest.raises(KitError, match="needs 4 widths"):
        build(model_cfg("resnet9", options={"widths": [8, 8, 16]}), 2)
    with pytest.raises(KitError, match="head_scale"):
        build(model_cfg("resnet9", options={"head_scale": 0}), 2)


def test_lstm_bidirectional_option() -> None:
    model = build(model_cfg("lstm", options={"units": [8], "bidirectional": True}), 2)
    assert model.get_layer("bilstm1").output.shape == (None, 16)


@pytest.mark.slow
def test_registry_builds_every_scratch_model_and_takes_the_backbones_from_their_table() -> None:
    """Every pretrained entry is a row of a backbone table (tests/test_backbones.py, test_hub_backbones.py build
    each) or fusion, which puts rows side by side (tests/test_forensic_models.py); scratch ones build here."""
    from kit.models.backbones import BACKBONES
    from kit.models.hub_backbones import HUB_BACKBONES
    from kit.models.pretrained import get_backbone
    from kit.models.registry import MODELS

    assert {name for name, entry in MODELS.items() if not entry.pretrained} == set(SCRATCH)
    assert {name for name, entry in MODELS.items() if entry.pretrained} == {*BACKBONES, *HUB_BACKBONES, "fusion"}
    assert {"effnetb4", "resnet50"} <= set(BACKBONES)  # the names presets and saved runs use
    for name in [*SCRATCH, "resnet50"]:
        size = 32 if MODELS[name].pretrained else 16  # keras.applications need >= 32 px
        model = build(model_cfg(name, size=size), 2)
        assert model.output.shape == (None, 1), name
        assert (get_backbone(model) is not None) == MODELS[name].pretrained, name
