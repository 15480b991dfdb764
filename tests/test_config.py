"""Config: presets merge, overrides apply, and every mistake is one line with the nearest fix."""

import subprocess
import sys
from pathlib import Path

import pytest

from kit.config import AugmentMode, Config, all_keys, from_yaml, load_config, presets, to_yaml
from kit.data.manifest import records_dir
from kit.errors import KitError
from kit.settings import load_settings
from kit.train.metrics import monitored_metric


@pytest.mark.slow
def test_presets_are_all_loadable():
    for comp in presets("competitions"):
        for model in presets("models"):
            cfg = load_config([f"comp={comp}", f"model={model}"])
            assert cfg.comp.name == comp
            assert cfg.model.name == model


def test_competition_image_size_per_model_and_overrides():
    cfg = load_config(["comp=ai-vs-human", "model=effnetb4", "train.epochs=3", "strategy=cpu"])
    assert cfg.model.image_size == 380
    assert str(records_dir(cfg)) == "data/records/ai-vs-human/380/holdout0.2-seed42"  # per competition, size, split plan
    assert cfg.train.epochs == 3 and cfg.train.strategy == "cpu"
    assert cfg.binary and monitored_metric(cfg, cfg.binary, has_val=True) == "val_f1_score"
    cfg = load_config(["comp=ai-100", "model=effnetb4", "model.image_size=128"])
    assert cfg.model.image_size == 128 and monitored_metric(cfg, cfg.binary, has_val=True) == "val_accuracy"


def test_data_root_interpolates_the_competition_name_and_can_be_set():
    assert load_config(["comp=cifake"]).data.root == "data/raw/cifake"
    assert load_config(["comp=cifake", "data.root=/kaggle/input/cifake"]).data.root == "/kaggle/input/cifake"


@pytest.mark.slow
def test_comp_accepts_a_yaml_path(tmp_path: Path):
    path = tmp_path / "mine.yaml"
    path.write_text("comp:\n  name: mine\n  classes: [a, b, c]\n  train: {dir: train}\n")
    cfg = load_config([f"comp={path}"])
    assert cfg.comp.name == "mine" and len(cfg.comp.classes) == 3


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
        (["model.name=resnet"], "unknown model 'resnet' (fix: use one of: resnet9, resnet50, resnet20"),
        (["tuner.space={model.dropout: {type: float}}"], "tuner.space of model resnet20.model.dropout: type float needs min"),
        (["augment.mode=onlin"], "unknown value for augment.mode 'onlin' (fix: use one of: online"),
        (["train.optimizer=Adam"], "value for train.optimizer 'Adam' (fix: use one of: adam, adamw (all: adam, adamw, sgd))"),
    ],
)
def test_mistakes_are_one_line_errors_with_the_fix(overrides, expected):
    with pytest.raises(KitError) as info:
        load_settings(overrides)
    line = info.value.one_line()
    assert "\n" not in line
    assert expected in line


@pytest.mark.parametrize(
    ("key", "meant"),
    [
        ("train.lr", "train.learning_rate"),  # a short form competitors type, under its section
        ("train.wd", "train.weight_decay"),
        ("predict.bs", "predict.batch_size"),  # bs is a batch size: predict's own, not train's
        ("learning_rate", "train.learning_rate"),  # the shallower of the keys with that name
        ("model.epochs", "train.epochs"),  # the key of that name in another section
        ("train.fine_tune.lr", "train.fine_tune.learning_rate"),
        ("train.epohs", "train.epochs"),  # no meaning found: the nearest spelling
    ],
)
def test_unknown_keys_suggest_what_they_mean_before_what_they_resemble(key, meant):
    with pytest.raises(KitError) as info:
        load_config([f"{key}=0.1"])
    hint = info.value.one_line().split("did you mean ", 1)[1]
    assert hint.startswith(f"{meant} or "), hint
    assert " train or " not in hint and not hint.startswith("train ")  # groups are not settings one can set


def test_tpu_with_cloud_storage_is_accepted():
    cfg = load_config(["strategy=tpu", "data.records_root=gs://b/records", "run.root=gs://b/runs"])
    assert cfg.train.strategy == "tpu"


@pytest.mark.slow
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


@pytest.mark.slow
def test_choices_are_typed_and_compare_print_and_save_as_their_text(tmp_path: Path):
    cfg = load_config(["augment.mode=offline", "augment.flip=none", "strategy=cpu"])
    assert cfg.augment.mode is AugmentMode.offline and cfg.augment.mode == "offline" and f"{cfg.augment.mode}" == "offline"
    assert {"cpu": 1}[cfg.train.strategy] == 1 and cfg.augment.flip == "none"
    text = to_yaml(cfg)
    assert "mode: offline" in text and "flip: none" in text and "strategy: cpu" in text
    path = tmp_path / "config.yaml"
    path.write_text(text)
    assert to_yaml(from_yaml(path)) == text


@pytest.mark.parametrize(
    ("yaml_text", "expected"),
    [
        ("comp:\n  name: mine\n  metric: f2\n", "unknown value for comp.metric 'f2' (fix: use one of: f1"),
        ("train:\n  schedule: cosin\n", "unknown value for train.schedule 'cosin' (fix: use one of: cosine"),
        ("data:\n  image_format: webp\n", "unknown value for data.image_format 'webp'"),
    ],
)
def test_a_bad_choice_in_a_yaml_file_is_one_line_naming_setting_value_and_choices(tmp_path: Path, yaml_text, expected):
    path = tmp_path / "mine.yaml"
    path.write_text(yaml_text)
    for load in (lambda: load_config([f"comp={path}"]), lambda: from_yaml(path)):
        with pytest.raises(KitError) as info:
            load()
        assert expected in info.value.one_line() and "\n" not in info.value.one_line()


def test_monitored_metric_is_one_rule():
    cfg = Config()
    assert monitored_metric(cfg, binary=False, has_val=True) == "val_accuracy"
    assert monitored_metric(cfg, binary=True, has_val=True) == "val_f1_score"
    cfg.comp.metric = "macro_f1"
    assert monitored_metric(cfg, binary=False, has_val=True) == "val_f1_score"
    assert monitored_metric(cfg, binary=False, has_val=False) == "f1_score"
    cfg.train.monitor = "val_loss"
    assert monitored_metric(cfg, binary=True, has_val=True) == "val_loss"
    assert monitored_metric(cfg, binary=True, has_val=False) == "loss"


@pytest.mark.slow
def test_config_imports_no_kit_module_but_the_layers_below_it():
    code = "import sys, kit.config; print(' '.join(m for m in sys.modules if m.startswith('kit.')))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    lowest = {"kit.config", "kit.errors", "kit.io", "kit.inputs", "kit.secrets", "kit.version"}  # kit.version: kit's __init__
    assert {m for m in result.stdout.split() if not m.startswith("kit.config.")} <= lowest


def test_a_search_space_choice_is_checked_against_its_setting_before_any_trial():
    from kit.train.search_space import apply_values, parse_space

    with pytest.raises(KitError) as info:
        parse_space({"augment.flip": {"type": "choice", "values": ["none", "sideways"]}})
    assert "unknown value for augment.flip 'sideways' (fix: use one of:" in info.value.one_line()
    (dim,) = parse_space({"augment.flip": {"type": "choice", "values": ["none", "both"]}})
    assert apply_values(Config(), {dim.name: "both"}).augment.flip == "both"
