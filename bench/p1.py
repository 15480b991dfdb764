"""P1: records build images/s over ``cores x`` a single-process OpenCV loop on the same files, and the peak memory
of the build's process tree at several N (the build itself runs in :mod:`bench.p1_build`)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import GIB, Context, cores, ensure_synth_folder, images_per_second, log, row
from bench.p1_build import run_build_process


def opencv_loop(paths: Sequence[str | Path], size: int) -> float:
    """Seconds for one process on one core to do what the records writer does per image, minus the writing.

    The plainest OpenCV code for it: cv2.imread (the fastest way OpenCV reads a file: no Python bytes, no
    np.fromfile), cv2.resize, cv2.imencode.
    """
    import cv2

    threads = cv2.getNumThreads()
    cv2.setNumThreads(1)  # the build's workers run OpenCV single-threaded; so does the baseline
    try:
        start = time.perf_counter()
        for path in paths:
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            image = cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)
            ok, _ = cv2.imencode(".png", image)  # OpenCV's default PNG settings, as kit.data.schema.encode_image
            if not ok:
                raise RuntimeError(f"OpenCV could not encode {path}")
        return time.perf_counter() - start
    finally:
        cv2.setNumThreads(threads)


def _loop_slice(job: tuple[list[str], int]) -> float:
    return opencv_loop(*job)


def parallel_loops(pool: Any, paths: list[Path], size: int, processes: int) -> float:
    """Wall seconds for ``processes`` copies of :func:`opencv_loop`, each on its own slice, on an already
    started pool: what this machine's cores really give the bare loop when all run at once."""
    slices = [[str(p) for p in paths[k::processes]] for k in range(processes)]
    start = time.perf_counter()
    pool.map(_loop_slice, [(paths_k, size) for paths_k in slices], chunksize=1)
    return time.perf_counter() - start


def _p1_rounds(ctx: Context, spec: dict, paths: list[Path], loop_pool: Any, n_cores: int) -> tuple[list, list, list]:
    """P1's timed rounds for one N: (loop seconds, parallel-loops seconds, build results), in ABBA order."""
    n = spec["n"]
    loops: list[float] = []
    parallel: list[float] = []
    builds: list[dict] = []
    log(f"P1 N={n}: reading the {n:,} files once, so that every timed pass finds them in the page cache")
    for path in paths:
        path.read_bytes()
    for number in range(ctx.sizes.p1_rounds):
        steps = ["loop", "parallel", "build"]
        for step in steps if number % 2 == 0 else steps[::-1]:  # ABBA: drift hits every side alike
            if step == "loop":
                log(f"P1 N={n}: single-process OpenCV loop")
                loops.append(opencv_loop(paths, spec["size"]))
            elif step == "parallel":
                log(f"P1 N={n}: {n_cores} OpenCV loop processes at once")
                parallel.append(parallel_loops(loop_pool, paths, spec["size"], n_cores))
            else:
                log(f"P1 N={n}: records build (subprocess, RSS of the process tree sampled every 50 ms)")
                builds.append(run_build_process(spec, ctx.work / "p1" / f"build-{n}.log"))
    return loops, parallel, builds


def section_p1(ctx: Context) -> dict:
    sizes, size, num_classes = ctx.sizes.p1_sizes, 32, 100
    source = ctx.work / "p1" / "images"
    paths = ensure_synth_folder(source, max(sizes), 64, num_classes)
    n_cores = cores()
    runs, rows = [], []
    import multiprocessing

    loop_pool = multiprocessing.get_context("spawn").Pool(n_cores)  # started once: its start-up is not timed
    try:
        for n in sizes:
            spec = {
                "n": n,
                "size": size,
                "classes": num_classes,
                "source": str(source),
                "records_root": str(ctx.work / "p1" / "records"),
                "shard_mb": ctx.sizes.p1_shard_mb,
            }
            loops, parallel, builds = _p1_rounds(ctx, spec, paths[:n], loop_pool, n_cores)
            # The mean time of each side; memory from the build with the highest peak.
            loop_seconds = float(np.mean(loops))
            build = max(builds, key=lambda b: b["tree_peak_rss_sampled"] or b["tree_peak_rss_bound"])
            seconds = [b["seconds"] for b in builds]
            build = {
                **build,
                "seconds": float(np.mean(seconds)),
                "round_seconds": seconds,
                "loop_round_seconds": loops,
                "parallel_loop_round_seconds": parallel,
                "parallel_loop_rate": images_per_second(n, float(np.mean(parallel))),
            }
            loop_rate = images_per_second(n, loop_seconds)
            build_rate = images_per_second(n, build["seconds"])
            ratio = build_rate / (n_cores * loop_rate) if loop_rate else 0.0
            peak = build["tree_peak_rss_sampled"] or build["tree_peak_rss_bound"]
            runs.append({**build, "loop_seconds": loop_seconds, "loop_rate": loop_rate, "build_rate": build_rate, "ratio": ratio})
            log(
                f"P1 N={n}: build {build_rate:.0f} img/s, loop {loop_rate:.0f} img/s per core, "
                f"ratio {ratio:.2f}, peak {peak / GIB:.2f} GiB"
            )
            rows.append(
                row(
                    f"build img/s over {n_cores} x 1-core loop, N={n:,}",
                    f"{build_rate:,.0f} vs {n_cores} x {loop_rate:,.0f}",
                    ">= 0.8",
                    ratio,
                    ratio >= 0.8,
                    f"{build['workers']} workers, {build['shards']} shards",
                )
            )
            parallel_rate = build["parallel_loop_rate"]
            rows.append(
                row(
                    f"diagnosis, N={n:,}: {n_cores} loop processes at once over {n_cores} x 1-core loop",
                    f"{parallel_rate:,.0f} vs {n_cores} x {loop_rate:,.0f}",
                    "",
                    parallel_rate / (n_cores * loop_rate) if loop_rate else None,
                    None,
                    "what this machine's cores give the bare loop side by side",
                )
            )
            rows.append(
                row(
                    f"diagnosis, N={n:,}: build over {n_cores} loop processes at once",
                    f"{build_rate:,.0f} vs {parallel_rate:,.0f}",
                    "",
                    build_rate / parallel_rate if parallel_rate else None,
                    None,
                    "kit's own cost: TFRecord writing, pool start-up, checks",
                )
            )
    finally:
        loop_pool.terminate()
        loop_pool.join()
    for run in runs:
        peak = run["tree_peak_rss_sampled"] or run["tree_peak_rss_bound"]
        how = "sum of RSS, sampled" if run["tree_peak_rss_sampled"] else "rusage bound (psutil missing)"
        if run.get("tree_peak_pss_sampled"):
            how += f"; PSS (shared pages split) {run['tree_peak_pss_sampled'] / GIB:.2f} GiB"
        rows.append(
            row(
                f"peak RSS of the build's process tree, N={run['n']:,}",
                f"{peak / GIB:.2f} GiB",
                "< 1.5 GiB",
                None,
                peak < 1.5 * GIB,
                how,
            )
        )
    if len(runs) >= 2:
        # seconds(N) = fixed + N / marginal: separates the pool start-up (workers import TensorFlow) from the
        # per-image speed, which is what a records-writer change would move.
        slope, fixed = np.polyfit([r["n"] for r in runs], [r["seconds"] for r in runs], 1)
        limit = n_cores * float(np.mean([r["loop_rate"] for r in runs]))
        if slope > 0:
            value, ratio = f"{fixed:.1f} s fixed + {1.0 / slope:,.0f} img/s marginal", (1.0 / slope) / limit
        else:  # the larger build was not slower: noise swamps the per-image cost at these N
            value, ratio = "per-image cost not resolvable at these N (noise)", None
        rows.append(row("diagnosis: line fit of build seconds over N", value, "", ratio, None, "ratio = marginal rate / limit"))
    peaks = [r["tree_peak_rss_sampled"] or r["tree_peak_rss_bound"] for r in runs]
    growth = peaks[-1] / peaks[0] if peaks and peaks[0] else 0.0
    span = f"N={sizes[0]:,} -> {sizes[-1]:,}"
    rows.append(row(f"peak RSS growth {span}", f"x{growth:.2f}", "flat (<= x1.2)", growth, growth <= 1.2))
    own = [r.get("build_own_rss") for r in runs]
    if all(own):
        rows.append(
            row(
                "the build's own memory (peak minus the process with its index loaded)",
                ", ".join(f"{o / 2**20:,.0f} MiB" for o in own),
                "",
                None,
                None,
                "N = "
                + ", ".join(f"{r['n']:,}" for r in runs)
                + "; the index table itself: "
                + ", ".join(f"{(r['rss_with_index'] - runs[0]['rss_with_index']) / 2**20:+,.0f} MiB" for r in runs),
            )
        )
    plots = [_p1_png(ctx.results / "p1_build.png", runs, n_cores)]
    return {
        "title": "P1: records build speed and memory",
        "rows": rows,
        "raw": {"runs": runs, "cores": n_cores, "image_size": size, "source_size": 64, "shard_mb": ctx.sizes.p1_shard_mb},
        "plots": plots,
        "notes": [
            f"Source: {max(sizes):,} generated 64x64 PNGs in 100 class folders, written at 32 px as PNG records. "
            f"The limit is {n_cores} cores x a single-process OpenCV loop (cv2.imread, cv2.resize INTER_AREA, "
            "cv2.imencode PNG with OpenCV's defaults, one OpenCV thread) on the same files. Every file is read once before the "
            f"timed passes, so all of them find the files in the page cache. Per N, {ctx.sizes.p1_rounds} round(s) "
            f"of the loop, {n_cores} loop processes at once (on a pool started beforehand) and the build alternate "
            "(loop, parallel, build, build, parallel, loop), and the mean time of each side is compared. The "
            "diagnosis rows split the ratio in two: how far this machine's cores fall short of "
            f"{n_cores} x one core for the bare loop, and what kit costs on top of the loop run in parallel. The build's "
            "time includes starting the spawn pool (the workers write TFRecords without TensorFlow), the index checks, "
            "fingerprint, TFRecord writing, fsyncs and the manifest.",
            f"data.shard_mb={ctx.sizes.p1_shard_mb:g} (about 1,200 images per shard at 32 px) so every worker gets "
            "shards; with the default 100 MB a 10k-image build at 32 px is a single shard, i.e. a single worker.",
            "Peak RSS = the largest sum of RSS over the build process and all its descendants, sampled every 50 ms "
            "with psutil during build_records (after the index is read from its CSV as `kit records` reads it); shared "
            "library pages count once per process, so it is an upper bound; the PSS sum beside it splits shared pages "
            "among the processes. rusage's largest-child maxrss is kept in the raw results (on Linux a spawned child "
            "inherits the parent's RSS high-water mark through fork + exec, so it is not the worker's own).",
        ],
    }


def _p1_png(path: Path, runs: list[dict], n_cores: int) -> str:
    from matplotlib.figure import Figure

    from kit import plots

    fig = Figure(figsize=(9, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    ns = [r["n"] for r in runs]
    left.plot(ns, [r["build_rate"] for r in runs], marker="o", label="kit records build")
    left.plot(ns, [n_cores * r["loop_rate"] for r in runs], marker="o", linestyle="--", label=f"{n_cores} x 1-core OpenCV loop")
    if all(r.get("parallel_loop_rate") for r in runs):
        parallel = [r["parallel_loop_rate"] for r in runs]
        left.plot(ns, parallel, marker="o", linestyle=":", label=f"{n_cores} loop processes at once")
    left.set_ylim(bottom=0)  # from zero, so the gap between the lines reads at its true size
    left.set_xlabel("images")
    left.set_ylabel("images/s")
    left.legend(fontsize=8)
    left.grid(alpha=0.3)
    peaks = [(r["tree_peak_rss_sampled"] or r["tree_peak_rss_bound"]) / GIB for r in runs]
    right.plot(ns, peaks, marker="o", label="sum of RSS")
    if all(r.get("tree_peak_pss_sampled") for r in runs):
        right.plot(ns, [r["tree_peak_pss_sampled"] / GIB for r in runs], marker="o", linestyle="--", label="sum of PSS")
    right.axhline(1.5, color="red", linestyle=":", label="goal 1.5 GiB")
    right.set_ylim(0, max(2.0, 1.15 * max(peaks)))
    right.set_xlabel("images")
    right.set_ylabel("peak RSS of process tree (GiB)")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    plots.save(fig, path)
    return path.name
