"""comp.group_column: a CSV column (source, generator, photographer) whose groups the validation split and the folds
keep whole, joined with the duplicate groups; data.holdout_group validates one group whole; kit evaluate scores
each group on its own; every mistake is one line."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
from run_fixtures import SIZE, make_model, make_run, write_split
from sklearn.metrics import f1_score

from kit.config import Config
from kit.data.sources import duplicate_groups_line, load_index, read_index
from kit.data.splits import CLASS_TOLERANCE, SHARE_TOLERANCE, joined_groups
from kit.errors import KitError
from kit.evaluate import evaluate
from kit.scores import group_scores

GENERATORS = [f"gen{k}" for k in range(5)]


def grouped_comp(tmp: Path, reals: int = 100, per_generator: int = 20, copy_into: str = "") -> Config:
    """A CSV competition: ``reals`` real images with no group, ``per_generator`` fakes from each generator.
    ``copy_into``: the first real image is a byte copy of that generator's first image (a duplicate)."""
    root = tmp / "raw"
    (root / "images").mkdir(parents=True)
    rng = np.random.default_rng(0)
    rows = [(f"r{i:03d}", "real", "") for i in range(reals)]
    rows += [(f"{g}_{i:02d}", "fake", g) for g in GENERATORS for i in range(per_generator)]
    for name, _, _ in rows:
        assert cv2.imwrite(str(root / "images" / f"{name}.png"), rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8))
    if copy_into:
        (root / "images" / "r000.png").write_bytes((root / "images" / f"{copy_into}_00.png").read_bytes())
    pd.DataFrame(rows, columns=["id", "label", "generator"]).to_csv(root / "train.csv", index=False)
    cfg = Config()
    cfg.comp.name = "grouped"
    cfg.comp.source = "local"
    cfg.comp.train.csv = "train.csv"
    cfg.comp.train.id_column = "id"
    cfg.comp.train.label_column = "label"
    cfg.comp.train.image_dir = "images"
    cfg.comp.train.image_ext = ".png"
    cfg.comp.classes = ["real", "fake"]
    cfg.comp.group_column = "generator"
    cfg.model.image_size = SIZE
    cfg.data.root = str(root)
    cfg.data.records_root = str(tmp / "records")
    cfg.data.workers = 1
    cfg.run.root = str(tmp / "runs")
    return cfg


def assert_groups_whole(frame: pd.DataFrame, side: str) -> None:
    """No generator straddles ``side`` (split or fold); the rows without a group are not one group."""
    grouped = frame[frame["group"] != ""]
    assert (grouped.groupby("group")[side].nunique() == 1).all(), grouped.groupby("group")[side].unique()
    assert frame.loc[frame["group"] == "", side].nunique() > 1


def assert_balanced(labels: np.ndarray, parts: np.ndarray, share: float, part) -> None:
    inside = labels[parts == part]
    assert abs(len(inside) / len(labels) - share) <= SHARE_TOLERANCE + 1 / len(labels)
    overall = np.bincount(labels) / len(labels)
    assert np.abs(np.bincount(inside, minlength=2) / len(inside) - overall).max() <= CLASS_TOLERANCE + 1 / len(inside)


def test_joined_groups_follow_either_labelling_and_chains_without_grouping_the_empty_key() -> None:
    keys = np.array(["a", "a", "", "", "b", "", "c"], dtype=object)
    duplicates = np.array([0, 1, 1, 3, 4, 4, 6])  # row 1 = row 2, row 4 = row 5
    groups = joined_groups(duplicates, keys)
    assert groups[0] == groups[1] == groups[2]  # a joins rows 0, 1; the duplicate pulls row 2 in
    assert groups[4] == groups[5] and len({groups[0], groups[3], groups[4], groups[6]}) == 4
    assert joined_groups(None, np.array(["", "", "x"], dtype=object)) is None  # no two rows together
    assert joined_groups(None, None) is None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_the_validation_split_keeps_every_generator_whole_and_balanced(tmp_path: Path, seed: int) -> None:
    cfg = grouped_comp(tmp_path)
    cfg.data.val_fraction, cfg.data.seed = 0.2, seed  # 20 of 100 fakes: one generator exactly

    frame, classes = read_index(cfg)

    assert classes == ["real", "fake"] and set(frame["group"]) == {"", *GENERATORS}
    assert_groups_whole(frame, "split")
    assert_balanced(frame["label"].to_numpy(), frame["split"].to_numpy(), 0.2, "val")


def test_the_folds_keep_every_generator_whole_and_balanced(tmp_path: Path) -> None:
    cfg = grouped_comp(tmp_path)
    cfg.data.folds = 5

    frame, _ = read_index(cfg)

    assert (frame["split"] == "train").all()
    assert_groups_whole(frame, "fold")
    for k in range(5):
        assert_balanced(frame["label"].to_numpy(), frame["fold"].to_numpy(), 0.2, k)


def test_a_split_the_groups_cannot_balance_is_one_line_naming_the_column(tmp_path: Path) -> None:
    cfg = grouped_comp(tmp_path)
    cfg.data.val_fraction = 0.1  # 10 fakes to validate, generators of 20

    with pytest.raises(KitError) as info:
        read_index(cfg)

    line = info.value.one_line()
    assert "keeping the groups of comp.group_column=generator (with duplicate groups) whole" in line
    assert "data.holdout_group" in line and "\n" not in line


def test_holdout_validates_one_generator_whole_and_trains_on_none_of_it(tmp_path: Path) -> None:
    cfg = grouped_comp(tmp_path, copy_into="gen2")
    cfg.data.holdout_group, cfg.data.val_fraction = "gen2", 0.25  # the rest: 25% of 80 fakes is one generator

    frame = load_index(cfg)[0].set_index("id")

    assert (frame.loc[frame["group"] == "gen2", "split"] == "val").all()
    assert frame.loc["r000", "split"] == "val"  # the byte copy of a gen2 image goes with it
    train = frame[frame["split"] == "train"]
    assert "gen2" not in set(train["group"]) and set(train["label"]) == {0, 1}
    rest = frame[(frame["group"] != "gen2") & (frame.index != "r000")].reset_index()
    assert_groups_whole(rest, "split")
    val = frame[frame["split"] == "val"]
    assert set(val["label"]) == {0, 1} and len(set(val["group"]) - {""}) == 2  # gen2 and one more, both whole
    line = duplicate_groups_line(cfg)  # what kit records prints
    assert "comp.group_column=generator: 5 groups kept whole, gen2 (20 rows) held out in validation" in line


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"data.holdout_group": "gen9"}, "data.holdout_group=gen9 is not a value of comp.group_column (5 groups)"),
        ({"data.holdout_group": "gen2", "data.folds": 3}, "data.holdout_group=gen2 and data.folds=3 both choose"),
        ({"data.holdout_group": "gen2", "comp.group_column": ""}, "holds out a group of comp.group_column, which is empty"),
        ({"comp.group_column": "generatr"}, "no column 'generatr'"),
    ],
)
def test_group_mistakes_are_one_line(tmp_path: Path, settings: dict, fragment: str) -> None:
    cfg = grouped_comp(tmp_path)
    for key, value in settings.items():
        section, name = key.split(".")
        setattr(getattr(cfg, section), name, value)

    with pytest.raises(KitError) as info:
        read_index(cfg)

    assert fragment in info.value.one_line() and "\n" not in info.value.one_line()
    if settings.get("data.holdout_group") == "gen9":
        assert "data.holdout_group=gen" in info.value.one_line()  # the nearest groups are offered
    if settings.get("comp.group_column") == "generatr":
        assert "comp.group_column=generator" in info.value.one_line()


def test_a_group_column_on_a_folder_table_is_one_line(tmp_path: Path) -> None:
    cfg = grouped_comp(tmp_path)
    cfg.comp.train.csv, cfg.comp.train.dir = "", "images"

    with pytest.raises(KitError, match="comp.group_column=generator names a CSV column, but comp.train is the folder"):
        read_index(cfg)


@pytest.mark.slow
def test_group_scores_are_the_metric_of_each_groups_rows_largest_first() -> None:
    rng = np.random.default_rng(5)
    groups = np.array(["x"] * 50 + ["y"] * 30 + ["z"] * 20 + ["w"] * 5, dtype=object)
    y_true = rng.integers(0, 2, len(groups))
    y_pred = np.where(rng.random(len(groups)) < 0.8, y_true, 1 - y_true)

    scores, unscored = group_scores(y_true, y_pred, groups, lambda t, p: f1_score(t, p, zero_division=0), limit=3)

    assert [s["group"] for s in scores] == ["x", "y", "z"] and unscored == 1
    for entry in scores:
        rows = groups == entry["group"]
        assert entry["value"] == pytest.approx(f1_score(y_true[rows], y_pred[rows]))
        assert entry["accuracy"] == pytest.approx((y_true[rows] == y_pred[rows]).mean())
        assert entry["examples"] == rows.sum() and sum(entry["classes"].values()) == rows.sum()
        assert entry["interval"][0] <= entry["value"] <= entry["interval"][1]


@pytest.mark.slow
def test_evaluate_scores_each_group_of_the_validation_rows_and_marks_the_held_out_one(tmp_path: Path, capsys) -> None:
    cfg = grouped_comp(tmp_path)
    cfg.comp.metric = "f1"
    cfg.data.holdout_group, cfg.data.val_fraction = "gen2", 0.25
    index, _ = load_index(cfg)
    val = index[index["split"] == "val"]
    images = np.stack([cv2.imread(path)[:, :, ::-1] for path in val["path"]])
    write_split(cfg, "val", images, val["label"].to_numpy(), val["id"].tolist())
    model = make_model(1, seed=3)
    run = make_run(cfg, tmp_path / "runs" / "grouped" / "cnn" / "r1", model)

    evaluate(cfg, run)

    groups = json.loads((run / "metrics.json").read_text())["groups"]
    assert groups["column"] == "generator" and groups["held_out"] == "gen2" and groups["at"] == "0.5"
    prob = np.asarray(model(images.astype(np.float32), training=False))[:, 0]
    predicted, truth = (prob >= 0.5).astype(int), val["label"].to_numpy()
    by_name = {entry["group"]: entry for entry in groups["scores"]}
    assert set(by_name) == set(val["group"])
    for name, entry in by_name.items():
        rows = (val["group"] == name).to_numpy()
        assert entry["value"] == pytest.approx(f1_score(truth[rows], predicted[rows], zero_division=0))
        assert entry["accuracy"] == pytest.approx((truth[rows] == predicted[rows]).mean())  # gen2: its detection rate
    out = capsys.readouterr().out
    assert "per group of comp.group_column=generator" in out and "gen2 (held out: never trained on)" in out
