"""The PROBE benchmark section: its rows from a result (test F1 and accuracy, honest labels), CIFAKE's rows without
the data say how to get it, and its plot is written."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.cifake import ENV_VAR
from bench.common import QUICK, Context
from bench.probe import FULL_EPOCHS, PNG_NAME, ProbeTask, cifake_task, probe_png, task_result, task_rows


def _measured(probe_score: float = 0.7564, full_score: float = 0.8123) -> dict:
    return {
        "extraction": {"images": 1920, "seconds": 21.7, "images_per_second": 88.3},
        "batch": 16,
        "probe": {
            "seconds": 23.4,
            "fit_seconds": 14.71,
            "score": probe_score,
            "accuracy": 0.801,
            "majority": 0.6,
            "examples": 800,
        },
        "full": {
            "seconds": 377.0,
            "epochs": [1, 4],
            "score": full_score,
            "accuracy": 0.852,
            "majority": 0.6,
            "examples": 800,
            "initial_batchnorm": [0, 34],
        },
    }


def _task(key: str = "generated", positive: str = "ai", missing: str = "") -> ProbeTask:
    return ProbeTask(key, key, positive, f"{key} data", None if missing else Path("comp.yaml"), missing=missing)


def _no_cifake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Context:
    monkeypatch.delenv(ENV_VAR, raising=False)
    return Context(True, QUICK, tmp_path / "results", tmp_path / "work", "x")


def test_rows_give_extraction_rate_fit_time_and_test_f1_beside_accuracy() -> None:
    rows = task_rows(task_result(_task(), _measured()), FULL_EPOCHS)
    assert [r["figure"].split(":")[0] for r in rows] == [
        "PROBE generated feature extraction",
        "PROBE generated linear probe",
        "PROBE generated full training",
    ]
    assert rows[0]["value"] == "88.3 img/s" and "1,920 training images in 21.7 s, batch 16" in rows[0]["note"]
    assert rows[1]["value"] == "fit 14.71 s; F1 0.7564, accuracy 0.8010"
    assert rows[2]["value"] == "377 s; F1 0.8123, accuracy 0.8520"
    assert "hold-out test F1 (ai), accuracy" in rows[1]["figure"] and "1 + 4 epochs" in rows[2]["figure"]
    assert "random features: a floor, not a verdict" in rows[1]["note"]
    assert "800 labelled test images (the larger class 60.0%)" in rows[2]["note"]
    assert all(r["pass"] is None for r in rows)  # figures to read, no goal to judge
    assert not any("no better than" in r["note"] for r in rows)
    assert rows[2]["note"].endswith("0 of 34 BatchNorm layers kept their initial statistics")


def test_a_run_no_better_than_the_larger_class_says_so() -> None:
    constant = _measured(full_score=0.0)
    constant["full"]["accuracy"] = constant["full"]["majority"]  # always "human": F1 of "ai" 0
    probe_row, full_row = task_rows(task_result(_task(), constant), FULL_EPOCHS)[1:]
    assert "no better than always answering the larger class;" in full_row["note"]
    assert "no better than" not in probe_row["note"]


def test_without_cifake_data_its_rows_say_not_measured_and_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    task = cifake_task(_no_cifake(tmp_path, monkeypatch))
    assert task.yaml_path is None and not (tmp_path / "work").exists()  # nothing copied, nothing built
    rows = task_rows(task_result(task, None), (1, 1))
    assert [r["value"] for r in rows] == ["not measured"] * 3
    assert all(r["figure"].startswith("PROBE CIFAKE ") for r in rows)
    assert all(f"set {ENV_VAR}" in r["note"] and "CIFAKE-CPSC542" in r["note"] for r in rows)
    assert not rows[0]["note"].startswith("D-CIFAKE")  # the reason reads as this section's


def test_a_given_cifake_folder_becomes_a_seeded_subset_with_png_records_at_224_px(tmp_path: Path) -> None:
    source = tmp_path / "cifake"
    image = cv2.imencode(".jpg", np.full((32, 32, 3), 128, np.uint8))[1].tobytes()
    for part in ("train/REAL", "train/FAKE", "test/REAL", "test/FAKE"):
        (source / part).mkdir(parents=True)
        for k in range(60):
            (source / part / f"{k}.jpg").write_bytes(image)
    ctx = Context(True, QUICK, tmp_path / "results", tmp_path / "work", "x", cifake_dir=source)
    task = cifake_task(ctx)
    assert task.yaml_path is not None and task.yaml_path.is_file() and task.overrides == ("data.image_format=png",)
    data_root = tmp_path / "work" / "probe-cifake-quick" / "data"
    counts = {part: len(list((data_root / part).iterdir())) for part in ("train/REAL", "train/FAKE", "test/REAL", "test/FAKE")}
    assert counts == {"train/REAL": 40, "train/FAKE": 40, "test/REAL": 20, "test/FAKE": 20}  # the quick subset


def test_the_plot_is_written_for_a_measured_task_and_a_missing_one(tmp_path: Path) -> None:
    tasks = [task_result(_task(), _measured()), task_result(_task("CIFAKE", "FAKE", "no data; set X"), None)]
    name = probe_png(tmp_path / PNG_NAME, tasks, quick=False)
    image = cv2.imread(str(tmp_path / name))
    assert name == PNG_NAME and image is not None
    assert image.shape[1] > image.shape[0]  # a panel per task, side by side
    panels = image[: int(image.shape[0] * 0.8)]  # above the legend, which spans both panels
    measured, missing = panels[:, : image.shape[1] // 2], panels[:, image.shape[1] // 2 :]
    orange = (measured[..., 2] > 200) & (measured[..., 1] > 100) & (measured[..., 1] < 160) & (measured[..., 0] < 60)
    assert orange.sum() > 20  # the probe's markers are drawn
    assert not ((missing[..., 2] > 200) & (missing[..., 0] < 60) & (missing[..., 1] < 160)).any()  # nothing plotted
