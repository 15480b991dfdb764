"""GPU: what only a GPU can measure, in one run of under 8 minutes (``make gpu-check``, ``python -m bench --only GPU``).

Every item goes through kit's own code, on data generated on the spot (no network):

- **step time** of EfficientNetB4 at 380 px and EfficientNetV2-B0 at 224 px, batch 32, ``weights=none``: kit's model
  (``build_model``, with kit's colour jitter first where kit puts it on a GPU) compiled as kit's phase 2 compiles it,
  float16 mixed precision on/off x XLA on/off, fitted on one batch held in memory (no input cost);
- **the input pipeline**: kit's training dataset from records built by kit feeding the same compiled model, against
  the first batch of that dataset held in memory: does the pipeline keep the GPU busy?
- **the ColorJitter layer** (``augment.jitter_on=model``, kit's GPU default) alone on one batch on the GPU;
- **MirroredStrategy** over every visible GPU, against one device;
- **the demo** end to end (``kit demo`` in a fresh process).

The items run most telling first, each in its own try, each saved to gpu.json and BENCHMARKS.md as soon as it is
done (a run cut short keeps what it measured); the run starts no item its time budget (``--gpu-budget``) cannot hold
and lists it as skipped. ``--gpu-items`` runs some items and keeps the others from the last gpu.json of the same GPUs.
Without a GPU it prints "no GPU: nothing to measure" and writes nothing; ``--gpu-on-cpu`` rehearses the items on the
CPU at tiny sizes (a test of this script, not a measurement).
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from bench.common import Context, NothingToMeasure, log, row
from bench.gpu_items import (
    FULL_GPU,
    PIPELINE_GOAL,
    TINY_GPU,
    Check,
    GpuSizes,
    demo,
    jitter_cost,
    mirrored,
    pipeline,
    step_name,
    step_time,
)


@dataclass(frozen=True)
class Item:
    name: str  # what --gpu-items picks
    estimate_s: float  # a guess at its cost on one H100, compilation included: the budget starts no item it cannot hold
    measure: Callable[[Check], dict]  # {"rows": [...], "raw": {...}}


# --- the environment ----------------------------------------------------------------------------------------


def nvidia_smi() -> list[str]:
    """One line per GPU the driver lists (name, memory, driver version); [] without nvidia-smi."""
    if shutil.which("nvidia-smi") is None:
        return []
    query = ["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"]
    try:
        done = subprocess.run(query, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in done.stdout.splitlines() if line.strip()] if done.returncode == 0 else []


def environment() -> dict[str, Any]:
    """Which Python, TensorFlow (and the CUDA it was built for) and GPUs this run sees."""
    env: dict[str, Any] = {"python": sys.executable, "python_version": platform.python_version(), "tensorflow": None}
    env.update(nvidia_smi=nvidia_smi(), gpus=[], cuda_visible_devices=os.environ.get("CUDA_VISIBLE_DEVICES"))
    try:
        import tensorflow as tf
    except Exception as exc:  # noqa: BLE001 - not installed, or a broken install (missing libraries)
        env["tensorflow_error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return env
    build = tf.sysconfig.get_build_info()
    env.update(tensorflow=tf.__version__, cuda=build.get("cuda_version"), cudnn=build.get("cudnn_version"))
    for gpu in tf.config.list_physical_devices("GPU"):
        details = tf.config.experimental.get_device_details(gpu)
        capability = ".".join(str(n) for n in details.get("compute_capability", ()))
        env["gpus"].append({"device": gpu.name, "name": details.get("device_name", "?"), "compute_capability": capability})
    return env


def describe(env: dict[str, Any]) -> str:
    tf = (
        f"TensorFlow {env['tensorflow']} (CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')})"
        if env["tensorflow"]
        else "no TensorFlow"
    )
    gpus = ", ".join(f"{g['name']} ({g['compute_capability']})" for g in env["gpus"]) or "none"
    return f"python {env['python']} ({env['python_version']}); {tf}; GPUs TensorFlow sees: {gpus}; nvidia-smi: " + (
        "; ".join(env["nvidia_smi"]) or "none"
    )


def require_gpu(env: dict[str, Any]) -> None:
    """Return when TensorFlow sees a GPU; else NothingToMeasure, a failure when the driver lists a GPU TensorFlow
    cannot use (and CUDA_VISIBLE_DEVICES does not hide it on purpose)."""
    if env["gpus"]:
        return
    hidden = env["cuda_visible_devices"] in ("", "-1")
    listed = env["nvidia_smi"] and not hidden
    if env["tensorflow"] is None:
        if listed:
            raise NothingToMeasure(
                f"no TensorFlow in {env['python']} ({env['tensorflow_error']}): nothing measured on {env['nvidia_smi'][0]}; "
                "run the check with a Python that has TensorFlow with CUDA (make gpu-check GPU_PYTHON=...)",
                failed=True,
            )
        raise NothingToMeasure(f"no GPU: nothing to measure (and no TensorFlow in {env['python']})")
    if listed:
        raise NothingToMeasure(
            f"no GPU: nothing to measure, though nvidia-smi lists {'; '.join(env['nvidia_smi'])}: TensorFlow "
            f"{env['tensorflow']} cannot use it (a build without CUDA, or CUDA libraries it cannot load: "
            "pip install 'tensorflow[and-cuda]')",
            failed=True,
        )
    why = f" (CUDA_VISIBLE_DEVICES hides {'; '.join(env['nvidia_smi'])})" if env["nvidia_smi"] else ""
    raise NothingToMeasure("no GPU: nothing to measure" + why)


def plan(sizes: GpuSizes) -> list[Item]:
    """The items, most telling first: a run that runs out of time loses the least."""
    (big, big_size), (small, small_size) = sizes.models

    def step(model: str, size: int, float16: bool, xla: bool, estimate_s: float) -> Item:
        return Item(
            step_name(model, float16, xla), estimate_s, partial(step_time, model=model, size=size, float16=float16, xla=xla)
        )

    return [
        step(big, big_size, True, True, 120),
        Item(f"pipeline-{big}", 60, partial(pipeline, model=big, size=big_size)),
        step(big, big_size, False, True, 120),
        step(big, big_size, True, False, 60),
        Item("jitter", 20, jitter_cost),
        Item("demo", 120, demo),
        step(small, small_size, True, True, 50),
        step(small, small_size, False, True, 50),
        step(small, small_size, True, False, 30),
        Item(f"pipeline-{small}", 45, partial(pipeline, model=small, size=small_size)),
        Item("mirrored", 50, mirrored),
        step(big, big_size, False, False, 60),
        step(small, small_size, False, False, 30),
    ]


# --- the run ------------------------------------------------------------------------------------------------


def run_item(check: Check, item: Item) -> dict:
    start = time.perf_counter()
    try:
        entry = item.measure(check)
    except Exception as exc:  # one failing item must not lose the others
        traceback.print_exc()
        reason = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        entry = {"rows": [row(item.name, "failed", note=reason[:300])], "raw": {}, "error": reason}
    gc.collect()  # the item's models and datasets: their GPU memory goes back to TensorFlow's pool for the next
    return {**entry, "seconds": time.perf_counter() - start, "measured": check.started}


def carried_items(ctx: Context, env: dict[str, Any]) -> dict[str, dict]:
    """The measured items of the last gpu.json from the same GPUs, kept beside a run of some items only."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        last = json.loads((ctx.results / "gpu.json").read_text())
        if last["raw"]["environment"]["gpus"] == env["gpus"]:
            items = last["raw"]["items"].items()
            return {name: entry for name, entry in items if entry.get("measured") and not entry.get("error")}
    return {}


def item_rows(check: Check, entry: dict) -> list[dict]:
    """An item's rows; one measured by an earlier run says when."""
    if entry.get("measured", check.started) == check.started:
        return entry["rows"]
    return [{**r, "note": "; ".join(filter(None, (r["note"], f"measured {entry['measured']}")))} for r in entry["rows"]]


GAINS = (  # (what, the faster setup, the slower one) as (float16, xla)
    ("float16 over float32, XLA on", (True, True), (False, True)),
    ("float16 over float32, XLA off", (True, False), (False, False)),
    ("XLA over none, float16", (True, True), (True, False)),
    ("XLA over none, float32", (False, True), (False, False)),
)


def gain_rows(check: Check) -> list[dict]:
    rows = []
    for model, size in check.sizes.models:
        for what, faster, slower in GAINS:
            fast = check.figure(step_name(model, *faster), "images_per_second")
            slow = check.figure(step_name(model, *slower), "images_per_second")
            if fast and slow:
                rows.append(row(f"{model} {size} px: {what}", f"{fast:,.0f} / {slow:,.0f} img/s", ratio=fast / slow))
    return rows


def assemble(check: Check) -> dict:
    entries = [check.done[item.name] for item in plan(check.sizes) if item.name in check.done]
    gpus = ", ".join(g["name"] for g in check.env["gpus"]) or "no GPU"
    title = "GPU check rehearsed on the CPU (tiny sizes: not GPU figures)" if check.ctx.gpu_on_cpu else f"GPU: {gpus}"
    s = check.sizes
    return {
        "title": title,
        "rows": [r for entry in entries for r in item_rows(check, entry)] + gain_rows(check),
        "raw": {
            "environment": check.env,
            "sizes": dataclasses.asdict(s),
            "budget_s": check.ctx.gpu_budget_s,
            "items": check.done,
        },
        "notes": [
            describe(check.env) + ".",
            "Step time: kit's model (kit.models.registry.build_model, weights=none, the two classes of ai-vs-human, its "
            "colour jitter as the first layer where kit puts it on a GPU) compiled as kit's phase 2 (kit.train.phases."
            "enter_phase: the whole backbone unfrozen, BatchNorm frozen; kit's optimizer, loss and metrics), precision by "
            "kit.train.strategy.choose_precision, XLA by train.jit_compile; model.fit on one generated batch repeated from "
            f"memory (no decode, no augmentation), {s.steps} steps an epoch, one untimed epoch (tracing, compilation, "
            f"autotuning) then {s.timed_epochs} timed. No checkpoint or evaluation callbacks: the step alone.",
            f"Pipeline: {s.images} generated JPEGs of the AI-vs-human size mix built into records by kit (image format as "
            "shipped), kit's training dataset (kit.train.session: flip and CutMix in tf.data, the colour jitter in the "
            f"model) feeding the same compiled model, against the first batch of that dataset held in memory; ratio >= "
            f"{PIPELINE_GOAL:g}: the pipeline keeps the GPU busy. 'The pipeline alone' pulls batches with no model.",
            "ColorJitter: the layer in training on one batch on the device, its output summed (one sync a call). Mirrored: "
            "train.strategy=mirrored over every visible GPU. Demo: `kit demo` in a fresh process, its folders under the "
            "work folder.",
            f"Items run most telling first, each saved as soon as it is done; the budget ({check.ctx.gpu_budget_s:.0f} s, "
            "--gpu-budget) starts no item it cannot hold (skipped rows); --gpu-items reruns some and keeps the others.",
        ],
    }


def section_gpu(ctx: Context) -> dict:
    sizes = TINY_GPU if ctx.quick else FULL_GPU
    names = [item.name for item in plan(sizes)]
    unknown = sorted(set(ctx.gpu_items) - set(names))
    if unknown:
        raise NothingToMeasure(f"unknown GPU item(s) {', '.join(unknown)}; choose among {', '.join(names)}", failed=True)
    env = environment()
    log(describe(env))
    if not ctx.gpu_on_cpu:
        require_gpu(env)
    device = "/GPU:0" if env["gpus"] and not ctx.gpu_on_cpu else "/CPU:0"
    check = Check(ctx, sizes, device, env, time.strftime("%Y-%m-%d %H:%M:%S"))
    check.done.update(carried_items(ctx, env) if ctx.gpu_items else {})
    chosen = [item for item in plan(sizes) if not ctx.gpu_items or item.name in ctx.gpu_items]
    deadline = time.perf_counter() + ctx.gpu_budget_s
    log(f"GPU check: {len(chosen)} items on {check.device}, budget {ctx.gpu_budget_s:.0f} s")
    estimated = spent = 0.0  # of the items run so far: a machine slower than the guesses scales the guesses that follow
    for number, item in enumerate(chosen, 1):
        left = deadline - time.perf_counter()
        needs = item.estimate_s * max(1.0, spent / estimated if estimated else 1.0)
        if needs > left:
            note = f"the budget had {max(left, 0):.0f} s of {ctx.gpu_budget_s:.0f} left, the item takes ~{needs:.0f} s"
            check.done[item.name] = {"rows": [row(item.name, "skipped", note=note)], "raw": {}, "skipped": True, "seconds": 0}
        else:
            check.done[item.name] = run_item(check, item)
            estimated, spent = estimated + item.estimate_s, spent + check.done[item.name]["seconds"]
        entry = check.done[item.name]
        outcome = entry.get("error") or entry["rows"][0]["value"]
        outcome += f": {entry['rows'][0]['note']}" if entry.get("skipped") else ""
        log(f"GPU [{number}/{len(chosen)}] {item.name}: {outcome} ({entry['seconds']:.0f} s)")
        if ctx.save is not None:
            ctx.save(assemble(check))
    return assemble(check)
