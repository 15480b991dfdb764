"""D-CIFAKE: CIFAKE (32x32 REAL/FAKE, 100,000 train and 20,000 labelled test images) trained as ``kit train
comp=cifake model=resnet9`` does (the quick baseline), then with each detection option turned on or off, scored as
``kit predict`` scores the labelled test split; wall time in E (one bare ResNet20 epoch over the same training images,
measured in the same run, :func:`bench.time_to_accuracy.measure_epoch_unit`). Goal: >= 98.0 % test accuracy within
10 E.

The data is not downloaded by the bench: ``--cifake-dir`` or ``KIT_CIFAKE_DIR`` names a folder holding ``train/REAL``,
``train/FAKE``, ``test/REAL`` and ``test/FAKE`` (:data:`HOW_TO_GET`). QUICK mode trains on a seeded subset copied into
the work folder (2,500 train and 1,000 test images per class) for one epoch: it proves the path, not the goal.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.common import ROOT, Context, NothingToMeasure, log, row, write_comp_yaml

ENV_VAR = "KIT_CIFAKE_DIR"
CLASSES = ["REAL", "FAKE"]
HOW_TO_GET = (
    f"set {ENV_VAR} (or --cifake-dir) to a folder with train/REAL, train/FAKE, test/REAL, test/FAKE: e.g. the public copy "
    "github.com/a-rea/CIFAKE-CPSC542 (`git clone --depth 1 https://github.com/a-rea/CIFAKE-CPSC542 /data/cifake-repo && "
    "git --git-dir=/data/cifake-repo/.git archive HEAD train test | tar -x -C /data/cifake`), or Kaggle's "
    "birdy654/cifake-real-and-ai-generated-synthetic-images (`kit data comp=cifake`)"
)
GOAL_ACCURACY, GOAL_E = 0.98, 10.0
DEGRADATIONS = (  # configs/detection/cpu.yaml's degradations, on both classes alike
    "augment.jpeg=0.3",
    "augment.jpeg_min_quality=60",
    "augment.blur=0.2",
    "augment.blur_max_sigma=1.5",
    "augment.noise=0.2",
    "augment.noise_max_std=5",
    "augment.resample=0.2",
)
# (key, name, model, overrides): the quick baseline as it is, then one option turned on (or, where the baseline has
# it, off). data.resize=crop is left out: CIFAKE's images are all 32x32, the model's size, so a crop is the image itself.
VARIANTS = (
    ("baseline", "quick baseline", "resnet9", ()),
    ("stride2", "stem stride 2 (stride-1 off)", "resnet9", ("model.options.stem_stride=2",)),
    ("streams", "+ residual/fft inputs", "resnet9", ("model.options.inputs=[rgb,residual,fft]",)),
    ("degradations", "+ degradations", "resnet9", DEGRADATIONS),
    ("preset", "detection cpu preset", str(ROOT / "configs" / "detection" / "cpu.yaml"), ()),
)
VARIANT_KEYS = tuple(key for key, *_ in VARIANTS)


@dataclasses.dataclass(frozen=True)
class CifakeSizes:
    train_per_class: int  # 0: every image
    test_per_class: int
    epochs: int  # 0: each preset's own


def cifake_sizes(quick: bool) -> CifakeSizes:
    return CifakeSizes(2500, 1000, 1) if quick else CifakeSizes(0, 0, 0)


def find_cifake(given: Path | None) -> Path:
    """The CIFAKE folder from ``--cifake-dir`` or :data:`ENV_VAR`; nothing to measure (and how to get it) without."""
    folder = given or (Path(os.environ[ENV_VAR]) if os.environ.get(ENV_VAR) else None)
    if folder is None:
        raise NothingToMeasure(f"D-CIFAKE: no CIFAKE data given; {HOW_TO_GET}")
    missing = [f"{split}/{name}" for split in ("train", "test") for name in CLASSES if not (folder / split / name).is_dir()]
    if missing:
        raise NothingToMeasure(f"D-CIFAKE: {folder} lacks {', '.join(missing)}; {HOW_TO_GET}", failed=True)
    return folder


def subset(source: Path, target: Path, sizes: CifakeSizes) -> Path:
    """A seeded subset of CIFAKE copied into ``target`` (kept between runs); ``source`` itself when sizes say all."""
    if not sizes.train_per_class:
        return source
    marker = target / ".bench-subset"
    wanted = f"{source} {sizes.train_per_class} {sizes.test_per_class}"
    if marker.is_file() and marker.read_text() == wanted:
        return target
    shutil.rmtree(target, ignore_errors=True)
    rng = np.random.default_rng(0)
    for split, per_class in (("train", sizes.train_per_class), ("test", sizes.test_per_class)):
        for name in CLASSES:
            files = sorted(p for p in (source / split / name).iterdir() if p.is_file())
            (target / split / name).mkdir(parents=True)
            for k in sorted(rng.choice(len(files), min(per_class, len(files)), replace=False)):
                shutil.copyfile(files[k], target / split / name / files[k].name)
    marker.write_text(wanted)
    return target


def cifake_yaml(base: Path, data_root: Path, name: str) -> Path:
    """configs/competitions/cifake.yaml's competition with its data at ``data_root``, records and runs under ``base``."""
    import yaml

    preset = yaml.safe_load((ROOT / "configs" / "competitions" / "cifake.yaml").read_text())
    comp = {k: v for k, v in preset["comp"].items() if k not in ("name", "slug", "source", "classes", "train", "test")}
    return write_comp_yaml(base / "comp.yaml", name, data_root, preset["comp"]["classes"], test=True, comp=comp)


def measure_e(yaml_path: Path, quick: bool) -> dict[str, Any]:
    """E over the training images of the competition's records (its val split held out, as kit train's)."""
    from bench.time_to_accuracy import measure_epoch_unit, split_arrays
    from kit.config import load_config
    from kit.data.records import build_from_config

    cfg = load_config([f"comp={yaml_path}", "model=resnet20"])
    x, y = split_arrays(cfg, build_from_config(cfg), "train")
    return measure_epoch_unit(cfg, x, y, epochs=2 if quick else 3)


def cifake_row(result: dict) -> dict:
    """One variant: test accuracy, wall time in minutes and in E (the E of the run that trained it), against the goal;
    a variant carried over from an earlier run says when it was measured."""
    e_seconds = result["e_seconds"]
    e_units = result["seconds"] / e_seconds if e_seconds else float("inf")
    passed = result["accuracy"] >= GOAL_ACCURACY and e_units <= GOAL_E
    measured = f"; measured {result['measured']}, E = {e_seconds:.0f} s then" if result.get("carried") else ""
    return row(
        f"D-cifake {result['variant']}: test accuracy, training wall time",
        f"{result['accuracy']:.2%} in {result['seconds'] / 60:.1f} min = {e_units:.1f} E",
        f">= {GOAL_ACCURACY:.1%} in <= {GOAL_E:g} E",
        None,
        passed,
        f"{result['test_examples']:,} test images, {result['epochs']} epochs, tta={result['tta'] or 'none'}; "
        f"`{result['command']}`{measured}",
    )


def wanted_variants(keys: tuple[str, ...]) -> list[tuple[str, str, str, tuple[str, ...]]]:
    """The variants ``--cifake-variants`` names (all when none); an unknown key is refused with the known ones."""
    unknown = [key for key in keys if key not in VARIANT_KEYS]
    if unknown:
        known = ", ".join(VARIANT_KEYS)
        raise NothingToMeasure(f"D-CIFAKE: unknown variant(s) {', '.join(unknown)}; choose among {known}", failed=True)
    return [v for v in VARIANTS if not keys or v[0] in keys]


def earlier_results(ctx: Context, data_root: Path) -> dict[str, dict]:
    """The variants the last d-cifake.json measured on the same data, by key: kept beside a run of some variants."""
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        last = json.loads((ctx.results / "d-cifake.json").read_text())
        if last["raw"].get("data_root") == str(data_root):
            return {r["key"]: {**r, "carried": True} for r in last["raw"]["results"] if "key" in r and "e_seconds" in r}
    return {}


def section_d_cifake(ctx: Context) -> dict:
    from bench.t_recipes import Task, train_and_score

    source = find_cifake(ctx.cifake_dir)
    sizes = cifake_sizes(ctx.quick)
    chosen = wanted_variants(ctx.cifake_variants)
    base = ctx.work / ("d-cifake-quick" if ctx.quick else "d-cifake")
    data_root = subset(source, base / "data", sizes)
    yaml_path = cifake_yaml(base, data_root, "bench-cifake" + ("-quick" if ctx.quick else ""))
    log(f"D-CIFAKE: E = one bare model.fit epoch of ResNet20 over the training images of {data_root}")
    unit = measure_e(yaml_path, ctx.quick)
    log(f"D-CIFAKE: E = {unit['seconds']:.1f} s")
    measured = time.strftime("%Y-%m-%d %H:%M")
    by_key = earlier_results(ctx, data_root) if ctx.cifake_variants else {}
    task = Task("cifake", yaml_path, "f1")

    def result_so_far() -> dict:
        done = [by_key[key] for key in VARIANT_KEYS if key in by_key]
        return assemble(ctx, unit, sizes, source, data_root, done)

    for key, variant, model, overrides in chosen:
        log(f"D-CIFAKE {variant}")
        began = time.perf_counter()
        result = {**train_and_score(task, model, list(overrides), sizes.epochs), "variant": variant, "key": key}
        result.update(command=result["command"].replace(str(ROOT) + "/", ""), e_seconds=unit["seconds"], measured=measured)
        by_key[key] = result
        log(f"D-CIFAKE {variant}: {cifake_row(result)['value']} ({time.perf_counter() - began:.0f} s with records and predict)")
        if ctx.save is not None:  # a run stopped part-way keeps the variants it finished
            ctx.save(result_so_far())
    return result_so_far()


def assemble(ctx: Context, unit: dict, sizes: CifakeSizes, source: Path, data_root: Path, results: list[dict]) -> dict:
    """The section's result from the variants measured so far (this run's and any carried over)."""
    e_figure = "E: one bare model.fit epoch of ResNet20, 32 px, batch 64"
    rows = [row(e_figure, f"{unit['seconds']:.1f} s", note=f"{unit['images']:,} images")]
    rows += [cifake_row(result) for result in results]
    test_images = results[0]["test_examples"] if results else 0
    notes = [
        f"CIFAKE from {'a seeded subset of ' if sizes.train_per_class else ''}{source.name} "
        f"({test_images:,} labelled test images), the competition of "
        "configs/competitions/cifake.yaml (20 % of train held out as val by kit). Each variant is `kit train` with the "
        "overrides shown, then `kit predict` scoring the test split (the preset's TTA and threshold).",
        "E = the steady seconds of one bare model.fit epoch of ResNet20 (kit's builder, SGD momentum 0.9, batch 64, no "
        "augmentation) over the same training images in memory, measured in the run that trained the variant; "
        "`x E` = training wall time / E. `--cifake-variants` runs some variants and keeps the others from the last run "
        f"on the same data (keys: {', '.join(VARIANT_KEYS)}).",
        "data.resize=crop is not a row: CIFAKE's images are all 32x32, so a crop at the model's size is the whole image.",
    ]
    if ctx.quick:
        notes.insert(
            0,
            f"QUICK: {sizes.train_per_class:,} train / {sizes.test_per_class:,} test images per class, "
            f"{sizes.epochs} epoch(s): proves the path, not the goal.",
        )
    raw = {"e": unit, "sizes": dataclasses.asdict(sizes), "data_root": str(data_root), "results": results}
    png = cifake_png(ctx.results / "d_cifake.png", results, ctx.quick)
    return {
        "title": "D-CIFAKE: CIFAKE test accuracy and wall time in E, option by option",
        "rows": rows,
        "raw": raw,
        "plots": [png],
        "notes": notes,
    }


def cifake_png(path: Path, results: list[dict], quick: bool) -> str:
    from matplotlib.figure import Figure

    from kit import plots

    fig = Figure(figsize=(8, 4.4), layout="constrained")
    ax = fig.subplots()
    for result in results:
        e_units = result["seconds"] / result["e_seconds"] if result["e_seconds"] else 0.0
        ax.plot([e_units], [result["accuracy"]], marker="o", linestyle="none", label=result["variant"])
    ax.axhline(GOAL_ACCURACY, color="red", linestyle=":", label=f"goal {GOAL_ACCURACY:.0%}")
    ax.axvline(GOAL_E, color="red", linestyle="--", label=f"goal {GOAL_E:g} E")
    ax.set_xlabel("training wall time (E: bare ResNet20 epochs over the same images)")
    ax.set_ylabel("test accuracy")
    ax.set_xlim(left=0)
    ax.set_title(f"D-cifake: option by option{' (QUICK: subset, 1 epoch, not the benchmark)' if quick else ''}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    plots.save(fig, path)
    return path.name
