"""The GPU check's measurements (:mod:`bench.gpu` runs them), each through kit's own code: kit's settings
(``kit.settings.load_settings``), its model (``kit.models.registry.build_model``, kit's colour jitter first where kit
puts it on the device) compiled as kit's phase 2 compiles it (``kit.train.phases.enter_phase``), its strategy and
precision (``kit.train.strategy``), its records and training dataset (``kit.data.records``, ``kit.train.session``),
its ColorJitter layer, and ``kit demo``. Module top: stdlib + numpy only, as every bench module."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench.common import Context, cores, epoch_clock, images_per_second, row, steady_seconds

PIPELINE_GOAL = 0.95  # records img/s over held-batch img/s: at or above it, the pipeline keeps the GPU busy


@dataclass(frozen=True)
class GpuSizes:
    models: tuple[tuple[str, int], ...]  # (kit model, image size): the large backbone, then the small one
    batch: int  # per replica
    steps: int  # steps per epoch
    timed_epochs: int  # timed after one untimed epoch (tracing, XLA compilation, cuDNN autotuning)
    images: int  # generated JPEGs built into records for the pipeline items
    pipeline_batches: int  # batches of the pipeline alone, timed after as many untimed ones
    jitter_calls: int  # timed calls of the colour-jitter layer


FULL_GPU = GpuSizes((("effnetb4", 380), ("effnetv2_b0", 224)), 32, 20, 2, 256, 40, 30)
TINY_GPU = GpuSizes((("effnetb4", 64), ("effnetv2_b0", 32)), 2, 2, 1, 16, 2, 2)  # --quick and --gpu-on-cpu


@dataclass
class Check:
    """One run of the GPU check: its sizes, where the held batches live, and what the items found so far."""

    ctx: Context
    sizes: GpuSizes
    device: str  # the first GPU, or the CPU in a rehearsal
    env: dict[str, Any]
    started: str  # when this run began: an item measured by an earlier run says when it was
    done: dict[str, dict] = field(default_factory=dict)  # item name -> its rows, raw figures, seconds, when measured
    models: dict[str, Any] = field(default_factory=dict)  # model name -> compiled with kit's GPU defaults (reused)

    def figure(self, item: str, key: str) -> float | None:
        return self.done.get(item, {}).get("raw", {}).get(key)


# --- kit's model, compiled and timed ------------------------------------------------------------------------


def kit_config(check: Check, model: str, size: int, float16: bool = True, xla: bool = True, *extra: str) -> Any:
    """kit's settings for ``model`` at ``size`` on the binary competition kit was made for (its augmentation: flip,
    colour jitter, CutMix), with records of its own under the work folder."""
    from kit.settings import load_settings

    return load_settings(
        [
            "comp=ai-vs-human",
            "comp.name=gpu-check",
            f"model={model}",
            f"model.image_size={size}",
            "model.weights=none",
            f"train.batch_size={check.sizes.batch}",
            "train.fine_tune.unfreeze=-1",  # the whole backbone trains (BatchNorm stays frozen): the heaviest step
            # quoted: the command line reads its values as YAML, where a bare on/off is a boolean (not the choice)
            f"train.mixed_precision='{'float16' if float16 else 'off'}'",
            f"train.jit_compile='{'on' if xla else 'off'}'",
            f"data.records_root={check.ctx.work / 'gpu' / 'records'}",
            "data.val_fraction=0",  # timing needs no validation split (and its records then have none)
            *extra,
        ]
    )


def compiled_model(cfg: Any, strategy: Any) -> Any:
    """kit's model for ``cfg``, built in the strategy's scope under kit's precision for its device (the colour jitter
    first where kit puts it there), compiled as kit's phase 2: backbone unfrozen, kit's optimizer, loss, metrics, XLA."""
    from kit.data.augment.layer import model_augmentation
    from kit.models.registry import build_model
    from kit.train.phases import Phase, enter_phase
    from kit.train.strategy import choose_precision, device_type, set_precision, with_jitter_on

    device = device_type(strategy)
    cfg = with_jitter_on(cfg, device)
    classes = len(cfg.comp.classes)
    previous = set_precision(choose_precision(cfg, device))
    try:
        with strategy.scope():
            model = build_model(cfg.model, classes, first_layer=model_augmentation(cfg.augment))
        phase = Phase(2, 1, cfg.train.fine_tune.learning_rate, "whole model")
        enter_phase(model, cfg, phase, strategy, binary=classes == 2, num_classes=classes)
    finally:
        set_precision(previous)
    return model


def held_batch(count: int, size: int) -> Any:
    """One generated batch (0..255 float32 pixels, binary targets [B, 1]) repeated from memory: no input cost."""
    import tensorflow as tf

    images = np.random.default_rng(0).uniform(0.0, 255.0, (count, size, size, 3)).astype(np.float32)
    targets = (np.arange(count) % 2).astype(np.float32)[:, None]
    return tf.data.Dataset.from_tensors((images, targets)).repeat()


def timed_fit(model: Any, dataset: Any, sizes: GpuSizes, global_batch: int) -> dict[str, float]:
    """``model.fit`` for one untimed epoch then ``timed_epochs``; an epoch's end reads the loss and metrics back,
    so the clock stops when the GPU's work is done."""
    clock = epoch_clock()
    start = time.perf_counter()
    model.fit(dataset, steps_per_epoch=sizes.steps, epochs=1 + sizes.timed_epochs, verbose=0, callbacks=[clock])
    epoch = steady_seconds(clock.ends) or 0.0
    return {
        "ms_per_step": epoch / sizes.steps * 1000,
        "images_per_second": images_per_second(sizes.steps * global_batch, epoch),
        "first_epoch_s": clock.ends[0] - start,
        "global_batch": global_batch,
    }


def whole_batches(dataset: Any, global_batch: int) -> Any:
    """``dataset`` with its batch size stated (every batch of a repeating dataset is whole): the held batch's input
    signature, so the step compiled for it runs as it is instead of being traced and compiled again."""
    import tensorflow as tf

    def whole(tensor: Any) -> Any:
        return tf.ensure_shape(tensor, [global_batch, *tensor.shape[1:]])

    return dataset.map(lambda images, targets: (whole(images), whole(targets)))


def step_name(model: str, float16: bool, xla: bool) -> str:
    return f"{model}-{'float16' if float16 else 'float32'}-{'xla' if xla else 'noxla'}"


def setup(float16: bool, xla: bool) -> str:
    return f"{'float16' if float16 else 'float32'}, XLA {'on' if xla else 'off'}"


# --- the items ----------------------------------------------------------------------------------------------


def step_time(check: Check, model: str, size: int, float16: bool, xla: bool) -> dict:
    from kit.train.strategy import choose_strategy

    cfg = kit_config(check, model, size, float16, xla)
    strategy, where = choose_strategy(cfg)
    compiled = compiled_model(cfg, strategy)
    replicas = int(strategy.num_replicas_in_sync)
    timing = timed_fit(compiled, held_batch(check.sizes.batch * replicas, size), check.sizes, check.sizes.batch * replicas)
    if float16 and xla:
        check.models[model] = compiled  # kit's GPU defaults: the pipeline item feeds this one
    value = f"{timing['ms_per_step']:.1f} ms/step, {timing['images_per_second']:,.0f} img/s"
    note = f"first epoch (tracing, compilation) {timing['first_epoch_s']:.0f} s; {where}"
    raw = {**timing, "strategy": where, "precision": compiled.dtype_policy.name, "jit_compile": str(compiled.jit_compile)}
    return {"rows": [row(f"{model} {size} px, batch {check.sizes.batch}: {setup(float16, xla)}", value, note=note)], "raw": raw}


def pipeline(check: Check, model: str, size: int) -> dict:
    import tensorflow as tf

    from bench.p1_jpeg import ensure_jpegs
    from bench.p2_380 import build
    from bench.pipelines import batch_sizes, time_batches
    from kit.train.session import start_session

    cfg = kit_config(check, model, size)
    manifest = build(cfg, ensure_jpegs(check.ctx.work / "p1-jpeg" / "jpegs", check.sizes.images))
    session = start_session(cfg, manifest=manifest)  # kit's strategy and precision, jitter_on resolved for the GPU
    train_ds, _ = session.datasets()
    batches = batch_sizes(train_ds)
    images, seconds = time_batches(batches, check.sizes.pipeline_batches, check.sizes.pipeline_batches)
    batches.close()
    alone = images_per_second(images, seconds)
    compiled = check.models.get(model) or compiled_model(session.cfg, session.strategy)
    fed = timed_fit(compiled, whole_batches(train_ds, session.global_batch), check.sizes, session.global_batch)
    held = timed_fit(compiled, tf.data.Dataset.from_tensors(next(iter(train_ds))).repeat(), check.sizes, session.global_batch)
    ratio = fed["images_per_second"] / held["images_per_second"] if held["images_per_second"] else 0.0
    figure = f"kit's pipeline feeding {model} at {size} px ({setup(True, True)}): from records / one batch held in memory"
    note = (
        f"the pipeline alone on {cores()} cores: {alone:,.0f} img/s; {manifest.image_format} records; "
        f"{fed['ms_per_step']:.1f} / {held['ms_per_step']:.1f} ms a step"
    )
    value = f"{fed['images_per_second']:,.0f} / {held['images_per_second']:,.0f} img/s"
    raw = {"records": fed, "held": held, "pipeline_alone_images_per_second": alone, "image_format": manifest.image_format}
    return {"rows": [row(figure, value, f">= {PIPELINE_GOAL:g}x", ratio, ratio >= PIPELINE_GOAL, note)], "raw": raw}


def jitter_cost(check: Check) -> dict:
    import tensorflow as tf

    from kit.data.augment.layer import ColorJitter

    model, size = check.sizes.models[0]
    strength = kit_config(check, model, size).augment.color_jitter  # the competition's
    layer = ColorJitter(strength, seed=1)
    with tf.device(check.device):
        images = tf.random.uniform([check.sizes.batch, size, size, 3], 0.0, 255.0, seed=1)
    step_ms = check.figure(step_name(model, True, True), "ms_per_step")
    rows, raw = [], {"strength": strength}
    for xla in (True, False):
        jitter = tf.function(lambda x: tf.reduce_sum(layer(x, training=True)), jit_compile=xla)  # the sum: one sync
        jitter(images).numpy()  # traces and compiles
        start = time.perf_counter()
        for _ in range(check.sizes.jitter_calls):
            jitter(images).numpy()
        ms = (time.perf_counter() - start) / check.sizes.jitter_calls * 1000
        raw[f"ms_xla_{'on' if xla else 'off'}"] = ms
        share = f"{ms / step_ms:.1%} of the {model} {setup(True, True)} step" if step_ms else "no step time to compare"
        figure = f"ColorJitter layer ({strength:g}) at {size} px, batch {check.sizes.batch}, alone, XLA {'on' if xla else 'off'}"
        rows.append(row(figure, f"{ms:.2f} ms", note=share))
    return {"rows": rows, "raw": raw}


def mirrored(check: Check) -> dict:
    from kit.train.strategy import choose_strategy

    model, size = check.sizes.models[1]
    cfg = kit_config(check, model, size, True, True, "train.strategy=mirrored")
    strategy, where = choose_strategy(cfg)
    replicas = int(strategy.num_replicas_in_sync)
    compiled = compiled_model(cfg, strategy)
    timing = timed_fit(compiled, held_batch(check.sizes.batch * replicas, size), check.sizes, check.sizes.batch * replicas)
    one = check.figure(step_name(model, True, True), "images_per_second")
    rate = timing["images_per_second"]
    figure = (
        f"MirroredStrategy, {replicas} replica(s): {model} {size} px, {setup(True, True)}, batch {check.sizes.batch} a replica"
    )
    note = f"{where}; ratio over one device ({one:,.0f} img/s)" if one else f"{where}; no one-device step to compare"
    return {
        "rows": [row(figure, f"{rate:,.0f} img/s", ratio=rate / one if one else None, note=note)],
        "raw": {**timing, "replicas": replicas},
    }


def demo(check: Check) -> dict:
    from bench.time_to_accuracy import run_demo

    demo_row, raw = run_demo(check.ctx)
    demo_row["figure"] = "kit demo end to end here (train.strategy=auto): hidden-test accuracy, wall time"
    return {"rows": [demo_row], "raw": raw}
