"""Pieces every builder shares: the raw-pixel input, option checking, L2 and the float32 output layer.

The model contract (docs/ARCHITECTURE.md, kit.models.registry): images enter as float 0-255 RGB of shape
(S, S, 3); each model preprocesses inside its own graph, so an exported ``.keras`` file takes raw images
in a Kaggle kernel or in TTA. The output is one sigmoid unit for two classes (the pipeline gives binary
targets shaped (B, 1), which binary F1 needs) and ``num_classes`` softmax units otherwise. The output
layer computes in float32 even under a global ``mixed_float16`` policy: the Keras mixed-precision guide
keeps the last activation in float32 because a float16 softmax/sigmoid under- and overflows and makes
the loss numerically unstable.

The builders use only built-in Keras layers (no Lambda, no custom classes), so ``keras.models.load_model`` needs
no ``custom_objects`` and no prior ``import kit``. Two exceptions, by setting: with ``augment.jitter_on=model`` the
trainer puts kit's colour jitter first (``registry.build_model(first_layer=...)``), a layer registered as
``kit>ColorJitter`` that loads once ``kit.data.augment.layer`` is imported (identity in inference); and
``model.options.inputs`` with a forensic stream adds ``kit>NoiseResidual`` / ``kit>LogSpectrum``
(:mod:`kit.models.forensic`). :func:`kit.run_model.load_model` imports both modules.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from kit.errors import KitError, nearest

if TYPE_CHECKING:
    import keras

    from kit.config import ModelConfig


def check_options(cfg: ModelConfig, defaults: Mapping[str, Any]) -> dict[str, Any]:
    """``cfg.options`` merged over ``defaults``; an unknown key is a one-line KitError with the nearest valid keys."""
    options = dict(cfg.options or {})
    for key in options:
        if key not in defaults:
            if defaults:
                hint = f"did you mean {' or '.join(f'model.options.{k}' for k in nearest(str(key), defaults))}? "
                hint += f"(valid for {cfg.name}: {', '.join(sorted(defaults))})"
            else:
                hint = f"remove it: {cfg.name} takes no model.options"
            raise KitError(f"unknown setting 'model.options.{key}' for model {cfg.name}", hint)
    return {**defaults, **options}


def positive_ints(cfg: ModelConfig, key: str, value: Any) -> list[int]:
    """A non-empty list of positive ints (e.g. filters or units), or a KitError saying what was expected."""
    values = value if isinstance(value, list | tuple) else [value]
    if not values or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values):
        raise KitError(
            f"model.options.{key}={value!r} for {cfg.name} is not a list of positive integers",
            f"use e.g. model.options.{key}=[32,64]",
        )
    return [int(v) for v in values]


def choice(cfg: ModelConfig, key: str, value: Any, allowed: Sequence[Any]) -> Any:
    """``value`` if it is one of ``allowed`` (a bool is never a number here), else a one-line KitError listing them."""
    if isinstance(value, bool) or value not in allowed:
        raise KitError(
            f"model.options.{key}={value!r} for {cfg.name} is not one of {', '.join(map(str, allowed))}",
            f"use e.g. model.options.{key}={allowed[0]}",
        )
    return value


def check_num_classes(num_classes: int) -> None:
    if num_classes < 2:
        raise KitError(
            f"a classifier needs at least 2 classes, got {num_classes}", "check comp.classes or the labels in the data"
        )


def image_input(cfg: ModelConfig) -> keras.KerasTensor:
    """The model input: raw 0-255 float RGB pixels of shape (S, S, 3)."""
    import keras

    return keras.Input((cfg.image_size, cfg.image_size, 3), dtype="float32", name="image")


def l2(value: float) -> keras.regularizers.Regularizer | None:
    """An L2 kernel regularizer, or None when ``value`` is 0 (no penalty term at all)."""
    import keras

    return keras.regularizers.L2(float(value)) if value and value > 0 else None


def classifier_output(x: keras.KerasTensor, num_classes: int, decay: float = 0.0) -> keras.KerasTensor:
    """One sigmoid unit for binary problems, else ``num_classes`` softmax units; float32 under mixed precision.

    ``decay`` is an optional L2 on the kernel (ResNet20 decays every weight, as in He et al. 2016).
    """
    import keras

    check_num_classes(num_classes)
    binary = num_classes == 2
    # dtype="float32" overrides a global mixed_float16 policy for this layer only: the matmul and the
    # activation run in float32 (Keras mixed-precision guide, "the last layer should be float32").
    return keras.layers.Dense(
        1 if binary else num_classes,
        activation="sigmoid" if binary else "softmax",
        kernel_regularizer=l2(decay),
        dtype="float32",
        name="predictions",
    )(x)


# Keras's default BatchNormalization momentum (0.99) averages over ~100 steps: on a Kaggle-sized set of a
# few thousand images an epoch is only tens of steps, so after a short training the moving statistics still
# describe the first, untrained batches and validation accuracy collapses while training accuracy is high
# (seen on the digits demo: 0.97 train vs 0.31 val after 5 epochs). 0.9 (PyTorch's default) tracks in ~10.
BN_MOMENTUM = 0.9


def batch_norm(name: str) -> keras.layers.Layer:
    """BatchNormalization for models trained from scratch (momentum suited to small data sets)."""
    import keras

    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, name=name)
