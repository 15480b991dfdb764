"""The embedded demo competition: scikit-learn's digits dressed up as a Kaggle competition.

``load_digits`` ships inside scikit-learn (1,797 8x8 grey images, 10 classes), so the whole pipeline can
run offline in a minute on a laptop. The folder it makes has the shape of a real competition and
matches configs/competitions/demo.yaml::

    train/d00042.png ...      train.csv              id,label
    test/d00007.png ...       test.csv               id
    sample_submission.csv     id,label (placeholder 0)
    solution.csv              id,label (hidden test labels; only the demo can score itself)
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd

from kit.io import atomic_write, write_csv

MARKER = ".kit-demo-complete"  # written last: its presence means every other file is complete


def _params(size: int, test_fraction: float, seed: int) -> str:
    return json.dumps({"version": 1, "size": size, "test_fraction": test_fraction, "seed": seed}, sort_keys=True)


def make_demo_competition(root: Path, size: int = 32, test_fraction: float = 0.2, seed: int = 0) -> Path:
    """Write the digits competition under ``root`` (idempotent: a complete folder is left as is) and return ``root``.

    Images are upsampled with bicubic interpolation to ``size`` x ``size`` RGB PNGs so that the models'
    minimum input sizes and the records' resize path are exercised as with real data.
    """
    import cv2
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    root = Path(root)
    params = _params(size, test_fraction, seed)
    marker = root / MARKER
    if marker.is_file() and marker.read_text() == params:
        return root

    # A partial or differently-sized folder: start the folders we own afresh so no stale image remains.
    for sub in ("train", "test"):
        shutil.rmtree(root / sub, ignore_errors=True)
        (root / sub).mkdir(parents=True, exist_ok=True)
    marker.unlink(missing_ok=True)

    digits = load_digits()
    images = np.clip(digits.images * (255.0 / 16.0), 0, 255).astype(np.uint8)  # values are 0..16
    labels = digits.target.astype(int)
    ids = np.array([f"d{i:05d}" for i in range(len(labels))])
    train_pos, test_pos = train_test_split(np.arange(len(labels)), test_size=test_fraction, stratify=labels, random_state=seed)
    train_pos, test_pos = np.sort(train_pos), np.sort(test_pos)

    for split, positions in (("train", train_pos), ("test", test_pos)):
        for i in positions:
            grey = cv2.resize(images[i], (size, size), interpolation=cv2.INTER_CUBIC)  # uint8: saturates, no overshoot
            cv2.imwrite(str(root / split / f"{ids[i]}.png"), np.repeat(grey[:, :, None], 3, axis=2))

    write_csv(pd.DataFrame({"id": ids[train_pos], "label": labels[train_pos]}), root / "train.csv")
    write_csv(pd.DataFrame({"id": ids[test_pos]}), root / "test.csv")
    write_csv(pd.DataFrame({"id": ids[test_pos], "label": 0}), root / "sample_submission.csv")
    write_csv(pd.DataFrame({"id": ids[test_pos], "label": labels[test_pos]}), root / "solution.csv")
    atomic_write(marker, params)
    return root
