"""The audit's tables, plots and ``audit.md``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from kit import plots


def describe(meta: pd.DataFrame, by: str) -> dict[str, Any]:
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


def write_plots(meta: pd.DataFrame, out_dir: Path) -> list[Path]:
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


def adversarial_plot(shift: dict[str, Any], out_dir: Path) -> Path:
    """Out-of-fold 'is test' probabilities of training and test images: overlapping humps mean no shift."""
    groups = {"train/val": shift["oof_train"], "test": shift["oof_test"]}
    title = f"adversarial validation on pixels: AUC {shift['value']:.3f}"
    return plots.histograms(groups, out_dir / "adversarial_validation.png", "out-of-fold P(test)", title)


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


def _split_groups(groups: dict, distance: int) -> list[str]:
    """What a split of the labelled rows would keep whole under each rule, and which rule the settings pick."""
    from kit.data.duplicates import describe

    lines = [f"- the index build uses data.duplicate_groups={groups['setting']}; under each rule it would keep:"]
    return lines + [f"  - {rule}: {describe(groups[rule], distance)}" for rule in ("exact", "near")]


def markdown(summary: dict) -> str:
    parts = [f"# Data audit: {summary['comp']}", "", f"{summary['images']} images; splits {summary['splits']}.", ""]
    parts += ["## Warnings", ""]
    parts += [f"- **{w}**" for w in summary["warnings"]] or ["- none"]
    parts += ["", "## Class balance", "", "![class balance](class_balance.png)", ""]
    parts.append(_table(["class", "images"], [[k, v] for k, v in summary["class_balance"].items()]))
    for title, key in (("Per class", "by_class"), ("Per split", "by_split")):
        rows = [_group_row(name, e) for name, e in summary[key].items()]
        parts += ["", f"## {title}: median (min-max)", ""]
        parts.append(_table(["group", "n", "width", "height", "aspect", "bytes", "JPEG q", "formats", "top sizes"], rows))
    plots_md = [f"![{p}]({p})" for p in summary["plots"] if p not in ("class_balance.png", "adversarial_validation.png")]
    parts += ["", "## Distributions", "", *plots_md]
    exact, near = summary["exact_duplicates"], summary["near_duplicates"]
    parts += ["", "## Duplicates", ""]
    parts.append(
        f"- exact (SHA-1): {exact['groups']} groups, {exact['images']} images; "
        f"pairs by split {exact['pairs'] or '{}'}; label conflicts {exact['label_conflicts']}"
    )
    parts.append(
        f"- near (pHash distance <= {near['max_distance']}; {near['hashed']} of {near['images']} images hashed, "
        f"every pair compared): pairs by split {near['pairs'] or '{}'}"
    )
    parts += _split_groups(summary["duplicate_groups"], near["max_distance"])
    for group in exact["examples"][:5]:
        parts.append("  - exact: " + " = ".join(f"`{g['path']}` ({g['split']}, {g['class']})" for g in group))
    for pair in near["examples"][:5]:
        parts.append(f"  - near: `{pair['a']}` ~ `{pair['b']}` ({pair['splits']}, distance {pair['distance']})")
    parts += ["", "## Shortcut score (metadata only; constant columns are left out)", ""]
    for title, result in (("label", summary["shortcut"]), ("test vs labelled", summary["train_test_shift"])):
        if result is None:
            parts.append(f"- {title}: not computed (too few examples)")
            continue
        extra = f", majority {result['majority']:.3f}" if "majority" in result else ""
        features = ", ".join(f"{f['feature']} {f['importance']:.2f}" for f in result["top_features"])
        parts.append(f"- {title}: cross-validated {result['metric']} {result['value']:.3f}{extra}; top features: {features}")
    adversarial = summary["adversarial_validation"]
    parts += ["", "## Adversarial validation (pixels: can a classifier tell test from training images?)", ""]
    if adversarial is None:
        parts.append("- not computed (no test split, or under 10 decodable images on a side)")
    else:
        parts.append(
            f"- cross-validated AUC {adversarial['value']:.3f} on {adversarial['examples']} images ({adversarial['test']} test) "
            f"from {adversarial['features']}; 0.5: test looks like training, towards 1: expect a leaderboard drop"
        )
        parts += ["", "![adversarial validation](adversarial_validation.png)"]
    if summary["unreadable"]["count"]:
        parts += ["", "## Unreadable files", ""]
        parts += [f"- `{e['path']}`: {e['error']}" for e in summary["unreadable"]["examples"]]
    return "\n".join(parts) + "\n"
