"""Models that keep the evidence: forensic input streams (noise residual, log spectrum), stride-1 stems that keep the
pretrained kernels, and several backbones fused under one head. The fixed layers' numbers against numpy, shapes,
determinism for a seed, the two training phases, save and load, export in each runtime, and one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import numpy as np
import pytest
from conftest import COMMAND_TIMEOUT_S
from run_fixtures import SIZE, make_config, make_run, random_images, write_split
from test_export import _run_in_own_runtime

from kit.config import Config, ModelConfig
from kit.errors import KitError

STREAMS = {"inputs": ["rgb", "residual", "fft"], "stream_widths": [4, 8]}
# Narrow scratch nets: each test runs in seconds on 2 shared cores.
NARROW = {"resnet9": {"widths": [4, 4, 8, 8]}, "resnet20": {"blocks": 1, "filters": [4, 8, 8]}, "cnn": {"filters": [4, 8]}}
FUSED = ["mobilenetv3_small", "effnetb0"]  # the two smallest families with their own normalisation and post-load fix


def model_cfg(name: str, size: int = 16, **options) -> ModelConfig:
    return ModelConfig(name=name, image_size=size, weights="none", options={**NARROW.get(name, {}), **options})


def build(cfg: ModelConfig, num_classes: int = 2):
    from kit.models.registry import build_model

    return build_model(cfg, num_classes)


def pixels(size: int, n: int = 2, seed: int = 0, width: int | None = None) -> np.ndarray:
    return np.random.default_rng(seed).uniform(0, 255, (n, size, width or size, 3)).astype("float32")


# --- the fixed layers -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("height", "width"), [(8, 8), (7, 9)])
def test_log_spectrum_is_the_centred_orthonormal_fft_magnitude_of_the_grey_image(height: int, width: int) -> None:
    from kit.models.forensic import LUMA_RGB, LogSpectrum

    images = pixels(height, width=width)
    got = np.asarray(LogSpectrum()(images))
    grey = images @ np.array(LUMA_RGB, "float32")
    magnitude = np.abs(np.fft.fft2(grey)) / np.sqrt(height * width)
    want = np.log1p(np.fft.fftshift(magnitude, axes=(1, 2)))
    assert got.shape == (2, height, width, 1)
    np.testing.assert_allclose(got[..., 0], want, atol=2e-5)
    assert want[0, height // 2, width // 2] == want[0].max()  # the zero frequency sits in the middle


def test_band_mask_keeps_only_the_radii_in_the_band() -> None:
    from kit.models.forensic import LogSpectrum

    images = pixels(16)
    full = np.asarray(LogSpectrum()(images))[..., 0]
    banded = np.asarray(LogSpectrum(band=[0.5, 1.0])(images))[..., 0]
    fy, fx = np.meshgrid(np.arange(16) - 8, np.arange(16) - 8, indexing="ij")
    radius = np.sqrt(fy**2 + fx**2) / 8  # in Nyquist units: 8 cycles in 16 px
    inside = (radius >= 0.5) & (radius <= 1.0)
    np.testing.assert_array_equal(banded[:, inside], full[:, inside])
    assert not banded[:, ~inside].any() and full[:, ~inside].all()
    assert 0 < inside.sum() < inside.size


def test_noise_residual_is_each_srm_kernel_on_each_channel_truncated() -> None:
    import keras

    from kit.models.forensic import SRM_KERNELS, NoiseResidual

    images = pixels(12)
    layer = NoiseResidual()
    got = np.asarray(layer(images))
    assert got.shape == (2, 12, 12, 9) and not layer.weights  # fixed: nothing to train or save
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)))
    windows = np.lib.stride_tricks.sliding_window_view(padded, (5, 5), axis=(1, 2))  # (n, 12, 12, 3, 5, 5)
    for channel in range(3):
        for k, kernel in enumerate(SRM_KERNELS):
            want = np.clip((windows[:, :, :, channel] * kernel).sum(axis=(-2, -1)), -3, 3) / 3
            np.testing.assert_allclose(got[..., 3 * channel + k], want, atol=1e-5)
    flat = np.asarray(layer(np.full((1, 12, 12, 3), 200.0, "float32")))
    assert np.abs(flat[:, 2:-2, 2:-2]).max() < 1e-5  # each kernel sums to 0: a flat image has no residual inside
    assert keras.saving.get_registered_object("kit>NoiseResidual") is NoiseResidual


# --- streams beside the network -----------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet9", "resnet20", "cnn", "mobilenetv3_small"])
def test_streams_are_pooled_beside_the_network_features_before_the_head(name: str) -> None:
    size = 32 if name == "mobilenetv3_small" else 16
    plain = build(model_cfg(name, size))
    model = build(model_cfg(name, size, **STREAMS))
    features = plain.get_layer("predictions").input.shape[-1]
    assert model.get_layer("fused_features").output.shape[-1] == features + 2 * 8  # two streams of 8 pooled features
    assert model.get_layer("predictions").input.shape[-1] == features + 16
    assert not model.get_layer("noise_residual").weights and not model.get_layer("log_spectrum").weights
    assert model.input_shape == (None, size, size, 3)  # still raw pixels only
    prob = np.asarray(model.predict(pixels(size), verbose=0))
    assert prob.shape == (2, 1) and np.all((prob >= 0) & (prob <= 1))
    assert build(model_cfg(name, size, inputs="rgb")).count_params() == plain.count_params()


@pytest.mark.slow
def test_same_seed_builds_the_same_model_and_predictions() -> None:
    import keras

    def made(seed: int) -> tuple[list[np.ndarray], np.ndarray]:
        keras.utils.set_random_seed(seed)
        model = build(model_cfg("resnet9", **STREAMS))
        return model.get_weights(), np.asarray(model(pixels(16), training=False))

    (weights, prob), (weights_again, prob_again), (_, other) = made(5), made(5), made(6)
    for a, b in zip(weights, weights_again, strict=True):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(prob, prob_again)
    assert not np.array_equal(prob, other)


@pytest.mark.slow
def test_forensic_layers_compute_in_float32_under_mixed_precision() -> None:
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build(model_cfg("cnn", **STREAMS), 3)
        assert model.get_layer("log_spectrum").compute_dtype == "float32"
        assert model.get_layer("noise_residual").compute_dtype == "float32"
        assert model.get_layer("fft_conv1").compute_dtype == "float16" and model.output.dtype == "float32"
        assert np.isfinite(np.asarray(model.predict(pixels(16), verbose=0))).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


# --- stride-1 stems ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("name", "stem", "stride"), [("resnet50", "conv1_conv", 2), ("convnext_tiny", "convnext_tiny_stem", 4)])
def test_stride_one_stem_has_the_same_kernels_and_sees_every_pixel(name: str, stem: str, stride: int) -> None:
    """With the row's weights copied over, the stride-1 stem's output at every ``stride``-th pixel is the strided stem's
    output: the same kernels, no pixel skipped. ConvNeXt's stem sits in a nested Sequential (with a per-pixel
    LayerNorm, which commutes with the subsampling)."""
    import keras

    from kit.models.backbones import BACKBONES
    from kit.models.pretrained import get_backbone

    assert BACKBONES[name].stem_stride == stride
    strided, full = (get_backbone(build(model_cfg(name, 32, stem_stride=s))) for s in (None, 1))
    full.set_weights(strided.get_weights())  # the same shapes in the same order: what a weights file loads
    images = pixels(32)
    coarse = np.asarray(keras.Model(strided.input, strided.get_layer(stem).output)(images))
    fine = np.asarray(keras.Model(full.input, full.get_layer(stem).output)(images))
    np.testing.assert_allclose(fine[:, ::stride, ::stride], coarse, atol=1e-3)
    assert full.count_params() == strided.count_params() == BACKBONES[name].params


@pytest.mark.slow
def test_stride_one_backbone_loads_weight_files_saved_at_the_rows_stride(tmp_path: Path) -> None:
    """A kit .weights.h5 of the backbone and Keras' legacy notop .h5 (ImageNet files' format) both load."""
    import keras

    from kit.models.pretrained import get_backbone

    saved = get_backbone(build(model_cfg("mobilenetv3_small", 32)))
    saved.save_weights(tmp_path / "b.weights.h5")
    native = keras.applications.MobileNetV3Small(include_top=False, weights=None, input_shape=(32, 32, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        native.save(tmp_path / "notop.h5")
    for path, want in [(tmp_path / "b.weights.h5", saved.get_weights()), (tmp_path / "notop.h5", native.get_weights())]:
        model = build(ModelConfig(name="mobilenetv3_small", image_size=32, weights=str(path), options={"stem_stride": 1}))
        backbone = get_backbone(model)
        assert backbone.get_layer("conv").strides == (1, 1)
        got = backbone.get_weights()
        assert len(got) == len(want) > 100
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


@pytest.mark.slow
@pytest.mark.parametrize(("name", "stem"), [("resnet9", "prep_conv"), ("resnet20", "stem_conv"), ("cnn", "block1_conv1")])
def test_scratch_stem_stride_is_one_by_default_and_two_halves_the_first_maps(name: str, stem: str) -> None:
    assert build(model_cfg(name)).get_layer(stem).output.shape[1] == 16
    model = build(model_cfg(name, stem_stride=2))
    assert model.get_layer(stem).output.shape[1] == 8
    assert model.predict(pixels(16), verbose=0).shape == (2, 1)


# --- two backbones -----------------------------------------------------------------------------------------------------


def fusion_cfg(**options) -> ModelConfig:
    return ModelConfig(name="fusion", image_size=32, weights="none", options={"backbones": FUSED, **options})


@pytest.mark.slow
def test_fusion_puts_the_backbones_under_one_head_and_both_follow_the_two_phases() -> None:
    import keras

    from kit.models.pretrained import freeze_backbone, get_backbone, get_backbones, unfreeze_top
    from kit.train.phases import plan_phases

    model = build(fusion_cfg(inputs=["rgb", "residual"], stream_widths=[4]), 3)
    backbones = get_backbones(model)
    assert [b.name for b in backbones] == ["backbone", "backbone_2"] and get_backbone(model) is backbones[0]
    assert model.get_layer("predictions").input.shape[-1] == sum(b.output.shape[-1] for b in backbones) + 4
    cfg = Config()
    cfg.train.fine_tune.epochs = 1
    assert [phase.index for phase in plan_phases(cfg, model)] == [1, 2]

    def trainable() -> set[int]:
        return {id(v) for v in model.trainable_weights}

    def weights_of(layers) -> set[int]:
        return {id(v) for layer in layers for v in layer.weights}

    assert freeze_backbone(model)
    head = trainable()
    assert head and not head & weights_of(backbones)
    assert weights_of([model.get_layer("residual_conv1"), model.get_layer("predictions")]) <= head
    assert unfreeze_top(model, 6)
    bn = keras.layers.BatchNormalization
    for backbone in backbones:
        top = [layer for layer in backbone.layers[-6:] if not isinstance(layer, bn)]
        assert weights_of(top) and weights_of(top) <= trainable(), backbone.name
        assert not weights_of(backbone.layers[:-6]) & trainable()

    images, labels = pixels(32, 4), keras.utils.to_categorical([0, 1, 2, 0], 3)
    model.compile(keras.optimizers.SGD(0.1), "categorical_crossentropy", run_eagerly=True)
    before = [np.array(v) for v in backbones[1].trainable_weights]
    assert np.isfinite(model.train_on_batch(images, labels))
    assert not any(np.array_equal(a, np.array(v)) for a, v in zip(before, backbones[1].trainable_weights, strict=True))


@pytest.mark.slow
def test_fusion_with_streams_best_keras_loads_in_a_fresh_process_through_kit_runs(tmp_path: Path) -> None:
    model = build(fusion_cfg(**STREAMS, stem_stride=1))
    run = tmp_path / "run"
    run.mkdir()
    model.save(run / "best.keras")
    images = pixels(32, 3)
    np.save(tmp_path / "x.npy", images)
    np.save(tmp_path / "want.npy", model.predict(images, verbose=0))
    script = textwrap.dedent(
        f"""
        import numpy as np
        from kit.models.pretrained import get_backbones
        from kit.run_model import load_model
        model = load_model({str(run)!r})
        got = model.predict(np.load({str(tmp_path / "x.npy")!r}), verbose=0)
        np.testing.assert_allclose(got, np.load({str(tmp_path / "want.npy")!r}), atol=1e-6)
        assert [backbone.name for backbone in get_backbones(model)] == ["backbone", "backbone_2"]
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]


# --- export --------------------------------------------------------------------------------------------------------------


def exported_difference(tmp_path: Path, model_settings: ModelConfig, fmt: str, size: int = SIZE) -> float:
    """Export a run whose best.keras is the model of ``model_settings`` and run the file in its own runtime."""
    from kit.export import export

    cfg = make_config(tmp_path, ["neg", "pos"])
    cfg.model = model_settings
    write_split(cfg, "val", random_images(12, seed=4), np.arange(12) % 2, [f"v{i}" for i in range(12)])
    model = build(cfg.model)
    run = make_run(cfg, tmp_path / "runs" / "r1", model)
    path = export(cfg, run, fmt)
    images = pixels(size, 6, seed=9)
    return float(np.abs(_run_in_own_runtime(fmt, path, images) - model.predict_on_batch(images)).max())


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["savedmodel", "tflite", "onnx"])
def test_forensic_streams_export_and_run_in_each_runtime(tmp_path: Path, fmt: str) -> None:
    settings = ModelConfig(name="cnn", image_size=SIZE, options={"filters": [4], **STREAMS, "stream_widths": [4]})
    assert exported_difference(tmp_path, settings, fmt) < 1e-5


@pytest.mark.slow
def test_fusion_with_a_stride_one_stem_exports_to_onnx(tmp_path: Path) -> None:
    settings = ModelConfig(name="fusion", image_size=SIZE * 4, options={"backbones": FUSED, "stem_stride": 1})
    assert exported_difference(tmp_path, settings, "onnx", size=SIZE * 4) < 1e-5


# --- bad values --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "options", "words"),
    [
        ("resnet9", {"inputs": ["rgb", "noize"]}, "unknown input 'noize'"),
        ("resnet9", {"inputs": ["residual"]}, "must start with rgb"),
        ("resnet20", {"inputs": ["rgb", "fft", "fft"]}, "name each input once"),
        ("cnn", {"inputs": 3}, "is not a list of inputs"),
        ("cnn", {"fft_band": [0.6, 0.2]}, "0 <= low < high"),
        ("cnn", {"inputs": ["rgb", "fft"], "fft_band": [1.45, 2]}, "keeps no frequency of a 16 px image"),
        ("cnn", {"stream_widths": [0]}, "positive integers"),
        ("resnet20", {"stem_stride": 3}, "stem_stride=3 for resnet20 is not one of 1, 2"),
        ("resnet9", {"stem_stride": True}, "stem_stride=True"),
        ("resnet50", {"stem_stride": 4}, "does not fit resnet50, whose stem has stride 2"),
        ("lstm", {"inputs": ["rgb", "fft"]}, "unknown setting 'model.options.inputs'"),
        ("fusion", {}, "backbones=None for fusion is not a list of two or more"),
        ("fusion", {"backbones": ["convnext_tiny"]}, "is not a list of two or more"),
        ("fusion", {"backbones": ["convnext_tiny", "efficientnetv2_b0"]}, "unknown backbone 'efficientnetv2_b0'"),
        ("fusion", {"backbones": ["effnetb0", "effnetb0"]}, "names a backbone twice"),
        ("fusion", {"backbones": FUSED, "stem_stride": 4}, "does not fit mobilenetv3_small"),
    ],
)
def test_bad_values_are_one_line_errors(name: str, options: dict, words: str) -> None:
    with pytest.raises(KitError) as err:
        build(model_cfg(name, 32 if name in ("resnet50", "fusion") else 16, **options))
    line = err.value.one_line()
    assert words in line and "\n" not in line, line


def test_misspelt_backbone_suggests_the_row_and_a_weights_path_is_refused_for_fusion(tmp_path: Path) -> None:
    with pytest.raises(KitError) as err:
        build(fusion_cfg(backbones=["convnext_tiny", "efficientnetv2_b0"]))
    assert "effnetv2_b0" in err.value.hint
    path = tmp_path / "b.weights.h5"
    path.write_bytes(b"")
    with pytest.raises(KitError, match="one weights file cannot serve 2 backbones"):
        build(ModelConfig(name="fusion", image_size=32, weights=str(path), options={"backbones": FUSED}))
