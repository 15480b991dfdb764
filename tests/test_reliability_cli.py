"""Reliability, config and CLI: every mistake in settings, YAML files or paths exits with code 2 and one
``error:`` line that suggests the nearest valid choice; OS errors caused by the user's folders (a file
where a folder belongs, a read-only disk) are one line naming the path, while real bugs keep their traceback.

Already covered elsewhere (not repeated here): unknown setting train.epohs, unknown model, unknown
competition, batch_size=-4 (tests/test_cli.py); the same in-process plus tpu-with-local-paths, threshold,
key without '=' (tests/test_config.py); the TPU batch check once a TPU is connected (tests/test_strategy.py).
"""

from __future__ import annotations

import errno
import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import COMMAND_TIMEOUT_S

from kit.config import load_config
from kit.errors import os_error

ROOT = Path(__file__).resolve().parent.parent
GS = ["data.records_root=gs://bucket/records", "run.root=gs://bucket/runs"]


def kit(*args: str, cwd: Path | None = None, timeout: float = COMMAND_TIMEOUT_S) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "kit", *args], cwd=cwd or ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


# TensorFlow's C++ start-up lines (absl logs before InitializeLog ignore TF_CPP_MIN_LOG_LEVEL): not kit's output.
TF_NOISE = re.compile(r"^([IWEF]\d{4} |WARNING: All log messages before absl)")


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip() and not TF_NOISE.match(line)]
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    return lines[0]


# (arguments, what the one line must contain); {tmp} is replaced by the test's folder.
CASES = {
    "wrong type on the command line": (["config", "train.epochs=many"], ["train.epochs", "could not be converted"]),
    "unknown nested key": (["config", "train.fine_tune.epoch=2"], ["did you mean train.fine_tune.epochs"]),
    "unknown choice value": (["config", "augment.flip=horizonal"], ["augment.flip", "use one of: horizontal"]),
    "unknown tuner": (["config", "tuner=grid"], ["tuner.kind", "hyperband"]),
    "malformed value": (["config", "model.dropout=[1"], ["model.dropout=[1", "close its brackets"]),
    "zero batch size": (["config", "train.batch_size=0"], ["train.batch_size=0 is outside its allowed range [1, 65536]"]),
    "val fraction out of range": (["config", "data.val_fraction=1.5"], ["data.val_fraction=1.5", "[0, 1)"]),
    "image too small": (["config", "model.image_size=4"], ["model.image_size=4", "[8, 2048]"]),
    "tpu with a local run.root": (
        ["config", "strategy=tpu", "data.records_root=gs://bucket/records"],
        ["run.root on Google Cloud Storage", "run.root=gs://"],
    ),
    "tpu batch not a multiple of 8": (["config", "strategy=tpu", "batch_size=12", *GS], ["multiple of 8", "train.batch_size=8"]),
    "missing comp YAML": (["config", "comp={tmp}/nope.yaml"], ["nope.yaml does not exist"]),
    "missing hparams file": (["config", "hparams={tmp}/best.yaml"], ["best.yaml does not exist", "kit tune"]),
    "unknown key in a YAML file": (
        ["config", "comp={tmp}/typo.yaml"],
        ["typo.yaml", "unknown setting 'comp.trian'", "comp.train"],
    ),
    "wrong type in a YAML file": (["config", "comp={tmp}/type.yaml"], ["type.yaml", "train.epochs"]),
    "broken YAML syntax": (["config", "comp={tmp}/broken.yaml"], ["broken.yaml:", "not valid YAML"]),
    "data.root is a file": (["records", "data.root={tmp}/afile"], ["afile is a file, not a folder"]),
    "data.root missing": (["records", "data.root={tmp}/nowhere"], ["nowhere does not exist", "data.root"]),
    "records_root is a file": (
        ["records", "comp={tmp}/folders.yaml", "data.root={tmp}/raw", "data.records_root={tmp}/afile"],
        ["not a directory", "afile", "data.records_root"],
    ),
}


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "typo.yaml").write_text("comp:\n  name: typo\n  trian: {csv: train.csv}\n")
    (tmp_path / "type.yaml").write_text("comp:\n  name: typed\ntrain:\n  epochs: lots\n")
    (tmp_path / "broken.yaml").write_text("comp:\n  name: [broken\n")
    (tmp_path / "afile").write_text("not a folder\n")
    (tmp_path / "folders.yaml").write_text("comp: {name: folders, source: local, train: {dir: train}}\ndata: {val_fraction: 0}\n")
    for label in ("a", "b"):
        (tmp_path / "raw" / "train" / label).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "raw" / "train" / label / "x.png"), np.zeros((4, 4, 3), np.uint8))
    return tmp_path


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_mistake_is_one_line_exit_2(files: Path, case: str) -> None:
    args, expected = CASES[case]
    line = one_error_line(kit(*[a.replace("{tmp}", str(files)) for a in args], cwd=files))
    for part in expected:
        assert part in line, f"{part!r} not in {line!r}"


@pytest.mark.slow
def test_unknown_command_suggests_the_nearest() -> None:
    result = kit("trian")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "Did you mean 'train'" in result.stderr


def test_tpu_with_a_batch_multiple_of_8_is_accepted() -> None:
    assert load_config(["strategy=tpu", "batch_size=16", *GS]).train.batch_size == 16


# ---------------------------------------------------------------------------------------------- OS errors


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (PermissionError(errno.EACCES, "Permission denied", "/runs/x"), "permission denied: /runs/x"),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/runs"), "read-only file system: /mnt/ro/runs"),
        (OSError(errno.ENOSPC, "No space left on device"), "no space left on device"),
        (OSError(errno.ENOSPC, "No space left on device", "/r/.best.keras.ab12.tmp.keras"), "device: /r (fix"),
        (NotADirectoryError(errno.ENOTDIR, "Not a directory", "/data/file/x"), "not a directory: /data/file/x"),
    ],
)
def test_user_caused_os_errors_become_one_line(exc: OSError, expected: str) -> None:
    error = os_error(exc)
    assert error is not None and expected in error.one_line()


@pytest.mark.parametrize(
    "exc",
    [
        FileNotFoundError(errno.ENOENT, "No such file or directory", "/kit/internal.json"),  # kit checks user paths: a bug
        PermissionError(errno.EACCES, "Permission denied"),  # no path: nothing says it is the user's folder
        OSError(errno.EIO, "Input/output error", "/x"),
        ConnectionResetError(errno.ECONNRESET, "reset"),
    ],
)
def test_other_os_errors_keep_their_traceback(exc: OSError) -> None:
    assert os_error(exc) is None


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Tiny records (8 images, 2 classes, 16 px) for the `kit train` path cases."""
    from kit.data import records as records_mod

    tmp = tmp_path_factory.mktemp("cli-records")
    rows = []
    for i in range(8):
        path = tmp / f"{i}.png"
        cv2.imwrite(str(path), np.full((16, 16, 3), 30 * i, np.uint8))
        rows.append({"id": str(i), "path": str(path), "label": i % 2, "split": "train" if i < 6 else "val", "fold": -1})
    settings = ["comp=demo", f"data.root={tmp / 'raw'}", f"data.records_root={tmp / 'records'}", "model.image_size=16"]
    settings.append("data.workers=1")  # data.root: what the records say they were built from (the CLI runs elsewhere)
    records_mod.build_records(load_config(settings), pd.DataFrame(rows), ["0", "1"])
    return [*settings, "model=cnn", "model.image_size=16", "train.epochs=1", "train.batch_size=4", "train.verbose=0"]


@pytest.mark.slow
def test_run_root_that_is_a_file(records: list[str], tmp_path: Path) -> None:
    (tmp_path / "afile").write_text("x")
    line = one_error_line(kit("train", *records, f"run.root={tmp_path / 'afile'}", cwd=tmp_path))
    assert "not a directory" in line and str(tmp_path / "afile") in line and "run.root" in line


@pytest.mark.slow
def test_read_only_run_root(records: list[str], tmp_path: Path) -> None:
    """Permission bits do not stop root, a read-only mount does (needs mount rights; skipped elsewhere)."""
    mount = tmp_path / "ro"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k,ro", "tmpfs", str(mount)], capture_output=True).returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        line = one_error_line(kit("train", *records, f"run.root={mount}", cwd=tmp_path))
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)
    assert "read-only file system" in line and str(mount) in line and "run.root" in line
