"""A numeric setting's range is declared once, beside its field in kit/config/schema.py: the augmenters and the
records build enforce that declaration on a config edited in Python, which never passed load_config's checks."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from test_records import CLASSES, make_config, make_index

from kit.config import AugmentConfig, Range, ranged_fields
from kit.data import records
from kit.data.augment import build_online_augmenter, offline_augment
from kit.errors import KitError


def just_outside(allowed: Range, kind: type) -> float:
    """The nearest value above the range (at the bound when it is open)."""
    if allowed.high_open:
        return kind(allowed.high)
    return kind(allowed.high) + (1 if kind is int else 0.001)


AUGMENT_RANGES = ranged_fields(AugmentConfig, "augment.")


@pytest.mark.parametrize(("key", "kind", "allowed"), AUGMENT_RANGES, ids=[key for key, _, _ in AUGMENT_RANGES])
def test_the_augmenters_refuse_a_value_outside_the_schemas_range_and_take_its_bound(key: str, kind: type, allowed: Range) -> None:
    name = key.removeprefix("augment.")
    images, labels = np.zeros((2, 8, 8, 3), np.uint8), np.eye(2, dtype=np.float32)
    outside = dataclasses.replace(AugmentConfig(), **{name: just_outside(allowed, kind)})
    for build in (lambda cfg: build_online_augmenter(cfg, 2), lambda cfg: offline_augment(images, labels, cfg, seed=0)):
        with pytest.raises(KitError, match=rf"^{re.escape(key)}=\S+ is outside its allowed range {re.escape(str(allowed))}"):
            build(outside)
    inside = kind(allowed.low) if not allowed.low_open else kind(allowed.high)
    offline_augment(images, labels, dataclasses.replace(AugmentConfig(), **{name: inside}), seed=0)


@pytest.mark.parametrize("shard_mb", [0, -1.0])
def test_build_records_refuses_a_shard_size_outside_the_declared_range(tmp_path: Path, shard_mb: float) -> None:
    cfg = make_config(tmp_path / "records")
    cfg.data.shard_mb = shard_mb  # edited in Python, as a notebook would
    with pytest.raises(KitError, match=rf"data.shard_mb={shard_mb} is outside its allowed range \(0, 100000\]"):
        records.build_records(cfg, make_index(tmp_path / "images", bad=False), CLASSES)
    assert not (tmp_path / "records" / "demo").exists()
