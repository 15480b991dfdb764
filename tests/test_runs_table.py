"""``kit runs``: one table of every run of a competition, its CSV, ``--sort``, ``--diff``, and the public scores from
the (fake) Kaggle submission list; offline or without credentials the table still prints and says why.

The run folders are real files in the layout kit writes (config.yaml from a loaded config, history.csv, metrics.json,
cv.json, threshold.json); the CLI runs in a subprocess with the real kaggle client talking to the fake server.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMMAND_TIMEOUT_S
from fake_kaggle import write_comp_yaml  # tests/ is on sys.path (rootdir conftest)

from kit.config import PROJECT_ROOT, load_config, to_yaml

pytest_plugins = ["fake_kaggle"]  # the fake_kaggle fixture

RUN_A, RUN_B, RUN_K = "20261201-100000", "20261201-110000", "20261201-120000"


def _write_run(run_dir: Path, comp: Path, settings: list[str], val_scores: list[float], threshold: float | None) -> None:
    """A finished single run as kit leaves it: config.yaml, history.csv (epoch 0-based), metrics.json, done."""
    run_dir.mkdir(parents=True)
    cfg = load_config([f"comp={comp}", *settings])
    (run_dir / "config.yaml").write_text(to_yaml(cfg))
    rows = ["epoch,phase,loss,val_loss,val_accuracy"] + [f"{i},1,{1 - s:.4f},{1.1 - s:.4f},{s}" for i, s in enumerate(val_scores)]
    (run_dir / "history.csv").write_text("\n".join(rows) + "\n")
    best = max(val_scores)
    metrics = {"monitor": "val_accuracy", "mode": "max", "best": best, "best_epoch": val_scores.index(best)}
    metrics["epochs"] = len(val_scores)
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    if threshold is not None:
        (run_dir / "threshold.json").write_text(json.dumps({"threshold": threshold, "f1": 0.9, "split": "val", "examples": 40}))
    (run_dir / "done").write_text("2026-12-01 10:00:00\n")


def _runs(tmp_path: Path) -> tuple[Path, Path]:
    """Three runs of fake-comp: two cnn runs that differ in epochs and learning rate, a 3-fold resnet20 parent."""
    comp = write_comp_yaml(tmp_path)
    root = tmp_path / "runs"
    cnn = root / "fake-comp" / "cnn"
    _write_run(cnn / RUN_A, comp, ["model=cnn", "train.epochs=3"], [0.61, 0.74, 0.70], threshold=0.42)
    _write_run(cnn / RUN_B, comp, ["model=cnn", "train.epochs=2", "train.learning_rate=0.01"], [0.65, 0.79], threshold=None)
    # kit evaluate rewrites metrics.json without the training's best: the best val comes from history.csv then
    evaluated = {"run": str(cnn / RUN_B), "split": "val", "examples": 40, "accuracy": 0.55, "score": {"value": 0.55}}
    (cnn / RUN_B / "metrics.json").write_text(json.dumps(evaluated))
    # ... and the resume state's tracker names what training monitored (not the val_f1_score column beside it)
    history = (cnn / RUN_B / "history.csv").read_text().splitlines()
    with_f1 = [history[0] + ",val_f1_score"] + [f"{line},0.9{i}" for i, line in enumerate(history[1:])]
    (cnn / RUN_B / "history.csv").write_text("\n".join(with_f1) + "\n")
    (cnn / RUN_B / "checkpoint").mkdir()
    tracker = {"monitor": "val_accuracy", "mode": "max", "best": 0.79, "best_epoch": 1}
    (cnn / RUN_B / "checkpoint" / "state.json").write_text(json.dumps({"next_epoch": 2, "tracker": tracker}))
    parent = root / "fake-comp" / "resnet20" / RUN_K
    parent.mkdir(parents=True)
    cfg = load_config([f"comp={comp}", "model=resnet20", "train.epochs=2", "data.folds=3"])
    (parent / "config.yaml").write_text(to_yaml(cfg))
    (parent / "kfold.json").write_text(json.dumps({"folds": 3}))
    for k, scores in enumerate([[0.70, 0.80], [0.72, 0.76], [0.69, 0.84]]):
        _write_run(parent / f"fold{k}", comp, ["model=resnet20", "train.epochs=2", "data.folds=3"], scores, threshold=None)
    cv = {"metric": "accuracy", "score": 0.8125, "examples": 120, "folds": [{"fold": k} for k in range(3)]}
    (parent / "cv.json").write_text(json.dumps(cv))
    (parent / "threshold.json").write_text(json.dumps({"threshold": 0.37, "f1": 0.8, "split": "oof", "examples": 120}))
    (parent / "done").write_text("2026-12-01 12:00:00\n")
    return comp, root


def _kit(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    environment = dict(env if env is not None else os.environ, PYTHONPATH=str(PROJECT_ROOT))
    return subprocess.run(
        [sys.executable, "-m", "kit", *args],
        cwd=tmp_path,
        env=environment,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def _table(stdout: str) -> dict[str, str]:
    """Printed table lines by run id."""
    return {line.split()[0]: line for line in stdout.splitlines()[1:] if line.strip()}


@pytest.mark.slow
def test_runs_table_lists_every_run_with_its_public_score_and_writes_csv(fake_kaggle, tmp_path):
    comp, root = _runs(tmp_path)
    fake_kaggle.pending_polls = 0
    fake_kaggle.submissions += [  # oldest first, as CreateSubmission appends them; the list answers newest first
        {"ref": 1, "description": f"kit cnn run {RUN_A} cv val_accuracy=0.7400 git abc123", "public_score": "0.71234"},
        {"ref": 2, "description": f"kit cnn run {RUN_A}-2 cv val_accuracy=0.5000", "public_score": "0.50000"},  # another run
        {"ref": 3, "description": f"kit cnn run {RUN_A} cv val_accuracy=0.7400 git def456", "public_score": "0.73456"},
        {"ref": 4, "description": f"kit resnet20 run {RUN_K} cv accuracy=0.8125", "public_score": "0.80100"},
    ]
    out_csv = tmp_path / "tables" / "runs.csv"
    out_csv.parent.mkdir()
    plot = tmp_path / "tables" / "runs.png"
    result = _kit(
        tmp_path, "runs", f"comp={comp}", f"run.root={root}", "--sort", "best_val", "--csv", str(out_csv), "--plot", str(plot)
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:6] == ["run", "model", "state", "epochs", "monitor", "best_val"]
    # sorted by best val score, best first: cnn B 0.79, resnet20 k-fold (mean of the folds' bests 0.80) ...
    assert [line.split()[0] for line in lines[1:]] == [RUN_K, RUN_B, RUN_A]
    rows = _table(result.stdout)
    assert "0.8000 (mean of 3 folds)" in rows[RUN_K] and "0.8125 (3-fold OOF accuracy)" in rows[RUN_K]
    assert "0.3700 (oof)" in rows[RUN_K] and "k-fold done" in rows[RUN_K] and "0.8010" in rows[RUN_K]
    assert "0.7900" in rows[RUN_B] and "val_accuracy" in rows[RUN_B] and "not submitted" in rows[RUN_B]
    assert "0.7400" in rows[RUN_A] and "0.4200 (val)" in rows[RUN_A]
    assert "0.7346 (newest of 2)" in rows[RUN_A] and "0.5000" not in rows[RUN_A]  # RUN_A-2's score is not RUN_A's
    # the settings that differ between the runs, each run's own value; what all runs share is left out
    assert "train.epochs=3" in rows[RUN_A] and "train.learning_rate=0.01" in rows[RUN_B]
    assert "comp.metric" not in result.stdout and "run.root" not in result.stdout

    with out_csv.open(newline="") as handle:
        table = {row["run"]: row for row in csv.DictReader(handle)}
    assert set(table) == {RUN_A, RUN_B, RUN_K}
    assert float(table[RUN_A]["public"]) == 0.73456
    assert table[RUN_B]["public"] == "" and table[RUN_B]["public_note"] == "not submitted"
    assert float(table[RUN_K]["cv"]) == 0.8125 and table[RUN_K]["cv_note"] == "3-fold OOF accuracy"
    assert abs(float(table[RUN_K]["best_val"]) - 0.8) < 1e-12 and int(table[RUN_A]["epochs"]) == 3
    assert Path(table[RUN_A]["path"]) == root / "fake-comp" / "cnn" / RUN_A
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 5000
    assert sorted(p.name for p in out_csv.parent.iterdir()) == ["runs.csv", "runs.png"]  # atomic: no temp file left


@pytest.mark.slow
def test_runs_table_prints_without_credentials_and_offline(fake_kaggle, tmp_path):
    comp, root = _runs(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("KAGGLE_USERNAME", "KAGGLE_KEY")}
    result = _kit(tmp_path, "runs", f"comp={comp}", f"run.root={root}", env=env)
    assert result.returncode == 0, result.stderr
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == [RUN_A, RUN_B, RUN_K]  # run id order
    assert all("no credentials" in line for line in _table(result.stdout).values())
    assert "no public scores" in result.stderr and "Traceback" not in result.stderr
    assert not fake_kaggle.calls("ListSubmissions")

    dead = f"http://127.0.0.1:{_closed_port()}"  # nothing listens there: the network is down
    offline = dict(os.environ, HTTP_PROXY=dead, http_proxy=dead)
    result = _kit(tmp_path, "runs", f"comp={comp}", f"run.root={root}", env=offline)
    assert result.returncode == 0, result.stderr
    assert all("offline" in line for line in _table(result.stdout).values()), result.stdout
    assert "cannot reach Kaggle" in result.stderr and "Traceback" not in result.stderr


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_runs_diff_shows_the_settings_that_differ(fake_kaggle, tmp_path):
    comp, root = _runs(tmp_path)
    result = _kit(tmp_path, "runs", f"comp={comp}", f"run.root={root}", "--diff", RUN_A, RUN_B)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["setting", f"cnn/{RUN_A}", f"cnn/{RUN_B}"]
    differ = {line.split()[0]: line.split()[1:] for line in lines[1:]}
    assert differ["train.epochs"] == ["3", "2"]
    assert float(differ["train.learning_rate"][1]) == 0.01 and float(differ["train.learning_rate"][0]) != 0.01
    assert set(differ) == {"train.epochs", "train.learning_rate"}
    assert not fake_kaggle.calls("ListSubmissions")  # a diff reads the run folders only

    result = _kit(tmp_path, "runs", f"comp={comp}", f"run.root={root}", "--offline")
    assert result.returncode == 0, result.stderr
    assert all("not asked" in line for line in _table(result.stdout).values()) and len(_table(result.stdout)) == 3
    assert not fake_kaggle.calls("ListSubmissions")  # --offline: Kaggle is not asked

    result = _kit(tmp_path, "runs", f"comp={comp}", f"run.root={root}", "--diff", RUN_A, "20261201-999999")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "20261201-999999" in errors[0] and "Traceback" not in result.stderr


@pytest.mark.slow
def test_runs_unknown_sort_column_is_one_line(fake_kaggle, tmp_path):
    comp, root = _runs(tmp_path)
    result = _kit(tmp_path, "runs", f"comp={comp}", f"run.root={root}", "--sort", "publik")
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "publik" in errors[0] and "public" in errors[0]


def test_the_runs_plot_keeps_its_legend_beside_the_scores() -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    from kit.plots import fit_titles
    from kit.runs_table import RunRow, scores_figure

    rows = []
    for i, (best_val, cv, public) in enumerate([(0.74, 0.72, None), (1.0, None, 0.91), (0.95, 0.93, 0.92)]):
        row = RunRow(Path(f"runs/pets/cnn/r{i}"))
        row.values.update({"model": "cnn", "run": f"r{i}", "best_val": best_val, "cv": cv, "public": public})
        rows.append(row)
    fig = scores_figure(rows)
    (ax,) = fig.axes
    fit_titles(fig)
    renderer = FigureCanvasAgg(fig).get_renderer()
    legend, axes = ax.get_legend().get_window_extent(renderer), ax.get_window_extent(renderer)
    assert legend.x0 >= axes.x1 and legend.x1 <= fig.bbox.x1  # beside the axes, inside the figure
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names == ["best val (during training)", "CV (k-fold OOF)", "public (Kaggle)"]
