"""The GPU check (`make gpu-check`, `python -m bench --only GPU`): without a GPU it says so, exits 0 and writes nothing;
its items, rehearsed on the CPU at tiny sizes (`--gpu-on-cpu`), run through kit's code, save as they go, keep
earlier items and skip what the time budget cannot hold."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMMAND_TIMEOUT_S

from bench.common import NothingToMeasure
from bench.gpu import require_gpu

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}


def bench(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    folders = ["--results", str(tmp_path / "results"), "--work", str(tmp_path / "work"), "--doc", str(tmp_path / "B.md")]
    command = [sys.executable, "-m", "bench", "--only", "GPU", *args, *folders]
    done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.mark.slow
def test_make_gpu_check_without_a_gpu_says_so_exits_0_and_writes_nothing(tmp_path: Path) -> None:
    folders = f"--results {tmp_path / 'results'} --work {tmp_path / 'work'} --doc {tmp_path / 'B.md'}"
    if shutil.which("make"):
        command = ["make", "-s", "gpu-check", f"GPU_PYTHON={sys.executable}", f"ARGS={folders}"]
    else:  # the command the target runs
        command = [sys.executable, "-m", "bench", "--only", "GPU", *folders.split()]
    done = subprocess.run(command, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "no GPU: nothing to measure" in done.stdout
    assert f"python {sys.executable}" in done.stdout and "TensorFlow 2." in done.stdout  # what it runs with
    assert "nothing measured: no results written" in done.stdout
    assert not (tmp_path / "B.md").exists() and not list((tmp_path / "results").rglob("*"))
    assert not list((tmp_path / "work").rglob("*"))  # nothing generated or built before it knew


def test_a_gpu_tensorflow_cannot_use_is_a_failure_and_a_hidden_one_is_not() -> None:
    listed = {"gpus": [], "tensorflow": "2.21.0", "nvidia_smi": ["NVIDIA H100 80GB HBM3, 81559 MiB, 580.159.04"]}
    with pytest.raises(NothingToMeasure, match="TensorFlow 2.21.0 cannot use it") as unusable:
        require_gpu({**listed, "cuda_visible_devices": None})
    assert unusable.value.failed
    with pytest.raises(NothingToMeasure, match=r"^no GPU: nothing to measure \(CUDA_VISIBLE_DEVICES hides") as hidden:
        require_gpu({**listed, "cuda_visible_devices": ""})
    assert not hidden.value.failed
    no_tf = {**listed, "tensorflow": None, "tensorflow_error": "ModuleNotFoundError: No module named 'tensorflow'"}
    with pytest.raises(NothingToMeasure, match="no TensorFlow in /opt/python3.*nothing measured on NVIDIA H100") as missing:
        require_gpu({**no_tf, "python": "/opt/python3", "cuda_visible_devices": None})
    assert missing.value.failed
    with pytest.raises(NothingToMeasure, match="^no GPU: nothing to measure") as nothing:
        require_gpu({**no_tf, "python": "/opt/python3", "nvidia_smi": [], "cuda_visible_devices": None})
    assert not nothing.value.failed
    require_gpu({**listed, "gpus": [{"device": "/physical_device:GPU:0", "name": "H100", "compute_capability": "9.0"}]})


def earlier_item(ms: float, rate: float) -> dict:
    row = {"figure": "earlier", "value": f"{ms} ms/step", "goal": "", "ratio": None, "pass": None, "note": "first epoch 9 s"}
    raw = {"ms_per_step": ms, "images_per_second": rate}
    return {"rows": [row], "raw": raw, "seconds": 9.0, "measured": "2020-01-02 03:04:05"}


@pytest.mark.slow
def test_rehearsal_skips_what_the_budget_cannot_hold_and_keeps_earlier_items(tmp_path: Path) -> None:
    quick = tmp_path / "results" / "quick"
    quick.mkdir(parents=True)
    failed = {"rows": [], "raw": {}, "error": "RuntimeError: boom", "measured": "2020-01-02 03:04:05"}
    items = {"effnetb4-float16-xla": earlier_item(50.0, 640.0), "effnetb4-float32-xla": earlier_item(100.0, 320.0)}
    earlier = {"started": "2020-01-02 03:04:05", "raw": {"environment": {"gpus": []}, "items": {**items, "mirrored": failed}}}
    (quick / "gpu.json").write_text(json.dumps(earlier))

    # The demo's estimate (120 s) is over the whole budget: it is skipped however fast the jitter runs.
    done = bench(tmp_path, "--gpu-on-cpu", "--gpu-items", "jitter,demo", "--gpu-budget", "100")
    assert "GPU [1/2] jitter: " in done.stdout and "GPU [2/2] demo: skipped" in done.stdout  # a line per item

    result = json.loads((quick / "gpu.json").read_text())
    assert "error" not in result and result["title"].startswith("GPU check rehearsed on the CPU")
    assert set(result["raw"]["items"]) == {"effnetb4-float16-xla", "effnetb4-float32-xla", "jitter", "demo"}
    jitter = result["raw"]["items"]["jitter"]
    assert jitter["raw"]["ms_xla_on"] > 0 and jitter["raw"]["ms_xla_off"] > 0 and jitter["raw"]["strength"] == 0.2
    share = jitter["raw"]["ms_xla_on"] / 50.0  # against the earlier float16 + XLA step
    assert [r["note"] for r in jitter["rows"]][0] == f"{share:.1%} of the effnetb4 float16, XLA on step"
    assert result["raw"]["items"]["demo"]["skipped"] and not (tmp_path / "work" / "demo-quick").exists()
    figures = {r["figure"]: r for r in result["rows"]}
    assert figures["demo"]["value"] == "skipped" and re.search(r"the item takes ~\d+ s", figures["demo"]["note"])
    assert figures["earlier"]["note"] == "first epoch 9 s; measured 2020-01-02 03:04:05"
    gain = figures["effnetb4 64 px: float16 over float32, XLA on"]
    assert gain["ratio"] == 2.0 and gain["value"] == "640 / 320 img/s"
    text = (tmp_path / "B.md").read_text()
    assert "### GPU check rehearsed on the CPU" in text and "ColorJitter layer (0.2) at 64 px" in text


@pytest.mark.slow
def test_rehearsal_feeds_kits_model_from_kits_records_and_from_a_held_batch(tmp_path: Path) -> None:
    bench(tmp_path, "--gpu-on-cpu", "--gpu-items", "pipeline-effnetv2_b0", "--gpu-budget", "100000")
    result = json.loads((tmp_path / "results" / "quick" / "gpu.json").read_text())
    entry = result["raw"]["items"]["pipeline-effnetv2_b0"]
    assert "error" not in entry, entry
    raw = entry["raw"]
    assert raw["records"]["images_per_second"] > 0 and raw["held"]["images_per_second"] > 0
    assert raw["records"]["global_batch"] == raw["held"]["global_batch"] == 2  # the tiny sizes' batch, one replica
    assert raw["pipeline_alone_images_per_second"] > 0 and raw["image_format"] in ("png", "jpeg", "raw")
    (manifest,) = (tmp_path / "work" / "gpu" / "records").rglob("manifest.json")  # kit built them for this run
    assert json.loads(manifest.read_text())["image_size"] == 32
    (row,) = result["rows"]
    assert row["goal"] == ">= 0.95x" and row["ratio"] == raw["records"]["images_per_second"] / raw["held"]["images_per_second"]
