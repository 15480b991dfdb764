"""Tiny Kaggle-shaped competitions (a few dozen 8x8 images) in the three layouts kit reads.

Shared by tests/test_sources.py and tests/test_infer.py. Each maker returns the competition folder;
the matching preset (configs/competitions/<name>.yaml) reads it with ``data.root=<folder>``.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from kit.config import Config, load_config


def write_image(path: Path, seed: int, size: int = 8) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    cv2.imwrite(str(path), rng.integers(0, 256, (size, size, 3), dtype=np.uint8))


def make_ai_vs_human(root: Path, n_train: int = 24, n_test: int = 8) -> Path:
    """train.csv ``Unnamed: 0, file_name, label`` (paths under train_data/), test.csv ``id`` holding paths."""
    files = [f"train_data/{i:08x}.jpg" for i in range(n_train)]
    for i, f in enumerate(files):
        write_image(root / f, i)
    labels = [i % 2 for i in range(n_train)]
    pd.DataFrame({"file_name": files, "label": labels}).to_csv(root / "train.csv")  # index=True: "Unnamed: 0"
    tests = [f"test_data_v2/{1000 + i:08x}.jpg" for i in range(n_test)]
    for i, f in enumerate(tests):
        write_image(root / f, 1000 + i)
    pd.DataFrame({"id": tests}).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"id": tests, "label": 0}).to_csv(root / "sample_submission.csv", index=False)
    return root


AI100_CLASSES = ["cat", "dog", "owl"]


def make_ai_100(root: Path, per_class: tuple[int, int] = (10, 3), n_test: int = 6) -> Path:
    """CSVs ``image_id,label`` (class names) for train and val; test by ``image_id``; PNGs ``<id>.png``."""
    k = 0
    for split, n in (("train", per_class[0]), ("val", per_class[1])):
        rows = []
        for c in AI100_CLASSES:
            for _ in range(n):
                image_id = f"{k:04d}-{split}"
                write_image(root / split / f"{image_id}.png", k)
                rows.append((image_id, c))
                k += 1
        pd.DataFrame(rows, columns=["image_id", "label"]).to_csv(root / f"{split}.csv", index=False)
    tests = [f"{9000 + i:04d}-test" for i in range(n_test)]
    for i, t in enumerate(tests):
        write_image(root / "test" / f"{t}.png", 9000 + i)
    pd.DataFrame({"image_id": tests}).to_csv(root / "test.csv", index=False)
    pd.DataFrame({"image_id": tests, "label": "cat"}).to_csv(root / "sample_submission.csv", index=False)
    return root


def make_cifake(root: Path, n_train: int = 12, n_test: int = 4) -> Path:
    """Folders train/REAL, train/FAKE, test/REAL, test/FAKE; file names repeat across folders, as in CIFAKE."""
    for split, n in (("train", n_train), ("test", n_test)):
        for c, cls in enumerate(("REAL", "FAKE")):
            for i in range(n):
                write_image(root / split / cls / f"{i} ({i + 1}).jpg", 5000 * (split == "test") + 1000 * c + i)
    return root


def preset(comp: str, root: Path, *overrides: str) -> Config:
    """The preset of ``comp`` reading ``root``, with the index cache under the competition folder."""
    return load_config([f"comp={comp}", f"data.root={root}", f"data.records_root={root}/.records", *overrides])
