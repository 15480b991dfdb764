"""PROBE: a linear probe (``train.mode=probe``) against full training, on the generated binary task and on CIFAKE.

The smallest backbone row (MobileNetV3Small) at 224 px with ``model.weights=none``: the probe's frozen features
are random here, so its score says only that the path works and what it costs; its value shows with real weights
(UnivFD, CVPR 2023: a linear probe on frozen CLIP features), which this machine cannot download. Per task:

- feature extraction: the training split through the frozen network, images/s (cache emptied first; the run
  that follows reads the cache, as a second probe run of the same settings would);
- the probe's fit time (scikit-learn's LogisticRegression, from the run's metrics.json), hold-out test F1 and accuracy;
- full training of the same network (phase 1 the head, phase 2 every layer at 1e-3): wall time, test F1 and accuracy
  (kit's phase 1 freezes the backbone and phase 2 keeps every BatchNorm layer frozen: the row counts the layers that
  kept their initial statistics, and says so when it scores no better than always answering the larger class).

Both are scored as ``kit predict`` scores a labelled test split (test_metrics.json), as T5 does. The tasks are rows of
one list (:func:`probe_tasks`), each measured by :func:`measure_task`. CIFAKE comes from ``--cifake-dir`` or
``KIT_CIFAKE_DIR`` (:func:`bench.cifake.find_cifake`), a seeded per-class subset of it (:data:`CIFAKE_SIZES`); without
it the CIFAKE rows say "not measured" and how to get the data.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path
from typing import Any

from bench.cifake import CifakeSizes, cifake_yaml, find_cifake, subset
from bench.common import Context, NothingToMeasure, log, row
from bench.t_recipes import binary_task, recipe_sizes

BACKBONE = "mobilenetv3_small"
SIZE = 224
COMMON = [f"model={BACKBONE}", "model.weights=none", f"model.image_size={SIZE}", "train.verbose=2", "augment.mode=none"]
FULL_EPOCHS = (1, 4)  # full training: head epochs, then every layer (quick: 1 + 1)
PNG_NAME = "probe.png"
# Per class (the full training's epochs are FULL_EPOCHS, hence 0): 2,400 training images, as many as the generated
# task's, whose half of the section took 472 s on 2 loaded cores (~90 img/s of extraction, ~25 of training at 224 px),
# and 1,000 test images: CIFAKE's half stays within ~8-9 minutes.
CIFAKE_SIZES = {False: CifakeSizes(1200, 500, 0), True: CifakeSizes(40, 20, 0)}  # by ctx.quick


@dataclasses.dataclass(frozen=True)
class ProbeTask:
    key: str  # generated | cifake
    name: str  # what the rows call it
    positive: str  # the class whose F1 the competition scores
    describe: str  # the data, for the notes
    yaml_path: Path | None = None  # None: not measured
    overrides: tuple[str, ...] = ()  # the task's own settings beside COMMON
    missing: str = ""  # why not measured, and how to get the data


def generated_task(ctx: Context) -> ProbeTask:
    sizes = recipe_sizes(ctx)
    task = binary_task(ctx.work / ("probe-quick" if ctx.quick else "probe"), [BACKBONE], sizes)
    describe = (
        f"generated binary task: classes human/ai, {sizes.binary_train:,} train / {sizes.binary_test:,} test images "
        "(bench.t_recipes.make_binary_task, ~40 % ai, 3 % of labels flipped)"
    )
    return ProbeTask("generated", "generated", "ai", describe, task.yaml_path)


def cifake_task(ctx: Context) -> ProbeTask:
    """A seeded per-class subset of CIFAKE with its competition YAML, or a task that says how to get the data."""
    sizes = CIFAKE_SIZES[ctx.quick]
    describe = f"CIFAKE: a seeded subset of {sizes.train_per_class:,} train / {sizes.test_per_class:,} test images per class"
    try:
        source = find_cifake(ctx.cifake_dir)
    except NothingToMeasure as reason:
        return ProbeTask("cifake", "CIFAKE", "FAKE", describe, missing=str(reason).removeprefix("D-CIFAKE: "))
    base = ctx.work / ("probe-cifake-quick" if ctx.quick else "probe-cifake")
    data_root = subset(source, base / "data", sizes)
    yaml_path = cifake_yaml(base, data_root, "bench-probe-cifake" + ("-quick" if ctx.quick else ""))
    # 32 px images upscaled to 224: PNG records keep them as they are (auto would re-encode them as JPEG at 224 px,
    # adding compression traces to both classes: configs/competitions/cifake.yaml's advice for backbones).
    return ProbeTask("cifake", "CIFAKE", "FAKE", f"{describe} of {source.name}", yaml_path, ("data.image_format=png",))


def probe_tasks(ctx: Context) -> list[ProbeTask]:
    return [generated_task(ctx), cifake_task(ctx)]


def full_epochs(quick: bool) -> tuple[int, int]:
    return (1, 1) if quick else FULL_EPOCHS


def full_overrides(quick: bool) -> list[str]:
    head, body = full_epochs(quick)
    return [
        f"train.epochs={head}",
        f"train.fine_tune.epochs={body}",
        "train.fine_tune.unfreeze=-1",
        "train.fine_tune.learning_rate=1e-3",
    ]


def _score(cfg: Any, run_dir: Path) -> dict[str, Any]:
    """``kit predict``'s score of the labelled test split, its accuracy, and the share of its larger class."""
    import numpy as np

    from kit.predict import TEST_METRICS_FILE, predict

    submission = predict(cfg, [run_dir])
    metrics = json.loads((submission.parent / TEST_METRICS_FILE).read_text())
    confusion = np.asarray(metrics["confusion_matrix"])  # rows: the true classes
    return {
        "score": float(metrics["score"]),
        "accuracy": float(np.trace(confusion) / confusion.sum()),
        "majority": float(confusion.sum(axis=1).max() / confusion.sum()),
        "examples": int(metrics["examples"]),
    }


def initial_batchnorm(run_dir: Path) -> list[int]:
    """[kept, all]: the backbone's BatchNorm layers whose moving statistics are still their initial ones (mean 0,
    variance 1) in the run's best.keras: a backbone without weights that kept them normalised nothing as it trained."""
    import keras
    import numpy as np

    from kit.models.pretrained import get_backbone
    from kit.run_model import load_model

    backbone = get_backbone(load_model(run_dir))
    norms = [layer for layer in backbone.layers if isinstance(layer, keras.layers.BatchNormalization)]
    kept = sum(np.allclose(layer.moving_mean.numpy(), 0.0) and np.allclose(layer.moving_variance.numpy(), 1.0) for layer in norms)
    return [int(kept), len(norms)]


def _extraction(cfg: Any) -> dict[str, Any]:
    """The training split's features computed with an empty cache: images and seconds."""
    from kit.train import features, probe
    from kit.train.session import start_session

    session = start_session(cfg)
    network = features.feature_extractor(probe.probe_model(session.cfg, len(session.classes)), probe.LINEAR_HEAD)
    folder, _ = features.cache_dir(session.cfg, session.manifest, network)
    shutil.rmtree(folder, ignore_errors=True)
    began = time.perf_counter()
    computed, _ = features.split_features(session.cfg, session.manifest, network, "train", batch_size=session.global_batch)
    seconds = time.perf_counter() - began
    return {"images": len(computed), "seconds": seconds, "images_per_second": len(computed) / seconds}


def measure_task(task: ProbeTask, quick: bool) -> dict[str, Any]:
    """Feature extraction, the probe run and its score, full training and its score, on one task."""
    from kit.data.records import build_from_config
    from kit.settings import load_settings
    from kit.train.trainer import train

    base = [f"comp={task.yaml_path}", *COMMON, *task.overrides]
    probe_cfg = load_settings([*base, "train.mode=probe"], model=BACKBONE)
    manifest = build_from_config(probe_cfg)  # not on any clock
    extraction = _extraction(probe_cfg)
    log(f"PROBE {task.name}: features of {extraction['images']} images at {extraction['images_per_second']:.1f} img/s")
    began = time.perf_counter()
    probe_run = train(probe_cfg, manifest=manifest)  # reads the features just cached
    probe_seconds = time.perf_counter() - began
    fit_seconds = json.loads((probe_run / "metrics.json").read_text())["probe"]["fit_seconds"]
    probe_score = _score(probe_cfg, probe_run)
    log(f"PROBE {task.name}: probe F1 {probe_score['score']:.4f}, accuracy {probe_score['accuracy']:.4f}")

    full_cfg = load_settings([*base, *full_overrides(quick)], model=BACKBONE)
    began = time.perf_counter()
    full_run = train(full_cfg, manifest=manifest)
    full_seconds = time.perf_counter() - began
    full_score = {**_score(full_cfg, full_run), "initial_batchnorm": initial_batchnorm(full_run)}
    log(f"PROBE {task.name}: full training F1 {full_score['score']:.4f} in {full_seconds:.0f} s")
    return {
        "extraction": extraction,
        "batch": int(probe_cfg.train.batch_size),
        "probe": {"seconds": probe_seconds, "fit_seconds": fit_seconds, **probe_score},
        "full": {
            "seconds": full_seconds,
            "epochs": [int(full_cfg.train.epochs), int(full_cfg.train.fine_tune.epochs)],
            **full_score,
        },
    }


# ------------------------------------------------------------------------------------------- rows, notes, plot


def figures(name: str, positive: str, epochs: tuple[int, int]) -> list[str]:
    """The three figures of a task, measured or not."""
    return [
        f"PROBE {name} feature extraction: {BACKBONE}, {SIZE} px, weights=none",
        f"PROBE {name} linear probe: fit time, hold-out test F1 ({positive}), accuracy",
        f"PROBE {name} full training: {epochs[0]} + {epochs[1]} epochs (every layer in phase 2), hold-out test F1, accuracy",
    ]


def score_text(scored: dict[str, Any]) -> str:
    return f"F1 {scored['score']:.4f}, accuracy {scored['accuracy']:.4f}"


def task_rows(task: dict[str, Any], epochs: tuple[int, int]) -> list[dict]:
    """A task's rows from its result (:func:`task_result`); "not measured" and why where it was not."""
    names = figures(task["name"], task["positive"], epochs)
    if "missing" in task:
        return [row(figure, "not measured", note=task["missing"]) for figure in names]
    extraction, probe, full = task["extraction"], task["probe"], task["full"]
    kept, norms = full["initial_batchnorm"]
    test = f"{probe['examples']:,} labelled test images (the larger class {probe['majority']:.1%})"

    def verdict(scored: dict[str, Any]) -> str:
        return "; no better than always answering the larger class" if scored["accuracy"] <= scored["majority"] else ""

    return [
        row(
            names[0],
            f"{extraction['images_per_second']:.1f} img/s",
            note=f"{extraction['images']:,} training images in {extraction['seconds']:.1f} s, batch {task['batch']}",
        ),
        row(
            names[1],
            f"fit {probe['fit_seconds']:.2f} s; {score_text(probe)}",
            note=f"the whole run {probe['seconds']:.1f} s with the features cached; {test}; "
            f"random features: a floor, not a verdict{verdict(probe)}",
        ),
        row(
            names[2],
            f"{full['seconds']:.0f} s; {score_text(full)}",
            note=f"train.fine_tune.unfreeze=-1, learning rate 1e-3; {test}{verdict(full)}; {kept} of {norms} BatchNorm "
            "layers kept their initial statistics",
        ),
    ]


def task_result(task: ProbeTask, measured: dict[str, Any] | None) -> dict[str, Any]:
    """What the section's raw result keeps of a task: its facts, and its measurements or why there are none."""
    facts = {"key": task.key, "name": task.name, "positive": task.positive, "describe": task.describe}
    return {**facts, **measured} if measured is not None else {**facts, "missing": task.missing}


METHODS = (("probe", "linear probe", "tab:orange"), ("full", "full training", "tab:blue"))  # (key, name, colour)
METRICS = (("score", "F1", "o"), ("accuracy", "accuracy", "s"))  # (key, name, marker)


def probe_png(path: Path, tasks: list[dict[str, Any]], quick: bool) -> str:
    """One panel per task: hold-out test F1 and accuracy against wall time, for the probe and for full training.

    The probe's wall time is its extraction from an empty cache plus its run (validation features, the fit); a
    dotted line marks the accuracy of always answering the larger class."""
    from matplotlib.figure import Figure

    from kit import plots

    fig = Figure(figsize=(5.0 * len(tasks), 4.6), layout="constrained")
    panels = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(panels, tasks, strict=True):
        ax.set_title(task["name"])
        ax.set_xlabel("wall time (s)")
        ax.set_ylabel("hold-out test score")
        ax.set_ylim(-0.06, 1.1)  # room for a label below a score of 0
        ax.grid(alpha=0.3)
        if "missing" in task:
            why = f"not measured\n(the {task['name']} rows say why)"
            ax.text(0.5, 0.5, why, ha="center", va="center", transform=ax.transAxes)
            ax.set_xticks([])
            continue
        seconds = {"probe": task["extraction"]["seconds"] + task["probe"]["seconds"], "full": task["full"]["seconds"]}
        for method, method_name, colour in METHODS:
            scored, x = task[method], seconds[method]
            for metric, metric_name, marker in METRICS:
                label = f"{method_name}: {metric_name}"
                ax.plot([x], [scored[metric]], marker=marker, color=colour, linestyle="none", label=label)
            # Each marker labelled on its own side (the higher one above, the lower below), so that close values
            # stay apart and far ones stay by their markers; the wall time goes with the upper label.
            ranked = sorted(METRICS, key=lambda entry: scored[entry[0]], reverse=True)
            for place, (metric, name, _) in enumerate(ranked):
                text = f"{name} {scored[metric]:.3f}" + ("" if place else f", {x:.0f} s")
                up = place == 0
                offset, align = ((6, 3), "bottom") if up else ((6, -3), "top")
                ax.annotate(
                    text, (x, scored[metric]), textcoords="offset points", xytext=offset, va=align, fontsize=8, color=colour
                )
        ax.axhline(task["probe"]["majority"], color="grey", linestyle=":", label="accuracy of the larger class")
        ax.set_xlim(0, max(seconds.values()) * 1.45)  # room for the labels right of the slower run
    handles, labels = next((ax.get_legend_handles_labels() for ax in panels if ax.get_legend_handles_labels()[0]), ([], []))
    if handles:
        fig.legend(handles, labels, fontsize=8, loc="outside lower center", ncols=len(labels))  # off every point
    title = f"PROBE: linear probe vs full training, {BACKBONE} at {SIZE} px, weights=none (random features: a floor)"
    fig.suptitle(title + ("\nQUICK: tiny sizes, not the benchmark" if quick else ""))
    plots.save(fig, path)
    return path.name


def notes(tasks: list[dict[str, Any]], quick: bool) -> list[str]:
    command = " ".join(["kit train", "comp=comp.yaml", *COMMON, "train.mode=probe"])
    lines = [
        f"{task['describe']}; val 20 % of train; F1 of {task['positive']}"
        + (": not measured in this run (its rows say how to get the data)." if "missing" in task else ".")
        for task in tasks
    ]
    lines += [
        "weights=none: the frozen features are random, so the probe's F1 is a floor; with ImageNet or foundation weights "
        "(weights=imagenet, cached offline: kit weights list) the probe is the fast first model of UnivFD (CVPR 2023).",
        "Full training from weights=none is from-scratch training of a network made for ImageNet at this data's scale; "
        "the fair comparison needs weights=imagenet, and from-scratch work is what the scratch models (resnet9, resnet20) do. "
        "The full-training rows count the backbone's BatchNorm layers that kept their initial statistics: kit's phases "
        "freeze them (phase 1 the whole backbone, phase 2 BatchNorm), which keeps ImageNet's, and without weights "
        "leaves them at mean 0, variance 1.",
        f"Per run: `{command}` (CIFAKE also data.image_format=png); full training: the same with "
        f"{' '.join(full_overrides(quick))}; each then `kit predict` on the labelled test split. The plot's probe time is "
        "extraction + run.",
    ]
    if quick:
        lines.insert(0, "QUICK: tiny subsets and 1 + 1 epochs of full training: proves the path, not the figures.")
    return lines


def section_probe(ctx: Context) -> dict:
    results = []
    for task in probe_tasks(ctx):
        if task.yaml_path is None:
            log(f"PROBE {task.name}: not measured ({task.missing})")
        results.append(task_result(task, None if task.yaml_path is None else measure_task(task, ctx.quick)))
    epochs = full_epochs(ctx.quick)
    ctx.results.mkdir(parents=True, exist_ok=True)
    png = probe_png(ctx.results / PNG_NAME, results, ctx.quick)
    return {
        "title": f"PROBE: linear probe vs full training (generated binary task and CIFAKE, {SIZE} px)",
        "rows": [line for task in results for line in task_rows(task, epochs)],
        "notes": notes(results, ctx.quick),
        "raw": {"tasks": results},
        "plots": [png],
    }
