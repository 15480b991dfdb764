"""P1's records build: one build in a fresh process (``python -m bench --p1-child``) and the memory of that
process's whole tree (spawn pool included), sampled from outside while it runs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import ROOT, synth_path


def p1_child(spec: dict) -> None:
    """One records build in a fresh process (run by ``--p1-child``): prints its timing and rusage as JSON."""
    import resource

    import pandas as pd

    from kit.config import Config
    from kit.data.manifest import records_dir
    from kit.data.records import build_records

    num_classes, n = spec["classes"], spec["n"]
    cfg = Config()
    cfg.comp.name = f"p1-{n}"
    cfg.model.image_size = spec["size"]
    cfg.data.records_root = spec["records_root"]
    cfg.data.shard_mb = spec["shard_mb"]
    # PNG records: the same decode + resize + encode work as the OpenCV baseline loop (the default, raw
    # pixels for small images, would skip the encode and flatter kit). P1-JPEG names its own format.
    cfg.data.image_format = spec.get("format", "png")
    classes = [f"c{k:03d}" for k in range(num_classes)]
    cfg.comp.classes = classes
    root = Path(spec["source"])
    # The index as `kit records` gets it: kit.data.sources.load_index reads <records_root>/<comp>/index.csv.
    index_csv = Path(spec.get("index") or Path(spec["records_root"]) / f"index-{n}.csv")  # P1-JPEG writes its own
    if not index_csv.is_file():
        from kit.io import atomic_write

        table = pd.DataFrame(
            {
                "id": [f"{i:06d}" for i in range(n)],
                "path": [str(synth_path(root, i, num_classes)) for i in range(n)],
                "label": [i % num_classes for i in range(n)],
                "split": "train",
                "fold": -1,
            }
        )
        atomic_write(index_csv, table.to_csv(index=False))
        del table
    index = pd.read_csv(index_csv, dtype={"id": str, "path": str, "split": str}, keep_default_na=False)
    rss_before = _tree_memory_self()
    shutil.rmtree(records_dir(cfg), ignore_errors=True)  # a fresh build, never the up-to-date no-op
    build_started_at = time.time()
    start = time.perf_counter()
    manifest = build_records(cfg, index, classes)
    seconds = time.perf_counter() - start
    from kit.data.shards import plan_shards, worker_count

    shards = len(plan_shards(cfg, index))
    result = {
        "n": n,
        "seconds": seconds,
        "written": manifest.counts["train"].total,
        "shards": shards,
        "workers": worker_count(cfg, shards),
        # Linux ru_maxrss is KiB; for RUSAGE_CHILDREN it is the largest single (reaped) child, not a sum.
        "self_maxrss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "largest_child_maxrss": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024,
        "rss_with_index": rss_before,  # this process with imports and the index table loaded, before the build
        "build_started_at": build_started_at,
    }
    shutil.rmtree(records_dir(cfg), ignore_errors=True)  # 100k images of records are not worth keeping
    print("P1RESULT " + json.dumps(result), flush=True)


def _tree_memory_self() -> int | None:
    """This process's RSS now (None without psutil)."""
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def _tree_memory(process: Any, with_pss: bool = True) -> tuple[int, int | None]:
    """(RSS, PSS) summed over a process and all its descendants; PSS is None when skipped or unreadable.

    RSS counts shared pages (TensorFlow's libraries, mapped by every worker) once per process, so its sum is
    an upper bound; PSS divides each shared page among its users, so its sum is what the tree really holds.
    """
    import psutil

    rss, pss = 0, 0 if with_pss else None
    for proc in [process, *process.children(recursive=True)]:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            rss += proc.memory_info().rss
            if pss is not None:
                try:
                    pss += proc.memory_full_info().pss
                except (AttributeError, psutil.AccessDenied):
                    pss = None  # not Linux, or not readable: RSS only
    return rss, pss


def run_build_process(spec: dict, log_path: Path) -> dict:
    """Run :func:`p1_child` in a subprocess and sample the memory of its whole tree while it runs."""
    try:
        import psutil  # optional: not a kit dependency; without it only rusage is available
    except ImportError:
        psutil = None
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    command = [sys.executable, "-m", "bench", "--p1-child", json.dumps(spec)]
    samples: list[tuple[float, int, int | None]] = []  # (time, tree RSS, tree PSS)
    # PSS reads /proc/<pid>/smaps_rollup of every process (~2 ms of CPU a sample, 4% of a core at 20 Hz,
    # taken from the build being timed): every 4th sample; RSS (cheap) on every one.
    ticks = 0
    with open(log_path, "w") as errors:
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=errors, text=True)
        watched = psutil.Process(proc.pid) if psutil else None
        while proc.poll() is None:
            if watched is not None:
                with contextlib.suppress(psutil.NoSuchProcess):
                    samples.append((time.time(), *_tree_memory(watched, with_pss=ticks % 4 == 0)))
                ticks += 1
            time.sleep(0.05)
        out = proc.stdout.read() if proc.stdout else ""
    lines = [line for line in out.splitlines() if line.startswith("P1RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = log_path.read_text()[-2000:] if log_path.is_file() else ""
        raise RuntimeError(f"records build for N={spec['n']} failed (exit {proc.returncode}); log {log_path}:\n{tail}")
    result = json.loads(lines[-1][len("P1RESULT ") :])
    # Only the build counts: start-up and reading the index come before it (the index is the caller's table).
    during = [sample for sample in samples if sample[0] >= result["build_started_at"]]
    pss = [sample[2] for sample in during if sample[2] is not None]
    result["tree_peak_rss_sampled"] = max(sample[1] for sample in during) if during else None
    result["tree_peak_pss_sampled"] = max(pss) if pss else None
    result["rss_samples"] = len(during)
    if result["tree_peak_rss_sampled"] and result.get("rss_with_index"):
        result["build_own_rss"] = result["tree_peak_rss_sampled"] - result["rss_with_index"]
    # Without psutil: the parent plus every worker at the largest worker's peak, an upper bound.
    result["tree_peak_rss_bound"] = result["self_maxrss"] + result["workers"] * result["largest_child_maxrss"]
    return result
