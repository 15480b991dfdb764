"""Two (or more) pretrained backbones fused: ``model=fusion model.options.backbones=[convnext_tiny, effnetv2_b0]``.

Every backbone is a row of :mod:`kit.models.backbones` and sees the same raw image through its own preprocessing;
their globally pooled features are concatenated (with any forensic stream's, ``model.options.inputs``) under one
head: late fusion, as the Kaggle teams that joined ConvNeXt and Swin features. The model is built by
:func:`kit.models.pretrained.build_on`, the same path as a single backbone: the backbones are nested models named
``"backbone"``, ``"backbone_2"``, ..., so the trainer's two phases freeze all of them, then unfreeze the top
``train.fine_tune.unfreeze`` layers of each (:func:`kit.models.pretrained.unfreeze_top`), and the file saves,
loads and exports like any model's.

Options: ``backbones`` (two or more different rows; the preset configs/models/fusion.yaml names a pair),
``stem_stride`` (applied to every backbone, each within its own stem's stride), ``inputs``, ``stream_widths`` and
``fft_band`` (:mod:`kit.models.streams`). ``model.weights`` is ``imagenet`` (each row's file from the Keras cache)
or ``none``: one weights path cannot serve two backbones.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from kit.errors import KitError, nearest
from kit.models.backbones import BACKBONES, Backbone
from kit.models.common import check_options
from kit.models.pretrained import DEFAULTS as BACKBONE_DEFAULTS
from kit.models.pretrained import build_on
from kit.models.weights import is_random_init

if TYPE_CHECKING:
    import keras

    from kit.config import ModelConfig

DEFAULTS: dict[str, Any] = {"backbones": None, **BACKBONE_DEFAULTS}


def build(cfg: ModelConfig, num_classes: int) -> keras.Model:
    """The rows of ``model.options.backbones`` side by side under one head; raw 0-255 RGB pixels in."""
    options = check_options(cfg, DEFAULTS)
    specs = fused_rows(cfg, options["backbones"])
    if not is_random_init(cfg.weights) and str(cfg.weights).strip().lower() != "imagenet":
        raise KitError(
            f"model.weights={cfg.weights} for fusion: one weights file cannot serve {len(specs)} backbones",
            "use model.weights=imagenet (each row's Keras file) or model.weights=none",
        )
    return build_on(cfg, specs, num_classes, options)


def fused_rows(cfg: ModelConfig, names: Any) -> list[Backbone]:
    """The table rows of ``model.options.backbones``: two or more different row names, or a one-line KitError."""
    example = "e.g. model.options.backbones=[convnext_tiny,effnetv2_b0] (rows: kit list)"
    if not isinstance(names, list | tuple) or len(names) < 2:
        raise KitError(f"model.options.backbones={names!r} for {cfg.name} is not a list of two or more backbones", example)
    for name in names:
        if name not in BACKBONES:
            raise KitError(
                f"unknown backbone '{name}' in model.options.backbones",
                f"use {' or '.join(nearest(str(name), BACKBONES))} (every row: kit list)",
            )
    if len(set(names)) != len(names):
        raise KitError(f"model.options.backbones={list(names)} names a backbone twice", "fuse different backbones: " + example)
    return [BACKBONES[name] for name in names]
