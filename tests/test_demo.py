"""The README's first command, `kit demo`, end to end through the CLI (6 epochs instead of the preset's 12)."""

import subprocess
import sys

import pandas as pd
import pytest
from conftest import DEMO_TIMEOUT_S


@pytest.mark.slow
def test_demo_runs_the_whole_pipeline_and_scores_it(tmp_path):
    settings = [
        f"data.root={tmp_path / 'raw'}",
        f"data.records_root={tmp_path / 'records'}",
        f"run.root={tmp_path / 'runs'}",
        "train.epochs=6",
        "train.verbose=2",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "kit", "demo", *settings], capture_output=True, text=True, timeout=DEMO_TIMEOUT_S, cwd=tmp_path
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    out = result.stdout
    assert "6/6 score on the hidden test labels" in out
    accuracy = float(out.split("accuracy = ")[1].split()[0])
    assert accuracy > 0.6  # far above chance (0.1): 6 epochs of ResNet-9's one-cycle on 10 digit classes

    (run_dir,) = (tmp_path / "runs" / "demo" / "resnet9").iterdir()
    for name in ("config.yaml", "history.csv", "best.keras", "metrics.json", "submission.csv", "done"):
        assert (run_dir / name).is_file(), name
    for plot in ("learning_curves.png", "confusion_matrix.png"):
        assert (run_dir / "plots" / plot).read_bytes()[:4] == b"\x89PNG"
    submission = pd.read_csv(run_dir / "submission.csv", dtype=str)
    sample = pd.read_csv(tmp_path / "raw" / "sample_submission.csv", dtype=str)
    assert list(submission.columns) == list(sample.columns)
    assert submission["id"].tolist() == sample["id"].tolist()
    assert len(pd.read_csv(run_dir / "history.csv")) == 6

    # The score printed is the one the hidden labels give.
    solution = pd.read_csv(tmp_path / "raw" / "solution.csv", dtype=str).merge(submission, on="id")
    assert abs((solution["label_x"] == solution["label_y"]).mean() - accuracy) < 1e-3


@pytest.mark.slow
def test_the_demo_builds_its_index_once_and_hands_it_to_the_records(tmp_path, monkeypatch):
    from kit import workflow
    from kit.data import sources

    builds = []
    build_index = sources._read_index  # the one function that builds an index: read_index, write_index, load_index

    def counted(cfg):
        builds.append(cfg.comp.name)
        return build_index(cfg)

    monkeypatch.setattr(sources, "_read_index", counted)
    monkeypatch.chdir(tmp_path)
    settings = [f"data.root={tmp_path / 'raw'}", f"data.records_root={tmp_path / 'records'}", f"run.root={tmp_path / 'runs'}"]
    workflow.demo([*settings, "train.epochs=1", "train.verbose=0"])
    assert builds == ["demo"]
    assert (tmp_path / "records" / "demo" / "index.csv").is_file()
