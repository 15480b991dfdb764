"""The report writer: a section's results JSON, the bar charts of throughputs, and BENCHMARKS.md rendered from
every results JSON present (full results first, quick ones clearly labelled)."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from bench.common import SECTIONS, Context

# How to run a section when the default (`make bench ARGS='--only KEY'`) is not the way.
RUN_COMMANDS = {
    "GPU": "`make gpu-check` on a machine with a GPU",
    "D-CIFAKE": "not yet measured: the full run trains each variant on all 100,000 images, hours on 2 cores: "
    "`KIT_CIFAKE_DIR=<folder with train/ and test/> make bench ARGS='--only D-CIFAKE'`; the quick form below proves the path",
}


def write_result(ctx: Context, section: str, result: dict) -> Path:
    from kit.io import write_json

    return write_json(ctx.results / f"{section.lower()}.json", result)


def bar_png(path: Path, values: dict[str, float], title: str, ylabel: str = "images/s") -> str:
    """A bar chart of throughputs (kit.plots' bar chart takes counts; rounding to ints loses nothing here)."""
    from kit import plots

    plots.bar_chart({k: int(round(v)) for k, v in values.items()}, path, title, ylabel=ylabel)
    return path.name


def _load_results(folder: Path) -> dict[str, dict]:
    results = {}
    for key in SECTIONS:
        path = folder / f"{key.lower()}.json"
        with contextlib.suppress(OSError, ValueError):
            results[key] = json.loads(path.read_text())
    return results


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _section_md(key: str, result: dict, folder: Path, doc_dir: Path) -> list[str]:
    machine = result.get("machine", {})
    versions = machine.get("versions", {})
    lines = [f"### {result.get('title', key)}", ""]
    if result.get("error"):
        lines += [f"**Failed**: {_cell(result['error'])}", ""]
    if result.get("rows"):
        lines += ["| figure | value | goal | ratio | result | note |", "|---|---|---|---|---|---|"]
        for r in result["rows"]:
            ratio = "" if r.get("ratio") is None else f"{r['ratio']:.2f}"
            verdict = {True: "PASS", False: "FAIL", None: ""}[{"True": True, "False": False}.get(r.get("pass"), r.get("pass"))]
            if result.get("quick") and r.get("goal"):  # tiny sizes: a verdict, but not one to quote
                verdict = f"{verdict} (quick)" if verdict else "n/a (quick)"
            cells = [r["figure"], r["value"], r.get("goal", ""), ratio, verdict, r.get("note", "")]
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        lines.append("")
    for note in result.get("notes", []):
        lines.append(f"- {note}")
    if result.get("notes"):
        lines.append("")
    for png in result.get("plots", []):
        rel = os.path.relpath(folder / png, doc_dir)
        lines += [f"![{png}]({rel})", ""]
    lines += [
        f"Machine: {machine.get('cores', '?')} cores, {machine.get('cpu', '?')}, {machine.get('memory_gib', '?')} GiB, "
        f"load {machine.get('load_average_1m_at_start', '?')} at start"
        + (f", {machine['load_average_1m_at_end']} at end" if "load_average_1m_at_end" in machine else "")
        + f"; Python {machine.get('python', '?')}, "
        + ", ".join(f"{k} {v}" for k, v in versions.items())
        + f"; commit {machine.get('commit', '?')}.  ",
        f"Run {result.get('started', '?')}, {result.get('seconds', 0):.0f} s: `{result.get('command', '')}`",
        "",
    ]
    return lines


def render_doc(results_dir: Path, doc: Path) -> Path:
    """BENCHMARKS.md from every section JSON under ``results_dir`` (full) and ``results_dir/quick``."""
    from kit.io import atomic_write

    full, quick = _load_results(results_dir), _load_results(results_dir / "quick")
    lines = [
        "# Benchmarks",
        "",
        "Written by `python -m bench` (the bench/ package) from the JSON results in `bench/results/` (do not edit by "
        "hand). Every speed figure is a ratio of kit against a baseline measured side by side in the same run on the "
        "same files, so the noise of shared cores mostly cancels; absolute images/s are shown for context only.",
        "",
        "```",
        "make bench                 # full run (hours on 2 cores: the accuracy section trains three models on Fashion-MNIST)",
        "make bench QUICK=1         # smoke run, a few minutes: tiny sizes, results in bench/results/quick/",
        "make bench ARGS='--only P2,P3'   # some sections (" + " ".join(SECTIONS) + ")",
        "make gpu-check             # the GPU check on a machine with a GPU, under 8 minutes (without one: nothing to do)",
        "KIT_CIFAKE_DIR=<folder> make bench ARGS='--only D-CIFAKE'   # CIFAKE option by option (train/ and test/ REAL, FAKE)",
        "```",
        "",
        "## Full results",
        "",
    ]
    if not full:
        lines += ["Not run yet on this machine: `make bench` writes them (run it on a quiet machine).", ""]
    for key in SECTIONS:
        if key in full:
            lines += _section_md(key, full[key], results_dir, doc.parent)
        elif full:
            how = RUN_COMMANDS.get(key, f"`make bench ARGS='--only {key}'`")
            lines += [f"### {key}", "", f"Not run yet ({how}).", ""]
    lines += [
        "## Quick results (smoke run)",
        "",
        "**QUICK MODE**: tiny sizes (P1 at N = 2k/5k, few batches and epochs, a 2k-image Fashion-MNIST subset for 2 "
        "epochs, 120 JPEGs for P1-JPEG, 64 records for P2-380, 48 + 24 images and 1 epoch for D-TRACE, 32 JPEGs for "
        "D-RECORDS, a 5k/2k CIFAKE subset and 1 epoch for D-CIFAKE) to prove every path works. These numbers are NOT the "
        "benchmark: start-up costs dominate them and the accuracy goals do not apply.",
        "",
    ]
    if not quick:
        lines += ["Not run yet: `make bench QUICK=1`.", ""]
    for key in SECTIONS:
        if key in quick:
            lines += _section_md(key, quick[key], results_dir / "quick", doc.parent)
    atomic_write(doc, "\n".join(lines).rstrip() + "\n")
    return doc
