"""Pretrained backbones from ``keras.applications`` with a small classification head (transfer learning).

Every backbone is a row of :mod:`kit.models.backbones`; :func:`build` reads the row named by ``model.name``:

- the row's ``keras.applications`` constructor, ``include_top=False``, built under its own name and then wrapped
  in a functional model named ``"backbone"`` (some constructors read their name: EfficientNetV2 picks its input
  scaling from it, so ``name="backbone"`` would quietly change the network);
- the row's preprocessing mode in front of it as built-in ops that save and load without custom objects
  (:func:`preprocess`); families that normalise their own 0-255 input (EfficientNet, ConvNeXt, ...) get nothing;
- weights from :mod:`kit.models.weights` (``model.weights``: imagenet, none or a path), then the row's named
  post-load fix (:data:`POST_LOAD`).

The backbone is called with ``training=False``: its BatchNormalization layers stay in inference mode in both
training phases, so fine-tuning on small batches does not wreck the ImageNet statistics (keras-io, "Image
classification via fine-tuning with EfficientNet"; Keras transfer-learning guide). The head is GAP, dropout, an
optional Dense(``model.dense_units``, ReLU, L2 ``model.l2``) with dropout, and the float32 classifier.

The trainer uses :func:`get_backbone`, :func:`freeze_backbone` and :func:`unfreeze_top` for the two
phases (head first, then the top of the backbone at a lower learning rate); recompile after each change.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from kit.errors import KitError
from kit.models.backbones import BACKBONES, IMAGENET_STDDEV_RGB, PREPROCESSING, Backbone
from kit.models.common import check_num_classes, check_options, classifier_output, image_input, l2
from kit.models.weights import fits, resolve_weights

if TYPE_CHECKING:
    import keras

    from kit.config import ModelConfig


# --- building ----------------------------------------------------------------------------------------


def build(cfg: ModelConfig, num_classes: int) -> keras.Model:
    """The backbone row named ``cfg.name`` under kit's head; the model takes raw 0-255 RGB pixels."""
    import keras

    spec = BACKBONES[cfg.name]
    check_options(cfg, {})
    check_num_classes(num_classes)
    if cfg.image_size < spec.min_size:
        raise KitError(
            f"{spec.name} needs model.image_size >= {spec.min_size}, got {cfg.image_size}",
            f"use e.g. model.image_size={max(spec.min_size, 64)} (its native size is {spec.native_size})",
        )
    weights_path = resolve_weights(cfg.weights, spec)  # before building: a missing file fails fast
    backbone = make_backbone(spec, cfg.image_size)
    if weights_path is not None:
        load_backbone_weights(backbone, weights_path, spec)

    inputs = image_input(cfg)
    x = preprocess(inputs, spec.preprocessing)
    # training=False keeps BatchNorm in inference mode even after unfreezing (see the module docstring).
    x = backbone(x, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
    if cfg.dense_units > 0:
        x = keras.layers.Dense(cfg.dense_units, activation="relu", kernel_regularizer=l2(cfg.l2), name="head_dense")(x)
        if cfg.dropout > 0:
            x = keras.layers.Dropout(cfg.dropout, name="dense_dropout")(x)
    outputs = classifier_output(x, num_classes)
    return keras.Model(inputs, outputs, name=spec.name)


def make_backbone(spec: Backbone, image_size: int) -> keras.Model:
    """The row's notop ``keras.applications`` model, randomly initialised, as a functional model named "backbone"."""
    import keras

    application = getattr(keras.applications, spec.constructor)
    native = application(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    return keras.Model(native.input, native.output, name="backbone")


def preprocess(x: keras.KerasTensor, mode: str) -> keras.KerasTensor:
    """``preprocess_input`` of Keras' ``mode`` ("caffe", "tf", "torch"; "included": nothing) on 0-255 RGB, as
    graph ops that save and load: ``keras.ops.flip`` for RGB -> BGR and a ``Normalization`` layer with constant
    mean and variance, a plain ``(x - mean) / std`` with no weights, so nothing here can ever be trained. A Lambda
    would not load safely. Kept in float32 under mixed precision so the subtraction is exact."""
    import keras

    steps = PREPROCESSING[mode]
    if steps is None:
        return x
    if steps.to_bgr:
        x = keras.ops.flip(x, axis=-1)
    return keras.layers.Normalization(
        mean=list(steps.mean), variance=[s * s for s in steps.std], dtype="float32", name=f"{mode}_preprocess"
    )(x)


# --- weights -----------------------------------------------------------------------------------------


def load_backbone_weights(backbone: keras.Model, path: Path, spec: Backbone) -> None:
    """``backbone.load_weights(path)``, a mismatch as a KitError naming the backbone the file fits; then the
    row's post-load fix."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy-2 __array__ chatter from h5py; errors still raise
            backbone.load_weights(str(path))
    except Exception as exc:  # noqa: BLE001 - Keras raises ValueError/KeyError/OSError for a wrong file
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise KitError(
            f"weights file {path} does not fit the {spec.name} backbone ({fits(path)}): {reason}",
            f"give backbone weights (get_backbone(model).save_weights('b.weights.h5') or Keras' {spec.weights_file}),"
            " not whole-model weights",
        ) from None
    if spec.post_load is not None:
        POST_LOAD[spec.post_load](backbone)


def fix_efficientnet_variance(backbone: keras.Model) -> None:
    """Make the stem divide by the ImageNet std, as ``EfficientNetB4(weights="imagenet")`` does.

    Keras' EfficientNet (V1) weight files store the ImageNet *standard deviations* as the Normalization
    layer's *variance* (tensorflow/tensorflow#49930), so the layer divides by sqrt(std); with
    ``weights="imagenet"`` Keras appends a Rescaling(1/sqrt(std)) to compensate. We build the backbone
    with ``weights=None`` (to load from our own cache or a path) and compensate instead by storing the
    true variance std**2. Idempotent: files saved after the fix already hold std**2 and are left alone.
    EfficientNetV2 needs nothing: its stem Normalization takes the true variance as constants (no weights).
    """
    import keras
    import numpy as np

    for layer in backbone.layers:
        if isinstance(layer, keras.layers.Normalization):
            variance = next(v for v in layer.weights if v.path.endswith("variance"))
            if np.allclose(np.asarray(variance), IMAGENET_STDDEV_RGB, atol=1e-4):
                variance.assign(np.square(IMAGENET_STDDEV_RGB).astype("float32"))
                layer.finalize_state()  # the layer caches mean/variance tensors; refresh them
            return


# The fixes a row may name (Backbone.post_load), run after its weights are loaded.
POST_LOAD: dict[str, Callable[[keras.Model], None]] = {"efficientnet_variance": fix_efficientnet_variance}


# --- phases: freeze and unfreeze (used by kit.train.trainer) -----------------------------------------


def get_backbone(model: keras.Model) -> keras.Model | None:
    """The nested backbone model (the layer named ``"backbone"``), or None for models trained from scratch."""
    import keras

    for layer in model.layers:
        if layer.name == "backbone" and isinstance(layer, keras.Model):
            return layer
    return None


def freeze_backbone(model: keras.Model) -> bool:
    """Phase 1: freeze the whole backbone so only the head trains. Returns False for scratch models.

    Recompile the model afterwards: Keras reads ``trainable`` when ``compile``/``fit`` builds the step.
    """
    backbone = get_backbone(model)
    if backbone is None:
        return False
    backbone.trainable = False
    return True


def unfreeze_top(model: keras.Model, n: int) -> bool:
    """Phase 2: make the top ``n`` layers of the backbone trainable (``n=-1``: all), BatchNorm never.

    Follows keras-io's ``unfreeze_model`` (image_classification_efficientnet_fine_tuning.py): counts the
    last ``n`` entries of ``backbone.layers`` (weightless layers such as activations count too) and keeps
    every BatchNormalization layer frozen, because updating BN statistics/scales on small fine-tuning
    batches destroys what the backbone learned. Layers below the top ``n`` are frozen again. Returns False
    for scratch models. Recompile afterwards (with a lower learning rate).
    """
    import keras

    if not isinstance(n, int) or n < -1:
        raise KitError(f"unfreeze={n!r} is not a number of layers", "use a count >= 0, or -1 for the whole backbone")
    backbone = get_backbone(model)
    if backbone is None:
        return False
    layers = backbone.layers
    top = layers if n == -1 else layers[len(layers) - min(n, len(layers)) :]
    unfrozen = {id(layer) for layer in top}
    # The container must be trainable for any sub-layer to count (Keras 3 hides all weights of a frozen parent).
    backbone.trainable = True
    for layer in layers:
        layer.trainable = id(layer) in unfrozen and not isinstance(layer, keras.layers.BatchNormalization)
    return True
