"""Section D of the benchmarks: the generated resampling-trace task carries its trace only in the pixels (sizes and JPEG
qualities drawn alike for both classes, the trace gone after a stretch), the rows judge what they say, and CIFAKE's
row says how to get the data when it is missing."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from bench.cifake import (
    ENV_VAR,
    GOAL_ACCURACY,
    VARIANT_KEYS,
    CifakeSizes,
    cifake_row,
    earlier_results,
    find_cifake,
    subset,
    wanted_variants,
)
from bench.common import QUICK, SECTIONS, Context, NothingToMeasure
from bench.detection import naive_native_loop, naive_row, records_rows, trace_rows
from bench.trace_task import QUALITIES, SIZES, make_trace_task, period2_signature, scene, trace_image, upsample
from kit.data.image_headers import jpeg_quality


def _grey(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_GRAYSCALE)


def test_size_quality_and_upsampling_draws_do_not_depend_on_the_class() -> None:
    for index in range(3):
        _, real = trace_image(3, 0, index, ai=False)
        _, ai = trace_image(3, 0, index, ai=True)
        assert {**ai, "upsampling": None} == real  # the same size and quality for either class at every index
        assert (real["width"], real["height"]) in SIZES and real["quality"] in QUALITIES
        assert ai["upsampling"] in ("nearest", "transposed")


def test_the_ai_class_carries_a_period_two_trace_that_a_stretch_to_64_px_removes() -> None:
    for index in range(3):  # sizes, qualities and both upsamplings among them
        real_bytes, facts = trace_image(0, 0, index, ai=False)
        ai_bytes, ai_facts = trace_image(0, 0, index, ai=True)
        real, ai = _grey(real_bytes), _grey(ai_bytes)
        assert real.shape == ai.shape == (facts["height"], facts["width"])
        assert jpeg_quality(real_bytes) == jpeg_quality(ai_bytes) == facts["quality"]  # the files' own tables say so
        assert period2_signature(real) < 0.12, facts
        assert period2_signature(ai) > 0.3, ai_facts
        stretched = [cv2.resize(x, (64, 64), interpolation=cv2.INTER_AREA) for x in (real, ai)]
        assert max(period2_signature(x) for x in stretched) < 0.3  # what stretching throws away
        assert abs(float(real.mean()) - float(ai.mean())) < 40  # brightness is no class cue by construction


def test_nearest_makes_2x2_blocks_and_transposed_a_checkerboard_with_the_mean_kept() -> None:
    image = scene(np.random.default_rng(1), 64, 48)
    nearest = upsample(image, "nearest")
    assert nearest.shape == (96, 128, 3)
    assert (nearest[0::2, 0::2] == nearest[1::2, 1::2]).all() and (nearest[0::2] == nearest[1::2]).all()
    transposed = upsample(image, "transposed").astype(np.float64)
    assert transposed.shape == (96, 128, 3)
    assert abs(transposed.mean() - image.mean()) < 0.01 * image.mean()
    assert transposed[0::2, 0::2].mean() > 1.05 * transposed[1::2, 1::2].mean()  # even pixels 1.05^2, odd 0.95^2
    with pytest.raises(ValueError, match="unknown upsampling"):
        upsample(image, "bicubic")


@pytest.mark.slow  # writes two trees of 768 px JPEGs: seconds on a loaded machine
def test_the_task_is_class_folders_with_a_generator_record_and_deterministic_for_a_seed(tmp_path: Path) -> None:
    root = make_trace_task(tmp_path / "a", 4, 2, seed=5)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*.jpg"))
    assert files == [
        "test/ai/00001.jpg",
        "test/real/00000.jpg",
        "train/ai/00001.jpg",
        "train/ai/00003.jpg",
        "train/real/00000.jpg",
        "train/real/00002.jpg",
    ]
    record = json.loads((root / "generator.json").read_text())
    assert record["params"]["seed"] == 5 and set(record["files"]) == set(files)
    assert all((fact["upsampling"] is None) == (fact["label"] == "real") for fact in record["files"].values())
    again = make_trace_task(tmp_path / "b", 4, 2, seed=5)
    assert all((root / f).read_bytes() == (again / f).read_bytes() for f in files)


def _trace_result(variant: str, accuracy: float, seconds: float = 10.0) -> dict:
    return {"variant": variant, "accuracy": accuracy, "seconds": seconds, "test_examples": 240, "epochs": 6, "command": "kit"}


def test_trace_rows_pass_a_crop_variant_only_beyond_two_standard_errors_over_stretch() -> None:
    rows = trace_rows([_trace_result("stretch", 0.5), _trace_result("crop", 0.8, 20.0), _trace_result("crop + x", 0.55)])
    assert rows[0]["pass"] is None and rows[0]["goal"] == ""
    assert rows[1]["pass"] is True and "+30.0 points over stretch" in rows[1]["value"] and rows[1]["ratio"] == 2.0
    assert rows[2]["pass"] is False  # +5 points on 240 images is within noise (2 SE of the difference ~ 9.1 points)
    assert "9.1 points" in rows[2]["goal"]


def test_records_rows_give_crop_over_stretch_per_size() -> None:
    def case(size: int, policy: str, scale: float) -> dict:
        return {"size": size, "policy": policy, "images": 10, "build_rate": 20.0 / scale, "disk_mb": 5.0 * scale,
                "pipeline_rate": 300.0 / scale, "folder": f"{size}-{policy}"}  # fmt: skip

    rows = records_rows([case(224, "stretch", 1.0), case(224, "crop", 4.0), case(380, "stretch", 1.0), case(380, "crop", 2.0)])
    assert [r["figure"].split(":")[0] for r in rows] == ["D-records 224 px"] * 3 + ["D-records 380 px"] * 3
    assert [round(r["ratio"], 2) for r in rows] == [0.25, 4.0, 0.25, 0.5, 2.0, 0.5]


def test_naive_row_sets_the_faster_crop_build_against_the_naive_loops() -> None:
    cases = [{"size": 224, "policy": "crop", "images": 10, "build_rate": 30.0},
             {"size": 380, "policy": "crop", "images": 10, "build_rate": 40.0},
             {"size": 380, "policy": "stretch", "images": 10, "build_rate": 90.0}]  # fmt: skip
    naive = naive_row(cases, 20.0)
    assert naive["value"] == "40.0 / 20.0" and naive["ratio"] == 2.0 and "380 px" in naive["note"]


def test_naive_native_loop_shrinks_only_images_above_the_max_side(tmp_path: Path) -> None:
    small, large = tmp_path / "small.jpg", tmp_path / "large.jpg"
    rng = np.random.default_rng(0)
    cv2.imwrite(str(small), rng.integers(0, 255, (40, 60, 3), dtype=np.uint8))
    cv2.imwrite(str(large), rng.integers(0, 255, (100, 200, 3), dtype=np.uint8))
    alone = naive_native_loop(([str(small)], 64))
    assert alone == len(cv2.imencode(".png", cv2.imread(str(small)))[1])  # 60 px wide: kept as it is
    shrunk = cv2.resize(cv2.imread(str(large)), (64, 32), interpolation=cv2.INTER_AREA)
    assert naive_native_loop(([str(small), str(large)], 64)) == alone + len(cv2.imencode(".png", shrunk)[1])


def test_cifake_row_judges_accuracy_and_e_units_together() -> None:
    result = {"variant": "quick baseline", "accuracy": GOAL_ACCURACY, "seconds": 600.0, "test_examples": 20000,
              "epochs": 12, "tta": ["flip"], "command": "kit train", "e_seconds": 60.0}  # fmt: skip
    assert cifake_row(result)["pass"] is True  # 98.0 % in exactly 10 E
    assert "= 10.0 E" in cifake_row(result)["value"]
    assert cifake_row({**result, "e_seconds": 59.0})["pass"] is False  # 10.2 E
    assert cifake_row({**result, "accuracy": 0.9799, "e_seconds": 600.0})["pass"] is False
    carried = cifake_row({**result, "carried": True, "measured": "2026-12-06 12:00"})
    assert "measured 2026-12-06 12:00, E = 60 s then" in carried["note"]


def test_cifake_variants_are_chosen_by_key_and_the_others_kept_from_the_last_run(tmp_path: Path) -> None:
    assert [key for key, *_ in wanted_variants(())] == list(VARIANT_KEYS)
    assert [key for key, *_ in wanted_variants(("preset", "baseline"))] == ["baseline", "preset"]
    with pytest.raises(NothingToMeasure, match="unknown variant.*typo.*choose among baseline"):
        wanted_variants(("typo",))
    ctx = Context(False, QUICK, tmp_path, tmp_path, "x")
    kept = {"key": "baseline", "accuracy": 0.97, "e_seconds": 500.0}
    (tmp_path / "d-cifake.json").write_text(json.dumps({"raw": {"data_root": "/d", "results": [kept]}}))
    assert earlier_results(ctx, Path("/d")) == {"baseline": {**kept, "carried": True}}
    assert earlier_results(ctx, Path("/other")) == {}  # another data set's figures are not this one's


def test_missing_cifake_data_says_how_to_get_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(ENV_VAR, raising=False)
    with pytest.raises(NothingToMeasure, match=f"set {ENV_VAR}") as missing:
        find_cifake(None)
    assert not missing.value.failed and "CIFAKE-CPSC542" in str(missing.value)
    for part in ("train/REAL", "train/FAKE", "test/REAL"):
        (tmp_path / part).mkdir(parents=True)
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    with pytest.raises(NothingToMeasure, match="lacks test/FAKE") as incomplete:
        find_cifake(None)
    assert incomplete.value.failed  # a folder given but wrong is a failure, not a skip
    (tmp_path / "test/FAKE").mkdir()
    assert find_cifake(None) == tmp_path


def test_the_quick_cifake_subset_is_seeded_and_per_class(tmp_path: Path) -> None:
    source = tmp_path / "cifake"
    for part in ("train/REAL", "train/FAKE", "test/REAL", "test/FAKE"):
        (source / part).mkdir(parents=True)
        for k in range(10):
            (source / part / f"{k}.jpg").write_bytes(f"{part}{k}".encode())
    sizes = CifakeSizes(4, 2, 1)
    first = subset(source, tmp_path / "a", sizes)
    picked = sorted(p.relative_to(first).as_posix() for p in first.rglob("*.jpg"))
    assert len(picked) == 12 and sum(p.startswith("train/REAL/") for p in picked) == 4
    second = subset(source, tmp_path / "b", sizes)
    assert picked == sorted(p.relative_to(second).as_posix() for p in second.rglob("*.jpg"))
    assert subset(source, tmp_path / "c", CifakeSizes(0, 0, 0)) == source  # the full run reads the folder itself


def test_section_d_is_registered_and_the_unmeasured_cifake_row_says_how_to_run_it(tmp_path: Path) -> None:
    from bench.__main__ import RUNNERS
    from bench.report import render_doc

    assert {"D-TRACE", "D-RECORDS", "D-CIFAKE"} <= set(SECTIONS) & set(RUNNERS)
    assert Context(True, QUICK, tmp_path, tmp_path, "x").cifake_dir is None
    (tmp_path / "d-trace.json").write_text(json.dumps({"title": "D-TRACE: full", "rows": [], "notes": []}))
    text = render_doc(tmp_path, tmp_path / "B.md").read_text()
    assert "D-TRACE: full" in text
    assert "### D-CIFAKE" in text and "not yet measured" in text and f"{ENV_VAR}=" in text
