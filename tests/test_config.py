"""Config: presets merge, overrides apply, and every mistake is one line with the nearest fix."""

from pathlib import Path

import pytest

from kit.config import all_keys, from_yaml, load_config, presets, to_yaml
from kit.errors import KitError


def test_presets_are_all_loadable():
    for comp in presets("competitions"):
        for model in presets("models"):
            cfg = load_config([f"comp={comp}", f"model={model}"])
            assert cfg.comp.name == comp
            assert cfg.model.name == model


def test_competition_image_size_per_model_and_overrides():
    cfg = load_config(["comp=ai-vs-human", "model=effnetb4", "train.epochs=3", "strategy=cpu"])
    assert cfg.model.image_size == 380
    assert cfg.train.epochs == 3 and cfg.train.strategy == "cpu"
    assert cfg.binary and cfg.monitor == "val_f1_score"
    assert str(cfg.records_dir) == "data/records/ai-vs-human/380"
    cfg = load_config(["comp=ai-100", "model=effnetb4", "model.image_size=128"])
    assert cfg.model.image_size == 128 and cfg.monitor == "val_accuracy"


def test_data_root_interpolates_the_competition_name_and_can_be_set():
    assert load_config(["comp=cifake"]).data.root == "data/raw/cifake"
    assert load_config(["comp=cifake", "data.root=/kaggle/input/cifake"]).data.root == "/kaggle/input/cifake"


def test_comp_accepts_a_yaml_path(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("comp:\n  name: mine\n  classes: [a, b, c]\n  train: {dir: train}\n")
    cfg = load_config([f"comp={path}"])
    assert cfg.comp.name == "mine" and cfg.num_classes == 3


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.epoch=3"], "did you mean train.epochs"),
        (["model.image_sise=64"], "model.image_size"),
        (["model=resnet"], "resnet20"),
        (["comp=cifak"], "cifake"),
        (["train.epochs=many"], "train.epochs"),
        (["augment.library=kerascv"], "keras_cv"),
        (["strategy=tpu"], "gs://"),
        (["threshold=high"], "threshold=auto"),
        (["epochs"], "key=value"),
    ],
)
def test_mistakes_are_one_line_errors_with_the_fix(overrides, expected):
    with pytest.raises(KitError) as info:
        load_config(overrides)
    line = info.value.one_line()
    assert "\n" not in line
    assert expected in line


def test_tpu_with_cloud_storage_is_accepted():
    cfg = load_config(["strategy=tpu", "data.records_root=gs://b/records", "run.root=gs://b/runs"])
    assert cfg.train.strategy == "tpu"


def test_saved_config_round_trips(tmp_path: Path):
    cfg = load_config(["comp=ai-100", "model=cnn", "tta=flip", "train.fine_tune.epochs=2"])
    path = tmp_path / "config.yaml"
    path.write_text(to_yaml(cfg))
    assert from_yaml(path) == cfg


def test_hparams_file_is_applied(tmp_path: Path):
    hp = tmp_path / "best_hparams.yaml"
    hp.write_text("model: {dense_units: 192, dropout: 0.4}\ntrain: {learning_rate: 0.003}\n")
    cfg = load_config(["model=cnn", f"hparams={hp}"])
    assert (cfg.model.dense_units, cfg.model.dropout, cfg.train.learning_rate) == (192, 0.4, 0.003)


def test_all_keys_lists_nested_settings():
    keys = all_keys()
    assert "train.fine_tune.learning_rate" in keys and "comp.train.csv" in keys
