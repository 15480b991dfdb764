"""``python -m bench``: run the chosen sections, write each one's results JSON and render BENCHMARKS.md after each.

``--help`` lists the flags; ``--p1-child`` (internal) runs one records build for P1 in a fresh process.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path

from bench.acc import section_acc
from bench.cifake import section_d_cifake
from bench.common import DOC, FULL, JPEGS, QUICK, RESULTS, ROOT, SECTIONS, WORK, Context, NothingToMeasure, log, machine_info
from bench.detection import section_d_records, section_d_trace
from bench.gpu import section_gpu
from bench.jitter import section_jitter
from bench.p1 import section_p1
from bench.p1_build import p1_child
from bench.p1_jpeg import section_p1_jpeg
from bench.p2 import section_p2
from bench.p2_380 import section_p2_380
from bench.p3 import section_p3
from bench.p4 import section_p4
from bench.probe import section_probe
from bench.report import render_doc, write_result
from bench.time_to_accuracy import section_t

RUNNERS: dict[str, Callable[[Context], dict]] = {
    "P1": section_p1,
    "P2": section_p2,
    "P3": section_p3,
    "P4": section_p4,
    "JITTER": section_jitter,
    "ACC": section_acc,
    "T": section_t,
    "P1-JPEG": section_p1_jpeg,
    "P2-380": section_p2_380,
    "GPU": section_gpu,
    "PROBE": section_probe,
    "D-TRACE": section_d_trace,
    "D-RECORDS": section_d_records,
    "D-CIFAKE": section_d_cifake,
}


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description="kit benchmarks -> bench/results/ and BENCHMARKS.md")
    parser.add_argument("--quick", action="store_true", help="smoke run with tiny sizes; results go to bench/results/quick/")
    parser.add_argument("--only", default="", help=f"comma-separated sections among {','.join(SECTIONS)} (default: all)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="results folder (quick results go to <it>/quick)")
    parser.add_argument("--work", type=Path, default=WORK, help="work folder (generated images, records, runs)")
    parser.add_argument("--doc", type=Path, default=DOC, help="the Markdown report to write")
    parser.add_argument("--acc-models", default="", help="ACC: comma-separated models to train (default: resnet20,cnn,lstm)")
    parser.add_argument("--acc-rescore", action="store_true", help="ACC: score the recorded runs again, no training")
    parser.add_argument(
        "--t-rows", default="", help="T: rows to run, e.g. T3,T4,T5 (default: all; others: the last t.json's, else 'not run')"
    )
    parser.add_argument("--t-fast-model", default="resnet9", help="T4: the fastest scratch preset to time (default: resnet9)")
    parser.add_argument("--p1-sizes", default="", help="override P1's image counts, e.g. 200,400 (tests)")
    parser.add_argument("--gpu-budget", type=float, default=450.0, help="GPU: seconds the check may spend (default: 450)")
    parser.add_argument(
        "--gpu-items", default="", help="GPU: comma-separated items to run (default: all; the last gpu.json keeps the others)"
    )
    parser.add_argument(
        "--gpu-on-cpu", action="store_true", help="GPU: rehearse the check on the CPU at tiny sizes (implies --quick)"
    )
    parser.add_argument(
        "--jpegs", type=Path, default=JPEGS, help=f"P1-JPEG, P2-380: folder of the generated JPEGs (default: {JPEGS})"
    )
    parser.add_argument(
        "--cifake-dir", type=Path, default=None, help="D-CIFAKE: folder with train/ and test/ REAL, FAKE (else $KIT_CIFAKE_DIR)"
    )
    parser.add_argument(
        "--cifake-variants",
        default="",
        help="D-CIFAKE: comma-separated variants to run (default: all; the last d-cifake.json keeps the others)",
    )
    parser.add_argument("--p1-child", default="", help=argparse.SUPPRESS)  # internal: one records build
    return parser.parse_args(argv)


def save_result(args: argparse.Namespace, ctx: Context, key: str, started: str, start: float, result: dict) -> Path:
    """``result`` with the run's facts (when, how long, the machine, the command) into its JSON, then BENCHMARKS.md."""
    result.update(
        section=key,
        quick=args.quick,
        started=started,
        seconds=time.perf_counter() - start,
        # The load when the section ends, beside the load at start: on a shared machine other users' work changes it.
        machine={**ctx.machine, "load_average_1m_at_end": round(os.getloadavg()[0], 2)},
        command=ctx.command,
    )
    path = write_result(ctx, key, result)
    render_doc(args.results, args.doc)
    return path


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TensorFlow takes every GPU's whole memory at its first op unless told to grow: the GPU check's `kit demo` (a
    # second process on the same GPU) would then find none. Set before any section imports TensorFlow.
    os.environ.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    if args.p1_child:
        p1_child(json.loads(args.p1_child))
        return 0
    sys.path.insert(0, str(ROOT))  # kit importable when run from elsewhere (it is installed editable anyway)
    wanted = [s.strip().upper() for s in args.only.split(",") if s.strip()] or list(SECTIONS)
    unknown = [s for s in wanted if s not in SECTIONS]
    if unknown:
        print(f"error: unknown section(s) {', '.join(unknown)}; choose among {', '.join(SECTIONS)}", file=sys.stderr)
        return 2
    args.quick = args.quick or args.gpu_on_cpu
    sizes = QUICK if args.quick else FULL
    if args.p1_sizes:
        sizes = dataclasses.replace(sizes, p1_sizes=tuple(int(n) for n in args.p1_sizes.split(",")))
    results = args.results / "quick" if args.quick else args.results
    results.mkdir(parents=True, exist_ok=True)
    args.work.mkdir(parents=True, exist_ok=True)
    ctx = Context(args.quick, sizes, results, args.work, "python -m bench " + " ".join(argv), machine_info())
    ctx.acc_models = tuple(m.strip() for m in args.acc_models.split(",") if m.strip())
    ctx.acc_rescore = args.acc_rescore
    ctx.t_fast_model = args.t_fast_model
    ctx.t_rows = args.t_rows
    ctx.gpu_budget_s = args.gpu_budget
    ctx.gpu_items = tuple(s.strip() for s in args.gpu_items.split(",") if s.strip())
    ctx.gpu_on_cpu = args.gpu_on_cpu
    ctx.jpegs = args.jpegs
    ctx.cifake_dir = args.cifake_dir
    ctx.cifake_variants = tuple(s.strip() for s in args.cifake_variants.split(",") if s.strip())
    log(f"{'QUICK ' if args.quick else ''}benchmarks {', '.join(wanted)} -> {results}")
    log(f"machine: {ctx.machine['cores']} cores, {ctx.machine['cpu']}, load {ctx.machine['load_average_1m_at_start']}")
    failed, written = [], []
    for key in wanted:
        log(f"== {key} ==")
        started, start = time.strftime("%Y-%m-%d %H:%M:%S"), time.perf_counter()

        ctx.save = functools.partial(save_result, args, ctx, key, started, start)
        try:
            result = RUNNERS[key](ctx)
        except NothingToMeasure as reason:  # e.g. the GPU check on a machine without a GPU: nothing is written
            log(str(reason))
            if reason.failed:
                failed.append(key)
            continue
        except Exception as exc:  # one broken section must not lose the others' results
            traceback.print_exc()
            result = {"title": key, "rows": [], "error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"}
            failed.append(key)
        path = ctx.save(result)
        written.append(key)
        log(f"{key} done in {result['seconds']:.0f} s -> {path}")
        for r in result["rows"]:
            verdict = {True: "PASS", False: "FAIL", None: ""}[r.get("pass")]
            ratio = "" if r.get("ratio") is None else f" ratio {r['ratio']:.2f}"
            log(f"  {r['figure']}: {r['value']}{ratio} {('goal ' + r['goal']) if r.get('goal') else ''} {verdict}".rstrip())
    log(f"report: {args.doc}" if written else "nothing measured: no results written")
    if failed:
        log(f"failed sections: {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
