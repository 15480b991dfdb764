"""kit.data.sources: the three competition layouts, splits and folds, and one-line errors for bad tables."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SLOW_PATH_BUDGET_S
from kaggle_layouts import AI100_CLASSES, make_ai_100, make_ai_vs_human, make_cifake, preset

from kit.data import sources
from kit.errors import KitError

# ----------------------------------------------------------------------------------------------------
# The three layouts, read through the real presets
# ----------------------------------------------------------------------------------------------------


def test_csv_of_paths_ai_vs_human(tmp_path: Path) -> None:
    root = make_ai_vs_human(tmp_path)
    frame, classes = sources.read_index(preset("ai-vs-human", root))
    assert classes == ["human", "ai"]
    assert list(frame.columns) == ["id", "path", "label", "split", "fold", "group"]
    train_csv = pd.read_csv(root / "train.csv")
    assert list(train_csv.columns) == ["Unnamed: 0", "file_name", "label"]
    labelled = frame[frame.split != "test"]
    assert sorted(labelled.id) == sorted(train_csv.file_name)  # id = the path as written in the CSV
    by_id = labelled.set_index("id")
    assert (by_id.loc[train_csv.file_name, "label"].to_numpy() == train_csv.label.to_numpy()).all()
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in frame.path)
    assert frame.loc[frame.id == "train_data/00000003.jpg", "path"].item() == str((root / "train_data/00000003.jpg").resolve())
    test = frame[frame.split == "test"]
    assert list(test.id) == list(pd.read_csv(root / "test.csv").id)
    assert (test.label == -1).all() and (frame.fold == -1).all()
    assert (frame.split == "val").sum() == 5  # 20% of 24, rounded up by scikit-learn
    assert frame.id.map(type).eq(str).all() and frame.label.dtype == np.int64


def test_csv_of_ids_with_val_table_ai_100(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    frame, classes = sources.read_index(preset("ai-100", root))
    assert classes == sorted(AI100_CLASSES)  # inferred: the preset lists none
    counts = frame.groupby("split").size().to_dict()
    assert counts == {"train": 30, "val": 9, "test": 6}  # the val CSV is used as is, no split of train
    val = pd.read_csv(root / "val.csv")
    got = frame[frame.split == "val"]
    assert list(got.id) == list(val.image_id)
    assert [classes[i] for i in got.label] == list(val.label)
    assert all(p.endswith(f"/val/{i}.png") for p, i in zip(got.path, got.id, strict=True))
    assert (frame[frame.split == "test"].label == -1).all()


def test_ids_that_already_end_with_the_extension(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    train = pd.read_csv(root / "train.csv")
    train.loc[:4, "image_id"] = train.loc[:4, "image_id"] + ".png"
    train.to_csv(root / "train.csv", index=False)
    frame, _ = sources.read_index(preset("ai-100", root))
    row = frame[frame.id == train.image_id[0]]
    assert row.path.item().endswith(f"/train/{train.image_id[0]}")  # not .png.png


def test_class_folders_with_labelled_test_cifake(tmp_path: Path) -> None:
    root = make_cifake(tmp_path)
    frame, classes = sources.read_index(preset("cifake", root))
    assert classes == ["REAL", "FAKE"]  # the preset's order, not sorted
    assert frame.id.is_unique  # "0 (1).jpg" exists in all four folders
    test = frame[frame.split == "test"]
    assert len(test) == 8 and (test.label >= 0).all()  # kept so the test set can be scored
    assert set(test.id) == {f"test/{c}/{i} ({i + 1}).jpg" for c in ("REAL", "FAKE") for i in range(4)}
    real = frame[frame.id.str.contains("/REAL/")]
    assert (real.label == 0).all() and (frame[frame.id.str.contains("/FAKE/")].label == 1).all()
    assert frame[frame.split != "test"].shape[0] == 24


def test_class_folders_without_classes_are_sorted_and_loose_images_are_unlabelled(tmp_path: Path) -> None:
    root = make_cifake(tmp_path)
    (root / "test").rename(root / "labelled_test")
    for i, p in enumerate(sorted((root / "labelled_test").rglob("*.jpg"))):
        (root / "test").mkdir(exist_ok=True)
        p.rename(root / "test" / f"img{i}.JPG")  # upper-case extension counts as an image
    cfg = preset("cifake", root, "comp.classes=[]")
    frame, classes = sources.read_index(cfg)
    assert classes == ["FAKE", "REAL"]
    test = frame[frame.split == "test"]
    assert sorted(test.id) == sorted(f"img{i}.JPG" for i in range(8)) and (test.label == -1).all()


def test_integer_labels_without_classes(tmp_path: Path) -> None:
    root = make_ai_vs_human(tmp_path)
    frame, classes = sources.read_index(preset("ai-vs-human", root, "comp.classes=[]"))
    assert classes == ["0", "1"] and set(frame[frame.split != "test"].label) == {0, 1}


@pytest.mark.slow
def test_negative_integer_labels_without_classes_are_names_in_numeric_order(tmp_path: Path) -> None:
    """-1/1 labels are not class indices: without comp.classes they become classes ['-1', '1'], labels 0 and 1."""
    root = make_ai_vs_human(tmp_path)
    train = pd.read_csv(root / "train.csv", index_col=0)
    train["label"] = train["label"].map({0: -1, 1: 1})
    train.to_csv(root / "train.csv")
    frame, classes = sources.read_index(preset("ai-vs-human", root, "comp.classes=[]"))
    assert classes == ["-1", "1"]
    by_file = frame.set_index("id")["label"]
    assert (by_file.loc[train.file_name].to_numpy() == (train.label == 1).to_numpy()).all()


@pytest.mark.slow
def test_sparse_integer_labels_are_refused_and_comp_classes_lifts_the_limit(tmp_path: Path) -> None:
    """Labels 0, 1 and a typo 7 would make 8 classes of which 3 are used: refused; listing 8 classes accepts them."""
    root = make_ai_vs_human(tmp_path)
    train = pd.read_csv(root / "train.csv", index_col=0)
    train.loc[train.index[3], "label"] = 7
    train.to_csv(root / "train.csv")
    err = _error(preset("ai-vs-human", root, "comp.classes=[]"))
    assert "row 4 (line 5)" in err.message and "label 7 would make 8 classes" in err.message and "comp.classes" in err.hint
    eight = "comp.classes=[" + ",".join(f"c{i}" for i in range(8)) + "]"
    frame, classes = sources.read_index(preset("ai-vs-human", root, eight))
    assert len(classes) == 8 and 7 in set(frame.label)


# ----------------------------------------------------------------------------------------------------
# Validation split and folds
# ----------------------------------------------------------------------------------------------------


def _imbalanced(root: Path) -> Path:
    """ai-vs-human with 30 human and 10 AI images, to see that stratification keeps the 3:1 ratio."""
    make_ai_vs_human(root, n_train=40)
    train = pd.read_csv(root / "train.csv", index_col=0)
    train["label"] = [1 if i % 4 == 0 else 0 for i in range(len(train))]
    train.to_csv(root / "train.csv")
    return root


@pytest.mark.slow
def test_stratified_val_split_is_seeded(tmp_path: Path) -> None:
    root = _imbalanced(tmp_path)
    frame, _ = sources.read_index(preset("ai-vs-human", root, "data.val_fraction=0.4"))
    val = frame[frame.split == "val"]
    assert len(val) == 16 and (val.label == 1).sum() == 4  # 40% of each class: 12 human, 4 AI
    again, _ = sources.read_index(preset("ai-vs-human", root, "data.val_fraction=0.4"))
    assert again.equals(frame)
    other, _ = sources.read_index(preset("ai-vs-human", root, "data.val_fraction=0.4", "data.seed=7"))
    assert set(other[other.split == "val"].id) != set(val.id)
    none, _ = sources.read_index(preset("ai-vs-human", root, "data.val_fraction=0"))
    assert "val" not in set(none.split)


@pytest.mark.slow
def test_stratified_k_fold(tmp_path: Path) -> None:
    root = _imbalanced(tmp_path)
    frame, _ = sources.read_index(preset("ai-vs-human", root, "data.folds=4"))
    train = frame[frame.split != "test"]
    assert set(train.split) == {"train"} and len(train) == 40
    assert set(train.fold) == {0, 1, 2, 3}  # every labelled example is in exactly one fold
    per_fold = train.groupby("fold").label.agg(["size", "sum"])
    assert (per_fold["size"] == 10).all()
    assert per_fold["sum"].sum() == 10 and per_fold["sum"].between(2, 3).all()
    assert (frame[frame.split == "test"].fold == -1).all()
    # same index + seed -> the same folds, whatever else changes (e.g. another model's settings)
    again, _ = sources.read_index(preset("ai-vs-human", root, "data.folds=4", "model=cnn"))
    assert again.fold.tolist() == frame.fold.tolist()


@pytest.mark.slow
def test_k_fold_merges_the_val_table(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    frame, _ = sources.read_index(preset("ai-100", root, "data.folds=3"))
    labelled = frame[frame.split != "test"]
    assert len(labelled) == 39 and set(labelled.split) == {"train"}
    assert labelled.groupby(["fold", "label"]).size().between(4, 5).all()  # 13 per class over 3 folds


# ----------------------------------------------------------------------------------------------------
# Bad tables: one line naming the file, the row and the fix
# ----------------------------------------------------------------------------------------------------


def _error(cfg) -> KitError:
    with pytest.raises(KitError) as info:
        sources.read_index(cfg)
    err = info.value
    assert err.hint, "every error says how to fix it"
    assert "\n" not in err.one_line()
    return err


def _rewrite(path: Path, text: str | bytes) -> None:
    path.write_bytes(text.encode() if isinstance(text, str) else text)


@pytest.mark.slow
def test_missing_csv(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    (root / "val.csv").unlink()
    err = _error(preset("ai-100", root))
    assert "val.csv" in err.message and "not found" in err.message and "comp.val.csv" in err.hint


@pytest.mark.slow
def test_empty_csv(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    _rewrite(root / "train.csv", "")
    assert "train.csv: the CSV file is empty" in _error(preset("ai-100", root)).message
    _rewrite(root / "train.csv", "image_id,label\n")
    assert "train.csv: the CSV has a header but no rows" in _error(preset("ai-100", root)).message


@pytest.mark.slow
def test_missing_column_suggests_the_nearest(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    train = pd.read_csv(root / "train.csv").rename(columns={"label": "lable"})
    train.to_csv(root / "train.csv", index=False)
    err = _error(preset("ai-100", root))
    assert "train.csv: no column 'label' (columns: image_id, lable)" in err.message
    assert err.hint == "set comp.train.label_column=lable"


@pytest.mark.slow
def test_duplicate_id_names_both_rows(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    train = pd.read_csv(root / "train.csv")
    train.loc[4, "image_id"] = train.loc[1, "image_id"]
    train.to_csv(root / "train.csv", index=False)
    err = _error(preset("ai-100", root))
    assert f"train.csv: duplicate id '{train.image_id[1]}' in row 2 (line 3) and row 5 (line 6)" in err.message


@pytest.mark.slow
def test_label_not_in_class_list(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    train = pd.read_csv(root / "train.csv")
    train.loc[6, "label"] = "emu"
    train.to_csv(root / "train.csv", index=False)
    err = _error(preset("ai-100", root, "comp.classes=[cat,dog,owl]"))
    assert "train.csv row 7 (line 8): label 'emu' is not in the class list (cat, dog, owl)" in err.message
    assert "comp.classes" in err.hint


@pytest.mark.slow
def test_integer_label_out_of_range(tmp_path: Path) -> None:
    root = make_ai_vs_human(tmp_path)
    train = pd.read_csv(root / "train.csv", index_col=0)
    train.loc[2, "label"] = 2
    train.to_csv(root / "train.csv")
    err = _error(preset("ai-vs-human", root))
    assert "train.csv row 3 (line 4): label 2 is not a class index (0..1 for classes human, ai)" in err.message


def test_class_folder_not_in_class_list(tmp_path: Path) -> None:
    root = make_cifake(tmp_path)
    (root / "train" / "FAKE").rename(root / "train" / "SYNTH")
    err = _error(preset("cifake", root))
    assert "train/SYNTH: label 'SYNTH' is not in the class list (REAL, FAKE)" in err.message


@pytest.mark.slow
def test_empty_label(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    lines = (root / "train.csv").read_text().splitlines()
    lines[3] = lines[3].split(",")[0] + ","
    _rewrite(root / "train.csv", "\n".join(lines) + "\n")
    err = _error(preset("ai-100", root))
    assert "train.csv row 3 (line 4): empty label in column 'label' (1 rows have none)" in err.message


@pytest.mark.slow
def test_missing_images_names_the_first_and_the_count(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    train = pd.read_csv(root / "train.csv")
    for i in (5, 9):
        (root / "train" / f"{train.image_id[i]}.png").unlink()
    err = _error(preset("ai-100", root))
    assert f"train.csv row 6 (line 7): image {root.resolve()}/train/{train.image_id[5]}.png does not exist" in err.message
    assert "(2 of 30 listed images are missing)" in err.message and "image_dir" in err.hint


@pytest.mark.slow
def test_wrong_delimiter(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    pd.read_csv(root / "train.csv").to_csv(root / "train.csv", index=False, sep=";")
    err = _error(preset("ai-100", root))
    assert "train.csv line 1: read as one column 'image_id;label': the file looks semicolon-separated" in err.message
    assert "comma-separated" in err.hint


def test_undecodable_encoding(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    lines = (root / "train.csv").read_bytes().split(b"\n")
    lines[4] = lines[4].replace(b"cat", b"caf\xe9")
    _rewrite(root / "train.csv", b"\n".join(lines))
    err = _error(preset("ai-100", root))
    assert "train.csv line 5: not UTF-8 text (byte 0xe9" in err.message and "UTF-8" in err.hint


@pytest.mark.slow
def test_utf8_with_byte_order_mark_is_fine(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    _rewrite(root / "train.csv", b"\xef\xbb\xbf" + (root / "train.csv").read_bytes())
    frame, _ = sources.read_index(preset("ai-100", root))
    assert (frame.split == "train").sum() == 30


def test_missing_data_root(tmp_path: Path) -> None:
    err = _error(preset("ai-vs-human", tmp_path / "nowhere"))
    assert f"data folder {tmp_path / 'nowhere'} does not exist" in err.message
    assert "kit data comp=ai-vs-human" in err.hint and "data.root=" in err.hint


@pytest.mark.slow
def test_test_ids_must_match_sample_submission(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    sample = pd.read_csv(root / "sample_submission.csv")
    missing = sample.image_id[2]
    sample = sample.drop(index=2)
    sample.loc[len(sample) + 10] = ["zzz-extra", "cat"]
    sample.to_csv(root / "sample_submission.csv", index=False)
    err = _error(preset("ai-100", root))
    assert "test ids do not match" in err.message and "sample_submission.csv" in err.message
    assert "6 test ids vs 6 in sample_submission.csv" in err.message
    assert f"1 test ids are not in it (e.g. '{missing}')" in err.message
    assert "1 of its ids are not in the test table (e.g. 'zzz-extra')" in err.message


# ----------------------------------------------------------------------------------------------------
# The cached index
# ----------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_write_and_load_index(tmp_path: Path) -> None:
    root = make_ai_100(tmp_path)
    cfg = preset("ai-100", root)
    written = sources.write_index(cfg)
    folder = sources.index_dir(cfg)
    assert folder == root / ".records" / "ai-100"
    assert json.loads((folder / "classes.json").read_text()) == sorted(AI100_CLASSES)
    loaded, classes = sources.load_index(cfg)
    assert classes == sorted(AI100_CLASSES)
    pd.testing.assert_frame_equal(loaded, written, check_dtype=False)
    assert loaded.label.dtype == np.int64 and loaded.id.map(type).eq(str).all()

    # a newer CSV rebuilds the index
    train = pd.read_csv(root / "train.csv").iloc[:-3]
    train.to_csv(root / "train.csv", index=False)
    future = time.time() + 5
    os.utime(root / "train.csv", (future, future))
    rebuilt, _ = sources.load_index(cfg)
    assert (rebuilt.split == "train").sum() == 27
    # other split settings rebuild it too
    folded, _ = sources.load_index(preset("ai-100", root, "data.folds=3"))
    assert set(folded[folded.split == "train"].fold) == {0, 1, 2}


@pytest.mark.slow
def test_many_rows_are_fast(tmp_path: Path) -> None:
    """20k listed images (empty files: only existence is checked here) index in one pass, with no per-row slow path."""
    folder = tmp_path / "train_data"
    folder.mkdir()
    names = [f"{i:08x}.jpg" for i in range(20_000)]
    for name in names:
        (folder / name).touch()
    labels = np.arange(20_000) % 2
    pd.DataFrame({"file_name": [f"train_data/{n}" for n in names], "label": labels}).to_csv(tmp_path / "train.csv")
    cfg = preset("ai-vs-human", tmp_path, "comp.test.csv=''")
    start = time.perf_counter()
    frame, _ = sources.read_index(cfg)
    assert len(frame) == 20_000
    assert time.perf_counter() - start < SLOW_PATH_BUDGET_S  # catches a per-row pass over the table, not machine speed
