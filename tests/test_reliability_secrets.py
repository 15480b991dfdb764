"""Reliability, secrets: the Kaggle key (``KAGGLE_KEY`` or the ``kaggle.json`` in the home folder) never appears
in what kit prints or writes: data, index, records, run directories, kernel bundles.

Covered elsewhere (not repeated): a world-readable kaggle.json warns as the Kaggle client does and the key
is not printed (tests/test_kaggle.py::test_world_readable_kaggle_json_warns_and_key_never_printed); the key
is not in the kernel bundle built in-process (tests/test_kernel.py::test_build_bundle); the Docker image
context excludes kaggle.json and the Dockerfile copies no secret (tests/test_docker.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMMAND_TIMEOUT_S
from fake_kaggle import KEY, USERNAME, write_comp_yaml

from kit.config import load_config
from kit.errors import KitError
from kit.kaggle import kernel

pytest_plugins = ["fake_kaggle"]  # the fake_kaggle fixture

ROOT = Path(__file__).resolve().parent.parent


def _kit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "kit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )


@pytest.mark.slow
def test_the_key_is_in_no_output_and_no_file(fake_kaggle, tmp_path: Path) -> None:
    # Both places a key can come from: the environment (set by the fixture) and kaggle.json.
    kaggle_json = fake_kaggle.home / ".kaggle" / "kaggle.json"
    kaggle_json.write_text(json.dumps({"username": USERNAME, "key": KEY}))
    kaggle_json.chmod(0o600)
    assert os.environ["KAGGLE_KEY"] == KEY

    work = tmp_path / "work"
    work.mkdir()
    comp = write_comp_yaml(work)
    settings = [
        f"comp={comp}",
        "model=cnn",
        "model.image_size=8",
        "model.options.filters=[4]",
        "model.dense_units=0",
        "train.epochs=1",
        "train.batch_size=2",
        "train.verbose=0",
        "data.workers=1",
    ]
    commands = [
        ["data", *settings],
        ["records", *settings],
        ["train", *settings],
        ["config", *settings],
        ["kernel", "build", *settings],
    ]
    printed = []
    for command in commands:
        result = _kit(*command, cwd=work)
        assert result.returncode == 0, f"kit {command[0]}: {result.stderr}"
        printed.append((command[0], result.stdout + result.stderr))

    written = sorted(p for p in work.rglob("*") if p.is_file())
    folders = {p.relative_to(work).parts[0] for p in written}
    assert {"data", "runs", "build"} <= folders  # downloads + index + records, the run, the kernel bundle
    assert any(p.name == "best.keras" for p in written) and any(p.name == "kit_kernel.py" for p in written)
    for name, output in printed:
        assert KEY not in output, f"kit {name} printed the key"
    for path in written:
        assert KEY.encode() not in path.read_bytes(), f"{path} holds the key"


# ----------------------------------------------------------------------------- whatever carries it

KAGGLE_JSON_KEY = "0123456789abcdef0123456789abcdef"  # a legacy key's shape: 32 hex digits
OTHER_TOKEN = "KGAT_another_token_from_a_file_98765"
WANDB_KEY = "wandb-local-0f1e2d3c4b5a69788796a5b4"


def _kaggle_json(fake_kaggle, monkeypatch) -> None:
    path = fake_kaggle.home / ".kaggle" / "kaggle.json"
    path.write_text(json.dumps({"username": USERNAME, "key": KAGGLE_JSON_KEY}))
    path.chmod(0o600)


def _token_file(fake_kaggle, monkeypatch) -> None:
    path = fake_kaggle.home / "token.txt"
    path.write_text(OTHER_TOKEN + "\n")
    monkeypatch.setenv("KAGGLE_API_TOKEN", str(path))


def _wandb(fake_kaggle, monkeypatch) -> None:
    monkeypatch.setenv("WANDB_API_KEY", WANDB_KEY)


QUOTED_PASSWORD = 'pa"ss\\wörd-123'  # escaped on its way into the script (JSON, YAML)


def _password(fake_kaggle, monkeypatch) -> None:
    monkeypatch.setenv("DB_PASSWORD", QUOTED_PASSWORD)


def _nothing(fake_kaggle, monkeypatch) -> None:
    return None


# (case, where the secret lives, the value that gets into a setting, words naming its place in the error line)
CARRIED = [
    ("$KAGGLE_KEY", _nothing, KEY, "$KAGGLE_KEY"),
    ("kaggle.json's key", _kaggle_json, KAGGLE_JSON_KEY, "kaggle.json"),
    ("a token file named by $KAGGLE_API_TOKEN", _token_file, OTHER_TOKEN, "$KAGGLE_API_TOKEN"),
    ("another service's key in the environment", _wandb, WANDB_KEY, "$WANDB_API_KEY"),
    ("a password with quotes, a backslash and a non-ASCII letter", _password, QUOTED_PASSWORD, "$DB_PASSWORD"),
    ("a Kaggle token known only by its shape", _nothing, "KGAT_pasted_from_another_machine_42", "Kaggle API token"),
]


@pytest.mark.slow
@pytest.mark.parametrize("case,place,secret,where", CARRIED, ids=[c[0] for c in CARRIED])
def test_a_bundle_holding_any_credential_is_not_pushed(fake_kaggle, tmp_path, monkeypatch, case, place, secret, where):
    monkeypatch.chdir(tmp_path)  # build/ goes under the working directory
    place(fake_kaggle, monkeypatch)
    comp = write_comp_yaml(tmp_path)
    comp.write_text(comp.read_text() + f"  solution: {json.dumps(secret)}\n")  # pasted into a setting that travels in the config
    cfg = load_config([f"comp={comp}", f"data.root={tmp_path / 'raw'}"])
    with pytest.raises(KitError) as info:
        kernel.push(cfg)
    line = info.value.one_line()
    assert where in line and "kit_kernel.py" in line and "refused" in line, line
    assert secret not in line
    assert fake_kaggle.calls("SaveKernel") == []
    assert not (tmp_path / "build" / "kernel" / "fake-comp" / "kit_kernel.py").exists()  # never written either


@pytest.mark.slow
def test_a_secret_in_any_file_of_the_bundle_folder_is_not_pushed(fake_kaggle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = load_config([f"comp={write_comp_yaml(tmp_path)}", f"data.root={tmp_path / 'raw'}"])
    folder = kernel.build(cfg)
    (folder / "notes.txt").write_text(f"my key is {KEY}\n")
    with pytest.raises(KitError) as info:
        kernel.push(cfg)
    assert "notes.txt" in info.value.one_line() and KEY not in info.value.one_line()
    assert fake_kaggle.calls("SaveKernel") == []


@pytest.mark.slow
def test_cli_env_interpolation_of_the_key_is_one_line_and_never_pushed(fake_kaggle, tmp_path: Path) -> None:
    """The issue's reproduction: `solution: ${oc.env:KAGGLE_KEY}` in a competition YAML, then `kit kernel push`."""
    comp = write_comp_yaml(tmp_path)
    comp.write_text(comp.read_text() + "  solution: ${oc.env:KAGGLE_KEY}\n")
    result = _kit("kernel", "push", f"comp={comp}", f"data.root={tmp_path / 'raw'}", cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert KEY not in result.stdout + result.stderr
    assert fake_kaggle.calls("SaveKernel") == []
    bundle = tmp_path / "build" / "kernel" / "fake-comp"
    assert not any(KEY.encode() in p.read_bytes() for p in bundle.rglob("*") if p.is_file())


# variables whose names only look like a secret's, set to values the bundle holds: the bundle is built and pushed
LOOKALIKES = [
    ("GIT_AUTHOR_NAME", "kit fake-comp"),
    ("TOKENIZERS_PARALLELISM", "/kaggle/working"),
    ("KEYBOARD_LAYOUT", "kit-wheel"),
]


@pytest.mark.slow
def test_lookalike_variables_are_not_secrets(fake_kaggle, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name, value in LOOKALIKES:
        monkeypatch.setenv(name, value)
    cfg = load_config([f"comp={write_comp_yaml(tmp_path)}", f"data.root={tmp_path / 'raw'}"])
    kernel.push(cfg)
    code = (tmp_path / "build" / "kernel" / "fake-comp" / "kit_kernel.py").read_text()
    assert all(value in code + json.dumps(kernel.metadata(cfg, USERNAME)) for _, value in LOOKALIKES)
    assert len(fake_kaggle.calls("SaveKernel")) == 1
