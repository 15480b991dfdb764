"""Exact and near duplicates over every image, and the duplicate groups the fold split keeps together.

Near duplicates are found with faiss's ``IndexBinaryFlat`` (an exhaustive Hamming range search in optimised
C++): every pair of 64-bit perceptual hashes is compared, so nothing is sampled or capped.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np
import pandas as pd


def near_pairs(hashes: np.ndarray, max_distance: int, block: int = 65536) -> list[tuple[int, int, int]]:
    """All pairs (i, j, distance), i < j, of 64-bit hashes within ``max_distance`` bits (exhaustive, faiss)."""
    try:
        import faiss
    except ImportError:
        from kit.errors import KitError

        raise KitError("kit audit needs faiss-cpu for the near-duplicate search", "pip install faiss-cpu==1.15.1") from None
    hashes = np.ascontiguousarray(np.asarray(hashes, dtype=np.uint64))
    if len(hashes) < 2:
        return []
    codes = hashes.view(np.uint8).reshape(len(hashes), 8)  # the same byte order on both sides keeps Hamming distances
    index = faiss.IndexBinaryFlat(64)
    index.add(codes)
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(codes), block):  # blocks bound the result buffers on a large competition
        limits, distances, neighbours = index.range_search(codes[start : start + block], max_distance + 1)  # radius is strict
        for row in range(len(limits) - 1):
            i = start + row
            for j, d in zip(neighbours[limits[row] : limits[row + 1]], distances[limits[row] : limits[row + 1]], strict=True):
                if j > i:
                    pairs.append((i, int(j), int(d)))
    return sorted(pairs)


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


def near_duplicates(meta: pd.DataFrame, max_distance: int) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """Pairs of images within ``max_distance`` pHash bits that are not byte-identical; also every such pair's paths."""
    hashed = meta[meta["phash"].notna()]
    hashes = np.array([int(h) for h in hashed["phash"]], dtype=np.uint64)
    sha1 = hashed["sha1"].to_numpy()
    splits = hashed["split"].to_numpy()
    paths = hashed["path"].astype(str).to_numpy()
    kinds: Counter[str] = Counter()
    examples = []
    linked: list[tuple[str, str]] = []
    for i, j, d in near_pairs(hashes, max_distance):
        if sha1[i] == sha1[j]:
            continue  # exact duplicates are reported on their own
        kinds[pair_kind(splits[i], splits[j])] += 1
        linked.append((paths[i], paths[j]))
        if len(examples) < 20:
            examples.append({"a": paths[i], "b": paths[j], "splits": f"{splits[i]}/{splits[j]}", "distance": d})
    summary = {"hashed": len(hashed), "images": len(meta), "max_distance": max_distance, "pairs": dict(kinds)}
    summary["examples"] = examples
    return summary, linked


def duplicate_groups(meta: pd.DataFrame, near_links: list[tuple[str, str]]) -> dict[str, int]:
    """Group number per path for every image that has an exact or near copy (union-find over both kinds of link)."""
    parent: dict[str, str] = {}

    def root(path: str) -> str:
        while parent.setdefault(path, path) != path:
            parent[path] = parent[parent[path]]
            path = parent[path]
        return path

    def join(a: str, b: str) -> None:
        parent[root(a)] = root(b)

    ok = meta[meta["sha1"] != ""]
    for _, group in ok.groupby("sha1", sort=False):
        paths = group["path"].astype(str).tolist()
        for other in paths[1:]:
            join(paths[0], other)
    for a, b in near_links:
        join(a, b)
    members: dict[str, list[str]] = {}
    for path in parent:
        members.setdefault(root(path), []).append(path)
    groups = sorted(sorted(m) for m in members.values() if len(m) > 1)
    return {path: number for number, paths in enumerate(groups) for path in paths}
