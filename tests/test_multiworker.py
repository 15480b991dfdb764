"""MultiWorkerMirroredStrategy: two local worker processes (TF_CONFIG on 127.0.0.1) train through fit_phases.

Keras 3 ``fit`` fails under this strategy on TF 2.21 (see kit/train/multiworker.py); the trainer's own
loop must train, let only the chief write the run directory, and keep both workers in agreement.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import COMMAND_TIMEOUT_S
from train_helpers import free_ports, python

WORKER_SCRIPT = """
import json, os, sys
from train_helpers import config, datasets, tiny_scratch
from kit.train.strategy import choose_strategy, global_batch_size, is_chief
from kit.train.fitting import fit_phases
cfg = config(sys.argv[1], epochs=3, batch_size=8, schedule="cosine", early_stopping_patience=2)
strategy, description = choose_strategy(cfg)  # auto: TF_CONFIG names two workers
batch = global_batch_size(cfg, strategy.num_replicas_in_sync)
train_ds, val_ds = datasets(batch)
with strategy.scope():
    model = tiny_scratch()
result = fit_phases(cfg, model, train_ds, val_ds, sys.argv[2], steps_per_epoch=3, strategy=strategy, validation_steps=2)
print("RESULT " + json.dumps({"description": description, "chief": is_chief(strategy), "global": batch,
      "result": result, "iterations": int(model.optimizer.iterations.numpy())}), flush=True)
"""


@pytest.mark.slow
def test_two_local_workers_train_and_the_chief_writes(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    script = WORKER_SCRIPT.replace("sys.argv[1]", repr(str(tmp_path))).replace("sys.argv[2]", repr(str(run_dir)))
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
        procs.append(python(script, env={"TF_CONFIG": tf_config}))
    outputs = []
    try:
        for proc in procs:
            outputs.append(proc.communicate(timeout=COMMAND_TIMEOUT_S)[0])
    finally:
        for proc in procs:
            proc.kill()
    for proc, output in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, output
    results = [json.loads(next(line for line in out.splitlines() if line.startswith("RESULT "))[7:]) for out in outputs]

    assert [r["chief"] for r in results] == [True, False]
    assert "multi-worker mirrored: 2 workers, 2 replicas" in results[0]["description"]
    assert results[0]["global"] == 16
    # Both workers saw the same all-reduced metrics and took the same decisions.
    assert results[0]["result"] == results[1]["result"]
    assert results[0]["iterations"] == results[1]["iterations"] == 3 * results[0]["result"]["epochs"]
    result = results[0]["result"]
    assert result["monitor"] == "val_f1_score" and "val_accuracy" in result["metrics"]

    # The chief wrote the run directory; the other worker wrote only to a temp dir it removed.
    rows = (run_dir / "history.csv").read_text().splitlines()
    assert len(rows) == 1 + result["epochs"] and rows[0].startswith("epoch,phase,")
    for name in ("best.keras", "metrics.json", "checkpoint/state.json"):
        assert (run_dir / name).is_file(), name
    assert json.loads((run_dir / "metrics.json").read_text()) == result
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
