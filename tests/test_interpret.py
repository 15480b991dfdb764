"""Interpreting a run: val_predictions.csv, the top-loss images, Grad-CAM of scratch and nested-backbone models."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from run_fixtures import SIZE, make_config, make_model, make_run, random_images, write_split
from train_helpers import tiny_pretrained, tiny_scratch

from kit import gradcam
from kit.config import ModelConfig
from kit.data.manifest import read_manifest, records_dir
from kit.data.sources import index_dir
from kit.evaluate import evaluate
from kit.inference import predict_probabilities, split_dataset, to_class_probs
from kit.interpret import TopLosses, contrast_classes, predictions_frame, probability_line, top_loss_caption
from kit.models.registry import build_model

PNG = b"\x89PNG\r\n\x1a\n"


def _val_run(tmp_path, classes, model, n=16, seed=4):
    cfg = make_config(tmp_path, classes, metric="f1" if len(classes) == 2 else "accuracy")
    labels = np.arange(n) % len(classes)
    images = random_images(n, seed=seed)
    ids = [f"val_data/{i:04x}.jpg" for i in range(n)]
    write_split(cfg, "val", images, labels, ids)
    run = make_run(cfg, tmp_path / "runs" / "tiny" / "cnn" / "r1", model)
    return cfg, run, images, labels, ids


def _write_index(cfg, ids, files):
    index_dir(cfg).mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"id": ids, "path": files, "label": 0, "split": "val", "fold": -1})
    frame.to_csv(index_dir(cfg) / "index.csv", index=False)


@pytest.mark.slow
def test_val_predictions_hold_the_models_probabilities_paths_and_losses(tmp_path, capsys):
    model = make_model(1, seed=11)
    cfg, run, images, labels, ids = _val_run(tmp_path, ["human", "ai"], model)
    files = [f"/raw/val_data/{i}.jpg" for i in range(len(ids))]
    _write_index(cfg, ids, files)

    result = evaluate(cfg, run)

    rows = pd.read_csv(run / "val_predictions.csv", keep_default_na=False)
    assert list(rows.columns) == ["id", "path", "label", "true_class", "predicted", "predicted_class", "p_human", "p_ai", "loss"]
    p = np.asarray(model(images.astype(np.float32), training=False))[:, 0].astype(np.float64)
    assert rows["id"].tolist() == ids and rows["path"].tolist() == files
    np.testing.assert_allclose(rows["p_ai"], p, atol=1e-6)
    np.testing.assert_allclose(rows["p_human"], 1 - p, atol=1e-6)
    np.testing.assert_allclose(rows["loss"], -np.log(np.where(labels == 1, p, 1 - p)), rtol=1e-5)
    assert rows["label"].tolist() == labels.tolist()
    assert rows["predicted"].tolist() == (p >= 0.5).astype(int).tolist()
    assert rows["predicted_class"].tolist() == [["human", "ai"][k] for k in (p >= 0.5).astype(int)]
    assert result["predictions"] == str(run / "val_predictions.csv")
    assert (run / "plots" / "top_losses.png").read_bytes()[:8] == PNG
    assert not (run / "plots" / "gradcam.png").exists()  # Flatten + Dense: no feature map to explain
    assert "no Grad-CAM: model" in capsys.readouterr().out


def test_the_top_loss_images_are_the_highest_loss_rows_of_the_table(tmp_path):
    model = make_model(3, seed=12)
    cfg, run, images, _, ids = _val_run(tmp_path, ["a", "b", "c"], model, n=23, seed=6)
    manifest = read_manifest(records_dir(cfg))
    top = TopLosses(5)

    got_ids, probs = predict_probabilities(model, split_dataset(cfg, manifest, "val"), on_batch=top, progress=False)
    rows = predictions_frame(got_ids, to_class_probs(probs), top.labels(), ["a", "b", "c"], {})
    positions, kept = top.worst()

    assert positions == rows["loss"].nlargest(5).index.tolist()  # batches of 4: the heap saw every row
    for position, image in zip(positions, kept, strict=True):
        np.testing.assert_array_equal(image, images[position])
    np.testing.assert_allclose(rows[["p_a", "p_b", "p_c"]].sum(axis=1), 1.0, atol=1e-5)
    assert rows["id"].tolist() == ids


def test_captions_name_the_file_and_every_class_or_the_true_and_likeliest(tmp_path):
    row = pd.Series({"id": "train_data/abc.jpg", "label": 1, "true_class": "ai", "predicted_class": "human",
                     "p_human": 0.93, "p_ai": 0.07, "loss": 2.66})  # fmt: skip
    caption = top_loss_caption(row, ["human", "ai"], {"train_data/abc.jpg": "/raw/train_data/abc.jpg"})
    assert caption == "abc.jpg\ntrue ai · pred human · loss 2.66\nhuman 0.93 · ai 0.07"
    classes = [f"k{i}" for i in range(6)]
    probs = {f"p_k{i}": p for i, p in enumerate([0.02, 0.5, 0.3, 0.1, 0.05, 0.03])}
    many = pd.Series({"label": 0, **probs})
    assert probability_line(many, classes) == "p(true) 0.02 · k1 0.50 · k2 0.30"


def test_the_second_gradcam_explains_the_true_class_or_else_the_runner_up():
    rows = predictions_frame(
        ["wrong", "right"], np.array([[0.6, 0.3, 0.1], [0.2, 0.7, 0.1]]), np.array([2, 1]), ["a", "b", "c"], {}
    )
    assert contrast_classes(rows, ["a", "b", "c"]).tolist() == [2, 0]  # wrong: its true class c; right: runner-up a


@pytest.mark.slow
@pytest.mark.parametrize("build", [tiny_scratch, tiny_pretrained])
def test_evaluate_of_a_convolutional_run_draws_gradcam(build, tmp_path):
    model = build(size=SIZE)  # tiny_pretrained: the feature map is the nested backbone's output
    cfg, run, *_ = _val_run(tmp_path, ["human", "ai"], model)
    result = evaluate(cfg, run)
    assert (run / "plots" / "gradcam.png").read_bytes()[:8] == PNG
    assert str(run / "plots" / "gradcam.png") in json.loads((run / "metrics.json").read_text())["plots"]
    assert str(run / "plots" / "gradcam.png") in result["plots"]


def test_the_feature_map_is_the_last_4d_output_after_a_convolution():
    import keras

    def found(model):
        layer = gradcam.feature_layer(model)
        return None if layer is None else layer.name

    scratch = tiny_scratch()
    assert found(scratch) == next(layer.name for layer in scratch.layers if isinstance(layer, keras.layers.Conv2D))
    assert found(tiny_pretrained()) == "backbone"  # the nested model: its output is its last feature map
    assert found(build_model(ModelConfig(name="cnn", image_size=16, options={"filters": [4, 8]}), 3)) == "block2_pool"
    assert found(build_model(ModelConfig(name="resnet9", image_size=16), 2)) == "layer3_add"
    assert found(build_model(ModelConfig(name="lstm", image_size=16, options={"units": [4]}), 3)) is None  # 4-D input only
    assert found(make_model(1, seed=0)) is None  # Sequential Rescaling -> Flatten -> Dense


@pytest.mark.slow
@pytest.mark.parametrize("build", [tiny_scratch, tiny_pretrained])
def test_heat_maps_are_image_sized_in_0_1_and_differ_between_images_and_classes(build, tmp_path):
    import keras

    keras.utils.set_random_seed(3)
    build().save(tmp_path / "m.keras")
    model = keras.models.load_model(tmp_path / "m.keras")  # as kit evaluate gets it
    images = np.random.default_rng(0).uniform(0, 255, (3, 16, 16, 3)).astype(np.float32)

    maps = gradcam.heat_maps(model, images, [1, 1, 1])
    other = gradcam.heat_maps(model, images, [0, 0, 0])

    assert maps.shape == (3, 16, 16) and np.isfinite(maps).all()
    assert maps.min() >= 0.0 and maps.max() == pytest.approx(1.0)
    assert np.abs(maps[0] - maps[1]).mean() > 0.01 and np.abs(maps[0] - other[0]).mean() > 0.01
    _, logits = gradcam.score_model(model, gradcam.feature_layer(model))(images)
    probability = np.asarray(model(images, training=False))[:, 0]
    np.testing.assert_allclose(1 / (1 + np.exp(-np.asarray(logits)[:, 0])), probability, rtol=1e-5)  # the logit of p


def _patch_images(n: int, seed: int, size: int = 16, patch: int = 4):
    """Class 1 has a white square at a random place on dim noise; class 0 is the noise alone."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 100, (n, size, size, 3)).astype(np.float32)
    y = rng.integers(0, 2, n)
    corners = rng.integers(0, size - patch + 1, (n, 2))
    for i in np.flatnonzero(y):
        row, col = corners[i]
        x[i, row : row + patch, col : col + patch] = 255
    return x, y, corners


@pytest.mark.slow
@pytest.mark.parametrize("build", [tiny_scratch, tiny_pretrained])
def test_the_hottest_point_of_the_map_is_on_the_patch_that_decides_the_class(build):
    import keras

    keras.utils.set_random_seed(0)
    model = build()
    model.compile(keras.optimizers.Adam(1e-2), "binary_crossentropy")
    x, y, _ = _patch_images(256, seed=0)
    model.fit(x, y[:, None].astype(np.float32), epochs=15, batch_size=32, verbose=0)
    xv, yv, corners = _patch_images(64, seed=1)
    assert ((np.asarray(model(xv))[:, 0] >= 0.5) == yv).mean() >= 0.95  # it learned the rule

    patched = np.flatnonzero(yv == 1)
    maps = gradcam.heat_maps(model, xv[patched], np.ones(len(patched), int))

    hits = 0
    for k, i in enumerate(patched):
        row, col = np.unravel_index(np.argmax(maps[k]), maps[k].shape)
        top, left = corners[i]
        hits += top - 1 <= row <= top + 4 and left - 1 <= col <= left + 4  # the 4 px patch and a pixel around it
    assert hits / len(patched) >= 0.9  # by chance: about 36 / 256 of the image
