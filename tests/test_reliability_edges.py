"""Reliability, the edges: odd links in class folders are skipped and listed, never fatal nor silent; a full disk
while training always names where; kit reads back every config.yaml it writes; a kill while a kernel packs its runs
leaves no truncated best.keras under its final name.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import COMMAND_TIMEOUT_S, REAP_TIMEOUT_S, wait_until
from disk import fill, small_tmpfs

from kit.config import Config, from_yaml
from kit.errors import KitError

ROOT = Path(__file__).resolve().parent.parent


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "PYTHONUNBUFFERED": "1", **extra}


# ---------------------------------------------------------------------------------------------- odd links

FOLDER_COMP = "comp:\n  name: links\n  source: local\n  train: {dir: train}\n"

# what is put in class folder "a" -> (the reason in the skip list)
ODD_ENTRIES = {
    "a symlink loop": (lambda a: (a / "loop.png").symlink_to("loop.png"), "loop.png", "symlink loop"),
    "a dangling symlink": (lambda a: (a / "gone.png").symlink_to("missing.png"), "gone.png", "dangling symlink"),
    "a FIFO named like an image": (lambda a: os.mkfifo(a / "pipe.png"), "pipe.png", "not a regular file (FIFO)"),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(ODD_ENTRIES))
def test_an_odd_entry_in_a_class_folder_is_skipped_and_listed(tmp_path: Path, case: str) -> None:
    import cv2

    for label in "ab":
        (tmp_path / "raw" / "train" / label).mkdir(parents=True)
        for i in range(4):
            cv2.imwrite(str(tmp_path / "raw" / "train" / label / f"{i}.png"), np.full((8, 8, 3), 30 * i, np.uint8))
    make, name, reason = ODD_ENTRIES[case]
    make(tmp_path / "raw" / "train" / "a")
    (tmp_path / "comp.yaml").write_text(FOLDER_COMP)
    settings = [f"comp={tmp_path / 'comp.yaml'}", "data.root=raw", "data.records_root=rec", "model=cnn", "model.image_size=8"]
    result = subprocess.run(
        [sys.executable, "-m", "kit", "records", *settings, "data.workers=1"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr  # the build goes on
    (manifest,) = (tmp_path / "rec" / "links" / "8").glob("*/manifest.json")  # the split plan's folder
    skipped = json.loads(manifest.read_text())["skipped"]
    assert [(Path(s["path"]).name, reason in s["reason"]) for s in skipped] == [(name, True)], skipped


# ---------------------------------------------------------------------------------------------- a full disk


@pytest.fixture(scope="module")
def tiny_records(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Settings of a 2-epoch CNN run on records of eight 16 px images (built once)."""
    from run_fixtures import tiny_cnn_records

    return tiny_cnn_records(tmp_path_factory.mktemp("records"))


# Free bytes left on the run's disk: each runs out at another writer (TensorBoard's events, Keras's zip of
# best.keras, h5py's checkpoint weights), which each report a full disk their own way.
@pytest.mark.slow
@pytest.mark.parametrize("leave", [16_384, 60_000, 120_000])
def test_a_full_disk_while_training_names_where(tiny_records: list[str], tmp_path: Path, leave: int) -> None:
    with small_tmpfs(tmp_path, "4m") as mount:
        fill(mount, leave)
        result = subprocess.run(
            [sys.executable, "-m", "kit", "train", *tiny_records, f"run.root={mount}", "run.id=full"],
            cwd=tmp_path,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
        )
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"no space left on device: {mount / 'demo' / 'cnn' / 'full'}" in errors[0], errors[0]


# ---------------------------------------------------------------------------------------------- its own config


@pytest.mark.slow
def test_a_run_config_with_6000_classes_is_read_back(tmp_path: Path) -> None:
    from kit.run_model import run_config
    from kit.runs import write_run_files

    cfg = Config()
    cfg.comp.classes = [f"class-{i:05d}" for i in range(6000)]
    write_run_files(cfg, tmp_path / "run")
    assert from_yaml(tmp_path / "run" / "config.yaml").comp.classes == cfg.comp.classes
    assert run_config(cfg, tmp_path / "run").comp.classes == cfg.comp.classes


@pytest.mark.slow
def test_a_config_kit_could_not_read_back_is_refused_before_it_is_written(tmp_path: Path) -> None:
    from kit.runs import write_run_files

    cfg = Config()
    cfg.comp.classes = [f"{i:06d}-" + "n" * 40 for i in range(30_000)]  # ~1.4 MB of class names
    with pytest.raises(KitError, match="over 1000000 bytes"):
        write_run_files(cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_alias_bomb_is_still_refused(tmp_path: Path) -> None:
    from kit.config import read_settings

    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 8)]
    (tmp_path / "bomb.yaml").write_text("comp:\n" + "\n".join(f"  {line}" for line in lines) + "\n")
    with pytest.raises(KitError, match="aliases expand it to over"):
        read_settings(tmp_path / "bomb.yaml")


# ---------------------------------------------------------------------------------------------- packing a kernel

# `kit kernel build --from-run` whose copy of best.keras stops half way (as a kill would find it) and holds.
PACK_THEN_HOLD = """
import os, runpy, shutil, signal, sys
copy2 = shutil.copy2
def half_then_hold(src, dst, *args, **kwargs):
    if not str(src).endswith("best.keras"):
        return copy2(src, dst, *args, **kwargs)
    data = open(src, "rb").read()
    with open(dst, "wb") as handle:
        handle.write(data[: len(data) // 2])
    open(os.environ["KIT_TEST_READY"], "w").close()
    while True:
        signal.pause()
shutil.copy2 = half_then_hold
sys.argv = ["kit", *sys.argv[1:]]
runpy.run_module("kit", run_name="__main__")
"""


@pytest.mark.slow
def test_a_kill_while_a_kernel_packs_leaves_no_truncated_model_under_its_final_name(tmp_path: Path) -> None:
    from fake_kaggle import write_comp_yaml
    from run_fixtures import make_config, make_model, make_run

    comp = write_comp_yaml(tmp_path)
    cfg = make_config(tmp_path, ["0", "1"])  # the fake competition's classes
    cfg.comp.name = "fake-comp"
    run = make_run(cfg, tmp_path / "runs" / "r1", make_model(1, seed=1))
    models = tmp_path / "build" / "model" / "fake-comp"
    command = [sys.executable, "-c", PACK_THEN_HOLD, "kernel", "build", f"comp={comp}", "threshold=0.5", f"--from-run={run}"]
    ready = tmp_path / "ready"
    proc = subprocess.Popen(command, cwd=tmp_path, env=_env(KIT_TEST_READY=str(ready), KAGGLE_USERNAME="someone"))
    try:
        wait_until(ready.exists, "the copy of best.keras", proc)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=REAP_TIMEOUT_S)
    whole = (run / "best.keras").read_bytes()
    packed = list(models.rglob("best.keras")) if models.exists() else []
    assert all(path.read_bytes() == whole for path in packed), "a truncated best.keras under the final name"
