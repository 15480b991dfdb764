"""kit in a notebook or a script: plain functions that load nothing heavy, the README's example run as a script
file, and scripts without an ``if __name__ == "__main__":`` guard that still finish (the records workers never
rerun the caller's script)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import COMMAND_TIMEOUT_S

import kit

REPO = Path(__file__).resolve().parents[1]
README_SETTINGS = '["comp=demo", "model=resnet9", "train.epochs=1"]'
# The tests' tiny run (tests/test_paths.py), with two records writers: the worker processes a script starts.
TINY = ["comp=demo", "model=resnet9", "model.image_size=32", "train.epochs=1", "train.steps_per_epoch=3", "data.workers=2"]


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def readme_example() -> str:
    readme = (REPO / "README.md").read_text()
    return readme.split("## In a notebook or a script", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]


def run_script(text: str, folder: Path, name: str = "api_test.py") -> subprocess.CompletedProcess:
    """``python NAME`` in ``folder``, as a user runs a saved script; waits for it to end (a hang fails on the limit)."""
    script = folder / name
    script.write_text(text)
    return subprocess.run(
        [sys.executable, script.name], cwd=folder, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, env=_env()
    )


@pytest.mark.slow
def test_import_kit_is_light_and_its_functions_are_plain_functions() -> None:
    """`import kit` loads no TensorFlow (nor pandas, OpenCV); the API names are ordinary functions of an ordinary
    module, and stay so when the subpackages kit.train and kit.predict are imported beside them."""
    script = textwrap.dedent(
        """
        import inspect, sys, types
        import kit
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras", "pandas", "cv2"))
        print("heavy", heavy)
        print("module", type(kit) is types.ModuleType)
        names = ("load_config", "fetch_data", "build_records", "fit", "tune", "predict_test")
        import kit.train, kit.predict
        print("functions", all(inspect.isfunction(getattr(kit, n)) for n in names))
        print("subpackages", inspect.ismodule(kit.train), inspect.ismodule(kit.predict))
        print("version", kit.__version__)
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S, env=_env())
    assert result.returncode == 0, result.stderr
    assert "heavy []" in result.stdout and "module True" in result.stdout
    assert "functions True" in result.stdout and "subpackages True True" in result.stdout
    assert f"version {kit.__version__}" in result.stdout


def test_the_readme_example_is_the_package_docstring() -> None:
    docstring = kit.__doc__.split("::\n", 1)[1].split("\n\n``load_config``", 1)[0]
    assert textwrap.dedent(docstring).strip() == readme_example().strip()


@pytest.mark.slow
def test_the_readme_example_runs_as_a_script(tmp_path: Path) -> None:
    """Saved as api_test.py and run with python, in an empty folder: data, records (two worker processes), a run,
    a validated submission."""
    example = readme_example()
    assert example.count(README_SETTINGS) == 1
    result = run_script(example.replace(README_SETTINGS, repr(TINY)), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert re.search(r"^1149 training images in .*data/records/demo/32/holdout0.2-seed42$", result.stdout, re.M), result.stdout
    assert "id,label\n" in result.stdout
    (submission,) = (tmp_path / "runs/demo/resnet9").glob("*/submission.csv")
    assert len(submission.read_text().splitlines()) == 361  # header + 360 test digits


@pytest.mark.slow
def test_a_script_without_a_main_guard_builds_records_with_worker_processes(tmp_path: Path) -> None:
    """The spawned records writers must not rerun the script: unguarded, each would build the records again, fail
    to start a pool of its own, and be replaced without end (a hang with a traceback a second)."""
    script = textwrap.dedent(
        f"""
        import kit

        cfg = kit.load_config({TINY!r})
        kit.fetch_data(cfg)
        manifest = kit.build_records(cfg)
        print("built", manifest.counts["train"].total, manifest.counts["val"].total, manifest.counts["test"].total)
        """
    )
    result = run_script(script, tmp_path, "unguarded.py")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert result.stdout.count("built 1149 288 360") == 1  # once: the script ran in this process only
    assert result.stderr.count("records written to") == 1
