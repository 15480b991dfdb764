"""kit.data.comp_from_folder (`kit new-comp`): the inferred YAML indexes each layout like the hand-written preset."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kaggle_layouts import make_ai_100, make_ai_vs_human, make_cifake, preset

from kit.config import PROJECT_ROOT, load_config, presets
from kit.data import sources
from kit.data.comp_from_folder import infer_competition, write_competition_yaml
from kit.data.demo import make_demo_competition
from kit.errors import KitError

LAYOUTS = {
    "ai-vs-human": make_ai_vs_human,
    "ai-100": make_ai_100,
    "cifake": make_cifake,
    "demo": lambda root: make_demo_competition(root, size=8),
}


def _same_table(inferred: pd.DataFrame, expected: pd.DataFrame) -> None:
    """Same ids, paths and splits; labels equal up to renaming the classes (e.g. 0/1 vs human/ai)."""
    assert inferred[["id", "path", "split"]].equals(expected[["id", "path", "split"]])
    pairs = set(zip(expected.label, inferred.label, strict=True))
    assert len(pairs) == len({a for a, _ in pairs}) == len({b for _, b in pairs})  # a one-to-one renaming
    assert ((inferred.label == -1) == (expected.label == -1)).all()


@pytest.mark.slow
@pytest.mark.parametrize("comp", list(LAYOUTS))
def test_inferred_yaml_indexes_like_the_preset(comp: str, tmp_path: Path) -> None:
    root = LAYOUTS[comp](tmp_path / comp)
    output = write_competition_yaml(root, name=f"my-{comp}", output=tmp_path / f"{comp}.yaml")
    text = output.read_text()
    assert "check" in text and "a guess" in text  # the guesses are marked for the user
    # val_fraction=0: class order may differ from the preset, and stratified splits depend on it
    cfg = load_config([f"comp={output}", f"data.root={root}", "data.val_fraction=0"])
    assert cfg.comp.name == f"my-{comp}"
    inferred, classes = sources.read_index(cfg)
    expected, preset_classes = sources.read_index(preset(comp, root, "data.val_fraction=0"))
    _same_table(inferred, expected)
    assert len(classes) == len(preset_classes)
    assert cfg.comp.metric == ("f1" if len(classes) == 2 else "accuracy")
    # the YAML alone (data.root written into it) is enough
    assert load_config([f"comp={output}"]).data.root == str(root.resolve())


def test_inferred_details(tmp_path: Path) -> None:
    avh = infer_competition(make_ai_vs_human(tmp_path / "avh"))["comp"]
    assert avh["train"] == {"csv": "train.csv", "path_column": "file_name", "label_column": "label"}
    assert avh["test"] == {"csv": "test.csv", "id_column": "id", "path_column": "id"}
    assert avh["submission"] == {"id_column": "id", "label_column": "label", "label_format": "index"}
    assert avh["classes"] == ["0", "1"] and avh["name"] == "avh"
    a100 = infer_competition(make_ai_100(tmp_path / "a100"))["comp"]
    expected_val = {"csv": "val.csv", "id_column": "image_id", "label_column": "label", "image_dir": "val", "image_ext": ".png"}
    assert a100["val"] == expected_val
    assert a100["submission"]["label_format"] == "name" and a100["classes"] == ["cat", "dog", "owl"]
    cifake = infer_competition(make_cifake(tmp_path / "cifake"))["comp"]
    assert cifake["train"] == {"dir": "train"} and cifake["test"] == {"dir": "test"}
    assert cifake["classes"] == ["FAKE", "REAL"]


@pytest.mark.slow
def test_wrapping_folder_and_probability_submission(tmp_path: Path) -> None:
    """A zip that unpacked into one inner folder; a sample submission of probabilities."""
    root = make_ai_vs_human(tmp_path / "outer" / "inner")
    pd.DataFrame({"id": pd.read_csv(root / "test.csv").id, "label": 0.5}).to_csv(root / "sample_submission.csv", index=False)
    config = infer_competition(tmp_path / "outer", name="Outer Comp!")
    comp = config["comp"]
    assert comp["name"] == "outer-comp"
    assert comp["train"]["csv"] == "inner/train.csv" and comp["sample_submission"] == "inner/sample_submission.csv"
    assert comp["submission"]["label_format"] == "probability"
    output = write_competition_yaml(tmp_path / "outer", output=tmp_path / "outer.yaml")
    frame, _ = sources.read_index(load_config([f"comp={output}"]))
    assert len(frame) == 32


def test_unknown_structure_and_existing_output(tmp_path: Path) -> None:
    (tmp_path / "odd").mkdir()
    (tmp_path / "odd" / "README.md").write_text("nothing here")
    with pytest.raises(KitError, match=r"odd: no training table found \(found: README.md\)") as info:
        infer_competition(tmp_path / "odd")
    assert "configs/competitions" in info.value.hint
    with pytest.raises(KitError, match="folder not found"):
        infer_competition(tmp_path / "missing")
    root = make_cifake(tmp_path / "cifake")
    existing = tmp_path / "taken.yaml"
    existing.write_text("# mine\n")
    with pytest.raises(KitError, match="already exists") as info:
        write_competition_yaml(root, output=existing)
    assert "--output" in info.value.hint and existing.read_text() == "# mine\n"


def test_a_wrong_guess_names_the_file_to_edit(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path / "a100")
    sample = pd.read_csv(root / "sample_submission.csv").iloc[:-1]  # one test id missing
    sample.to_csv(root / "sample_submission.csv", index=False)
    output = tmp_path / "a100.yaml"
    with pytest.raises(KitError, match="does not read the data yet: .*test ids do not match") as info:
        write_competition_yaml(root, output=output)
    assert info.value.hint.startswith(f"edit {output}")
    assert yaml.safe_load(output.read_text())["comp"]["name"] == "a100"


@pytest.mark.slow
def test_cli_new_comp(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path / "a100")
    output = tmp_path / "out.yaml"
    ok = subprocess.run(
        [sys.executable, "-m", "kit", "new-comp", str(root), "-o", str(output)], cwd=PROJECT_ROOT, capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert output.is_file() and f"wrote {output}" in ok.stderr
    bad = subprocess.run(
        [sys.executable, "-m", "kit", "new-comp", str(tmp_path / "missing"), "-o", str(tmp_path / "x.yaml")],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "folder not found" in lines[0]
    assert "Traceback" not in bad.stderr and not (tmp_path / "x.yaml").exists()


def _user_folders(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """A fresh working directory and a fresh ~/.config/kit, as for a user of a wheel install."""
    work, xdg = tmp_path / "work", tmp_path / "xdg"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(xdg))
    return work, xdg / "kit"


@pytest.mark.slow
def test_new_comp_writes_to_the_working_directory_not_the_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work, _ = _user_folders(tmp_path, monkeypatch)
    root = make_ai_100(tmp_path / "a100")
    packaged = sorted((PROJECT_ROOT / "configs" / "competitions").iterdir())
    output = write_competition_yaml(root, name="my-a100")
    assert output == work / "configs" / "competitions" / "my-a100.yaml"  # old: <project>/configs/competitions/
    assert sorted((PROJECT_ROOT / "configs" / "competitions").iterdir()) == packaged
    cfg = load_config(["comp=my-a100"])  # found by name: the working directory's folder is searched first
    assert cfg.comp.name == "my-a100" and cfg.data.root == str(root.resolve())
    assert "my-a100" in presets("competitions")


@pytest.mark.slow
def test_new_comp_falls_back_to_the_user_config_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    work, home = _user_folders(tmp_path, monkeypatch)
    (work / "configs").write_text("not a folder\n")  # ./configs/competitions cannot be made
    output = write_competition_yaml(make_ai_100(tmp_path / "a100"), name="my-a100")
    assert output == home / "competitions" / "my-a100.yaml"
    assert load_config(["comp=my-a100"]).comp.name == "my-a100"


def test_presets_are_searched_working_directory_then_user_folder_then_package(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    work, home = _user_folders(tmp_path, monkeypatch)
    assert load_config(["comp=cifake"]).comp.metric == "f1"  # the packaged preset
    (home / "competitions").mkdir(parents=True)
    (home / "competitions" / "cifake.yaml").write_text("comp: {name: cifake, metric: macro_f1, classes: [REAL, FAKE]}\n")
    assert load_config(["comp=cifake"]).comp.metric == "macro_f1"  # the user's folder shadows the package
    (work / "configs" / "competitions").mkdir(parents=True)
    (work / "configs" / "competitions" / "cifake.yaml").write_text("comp: {name: cifake, metric: accuracy}\n")
    assert load_config(["comp=cifake"]).comp.metric == "accuracy"  # the working directory comes first


@pytest.mark.slow
def test_cli_new_comp_default_output_in_a_fresh_working_directory(tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    root = make_ai_100(tmp_path / "a100")
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT), HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "xdg"))
    ok = subprocess.run(
        [sys.executable, "-m", "kit", "new-comp", str(root), "--name", "mine"], cwd=work, capture_output=True, text=True, env=env
    )
    assert ok.returncode == 0, ok.stderr
    assert (work / "configs" / "competitions" / "mine.yaml").is_file()
    assert not (PROJECT_ROOT / "configs" / "competitions" / "mine.yaml").exists()
    shown = subprocess.run(
        [sys.executable, "-m", "kit", "config", "comp=mine"], cwd=work, capture_output=True, text=True, env=env
    )
    assert shown.returncode == 0, shown.stderr
    assert "name: mine" in shown.stdout
