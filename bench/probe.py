"""PROBE: a linear probe (``train.mode=probe``) against full training, on the generated binary task.

The smallest backbone row (MobileNetV3Small) at 224 px with ``model.weights=none``: the probe's frozen features
are random here, so its score says only that the path works and what it costs; its value shows with real weights
(UnivFD, CVPR 2023: a linear probe on frozen CLIP features), which this machine cannot download. Figures:

- feature extraction: the training split through the frozen network, images/s (cache emptied first; the run
  that follows reads the cache, as a second probe run of the same settings would);
- the probe's fit time (scikit-learn's LogisticRegression, from the run's metrics.json) and hidden-test F1;
- full training of the same network (phase 1 the head, phase 2 every layer at 1e-3): wall time and hidden-test F1
  (a backbone without weights learns its BatchNorm statistics as it trains; a pretrained one keeps ImageNet's).

Both are scored as ``kit predict`` scores a labelled test split (test_metrics.json), as T5 does.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

from bench.common import Context, log, row
from bench.t_recipes import BINARY_CLASSES, binary_task, recipe_sizes

BACKBONE = "mobilenetv3_small"
SIZE = 224
COMMON = [f"model={BACKBONE}", "model.weights=none", f"model.image_size={SIZE}", "train.verbose=2", "augment.mode=none"]
FULL_EPOCHS = (1, 4)  # full training: head epochs, then every layer (quick: 1 + 1)


def _score(cfg: Any, run_dir: Path) -> dict[str, Any]:
    from kit.predict import TEST_METRICS_FILE, predict

    submission = predict(cfg, [run_dir])
    metrics = json.loads((submission.parent / TEST_METRICS_FILE).read_text())
    return {"score": float(metrics["score"]), "examples": int(metrics["examples"])}


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


def section_probe(ctx: Context) -> dict:
    from kit.data.records import build_from_config
    from kit.settings import load_settings
    from kit.train.trainer import train

    sizes = recipe_sizes(ctx)
    task = binary_task(ctx.work / ("probe-quick" if ctx.quick else "probe"), [BACKBONE], sizes)
    base = [f"comp={task.yaml_path}", *COMMON]
    probe_cfg = load_settings([*base, "train.mode=probe"], model=BACKBONE)
    manifest = build_from_config(probe_cfg)  # not on any clock
    extraction = _extraction(probe_cfg)
    log(f"PROBE: features of {extraction['images']} images at {extraction['images_per_second']:.1f} img/s")
    began = time.perf_counter()
    probe_run = train(probe_cfg, manifest=manifest)  # reads the features just cached
    probe_seconds = time.perf_counter() - began
    fit_seconds = json.loads((probe_run / "metrics.json").read_text())["probe"]["fit_seconds"]
    probe_score = _score(probe_cfg, probe_run)

    head, body = (1, 1) if ctx.quick else FULL_EPOCHS
    full_overrides = [
        f"train.epochs={head}",
        f"train.fine_tune.epochs={body}",
        "train.fine_tune.unfreeze=-1",
        "train.fine_tune.learning_rate=1e-3",
    ]
    full_cfg = load_settings([*base, *full_overrides], model=BACKBONE)
    began = time.perf_counter()
    full_run = train(full_cfg, manifest=manifest)
    full_seconds = time.perf_counter() - began
    full_score = _score(full_cfg, full_run)

    test = f"{probe_score['examples']} labelled test images"
    rows = [
        row(
            f"PROBE feature extraction: {BACKBONE}, {SIZE} px, weights=none",
            f"{extraction['images_per_second']:.1f} img/s",
            note=f"{extraction['images']} training images in {extraction['seconds']:.1f} s, batch {probe_cfg.train.batch_size}",
        ),
        row(
            "PROBE linear probe: fit time, hidden-test F1",
            f"fit {fit_seconds:.2f} s; F1 {probe_score['score']:.4f}",
            note=f"the whole run {probe_seconds:.1f} s with the features cached; {test}; random features: a floor, not a verdict",
        ),
        row(
            f"PROBE full training: {head} + {body} epochs (every layer in phase 2), hidden-test F1",
            f"{full_seconds:.0f} s; F1 {full_score['score']:.4f}",
            note=f"train.fine_tune.unfreeze=-1, learning rate 1e-3; {test}",
        ),
    ]
    command = " ".join(["kit train", f"comp={task.yaml_path.name}", *COMMON, "train.mode=probe"])
    notes = [
        f"Classes {BINARY_CLASSES}; {sizes.binary_train} train / {sizes.binary_test} test generated images "
        "(bench.t_recipes.make_binary_task), val 20 % of train.",
        "weights=none: the frozen features are random, so the probe's F1 is a floor; with ImageNet or foundation weights "
        "(weights=imagenet, cached offline: kit weights list) the probe is the fast first model of UnivFD (CVPR 2023).",
        "Full training from weights=none is from-scratch training of a network made for ImageNet at this data's scale; "
        "the fair comparison needs weights=imagenet, and from-scratch work is what the scratch models (resnet9, resnet20) do.",
        f"Per run: `{command}`; full training: the same with {' '.join(full_overrides)}; each then `kit predict`.",
    ]
    raw = {"extraction": extraction, "probe": {"seconds": probe_seconds, "fit_seconds": fit_seconds, **probe_score}}
    raw["full"] = {"seconds": full_seconds, "epochs": [head, body], **full_score}
    title = "PROBE: linear probe vs full training (generated binary task, 224 px)"
    return {"title": title, "rows": rows, "notes": notes, "raw": raw}
