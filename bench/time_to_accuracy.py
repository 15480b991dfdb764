"""T: time to accuracy. Fashion-MNIST test accuracy against training wall time for each model's preset,
in minutes and in E, the seconds of one bare ``model.fit`` epoch of ResNet20 over the same training images
measured in the same run (machines differ by 3x; E cancels most of it), plus the ``kit demo`` pipeline.

Rows: T1 resnet20, T2 cnn, T4 the fastest scratch preset (``--t-fast-model``, default resnet9; skipped with a
note when kit's registry lacks it), each trained with kit's own entry point (``kit.train.trainer.train``, as
``kit train`` does) on the records of the ACC section's Fashion-MNIST folder; T3 ``kit demo`` run as a command.
A callback placed after kit's own evaluates the test split at every epoch end; its time is kept off the clock,
so the curve is test accuracy against the training wall time a user would see without it.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.acc import FASHION_CLASSES, _rel, ensure_fashion_folders, score_test_split
from bench.common import BATCH, ROOT, Context, epoch_clock, log, row, steady_seconds, write_comp_yaml
from bench.report import write_result
from bench.t_recipes import recipe_check

COMP_NAME = "bench-fashion-mnist"  # the ACC section's competition: the same records
QUICK_BASELINE_BEFORE = ("model=resnet20",)  # T5's old: the quick baseline (kit demo's model) before ResNet-9


@dataclass(frozen=True)
class Goal:
    key: str
    model: str
    accuracy: float
    minutes: float
    e_units: float

    def text(self) -> str:
        return f">= {self.accuracy:.1%} in <= {self.minutes:g} min and <= {self.e_units:g} E"


DEMO_GOAL_ACCURACY, DEMO_GOAL_SECONDS = 0.98, 60.0


def goals(fast_model: str) -> list[Goal]:
    return [
        Goal("T1", "resnet20", 0.945, 20, 10),
        Goal("T2", "cnn", 0.93, 8, 4),
        Goal("T4", fast_model, 0.935, 10, 5),
    ]


def split_arrays(cfg: Any, manifest: Any, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A split of the records as in-memory arrays (float32 images 0..255, one-hot float32 labels), in records order."""
    from kit.data.pipeline import make_dataset

    dataset = make_dataset(cfg, split, training=False, batch_size=256, manifest=manifest)
    images, labels = zip(*((np.asarray(x), np.asarray(y)) for x, y in dataset), strict=True)
    return np.concatenate(images), np.concatenate(labels)


def measure_epoch_unit(cfg: Any, x: np.ndarray, y: np.ndarray, epochs: int = 2) -> dict[str, Any]:
    """E: seconds of one bare ``model.fit`` epoch of ResNet20 (kit's builder, 32 px, batch 64, no augmentation,
    SGD with momentum, in-memory arrays); epochs 2..n, the first pays for tracing."""
    import dataclasses

    import keras

    from kit.models.registry import build_model

    keras.utils.set_random_seed(0)
    # Binary targets are one column (kit's binary models end in one sigmoid unit); several classes are one-hot.
    binary = y.shape[1] == 1
    model = build_model(dataclasses.replace(cfg.model, name="resnet20", image_size=32), 2 if binary else y.shape[1])
    loss = "binary_crossentropy" if binary else "categorical_crossentropy"
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss=loss, metrics=["accuracy"])
    clock = epoch_clock()
    start = time.perf_counter()
    model.fit(x, y, batch_size=BATCH, epochs=epochs, shuffle=True, verbose=0, callbacks=[clock])
    seconds = steady_seconds(clock.ends) or (time.perf_counter() - start)
    return {"seconds": seconds, "images": int(len(x)), "images_per_second": len(x) / seconds, "epochs": epochs}


def epoch_test_curve(x: np.ndarray, labels: np.ndarray) -> Any:
    """A Keras callback scoring the test split at each epoch end; ``points`` = (training seconds, accuracy, epoch)
    with every second it spent itself taken off the clock (``start`` is set by the caller)."""
    import keras

    class TestCurve(keras.callbacks.Callback):
        def __init__(self) -> None:
            super().__init__()
            self.start = time.perf_counter()
            self.excluded = 0.0
            self.points: list[tuple[float, float, int]] = []

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            began = time.perf_counter()
            probs = np.asarray(self.model.predict(x, batch_size=512, verbose=0))
            predicted = (probs[:, 0] > 0.5).astype(int) if probs.shape[1] == 1 else probs.argmax(axis=1)
            accuracy = float((predicted == labels).mean()) if len(labels) else 0.0
            self.points.append((began - self.start - self.excluded, accuracy, epoch + 1))
            self.excluded += time.perf_counter() - began

    return TestCurve()


def train_with_curve(cfg: Any, curve: Any) -> Path:
    """``kit.train.trainer.train(cfg)`` with ``curve`` added to the callbacks of every phase."""
    from kit.train.trainer import train

    curve.start, curve.excluded = time.perf_counter(), 0.0
    return train(cfg, callbacks=[curve])


def kit_command(overrides: list[str]) -> str:
    return "kit train " + " ".join(o if " " not in o else repr(o) for o in overrides)


def run_model(ctx: Context, goal: Goal, yaml_path: Path, e_seconds: float) -> tuple[dict, dict]:
    """Train ``goal.model`` with its preset; (row, raw)."""
    from kit.config import load_config
    from kit.data.records import build_from_config

    overrides = [f"comp={_rel(yaml_path)}", f"model={goal.model}", "train.verbose=2"]
    if ctx.sizes.acc_epochs:
        overrides.append(f"train.epochs={ctx.sizes.acc_epochs}")
    cfg = load_config([f"comp={yaml_path}", *overrides[1:]])
    began = time.perf_counter()
    manifest = build_from_config(cfg)
    records_seconds = time.perf_counter() - began
    x_test, y_test = split_arrays(cfg, manifest, "test")
    curve = epoch_test_curve(x_test, y_test.argmax(axis=1))
    log(f"T {goal.key} {goal.model}: {kit_command(overrides)} ({cfg.train.epochs} epochs max)")
    began = time.perf_counter()
    run_dir = train_with_curve(cfg, curve)
    wall = time.perf_counter() - began - curve.excluded
    scores = score_test_split(cfg, run_dir)
    accuracy, minutes, e_units = scores["test_accuracy"], wall / 60.0, wall / e_seconds
    passed = accuracy >= goal.accuracy and minutes <= goal.minutes and e_units <= goal.e_units
    log(f"T {goal.key} {goal.model}: test {accuracy:.4f} in {minutes:.1f} min = {e_units:.1f} E")
    tta = scores.get("tta") or []
    note = f"{len(curve.points)} epochs; records build {records_seconds:.0f} s (not counted)"
    if tta:
        note += f"; test accuracy with the preset's predict.tta={tta}, without {scores['test_accuracy_no_tta']:.2%}"
    raw = {
        **scores,
        "model": goal.model,
        "wall_seconds": wall,
        "test_eval_seconds_excluded": curve.excluded,
        "records_seconds": records_seconds,
        "e_units": e_units,
        "epochs": len(curve.points),
        "curve": [{"seconds": s, "test_accuracy": a, "epoch": e} for s, a, e in curve.points],
        "command": kit_command(overrides),
        "run_dir": _rel(run_dir),
    }
    value = f"{accuracy:.2%} in {minutes:.1f} min = {e_units:.1f} E"
    return row(f"{goal.key} {goal.model}: test accuracy, training wall time", value, goal.text(), None, passed, note), raw


def run_demo(ctx: Context) -> tuple[dict, dict]:
    """T3: ``kit demo`` as a user runs it (a fresh process; data, records, train, predict, score), its folders
    under the bench's work folder; the hidden-test accuracy is the line the demo prints."""
    base = ctx.work / ("demo-quick" if ctx.quick else "demo")
    settings = [f"data.root={base / 'raw'}", f"data.records_root={base / 'records'}", f"run.root={base / 'runs'}"]
    if ctx.sizes.acc_epochs:
        settings.append(f"train.epochs={ctx.sizes.acc_epochs}")
    command = [sys.executable, "-m", "kit", "demo", *settings]
    log(f"T T3: kit demo {' '.join(settings)}")
    began = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - began
    found = re.search(r"(\w+) = ([0-9.]+) \((?:meets|is below)", done.stdout)
    total = re.search(r"total time\s+([0-9.]+) s", done.stdout)
    if done.returncode != 0 or not found:
        tail = (done.stdout + done.stderr).strip().splitlines()[-5:]
        raise RuntimeError(f"kit demo failed (exit {done.returncode}): {' | '.join(tail)}")
    accuracy = float(found.group(2))
    passed = accuracy >= DEMO_GOAL_ACCURACY and wall <= DEMO_GOAL_SECONDS
    shown = "kit demo " + " ".join(
        f"{k}={_rel(Path(v)) if k != 'train.epochs' else v}" for k, v in (s.split("=", 1) for s in settings)
    )
    raw = {
        "hidden_test_accuracy": accuracy,
        "wall_seconds": wall,
        "demo_total_seconds": float(total.group(1)) if total else None,
        "command": shown,
    }
    note = "the whole command: Python and TensorFlow start-up, data, records, training, predict, score (install excluded)"
    if total:
        note += f"; the demo's own total {float(total.group(1)):.0f} s"
    value = f"{accuracy:.4f} in {wall:.0f} s"
    return row(
        "T3 kit demo: hidden-test accuracy, wall time",
        value,
        f">= {DEMO_GOAL_ACCURACY} in <= {DEMO_GOAL_SECONDS:g} s",
        None,
        passed,
        note,
    ), raw


def previous_result(ctx: Context) -> dict:
    """This section's last results (t.json), read before this run writes any: rows not run now are carried over."""
    try:
        return json.loads((ctx.results / "t.json").read_text())
    except (OSError, ValueError):
        return {}


def carried_rows(previous: dict, key: str) -> list[dict]:
    """The rows of ``key`` (T1..T5) that ``previous`` measured, each noting the run they come from (its own E)."""
    found = [
        r
        for r in previous.get("rows", [])
        if r.get("figure", "").startswith(f"{key} ") and r.get("value") not in ("not run", "skipped")
    ]
    commit = (previous.get("machine") or {}).get("commit", "?")
    source = f"carried over from the run of {previous.get('started', '?')} (commit {commit}; its own E)"
    return [{**r, "note": f"{r.get('note') or ''}; {source}".lstrip("; ")} for r in found]


def acc_figure(ctx: Context, model: str) -> str:
    """The ACC section's last full result for ``model`` (its preset, trained to the end), for a T row not run here:
    what the preset reached, and in how long, on the machine and commit ACC names."""
    path = (ctx.results.parent if ctx.quick else ctx.results) / "acc.json"
    try:
        saved = json.loads(path.read_text())
        result = saved["raw"][model]
        return (
            f"ACC's last full run of this preset: {result['test_accuracy']:.2%} test in {result['wall_seconds'] / 60:.1f} min, "
            f"{result['epochs']} epochs (bench/results/acc.json, commit {saved['machine']['commit']})"
        )
    except (OSError, ValueError, KeyError, TypeError):
        return "no ACC result for it in bench/results/acc.json"


def old_curves(ctx: Context) -> dict[str, dict]:
    """The old defaults' curves from the full ACC results (bench/results/acc.json) when present: val accuracy by
    epoch (ACC scored test only at the end) at evenly spread times (it recorded only the total), and the final
    test accuracy at the total wall time."""
    path = (ctx.results.parent if ctx.quick else ctx.results) / "acc.json"
    try:
        raw = json.loads(path.read_text()).get("raw", {})
    except (OSError, ValueError):
        return {}
    curves = {}
    for model, result in raw.items():
        history, wall = result.get("history") or {}, float(result.get("wall_seconds") or 0)
        accuracy = history.get("val_accuracy") or []
        if not accuracy or not wall:
            continue
        minutes = [wall / 60.0 * (k + 1) / len(accuracy) for k in range(len(accuracy))]
        curves[model] = {
            "minutes": minutes,
            "val_accuracy": accuracy,
            "test_accuracy": result.get("test_accuracy"),
            "epochs": len(accuracy),
        }
    return curves


def curve_png(path: Path, raw: dict, old: dict[str, dict], quick: bool) -> str:
    from matplotlib.figure import Figure

    from kit import plots

    fig = Figure(figsize=(8, 4.6), layout="constrained")
    ax = fig.subplots()
    colours = {}
    for key, result in raw["models"].items():
        points = result["curve"]
        line = ax.plot(
            [p["seconds"] / 60 for p in points],
            [p["test_accuracy"] for p in points],
            marker="o",
            markersize=3,
            label=f"{result['model']} this commit's preset: test accuracy ({key})",
        )
        colours[result["model"]] = line[0].get_color()
    for model, curve in old.items():
        colour = colours.get(model)
        ax.plot(
            curve["minutes"],
            curve["val_accuracy"],
            linestyle="--",
            color=colour,
            label=f"{model} old defaults: val accuracy (acc.json)",
        )
        if curve.get("test_accuracy"):
            ax.plot([curve["minutes"][-1]], [curve["test_accuracy"]], marker="*", markersize=10, color=colour, linestyle="none")
    ax.set_xlabel("training wall-clock minutes (test scoring excluded)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Fashion-MNIST time to accuracy{' (QUICK: tiny subset, not the benchmark)' if quick else ''}")
    ax.grid(alpha=0.3)
    ax.set_xlim(left=0)
    ax.legend(fontsize=7, loc="best")
    plots.save(fig, path)
    return path.name


def section_t(ctx: Context) -> dict:
    from kit.config import load_config
    from kit.data.records import build_from_config
    from kit.models.registry import MODELS

    data_root = ensure_fashion_folders(ctx)
    fast = ctx.t_fast_model
    sizes = {m: 32 for m in ("resnet20", "cnn", "lstm", fast) if m in MODELS}
    name = COMP_NAME + ("-quick" if ctx.quick else "")
    yaml_path = write_comp_yaml(
        data_root.parent / "comp-t.yaml", name, data_root, FASHION_CLASSES, test=True, comp={"image_sizes": sizes}
    )
    cfg = load_config([f"comp={yaml_path}", "model=resnet20"])
    manifest = build_from_config(cfg)
    x, y = split_arrays(cfg, manifest, "train")
    log(f"T: E = one bare model.fit epoch of ResNet20 over the {len(x):,} training images")
    unit = measure_epoch_unit(cfg, x, y)
    del x, y
    log(f"T: E = {unit['seconds']:.1f} s ({unit['images_per_second']:.0f} img/s)")
    rows = [
        row(
            "E: one bare model.fit epoch of ResNet20, 32 px, batch 64",
            f"{unit['seconds']:.1f} s",
            note=f"{unit['images_per_second']:,.0f} img/s over {unit['images']:,} images",
        )
    ]
    raw: dict[str, Any] = {"e": unit, "models": {}}
    notes = []
    if ctx.quick:
        notes.append(
            f"QUICK: {ctx.sizes.acc_train:,} train / {ctx.sizes.acc_test:,} test images, {ctx.sizes.acc_epochs} epochs: "
            "proves the path, not the goals."
        )
    wanted = {r.strip().upper() for r in ctx.t_rows.split(",") if r.strip()}
    previous = previous_result(ctx) if wanted else {}
    for goal in goals(fast):
        if wanted and goal.key not in wanted:
            if earlier := carried_rows(previous, goal.key):
                rows += earlier
                raw["models"][goal.key] = previous["raw"]["models"][goal.key]
                continue
            rows.append(
                row(
                    f"{goal.key} {goal.model}",
                    "not run",
                    goal.text(),
                    note=f"--t-rows {ctx.t_rows}; {acc_figure(ctx, goal.model)}",
                )
            )
            notes.append(f"{goal.key} not run in this run (--t-rows {ctx.t_rows}).")
            continue
        if goal.model not in MODELS:
            rows.append(
                row(
                    f"{goal.key} {goal.model}",
                    "skipped",
                    goal.text(),
                    note=f"{goal.model} is not in kit.models.registry.MODELS on this commit",
                )
            )
            notes.append(f"{goal.key} skipped: no model {goal.model!r} in kit's registry (`--t-fast-model NAME` picks another).")
            continue
        result_row, result_raw = run_model(ctx, goal, yaml_path, unit["seconds"])
        rows.append(result_row)
        raw["models"][goal.key] = result_raw
        write_result(ctx, "T", {"title": "T: time to accuracy (partial)", "rows": rows, "raw": raw})  # a stopped run keeps these
    if not wanted or "T3" in wanted:
        demo_row, demo_raw = run_demo(ctx)
        rows.append(demo_row)
        raw["demo"] = demo_raw
    elif earlier := carried_rows(previous, "T3"):
        rows += earlier
        raw["demo"] = previous["raw"]["demo"]
    else:
        rows.append(
            row(
                "T3 kit demo",
                "not run",
                f">= {DEMO_GOAL_ACCURACY:.0%} in <= {DEMO_GOAL_SECONDS:g} s",
                note=f"--t-rows {ctx.t_rows}",
            )
        )
    recipe_plot = None
    if (not wanted or "T5" in wanted) and fast in MODELS:
        # The quick baseline changed from ResNet20 (the demo's model before) to the ResNet-9 preset: both on two
        # tasks that are not Fashion-MNIST, so the new default is not tuned to it alone.
        recipe_rows, raw["recipes"] = recipe_check(ctx, [fast], {fast: list(QUICK_BASELINE_BEFORE)})
        rows += recipe_rows
        recipe_plot = raw["recipes"]["plot"]
    elif not wanted or "T5" in wanted:
        rows.append(row("T5 recipes check", "skipped", "new >= old within noise", note=f"no model {fast!r} in kit's registry"))
    elif earlier := carried_rows(previous, "T5"):
        rows += earlier
        raw["recipes"] = previous["raw"]["recipes"]
        recipe_plot = raw["recipes"]["plot"]  # still in the results folder: T5 did not run to replace it
    else:
        skipped = f"--t-rows {ctx.t_rows}"
        rows.append(row("T5 recipes check (digits, generated binary)", "not run", "new >= old within noise", note=skipped))
    old = old_curves(ctx)
    raw["old_curves"] = old
    notes += [
        f"Fashion-MNIST (as in ACC: {_rel(data_root)}, 20 % of train held out as val by kit), all at 32 px. Test accuracy "
        "is best.keras on the labelled test split as `kit predict` scores it (the preset's predict.tta); wall time is "
        "kit.train.trainer.train, session setup to the last epoch, minus the time the curve's test scoring took; the "
        "records build is not counted (it is cached between runs).",
        "E = the seconds of epoch 2 of a bare model.fit of ResNet20 (kit's builder, SGD momentum 0.9, batch 64, no "
        "augmentation, in-memory float32 arrays of the same training images), measured in this run; `x E` = wall time / E.",
        "The plot: test accuracy at each epoch end (without TTA) against training minutes for the presets of this commit; "
        + (
            "dashed, the old defaults from bench/results/acc.json: val accuracy by epoch at evenly spread times (ACC recorded "
            "only the total), a star at its final test accuracy."
            if old
            else "no bench/results/acc.json here, so no old-defaults curve."
        ),
        "T3 is the demo's hidden-test accuracy (solution.csv) and the wall time of the whole command.",
        "T5: the quick baseline's preset (the demo's model) against the one it replaced (ResNet20's preset, "
        f"`{' '.join(QUICK_BASELINE_BEFORE)}`) on the demo digits (accuracy) and a generated AI-vs-human-shaped binary task "
        "(F1 of 'ai'; mixed sizes, 40 % ai, 3 % flipped labels), trained and scored as kit train + kit predict do.",
    ]
    commands = [f"{key} {r['model']}: `{r['command']}`" for key, r in raw["models"].items()]
    if "demo" in raw:
        commands.append(f"T3: `{raw['demo']['command']}`")
    commands += [f"T5 {r['task']} {r['model']}: `{r['command']}`" for r in raw.get("recipes", {}).get("results", [])]
    notes.append("Commands (then `kit predict` scores best.keras on test): " + "; ".join(commands))
    result = {"title": "T: time to accuracy (Fashion-MNIST, kit demo)", "rows": rows, "raw": raw, "notes": notes}
    result["plots"] = [curve_png(ctx.results / "t_time_to_accuracy.png", raw, old, ctx.quick)]
    if recipe_plot:
        result["plots"].append(recipe_plot)
    return result
