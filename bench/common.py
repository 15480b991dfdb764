"""What several benchmark sections share: sizes and run context, machine info, table rows, synthetic images,
competition YAMLs under bench/work/, and the epoch clock that times kit's training loop (P4, ACC)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
WORK = ROOT / "bench" / "work"
DOC = ROOT / "BENCHMARKS.md"
JPEGS = Path(tempfile.gettempdir()) / "kit-bench-jpegs"  # P1-JPEG's generated files: 1.3 GB at 20,000, outside the repo
SECTIONS = ("P1", "P2", "P3", "P4", "JITTER", "ACC", "T", "P1-JPEG", "P2-380", "GPU", "PROBE", "D-TRACE", "D-RECORDS", "D-CIFAKE")
GENERATOR_FILE = "generator.json"  # in a generated data folder: the parameters it was made with, written last
GIB = 1024**3
BATCH = 64


@dataclass(frozen=True)
class Sizes:
    """How much each section measures; quick mode only proves that every path works."""

    p1_sizes: tuple[int, ...]  # images per records build (one build, in its own process, per N)
    p1_shard_mb: float  # small shards so that even the smallest N gives every worker several shards
    p1_rounds: int  # loop/build pairs per N in alternating order (loop, build, build, loop, ...)
    pipe_per_class: int  # P2/P3: 100 classes x this many 64 px PNGs
    pipe_rounds: int  # alternating rounds kit / baseline
    pipe_batches: int  # timed batches per pipeline per round
    pipe_skip: int  # untimed batches at the start of each round (drains what prefetch filled meanwhile)
    p4_images: int  # P4: 10 classes of 32 px images
    p4_epochs: int  # steady state = epochs 2..n
    p4_rounds: int  # kit/bare pairs, alternating order (ABBA) to cancel drift
    jitter_size: int
    jitter_batches: int
    jitter_rounds: int
    acc_train: int  # 0: all 60k Fashion-MNIST training images
    acc_test: int  # 0: all 10k test images
    acc_epochs: int  # 0: kit's defaults for each model


# This machine's CPU time comes in bursts (two identical 10 s runs can differ by 1.4x), so the full run
# alternates several long-enough rounds per figure; one short round each gave P2 4.6x and 6.4x minutes apart.
FULL = Sizes((10_000, 50_000, 100_000), 4.0, 2, 50, 8, 150, 8, 6400, 5, 2, 224, 20, 3, 0, 0, 0)
QUICK = Sizes((2_000, 5_000), 4.0, 1, 20, 2, 30, 4, 1920, 3, 1, 224, 5, 2, 2000, 500, 2)


@dataclass
class Context:
    quick: bool
    sizes: Sizes
    results: Path  # where the section JSONs and PNGs go
    work: Path
    command: str
    machine: dict[str, Any] = field(default_factory=dict)
    acc_models: tuple[str, ...] = ()  # ACC: the models to train (empty: all of ACC_GOALS)
    acc_rescore: bool = False  # ACC: score the recorded runs again instead of training
    t_fast_model: str = "resnet9"  # T4: the fastest scratch preset (skipped when the registry lacks it)
    t_rows: str = ""  # T: comma-separated rows to run among T1,T2,T3,T4,T5 (default: all)
    gpu_budget_s: float = 450.0  # GPU: seconds the check may spend; it starts no item that would not fit
    gpu_items: tuple[str, ...] = ()  # GPU: the items to run (default: all); the last gpu.json keeps the others
    gpu_on_cpu: bool = False  # GPU: rehearse the check on the CPU at tiny sizes (the script's own test)
    jpegs: Path = JPEGS  # P1-JPEG and P2-380: the generated real-size JPEGs (made once, reused)
    cifake_dir: Path | None = None  # D-CIFAKE: the CIFAKE folder (else $KIT_CIFAKE_DIR; without either, nothing to run)
    cifake_variants: tuple[str, ...] = ()  # D-CIFAKE: the variants to run (default: all); the last run keeps the others
    # Writes the running section's results so far (its JSON, then BENCHMARKS.md): for a section that saves as it goes,
    # so a run stopped part-way keeps what it measured. Set by ``python -m bench`` for each section.
    save: Callable[[dict], Path] | None = None


class NothingToMeasure(Exception):
    """A section that has nothing to measure on this machine (the GPU check without a usable GPU): it writes nothing.
    ``failed``: whether that is a failure (a GPU TensorFlow cannot use) rather than expected (no GPU at all)."""

    def __init__(self, message: str, failed: bool = False) -> None:
        super().__init__(message)
        self.failed = failed


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else int(os.cpu_count() or 1)


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, load and library versions: what a reader needs to compare two runs."""
    model = platform.processor() or "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    memory = 0
    with contextlib.suppress(OSError, ValueError, IndexError):
        memory = int(Path("/proc/meminfo").read_text().split()[1]) * 1024
    commit = "unknown"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        commit += " (+ uncommitted changes)" if dirty else ""
    packages = ("tensorflow", "keras", "numpy", "opencv-python-headless", "pandas", "pillow", "psutil")
    return {
        "cores": cores(),
        "cpu": model,
        "memory_gib": round(memory / GIB, 1),
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {p: _version(p) for p in packages},
        "commit": commit,
    }


def row(figure: str, value: str, goal: str = "", ratio: float | None = None, passed: bool | None = None, note: str = "") -> dict:
    """One line of a section's table (pre-formatted text; the raw numbers go in the section's ``raw``)."""
    return {"figure": figure, "value": value, "goal": goal, "ratio": ratio, "pass": passed, "note": note}


def images_per_second(images: float, seconds: float) -> float:
    return images / seconds if seconds > 0 else 0.0


def synth_images(start: int, count: int, size: int, num_classes: int, seed: int = 7) -> tuple[np.ndarray, np.ndarray]:
    """``count`` RGB images (uint8 [n, size, size, 3]) numbered from ``start``, class = number % classes.

    Each class has its own colour and gradient direction plus a random bright box and mild noise, so the
    PNGs compress like smooth photos rather than like pure noise and a model can learn the classes (P4).
    Deterministic in (start, seed), so a cache can be extended or regenerated bit for bit.
    """
    numbers = np.arange(start, start + count)
    labels = numbers % num_classes
    rng = np.random.default_rng(seed * 1_000_003 + start)
    hue = (labels * 0.618034) % 1.0
    base = np.stack([127 + 100 * np.cos(2 * np.pi * (hue + k / 3)) for k in range(3)], -1)  # [n, 3]
    grid = np.linspace(0.0, 1.0, size, dtype=np.float32)
    angle = labels * 2 * np.pi / num_classes
    gradient = np.cos(angle)[:, None, None] * grid[None, None, :] + np.sin(angle)[:, None, None] * grid[None, :, None]
    images = base[:, None, None, :] * (0.55 + 0.45 * gradient[..., None])
    for i in range(count):  # one box per image; a python loop over boxes is cheap next to PNG encoding
        y0, x0 = rng.integers(0, size // 2, 2)
        h, w = rng.integers(size // 8, size // 2, 2)
        images[i, y0 : y0 + h, x0 : x0 + w] = 0.5 * images[i, y0 : y0 + h, x0 : x0 + w] + 110
    images += rng.normal(0.0, 3.0, images.shape)
    return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)


def synth_path(root: Path, number: int, num_classes: int) -> Path:
    return root / f"c{number % num_classes:03d}" / f"{number:06d}.png"


def ensure_synth_folder(root: Path, count: int, size: int, num_classes: int) -> list[Path]:
    """A class-folder tree ``root/c<k>/<n>.png`` holding at least images 0..count-1 (cached between runs)."""
    import cv2

    marker = root / ".bench.json"
    have = 0
    with contextlib.suppress(OSError, ValueError, KeyError):
        meta = json.loads(marker.read_text())
        if meta["size"] == size and meta["classes"] == num_classes:
            have = int(meta["count"])
    if have < count:
        log(f"generating {count - have} synthetic {size}px PNGs in {root}")
        for k in range(num_classes):
            (root / f"c{k:03d}").mkdir(parents=True, exist_ok=True)
        chunk = 2000  # bounds memory: 2000 x 64 x 64 x 3 float64 is ~200 MB during generation
        for start in range(have, count, chunk):
            images, _ = synth_images(start, min(chunk, count - start), size, num_classes)
            for offset, image in enumerate(images):
                ok, data = cv2.imencode(".png", image[..., ::-1])
                if not ok:
                    raise RuntimeError("OpenCV could not encode a PNG")
                synth_path(root, start + offset, num_classes).write_bytes(data.tobytes())
        from kit.io import write_json

        write_json(marker, {"size": size, "classes": num_classes, "count": count})
    return [synth_path(root, n, num_classes) for n in range(count)]


def write_comp_yaml(path: Path, name: str, data_root: Path, classes: list[str], test: bool = False, **extra: Any) -> Path:
    """A class-folder competition YAML whose data, records and runs all live under bench/work/."""
    import yaml

    from kit.io import atomic_write

    comp: dict[str, Any] = {"name": name, "source": "local", "train": {"dir": "train"}, "classes": classes, "metric": "accuracy"}
    if test:
        comp["test"] = {"dir": "test"}
    comp.update(extra.pop("comp", {}))
    config = {
        "comp": comp,
        "data": {"root": str(data_root), "records_root": str(path.parent / "records")},
        "run": {"root": str(path.parent / "runs")},
        **extra,
    }
    atomic_write(path, "# written by python -m bench\n" + yaml.safe_dump(config, sort_keys=False))
    return path


def epoch_clock() -> Any:
    """A callback that stamps the end of every epoch (placed last, so an epoch includes every other callback)."""
    import keras

    class EpochClock(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.ends: list[float] = []

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            self.ends.append(time.perf_counter())

    return EpochClock()


def steady_seconds(ends: list[float]) -> float | None:
    """Mean seconds of epochs 2..n (the first pays for tracing and warm-up)."""
    if len(ends) < 2:
        return None
    return (ends[-1] - ends[0]) / (len(ends) - 1)


def generated_before(root: Path, params: dict[str, Any]) -> bool:
    """True when ``root`` holds a finished generation with these parameters (its ``generator.json``, written last,
    records them): reuse it. Otherwise the stale marker is removed and the caller generates anew."""
    marker = root / GENERATOR_FILE
    try:
        if json.loads(marker.read_text())["params"] == params:
            return True
    except (OSError, ValueError, KeyError):
        pass
    marker.unlink(missing_ok=True)
    return False
