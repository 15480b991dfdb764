"""P3: kit's training input pipeline over ``keras.utils.image_dataset_from_directory`` + the Keras augmentation
layers with the same ranges (goal >= 2x)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.common import BATCH, Context
from bench.pipelines import PIPE_CLASSES, PIPE_JITTER, PIPE_SIZE, keras_color_jitter, pipe_section


def _keras_layers_dataset(folder: Path, num_classes: int) -> Any:
    """keras.utils.image_dataset_from_directory + RandomFlip, RandomColorJitter, CutMix (the same ranges as kit)."""
    import keras
    import tensorflow as tf

    flip = keras.layers.RandomFlip("horizontal", seed=1)
    jitter = keras_color_jitter(PIPE_JITTER, seed=2)
    cutmix = keras.layers.CutMix(factor=1.0, seed=3)

    def augment(images: Any, labels: Any) -> tuple[Any, Any]:
        images = jitter(flip(images, training=True), training=True)
        mixed = cutmix({"images": images, "labels": labels}, training=True)
        return mixed["images"], mixed["labels"]

    dataset = keras.utils.image_dataset_from_directory(
        str(folder),
        label_mode="categorical",
        image_size=(PIPE_SIZE, PIPE_SIZE),
        batch_size=BATCH,
        shuffle=True,
        seed=1,
        verbose=False,
    )
    assert len(dataset.class_names) == num_classes
    return dataset.repeat().map(augment, num_parallel_calls=tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


def section_p3(ctx: Context) -> dict:
    return pipe_section(
        ctx,
        "P3",
        title="P3: kit input pipeline vs image_dataset_from_directory + Keras layers",
        other_name="image_dataset_from_directory",
        goal=2.0,
        open_baseline=lambda folder: _keras_layers_dataset(folder, PIPE_CLASSES),
        baseline_note="Baseline: keras.utils.image_dataset_from_directory -> map(RandomFlip, RandomColorJitter with kit's "
        "ranges, CutMix on images and labels), num_parallel_calls=AUTOTUNE, prefetch(AUTOTUNE).",
    )
