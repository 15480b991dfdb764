"""The paths that must run as written: `kit data comp=demo` writes the demo locally, `kit train` and
`kit tune` build missing or stale records themselves, `kit --version` and `make help` (the notebook API:
tests/test_notebook.py)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

import pytest
from conftest import COMMAND_TIMEOUT_S

import kit
from kit.errors import KitError

REPO = Path(__file__).resolve().parents[1]
# Tiny settings: 32 px digits, a few steps, one epoch; the roots under the test's folder.
TINY = ["model=cnn", "model.image_size=32", "train.epochs=1", "train.steps_per_epoch=3", "train.verbose=2", "data.workers=1"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def kit_command(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kit", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, cwd=cwd, env=_env()
    )


@pytest.mark.slow
def test_data_then_train_on_a_fresh_folder(tmp_path: Path) -> None:
    """`make data train COMP=demo MODEL=cnn train.epochs=1`: the two commands, as make runs them, in an empty folder."""
    data = kit_command("data", "comp=demo", *TINY, cwd=tmp_path)
    assert data.returncode == 0, data.stderr
    assert "indexed 1797 images of demo" in data.stderr  # written locally: no Kaggle account, no download
    assert len(list((tmp_path / "data/raw/demo/train").glob("*.png"))) == 1437
    assert not list((tmp_path / "data/records").rglob("*.tfrecord"))  # only the index: no `kit records` in the chain

    train = kit_command("train", "comp=demo", *TINY, cwd=tmp_path)
    assert train.returncode == 0, train.stderr
    assert "records written to" in train.stderr  # built by kit train itself, with the build's own output
    manifest = json.loads((tmp_path / "data/records/demo/32/holdout0.2-seed42/manifest.json").read_text())
    assert manifest["counts"]["train"]["total"] + manifest["counts"]["val"]["total"] == 1437
    (run_dir,) = (tmp_path / "runs/demo/cnn").iterdir()
    assert (run_dir / "best.keras").is_file() and (run_dir / "history.csv").is_file()

    again = kit_command("train", "comp=demo", *TINY, cwd=tmp_path)  # up to date: reused, not rebuilt
    assert again.returncode == 0, again.stderr
    assert "are up to date" in again.stderr and "records written to" not in again.stderr


@pytest.mark.slow
def test_stale_records_are_rebuilt_before_training(tmp_path: Path) -> None:
    """Records whose fingerprint no longer matches the index (an image changed) are rebuilt, not trained on."""
    from kit import workflow
    from kit.data.demo import make_demo_competition
    from kit.settings import load_settings

    cfg = load_settings(
        [
            "comp=demo",
            *TINY,
            f"data.root={tmp_path / 'raw'}",
            f"data.records_root={tmp_path / 'records'}",
            "data.val_fraction=0.5",
        ]
    )
    make_demo_competition(tmp_path / "raw", size=8)
    first = workflow.ensure_records(cfg)
    assert workflow.ensure_records(cfg).fingerprint == first.fingerprint  # unchanged sources: the same records
    image = tmp_path / "raw/train/d00000.png"
    shutil.copyfile(tmp_path / "raw/train/d00001.png", image)  # another digit's bytes: the index row now differs
    os.utime(image, ns=(1, 1))
    rebuilt = workflow.ensure_records(cfg)
    assert rebuilt.fingerprint != first.fingerprint
    manifest_path = tmp_path / "records/demo/32/holdout0.5-seed42/manifest.json"
    assert json.loads(manifest_path.read_text())["fingerprint"] == rebuilt.fingerprint


def test_missing_demo_folder_names_kit_data(tmp_path: Path) -> None:
    from kit.data import sources
    from kit.settings import load_settings

    cfg = load_settings(["comp=demo", f"data.root={tmp_path / 'absent'}"])
    with pytest.raises(KitError) as error:
        sources.data_root(cfg)
    assert "`kit data comp=demo`" in error.value.one_line()


@pytest.mark.slow
def test_version_names_kit_tensorflow_and_keras(tmp_path: Path) -> None:
    result = kit_command("--version", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    line = result.stdout.strip()
    assert line.startswith(f"kit {kit.__version__} ")
    assert f"tensorflow {metadata.version('tensorflow')}" in line and f"keras {metadata.version('keras')}" in line


@pytest.mark.slow
def test_make_help_gives_one_line_per_target(tmp_path: Path) -> None:
    if shutil.which("make") is None:
        pytest.skip("make is not installed")
    makefile = (REPO / "Makefile").read_text()
    phony = re.search(r"^\.PHONY:((?:.*\\\n)*.*)$", makefile, re.M)
    assert phony is not None
    targets = set(phony.group(1).replace("\\\n", " ").split()) - {"help"}
    result = subprocess.run(
        ["make", "-s", "-f", str(REPO / "Makefile"), "help"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    described = {}
    for line in result.stdout.splitlines()[1:]:
        name, _, words = line.strip().partition(" ")
        described[name] = words.strip()
    assert set(described) == targets
    assert all(len(words.split()) >= 3 for words in described.values()), described
