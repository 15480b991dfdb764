"""Interrupted commands: Ctrl-C (SIGINT) and SIGTERM end every ``kit`` command with a non-zero exit (130 / 143)
and one line saying what to rerun; nothing unfinished is marked done, and the rerun completes the work.

Every child holds at a known point (it writes a file, then waits for a signal) before the test signals it, so
nothing depends on how fast the machine is.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer.main
from conftest import COMMAND_TIMEOUT_S, REAP_TIMEOUT_S, kit_error_line, wait_until

ROOT = Path(__file__).resolve().parent.parent
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143}

# `kit ARGS` that holds, once it reaches one of the points every command passes through (its settings loaded, the
# presets listed, a folder read for new-comp, the weights cache listed), until a signal arrives: it writes READY, then pauses.
KIT_HOLDING_AT_START = """
import os, runpy, signal, sys
def holding(function):
    def hold(*args, **kwargs):
        open(os.environ["KIT_TEST_READY"], "w").close()
        while True:
            signal.pause()
    return hold
import kit.cli, kit.cli.common, kit.data.comp_from_folder, kit.models.weights, kit.workflow
kit.cli.common.load_settings = holding(kit.cli.common.load_settings)
kit.models.weights.cache_listing = holding(kit.models.weights.cache_listing)  # kit weights list loads no settings
kit.workflow.load_settings = holding(kit.workflow.load_settings)
kit.cli.presets = holding(kit.cli.presets)
kit.data.comp_from_folder.write_competition_yaml = holding(kit.data.comp_from_folder.write_competition_yaml)
sys.argv = ["kit", *sys.argv[1:]]
runpy.run_module("kit", run_name="__main__")
"""


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}", "PYTHONUNBUFFERED": "1", **extra}


def _commands() -> dict[str, list[str]]:
    """Every command of the CLI, sub-commands (kit kernel build, ...) included, with the arguments that get it past
    its usage checks: a new command is covered without editing this test."""

    def walk(group: Any, prefix: list[str]) -> dict[str, Any]:
        found = {}
        for name, command in sorted(group.commands.items()):
            found |= walk(command, [*prefix, name]) if hasattr(command, "commands") else {" ".join([*prefix, name]): command}
        return found

    from kit.cli import app

    commands = {}
    for words, command in walk(typer.main.get_command(app), []).items():
        params = {param.name for param in command.params}
        args = ["comp=demo", "data.root=raw"] if "settings" in params else []
        args += ["{tmp}"] if "folder" in params else []  # new-comp's folder
        args += ["format=savedmodel"] if "fmt" in params else []  # checked before the settings load
        commands[words] = args
    return commands


def _signalled(command: list[str], ready: Path, sig: int, cwd: Path, env: dict[str, str], group: bool = False):
    """Run ``command``, send ``sig`` once ``ready`` exists (to its process group: a terminal's Ctrl-C), return
    (exit code, stderr)."""
    log = cwd / f"{ready.name}.log"
    with open(log, "w") as handle:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=handle, stderr=handle, start_new_session=group)
        try:
            wait_until(ready.exists, f"{ready.name}", proc)
            os.killpg(proc.pid, sig) if group else os.kill(proc.pid, sig)
            proc.wait(timeout=COMMAND_TIMEOUT_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=REAP_TIMEOUT_S)
    return proc.returncode, log.read_text(errors="replace")


def _interrupted_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.startswith("interrupted (")]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


def test_the_cli_has_the_commands_this_test_walks() -> None:
    commands = list(_commands())
    assert {"train", "records", "predict", "kernel build", "new-comp", "demo", "list"} <= set(commands), commands


@pytest.mark.slow
@pytest.mark.parametrize(("words", "args"), _commands().items(), ids=list(_commands()))
def test_every_command_interrupted_by_ctrl_c_exits_130_and_names_the_rerun(words: str, args: list[str], tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    command = [sys.executable, "-c", KIT_HOLDING_AT_START, *words.split(), *(a.format(tmp=tmp_path) for a in args)]
    code, stderr = _signalled(command, ready, signal.SIGINT, tmp_path, _env(KIT_TEST_READY=str(ready)))
    assert code == 130, stderr
    line = _interrupted_line(stderr)
    assert f"rerun `kit {words}" in line, line
    assert line.endswith("--resume` to continue where it stopped") == (words == "train"), line


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_before_any_work_still_exits_non_zero(sig: int, tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    command = [sys.executable, "-c", KIT_HOLDING_AT_START, "config", "comp=demo"]
    code, stderr = _signalled(command, ready, sig, tmp_path, _env(KIT_TEST_READY=str(ready)))
    assert code == EXIT_CODES[sig], stderr
    assert ("SIGTERM" if sig == signal.SIGTERM else "Ctrl-C") in _interrupted_line(stderr)


# ---------------------------------------------------------------------------------------------- records

# `kit records` on 2 workers whose main process holds once the first shard is reported written.
KIT_RECORDS_HOLDING = """
import os, runpy, signal, sys
from kit.data import shards
add = shards._Warnings.add
def add_then_hold(self, *args, **kwargs):
    add(self, *args, **kwargs)
    open(os.environ["KIT_TEST_READY"], "w").close()
    while True:
        signal.pause()
shards._Warnings.add = add_then_hold
sys.argv = ["kit", *sys.argv[1:]]
runpy.run_module("kit", run_name="__main__")
"""


@pytest.mark.slow
def test_ctrl_c_during_a_records_build_exits_130_marks_nothing_done_and_the_rerun_finishes(tmp_path: Path) -> None:
    from kit.config import load_config
    from kit.data.demo import make_demo_competition
    from kit.data.manifest import records_dir
    from kit.data.schema import MANIFEST

    raw = tmp_path / "raw"
    make_demo_competition(raw, size=32)
    settings = ["comp=demo", "model=cnn", f"data.root={raw}", f"data.records_root={tmp_path / 'rec'}"]
    settings += ["data.workers=2", "data.shard_mb=0.05", "model.image_size=32"]
    ready = tmp_path / "ready"
    command = [sys.executable, "-c", KIT_RECORDS_HOLDING, "records", *settings]
    code, stderr = _signalled(command, ready, signal.SIGINT, tmp_path, _env(KIT_TEST_READY=str(ready)), group=True)
    assert code == 130, stderr
    assert "rerun `kit records comp=demo" in _interrupted_line(stderr)
    folder = Path(records_dir(load_config(settings)))
    assert not (folder / MANIFEST).exists()  # not marked done

    rerun = subprocess.run(
        [sys.executable, "-m", "kit", "records", *settings], cwd=tmp_path, env=_env(), capture_output=True, text=True
    )
    assert rerun.returncode == 0, rerun.stderr
    assert "resuming:" in rerun.stderr
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["counts"]["train"]["total"] + manifest["counts"]["val"]["total"] > 0


# ---------------------------------------------------------------------------------------------- training

# `kit train` whose run holds once its first epoch is checkpointed (a callback beside the run's own ones).
KIT_TRAIN_HOLDING = """
import os, runpy, signal, sys
import keras
from kit.train import callbacks
class HoldAfterFirstEpoch(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        open(os.environ["KIT_TEST_READY"], "w").close()
        while True:
            signal.pause()
run_folder_callbacks = callbacks.run_folder_callbacks
callbacks.run_folder_callbacks = lambda *a, **k: [*run_folder_callbacks(*a, **k), HoldAfterFirstEpoch()]
sys.argv = ["kit", *sys.argv[1:]]
runpy.run_module("kit", run_name="__main__")
"""


def _tiny_training(tmp_path: Path) -> list[str]:
    """Settings of a tiny CNN run on generated 16 px records (no raw data: kit trains on the records as they are)."""
    import tensorflow as tf

    from kit.data import schema
    from kit.data.manifest import VERSION

    size, folder = 16, tmp_path / "records" / "tiny" / "16" / "holdout0.2-seed42"  # the default split plan's folder
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    shards, counts = {}, {}
    for split, n in (("train", 32), ("val", 8)):
        name = f"{split}-00000{schema.SHARD_SUFFIX}"
        with tf.io.TFRecordWriter(str(folder / name)) as writer:
            for i in range(n):
                label = i % 2
                png = tf.io.encode_png(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).numpy()
                soft = np.eye(2, dtype="float32")[label]
                writer.write(schema.serialize(schema.Example(png, label, soft, f"{split}{i}", size, size, -1)))
        shards[split], counts[split] = [name], {"total": n}
    manifest = {"version": VERSION, "comp": "tiny", "image_size": size, "classes": ["a", "b"], "num_classes": 2}
    manifest |= {"image_format": "png", "counts": counts, "shards": shards, "skipped": [], "fingerprint": "signals"}
    # what the records say they were built from: the (missing) raw data folder the settings name, and the plan
    manifest["source"] = {"data_root": str((tmp_path / "no-raw-data").resolve()), "split_plan": "holdout0.2-seed42"}
    (folder / schema.MANIFEST).write_text(json.dumps(manifest))
    return [
        "model=cnn",
        "comp.name=tiny",
        f"data.root={tmp_path / 'no-raw-data'}",
        f"data.records_root={tmp_path / 'records'}",
        f"run.root={tmp_path / 'runs'}",
        "run.id=r1",
        f"model.image_size={size}",
        "model.options={filters: [4]}",
        "model.dense_units=0",
        "augment.mode=none",
        "train.batch_size=8",
        "train.epochs=3",
        "train.verbose=0",
    ]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_a_signal_during_training_exits_non_zero_marks_nothing_done_and_resume_finishes(sig: int, tmp_path: Path) -> None:
    from kit.runs import DONE

    settings = _tiny_training(tmp_path)
    ready = tmp_path / "ready"
    command = [sys.executable, "-c", KIT_TRAIN_HOLDING, "train", *settings]
    code, stderr = _signalled(command, ready, sig, tmp_path, _env(KIT_TEST_READY=str(ready)), group=sig == signal.SIGINT)
    assert code == EXIT_CODES[sig], stderr
    assert _interrupted_line(stderr).endswith("--resume` to continue where it stopped")
    run_dir = tmp_path / "runs" / "tiny" / "cnn" / "r1"
    assert not (run_dir / DONE).exists() and (run_dir / "checkpoint" / "state.json").is_file()

    rerun = subprocess.run(
        [sys.executable, "-m", "kit", "train", *settings, "--resume"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert rerun.returncode == 0, rerun.stderr
    assert (run_dir / DONE).is_file()


# A lone worker (TF_CONFIG names only itself) whose strategy is built, then waits for a signal in Python.
BUILT_THEN_HOLDING = """
import os, signal, sys
from kit.cli.common import Terminated, raise_terminated
signal.signal(signal.SIGTERM, raise_terminated)
from kit.config import Config
from kit.train.strategy import choose_strategy
cfg = Config()
cfg.train.strategy = "multiworker"
print(choose_strategy(cfg)[1], flush=True)
open(os.environ["KIT_TEST_READY"], "w").close()
try:
    while True:
        signal.pause()
except Terminated:
    sys.exit(143)
"""


@pytest.mark.slow
def test_sigterm_is_kits_again_once_the_multi_worker_strategy_is_built(tmp_path: Path) -> None:
    from train_helpers import free_ports

    ready = tmp_path / "ready"
    (port,) = free_ports(1)
    tf_config = json.dumps({"cluster": {"worker": [f"127.0.0.1:{port}"]}, "task": {"type": "worker", "index": 0}})
    command = [sys.executable, "-c", BUILT_THEN_HOLDING]
    code, output = _signalled(command, ready, signal.SIGTERM, tmp_path, _env(TF_CONFIG=tf_config, KIT_TEST_READY=str(ready)))
    assert code == 143, output  # before: TensorFlow's preemption handler took SIGTERM and the worker went on
    assert "multi-worker mirrored: 1 workers" in output


def _unreachable_worker() -> dict[str, str]:
    """TF_CONFIG of worker 0 of two, whose worker 1 never starts (a port nothing listens on)."""
    from train_helpers import free_ports

    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    return {"TF_CONFIG": json.dumps({"cluster": cluster, "task": {"type": "worker", "index": 0}}), "PORT": str(ports[1])}


@pytest.mark.slow
def test_a_worker_that_never_comes_is_named_after_the_start_up_limit(tmp_path: Path) -> None:
    settings = _tiny_training(tmp_path)
    cluster = _unreachable_worker()
    env = _env(TF_CONFIG=cluster["TF_CONFIG"], KIT_MULTIWORKER_START_S="2")
    error = kit_error_line(["train", *settings, "strategy=multiworker"], tmp_path, env)
    assert f"no answer from worker 1 (127.0.0.1:{cluster['PORT']}) after 2 s" in error
    assert "KIT_MULTIWORKER_START_S" in error


@pytest.mark.slow
def test_sigterm_ends_a_worker_waiting_for_the_others(tmp_path: Path) -> None:
    settings = _tiny_training(tmp_path)
    cluster = _unreachable_worker()
    log = tmp_path / "worker.log"
    env = _env(TF_CONFIG=cluster["TF_CONFIG"], KIT_MULTIWORKER_START_S="100000")
    with open(log, "w") as handle:
        command = [sys.executable, "-m", "kit", "train", *settings, "strategy=multiworker"]
        proc = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=handle, stderr=handle)
        try:
            wait_until(lambda: "multi-worker start-up: waiting for worker 1" in log.read_text(errors="replace"), "the wait", proc)
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=REAP_TIMEOUT_S)  # a hang, before: TensorFlow's handler only noted the SIGTERM
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(timeout=REAP_TIMEOUT_S)
    assert proc.returncode == 143, log.read_text()
    assert "interrupted (SIGTERM)" in log.read_text()
