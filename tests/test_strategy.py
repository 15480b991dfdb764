"""Strategy choice, precision policy, batch math; MirroredStrategy over two logical CPUs in a subprocess."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
from conftest import COMMAND_TIMEOUT_S
from train_helpers import config, python

from kit.config import Config
from kit.errors import KitError
from kit.train import strategy as st


def _cfg(**train) -> Config:
    cfg = Config()
    cfg.train = dataclasses.replace(cfg.train, **train)
    return cfg


@pytest.fixture
def no_tpu(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (*st.TPU_ENV, "TF_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(st.glob, "glob", lambda pattern: [])


@pytest.mark.parametrize(
    ("device", "mode", "policy"),
    [
        ("cpu", "auto", "float32"),
        ("gpu", "auto", "mixed_float16"),
        ("tpu", "auto", "mixed_bfloat16"),
        ("gpu", "off", "float32"),
        ("cpu", "bfloat16", "mixed_bfloat16"),
        ("tpu", "bfloat16", "mixed_bfloat16"),
    ],
)
def test_precision_follows_the_device(device: str, mode: str, policy: str) -> None:
    assert st.choose_precision(_cfg(mixed_precision=mode), device) == policy


def test_float16_on_tpu_is_refused() -> None:
    with pytest.raises(KitError, match="float16 is not supported on TPUs") as info:
        st.choose_precision(_cfg(mixed_precision="float16"), "tpu")
    assert "bfloat16" in info.value.hint


def test_tpu_without_a_tpu_is_a_clear_error(no_tpu: None) -> None:
    with pytest.raises(KitError, match="strategy=tpu but this machine has no TPU") as info:
        st.choose_strategy(_cfg(strategy="tpu"))
    assert "strategy=auto" in info.value.hint


def test_gpu_without_a_gpu_is_a_clear_error(no_tpu: None) -> None:
    with pytest.raises(KitError, match="no GPU"):
        st.choose_strategy(_cfg(strategy="gpu"))


def test_auto_on_a_cpu_machine(no_tpu: None) -> None:
    strategy, description = st.choose_strategy(_cfg(strategy="auto"))
    assert strategy.num_replicas_in_sync == 1 and "CPU" in description
    assert st.device_type(strategy) == "cpu" and st.is_chief(strategy)
    assert st.describe(strategy, "float32")["strategy"] == "default"


def test_tpu_batch_check_and_global_batch() -> None:
    st.check_tpu_batch(128, 8)  # 16 per core
    with pytest.raises(KitError, match="multiple of 64") as info:
        st.check_tpu_batch(8 * 12, 8)  # 12 per core
    assert "train.batch_size=8" in info.value.hint
    assert st.global_batch_size(_cfg(batch_size=32), 4) == 128


def test_tf_config_tasks(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:1", "c:1"]}, "task": {"type": "chief", "index": 0}})
    )
    assert st.tf_config_tasks() == 3
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(KitError, match="TF_CONFIG"):
        st.tf_config_tasks()


MIRRORED_SCRIPT = """
import json, sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from train_helpers import config, datasets, tiny_scratch
from kit.train.strategy import choose_strategy, describe, global_batch_size
from kit.train.fitting import fit_phases
cfg = config(sys.argv[1], epochs=2, strategy="mirrored", batch_size=8)
strategy, description = choose_strategy(cfg)
batch = global_batch_size(cfg, strategy.num_replicas_in_sync)
train_ds, val_ds = datasets(batch)
with strategy.scope():
    model = tiny_scratch()
result = fit_phases(cfg, model, train_ds, val_ds, sys.argv[2], steps_per_epoch=3, strategy=strategy)
seen = next(iter(strategy.experimental_distribute_dataset(train_ds)))[0]
per_replica = [int(t.shape[0]) for t in strategy.experimental_local_results(seen)]
print("RESULT " + json.dumps({"description": description, "global": batch, "per_replica": per_replica,
      "info": describe(strategy, "float32"), "epochs": result["epochs"], "iterations": int(model.optimizer.iterations.numpy())}))
"""


@pytest.mark.slow
def test_mirrored_over_two_logical_cpus(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    script = MIRRORED_SCRIPT.replace("sys.argv[1]", repr(str(tmp_path))).replace("sys.argv[2]", repr(str(run_dir)))
    proc = python(script)
    output = proc.communicate(timeout=COMMAND_TIMEOUT_S)[0]
    assert proc.returncode == 0, output
    result = json.loads(next(line for line in output.splitlines() if line.startswith("RESULT "))[7:])
    assert result["description"] == "mirrored over 2 CPU devices"
    assert result["info"]["replicas"] == 2 and result["info"]["strategy"] == "mirrored" and len(result["info"]["devices"]) == 2
    assert result["global"] == 16 and result["per_replica"] == [8, 8]  # global batch = 8 per replica x 2
    assert result["epochs"] == 2 and result["iterations"] == 6  # one optimizer step per global batch
    assert (run_dir / "best.keras").is_file() and len((run_dir / "history.csv").read_text().splitlines()) == 3


def test_config_helper_is_binary(tmp_path: Path) -> None:
    assert config(tmp_path).binary
