"""`python -m bench` works end to end: quick P1 on a tiny size, results JSON, plot and report (< 30 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from conftest import COMMAND_TIMEOUT_S

ROOT = Path(__file__).resolve().parent.parent


def test_quick_p1_tiny_writes_results_and_report(tmp_path: Path) -> None:
    results, work, doc = tmp_path / "results", tmp_path / "work", tmp_path / "BENCHMARKS.md"
    # A full result already there must survive a quick run (quick results go to <results>/quick/).
    (results).mkdir()
    full = {"section": "JITTER", "title": "JITTER: full run", "quick": False, "rows": [], "notes": []}
    (results / "jitter.json").write_text(json.dumps(full))
    command = [
        sys.executable,
        "-m",
        "bench",
        "--quick",
        "--only",
        "P1",
        "--p1-sizes",
        "60,120",
        "--results",
        str(results),
        "--work",
        str(work),
        "--doc",
        str(doc),
    ]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "== P1 ==" in done.stdout  # progress lines as it goes

    result = json.loads((results / "quick" / "p1.json").read_text())
    assert result["quick"] is True and result["section"] == "P1" and "error" not in result
    assert [run["n"] for run in result["raw"]["runs"]] == [60, 120]
    for run in result["raw"]["runs"]:
        assert run["written"] == run["n"]
        assert run["build_rate"] > 0 and run["loop_rate"] > 0
        assert (run["tree_peak_rss_sampled"] or run["tree_peak_rss_bound"]) > 50 * 2**20  # python + kit at least
    assert result["machine"]["cores"] >= 1 and result["machine"]["versions"]["tensorflow"]
    assert "--quick" in result["command"]
    assert all((results / "quick" / png).is_file() for png in result["plots"])

    assert json.loads((results / "jitter.json").read_text()) == full  # untouched
    text = doc.read_text()
    assert "## Full results" in text and "JITTER: full run" in text
    assert "## Quick results" in text and "P1: records build speed and memory" in text
    assert "| figure | value | goal | ratio | result | note |" in text
