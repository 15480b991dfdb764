"""The recipes check of the benchmarks: the generated binary task is a Kaggle-shaped competition kit reads as it is, and the
recipes check trains new vs old presets on digits and that task, scored as kit predict scores a hidden test."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import pandas as pd
import pytest

from bench.common import QUICK, Context
from bench.t_recipes import (
    AI_FRACTION,
    LABEL_NOISE,
    NOISE,
    PNG_NAME,
    RecipeSizes,
    Task,
    binary_task,
    make_binary_task,
    recipe_check,
    recipe_row,
)

CNN_OLD = [
    "train.batch_size=64",
    "train.epochs=30",
    "train.optimizer=adam",
    "train.learning_rate=0.001",
    "train.schedule=plateau",
]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.slow
def test_binary_task_is_deterministic_mixed_size_imbalanced_and_noisy(tmp_path: Path) -> None:
    first = _files(make_binary_task(tmp_path / "a", 400, 100, seed=3))
    assert first == _files(make_binary_task(tmp_path / "b", 400, 100, seed=3))  # bit for bit, every image and CSV
    assert first != _files(make_binary_task(tmp_path / "c", 400, 100, seed=4))
    root = tmp_path / "a"
    train = pd.read_csv(root / "train.csv")
    assert list(train.columns) == ["Unnamed: 0", "file_name", "label"]  # the real competition's columns
    assert train["file_name"].str.match(r"train_data/[0-9a-f]{32}\.(jpg|png)$").all()
    assert set(train["label"]) == {0, 1}
    assert abs(train["label"].mean() - AI_FRACTION) < 0.06  # ~40 % ai: a little imbalanced
    test, solution = pd.read_csv(root / "test.csv"), pd.read_csv(root / "solution.csv")
    assert list(test.columns) == ["id"] and test["id"].str.startswith("test_data_v2/").all()
    assert solution["id"].tolist() == test["id"].tolist() and set(solution["label"]) <= {0, 1}
    shapes = {cv2.imread(str(root / path)).shape[:2] for path in train["file_name"]}
    assert {(64, 48), (48, 64), (56, 56), (40, 72)} <= shapes  # mixed sizes and aspect ratios (height, width)
    assert {Path(p).suffix for p in train["file_name"]} == {".jpg", ".png"}
    flipped = json.loads((root / "generator.json").read_text())["flipped"]
    assert len(flipped["train"]) == round(LABEL_NOISE * 400) and len(flipped["test"]) == round(LABEL_NOISE * 100)
    assert set(flipped["train"]) <= set(train["file_name"]) and set(flipped["test"]) <= set(test["id"])


@pytest.mark.slow
def test_binary_task_reads_as_a_competition_with_a_labelled_hidden_test(tmp_path: Path) -> None:
    from kit.config import load_config
    from kit.data import sources
    from kit.data.records import build_from_config
    from kit.predict import has_test_labels

    task = binary_task(tmp_path, ["cnn"], RecipeSizes(120, 40, 1))
    cfg = load_config([f"comp={task.yaml_path}", "model=cnn"])
    assert cfg.binary and cfg.comp.metric == "f1" and cfg.model.image_size == 32
    index, classes = sources.read_index(cfg)
    assert classes == ["human", "ai"]
    assert index.groupby("split").size().to_dict() == {"test": 40, "train": 96, "val": 24}
    assert (index["label"] >= 0).all()  # the hidden labels (solution.csv) label the test split
    manifest = build_from_config(cfg)
    assert manifest.counts["train"].total == 96 and has_test_labels(manifest)


@pytest.mark.slow
def test_recipe_check_tiny_rows_scores_and_plot(tmp_path: Path) -> None:
    ctx = Context(
        quick=True,
        sizes=dataclasses.replace(QUICK, acc_epochs=1),
        results=tmp_path / "results",
        work=tmp_path / "work",
        command="pytest",
    )
    rows, raw = recipe_check(ctx, ["cnn"], {"cnn": CNN_OLD})
    assert [r["figure"].split(":")[0] for r in rows] == ["T5 digits cnn", "T5 binary cnn"]
    assert all(" vs old " in r["value"] for r in rows)
    results = raw["results"]
    for row_, (new, old) in zip(rows, (results[0:2], results[2:4]), strict=True):  # pass: no worse within noise
        error = (new["accuracy"] * (1 - new["accuracy"]) / new["test_examples"]) ** 0.5
        assert row_["pass"] is (new["score"] >= old["score"] - max(NOISE, 2 * error))
    assert [(r["task"], r["preset"]) for r in results] == [
        ("digits", "new"),
        ("digits", "old"),
        ("binary", "new"),
        ("binary", "old"),
    ]
    for result in results:
        assert 0.0 <= result["score"] <= 1.0 and 0.0 <= result["accuracy"] <= 1.0 and result["seconds"] > 0
        assert result["epochs"] == 1  # QUICK: ctx.sizes.acc_epochs beats the old preset's train.epochs=30
    assert [r["metric"] for r in results] == ["accuracy", "accuracy", "f1", "f1"]
    assert results[0]["test_examples"] == 360 and results[2]["test_examples"] == 100
    assert (tmp_path / "results" / PNG_NAME).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and raw["plot"] == PNG_NAME


def test_a_recipe_row_passes_within_noise_and_fails_beyond_it() -> None:
    """new >= old - max(NOISE, 2 standard errors of the new test accuracy): 400 images at 0.9 give SE 0.015."""
    task = Task("binary", Path("binary.yaml"), "f1")

    def result(score: float) -> dict:
        return {
            "score": score,
            "metric": "f1",
            "accuracy": 0.9,
            "test_examples": 400,
            "seconds": 10.0,
            "epochs": 1,
            "tta": "",
            "model": "cnn",
        }

    tolerance = 2 * (0.9 * 0.1 / 400) ** 0.5
    assert tolerance > NOISE
    assert (
        recipe_row(
            task,
            "cnn",
            result(0.80),
            result(0.80 + tolerance * 0.9),
        )["pass"]
        is True
    )
    assert recipe_row(task, "cnn", result(0.80), result(0.80 + tolerance * 1.1))["pass"] is False
    assert recipe_row(task, "cnn", result(0.80), None)["pass"] is None  # no old preset: nothing to judge
