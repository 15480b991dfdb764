"""augment.jitter_on: kit's colour jitter as the model's first layer (kit.data.augment.layer.ColorJitter) instead of
in the tf.data pipeline. Resolved once from the device; the pipeline then skips it; the layer applies exactly the
pipeline's op in training and nothing in inference, survives save/load, mixed precision and MirroredStrategy."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from conftest import COMMAND_TIMEOUT_S
from test_trainer import _write_records
from train_helpers import SIZE, python, tiny_cnn_overrides

from kit.config import AugmentConfig, Config, load_config
from kit.data.manifest import records_dir
from kit.train.strategy import choose_jitter_on

STRENGTH = 0.4


def pixels(n: int = 6, size: int = SIZE, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)).astype(np.float32)


@pytest.mark.parametrize(
    ("setting", "device", "where"),
    [
        ("auto", "cpu", "pipeline"),
        ("auto", "gpu", "model"),
        ("auto", "tpu", "model"),
        ("model", "cpu", "model"),
        ("pipeline", "gpu", "pipeline"),
    ],
)
def test_jitter_on_follows_the_device(setting: str, device: str, where: str) -> None:
    cfg = Config()
    cfg.augment = dataclasses.replace(cfg.augment, jitter_on=setting)
    assert choose_jitter_on(cfg, device) == where


def test_a_wrong_jitter_on_is_one_line_naming_the_choices() -> None:
    from kit.errors import KitError

    with pytest.raises(KitError, match="augment.jitter_on") as info:
        load_config(["augment.jitter_on=gpu"])
    assert "model" in str(info.value) + info.value.hint


def test_the_augmenter_skips_the_jitter_when_the_model_runs_it() -> None:
    import tensorflow as tf

    from kit.data.augment import build_online_augmenter

    images = tf.constant(pixels())
    labels = tf.one_hot(tf.range(6) % 2, 2)
    cfg = AugmentConfig(flip="none", color_jitter=STRENGTH, seed=3)
    in_pipeline = build_online_augmenter(cfg, 2)(images, labels)[0].numpy()
    in_model = build_online_augmenter(dataclasses.replace(cfg, jitter_on="model"), 2)
    assert np.abs(in_pipeline - images.numpy()).max() > 10  # the pipeline jitters
    assert "color_jitter" not in repr(in_model)
    np.testing.assert_array_equal(in_model(images, labels)[0].numpy(), images.numpy())  # and here it leaves it to the model


@pytest.mark.slow
def test_the_layer_applies_the_pipeline_kernels_jitter_for_the_same_draws() -> None:
    import tensorflow as tf

    from kit.data.augment import build_online_augmenter, draws
    from kit.data.augment.layer import ColorJitter

    images = pixels(8, 32)
    layer = ColorJitter(STRENGTH, seed=11)
    seed = tf.cast(layer.seed_generator.state.value, tf.int64)  # the seed of its next call
    augmenter = build_online_augmenter(AugmentConfig(flip="none", color_jitter=STRENGTH), 2)
    kernel_out = augmenter.kernel(tf.constant(images), [], None, draws.jitter(seed, 8, STRENGTH), None, None).numpy()
    layer_out = layer(images, training=True).numpy()
    assert np.abs(layer_out - images).max() > 10
    # XLA against eager: float32 rounding of a chain of colour ops on 0..255 values (3e-3 seen); a wrong draw or
    # formula is off by whole grey levels.
    np.testing.assert_allclose(layer_out, kernel_out, atol=1e-2)
    assert not np.allclose(layer(images, training=True).numpy(), layer_out)  # the next batch, the next seed
    np.testing.assert_array_equal(layer(images, training=False).numpy(), images)
    np.testing.assert_array_equal(layer(images).numpy(), images)  # no training flag: inference


@pytest.mark.slow
def test_first_in_every_model_identity_in_inference_and_after_save_and_load(tmp_path: Path) -> None:
    import keras

    from kit.data.augment.layer import ColorJitter
    from kit.models.registry import build_model

    cfg = Config()
    cfg.model = dataclasses.replace(cfg.model, name="resnet9", image_size=SIZE)
    keras.utils.set_random_seed(0)
    plain = build_model(cfg.model, 3)
    with_layer = build_model(cfg.model, 3, first_layer=ColorJitter(STRENGTH, seed=1, name="color_jitter"))
    assert [layer.name for layer in with_layer.layers[:3]] == ["image", "color_jitter", plain.layers[1].name]
    assert len(with_layer.layers) == len(plain.layers) + 1 and with_layer.count_params() == plain.count_params()
    for layer in plain.layers[1:]:
        layer.set_weights(with_layer.get_layer(layer.name).get_weights())
    x = pixels(4)
    np.testing.assert_allclose(with_layer.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-6)
    with_layer.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")  # no custom_objects: registered as kit>ColorJitter
    assert isinstance(loaded.get_layer("color_jitter"), ColorJitter) and loaded.get_layer("color_jitter").strength == STRENGTH
    np.testing.assert_allclose(loaded.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-6)


def test_pixels_stay_float32_under_mixed_precision() -> None:
    import keras

    from kit.data.augment.layer import ColorJitter
    from kit.models.registry import build_model

    cfg = Config()
    cfg.model = dataclasses.replace(cfg.model, name="cnn", image_size=SIZE, options={"filters": [4]})
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(cfg.model, 2, first_layer=ColorJitter(STRENGTH, seed=5, name="color_jitter"))
        layer = model.get_layer("color_jitter")
        convolutions = [w for w in model.layers if isinstance(w, keras.layers.Conv2D)]
        assert layer.compute_dtype == "float32" and convolutions[0].compute_dtype == "float16"  # the model itself is mixed
        x = pixels(4)
        out = layer(x, training=True)
        assert out.dtype.name == "float32" and np.abs(out.numpy() - x).max() > 10
        assert model(x, training=True).dtype.name == "float32"
    finally:
        keras.mixed_precision.set_global_policy(previous)


MIRRORED_SCRIPT = """
import json, dataclasses
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from train_helpers import data
from kit.config import Config
from kit.data.augment.layer import ColorJitter
from kit.models.registry import build_model
cfg = Config()
cfg.model = dataclasses.replace(cfg.model, name="cnn", image_size=16, options={"filters": [4]})
strategy = tf.distribute.MirroredStrategy([d.name for d in tf.config.list_logical_devices("CPU")])
with strategy.scope():
    model = build_model(cfg.model, 2, first_layer=ColorJitter(0.4, seed=2, name="color_jitter"))
    model.compile(optimizer="adam", loss="binary_crossentropy")
x, y = data(32, 0)
state = model.get_layer("color_jitter").seed_generator.state
before = [int(v) for v in np.asarray(state.value)]
history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
print("RESULT " + json.dumps({"replicas": strategy.num_replicas_in_sync, "loss": history.history["loss"],
      "before": before, "after": [int(v) for v in np.asarray(state.value)]}))
"""


@pytest.mark.slow
def test_the_layer_trains_under_mirrored_strategy_on_two_logical_cpus() -> None:
    proc = python(MIRRORED_SCRIPT)
    output = proc.communicate(timeout=COMMAND_TIMEOUT_S)[0]
    assert proc.returncode == 0, output
    result = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])
    assert result["replicas"] == 2 and all(np.isfinite(result["loss"]))
    assert result["after"][1] > result["before"][1]  # a new seed each step: the jitter ran in the train step


def overrides(tmp_path: Path, *more: str) -> list[str]:
    return [*tiny_cnn_overrides(tmp_path, augment_mode="online"), "augment.color_jitter=0.2", *more]


def test_auto_on_this_cpu_keeps_the_jitter_in_the_pipeline(tmp_path: Path) -> None:
    from kit.train.session import start_session
    from kit.train.strategy import with_jitter_on
    from kit.train.trainer import jitter_summary

    _write_records(records_dir(load_config(overrides(tmp_path))))
    session = start_session(load_config(overrides(tmp_path)))
    cfg = with_jitter_on(session.cfg, session.device)
    assert session.device == "cpu" and cfg.augment.jitter_on == "pipeline"
    assert jitter_summary(cfg) == "; colour jitter in the pipeline (augment.jitter_on)"


@pytest.mark.slow
def test_a_run_with_the_jitter_in_the_model_trains_and_its_best_keras_predicts_without_it(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    import keras

    from kit.data.augment.layer import ColorJitter
    from kit.models.registry import build_model
    from kit.train.trainer import train

    cfg = load_config(overrides(tmp_path, "augment.jitter_on=model"))
    _write_records(records_dir(cfg))
    run_dir = train(cfg)

    assert "colour jitter in the model (augment.jitter_on)" in capsys.readouterr().out
    assert "jitter_on: model" in (run_dir / "config.yaml").read_text()
    loaded = keras.models.load_model(run_dir / "best.keras")
    assert isinstance(loaded.layers[1], ColorJitter) and loaded.layers[1].strength == pytest.approx(0.2)
    # Inference is the model without the layer: the same weights in a plain cnn predict the same.
    plain = build_model(cfg.model, 2)
    for layer in plain.layers[1:]:
        layer.set_weights(loaded.get_layer(layer.name).get_weights())
    x = pixels(8)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), plain.predict(x, verbose=0), atol=1e-6)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and np.isfinite(metrics["metrics"]["val_loss"])
    # kit predict, export and kernels load it in a fresh process, where nothing imported the layer's module yet.
    proc = python(f"from kit.run_model import load_model; print(type(load_model({str(run_dir)!r}).layers[1]).__name__)")
    out, _ = proc.communicate(timeout=COMMAND_TIMEOUT_S)
    assert proc.returncode == 0 and out.strip().splitlines()[-1] == "ColorJitter", out
