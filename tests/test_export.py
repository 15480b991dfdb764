"""kit export: each format loaded back in its own runtime (not kit's loaders) and compared with best.keras on the same images."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import COMMAND_TIMEOUT_S, kit_error_line
from run_fixtures import SIZE, make_config, make_model, make_run, random_images, write_split

from kit.errors import KitError
from kit.export import EXPORT_JSON, export
from kit.io import read_json
from kit.run_model import load_model
from kit.runs import mark_done, runs_of, write_threshold

REPO = Path(__file__).resolve().parents[1]
N_VAL = 12


def _run(tmp_path: Path, classes: list[str], model, name: str = "r1") -> tuple:
    cfg = make_config(tmp_path, classes)
    cfg.model.name = model.name if model.name in ("cnn", "lstm", "resnet20", "resnet9") else cfg.model.name
    labels = np.arange(N_VAL) % len(classes)
    write_split(cfg, "val", random_images(N_VAL, seed=4), labels, [f"v{i}" for i in range(N_VAL)])
    return cfg, make_run(cfg, tmp_path / "runs" / name, model)


def _val_images(seed: int = 4) -> np.ndarray:
    return random_images(N_VAL, seed=seed).astype(np.float32)  # the pixels write_split stored (PNG is lossless)


def _run_in_own_runtime(fmt: str, path: Path, images: np.ndarray) -> np.ndarray:
    if fmt == "savedmodel":
        import tensorflow as tf

        loaded = tf.saved_model.load(str(path))  # held: its variables live as long as the object
        return loaded.serve(tf.constant(images)).numpy()
    if fmt == "tflite":
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_path=str(path))
        (source,), (sink,) = interpreter.get_input_details(), interpreter.get_output_details()
        outputs = []
        batch = images if source["shape_signature"][0] == -1 else None
        for chunk in [batch] if batch is not None else [images[i : i + 1] for i in range(len(images))]:
            interpreter.resize_tensor_input(source["index"], list(chunk.shape))
            interpreter.allocate_tensors()
            interpreter.set_tensor(source["index"], chunk)
            interpreter.invoke()
            outputs.append(np.array(interpreter.get_tensor(sink["index"])))
        return np.concatenate(outputs)
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (pixels,) = session.get_inputs()  # only the pixels: nothing else to feed
    return session.run(None, {pixels.name: images})[0]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("fmt", "classes"), [("savedmodel", ["neg", "pos"]), ("tflite", ["neg", "pos"]), ("onnx", ["a", "b", "c"])]
)
def test_each_format_reproduces_best_keras_in_its_own_runtime(tmp_path, capsys, fmt, classes):
    keras_model = make_model(1 if len(classes) == 2 else 3, seed=7)
    cfg, run = _run(tmp_path, classes, keras_model)
    if len(classes) == 2:
        write_threshold(run, 0.37, "val", N_VAL, None)
        cfg.predict.threshold = "auto"  # as kit predict: auto reads threshold.json

    path = export(cfg, run, fmt)

    assert path.parent == run / "export" / fmt and path.exists()
    assert not [p for p in (run / "export").iterdir() if p.name.startswith(".")]  # no temp folder left behind
    images = _val_images()
    difference = float(np.abs(_run_in_own_runtime(fmt, path, images) - keras_model.predict_on_batch(images)).max())
    assert difference < 1e-5, difference
    meta = read_json(path.parent / EXPORT_JSON)
    assert meta["input"]["shape"] == [None, SIZE, SIZE, 3] and meta["input"]["dtype"] == "float32"
    assert meta["output"]["shape"] == [None, keras_model.output_shape[-1]]
    assert meta["classes"] == classes
    assert meta["threshold"] == (0.37 if len(classes) == 2 else None)
    assert meta["check"]["on"] == f"{N_VAL} val images of the records" and meta["check"]["max_abs_difference"] < 1e-5
    expected = keras_model.predict_on_batch(images)
    np.testing.assert_allclose(meta["check"]["output_range"], [expected.min(), expected.max()], atol=1e-6)
    assert meta["kit_version"] and "tensorflow" in meta["versions"]
    out = capsys.readouterr().out
    assert f"max abs difference {meta['check']['max_abs_difference']:.2e}" in out
    print(f"{fmt}: max abs difference {difference:.3g} (test), {meta['check']['max_abs_difference']:.3g} (kit)", file=sys.stderr)


@pytest.mark.slow
def test_onnx_of_a_model_with_fixed_normalization_asks_only_for_the_image(tmp_path):
    """Keras's Normalization(mean, variance) (EfficientNet's stem, kit's ResNet50 preprocessing) holds its constants as
    captured tensors; Keras's own model.export(format="onnx") makes them extra ONNX inputs. kit's export does not."""
    import keras
    import onnxruntime

    model = keras.Sequential(
        [
            keras.Input((SIZE, SIZE, 3)),
            keras.layers.Normalization(mean=[120.0, 110.0, 100.0], variance=[3600.0, 3500.0, 3400.0]),
            keras.layers.Flatten(),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    cfg, run = _run(tmp_path, ["a", "b", "c"], model)
    loaded = load_model(run)
    loaded.predict_on_batch(_val_images())  # Keras's ONNX export refuses a model never called
    loaded.export(str(tmp_path / "keras.onnx"), format="onnx", verbose=False)
    keras_inputs = onnxruntime.InferenceSession(str(tmp_path / "keras.onnx"), providers=["CPUExecutionProvider"]).get_inputs()
    assert len(keras_inputs) == 3  # the image plus the layer's mean and variance: what kit's export avoids

    path = export(cfg, run, "onnx")
    images = _val_images()
    difference = float(np.abs(_run_in_own_runtime("onnx", path, images) - model.predict_on_batch(images)).max())
    assert difference < 1e-5, difference


@pytest.mark.slow
def test_lstm_tflite_is_written_for_batch_one_when_a_dynamic_batch_needs_select_ops(tmp_path):
    from kit.models.registry import build_model

    cfg = make_config(tmp_path, ["neg", "pos"])
    cfg.model.name = "lstm"
    model = build_model(cfg.model, 2)
    cfg, run = _run(tmp_path, ["neg", "pos"], model)

    path = export(cfg, run, "tflite")

    meta = read_json(path.parent / EXPORT_JSON)
    assert meta["input"]["shape"] == [1, SIZE, SIZE, 3]  # the plain LiteRT interpreter runs it (no Flex delegate)
    images = _val_images()
    difference = float(np.abs(_run_in_own_runtime("tflite", path, images) - model.predict_on_batch(images)).max())
    assert difference < 1e-5, difference


@pytest.mark.slow
def test_a_second_export_replaces_the_first_and_random_pixels_are_named(tmp_path):
    cfg = make_config(tmp_path, ["neg", "pos"])
    run = make_run(cfg, runs_of(cfg) / "r1", make_model(1, seed=1))  # no records: the check uses random pixels
    mark_done(run)
    first = export(cfg, run, "savedmodel")
    (first.parent / "stale").write_text("from the first export")
    second = export(cfg, None, "savedmodel")  # no run given: the newest finished one
    assert second == first and not (second.parent / "stale").exists()
    meta = read_json(second.parent / EXPORT_JSON)
    assert meta["check"]["on"].startswith("32 random images") and meta["threshold"] == 0.5


@pytest.mark.slow
def test_the_threshold_follows_kit_predicts_rule(tmp_path):
    """A number in predict.threshold wins over the run's threshold.json, as in kit predict; auto reads it; auto
    without one is the same one-line error as kit predict's."""
    cfg = make_config(tmp_path, ["neg", "pos"])
    run = make_run(cfg, runs_of(cfg) / "r1", make_model(1, seed=1))
    mark_done(run)
    with pytest.raises(KitError, match="threshold=auto but .*threshold.json does not exist"):
        cfg.predict.threshold = "auto"
        export(cfg, run, "savedmodel")
    write_threshold(run, 0.37, "val", N_VAL, None)
    found = {}
    for setting in ("0.5", "auto"):
        cfg.predict.threshold = setting
        meta = read_json(export(cfg, run, "savedmodel").parent / EXPORT_JSON)
        found[setting] = (meta["threshold"], meta["threshold_source"])
    assert found["0.5"][0] == 0.5 and "predict.threshold setting" in found["0.5"][1]
    assert found["auto"] == (0.37, "threshold.json (F1-best on val)")


def test_bad_format_missing_package_and_k_fold_parent_are_one_line_errors(tmp_path, monkeypatch):
    cfg = make_config(tmp_path, ["neg", "pos"])
    parent = tmp_path / "runs" / "kf"
    for fold in (0, 1):
        make_run(cfg, parent / f"fold{fold}", make_model(1, seed=fold))
    (parent / "kfold.json").write_text("{}")
    with pytest.raises(KitError, match="k-fold parent") as error:
        export(cfg, parent, "savedmodel")
    assert "run=" in error.value.one_line() and "fold0" in error.value.one_line()
    with pytest.raises(KitError, match="unknown export format 'pt'"):
        export(cfg, parent / "fold0", "pt")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # what an install without the extra looks like to import
    with pytest.raises(KitError, match="onnxruntime") as error:
        export(cfg, parent / "fold0", "onnx")
    assert "pip install -e '.[export]'" in error.value.one_line() and "kit[export]" not in error.value.one_line()


@pytest.mark.slow
def test_cli_exports_with_run_and_format_settings(tmp_path):
    cfg = make_config(tmp_path, ["neg", "pos"])
    run = make_run(cfg, tmp_path / "runs" / "r1", make_model(1, seed=2))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    assert "kit export needs a format" in kit_error_line(["export", f"run={run}"], tmp_path, env)
    line = kit_error_line(["export", f"run={run}", "format=pt"], tmp_path, env)
    assert "unknown export format 'pt'" in line
    command = [sys.executable, "-m", "kit", "export", f"run={run}", "format=onnx"]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    assert f"exported {run / 'export' / 'onnx' / 'model.onnx'}" in result.stdout
    assert read_json(run / "export" / "onnx" / EXPORT_JSON)["classes"] == ["neg", "pos"]  # the run's, not comp=demo's
