"""Installs that hold: the Makefile's user and developer installs, and the version floors `make test-min` tests.

The Makefile is run for real against a stand-in venv whose python and kit only log how they were called (a real
install takes minutes and the network), and dry-run (`make -n`) for the recipes that would download.
"""

from __future__ import annotations

import configparser
import os
import shutil
import stat
import subprocess
from importlib.metadata import version
from pathlib import Path

import pytest
from conftest import TOOL_TIMEOUT_S
from packaging.requirements import Requirement
from packaging.version import Version

from kit.config import PROJECT_ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def runtime_requirements() -> list[Requirement]:
    """setup.cfg's install_requires (the checkout's, not whatever kit is installed)."""
    parser = configparser.ConfigParser()
    parser.read(PROJECT_ROOT / "setup.cfg")
    return [Requirement(line) for line in parser["options"]["install_requires"].splitlines() if line.strip()]


def floor(requirement: Requirement) -> Version | None:
    floors = [Version(spec.version) for spec in requirement.specifier if spec.operator == ">="]
    return max(floors) if floors else None


def make_env() -> dict[str, str]:
    """This environment without an outer make's flags: under `make test` MAKEFLAGS carries its command line."""
    return {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES")}


def _make(venv: Path, *targets: str, dry_run: bool = False) -> str:
    command = ["make", "--no-print-directory", "-C", str(PROJECT_ROOT), f"VENV={venv}", *(["-n"] if dry_run else []), *targets]
    result = subprocess.run(command, capture_output=True, text=True, env=make_env(), timeout=TOOL_TIMEOUT_S)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.fixture
def venv(tmp_path) -> tuple[Path, Path]:
    """A stand-in venv: bin/python and bin/kit append their arguments to calls.log and succeed."""
    folder = tmp_path / "venv"
    (folder / "bin").mkdir(parents=True)
    log = tmp_path / "calls.log"
    for name in ("python", "kit"):
        path = folder / "bin" / name
        path.write_text(f'#!/bin/sh\necho "{name} $*" >> "{log}"\n')
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return folder, log


def _calls(log: Path) -> list[str]:
    calls = log.read_text().splitlines() if log.exists() else []
    log.unlink(missing_ok=True)
    return calls


USER_INSTALL = "python -m pip install --disable-pip-version-check -q -e ."
DEV_INSTALL = "python -m pip install --disable-pip-version-check -q -e .[dev]"


@pytest.mark.slow
def test_install_is_the_package_and_its_runtime_dependencies_and_demo_needs_no_more(venv):
    folder, log = venv
    _make(folder, "install")
    assert _calls(log) == [USER_INSTALL]  # before: -e .[dev], the dev tools for every user
    assert (folder / ".kit-installed").exists() and not (folder / ".kit-dev-installed").exists()
    _make(folder, "demo")
    assert _calls(log) == ["kit demo"]  # the user install is enough: no second pip run


@pytest.mark.slow
def test_test_lint_and_bench_add_the_dev_tools_once_and_a_dev_install_is_a_user_install(venv):
    folder, log = venv
    _make(folder, "install")
    _calls(log)
    _make(folder, "test")  # switching up: the dev stamp is missing, so the tools are installed
    assert _calls(log) == [DEV_INSTALL, "python -m pytest -n 2 -q tests"]
    _make(folder, "bench", "install", "demo")  # now current: neither install runs again
    assert _calls(log) == ["python -m bench", "kit demo"]


@pytest.mark.slow
def test_dev_first_then_install_does_nothing_and_a_setup_cfg_change_reinstalls(venv, tmp_path):
    folder, log = venv
    _make(folder, "dev")
    assert _calls(log) == [DEV_INSTALL]
    assert (folder / ".kit-installed").exists()
    _make(folder, "install")
    assert _calls(log) == []
    # A changed setup.cfg (here: stamps older than it) makes both installs stale again.
    old = (PROJECT_ROOT / "setup.cfg").stat().st_mtime - 10
    for stamp in (".kit-installed", ".kit-dev-installed"):
        os.utime(folder / stamp, (old, old))
    _make(folder, "demo")
    assert _calls(log) == [USER_INSTALL, "kit demo"]
    assert f"{folder}/bin/python -m pip install --disable-pip-version-check -q -e '.[dev]'" in _make(folder, "lint", dry_run=True)


@pytest.mark.slow
def test_test_min_installs_the_lowest_allowed_versions_in_a_fresh_venv(venv, tmp_path):
    folder, _ = venv
    (folder / ".kit-installed").touch()
    (folder / ".kit-dev-installed").touch()
    minimal = tmp_path / "venv-min"
    out = subprocess.run(
        ["make", "--no-print-directory", "-C", str(PROJECT_ROOT), "-n", f"VENV={folder}", f"VENV_MIN={minimal}", "test-min"],
        capture_output=True,
        text=True,
        env=make_env(),
        timeout=TOOL_TIMEOUT_S,
    ).stdout
    lines = out.splitlines()
    assert lines[0] == f"rm -rf {minimal}"
    assert f"{folder}/bin/uv pip install -q --python {minimal}/bin/python --resolution lowest-direct -e '.[test]'" in lines
    assert lines[-1].startswith(f"KIT_TEST_MIN_VERSIONS=1 {minimal}/bin/python -m pytest")
    for test_file in lines[-1].split()[7:]:
        assert (PROJECT_ROOT / test_file).is_file(), test_file


def test_every_runtime_requirement_has_a_floor():
    requirements = runtime_requirements()
    assert len(requirements) >= 15
    missing = [str(r) for r in requirements if floor(r) is None]
    assert not missing, f"no lower bound, so test-min cannot test one: {missing}"


@pytest.mark.skipif(not os.environ.get("KIT_TEST_MIN_VERSIONS"), reason="make test-min runs this in .venv-min")
def test_installed_versions_are_exactly_the_floors():
    """In .venv-min: uv installed each floor itself, not a newer version that another floor forced."""
    wrong = {
        r.name: f"{version(r.name)} installed, floor {floor(r)}"
        for r in runtime_requirements()
        if Version(version(r.name)) != floor(r)
    }
    assert not wrong, f"these floors are not what is tested; raise them to the installed versions: {wrong}"
