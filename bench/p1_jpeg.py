"""P1-JPEG: kit's records build from real-size JPEGs (the AI-vs-human size mix) to 64, 224 and 380 px against
``cores`` processes of the naive full-decode OpenCV loop (cv2.imread, cv2.resize INTER_AREA, cv2.imencode) on the
same files, and the PSNR of kit's reduced-scale (DCT) decode + resize against the full decode + the same resize.

kit decodes a JPEG at 1/2, 1/4 or 1/8 scale inside libjpeg when both sides stay at least the target size
(:func:`kit.data.images.decode_with_size`); the loop always decodes every pixel. Module top: stdlib + numpy only
(the loop pool's workers import this module).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import Context, cores, images_per_second, log, row
from bench.p1_build import run_build_process

# (width, height) and weight: the AI-vs-human training set is mostly 768x512 landscape and 512x768 portrait,
# with 768x496, 496x768, 768x576, 576x768 and a few squares.
SIZE_MIX = [((768, 512), 0.40), ((512, 768), 0.25), ((768, 496), 0.10), ((496, 768), 0.08), ((768, 576), 0.07)]
SIZE_MIX += [((576, 768), 0.05), ((768, 768), 0.05)]
TARGETS = (64, 224, 380)
JPEG_QUALITY = 90  # the sources'
PSNR_SAMPLE = 200


def jpeg_image(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """A photo-like BGR image: smooth colour gradients, a few filled shapes with soft edges, sensor-like noise."""
    import cv2

    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase, freq = rng.uniform(0, 2 * np.pi, 3), rng.uniform(40, 160, 2)
    image = np.stack([120 + 80 * np.sin(x / freq[0] + phase[c]) + 40 * np.cos(y / freq[1] - phase[c]) for c in range(3)], -1)
    for _ in range(int(rng.integers(3, 9))):
        colour = rng.uniform(0, 255, 3).tolist()
        if rng.random() < 0.5:
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            cv2.circle(image, centre, int(rng.integers(15, 140)), colour, -1, lineType=cv2.LINE_AA)
        else:
            x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
            cv2.rectangle(image, (x0, y0), (x0 + int(rng.integers(20, 250)), y0 + int(rng.integers(20, 250))), colour, -1)
    image = cv2.GaussianBlur(image, (0, 0), 1.2)
    image += rng.normal(0.0, 4.0, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def ensure_jpegs(folder: Path, count: int) -> list[Path]:
    """``count`` generated JPEGs (quality 90) of the size mix, cached in ``folder``; deterministic in the index."""
    import cv2

    from kit.io import write_json

    marker = folder / ".bench.json"
    with contextlib.suppress(OSError, ValueError, KeyError):
        if json.loads(marker.read_text())["count"] >= count:
            return [folder / f"{i:05d}.jpg" for i in range(count)]
    folder.mkdir(parents=True, exist_ok=True)
    log(f"P1-JPEG: generating {count:,} JPEGs of the AI-vs-human size mix in {folder}")
    sizes, weights = [s for s, _ in SIZE_MIX], np.array([w for _, w in SIZE_MIX])
    picks = np.random.default_rng(19).choice(len(sizes), count, p=weights / weights.sum())
    for i in range(count):
        width, height = sizes[picks[i]]
        ok, data = cv2.imencode(
            ".jpg", jpeg_image(np.random.default_rng(i), width, height), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY]
        )
        if not ok:
            raise RuntimeError("OpenCV could not encode a JPEG")
        (folder / f"{i:05d}.jpg").write_bytes(data.tobytes())
    write_json(marker, {"count": count, "quality": JPEG_QUALITY, "mix": [[list(s), w] for s, w in SIZE_MIX]})
    return [folder / f"{i:05d}.jpg" for i in range(count)]


def naive_loop(job: tuple[list[str], int, str]) -> float:
    """Seconds for one process: cv2.imread (full decode), cv2.resize INTER_AREA, cv2.imencode with OpenCV's
    defaults (PNG; JPEG at kit's data.jpeg_quality 95); ``raw`` records store pixels, so the loop then just
    copies them out (what kit does too)."""
    import cv2

    paths, size, fmt = job
    cv2.setNumThreads(1)  # kit's workers run OpenCV single-threaded
    start = time.perf_counter()
    for path in paths:
        image = cv2.resize(cv2.imread(path, cv2.IMREAD_COLOR), (size, size), interpolation=cv2.INTER_AREA)
        if fmt == "png":
            ok, _ = cv2.imencode(".png", image)
        elif fmt == "jpeg":
            ok, _ = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])
        else:
            ok = bool(image.tobytes())
        if not ok:
            raise RuntimeError(f"OpenCV could not encode {path}")
    return time.perf_counter() - start


def parallel_naive(pool: Any, paths: list[Path], size: int, fmt: str, processes: int) -> float:
    slices = [([str(p) for p in paths[k::processes]], size, fmt) for k in range(processes)]
    start = time.perf_counter()
    pool.map(naive_loop, slices, chunksize=1)
    return time.perf_counter() - start


def psnr(paths: list[Path], size: int) -> dict[str, float]:
    """PSNR (dB) of kit's decode + resize (reduced scale where it applies) against the full decode + INTER_AREA,
    over all pixels of the sample; also the share of files decoded reduced."""
    import cv2

    from kit.data.images import decode_with_size, resize

    squared, pixels, reduced = 0.0, 0, 0
    for path in paths:
        ours, (height, width) = decode_with_size(path, max_side=size)
        reduced += int(ours.shape[0] < height)
        full = cv2.resize(cv2.imread(str(path), cv2.IMREAD_COLOR_RGB), (size, size), interpolation=cv2.INTER_AREA)
        difference = resize(ours, size).astype(np.float64) - full.astype(np.float64)
        squared += float((difference**2).sum())
        pixels += difference.size
    mse = squared / pixels if pixels else 0.0
    return {
        "psnr_db": float(10 * np.log10(255.0**2 / mse)) if mse else float("inf"),
        "reduced_share": reduced / max(1, len(paths)),
    }


def _index(csv: Path, paths: list[Path]) -> None:
    import pandas as pd

    from kit.io import atomic_write

    table = pd.DataFrame(
        {"id": [p.stem for p in paths], "path": [str(p) for p in paths], "label": 0, "split": "train", "fold": -1}
    )
    atomic_write(csv, table.to_csv(index=False))


def section_p1_jpeg(ctx: Context) -> dict:
    n = 120 if ctx.quick else 5000
    n_cores = cores()
    base = ctx.work / "p1-jpeg"
    paths = ensure_jpegs(base / "jpegs", n)
    index_csv = base / f"index-{n}.csv"
    _index(index_csv, paths)
    for path in paths:  # every timed pass finds the files in the page cache
        path.read_bytes()
    # (size, records format): kit's default (auto: raw pixels up to 128 px, PNG above) and JPEG records at q95.
    cases = [(64, "auto"), (224, "auto"), (224, "jpeg"), (380, "auto"), (380, "jpeg")]
    rows, runs = [], []
    pool = multiprocessing.get_context("spawn").Pool(n_cores)
    try:
        parallel_naive(pool, paths[: 4 * n_cores], 64, "png", n_cores)  # start-up of the pool's workers, untimed
        for size, fmt in cases:
            stored = fmt if fmt != "auto" else ("raw" if size <= 128 else "png")
            spec = {"n": n, "classes": 1, "size": size, "records_root": str(base / "records"), "shard_mb": 8.0}
            spec.update(source=str(base / "jpegs"), index=str(index_csv), format=fmt)
            loops, builds = [], []
            for number in range(ctx.sizes.p1_rounds):
                order = ("loop", "build") if number % 2 == 0 else ("build", "loop")
                for step in order:
                    if step == "loop":
                        loops.append(parallel_naive(pool, paths, size, stored, n_cores))
                    else:
                        builds.append(run_build_process(spec, base / f"build-{size}-{fmt}.log"))
            loop_rate = images_per_second(n, float(np.mean(loops)))
            build_rate = images_per_second(n, float(np.mean([b["seconds"] for b in builds])))
            quality = psnr(paths[:PSNR_SAMPLE], size)
            ratio = build_rate / loop_rate if loop_rate else 0.0
            goal = size in (64, 224)
            log(
                f"P1-JPEG {size} px {stored}: kit {build_rate:.0f} img/s, naive x{n_cores} {loop_rate:.0f} img/s, "
                f"ratio {ratio:.2f}, PSNR {quality['psnr_db']:.1f} dB"
            )
            runs.append(
                {
                    "size": size,
                    "format": stored,
                    "build_rate": build_rate,
                    "loop_rate": loop_rate,
                    "ratio": ratio,
                    "loop_seconds": loops,
                    "build_seconds": [b["seconds"] for b in builds],
                    "workers": builds[-1]["workers"],
                    **quality,
                }
            )
            rows.append(
                row(
                    f"{size} px, {stored} records: kit build / {n_cores} naive loops",
                    f"{build_rate:,.0f} / {loop_rate:,.0f} img/s",
                    ">= 2x" if goal else "",
                    ratio,
                    bool(ratio >= 2.0) if goal else None,
                    f"{quality['reduced_share']:.0%} of files decoded at reduced scale",
                )
            )
            rows.append(
                row(
                    f"{size} px: PSNR of kit's decode + resize vs the full decode + INTER_AREA",
                    f"{quality['psnr_db']:.1f} dB",
                    ">= 38 dB",
                    None,
                    bool(quality["psnr_db"] >= 38.0),
                    f"{min(PSNR_SAMPLE, n)} files, all pixels",
                )
            )
    finally:
        pool.terminate()
        pool.join()
    return {
        "title": "P1-JPEG: records from real-size JPEGs",
        "rows": rows,
        "raw": {"runs": runs, "n": n, "cores": n_cores, "mix": SIZE_MIX, "quality": JPEG_QUALITY},
        "plots": [_png(ctx.results / "p1_jpeg.png", runs, n_cores)],
        "notes": [
            f"{n:,} generated JPEGs (quality {JPEG_QUALITY}; smooth gradients, soft-edged shapes, noise) of the AI-vs-human "
            "size mix: " + ", ".join(f"{w}x{h} {p:.0%}" for (w, h), p in SIZE_MIX) + ". Every file is read once before "
            "the timed passes (page cache).",
            f"kit: a records build (`kit records`' build_records, {n_cores} spawn workers, start-up, TFRecord writing, fsyncs "
            f"and the manifest included) in a fresh process. Naive: {n_cores} processes at once (on a pool started beforehand), "
            "each on its slice: cv2.imread, cv2.resize INTER_AREA, cv2.imencode of the records' format with OpenCV's default "
            "PNG settings (JPEG at 95, kit's data.jpeg_quality); raw records are pixels, so neither side encodes. Both run "
            f"OpenCV single-threaded. {ctx.sizes.p1_rounds} alternating round(s) per case (loop, build, build, loop).",
            "kit decodes a JPEG at 1/2, 1/4 or 1/8 scale inside libjpeg when both sides stay >= the target "
            "(kit.data.images.decode_with_size): at 64 px a 768x512 file decodes at 96x64, at 224 px at 384x256; at 380 px "
            "only the 768x768 squares halve (384 >= 380), every other file decodes in full on both sides. PSNR compares "
            "kit's pixels before encoding with the full decode + INTER_AREA of the same file (JPEG records add their own "
            "q95 loss on top).",
        ],
    }


def _png(path: Path, runs: list[dict], n_cores: int) -> str:
    from matplotlib.figure import Figure

    from kit import plots

    fig = Figure(figsize=(8, 3.6), layout="constrained")
    ax = fig.subplots()
    labels = [f"{r['size']} px\n{r['format']}" for r in runs]
    positions = np.arange(len(runs))
    ax.bar(positions - 0.2, [r["build_rate"] for r in runs], 0.4, label="kit records build")
    ax.bar(positions + 0.2, [r["loop_rate"] for r in runs], 0.4, label=f"{n_cores} naive full-decode OpenCV loops")
    for x, r in zip(positions, runs, strict=True):
        ax.annotate(
            f"{r['ratio']:.2f}x\n{r['psnr_db']:.0f} dB",
            (x, max(r["build_rate"], r["loop_rate"])),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_xticks(positions, labels)
    ax.set_ylabel("images/s")
    ax.set_title("P1-JPEG: records from real-size JPEGs (ratio, PSNR of kit's decode)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    ax.margins(y=0.2)
    plots.save(fig, path)
    return path.name
