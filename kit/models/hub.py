"""keras-hub foundation backbones under kit's head: ``model=vit_b16`` (any row of :mod:`kit.models.hub_backbones`).

:func:`build` reads the row named by ``model.name``:

- the image network: the row's preset loaded from a local folder (:mod:`kit.models.hub_presets`: a kernel's Kaggle
  Model, the kagglehub cache, or ``model.weights=<folder>``; the folder's config.json defines the architecture), or
  with ``model.weights=none`` the row's ``network_class`` built from its ``architecture``, randomly initialised. CLIP
  and SigLIP presets hold a text tower too: kit keeps the row's ``encoder`` (the vision tower). The network is wrapped
  under the name ``"backbone"`` (:func:`named_backbone`), so the trainer's two phases, probe and
  export find it as they find a ``keras.applications`` backbone;
- the row's preprocessing in front of it (:func:`kit.models.pretrained.preprocess`, built-in ops), so the model takes
  raw 0-255 RGB like every kit model;
- the row's pooling on its output (``cls``: the class token; ``mean``: the mean of the tokens; ``pooled``: the
  network's own pooled vector), all built-in layers, then kit's head (:func:`kit.models.pretrained.head`).

Phase 2 unfreezes the top ``train.fine_tune.unfreeze`` transformer blocks (:func:`kit.models.pretrained.unfreeze_top`
counts blocks for these rows). keras_hub is imported only here, when a hub row is built, and by
:func:`kit.run_model.load_model` for a run whose model is a hub row: ``import kit`` never imports it.
"""

from __future__ import annotations

from types import ModuleType
from typing import TYPE_CHECKING

from kit.errors import KitError
from kit.models.common import check_num_classes, check_options, image_input
from kit.models.hub_backbones import HUB_BACKBONES, HUB_EXTRA, HubBackbone
from kit.models.hub_presets import resolve_preset
from kit.models.pretrained import BACKBONE, head, preprocess

if TYPE_CHECKING:
    import keras

    from kit.config import ModelConfig


def keras_hub() -> ModuleType:
    """The keras_hub module, or a one-line KitError naming the extra that installs it."""
    try:
        import keras_hub as module
    except ImportError:
        raise KitError("the keras-hub backbones need the keras_hub package, which is not installed", HUB_EXTRA) from None
    return module


def build(cfg: ModelConfig, num_classes: int) -> keras.Model:
    """The hub row named ``cfg.name`` under kit's head; the model takes raw 0-255 RGB pixels."""
    import keras

    row = HUB_BACKBONES[cfg.name]
    check_options(cfg, {})
    check_num_classes(num_classes)
    check_size(row, cfg.image_size)
    preset = resolve_preset(cfg.weights, row)  # before building: a wrong folder fails fast
    network = load_network(row, preset, cfg.image_size) if preset is not None else random_network(row, cfg.image_size)
    backbone = named_backbone(network)
    inputs = image_input(cfg)
    x = preprocess(inputs, row.preprocessing)
    # Pretrained: training=False keeps dropout and any statistics in inference mode in both phases, as for the
    # keras.applications rows; without weights the network trains as it is.
    if isinstance(backbone.input, dict):  # DINOv2 and CLIP name their one input: feed it by name, as they expect
        x = {key: x for key in backbone.input}
    x = backbone(x, training=False if preset is not None else None)
    x = pool(x, row.pooling)
    return keras.Model(inputs, head(x, cfg, num_classes), name=cfg.name)


def check_size(row: HubBackbone, image_size: int) -> None:
    if image_size < row.size_step or image_size % row.size_step:
        raise KitError(
            f"{row.name} needs model.image_size to be a multiple of {row.size_step}, got {image_size}",
            f"use e.g. model.image_size={row.native_size} (its native size)",
        )


def random_network(row: HubBackbone, image_size: int) -> keras.Model:
    """The row's image network from its architecture, randomly initialised (``model.weights=none``)."""
    network_class = getattr(keras_hub().models, row.network_class)
    return network_class(image_shape=(image_size, image_size, 3), name=BACKBONE, **row.architecture)


def named_backbone(network: keras.Model) -> keras.Model:
    """``network`` named ``"backbone"``: itself, or (a CLIP/SigLIP vision tower keeps its own name) the same class from
    its config under that name with its weights. The keras-hub class itself is kept, not re-wrapped: it saves as its
    registered class and architecture, which keras-hub's layers alone do not (their configs do not load back)."""
    if network.name == BACKBONE:
        return network
    renamed = type(network).from_config({**network.get_config(), "name": BACKBONE})
    renamed.set_weights(network.get_weights())
    return renamed


def load_network(row: HubBackbone, preset: str, image_size: int) -> keras.Model:
    """The row's image network from ``preset`` (a checked local folder, or the preset's name to download); a row whose
    weights fix the size refuses another ``model.image_size`` in one line."""
    kwargs = {"image_shape": (image_size, image_size, 3)} if row.any_size else {}
    if not row.encoder:
        kwargs["name"] = BACKBONE
    try:
        loaded = keras_hub().models.Backbone.from_preset(preset, **kwargs)
    except KitError:
        raise
    except Exception as exc:  # noqa: BLE001 - keras-hub raises ValueError/KeyError/OSError for a damaged preset
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise KitError(
            f"the keras-hub preset {preset} cannot be loaded for {row.name}: {reason}",
            "give a folder written by save_to_preset (config.json + model.weights.h5), or model.weights=none",
        ) from None
    network = getattr(loaded, row.encoder) if row.encoder else loaded
    height, width = tuple(network.inputs[0].shape)[1:3]
    if (height, width) != (image_size, image_size):
        raise KitError(
            f"the {row.name} preset {preset} takes {height}x{width} images, model.image_size is {image_size}",
            f"set model.image_size={height} (its position embeddings fix the size)",
        )
    return network


def pool(x: keras.KerasTensor, pooling: str) -> keras.KerasTensor:
    """The image feature from the network's output: the class token, the mean of the tokens, or the output itself."""
    import keras

    if pooling == "cls":  # tokens [B, T, D]: keep the first, as built-in layers that save and load without code
        tokens = int(x.shape[1])
        return keras.layers.Flatten(name="cls_token")(keras.layers.Cropping1D((0, tokens - 1), name="cls_crop")(x))
    if pooling == "mean":
        return keras.layers.GlobalAveragePooling1D(name="token_mean")(x)
    return x
