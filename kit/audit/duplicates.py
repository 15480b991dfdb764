"""Exact and near duplicates over every image, and the duplicate groups a split would keep whole (reported only).

Near duplicates are found with :func:`kit.data.duplicates.near_pairs` (faiss's ``IndexBinaryFlat``, an exhaustive
Hamming range search): every pair of 64-bit perceptual hashes is compared, so nothing is sampled or capped.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd

from kit.data.duplicates import cap_groups, duplicate_groups, group_limit, group_summary, near_pairs


def pair_kind(a: str, b: str) -> str:
    order = {"train": 0, "val": 1, "test": 2}
    first, second = sorted((a, b), key=lambda s: order.get(s, 3))
    return f"{first}-{second}"


def exact_duplicates(meta: pd.DataFrame) -> dict[str, Any]:
    """Groups of byte-identical files: counts per split pair, label conflicts, examples."""
    ok = meta[meta["sha1"] != ""]
    groups = [g for _, g in ok.groupby("sha1", sort=False) if len(g) > 1]
    kinds: Counter[str] = Counter()
    conflicts = 0
    examples = []
    for group in groups:
        splits = group["split"].tolist()
        for i in range(len(group)):
            for j in range(i + 1, len(group)):
                kinds[pair_kind(splits[i], splits[j])] += 1
        labels = set(group.loc[group["label"] >= 0, "label"])
        conflicts += len(labels) > 1
        if len(examples) < 10:
            examples.append(
                [
                    {"path": p, "split": s, "class": c}
                    for p, s, c in zip(group["path"], group["split"], group["class"], strict=True)
                ]
            )
    test_leaks = sum(1 for g in groups if (g["split"] == "test").any() and (g["split"] != "test").any())
    return {
        "groups": len(groups),
        "images": int(sum(len(g) for g in groups)),
        "pairs": dict(kinds),
        "label_conflicts": conflicts,
        "test_groups_with_labelled_copy": test_leaks,
        "examples": examples,
    }


def near_duplicates(meta: pd.DataFrame, max_distance: int) -> dict[str, Any]:
    """Pairs of images within ``max_distance`` pHash bits that are not byte-identical: counts per split pair, examples."""
    hashed = meta[meta["phash"].notna()]
    hashes = np.array([int(h) for h in hashed["phash"]], dtype=np.uint64)
    sha1 = hashed["sha1"].to_numpy()
    splits = hashed["split"].to_numpy()
    paths = hashed["path"].astype(str).to_numpy()
    kinds: Counter[str] = Counter()
    examples = []
    for i, j, d in near_pairs(hashes, max_distance):
        if sha1[i] == sha1[j]:
            continue  # exact duplicates are reported on their own
        kinds[pair_kind(splits[i], splits[j])] += 1
        if len(examples) < 20:
            examples.append({"a": paths[i], "b": paths[j], "splits": f"{splits[i]}/{splits[j]}", "distance": d})
    summary = {"hashed": len(hashed), "images": len(meta), "max_distance": max_distance, "pairs": dict(kinds)}
    summary["examples"] = examples
    return summary


def split_groups(labelled: pd.DataFrame, near_distance: int, max_share: float) -> dict[str, dict[str, Any]]:
    """The duplicate groups a split of the labelled rows would keep whole under each rule of data.duplicate_groups
    (computed by :mod:`kit.data.duplicates`, as the index build does): reported here, used only there."""
    sha1 = labelled["sha1"].astype(str).tolist()
    phash = [None if pd.isna(h) else int(h) for h in labelled["phash"]]
    limit = group_limit(max_share, len(labelled))
    out = {}
    for rule, groups in (
        ("exact", duplicate_groups(sha1)),
        ("near", duplicate_groups(sha1, phash, near_distance)),
    ):
        capped, unused = cap_groups(groups, limit)
        out[rule] = group_summary(capped, unused, rule, limit)
    return out
