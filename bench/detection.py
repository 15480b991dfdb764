"""Section D (AI-image detection), its two generated rows; D-cifake is in :mod:`bench.cifake`.

- **D-TRACE**: the generated high-resolution task of :mod:`bench.trace_task` (the "AI" class carries only a 2x
  upsampling trace; sizes and JPEG qualities drawn alike for both classes), trained as ``kit train`` does and scored as
  ``kit predict`` scores a labelled test split, one model family and size, the same epochs: ``data.resize=stretch``
  against ``crop``, ``crop`` + a stride-1 stem and ``crop`` + the residual and spectrum inputs. PASS when every
  crop-based variant beats stretch by more than two standard errors of the difference.
- **D-RECORDS**: records of P1-JPEG's generated JPEGs (the AI-vs-human size mix) built with ``data.resize=crop`` at
  ``data.max_side=768`` against ``stretch``, at 224 and 380 px: build img/s, disk MB, and the P2-380 training
  pipeline's img/s (flip + colour jitter + CutMix, batch 32) on each; and the crop build against ``cores`` naive
  OpenCV loops writing the same native-size PNGs.
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import tempfile
import time
from pathlib import Path

from bench.common import Context, cores, images_per_second, log, row, write_comp_yaml

TRACE_MODEL, TRACE_SIZE, TRACE_SEED = "resnet9", 64, 0
# Settings every variant shares: the model and its size (comp.image_sizes), a stem of stride 2 (the options below turn
# it off), a batch that gives a few hundred images enough steps, and a centre crop at inference.
TRACE_COMMON = ("model.options.stem_stride=2", "train.batch_size=32", "predict.crops=1")
CROP = ("data.resize=crop", "data.max_side=768")
# (name, overrides): one option changed at a time; each row is a table line, not a branch.
TRACE_VARIANTS = (
    ("stretch", ("data.resize=stretch",)),
    ("crop", CROP),
    ("crop + stride-1 stem", (*CROP, "model.options.stem_stride=1")),
    ("crop + residual/fft inputs", (*CROP, "model.options.inputs=[rgb,residual,fft]")),
)


@dataclasses.dataclass(frozen=True)
class TraceSizes:
    train: int
    test: int
    epochs: int  # 0: the model preset's own (resnet9: 12)


def trace_sizes(quick: bool) -> TraceSizes:
    return TraceSizes(48, 24, 1) if quick else TraceSizes(480, 240, 0)


def accuracy_error(accuracy: float, count: int) -> float:
    """The binomial standard error of an accuracy measured on ``count`` images."""
    return math.sqrt(max(accuracy * (1 - accuracy), 0.0) / max(count, 1))


def trace_rows(results: list[dict]) -> list[dict]:
    """One row per variant: test accuracy and training wall time; a crop-based variant passes when it beats the first
    (stretch) by more than two standard errors of the difference, the margin in points beside it."""
    baseline = results[0]
    rows = []
    for result in results:
        value = f"{result['accuracy']:.2%} in {result['seconds']:.0f} s"
        note = f"{result['test_examples']} test images, {result['epochs']} epochs; `{result['command']}`"
        if result is baseline:
            rows.append(row(f"D-trace {result['variant']}: test accuracy, training wall time", value, note=note))
            continue
        margin = result["accuracy"] - baseline["accuracy"]
        error = math.hypot(
            accuracy_error(result["accuracy"], result["test_examples"]),
            accuracy_error(baseline["accuracy"], baseline["test_examples"]),
        )
        rows.append(
            row(
                f"D-trace {result['variant']}: test accuracy, training wall time",
                f"{value}; {margin * 100:+.1f} points over {baseline['variant']}",
                f"> {baseline['variant']} + 2 SE ({2 * error * 100:.1f} points)",
                result["seconds"] / baseline["seconds"] if baseline["seconds"] else None,
                margin > 2 * error,
                f"{note}; ratio = its seconds / {baseline['variant']}'s",
            )
        )
    return rows


def section_d_trace(ctx: Context) -> dict:
    from bench.t_recipes import Task, train_and_score
    from bench.trace_task import CLASSES, QUALITIES, SIZES, make_trace_task

    sizes = trace_sizes(ctx.quick)
    results = []
    with tempfile.TemporaryDirectory(prefix="kit-bench-trace-") as temp:  # the images and records: outside the repo
        base = Path(temp)
        log(f"D-TRACE: generating {sizes.train} + {sizes.test} images in {base}")
        began = time.perf_counter()
        data_root = make_trace_task(base / "data", sizes.train, sizes.test, TRACE_SEED)
        generated = time.perf_counter() - began
        yaml_path = write_comp_yaml(
            base / "comp.yaml",
            "bench-trace" + ("-quick" if ctx.quick else ""),
            data_root,
            CLASSES,
            test=True,
            comp={"image_sizes": {TRACE_MODEL: TRACE_SIZE}},
            run={"root": str(ctx.work / "d-trace" / "runs")},
        )
        task = Task("trace", yaml_path, "accuracy")
        for variant, overrides in TRACE_VARIANTS:
            log(f"D-TRACE {variant}")
            result = train_and_score(task, TRACE_MODEL, [*TRACE_COMMON, *overrides], sizes.epochs)
            result["command"] = result["command"].replace(str(yaml_path), "<temp>/comp.yaml")
            results.append({**result, "variant": variant})
            log(f"D-TRACE {variant}: {result['accuracy']:.2%} in {result['seconds']:.0f} s")
    rows = trace_rows(results)
    title = "D-TRACE: a resampling trace at 512-768 px, stretch vs crops (resnet9, 64 px)"
    notes = [
        f"{sizes.train} train / {sizes.test} test generated JPEGs (bench/trace_task.py, seed {TRACE_SEED}), half 'ai': a "
        "scene drawn at half size and upsampled 2x (nearest or a transposed-convolution-like kernel), half 'real': the "
        f"same scene generator at full size. Sizes {', '.join(f'{w}x{h}' for w, h in SIZES)} and JPEG qualities "
        f"{', '.join(map(str, QUALITIES))} drawn alike for both classes. Generated in {generated:.0f} s into a temporary "
        "folder outside the repository (removed after).",
        f"Every variant: `model={TRACE_MODEL}` at {TRACE_SIZE} px (its preset: SGD one-cycle, label smoothing, flip and "
        f"shift augmentation, flip TTA), {results[0]['epochs']} epochs, `{' '.join(TRACE_COMMON)}`, then one change: the rows "
        "say which. Stretch sees the whole image squeezed to 64 px; crop sees 64 px windows at native resolution "
        "(random in training, the centre at test). Accuracy as `kit predict` scores the labelled test split; "
        "wall time is training only (kit.train.trainer.train), records not counted.",
        "Not tuned to this task: the model preset is kit's own. The generator was fixed before the first full-size run; "
        "that probe (6 epochs) left plain crops at chance, so the epochs went back to the preset's own 12; nothing "
        "else was changed after seeing a result.",
    ]
    png = trace_png(ctx.results / "d_trace.png", results, ctx.quick)
    raw = {"sizes": dataclasses.asdict(sizes), "results": results}
    return {"title": title, "rows": rows, "raw": raw, "plots": [png], "notes": notes}


def trace_png(path: Path, results: list[dict], quick: bool) -> str:
    from matplotlib.figure import Figure

    from kit import plots

    fig = Figure(figsize=(8, 4.2), layout="constrained")
    ax = fig.subplots()
    names = [r["variant"] for r in results]
    bars = ax.bar(range(len(results)), [r["accuracy"] for r in results], color=["tab:grey"] + ["tab:blue"] * (len(results) - 1))
    ax.bar_label(bars, labels=[f"{r['accuracy']:.1%}\n{r['seconds']:.0f} s" for r in results], fontsize=8, padding=2)
    ax.axhline(0.5, color="red", linestyle=":", label="chance")
    ax.set_xticks(range(len(results)), names, fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("test accuracy (training seconds on the bars)")
    ax.set_title(f"D-trace: upsampling trace, same model and epochs{' (QUICK)' if quick else ''}")
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(axis="y", alpha=0.3)
    plots.save(fig, path)
    return path.name


# ------------------------------------------------------------------------------------------------- D-RECORDS

NATIVE_MAX_SIDE = 768  # data.max_side of the native-size records (and of the naive loops set against them)
RECORDS_POLICIES = (("stretch", ("stretch", NATIVE_MAX_SIDE)), ("crop768", ("crop", NATIVE_MAX_SIDE)))


def folder_megabytes(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


def records_case(ctx: Context, base: Path, paths: list[Path], size: int, policy: str, max_side: int) -> dict:
    """One records build from scratch (timed), its size on disk, and the P2-380 pipeline's img/s on it."""
    from bench.p2_380 import build, records_config, time_pipeline
    from kit.data.manifest import records_dir

    cfg = records_config(base, size, "png")
    cfg.data = dataclasses.replace(cfg.data, resize=policy, max_side=max_side)
    shutil.rmtree(records_dir(cfg), ignore_errors=True)  # a build from nothing, every run
    began = time.perf_counter()
    manifest = build(cfg, paths)
    seconds = time.perf_counter() - began
    count, skip = (4, 2) if ctx.quick else (40, 8)
    rate = time_pipeline(cfg, manifest, skip, count)
    return {
        "size": size,
        "policy": policy,
        "images": len(paths),
        "build_seconds": seconds,
        "build_rate": images_per_second(len(paths), seconds),
        "disk_mb": folder_megabytes(records_dir(cfg)),
        "pipeline_rate": rate,
        "folder": records_dir(cfg).parent.name,  # the size folder (224, 224-crop768); below it, the split plan
    }


def naive_native_loop(job: tuple[list[str], int]) -> int:
    """One process of the naive loop for native-size records: cv2.imread (full decode), the longer side shrunk to
    ``max_side`` with INTER_AREA where it is longer, cv2.imencode PNG (OpenCV's defaults); returns the bytes encoded."""
    import cv2

    paths, max_side = job
    cv2.setNumThreads(1)  # as kit's workers
    encoded = 0
    for path in paths:
        image = cv2.imread(path, cv2.IMREAD_COLOR)
        height, width = image.shape[:2]
        if max(height, width) > max_side:
            scale = max_side / max(height, width)
            image = cv2.resize(image, (round(width * scale), round(height * scale)), interpolation=cv2.INTER_AREA)
        ok, png = cv2.imencode(".png", image)
        if not ok:
            raise RuntimeError(f"OpenCV could not encode {path}")
        encoded += len(png)
    return encoded


def naive_native_rate(paths: list[Path], max_side: int) -> float:
    """img/s of ``cores`` naive loops over ``paths``, the spawn pool's start-up timed as kit's build times its own."""
    import multiprocessing

    processes = cores()
    slices = [([str(p) for p in paths[k::processes]], max_side) for k in range(processes)]
    began = time.perf_counter()
    with multiprocessing.get_context("spawn").Pool(processes) as pool:
        pool.map(naive_native_loop, slices, chunksize=1)
    return images_per_second(len(paths), time.perf_counter() - began)


def section_d_records(ctx: Context) -> dict:
    from bench.p1_jpeg import ensure_jpegs

    n = 32 if ctx.quick else 400
    paths = ensure_jpegs(ctx.work / "p1-jpeg" / "jpegs", n)
    for path in paths:  # every build finds the files in the page cache
        path.read_bytes()
    cases = []
    with tempfile.TemporaryDirectory(prefix="kit-bench-records-") as temp:
        for size in (224, 380):
            for label, (policy, max_side) in RECORDS_POLICIES:
                log(f"D-RECORDS: {n} records at {size} px, {label}")
                case = records_case(ctx, Path(temp), paths, size, policy, max_side)
                cases.append({**case, "label": label})
                log(
                    f"  build {case['build_rate']:.1f} img/s, {case['disk_mb']:.0f} MB, "
                    f"pipeline {case['pipeline_rate']:.0f} img/s"
                )
    naive_rate = naive_native_rate(paths, NATIVE_MAX_SIDE)
    log(f"D-RECORDS: naive loops at native size (max side {NATIVE_MAX_SIDE}), PNG: {naive_rate:.1f} img/s")
    return {
        "title": "D-RECORDS: records at native size (crop, max_side 768) vs stretched",
        "rows": [*records_rows(cases), naive_row(cases, naive_rate)],
        "raw": {"cases": cases, "naive_native_rate": naive_rate},
        "plots": [records_png(ctx.results / "d_records.png", cases, naive_rate, ctx.quick)],
        "notes": [
            f"{n:,} of P1-JPEG's generated JPEGs (the AI-vs-human size mix, mostly 768x512), 2 classes, PNG records "
            "(data.image_format=png: lossless, as detection work wants), each build from an empty folder "
            "(kit.data.records.build_records: spawn pool, decode, resize or not, encode, write; pool start-up included).",
            "Pipeline: kit.data.pipeline.make_dataset(training=True), batch 32, flip + colour jitter 0.2 + CutMix "
            "(P2-380's settings); with crop it decodes the native-size record and cuts a random window of the model's "
            "size. img/s over the timed batches after the skipped ones, a fresh iterator per case.",
            f"Naive loop: {cores()} processes (a spawn pool, its start-up timed as kit's) of cv2.imread, the longer "
            "side shrunk to 768 px with INTER_AREA, cv2.imencode PNG: the same native-size images kit's crop records "
            "store, without kit's records (no TFRecord framing, labels or manifest).",
            "Command: `python -m bench --only D-RECORDS`.",
        ],
    }


def records_rows(cases: list[dict]) -> list[dict]:
    """Per size: the crop build and pipeline against stretch's, as ratios (crop / stretch)."""
    rows = []
    for size in sorted({c["size"] for c in cases}):
        stretch, crop = ([c for c in cases if c["size"] == size and c["policy"] == p][0] for p in ("stretch", "crop"))
        ratio = crop["build_rate"] / stretch["build_rate"] if stretch["build_rate"] else None
        rows.append(
            row(
                f"D-records {size} px: build img/s, crop768 / stretch",
                f"{crop['build_rate']:,.1f} / {stretch['build_rate']:,.1f}",
                ratio=ratio,
                note=f"{crop['images']} images; folders {crop['folder']}, {stretch['folder']}",
            )
        )
        rows.append(
            row(
                f"D-records {size} px: disk MB, crop768 / stretch",
                f"{crop['disk_mb']:,.0f} / {stretch['disk_mb']:,.0f}",
                ratio=crop["disk_mb"] / stretch["disk_mb"] if stretch["disk_mb"] else None,
                note=f"{crop['disk_mb'] * 1024 / crop['images']:,.0f} KB per image at native size",
            )
        )
        rows.append(
            row(
                f"D-records {size} px: pipeline img/s, crop768 / stretch",
                f"{crop['pipeline_rate']:,.0f} / {stretch['pipeline_rate']:,.0f}",
                ratio=crop["pipeline_rate"] / stretch["pipeline_rate"] if stretch["pipeline_rate"] else None,
                note="flip + colour jitter + CutMix, batch 32",
            )
        )
    return rows


def naive_row(cases: list[dict], naive_rate: float) -> dict:
    """kit's crop build (the faster of its sizes: the records are the same native-size images) against the naive loops."""
    crop = max((c for c in cases if c["policy"] == "crop"), key=lambda c: c["build_rate"])
    return row(
        "D-records crop768: build img/s, kit / naive loops",
        f"{crop['build_rate']:,.1f} / {naive_rate:,.1f}",
        ratio=crop["build_rate"] / naive_rate if naive_rate else None,
        note=f"{crop['images']} images, PNG at native size (longer side <= 768); kit's build at {crop['size']} px",
    )


def records_png(path: Path, cases: list[dict], naive_rate: float, quick: bool) -> str:
    from matplotlib.figure import Figure

    from kit import plots

    fig = Figure(figsize=(10, 3.6), layout="constrained")
    panels = fig.subplots(1, 3)
    labels = [f"{c['size']} px\n{c['label']}" for c in cases]
    colours = ["tab:grey" if c["policy"] == "stretch" else "tab:blue" for c in cases]
    for ax, key, ylabel in zip(
        panels,
        ("build_rate", "disk_mb", "pipeline_rate"),
        ("records build img/s", "records on disk (MB)", "pipeline img/s (batch 32)"),
        strict=True,
    ):
        bars = ax.bar(range(len(cases)), [c[key] for c in cases], color=colours)
        ax.bar_label(bars, labels=[f"{c[key]:,.0f}" for c in cases], fontsize=7, padding=2)
        ax.set_xticks(range(len(cases)), labels, fontsize=7)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    panels[0].axhline(naive_rate, color="tab:red", linestyle="--", label=f"naive loops, native size: {naive_rate:,.0f}")
    panels[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"D-records: {cases[0]['images']} JPEGs, native-size crop records vs stretched{' (QUICK)' if quick else ''}")
    plots.save(fig, path)
    return path.name
