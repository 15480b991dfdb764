"""`python -m bench` works end to end: quick P1 on a tiny size, results JSON, plot and report (< 30 s)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMMAND_TIMEOUT_S

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
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


@pytest.mark.slow
def test_quick_time_to_accuracy_jpeg_and_380_rows_plot_and_report(tmp_path: Path) -> None:
    """The time-to-accuracy sections in quick mode: T (E, T1/T2 trained through kit's train entry point with a per-epoch test
    curve, T4 skipped when the registry lacks its model, T3 `kit demo`), P1-JPEG and P2-380, each row with its goal."""
    results, work, doc = tmp_path / "results", tmp_path / "work", tmp_path / "BENCHMARKS.md"
    results.mkdir()
    # A full ACC result with a history: the old defaults' curve comes from it, labelled as val accuracy.
    old = {"raw": {"resnet20": {"wall_seconds": 120.0, "test_accuracy": 0.9, "history": {"val_accuracy": [0.5, 0.7, 0.8]}}}}
    (results / "acc.json").write_text(json.dumps(old))
    command = [sys.executable, "-m", "bench", "--quick", "--only", "T,P1-JPEG,P2-380", "--t-fast-model", "no-such-model"]
    command += ["--results", str(results), "--work", str(work), "--doc", str(doc), "--jpegs", str(tmp_path / "jpegs")]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=3 * COMMAND_TIMEOUT_S)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    t = json.loads((results / "quick" / "t.json").read_text())
    assert "error" not in t and t["quick"] is True
    assert t["raw"]["e"]["seconds"] > 0 and t["raw"]["e"]["images"] == 1600  # the 80 % train split of 2,000
    figures = [r["figure"] for r in t["rows"]]
    assert any(f.startswith("T1 resnet20") for f in figures) and any(f.startswith("T2 cnn") for f in figures)
    assert any(f.startswith("T3 kit demo") for f in figures)
    skipped = next(r for r in t["rows"] if r["figure"].startswith("T4"))
    assert skipped["value"] == "skipped" and "no-such-model" in skipped["note"]
    recipes = next(r for r in t["rows"] if r["figure"].startswith("T5"))  # T5's own test: tests/test_bench_recipes.py
    assert recipes["value"] == "skipped" and "no-such-model" in recipes["note"]
    for key in ("T1", "T2"):
        model = t["raw"]["models"][key]
        assert model["epochs"] == 2 and len(model["curve"]) == 2
        seconds = [p["seconds"] for p in model["curve"]]
        assert 0 < seconds[0] < seconds[1] <= model["wall_seconds"]  # the test scoring's own time is off the clock
        assert all(0.0 <= p["test_accuracy"] <= 1.0 for p in model["curve"]) and model["test_eval_seconds_excluded"] > 0
        assert model["e_units"] == model["wall_seconds"] / t["raw"]["e"]["seconds"]
        assert model["command"].startswith("kit train comp=") and f"model={model['model']}" in model["command"]
    assert 0.0 <= t["raw"]["demo"]["hidden_test_accuracy"] <= 1.0 and t["raw"]["demo"]["command"].startswith("kit demo ")
    assert t["raw"]["old_curves"]["resnet20"]["minutes"] == [2 / 3, 4 / 3, 2.0]
    assert (results / "quick" / "t_time_to_accuracy.png").stat().st_size > 10_000

    jpeg = json.loads((results / "quick" / "p1-jpeg.json").read_text())
    assert "error" not in jpeg
    # The default records at each size (raw pixels at 64 px, JPEG above), each against the naive loop with a 2x goal.
    assert [(r["size"], r["format"]) for r in jpeg["raw"]["runs"]] == [(64, "raw"), (224, "jpeg"), (380, "jpeg")]
    assert len(list((tmp_path / "jpegs").glob("*.jpg"))) == 120  # generated where --jpegs says, outside the work folder
    for run in jpeg["raw"]["runs"]:
        assert run["build_rate"] > 0 and run["loop_rate"] > 0
        assert run["psnr_db"] >= 38 and run["stored_psnr_db"] >= 38
        # Every file of the mix halves at least once at 64 and 224 px; at 380 px only the 768x768 squares (384 >= 380).
        assert run["reduced_share"] == 1.0 if run["size"] < 380 else run["reduced_share"] < 0.2
    assert sum(r["goal"] == ">= 2x" for r in jpeg["rows"]) == 3
    for run in jpeg["raw"]["runs"]:  # the per-image CPU breakdown: its parts add up, the ceiling is naive / (decode+encode)
        costs = run["costs"]
        assert costs["naive"] == pytest.approx(costs["naive_decode"] + costs["naive_resize"] + costs["naive_encode"])
        assert costs["ceiling"] == pytest.approx(costs["naive"] / (costs["kit_decode"] + costs["kit_encode"]))
        assert (costs["naive_encode"] == 0) == (run["format"] == "raw")
    assert sum("could gain" in r["figure"] for r in jpeg["rows"]) == 3
    p2 = json.loads((results / "quick" / "p2-380.json").read_text())
    assert "error" not in p2 and set(p2["raw"]["rates"]) == {"380-png", "380-jpeg", "224-png", "224-jpeg"}
    assert p2["raw"]["rates"]["380-jpeg"]["settings"] == "data.image_format=auto"  # the default is what is timed
    assert all(rate > 0 for rates in p2["raw"]["rates"].values() for rate in rates.values() if not isinstance(rate, str))
    goal_rows = [r for r in p2["rows"] if r["goal"] == ">= 1,000 img/s"]
    assert len(goal_rows) == 2 and all(r["figure"].startswith("380 px, default records") for r in goal_rows)
    assert all(p2["raw"]["psnr_db_vs_lossless"][size] >= 38 for size in ("380", "224"))

    text = doc.read_text()
    for title in ("T: time to accuracy", "P1-JPEG: records from real-size JPEGs", "P2-380: online pipeline"):
        assert title in text
    assert "kit train comp=" in text and "t_time_to_accuracy.png" in text


def test_t_rows_not_run_are_carried_over_from_the_last_run_with_their_source() -> None:
    from bench.time_to_accuracy import carried_rows

    previous = {
        "started": "2026-12-02 04:40:30",
        "machine": {"commit": "abc1234"},
        "rows": [
            {"figure": "T1 resnet20", "value": "not run", "note": "--t-rows T4"},
            {
                "figure": "T4 resnet9: test accuracy, training wall time",
                "value": "93.60% in 9.0 min = 6.2 E",
                "note": "12 epochs",
            },
            {"figure": "T5 digits resnet9: hidden-test accuracy", "value": "new 0.99", "note": ""},
            {"figure": "T5 binary resnet9: hidden-test f1", "value": "new 0.88", "note": "800 images"},
        ],
    }
    assert carried_rows(previous, "T1") == []  # a row that was not measured then is not carried either
    (t4,) = carried_rows(previous, "T4")
    assert t4["value"] == "93.60% in 9.0 min = 6.2 E"
    assert t4["note"] == "12 epochs; carried over from the run of 2026-12-02 04:40:30 (commit abc1234; its own E)"
    assert [r["value"] for r in carried_rows(previous, "T5")] == ["new 0.99", "new 0.88"]
    assert carried_rows(previous, "T5")[0]["note"].startswith("carried over from")
