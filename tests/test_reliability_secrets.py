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

from conftest import COMMAND_TIMEOUT_S
from fake_kaggle import KEY, USERNAME, write_comp_yaml

pytest_plugins = ["fake_kaggle"]  # the fake_kaggle fixture

ROOT = Path(__file__).resolve().parent.parent


def _kit(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "kit", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )


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
