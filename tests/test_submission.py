"""kit.submission: reference ids, the id comparison shared by the index and validation, label formats, validation."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from kaggle_layouts import make_ai_100, preset
from run_fixtures import make_config, write_sample_submission

from kit.data import sources
from kit.errors import KitError
from kit.submission import IdDifference, Reference, compare_ids, guess_label_format, validate_submission


def test_compare_ids_keeps_the_order_of_each_side() -> None:
    assert not compare_ids(["b", "a"], ["a", "b"])
    difference = compare_ids(["x", "a", "w"], ["c", "a", "b"])
    assert difference == IdDifference(lacking=["c", "b"], surplus=["x", "w"])


def test_guess_label_format() -> None:
    assert guess_label_format(["0", "2", "1"]) == "index"
    assert guess_label_format(["0.5", "1", "0.25"]) == "probability"
    assert guess_label_format(["cat", "dog"]) == "name"
    assert guess_label_format(["1.5", "3"]) == "name"


@pytest.mark.slow
def test_reference_ids_are_the_sample_submissions_else_the_test_index(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    cfg = preset("ai-100", root)
    tests = pd.read_csv(root / "test.csv", dtype=str)["image_id"].tolist()
    order = tests[::-1]
    pd.DataFrame({"image_id": order, "label": "cat"}).to_csv(root / "sample_submission.csv", index=False)
    assert sources.reference_ids(cfg) == Reference(order, str(root / "sample_submission.csv"))
    (root / "sample_submission.csv").unlink()
    assert sources.reference_ids(cfg) == Reference(tests, "the test index")


@pytest.mark.slow
def test_loose_test_images_adopt_the_stems_the_sample_submission_lists(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    frame, _ = sources.read_index(preset("ai-100", root, "comp.test.csv=''", "comp.test.dir=test"))
    tests = pd.read_csv(root / "sample_submission.csv", dtype=str)["image_id"]
    assert sorted(frame.loc[frame["split"] == "test", "id"]) == sorted(tests)


# ------------------------------------------------------------------------------------ validate_submission


def _validate(cfg, frame_or_path):
    return validate_submission(cfg, frame_or_path, sources.reference_ids(cfg), list(cfg.comp.classes))


@pytest.fixture()
def sample(tmp_path: Path):
    cfg = make_config(tmp_path, ["neg", "pos"])
    ids = [f"t{i}" for i in range(6)]
    write_sample_submission(cfg, ids)
    good = pd.DataFrame({"id": ids, "label": [0, 1, 0, 1, 1, 0]})
    return cfg, good, tmp_path / "sub.csv"


def _fails(cfg, frame: pd.DataFrame, path: Path, *words: str) -> str:
    frame.to_csv(path, index=False)
    with pytest.raises(KitError) as info:
        _validate(cfg, path)
    message = info.value.one_line()
    assert str(path) in message
    for word in words:
        assert word in message, message
    return message


def test_a_good_submission_passes(sample):
    cfg, good, path = sample
    good.to_csv(path, index=False)
    assert _validate(cfg, path)["id"].tolist() == good["id"].tolist()
    assert len(_validate(cfg, good)) == 6


def test_missing_column(sample):
    cfg, good, path = sample
    _fails(cfg, good.rename(columns={"label": "target"}), path, "missing column 'label'")


def test_empty_cell(sample):
    cfg, good, path = sample
    bad = good.astype(object)
    bad.loc[3, "label"] = None
    _fails(cfg, bad, path, "row 4", "'label'")


def test_duplicate_id(sample):
    cfg, good, path = sample
    bad = good.copy()
    bad.loc[4, "id"] = "t1"
    _fails(cfg, bad, path, "'t1'", "rows 2, 5")


def test_missing_and_extra_ids(sample):
    cfg, good, path = sample
    _fails(cfg, good.iloc[:5], path, "1 ids", "'t5'", "5 rows, 6 expected")
    bad = good.copy()
    bad.loc[2, "id"] = "zz"
    _fails(cfg, bad, path, "'t2'", "'zz' at row 3")


def test_label_out_of_range(sample):
    cfg, good, path = sample
    bad = good.copy()
    bad.loc[5, "label"] = 2
    _fails(cfg, bad, path, "row 6", "class index in 0..1")


def test_probability_and_name_formats(sample):
    cfg, good, path = sample
    cfg.comp.submission.label_format = "probability"
    bad = good.astype({"label": float})
    bad.loc[0, "label"] = 1.5
    _fails(cfg, bad, path, "row 1", "probability")
    cfg.comp.submission.label_format = "name"
    bad = good.assign(label=["neg", "pos", "neg", "cat", "pos", "neg"])
    _fails(cfg, bad, path, "row 4", "'cat'")


@pytest.mark.parametrize(
    "content,words",
    [
        ("id,label,extra\na,0,x\n", ["column 'extra'", "one id and one label column"]),
        ("id,target\na,0\n", ["no column 'label'", "comp.submission.label_column=target"]),
        ("id,label\na,0\nb,1\na,1\n", ["id 'a' appears 2 times", "rows 1, 3"]),
        ("id,label\na,0\n,1\n", ["row 2 (line 3) has an empty id"]),
    ],
)
def test_a_sample_submission_that_no_submission_could_match_is_refused_when_read(tmp_path: Path, content: str, words) -> None:
    cfg = make_config(tmp_path, ["neg", "pos"])
    path = Path(cfg.data.root) / cfg.comp.sample_submission
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content)
    with pytest.raises(KitError) as info:
        sources.reference_ids(cfg)
    message = info.value.one_line()
    assert str(path) in message
    for word in words:
        assert word in message, message


def test_a_submission_path_the_os_refuses_is_one_line(sample):
    """A 300-character file name (ENAMETOOLONG) is named in one line, not a traceback."""
    cfg, _, path = sample
    with pytest.raises(KitError) as info:
        _validate(cfg, path.parent / ("s" * 300 + ".csv"))
    assert "cannot be read (File name too long)" in info.value.one_line()


@pytest.mark.parametrize(
    ("fmt", "truth", "written"),
    [
        ("index", ["0", "1", "1", "0"], ["0", "1", "0", "0"]),
        ("name", ["human", "ai", "ai", "human"], ["human", "ai", "human", "human"]),
    ],
)
def test_offline_score_reads_labels_as_the_submission_writes_them(tmp_path: Path, fmt: str, truth: list, written: list) -> None:
    """Index labels (ai-vs-human's 0/1) scored 0.0 before: they were mapped through the class names only."""
    from kit.config import Config
    from kit.workflow import score_against_solution

    cfg = Config()
    cfg.data.root, cfg.comp.solution, cfg.comp.classes = str(tmp_path), "solution.csv", ["human", "ai"]
    cfg.comp.metric, cfg.comp.submission.label_format = "accuracy", fmt
    pd.DataFrame({"id": list("abcd"), "label": truth}).to_csv(tmp_path / "solution.csv", index=False)
    pd.DataFrame({"id": list("dcba"), "label": written[::-1]}).to_csv(tmp_path / "submission.csv", index=False)
    assert score_against_solution(cfg, tmp_path / "submission.csv") == pytest.approx(0.75)

    pd.DataFrame({"id": list("abcd"), "label": [*truth[:2], "7", "cat"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(KitError, match=r"bad.csv: id c has label '7', not a class"):
        score_against_solution(cfg, tmp_path / "bad.csv")
