"""P2: kit's training input pipeline over the ``ImageDataGenerator.flow_from_directory`` way (goal >= 5x), and
kit's pipeline with the augmentations added one at a time."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from bench.common import BATCH, Context, images_per_second, log
from bench.pipelines import PIPE_JITTER, PIPE_SIZE, batch_sizes, kit_dataset, pipe_section, time_batches


def _generator_flow(folder: Path) -> Any:
    """The original solution's way: ImageDataGenerator.flow_from_directory with what it has of the augmentations.

    Gone from the ``keras`` namespace in Keras 3 but still at ``tf.keras.preprocessing.image`` (the legacy
    implementation in keras.src.legacy). It has flips, a multiplicative brightness range and a channel shift;
    it has no contrast, saturation, hue or CutMix, so it does less work per image than kit does here.
    """
    import tensorflow as tf

    generator = tf.keras.preprocessing.image.ImageDataGenerator(
        horizontal_flip=True,
        brightness_range=(1.0 - PIPE_JITTER, 1.0 + PIPE_JITTER),
        channel_shift_range=PIPE_JITTER * 255.0 / 4.0,  # a stand-in for hue jitter
    )
    flow = generator.flow_from_directory(
        str(folder), target_size=(PIPE_SIZE, PIPE_SIZE), batch_size=BATCH, class_mode="categorical", shuffle=True, seed=1
    )
    return flow


def kit_breakdown(ctx: Context, cfg: Any) -> dict[str, float]:
    """kit's pipeline with the augmentations added one at a time: which stage bounds it (same records)."""
    base = dataclasses.replace(cfg.augment, mode="none")
    variants = {
        "records only": base,
        "+ flip": dataclasses.replace(base, mode="online", color_jitter=0.0, cutmix=0.0),
        "+ flip + color jitter": dataclasses.replace(base, mode="online", cutmix=0.0),
        "+ flip + color jitter + CutMix": cfg.augment,
        # Before/after of the fused kernel: the same maths as plain TF ops, one full pass over the batch each.
        "+ flip + color jitter + CutMix, without XLA (augment.jit_compile=false)": dataclasses.replace(
            cfg.augment, jit_compile=False
        ),
    }
    rates = {}
    for stage, augment in variants.items():
        batches = batch_sizes(kit_dataset(dataclasses.replace(cfg, augment=augment)))
        images, seconds = time_batches(batches, 3 * ctx.sizes.pipe_skip, ctx.sizes.pipe_batches)
        batches.close()  # stops its prefetching before the next variant is timed
        rates[stage] = images_per_second(images, seconds)
        log(f"  kit pipeline, {stage}: {rates[stage]:.0f} img/s")
    return rates


def section_p2(ctx: Context) -> dict:
    return pipe_section(
        ctx,
        "P2",
        title="P2: kit input pipeline vs ImageDataGenerator.flow_from_directory",
        other_name="ImageDataGenerator",
        goal=5.0,
        open_baseline=_generator_flow,
        baseline_note="ImageDataGenerator is gone from the `keras` namespace in Keras 3.15 but still reachable as "
        "tf.keras.preprocessing.image.ImageDataGenerator (keras.src.legacy); verified in this run. It gets "
        f"horizontal_flip, brightness_range=({1 - PIPE_JITTER:g}, {1 + PIPE_JITTER:g}) and channel_shift_range as a "
        "stand-in for hue; it has no contrast/saturation/hue jitter and no CutMix, so it does less work than kit.",
        breakdown=kit_breakdown,
    )
