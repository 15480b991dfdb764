"""keras-hub backbone rows: the table against keras-hub's presets files, every row built without weights, presets found
offline (a kernel's Kaggle Model, the kagglehub cache, a folder) or refused in one line, a tiny local preset through
the real CLI (records -> train -> evaluate -> predict -> export) and the probe, and kernels that attach the preset.

keras_hub is the optional ``hub`` extra: the tests that build a network skip without it.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import COMMAND_TIMEOUT_S, kit_error_line
from run_fixtures import folder_comp_config

from kit.config import PROJECT_ROOT
from kit.errors import KitError
from kit.io import read_json
from kit.models.hub_backbones import HUB_BACKBONES, HUB_ROWS, HubBackbone
from kit.models.hub_presets import find_preset, preset_places, resolve_preset

pytest_plugins = ["fake_kaggle"]  # the fake_kaggle fixture

VIT = HUB_BACKBONES["vit_b16"]
TINY_SIZE = 32  # a ViT with 16 px patches: 2 x 2 patches and the class token


def _presets_file(row: HubBackbone) -> str:
    """keras-hub's presets file of the row's preset class, read as text (never imported)."""
    spec = importlib.util.find_spec("keras_hub")
    if spec is None or spec.origin is None:
        pytest.skip("keras_hub is not installed")
    folder = Path(spec.origin).parent / "src" / "models"
    for path in folder.glob("*/*_presets.py"):
        text = path.read_text()
        if f'"{row.preset}":' in text:
            return text
    raise AssertionError(f"no keras-hub presets file names {row.preset}")


def _preset_entry(text: str, preset: str) -> str:
    start = text.index(f'"{preset}":')
    return text[start : text.index("kaggle_handle", start) + 200]


@pytest.mark.parametrize("row", HUB_ROWS, ids=lambda row: row.name)
def test_each_row_names_its_presets_kaggle_handle(row: HubBackbone) -> None:
    entry = _preset_entry(_presets_file(row), row.preset)
    handle = re.search(r'"kaggle_handle": "kaggle://([^"]+)"', entry).group(1)
    assert row.handle == handle
    owner, model, framework, variation, version = handle.split("/")
    assert (owner, framework, variation) == ("keras", "keras", row.preset) and version.isdigit()
    assert row.kernel_folder == f"{model}/keras/{variation}/{version}"
    if row.preset_class == row.network_class and not row.any_size:  # the preset is the network at its native size
        params = int(re.search(r'"params": ([\d_]+)', entry).group(1).replace("_", ""))
        assert row.params == params


def _tiny_vit(seed: int = 0, layers: int = 2):
    keras_hub = pytest.importorskip("keras_hub")
    import keras

    keras.utils.set_random_seed(seed)
    return keras_hub.models.ViTBackbone(
        image_shape=(TINY_SIZE, TINY_SIZE, 3), patch_size=16, num_layers=layers, num_heads=2, hidden_dim=8, mlp_dim=16
    )


def _tiny_preset(folder: Path, seed: int = 0, layers: int = 2) -> Path:
    _tiny_vit(seed, layers).save_to_preset(str(folder))
    return folder


@pytest.fixture
def offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No internet, an empty kernel input folder and an empty kagglehub cache under tmp."""
    monkeypatch.setenv("KIT_OFFLINE", "1")
    monkeypatch.setenv("KIT_KAGGLE_INPUT", str(tmp_path / "input"))
    monkeypatch.setenv("KAGGLEHUB_CACHE", str(tmp_path / "kagglehub"))
    return tmp_path


def _fake_preset(folder: Path, class_name: str) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"class_name": class_name, "config": {}}))
    (folder / "model.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n")
    return folder


# --- where a preset is found, and what is refused -------------------------------------------------------------


def test_the_preset_is_found_in_the_kernel_mount_before_the_kagglehub_cache(offline: Path) -> None:
    mount, cache = preset_places(VIT)
    assert mount == offline / "input" / "vit" / "keras" / "vit_base_patch16_224_imagenet" / "4"
    assert cache == offline / "kagglehub" / "models" / "keras" / "vit" / "keras" / "vit_base_patch16_224_imagenet" / "4"
    with pytest.raises(KitError) as missing:
        resolve_preset("preset", VIT)
    line = missing.value.one_line()
    assert str(mount) in line and str(cache) in line and "no internet" in line
    assert "keras_hub.models.Backbone.from_preset('vit_base_patch16_224_imagenet')" in line
    _fake_preset(cache, "ViTBackbone")
    assert resolve_preset("preset", VIT) == resolve_preset("imagenet", VIT) == str(cache)
    _fake_preset(mount, "ViTBackbone")
    assert find_preset(VIT) == mount and resolve_preset("preset", VIT) == str(mount)
    assert resolve_preset("none", VIT) is None


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (lambda tmp: tmp / "absent", "no such preset folder"),
        (lambda tmp: (tmp / "model.weights.h5").write_bytes(b"x") and tmp / "model.weights.h5", "is a file, not a keras-hub"),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", "has no config.json"),
        (
            lambda tmp: _fake_preset(tmp / "dino", "DINOV2Backbone"),
            "does not fit vit_b16 (it is a DINOV2Backbone preset (fits dinov2_small, dinov2_base); vit_b16 needs ViTBackbone)",
        ),
        (lambda tmp: (_fake_preset(tmp / "bare", "ViTBackbone") / "model.weights.h5").unlink() or tmp / "bare", "incomplete"),
    ],
    ids=["missing", "file", "no-config", "other-class", "no-weights"],
)
def test_a_wrong_preset_path_is_one_line_naming_it(offline: Path, make, expected: str) -> None:
    path = make(offline)
    with pytest.raises(KitError) as error:
        resolve_preset(str(path), VIT)
    line = error.value.one_line()
    assert f"model.weights={path}" in line and expected in line and "\n" not in line


@pytest.mark.slow
def test_kit_train_with_a_wrong_preset_folder_exits_2_with_one_line(offline: Path) -> None:
    dino = _fake_preset(offline / "dino", "DINOV2Backbone")
    comp = _write_competition(offline)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    settings = [f"comp={comp}", f"data.root={offline / 'raw'}", f"data.records_root={offline / 'records'}", "data.workers=1"]
    line = kit_error_line(
        ["train", *settings, "model=vit_b16", f"model.weights={dino}", f"run.root={offline / 'runs'}"], offline, env
    )
    assert f"model.weights={dino} does not fit vit_b16" in line


@pytest.mark.slow
def test_importing_kit_and_listing_the_rows_never_imports_keras_hub() -> None:
    code = (
        "import sys, kit, kit.cli, kit.models.registry, kit.run_model, kit.kaggle.kernel\n"
        "from kit.settings import load_settings\n"
        "cfg = load_settings(['model=dinov2_small'])\n"
        "assert (cfg.model.weights, cfg.model.image_size, cfg.train.fine_tune.unfreeze) == ('preset', 224, 4), cfg.model\n"
        "assert 'keras_hub' not in sys.modules\n"
    )
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert result.returncode == 0, result.stderr
    listing = subprocess.run(
        [sys.executable, "-m", "kit", "list"], env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert "keras-hub backbones" in listing.stdout and "kit[hub]" in listing.stdout
    for row in HUB_ROWS:
        assert re.search(rf"^    {row.name} +{row.native_size} px", listing.stdout, re.M), row.name


@pytest.mark.slow
def test_weights_list_says_where_each_preset_was_found_and_its_size(offline: Path) -> None:
    dinov2 = HUB_BACKBONES["dinov2_small"]
    in_cache = _fake_preset(offline / "kagglehub" / "models" / dinov2.handle, "DINOV2Backbone")
    _fake_preset(offline / "input" / VIT.kernel_folder, "ViTBackbone")
    (in_cache / "model.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(2_500_000))
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "kit", "weights", "list"], env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr
    hub_part = result.stdout.split("keras-hub presets:")[1].splitlines()
    assert str(offline / "input") in hub_part[0] and str(offline / "kagglehub") in hub_part[0]
    lines = {line.split()[0]: line for line in hub_part[1:]}
    assert set(lines) == set(HUB_BACKBONES)
    assert (
        dinov2.handle in lines["dinov2_small"]
        and "present (cache)" in lines["dinov2_small"]
        and "2.5 MB" in lines["dinov2_small"]
    )
    assert "present (kernel)" in lines["vit_b16"]
    assert "missing" in lines["swin_tiny"] and lines["swin_tiny"].rstrip().endswith("-")


# --- building -------------------------------------------------------------------------------------------------


def _model_config(name: str, image_size: int, weights: str = "none"):
    from kit.settings import load_settings

    cfg = load_settings([f"model={name}", f"model.image_size={image_size}", f"model.weights={weights}"])
    return cfg.model


@pytest.mark.slow
@pytest.mark.parametrize("row", HUB_ROWS, ids=lambda row: row.name)
def test_every_row_builds_without_weights_and_predicts(row: HubBackbone) -> None:
    pytest.importorskip("keras_hub")
    from kit.models.hub import random_network
    from kit.models.registry import build_model

    assert random_network(row, row.native_size).count_params() == row.params
    size = row.size_step * max(1, 64 // row.size_step)  # 64 px, or the smallest size Swin's windows allow
    model = build_model(_model_config(row.name, size), 3)
    images = np.random.default_rng(0).uniform(0, 255, (2, size, size, 3)).astype(np.float32)
    probs = model.predict(images, verbose=0)
    assert probs.shape == (2, 3)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)


def test_a_size_the_patches_do_not_tile_is_one_line() -> None:
    from kit.models.registry import build_model

    with pytest.raises(KitError, match="vit_b16 needs model.image_size to be a multiple of 16, got 40"):
        build_model(_model_config("vit_b16", 40), 2)


def test_a_preset_at_another_size_than_its_position_embeddings_is_one_line(tmp_path: Path) -> None:
    from kit.models.registry import build_model

    preset = _tiny_preset(tmp_path / "vit")
    with pytest.raises(KitError, match="takes 32x32 images, model.image_size is 64") as error:
        build_model(_model_config("vit_b16", 64, str(preset)), 2)
    assert "set model.image_size=32" in error.value.one_line()


def test_phase_two_unfreezes_the_top_transformer_blocks(tmp_path: Path) -> None:
    from kit.models.pretrained import backbone_units, freeze_backbone, get_backbone, unfreeze_top
    from kit.models.registry import build_model
    from kit.train.phases import rate_scales

    preset = _tiny_preset(tmp_path / "vit", layers=3)
    model = build_model(_model_config("vit_b16", TINY_SIZE, str(preset)), 2)
    backbone = get_backbone(model)
    assert type(backbone).__name__ == "ViTBackbone"
    units = backbone_units(backbone)
    assert [type(unit).__name__ for unit in units[-3:]] == ["ViTEncoderBlock"] * 3
    freeze_backbone(model)
    assert not backbone.trainable_weights
    unfreeze_top(model, 1)
    open_paths = {weight.path for weight in backbone.trainable_weights}
    top_block = {weight.path for weight in units[-1].weights}
    assert top_block <= open_paths and not {weight.path for weight in units[-2].weights} & open_paths
    assert all(path.startswith(backbone.get_layer("vit_encoder").name) for path in open_paths)  # the block and the final norm
    unfreeze_top(model, 2)
    scales = rate_scales(model, 10.0)
    assert scales[units[-1].weights[0].path] > scales[units[-2].weights[0].path]  # the top block learns faster
    unfreeze_top(model, -1)
    assert len(backbone.trainable_weights) == len(backbone.weights)


# --- the real CLI path on a tiny local preset -----------------------------------------------------------------


def _write_competition(root: Path) -> Path:
    """Class folders of dark and bright 32 px noise (train) and unlabelled test images; its competition YAML."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("test", 3)):
        for label, low in (("a", 0), ("b", 110)):
            folder = root / "raw" / split / (label if split == "train" else "")
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                cv2.imwrite(str(folder / f"{label}{i:02d}.png"), rng.integers(low, low + 146, (32, 32, 3), dtype=np.uint8))
    comp = root / "hubtiny.yaml"
    comp.write_text(
        "comp:\n  name: hubtiny\n  source: local\n  train: {dir: train}\n  test: {dir: test}\n  classes: [a, b]\n"
        "  metric: accuracy\n"
    )
    return comp


def _kit(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "kit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_a_local_preset_trains_evaluates_predicts_and_exports_through_the_cli(offline: Path) -> None:
    pytest.importorskip("keras_hub")
    comp = _write_competition(offline)
    preset = _tiny_preset(offline / "tiny-vit")
    settings = [
        f"comp={comp}", "model=vit_b16", f"model.weights={preset}", f"model.image_size={TINY_SIZE}", "model.dense_units=0",
        f"data.root={offline / 'raw'}", f"data.records_root={offline / 'records'}", f"run.root={offline / 'runs'}",
        "data.workers=1", "data.val_fraction=0.25", "augment.mode=none", "train.epochs=1", "train.batch_size=8",
        "train.fine_tune.epochs=1", "train.fine_tune.unfreeze=1", "train.verbose=0", "predict.batch_size=8",
    ]  # fmt: skip
    _kit(["records", *settings], offline)
    _kit(["train", *settings], offline)
    (run,) = (offline / "runs" / "hubtiny" / "vit_b16").iterdir()
    history = (run / "history.csv").read_text().splitlines()
    assert [line.split(",")[history[0].split(",").index("phase")] for line in history[1:]] == ["1", "2"]
    _kit(["evaluate", *settings, f"run={run}"], offline)
    assert (run / "val_predictions.csv").is_file()
    predicted = _kit(["predict", *settings, f"run={run}"], offline)
    assert "submission" in predicted.stdout
    _kit(["export", f"run={run}", "format=savedmodel"], offline)
    check = read_json(run / "export" / "savedmodel" / "export.json")["check"]
    assert check["max_abs_difference"] < 1e-5

    from kit.run_model import load_model

    reloaded = load_model(run)  # a fresh process's view: keras_hub registered because the run's model is a hub row
    images = np.random.default_rng(1).uniform(0, 255, (4, TINY_SIZE, TINY_SIZE, 3)).astype(np.float32)
    import tensorflow as tf

    served = tf.saved_model.load(str(run / "export" / "savedmodel" / "saved_model"))
    np.testing.assert_allclose(served.serve(tf.constant(images)).numpy(), reloaded.predict(images, verbose=0), atol=1e-5)


@pytest.mark.slow
def test_a_hub_run_exports_to_tflite_and_its_onnx_refusal_is_one_line(tmp_path: Path) -> None:
    for module in ("tf2onnx", "onnxruntime", "ai_edge_litert"):
        pytest.importorskip(module)
    from run_fixtures import make_config, make_run

    from kit.export import export
    from kit.models.registry import build_model

    cfg = make_config(tmp_path, ["neg", "pos"])
    cfg.model = dataclasses.replace(cfg.model, name="vit_b16", image_size=TINY_SIZE, weights=str(_tiny_preset(tmp_path / "p")))
    run = make_run(cfg, tmp_path / "runs" / "r1", build_model(cfg.model, 2))
    export(cfg, run, "tflite")
    assert read_json(run / "export" / "tflite" / "export.json")["check"]["max_abs_difference"] < 1e-5
    with pytest.raises(KitError) as error:  # ViT's exact GELU (Erfc) has no ONNX conversion in tf2onnx 1.17
        export(cfg, run, "onnx")
    assert "the ONNX export does not load in onnxruntime" in error.value.one_line() and "Erfc" in error.value.one_line()
    assert not (run / "export" / "onnx").exists()


# --- the probe -------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_the_probe_caches_features_and_recomputes_them_when_the_preset_changes(
    offline: Path, capsys: pytest.CaptureFixture
) -> None:
    pytest.importorskip("keras_hub")
    from kit.data.manifest import records_dir
    from kit.data.records import build_from_config
    from kit.train.trainer import train

    _write_competition(offline)
    preset = _tiny_preset(offline / "tiny-vit", seed=0)
    cfg = folder_comp_config(offline, "hubprobe")
    cfg.model = dataclasses.replace(cfg.model, name="vit_b16", image_size=TINY_SIZE, weights=str(preset), dense_units=0)
    cfg.data = dataclasses.replace(cfg.data, val_fraction=0.25, workers=1)
    cfg.augment = dataclasses.replace(cfg.augment, mode="none")
    cfg.train = dataclasses.replace(cfg.train, mode="probe", batch_size=8, verbose=0)
    build_from_config(cfg)
    train(cfg)
    assert "features: train computed" in capsys.readouterr().out
    train(cfg)
    assert "features: train read from" in capsys.readouterr().out
    _tiny_preset(preset, seed=1)  # the same folder, other weights
    train(cfg)
    assert "features: train computed" in capsys.readouterr().out
    folders = sorted((Path(records_dir(cfg)) / "features").glob("vit_b16-*"))
    assert len(folders) == 2
    assert {read_json(folder / "key.json")["weights"] for folder in folders} == {str(preset)}


# --- kernels -------------------------------------------------------------------------------------------------


def _kernel_cfg(tmp_path: Path, *extra: str):
    from fake_kaggle import write_comp_yaml

    from kit.settings import load_settings

    return load_settings([f"comp={write_comp_yaml(tmp_path)}", f"data.root={tmp_path / 'raw'}", *extra])


def test_kernel_metadata_attaches_the_preset_as_a_kaggle_model_the_client_accepts(tmp_path: Path) -> None:
    from kaggle.api.kaggle_api_extended import KaggleApi

    from kit.kaggle.kernel import internet_needs, metadata

    cfg = _kernel_cfg(tmp_path, "model=siglip_b16_224")
    meta = metadata(cfg, "someone")
    row = HUB_BACKBONES["siglip_b16_224"]
    assert meta["model_sources"] == [row.handle] and internet_needs(cfg) == []
    for source in meta["model_sources"]:
        KaggleApi().validate_model_instance_version_string(source)  # the check kernels_push runs, raises on a bad one
    assert metadata(cfg, "someone", inference=True)["model_sources"] == []  # best.keras holds every weight
    assert metadata(_kernel_cfg(tmp_path, "model=siglip_b16_224", "model.weights=none"), "someone")["model_sources"] == []
    assert metadata(_kernel_cfg(tmp_path, "model=cnn"), "someone")["model_sources"] == []


@pytest.mark.slow
def test_push_sends_the_preset_handle_through_the_real_client(fake_kaggle, tmp_path: Path, monkeypatch) -> None:
    from fake_kaggle import USERNAME

    from kit.kaggle.kernel import push

    monkeypatch.chdir(tmp_path)
    push(_kernel_cfg(tmp_path, "model=dinov2_small"))
    (save,) = fake_kaggle.calls("SaveKernel")
    assert save.body["slug"] == f"{USERNAME}/kit-fake-comp"
    assert save.body["modelDataSources"] == [HUB_BACKBONES["dinov2_small"].handle]
