"""kit show: a split's images per class as the pipeline gives them, with file names and (mixed) labels."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import COMMAND_TIMEOUT_S, kit_error_line
from run_fixtures import SIZE, make_config, random_images, write_split

from kit.data.manifest import read_manifest, records_dir
from kit.data.sources import index_dir
from kit.errors import KitError
from kit.show import UNLABELLED, gather, label_text, panels, show, title_of

ROOT = Path(__file__).resolve().parent.parent
PNG = b"\x89PNG\r\n\x1a\n"


def _binary_records(tmp_path: Path, n: int = 12):
    """Train records of two classes, 6 each, alternating; every image a different random picture."""
    cfg = make_config(tmp_path, ["human", "ai"])
    labels = np.array([0, 1] * (n // 2))
    images = random_images(n, seed=3)
    ids = [f"train_data/{i:04x}.jpg" for i in range(n)]
    write_split(cfg, "train", images, labels, ids)
    return cfg, images, labels, ids


def _write_index(cfg, ids: list[str], files: list[str]) -> None:
    folder = index_dir(cfg)
    folder.mkdir(parents=True, exist_ok=True)
    frame = pd.DataFrame({"id": ids, "path": files, "label": 0, "split": "train", "fold": -1})
    frame.to_csv(folder / "index.csv", index=False)


def test_the_plain_view_is_the_first_images_of_each_class_exactly_as_recorded(tmp_path):
    cfg, images, labels, ids = _binary_records(tmp_path)
    manifest = read_manifest(records_dir(cfg))

    shown = gather(cfg, manifest, "train", augmented=False, per_class=3)

    assert list(shown) == ["human", "ai"]
    for k, name in enumerate(("human", "ai")):
        wanted = [i for i in range(len(ids)) if labels[i] == k][:3]  # the records' order
        assert shown[name].ids == [ids[i] for i in wanted]
        for got, i in zip(shown[name].images, wanted, strict=True):
            np.testing.assert_array_equal(got, images[i])  # PNG records: lossless
        assert all(np.array_equal(label, np.eye(2)[k]) for label in shown[name].labels)


@pytest.mark.slow
def test_show_writes_a_png_under_the_runs_with_file_names_from_the_index(tmp_path):
    cfg, _, _, ids = _binary_records(tmp_path)
    files = [f"/data/raw/tiny/train_data/file_{i}.jpg" for i in range(len(ids))]
    _write_index(cfg, ids, files)

    path = show(cfg, "train", per_class=4)

    assert path == tmp_path / "runs" / "tiny" / "show" / f"train-{SIZE}px.png"
    assert path.read_bytes()[:8] == PNG and path.stat().st_size > 1000
    manifest = read_manifest(records_dir(cfg))
    shown = gather(cfg, manifest, "train", augmented=False, per_class=4)
    _, captions = panels(shown, manifest, True, {i: f for i, f in zip(ids, files, strict=True)}, 4)
    assert captions[0] == "file_0.jpg\nhuman" and captions[4] == "file_1.jpg\nai"  # a row per class, 4 a row


def test_without_an_index_the_caption_is_the_example_id(tmp_path):
    cfg, _, _, ids = _binary_records(tmp_path)
    manifest = read_manifest(records_dir(cfg))
    shown = gather(cfg, manifest, "train", augmented=False, per_class=2)
    _, captions = panels(shown, manifest, True, {}, 2)
    assert captions == [f"{ids[0]}\nhuman", f"{ids[2]}\nhuman", f"{ids[1]}\nai", f"{ids[3]}\nai"]


@pytest.mark.slow
def test_the_augmented_view_is_the_training_pipeline_with_mixed_labels(tmp_path):
    cfg, images, _, ids = _binary_records(tmp_path, n=32)
    cfg.augment.cutmix = 1.0  # every batch CutMixed: most images get a patch of another and a soft label
    cfg.augment.flip = "none"
    cfg.train.batch_size = 32
    manifest = read_manifest(records_dir(cfg))

    shown = gather(cfg, manifest, "train", augmented=True, per_class=32)

    labels = [label for row in shown.values() for label in row.labels]
    assert len(labels) == 32  # the whole split, each image in the row of its larger share
    for name, row in shown.items():
        for label in row.labels:
            assert label.sum() == pytest.approx(1.0, abs=1e-5) and ("human", "ai")[int(np.argmax(label))] == name
    mixed = [label for label in labels if label.max() < 1 - 1e-6]
    assert mixed, "CutMix at probability 1 mixed no label"
    assert label_text(mixed[0], ("human", "ai"), True).startswith("mix: ")
    by_id = dict(zip(ids, images, strict=True))
    pairs = [(i, image) for row in shown.values() for i, image in zip(row.ids, row.images, strict=True)]
    # a mixed label always comes with pasted pixels
    assert sum(not np.array_equal(image, by_id[i]) for i, image in pairs) >= len(mixed)
    title = title_of(cfg, manifest, "train", True, 2)
    assert "after the training pipeline's cutmix(p=1.0" in title and "flip" not in title
    path = show(cfg, "train", augmented=True, per_class=4)
    assert path.name == f"train-{SIZE}px-augmented.png" and path.read_bytes()[:8] == PNG


def test_label_text_names_the_class_or_the_mix_largest_share_first():
    classes = ("cat", "dog", "fox")
    assert label_text(np.array([0.0, 1.0, 0.0]), classes, True) == "dog"
    assert label_text(np.array([0.25, 0.0, 0.75]), classes, True) == "mix: fox 75% · cat 25%"
    assert label_text(np.array([0.998, 0.002, 0.0]), classes, True) == "mix: cat 99.8% · dog 0.2%"  # never 100% · 0%
    assert label_text(np.zeros(3), classes, False) == ""


@pytest.mark.slow
def test_a_multiclass_val_split_gets_a_row_per_class_and_a_marked_empty_row(tmp_path):
    cfg = make_config(tmp_path, ["a", "b", "c"], metric="accuracy")
    labels = np.array([0, 1, 0, 1, 0])  # no "c" in val
    write_split(cfg, "val", random_images(5, seed=8), labels, [f"v{i}.png" for i in range(5)])
    manifest = read_manifest(records_dir(cfg))

    shown = gather(cfg, manifest, "val", augmented=False, per_class=3)
    images, captions = panels(shown, manifest, True, {}, 3)

    assert [len(row.ids) for row in shown.values()] == [3, 2, 0]
    assert len(images) == len(captions) == 9
    assert captions[5] == "" and captions[6] == "no c images"  # b's third panel blank; c's row says it is empty
    assert show(cfg, "val", per_class=3).name == f"val-{SIZE}px.png"


def test_an_unlabelled_test_split_is_one_row_of_file_names(tmp_path):
    cfg = make_config(tmp_path, ["human", "ai"])
    write_split(cfg, "test", random_images(6, seed=9), np.full(6, -1), [f"t{i}.jpg" for i in range(6)])
    manifest_path = records_dir(cfg) / "manifest.json"
    manifest_json = pd.read_json(manifest_path, typ="series").to_dict()
    manifest_json["counts"]["test"]["unlabelled"] = 6  # as kit records counts a split without labels
    manifest_path.write_text(pd.Series(manifest_json).to_json())
    manifest = read_manifest(records_dir(cfg))

    shown = gather(cfg, manifest, "test", augmented=False, per_class=4)
    _, captions = panels(shown, manifest, False, {}, 4)

    assert list(shown) == [UNLABELLED] and captions == ["t0.jpg", "t1.jpg", "t2.jpg", "t3.jpg"]


def test_mistakes_are_one_line_errors_naming_the_fix(tmp_path):
    cfg = make_config(tmp_path, ["human", "ai"])
    with pytest.raises(KitError, match="no records") as missing:
        show(cfg, "train")  # no records yet
    assert "kit records comp=tiny" in missing.value.one_line()
    _binary_records(tmp_path)
    with pytest.raises(KitError, match="unknown split 'valid'") as unknown:
        show(cfg, "valid")
    assert "train, val, test" in unknown.value.one_line()
    with pytest.raises(KitError, match="only the training split") as augmented:
        show(cfg, "val", augmented=True)
    assert "split=train" in augmented.value.one_line()
    with pytest.raises(KitError, match="no val records"):
        show(cfg, "val")  # the records have no val split
    with pytest.raises(KitError, match="per_class=0"):
        show(cfg, "train", per_class=0)


@pytest.mark.slow
def test_kit_show_prints_the_png_and_refuses_a_bad_split_in_one_line(tmp_path):
    cfg, *_ = _binary_records(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    settings = [
        "comp.name=tiny",
        "comp.classes=[human,ai]",
        f"data.records_root={cfg.data.records_root}",
        f"run.root={cfg.run.root}",
        f"model.image_size={SIZE}",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "kit", "show", *settings, "split=train", "per_class=2", "augmented"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
    written = tmp_path / "runs" / "tiny" / "show" / f"train-{SIZE}px-augmented.png"
    assert f"wrote {written}" in result.stderr and written.read_bytes()[:8] == PNG
    assert "unknown split 'nope'" in kit_error_line(["show", *settings, "split=nope"], tmp_path, env)
    assert "only the training split" in kit_error_line(["show", *settings, "--split", "val", "--augmented"], tmp_path, env)
