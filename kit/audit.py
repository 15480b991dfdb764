"""``kit audit``: look at the data before training on it.

What it checks, and why it matters on Kaggle:

- class balance, per split;
- width, height, aspect, format, file size and JPEG quality per class and per split: a detector that
  can tell the classes apart by these alone learns the shortcut, not the content;
- exact duplicates (SHA-1 of the file bytes) and near duplicates (64-bit DCT perceptual hash within a
  small Hamming distance), within train and across train/val/test: duplicates across splits inflate
  the validation score, duplicates with conflicting labels are noise;
- a shortcut score: the cross-validated AUC (binary) or accuracy (multi-class) of a random forest that
  sees only the metadata above, with its most important features; and the same model telling test
  images from training images (a distribution shift the leaderboard will see and validation will not).

Only file headers and bytes are read for the metadata; images are decoded (reduced, in grayscale) only
for the perceptual hash, on a sample when the data set is large. The per-file facts (header, JPEG quality,
SHA-1, pHash) come from :func:`kit.data.images.file_facts`. Output, under ``<run.root>/<comp>/audit/``:
``audit.md`` with the plots beside it, and ``audit.json``.
"""

from __future__ import annotations

import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kit import plots
from kit.io import atomic_write, write_json

if TYPE_CHECKING:
    from kit.config import Config

FEATURES = ["width", "height", "aspect", "file_size", "channels", "jpeg_quality"]


# ------------------------------------------------------------------------------------------ duplicates


def near_pairs(hashes: np.ndarray, max_distance: int, block: int = 2048) -> list[tuple[int, int, int]]:
    """All pairs (i, j, distance), i < j, of 64-bit hashes within ``max_distance`` bits (blocked brute force)."""
    hashes = np.asarray(hashes, dtype=np.uint64)
    pairs: list[tuple[int, int, int]] = []
    for start in range(0, len(hashes), block):
        chunk = hashes[start : start + block]
        distance = np.bitwise_count(chunk[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(distance <= max_distance)
        keep = cols > rows + start
        pairs.extend((int(r + start), int(c), int(distance[r, c])) for r, c in zip(rows[keep], cols[keep], strict=True))
    return pairs


def _pair_kind(a: str, b: str) -> str:
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
                kinds[_pair_kind(splits[i], splits[j])] += 1
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
    """Pairs of hashed images within ``max_distance`` pHash bits that are not byte-identical."""
    hashed = meta[meta["phash"].notna()]
    hashes = np.array([int(h) for h in hashed["phash"]], dtype=np.uint64)
    sha1 = hashed["sha1"].to_numpy()
    splits = hashed["split"].to_numpy()
    kinds: Counter[str] = Counter()
    examples = []
    for i, j, d in near_pairs(hashes, max_distance):
        if sha1[i] == sha1[j]:
            continue  # exact duplicates are reported on their own
        kinds[_pair_kind(splits[i], splits[j])] += 1
        if len(examples) < 20:
            a, b = hashed.iloc[i], hashed.iloc[j]
            examples.append({"a": a["path"], "b": b["path"], "splits": f"{a['split']}/{b['split']}", "distance": d})
    return {"hashed": len(hashed), "max_distance": max_distance, "pairs": dict(kinds), "examples": examples}


# -------------------------------------------------------------------------------------------- shortcut


def _features(frame: pd.DataFrame) -> tuple[np.ndarray, list[str]]:
    numeric = frame[FEATURES].astype(float).fillna(-1.0)
    formats = pd.get_dummies(frame["format"], prefix="format").astype(float)
    table = pd.concat([numeric, formats], axis=1)
    return table.to_numpy(), list(table.columns)


def metadata_model_score(frame: pd.DataFrame, target: np.ndarray, seed: int) -> dict[str, Any] | None:
    """Cross-validated score of a random forest predicting ``target`` from metadata alone.

    Binary targets: ROC AUC of out-of-fold probabilities. Multi-class: accuracy, with the majority-class
    rate and the normalised gain over it. None when a class has fewer than 2 examples.
    """
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.metrics import accuracy_score, roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    x, names = _features(frame)
    values, counts = np.unique(target, return_counts=True)
    if len(values) < 2 or counts.min() < 2:
        return None
    # small forest, one thread: the CPU is shared and this is a smoke detector, not a model
    forest = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, max_depth=12, random_state=seed, n_jobs=1)
    folds = StratifiedKFold(n_splits=int(min(5, counts.min())), shuffle=True, random_state=seed)
    proba = cross_val_predict(forest, x, target, cv=folds, method="predict_proba")
    forest.fit(x, target)
    importance = sorted(zip(names, forest.feature_importances_, strict=True), key=lambda t: -t[1])
    result: dict[str, Any] = {
        "examples": len(target),
        "top_features": [{"feature": n, "importance": round(float(v), 4)} for n, v in importance[:5]],
    }
    if len(values) == 2:
        result["metric"] = "auc"
        result["value"] = float(roc_auc_score(target == values[1], proba[:, 1]))
    else:
        majority = counts.max() / counts.sum()
        accuracy = float(accuracy_score(target, values[proba.argmax(axis=1)]))
        result.update(
            metric="accuracy", value=accuracy, majority=float(majority), gain=float((accuracy - majority) / (1 - majority))
        )
    return result


# ---------------------------------------------------------------------------------------------- stats


def _describe(meta: pd.DataFrame, by: str) -> dict[str, Any]:
    """Per group: count, median/min/max of the numeric facts, formats, the commonest sizes."""
    out: dict[str, Any] = {}
    for name, group in meta.groupby(by, sort=True):
        entry: dict[str, Any] = {"count": len(group)}
        for column in ("width", "height", "aspect", "file_size", "jpeg_quality"):
            values = group[column].dropna()
            if len(values):
                entry[column] = {"min": float(values.min()), "median": float(values.median()), "max": float(values.max())}
        entry["formats"] = {k: int(v) for k, v in group["format"].value_counts().items()}
        sizes = (
            group["width"].fillna(0).astype(int).astype(str) + "x" + group["height"].fillna(0).astype(int).astype(str)
        ).value_counts()
        entry["top_sizes"] = {k: int(v) for k, v in sizes.head(5).items()}
        out[str(name)] = entry
    return out


def _plots(meta: pd.DataFrame, out_dir: Path) -> list[Path]:
    written = []
    labelled = meta[meta["label"] >= 0]
    counts = labelled["class"].value_counts().sort_index()
    written.append(
        plots.bar_chart({str(k): int(v) for k, v in counts.items()}, out_dir / "class_balance.png", "labelled images per class")
    )
    specs = [("width", "width (px)", False), ("height", "height (px)", False), ("aspect", "aspect (width / height)", False)]
    specs += [("file_size", "file size (bytes)", True), ("jpeg_quality", "JPEG quality (estimated)", False)]
    for column, label, log in specs:
        for by, source in (("class", labelled), ("split", meta)):
            groups = {str(k): g[column].dropna().to_numpy() for k, g in source.groupby(by, sort=True)}
            if not any(len(v) for v in groups.values()):
                continue
            written.append(plots.histograms(groups, out_dir / f"{column}_by_{by}.png", label, f"{label} by {by}", log=log))
    return written


# ----------------------------------------------------------------------------------------------- audit


def audit(cfg: Config) -> dict:
    """Audit the competition's images (no training); write audit.md, audit.json and plots; return the summary."""
    from tqdm.auto import tqdm

    from kit.data.images import file_facts
    from kit.data.sources import load_index

    settings = cfg.audit
    index, classes = load_index(cfg)
    index = index.reset_index(drop=True)
    out_dir = Path(cfg.run.root) / cfg.comp.name / "audit"
    rng = np.random.default_rng(cfg.data.seed)
    hash_rows = np.zeros(len(index), dtype=bool)
    chosen = rng.choice(len(index), size=min(len(index), settings.hash_sample), replace=False) if len(index) else []
    hash_rows[chosen] = True

    workers = settings.workers or min(16, os.cpu_count() or 1)
    paths = index["path"].astype(str).tolist()
    with ThreadPoolExecutor(max_workers=workers) as pool:  # I/O, hashlib and cv2 release the GIL
        facts = list(tqdm(pool.map(file_facts, paths, hash_rows.tolist()), total=len(paths), desc="audit", unit="img"))
    meta = pd.concat([index, pd.DataFrame(facts)], axis=1)
    meta["aspect"] = meta["width"] / meta["height"]
    names = [str(c) for c in classes]
    meta["class"] = [names[i] if 0 <= i < len(names) else "unlabelled" for i in meta["label"].astype(int)]

    readable = meta[meta["error"] == ""]
    labelled = readable[readable["label"] >= 0]
    warnings: list[str] = []
    summary: dict[str, Any] = {"comp": cfg.comp.name, "images": len(meta), "classes": names}
    summary["splits"] = {k: int(v) for k, v in meta["split"].value_counts().sort_index().items()}
    balance = {
        names[i]: int(n) for i, n in labelled["label"].astype(int).value_counts().sort_index().items() if 0 <= i < len(names)
    }
    summary["class_balance"] = balance
    summary["class_balance_by_split"] = {
        str(s): {names[i]: int(n) for i, n in g["label"].astype(int).value_counts().sort_index().items() if 0 <= i < len(names)}
        for s, g in labelled.groupby("split")
    }
    if balance and min(balance.values()) > 0 and max(balance.values()) / min(balance.values()) > 10:
        ratio = max(balance.values()) / min(balance.values())
        warnings.append(f"classes are imbalanced {ratio:.0f}:1: prefer F1 / macro F1, tune the threshold")
    bad = meta[meta["error"] != ""]
    summary["unreadable"] = {
        "count": len(bad),
        "examples": [{"path": p, "error": e} for p, e in zip(bad["path"][:10], bad["error"][:10], strict=True)],
    }
    if len(bad):
        warnings.append(f"{len(bad)} files are unreadable (e.g. {bad['path'].iloc[0]}): kit records will skip them")
    summary["by_class"] = _describe(readable[readable["label"] >= 0], "class")
    summary["by_split"] = _describe(readable, "split")

    exact = exact_duplicates(meta)
    near = near_duplicates(readable, settings.near_distance)
    summary["exact_duplicates"] = exact
    summary["near_duplicates"] = near
    if exact["test_groups_with_labelled_copy"]:
        warnings.append(f"{exact['test_groups_with_labelled_copy']} test images have a byte-identical copy in the labelled data")
    cross = {k: v for k, v in exact["pairs"].items() if k != "train-train"}
    if cross:
        warnings.append(f"exact duplicates across splits: {cross}: validation scores on them are memorised, not learned")
    if exact["label_conflicts"]:
        warnings.append(f"{exact['label_conflicts']} groups of identical files carry different labels")
    near_cross = {k: v for k, v in near["pairs"].items() if k != "train-train"}
    if near_cross:
        warnings.append(f"near duplicates across splits (pHash distance <= {settings.near_distance}): {near_cross}")

    shortcut_rows = labelled
    if len(shortcut_rows) > settings.shortcut_sample:
        shortcut_rows = shortcut_rows.sample(settings.shortcut_sample, random_state=cfg.data.seed)
    shortcut = (
        metadata_model_score(shortcut_rows, shortcut_rows["label"].astype(int).to_numpy(), cfg.data.seed)
        if len(shortcut_rows)
        else None
    )
    summary["shortcut"] = shortcut
    if shortcut is not None:
        top = ", ".join(f["feature"] for f in shortcut["top_features"][:3])
        if shortcut["metric"] == "auc" and shortcut["value"] > settings.shortcut_auc:
            warnings.append(
                f"SHORTCUT: image metadata alone (size, format, file size, JPEG quality) predicts the label with "
                f"AUC {shortcut['value']:.3f} (top features: {top}): images' sizes alone predict the label: your "
                "validation score will not transfer to the leaderboard (resize/re-encode uniformly, check test looks the same)"
            )
        elif shortcut["metric"] == "accuracy" and shortcut["gain"] > settings.shortcut_gain:
            warnings.append(
                f"SHORTCUT: image metadata alone predicts the label with accuracy {shortcut['value']:.3f} "
                f"(majority class {shortcut['majority']:.3f}; top features: {top}): your validation score will not transfer "
                "to the leaderboard"
            )
    shift = None
    if (readable["split"] == "test").any() and len(labelled):
        pool_rows = readable.sample(min(len(readable), settings.shortcut_sample), random_state=cfg.data.seed)
        shift = metadata_model_score(pool_rows, (pool_rows["split"] == "test").astype(int).to_numpy(), cfg.data.seed)
        if shift is not None and shift["value"] > settings.shortcut_auc:
            warnings.append(f"test images differ from labelled ones in metadata (AUC {shift['value']:.3f} telling them apart)")
    summary["train_test_shift"] = shift
    summary["warnings"] = warnings

    out_dir.mkdir(parents=True, exist_ok=True)
    written = _plots(readable, out_dir)
    summary["plots"] = [p.name for p in written]
    write_json(out_dir / "audit.json", summary)
    atomic_write(out_dir / "audit.md", _markdown(summary))
    summary["report"] = str(out_dir / "audit.md")
    for line in warnings:
        print(f"WARNING: {line}")
    print(f"audit of {len(meta)} images: {len(warnings)} warnings; report {out_dir / 'audit.md'}")
    return summary


def _table(header: list[str], rows: list[list[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _range(entry: dict, key: str, fmt: str = "{:.0f}") -> str:
    if key not in entry:
        return "-"
    v = entry[key]
    return f"{fmt.format(v['median'])} ({fmt.format(v['min'])}-{fmt.format(v['max'])})"


def _group_row(name: str, e: dict) -> list[Any]:
    formats = ", ".join(f"{k} {v}" for k, v in e["formats"].items())
    sizes = ", ".join(f"{k} ({v})" for k, v in e["top_sizes"].items())
    ranges = [
        _range(e, "width"),
        _range(e, "height"),
        _range(e, "aspect", "{:.2f}"),
        _range(e, "file_size"),
        _range(e, "jpeg_quality"),
    ]
    return [name, e["count"], *ranges, formats, sizes]


def _markdown(summary: dict) -> str:
    parts = [f"# Data audit: {summary['comp']}", "", f"{summary['images']} images; splits {summary['splits']}.", ""]
    parts += ["## Warnings", ""]
    parts += [f"- **{w}**" for w in summary["warnings"]] or ["- none"]
    parts += ["", "## Class balance", "", "![class balance](class_balance.png)", ""]
    parts.append(_table(["class", "images"], [[k, v] for k, v in summary["class_balance"].items()]))
    for title, key in (("Per class", "by_class"), ("Per split", "by_split")):
        rows = [_group_row(name, e) for name, e in summary[key].items()]
        parts += ["", f"## {title}: median (min-max)", ""]
        parts.append(_table(["group", "n", "width", "height", "aspect", "bytes", "JPEG q", "formats", "top sizes"], rows))
    plots_md = [f"![{p}]({p})" for p in summary["plots"] if p != "class_balance.png"]
    parts += ["", "## Distributions", "", *plots_md]
    exact, near = summary["exact_duplicates"], summary["near_duplicates"]
    parts += ["", "## Duplicates", ""]
    parts.append(
        f"- exact (SHA-1): {exact['groups']} groups, {exact['images']} images; "
        f"pairs by split {exact['pairs'] or '{}'}; label conflicts {exact['label_conflicts']}"
    )
    parts.append(
        f"- near (pHash distance <= {near['max_distance']}, {near['hashed']} images hashed): "
        f"pairs by split {near['pairs'] or '{}'}"
    )
    for group in exact["examples"][:5]:
        parts.append("  - exact: " + " = ".join(f"`{g['path']}` ({g['split']}, {g['class']})" for g in group))
    for pair in near["examples"][:5]:
        parts.append(f"  - near: `{pair['a']}` ~ `{pair['b']}` ({pair['splits']}, distance {pair['distance']})")
    parts += ["", "## Shortcut score (metadata only: width, height, aspect, file size, channels, JPEG quality, format)", ""]
    for title, result in (("label", summary["shortcut"]), ("test vs labelled", summary["train_test_shift"])):
        if result is None:
            parts.append(f"- {title}: not computed (too few examples)")
            continue
        extra = f", majority {result['majority']:.3f}" if "majority" in result else ""
        features = ", ".join(f"{f['feature']} {f['importance']:.2f}" for f in result["top_features"])
        parts.append(f"- {title}: cross-validated {result['metric']} {result['value']:.3f}{extra}; top features: {features}")
    if summary["unreadable"]["count"]:
        parts += ["", "## Unreadable files", ""]
        parts += [f"- `{e['path']}`: {e['error']}" for e in summary["unreadable"]["examples"]]
    return "\n".join(parts) + "\n"
