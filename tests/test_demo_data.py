"""kit.data.demo: the digits competition is Kaggle-shaped, idempotent and reads through the demo preset."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from conftest import SLOW_PATH_BUDGET_S

from kit.config import load_config
from kit.data import sources
from kit.data.demo import MARKER, make_demo_competition

N_DIGITS = 1797


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_demo_competition(tmp_path_factory.mktemp("demo"), size=16)


@pytest.mark.slow
def test_files_and_csvs(demo_root: Path) -> None:
    train = pd.read_csv(demo_root / "train.csv", dtype={"id": str})
    test = pd.read_csv(demo_root / "test.csv", dtype={"id": str})
    sample = pd.read_csv(demo_root / "sample_submission.csv", dtype={"id": str})
    solution = pd.read_csv(demo_root / "solution.csv", dtype={"id": str})
    assert list(train.columns) == ["id", "label"] and list(test.columns) == ["id"]
    assert list(sample.columns) == ["id", "label"] and (sample.label == 0).all()
    assert list(solution.columns) == ["id", "label"]
    assert len(train) + len(test) == N_DIGITS and len(test) == 360  # 20%, stratified
    assert list(sample.id) == list(test.id) == list(solution.id)
    assert set(train.id).isdisjoint(test.id) and train.id.str.fullmatch(r"d\d{5}").all()
    # stratified: every digit keeps its share in the hidden test labels
    share = solution.label.value_counts(normalize=True).sort_index()
    assert len(share) == 10 and share.between(0.08, 0.12).all()
    assert sorted(p.stem for p in (demo_root / "train").glob("*.png")) == sorted(train.id)
    assert sorted(p.stem for p in (demo_root / "test").glob("*.png")) == sorted(test.id)
    image = cv2.imread(str(demo_root / "train" / f"{train.id[0]}.png"), cv2.IMREAD_UNCHANGED)
    assert image.shape == (16, 16, 3) and image.dtype == np.uint8 and image.max() > 200  # scaled from 0..16


def test_idempotent(demo_root: Path) -> None:
    before = {p: p.stat().st_mtime_ns for p in demo_root.rglob("*") if p.is_file()}
    start = time.perf_counter()
    make_demo_competition(demo_root, size=16)
    assert time.perf_counter() - start < SLOW_PATH_BUDGET_S  # rebuilding is caught by the mtimes, not by a stopwatch
    assert {p: p.stat().st_mtime_ns for p in demo_root.rglob("*") if p.is_file()} == before


@pytest.mark.slow
def test_incomplete_folder_is_rebuilt(tmp_path: Path) -> None:
    root = make_demo_competition(tmp_path, size=8, test_fraction=0.5, seed=3)
    (root / MARKER).unlink()  # as if killed before the end
    (root / "train.csv").write_text("id,label\n")
    make_demo_competition(root, size=8, test_fraction=0.5, seed=3)
    assert len(pd.read_csv(root / "train.csv")) == N_DIGITS - 899
    # other parameters: rebuilt, with no stale image left in the other folder
    make_demo_competition(root, size=8, test_fraction=0.2, seed=3)
    assert len(list((root / "test").glob("*.png"))) == 360


def test_demo_index(demo_root: Path, tmp_path: Path) -> None:
    cfg = load_config(["comp=demo", f"data.root={demo_root}", f"data.records_root={tmp_path}"])
    frame, classes = sources.read_index(cfg)
    assert classes == [str(d) for d in range(10)]
    counts = frame.groupby("split").size().to_dict()
    assert counts["test"] == 360 and counts["train"] + counts["val"] == N_DIGITS - 360
    assert counts["val"] == round(0.2 * (N_DIGITS - 360)) or counts["val"] == int(np.ceil(0.2 * (N_DIGITS - 360)))
    assert set(frame[frame.split != "test"].label) == set(range(10))
    train = pd.read_csv(demo_root / "train.csv", dtype={"id": str}).set_index("id")
    labelled = frame[frame.split != "test"].set_index("id")
    assert (labelled.label == train.loc[labelled.index, "label"]).all()
