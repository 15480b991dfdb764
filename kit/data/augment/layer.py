"""kit's colour jitter as a Keras layer, for ``augment.jitter_on=model``: the model's first layer, on its device.

At 380 px the colour jitter bounds the CPU input pipeline (BENCHMARKS.md, the pipeline at 380 px: JPEG records 2,861 img/s
with flip, 1,127 with flip + jitter on 2 cores). Keras runs preprocessing layers that sit inside the model on the
model's device (keras.io, "Working with preprocessing layers": on-device preprocessing), while ``tf.data``
maps always run on the CPU; so on a GPU or TPU the jitter moves here and the pipeline keeps the flips and
CutMix/MixUp (:func:`kit.train.strategy.choose_jitter_on` decides, once).

The layer applies exactly the pipeline's jitter: the parameters come from :func:`kit.data.augment.draws.jitter`
(same ranges for the same ``strength``) and the pixels from :func:`kit.data.augment.ops.jitter`; only the seeds
differ (a ``keras.random.SeedGenerator`` here, a ``tf.random.Generator`` there). In inference
(``training=False``: ``predict``, ``evaluate``, TTA, export) it returns its input unchanged.

Order: in the pipeline the jitter comes before CutMix/MixUp (each source image jittered on its own draw); here
it comes after them, so a CutMixed image is jittered as one image (the pasted box shares its host's draw) and a
MixUped blend is jittered once. The pixel maths and the parameter ranges are the same.

Registered as ``kit>ColorJitter``: ``keras.models.load_model`` finds it without ``custom_objects`` once this
module is imported. Importing it imports Keras and TensorFlow: only kit.train and the loader import it.
"""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="kit")
class ColorJitter(keras.layers.Layer):
    """Per-image brightness, contrast, saturation and hue jitter of raw 0..255 RGB pixels, in training only.

    ``strength``: ``augment.color_jitter`` (the ranges of :func:`kit.data.augment.ops.jitter_ranges`); ``seed``:
    the seed of its ``keras.random.SeedGenerator`` (None: a random one). Pixels stay float32 under a mixed
    precision policy (the layer's dtype), as the raw input; the model's own Rescaling/Normalization casts after.
    """

    def __init__(self, strength: float, seed: int | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")  # a mixed_float16 global policy must not turn pixels into float16
        super().__init__(**kwargs)
        self.strength = float(strength)
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    def call(self, images: Any, training: bool | None = None) -> Any:
        if not training or self.strength <= 0:
            return images
        import tensorflow as tf

        from kit.data.augment import draws, ops

        seed = tf.cast(self.seed_generator.next(), tf.int64)  # [2]: one seed a batch, as the pipeline's
        brightness, contrast, matrix = draws.jitter(seed, tf.shape(images)[0], self.strength)
        # fused: the elementwise form of the pipeline's XLA kernel; on an accelerator the train step is one XLA
        # program (train.jit_compile=auto), which fuses it with the model's first layers.
        return ops.jitter(images, brightness, contrast, matrix, ops.tensorflow_ops(), fused=True)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "strength": self.strength, "seed": self.seed}


def model_augmentation(cfg: Any) -> ColorJitter | None:
    """The layer to put first in the model for ``cfg`` (an AugmentConfig whose ``jitter_on`` is resolved), or None.

    A ColorJitter when the online augmenter would jitter but ``jitter_on`` is ``model`` (the augmenter then skips
    it: :mod:`kit.data.augment.online`); None otherwise (offline, no jitter, or jitter in the pipeline).
    """
    if str(cfg.mode) != "online" or cfg.color_jitter <= 0 or str(cfg.jitter_on) != "model":
        return None
    return ColorJitter(cfg.color_jitter, seed=int(cfg.seed), name="color_jitter")
