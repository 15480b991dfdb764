"""Settings order: what the data dictates (symmetry, sizes, metric) beats what a model prefers; the command
line beats both; ``kit config --origin`` names where each value came from."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMMAND_TIMEOUT_S

from kit.config import PROJECT_ROOT, load_config, load_config_with_origins, presets
from kit.config.symmetry import TTA_VIEWS, allowed_flips

DEMO = str(PROJECT_ROOT / "configs" / "competitions" / "demo.yaml")
RESNET20 = str(PROJECT_ROOT / "configs" / "models" / "resnet20.yaml")


def test_the_demo_predicts_without_flips() -> None:
    """demo.yaml: digits are not mirror-symmetric (flip: none); resnet20.yaml wishes tta [flip]."""
    cfg, origins = load_config_with_origins(["comp=demo", "model=resnet20"])
    assert str(cfg.augment.flip) == "none"
    assert cfg.predict.tta == []  # was ['flip']: the model preset was merged after the competition
    assert origins["augment.flip"] == DEMO
    assert origins["predict.tta"].startswith(RESNET20) and "without flip" in origins["predict.tta"]
    assert "augment.flip none" in origins["predict.tta"]


@pytest.mark.parametrize("comp", ["ai-100", "cifake", "ai-vs-human"])
def test_a_model_presets_tta_survives_on_a_symmetric_competition(comp: str) -> None:
    cfg, origins = load_config_with_origins([f"comp={comp}", "model=resnet20"])
    assert str(cfg.augment.flip) == "horizontal"
    assert cfg.predict.tta == ["flip"] and origins["predict.tta"] == RESNET20


@pytest.mark.slow
def test_a_model_may_narrow_the_datas_flips_but_never_widen_them(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs" / "models").mkdir(parents=True)
    (tmp_path / "configs" / "models" / "wide.yaml").write_text(
        "model: {name: cnn}\naugment: {flip: both}\npredict: {tta: [hflip, vflip, rot90]}\n"
    )
    comp = tmp_path / "upright.yaml"  # e.g. chest X-rays: top-bottom mirror is fine, left-right is not
    comp.write_text("comp: {name: upright}\naugment: {flip: vertical}\n")
    cfg, origins = load_config_with_origins([f"comp={comp}", "model=wide"])
    assert str(cfg.augment.flip) == "vertical"  # old order: both (the model won)
    assert cfg.predict.tta == ["vflip"]  # old: [hflip, vflip, rot90]
    assert "without hflip, rot90" in origins["predict.tta"]
    # lstm's own wish (no flips) narrows ai-100's horizontal flips
    cfg, origins = load_config_with_origins(["comp=ai-100", "model=lstm"])
    assert str(cfg.augment.flip) == "none" and "narrowed by" in origins["augment.flip"]


def test_the_competition_beats_the_model_on_every_key_it_sets(tmp_path: Path) -> None:
    comp = tmp_path / "short.yaml"
    comp.write_text("comp: {name: short}\ntrain: {epochs: 3}\nmodel: {image_size: 48}\n")
    cfg, origins = load_config_with_origins([f"comp={comp}", "model=resnet20"])
    assert cfg.train.epochs == 3 and cfg.model.image_size == 48  # old order: 40 and 32 from resnet20.yaml
    assert origins["train.epochs"] == origins["model.image_size"] == str(comp)
    assert cfg.train.optimizer == "sgd" and origins["train.optimizer"] == RESNET20  # what the data does not say


@pytest.mark.slow
def test_the_command_line_beats_both() -> None:
    cfg, origins = load_config_with_origins(["comp=demo", "model=resnet20", "tta=flip", "train.epochs=2"])
    assert cfg.predict.tta == ["flip"] and origins["predict.tta"] == "command line"  # the user's explicit choice
    assert cfg.train.epochs == 2 and origins["train.epochs"] == "command line"
    cfg = load_config(["comp=ai-100", "model=resnet20", "augment.flip=none"])
    assert cfg.predict.tta == []  # the user said the data has no mirror symmetry: the preset's flip view goes


@pytest.mark.slow
def test_every_preset_pair_loads_and_keeps_the_datas_symmetry() -> None:
    for comp in presets("competitions"):
        comp_flip = load_config([f"comp={comp}", "model=cnn"]).augment.flip  # cnn sets no flip
        for model in presets("models"):
            cfg = load_config([f"comp={comp}", f"model={model}"])
            allowed = allowed_flips(cfg.augment.flip)
            assert allowed <= allowed_flips(comp_flip), (comp, model)
            assert all(TTA_VIEWS[view].needs <= allowed for view in cfg.predict.tta), (comp, model, cfg.predict.tta)
            sizes = cfg.comp.image_sizes
            assert cfg.model.image_size == sizes.get(model, cfg.model.image_size), (comp, model)


@pytest.mark.slow
def test_kit_config_origin_names_each_values_source(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    out = subprocess.run(
        [sys.executable, "-m", "kit", "config", "--origin", "comp=demo", "model=resnet20", "train.epochs=2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=env,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert out.returncode == 0, out.stderr  # old: "No such option: --origin", exit 2
    lines = out.stdout.splitlines()
    assert f'augment.flip = "none"  # {DEMO}' in lines
    assert f'comp.metric = "accuracy"  # {DEMO}' in lines
    assert f'train.optimizer = "sgd"  # {RESNET20}' in lines
    assert "train.epochs = 2  # command line" in lines
    assert 'comp.slug = ""  # default' in lines
    assert any(line.startswith(f"predict.tta = []  # {RESNET20}, without flip") for line in lines)
    assert all(" = " in line and "  # " in line for line in lines) and len(lines) > 50
