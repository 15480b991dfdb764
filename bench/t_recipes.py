"""T5: the recipes check (honest defaults): no preset may be tuned to Fashion-MNIST alone.

Each model's current preset and its old one (the overrides the caller passes) are trained on two other tasks and
scored on their hidden test labels:

- digits: the demo competition (scikit-learn's digits, ``kit.data.demo.make_demo_competition``), metric accuracy;
- binary: a generated, Kaggle-shaped "AI vs human" competition (:func:`make_binary_task`), metric F1 of "ai".

Both are trained as ``kit train`` does (``kit.config.load_config`` + ``kit.train.trainer.train``, 32 px via
``comp.image_sizes``) and scored as ``kit predict`` does: the competition YAML lists the hidden labels
(solution.csv) as its labelled test table, so ``kit.predict.predict`` scores the test split itself (with the
preset's ``predict.tta`` and ``predict.threshold``) and writes test_metrics.json. A row passes when the new preset
scores no worse than the old within noise (new >= old - max(:data:`NOISE`, two standard errors of the test accuracy)).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.acc import _rel
from bench.common import GENERATOR_FILE, ROOT, Context, generated_before, log, row, write_comp_yaml

NOISE = 0.005  # "no worse within noise": digits' 360 test images move 0.0028 per image
IMAGE_SIZE = 32
PNG_NAME = "t5_recipes.png"

# The generated binary task. Sizes are (width, height): the mixed aspect ratios kit stretches to 32 px.
BINARY_SIZES = ((48, 64), (64, 48), (56, 56), (72, 40), (40, 72), (64, 64))
BINARY_CLASSES = ["human", "ai"]  # label 0 = human, 1 = ai, as the real competition
AI_FRACTION = 0.4  # a little imbalanced, as real competitions are
LABEL_NOISE = 0.03  # labels flipped at random: the ceiling of any model is below 1
STYLE_SHIFT = 1.65  # the latent "style" of a scene is N(+-STYLE_SHIFT, 1): ~5 % of scenes look like the other class
BINARY_SPLITS = {"train": "train_data", "test": "test_data_v2"}


@dataclasses.dataclass(frozen=True)
class RecipeSizes:
    binary_train: int
    binary_test: int
    epochs: int  # 0: each preset's own epochs


def recipe_sizes(ctx: Context) -> RecipeSizes:
    """Full: 2,400 train + 800 test generated images and each preset's epochs; QUICK: a few hundred, acc_epochs."""
    if ctx.quick:
        return RecipeSizes(300, 100, ctx.sizes.acc_epochs)
    return RecipeSizes(2400, 800, ctx.sizes.acc_epochs)


# ------------------------------------------------------------------------------------------- the binary task


def _scene(rng: np.random.Generator, ai: bool) -> np.ndarray:
    """One BGR scene: a smooth colour field with grain and stripes, and 2-5 anti-aliased shapes.

    The class sets a latent style z ~ N(+-STYLE_SHIFT, 1) that drives three cues at once, all of which survive a
    stretch to 32 px: how often shapes are circles, how saturated their colours are, and how grainy the background
    is (ai: rounder, more saturated, smoother). Scenes whose z falls on the other side look like the other class.
    """
    import cv2

    width, height = BINARY_SIZES[rng.integers(len(BINARY_SIZES))]
    z = rng.normal(STYLE_SHIFT if ai else -STYLE_SHIFT, 1.0)
    field = cv2.resize(rng.uniform(40, 215, (3, 3, 3)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    grain = float(np.clip(18.0 - 6.0 * z, 2.0, 40.0))
    noise = cv2.GaussianBlur(rng.normal(0.0, grain, (height, width, 3)).astype(np.float32), (0, 0), 0.8)
    angle, period = rng.uniform(0, np.pi), rng.uniform(5, 14)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
    stripes = 10.0 * np.sin(2 * np.pi * (xs * np.cos(angle) + ys * np.sin(angle)) / period)
    image = np.clip(field + noise + stripes[..., None], 0, 255).astype(np.uint8)
    p_circle = 1.0 / (1.0 + np.exp(-1.5 * z))
    saturation = float(np.clip(0.55 + 0.2 * z + rng.normal(0, 0.05), 0.1, 1.0))
    side = min(width, height)
    for _ in range(rng.integers(2, 6)):
        hue = rng.uniform(0, 180)
        hsv = np.uint8([[[hue, 255 * saturation, rng.uniform(110, 255)]]])
        colour = tuple(int(c) for c in cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)[0, 0])
        cx, cy = int(rng.integers(0, width)), int(rng.integers(0, height))
        radius = int(rng.uniform(0.12, 0.25) * side)
        if rng.random() < p_circle:
            cv2.circle(image, (cx, cy), radius, colour, -1, cv2.LINE_AA)
        elif rng.random() < 0.5:
            cv2.rectangle(image, (cx - radius, cy - radius), (cx + radius, cy + int(radius * rng.uniform(0.5, 1.5))), colour, -1)
        else:
            corners = np.array([[cx, cy - radius], [cx - radius, cy + radius], [cx + radius, cy + radius]], np.int32)
            cv2.fillPoly(image, [corners], colour, cv2.LINE_AA)
    return image


def make_binary_task(root: Path, n_train: int, n_test: int, seed: int) -> Path:
    """Write a generated "AI vs human" competition under ``root`` and return ``root`` (idempotent per parameters).

    The layout of the real one (DESIGN.md): ``train.csv`` (``Unnamed: 0, file_name, label``, file_name like
    ``train_data/<hex>.jpg``, label 0 = human, 1 = ai), ``test.csv`` (``id`` = ``test_data_v2/<hex>.jpg``),
    ``sample_submission.csv`` (``id,label``), and ``solution.csv`` (``id,label``: the hidden test labels). Images are
    JPEGs (every fourth a PNG) of mixed sizes and aspect ratios; ~40 % ai; LABEL_NOISE of the labels of every split
    flipped. ``generator.json`` records the parameters and the flipped ids. Deterministic for a seed: image k of a
    split is the same whatever n_train / n_test are.
    """
    import cv2
    import pandas as pd

    from kit.io import write_csv, write_json

    root = Path(root)
    params = {"version": 1, "n_train": n_train, "n_test": n_test, "seed": seed, "label_noise": LABEL_NOISE}
    if generated_before(root, params):
        return root
    marker = root / GENERATOR_FILE
    tables: dict[str, pd.DataFrame] = {}
    flipped: dict[str, list[str]] = {}
    for split_number, (split, folder) in enumerate(BINARY_SPLITS.items()):
        count = n_train if split == "train" else n_test
        (root / folder).mkdir(parents=True, exist_ok=True)
        label_rng = np.random.default_rng([seed, split_number])
        clean = (label_rng.random(count) < AI_FRACTION).astype(np.int64)
        noisy = clean.copy()
        flips = label_rng.choice(count, size=int(round(LABEL_NOISE * count)), replace=False)
        noisy[flips] ^= 1
        paths = []
        for i in range(count):
            name = hashlib.sha1(f"{seed}-{split}-{i}".encode()).hexdigest()[:32]
            ext = ".png" if i % 4 == 3 else ".jpg"
            path = f"{folder}/{name}{ext}"
            image = _scene(np.random.default_rng([seed, split_number, i]), bool(clean[i]))
            params_jpeg = [cv2.IMWRITE_JPEG_QUALITY, 92] if ext == ".jpg" else []
            ok, data = cv2.imencode(ext, image, params_jpeg)
            if not ok:
                raise RuntimeError(f"OpenCV could not encode {path}")
            (root / path).write_bytes(data.tobytes())
            paths.append(path)
        tables[split] = pd.DataFrame({"path": paths, "label": noisy})
        flipped[split] = sorted(paths[k] for k in flips)
    train, test = tables["train"], tables["test"]
    write_csv(
        pd.DataFrame({"Unnamed: 0": np.arange(len(train)), "file_name": train["path"], "label": train["label"]}),
        root / "train.csv",
    )
    write_csv(pd.DataFrame({"id": test["path"]}), root / "test.csv")
    write_csv(pd.DataFrame({"id": test["path"], "label": 0}), root / "sample_submission.csv")
    write_csv(pd.DataFrame({"id": test["path"], "label": test["label"]}), root / "solution.csv")
    write_json(marker, {"params": params, "classes": BINARY_CLASSES, "flipped": flipped})
    return root


# ------------------------------------------------------------------------------------------- the check


@dataclasses.dataclass(frozen=True)
class Task:
    key: str  # digits | binary
    yaml_path: Path
    metric: str  # the competition metric the row judges: accuracy | f1


def digits_task(base: Path, models: list[str]) -> Task:
    """The demo competition's data, with configs/competitions/demo.yaml's own settings (flips off, rotation), its
    hidden labels (solution.csv) as the labelled test table, and 32 px for every model."""
    import yaml

    from kit.data.demo import make_demo_competition

    data_root = make_demo_competition(base / "data", size=IMAGE_SIZE)
    demo = yaml.safe_load((ROOT / "configs" / "competitions" / "demo.yaml").read_text())
    comp = {key: value for key, value in demo["comp"].items() if key != "name"}
    comp["test"] = {"csv": comp["solution"], "id_column": "id", "label_column": "label", "image_dir": "test", "image_ext": ".png"}
    comp["image_sizes"] = {m: IMAGE_SIZE for m in models}
    extra = {key: value for key, value in demo.items() if key != "comp"}
    path = write_comp_yaml(base / "comp.yaml", "bench-digits", data_root, comp["classes"], comp=comp, **extra)
    return Task("digits", path, "accuracy")


def binary_task(base: Path, models: list[str], sizes: RecipeSizes) -> Task:
    """The generated binary competition, laid out and configured as configs/competitions/ai-vs-human.yaml (metric F1,
    0/1 labels), its hidden labels (solution.csv) as the labelled test table, and 32 px for every model."""
    data_root = make_binary_task(base / "data", sizes.binary_train, sizes.binary_test, seed=0)
    comp = {
        "train": {"csv": "train.csv", "path_column": "file_name", "label_column": "label"},
        "test": {"csv": "solution.csv", "id_column": "id", "path_column": "id", "label_column": "label"},
        "sample_submission": "sample_submission.csv",
        "solution": "solution.csv",
        "metric": "f1",
        "submission": {"id_column": "id", "label_column": "label", "label_format": "index"},
        "image_sizes": {m: IMAGE_SIZE for m in models},
    }
    path = write_comp_yaml(base / "comp.yaml", "bench-binary", data_root, BINARY_CLASSES, comp=comp)
    return Task("binary", path, "f1")


def epochs_trained(run_dir: Path) -> int:
    """Epochs the run trained (history.csv has one line per epoch; early stopping may end before train.epochs)."""
    import pandas as pd

    return len(pd.read_csv(run_dir / "history.csv"))


def train_and_score(task: Task, model: str, preset_overrides: list[str], epochs: int) -> dict[str, Any]:
    """``kit train`` then ``kit predict`` on ``task``; the predict's own score of the labelled test split
    (test_metrics.json: the preset's TTA and threshold), its accuracy, and the training wall time."""
    from kit.config import load_config
    from kit.data.records import build_from_config
    from kit.predict import TEST_METRICS_FILE, predict
    from kit.train.trainer import train

    overrides = [f"comp={task.yaml_path}", f"model={model}", "train.verbose=2", *preset_overrides]
    if epochs:
        overrides.append(f"train.epochs={epochs}")  # last: beats an old preset's own epochs
    cfg = load_config(overrides)
    manifest = build_from_config(cfg)  # cached between runs of one task; not on the clock
    began = time.perf_counter()
    run_dir = train(cfg, manifest=manifest)
    seconds = time.perf_counter() - began
    submission = predict(cfg, [run_dir])
    metrics = json.loads((submission.parent / TEST_METRICS_FILE).read_text())
    confusion = np.asarray(metrics["confusion_matrix"])
    accuracy = float(np.trace(confusion) / confusion.sum())
    shown = ["kit train", f"comp={_rel(task.yaml_path)}", *overrides[1:]]
    return {
        "task": task.key,
        "model": cfg.model.name,  # an old preset may name another model (the demo's old default)
        "metric": metrics["metric"],
        "score": float(metrics["score"]),
        "accuracy": accuracy,
        "threshold": metrics.get("threshold"),
        "test_examples": int(metrics["examples"]),
        "seconds": seconds,
        "epochs": epochs_trained(run_dir),
        "max_epochs": int(cfg.train.epochs),
        "tta": list(cfg.predict.tta),
        "command": " ".join(shown) + " && kit predict",
        "run_dir": _rel(run_dir),
    }


def _score_text(result: dict[str, Any]) -> str:
    if result["metric"] == "accuracy":
        return f"{result['score']:.4f}"
    return f"{result['metric']} {result['score']:.4f} (accuracy {result['accuracy']:.4f})"


def recipe_row(task: Task, model: str, new: dict[str, Any], old: dict[str, Any] | None) -> dict:
    figure = f"T5 {task.key} {model}: hidden-test {task.metric}, training wall time"
    value = f"new preset {_score_text(new)} in {new['seconds']:.0f} s"
    # The binomial standard error of a test accuracy on this many images: what a rerun may move it by (CPU training
    # is not bit-reproducible; the binary task's 800 images give about +-0.01, the digits' 360 about +-0.004).
    error = float(np.sqrt(new["accuracy"] * (1 - new["accuracy"]) / max(new["test_examples"], 1)))
    note = (
        f"{new['test_examples']} labelled test images (accuracy SE +-{error:.3f}); "
        f"new: {new['epochs']} epochs, tta={new['tta'] or 'none'}"
    )
    if old is None:
        return row(figure, value, "no old preset given", None, None, note)
    named = "" if old["model"] == model else f" ({old['model']})"
    value += f" vs old{named} {_score_text(old)} in {old['seconds']:.0f} s"
    note += f"; old: {old['epochs']} epochs, tta={old['tta'] or 'none'}; ratio = old seconds / new seconds"
    # No worse within noise: NOISE, or two standard errors where the test set is small enough to move more.
    tolerance = max(NOISE, 2 * error)
    passed = new["score"] >= old["score"] - tolerance
    speedup = old["seconds"] / new["seconds"] if new["seconds"] > 0 else None
    return row(figure, value, f"new >= old - {tolerance:.3f}", speedup, passed, note)


def recipes_png(path: Path, results: list[dict[str, Any]], quick: bool) -> str:
    """Grouped bars: one group per task x model, the new and the old preset's hidden-test score, seconds on each bar."""
    from matplotlib.figure import Figure

    from kit import plots

    groups = list(dict.fromkeys((r["task"], r["slot"]) for r in results))  # slot: the row's model (an old may differ)
    fig = Figure(figsize=(max(6.0, 1.6 * len(groups) + 2), 4.4), layout="constrained")
    ax = fig.subplots()
    width = 0.38
    for offset, (preset, colour) in enumerate((("new", "tab:blue"), ("old", "tab:grey"))):
        for g, (task, model) in enumerate(groups):
            found = [r for r in results if (r["task"], r["slot"], r["preset"]) == (task, model, preset)]
            if not found:
                continue
            r = found[0]
            x = g + (offset - 0.5) * width
            bar = ax.bar(
                [x],
                [r["score"]],
                width,
                color=colour,
                label=f"{preset} preset",  # one legend entry per preset: duplicates are dropped below
            )
            name = f"{r['model']}\n" if r["model"] != model else ""  # an old preset of another model says which
            ax.bar_label(bar, labels=[f"{name}{r['score']:.3f}\n{r['seconds']:.0f} s"], fontsize=7, padding=2)
    ax.set_xticks(range(len(groups)), [f"{task} ({'F1' if task == 'binary' else 'accuracy'})\n{model}" for task, model in groups])
    lowest = min((r["score"] for r in results), default=0.0)
    ax.set_ylim(max(0.0, lowest - 0.1), 1.05)
    ax.set_ylabel("hidden-test score (as kit predict scores it)")
    ax.set_title(f"T5 recipes check: new vs old presets, training seconds on the bars{' (QUICK)' if quick else ''}")
    ax.grid(axis="y", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles, strict=True))
    fig.legend(unique.values(), unique.keys(), fontsize=8, loc="outside lower center", ncols=2)  # off the bars
    plots.save(fig, path)
    return path.name


def recipe_check(ctx: Context, models: list[str], old_presets: dict[str, list[str]]) -> tuple[list[dict], dict]:
    """T5: for digits and the generated binary task, each model's current preset and (where ``old_presets`` has the
    model) its old one, as ``kit train`` + ``kit predict`` run them; (rows, raw). Writes ctx.results/t5_recipes.png."""
    sizes = recipe_sizes(ctx)
    base = ctx.work / ("t5-recipes-quick" if ctx.quick else "t5-recipes")
    tasks = [digits_task(base / "digits", models), binary_task(base / "binary", models, sizes)]
    rows, results = [], []
    for task in tasks:
        for model in models:
            log(f"T5 {task.key} {model}: new preset")
            new = {**train_and_score(task, model, [], sizes.epochs), "preset": "new", "overrides": [], "slot": model}
            results.append(new)
            old = None
            if model in old_presets:
                log(f"T5 {task.key} {model}: old preset {old_presets[model]}")
                old = {**train_and_score(task, model, old_presets[model], sizes.epochs), "preset": "old", "slot": model}
                old["overrides"] = list(old_presets[model])
                results.append(old)
            rows.append(recipe_row(task, model, new, old))
            log(f"T5 {task.key} {model}: {rows[-1]['value']}")
    ctx.results.mkdir(parents=True, exist_ok=True)
    png = recipes_png(ctx.results / PNG_NAME, results, ctx.quick)
    raw = {
        "sizes": dataclasses.asdict(sizes),
        "noise": NOISE,
        "image_size": IMAGE_SIZE,
        "tasks": {t.key: {"comp_yaml": _rel(t.yaml_path), "metric": t.metric} for t in tasks},
        "binary_generator": {"ai_fraction": AI_FRACTION, "label_noise": LABEL_NOISE, "style_shift": STYLE_SHIFT},
        "results": results,
        "plot": png,
    }
    return rows, raw
