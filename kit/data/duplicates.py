"""Duplicate groups: the labelled images a validation split or fold split keeps on one side.

Two rules (``data.duplicate_groups``), both computed where the index is built:

- ``exact``: byte-identical files (SHA-1 of the bytes, as :func:`kit.data.images.file_facts` hashes them for the
  audit). Only files whose size another file shares can have a copy, so only those are read: on most
  competitions that is a small part of the files, and the index build stays a listing.
- ``near``: also near duplicates, 64-bit DCT perceptual hashes (:func:`kit.data.images.phash`) within a Hamming
  distance, found with faiss's ``IndexBinaryFlat`` (an exhaustive range search: nothing is sampled). Every
  labelled image is decoded, so it is asked for, never the default.

Near-duplicate links chain: a~b, b~c, c~d ... joins images that look nothing alike, and on aligned face photos
thousands of distinct images become one "group" that a split then puts whole on one side. So a group here is a
set of *mutual* near duplicates (complete linkage): in row order, an image joins the earliest-started group of
which it is within the distance of *every* member, else starts its own. A chain of images that drift a little
at each step becomes runs of neighbours, never one component. Byte-identical copies count as one image.

A group larger than a small share of the labelled rows (``data.group_max_share``) is reported, not used: its
images are split one by one (:func:`cap_groups`; :func:`group_limit`).
"""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pandas as pd

from kit.data.image_headers import ImageError, read_image_bytes

MIN_GROUP_LIMIT = 5  # a handful of copies is always kept together, however small the data set
RULES = {
    "exact": "byte-identical files",
    "near": "byte-identical files and mutual near duplicates (pHash within {distance} bits of every member)",
}


def near_pairs(hashes: np.ndarray, max_distance: int, block: int = 65536) -> list[tuple[int, int, int]]:
    """All pairs (i, j, distance), i < j, of 64-bit hashes within ``max_distance`` bits (exhaustive, faiss)."""
    try:
        import faiss
    except ImportError:
        from kit.errors import KitError

        raise KitError(
            "the near-duplicate search (kit audit, data.duplicate_groups=near) needs faiss-cpu", "pip install faiss-cpu==1.15.1"
        ) from None
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


def _file_size(path: str) -> int:
    try:
        return os.stat(path).st_size
    except OSError:
        return -1


def _content_hash(path: str) -> str:
    try:
        return hashlib.sha1(read_image_bytes(path)).hexdigest()
    except ImageError:
        return ""  # unreadable: kit records skips it; it is nobody's copy


def content_hashes(paths: Sequence[str], workers: int) -> list[str]:
    """SHA-1 of the bytes of every file whose size another file shares; '' for the others (a file of a size of its
    own has no byte-identical copy), and for empty or unreadable files."""
    sizes = pd.Series([_file_size(p) for p in paths])
    shared = np.flatnonzero(sizes.duplicated(keep=False).to_numpy() & (sizes > 0).to_numpy())
    hashes = [""] * len(paths)
    # in a few chunks per thread: file reads and hashlib release the GIL, but a task per small file costs more
    # in thread hand-offs than its hash
    chunks = np.array_split(shared, max(1, min(len(shared) // 256, 4 * workers)))
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for chunk, digests in zip(chunks, pool.map(lambda c: [_content_hash(paths[i]) for i in c], chunks), strict=True):
            for i, digest in zip(chunk, digests, strict=True):
                hashes[i] = digest
    return hashes


def image_hashes(paths: Sequence[str], workers: int) -> tuple[list[str], list[int | None]]:
    """SHA-1 and pHash of every file (None for a file that cannot be decoded), as the audit computes them."""
    from kit.data.images import file_facts

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:  # I/O, hashlib and cv2 release the GIL
        facts = list(pool.map(file_facts, paths))
    return [f["sha1"] for f in facts], [f["phash"] for f in facts]


def _mutual_groups(hashes: list[int | None], max_distance: int) -> np.ndarray:
    """Group number per item: mutual near duplicates (see the module docstring); items without a hash stay alone."""
    group = np.arange(len(hashes), dtype=np.int64)
    hashed = [i for i, h in enumerate(hashes) if h is not None]
    neighbours: list[set[int]] = [set() for _ in hashed]
    for i, j, _ in near_pairs(np.array([hashes[i] for i in hashed], dtype=np.uint64), max_distance):
        neighbours[i].add(j)
        neighbours[j].add(i)
    local = np.arange(len(hashed))  # group of each hashed item, numbered by its first member (row order)
    members: dict[int, list[int]] = {}
    for i, near in enumerate(neighbours):
        for candidate in sorted({int(local[j]) for j in near if j < i}):
            if near.issuperset(members[candidate]):
                local[i] = candidate
                break
        members.setdefault(int(local[i]), []).append(i)
    for i, first in enumerate(local):
        group[hashed[i]] = hashed[first]
    return group


def duplicate_groups(sha1: Sequence[str], phash: Sequence[int | None] | None = None, max_distance: int = 0) -> np.ndarray:
    """Group number per row: rows with the same non-empty SHA-1 share one; with ``phash``, so do mutual near
    duplicates within ``max_distance`` bits. Every other row has a group of its own."""
    # '' (not hashed) is nobody's copy: a key of its own that no hex digest can equal (no NUL: older pandas
    # hash tables end a string at it, which made every unhashed row one group)
    keys = [h if h else f"unhashed row {i}" for i, h in enumerate(sha1)]
    content, _ = pd.factorize(pd.Series(keys, dtype=object))  # one number per distinct content, in row order
    if phash is None:
        return content.astype(np.int64)
    first = pd.Series(np.arange(len(keys))).groupby(content).first().to_numpy()
    return _mutual_groups([phash[i] for i in first], max_distance)[content]


def group_limit(max_share: float, rows: int) -> int:
    """The most rows a group may have and still be used: ``max_share`` of the rows, and never under MIN_GROUP_LIMIT."""
    return max(MIN_GROUP_LIMIT, math.floor(max_share * rows))


def cap_groups(groups: np.ndarray, max_size: int) -> tuple[np.ndarray, list[int]]:
    """Groups over ``max_size`` rows split into single rows; and the sizes of those groups, largest first."""
    _, inverse, counts = np.unique(groups, return_inverse=True, return_counts=True)
    big = counts[inverse] > max_size
    capped = np.array(groups, dtype=np.int64)
    capped[big] = capped.max(initial=0) + 1 + np.arange(int(big.sum()))
    return capped, sorted(counts[counts > max_size].tolist(), reverse=True)


def group_summary(groups: np.ndarray, unused: list[int], rule: str, limit: int) -> dict[str, Any]:
    """What a split keeps whole: the rule, groups of more than one row, their rows, the largest; those not used."""
    _, counts = np.unique(groups, return_counts=True)
    shared = counts[counts > 1]
    return {
        "rule": rule,
        "groups": len(shared),
        "images": int(shared.sum()),
        "largest": int(shared.max(initial=0)),
        "limit": limit,
        "unused": unused,
    }


def describe(summary: dict[str, Any], distance: int) -> str:
    """One line: which duplicate groups the split kept whole, by which rule, and which were too big to use."""
    rule = summary.get("rule", "none")
    if rule not in RULES:
        return f"duplicate groups: none used ({summary.get('reason', 'data.duplicate_groups=none')})"
    line = (
        f"duplicate groups kept whole by the split ({RULES[rule].format(distance=distance)}; data.duplicate_groups={rule}): "
        f"{summary['groups']} groups, {summary['images']} images, the largest {summary['largest']}"
    )
    unused = summary["unused"]
    if unused:
        sizes = ", ".join(str(n) for n in unused[:5]) + (", ..." if len(unused) > 5 else "")
        line += (
            f"; {len(unused)} groups over data.group_max_share ({summary['limit']} images) not used, "
            f"their images split one by one: {sizes} images"
        )
    return line
