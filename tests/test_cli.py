"""The command line as a user meets it: help texts, one-line errors with exit code 2."""

import subprocess
import sys

import pytest
from conftest import COMMAND_TIMEOUT_S

COMMANDS = [
    *("config", "list", "data", "records", "train", "tune", "evaluate", "predict", "submit", "audit"),
    *("new-comp", "demo", "runs", "export", "lr-find"),
]


def kit(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kit", *args], capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)


@pytest.mark.slow
def test_help_lists_every_command():
    result = kit("--help")
    assert result.returncode == 0
    for command in COMMANDS + ["kernel"]:
        assert command in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS + ["kernel build", "kernel push"])
def test_every_command_has_help(command):
    result = kit(*command.split(), "--help")
    assert result.returncode == 0, result.stderr
    assert "Usage" in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["train", "train.epohs=3"], "train.epochs"),
        (["records", "model=efficientnet"], "unknown model 'efficientnet' (fix: use one of: effnetb"),
        (["config", "comp=nope"], "unknown competition"),
        (["config", "train.batch_size=-4"], "train.batch_size"),
    ],
)
def test_bad_settings_exit_2_with_one_line(args, expected):
    result = kit(*args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert expected in lines[0]
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_config_prints_resolved_yaml():
    result = kit("config", "comp=cifake", "model=cnn", "train.epochs=3")
    assert result.returncode == 0
    assert "epochs: 3" in result.stdout and "name: cifake" in result.stdout
