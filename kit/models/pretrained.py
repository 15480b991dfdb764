"""Pretrained backbones from ``keras.applications`` with a small classification head (transfer learning).

Every backbone is a row of :mod:`kit.models.backbones`; :func:`build` reads the row named by ``model.name``:

- the row's ``keras.applications`` constructor, ``include_top=False``, built under its own name and then wrapped
  in a functional model named ``"backbone"`` (some constructors read their name: EfficientNetV2 picks its input
  scaling from it, so ``name="backbone"`` would quietly change the network);
- the row's preprocessing mode in front of it as built-in ops that save and load without custom objects
  (:func:`preprocess`); families that normalise their own 0-255 input (EfficientNet, ConvNeXt, ...) get nothing;
- weights from :mod:`kit.models.weights` (``model.weights``: imagenet, none or a path), then the row's named
  post-load fix (:data:`POST_LOAD`);
- ``model.options.stem_stride`` (default: the row's own, :attr:`Backbone.stem_stride`): 1 rebuilds the stem
  convolution without its stride, the same kernels (so ImageNet weights load as they are), so the first blocks see
  every pixel: forensic detectors remove the first stride for the high-frequency traces (Gragnaniello et al. 2021,
  "Are GAN generated images easy to detect?"; a stride-1 EfficientNet-B2 stem halved the log-loss of a 4th place on
  Hugging Face's AI-or-not). It costs stride**2 times the compute of every later layer;
- ``model.options.inputs`` (:mod:`kit.models.streams`): forensic streams beside the backbone, fused before the head.

:func:`build_on` puts several rows side by side on one image (:mod:`kit.models.fusion`): backbones named
``"backbone"``, ``"backbone_2"``, ..., each with its own preprocessing and pooling, features concatenated.

A backbone with pretrained weights is called with ``training=False``: its BatchNormalization layers stay in inference
mode in both training phases, so fine-tuning on small batches does not wreck the ImageNet statistics (keras-io, "Image
classification via fine-tuning with EfficientNet"; Keras transfer-learning guide). The head is GAP, dropout, an
optional Dense(``model.dense_units``, ReLU, L2 ``model.l2``) with dropout, and the float32 classifier.

The trainer uses :func:`get_backbone`, :func:`freeze_backbone` and :func:`unfreeze_top` for the two
phases (head first, then the top of the backbone at a lower learning rate); recompile after each change. The last
two act on every backbone of the model (:func:`get_backbones`).
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.errors import KitError
from kit.models.backbones import BACKBONES, IMAGENET_STDDEV_RGB, PREPROCESSING, Backbone
from kit.models.common import BN_MOMENTUM, check_num_classes, check_options, classifier_output, image_input, l2
from kit.models.hub_backbones import BLOCK_LISTS
from kit.models.streams import STREAM_DEFAULTS, fuse_streams, read_streams
from kit.models.weights import fits, resolve_weights

if TYPE_CHECKING:
    import keras

    from kit.config import ModelConfig


# --- building ----------------------------------------------------------------------------------------

# model.options of every backbone model; "stem_stride": None is the row's own stride (Family.stem_stride).
DEFAULTS: dict[str, Any] = {"stem_stride": None, **STREAM_DEFAULTS}
BACKBONE = "backbone"  # the nested backbone's name; a second one (kit.models.fusion) is "backbone_2", and so on


def build(cfg: ModelConfig, num_classes: int) -> keras.Model:
    """The backbone row named ``cfg.name`` under kit's head; the model takes raw 0-255 RGB pixels."""
    return build_on(cfg, [BACKBONES[cfg.name]], num_classes, check_options(cfg, DEFAULTS))


def build_on(cfg: ModelConfig, specs: list[Backbone], num_classes: int, options: dict[str, Any]) -> keras.Model:
    """``specs``' backbones side by side on the same image, their pooled features (and any forensic stream's,
    :mod:`kit.models.streams`) concatenated under one head; ``options`` are checked ``model.options``."""
    import keras

    check_num_classes(num_classes)
    streams = read_streams(cfg, options)
    strides = [stem_stride(cfg, options["stem_stride"], spec) for spec in specs]
    for spec in specs:
        if cfg.image_size < spec.min_size:
            raise KitError(
                f"{spec.name} needs model.image_size >= {spec.min_size}, got {cfg.image_size}",
                f"use e.g. model.image_size={max(spec.min_size, 64)} (its native size is {spec.native_size})",
            )
    weights_paths = [resolve_weights(cfg.weights, spec) for spec in specs]  # before building: a missing file fails fast

    inputs = image_input(cfg)
    pooled = []
    for index, (spec, stride, weights_path) in enumerate(zip(specs, strides, weights_paths, strict=True)):
        suffix = "" if index == 0 else f"_{index + 1}"
        backbone = make_backbone(spec, cfg.image_size, stride, name=BACKBONE + suffix)
        if weights_path is not None:
            load_backbone_weights(backbone, weights_path, spec)
        else:
            track_statistics_quickly(backbone)
        x = preprocess(inputs, spec.preprocessing, suffix)
        # Pretrained: training=False keeps BatchNorm in inference mode even after unfreezing (see the module
        # docstring). Without weights there are no statistics to keep: BatchNorm learns them as it trains.
        x = backbone(x, training=False if weights_path is not None else None)
        pooled.append(keras.layers.GlobalAveragePooling2D(name="gap" + suffix)(x))
    x = pooled[0] if len(pooled) == 1 else keras.layers.Concatenate(name="backbone_features")(pooled)
    x = fuse_streams(streams, inputs, x, cfg.l2)
    return keras.Model(inputs, head(x, cfg, num_classes), name=cfg.name)


def head(x: keras.KerasTensor, cfg: ModelConfig, num_classes: int) -> keras.KerasTensor:
    """kit's head on pooled backbone features: dropout, an optional Dense(``model.dense_units``) with dropout, and the
    float32 classifier."""
    import keras

    if cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
    if cfg.dense_units > 0:
        x = keras.layers.Dense(cfg.dense_units, activation="relu", kernel_regularizer=l2(cfg.l2), name="head_dense")(x)
        if cfg.dropout > 0:
            x = keras.layers.Dropout(cfg.dropout, name="dense_dropout")(x)
    return classifier_output(x, num_classes)


def stem_stride(cfg: ModelConfig, value: Any, spec: Backbone) -> int:
    """``model.options.stem_stride`` for ``spec``: None is the row's own; otherwise a divisor of it (1: no stride)."""
    if value is None:
        return spec.stem_stride
    allowed = [d for d in range(1, spec.stem_stride + 1) if spec.stem_stride % d == 0]
    if isinstance(value, bool) or value not in allowed:
        raise KitError(
            f"model.options.stem_stride={value!r} does not fit {spec.name}, whose stem has stride {spec.stem_stride}",
            f"use {' or '.join(map(str, allowed))} (1 keeps every pixel), or null for the row's own stride",
        )
    return int(value)


def make_backbone(spec: Backbone, image_size: int, stride: int | None = None, name: str = BACKBONE) -> keras.Model:
    """The row's notop ``keras.applications`` model, randomly initialised, as a functional model named ``name``;
    its stem convolution at ``stride`` when that differs from the row's (:func:`restride_stem`)."""
    import keras

    application = getattr(keras.applications, spec.constructor)
    native = application(include_top=False, weights=None, input_shape=(image_size, image_size, 3))
    if stride is not None and stride != spec.stem_stride:
        native = restride_stem(native, stride)
    return keras.Model(native.input, native.output, name=name)


def track_statistics_quickly(model: keras.Model) -> None:
    """Every BatchNormalization of a backbone trained without weights (nested models included) at kit's scratch
    momentum (:data:`kit.models.common.BN_MOMENTUM`): keras.applications builds them at 0.99-0.999, whose moving
    statistics after a few hundred steps still describe the untrained first batches, so the model predicts one class
    at inference while its training accuracy climbs (PROBE's full training on 2,000 images, BENCHMARKS.md)."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.Model):
            track_statistics_quickly(layer)
        elif isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = BN_MOMENTUM


def first_strided_conv(model: keras.Model) -> keras.layers.Conv2D | None:
    """The stem: the first Conv2D with a stride above 1, in layer order, nested models (ConvNeXt's stem) included."""
    import keras

    for layer in model.layers:
        found = first_strided_conv(layer) if isinstance(layer, keras.Model) else None
        if found is None and isinstance(layer, keras.layers.Conv2D) and max(layer.strides) > 1:
            found = layer
        if found is not None:
            return found
    return None


def restride_stem(native: keras.Model, stride: int) -> keras.Model:
    """``native`` with its stem convolution at ``stride``: the same kernel shape (so every weights file still loads,
    by name or by order), fewer pixels skipped. The rest of the network is unchanged: each later stride still halves
    the now larger feature maps (the compute grows by stride**2).

    ``clone_model`` rebuilds the graph on a fresh input; its ``clone_function`` returns every other layer itself
    (shared, not copied) and the stem as a new Conv2D from the old one's config with the new strides. A nested
    Sequential (ConvNeXt's stem and downsampling blocks) was built for the old feature-map size, so it becomes a new
    Sequential of its (cloned) layers, built on its first call at the new size.
    """
    import keras

    stem = first_strided_conv(native)

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if layer is stem:
            return type(layer).from_config({**layer.get_config(), "strides": (stride, stride)})
        if isinstance(layer, keras.Sequential):
            return keras.Sequential([clone(inner) for inner in layer.layers], name=layer.name)
        return layer

    return keras.models.clone_model(native, clone_function=clone)


def preprocess(x: keras.KerasTensor, mode: str, suffix: str = "") -> keras.KerasTensor:
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
        mean=list(steps.mean), variance=[s * s for s in steps.std], dtype="float32", name=f"{mode}_preprocess{suffix}"
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


def get_backbones(model: keras.Model) -> list[keras.Model]:
    """The nested backbone models (layers named ``"backbone"``, ``"backbone_2"``, ...), in order; [] for scratch models."""
    import keras

    named = re.compile(rf"{BACKBONE}(_\d+)?")
    return [layer for layer in model.layers if named.fullmatch(layer.name) and isinstance(layer, keras.Model)]


def get_backbone(model: keras.Model) -> keras.Model | None:
    """The (first) nested backbone model, or None for models trained from scratch."""
    backbones = get_backbones(model)
    return backbones[0] if backbones else None


def freeze_backbone(model: keras.Model) -> bool:
    """Phase 1: freeze every backbone so only the head (and any forensic stream's stem) trains. Returns False for
    scratch models.

    Recompile the model afterwards: Keras reads ``trainable`` when ``compile``/``fit`` builds the step.
    """
    backbones = get_backbones(model)
    for backbone in backbones:
        backbone.trainable = False
    return bool(backbones)


def unfreeze_top(model: keras.Model, n: int, pretrained: bool = True) -> bool:
    """Phase 2: make the top ``n`` units of each backbone trainable (``n=-1``: all), BatchNorm only without
    pretrained weights.

    Follows keras-io's ``unfreeze_model`` (image_classification_efficientnet_fine_tuning.py): counts the
    last ``n`` entries of ``backbone.layers`` (weightless layers such as activations count too) and keeps
    every BatchNormalization layer of a ``pretrained`` backbone frozen, because updating BN statistics/scales on
    small fine-tuning batches destroys what the backbone learned. A backbone without weights has no statistics to
    keep: its BatchNorm layers in the top ``n`` train (a frozen one runs in inference mode in Keras 3, so it would
    normalise with its initial mean 0 and variance 1 for good). A keras-hub backbone whose transformer blocks sit
    inside one layer counts those blocks (:func:`backbone_units`). Units below the top ``n`` are frozen again.
    Returns False for scratch models. Recompile afterwards (with a lower learning rate).
    """
    import keras

    if not isinstance(n, int) or n < -1:
        raise KitError(f"unfreeze={n!r} is not a number of layers", "use a count >= 0, or -1 for the whole backbone")
    backbones = get_backbones(model)
    for backbone in backbones:
        units = backbone_units(backbone)
        top = units if n == -1 else units[len(units) - min(n, len(units)) :]
        unfrozen = {id(unit) for unit in top}
        # The container must be trainable for any sub-layer to count (Keras 3 hides all weights of a frozen parent).
        backbone.trainable = True
        for layer in backbone.layers:  # a layer of blocks opens with its top block (its own final norm sits above it)
            blocks = held_blocks(layer)
            if blocks:
                layer.trainable = any(id(block) in unfrozen for block in blocks)
        for unit in units:
            frozen_norm = pretrained and isinstance(unit, keras.layers.BatchNormalization)
            unit.trainable = id(unit) in unfrozen and not frozen_norm
    return bool(backbones)


def held_blocks(layer: keras.layers.Layer) -> list[keras.layers.Layer]:
    """The transformer blocks ``layer`` holds, when it is a keras-hub row's layer of blocks
    (:data:`kit.models.hub_backbones.BLOCK_LISTS`); else []."""
    attribute = BLOCK_LISTS.get(type(layer).__name__)
    return list(getattr(layer, attribute)) if attribute else []


def backbone_units(backbone: keras.Model) -> list[keras.layers.Layer]:
    """What phase 2 counts, bottom up: the backbone's layers, a layer holding transformer blocks replaced by its blocks."""
    return [unit for layer in backbone.layers for unit in (held_blocks(layer) or [layer])]
