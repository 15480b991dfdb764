"""Model registry: one entry per model name. Adding a scratch model is one line here plus its builder; every
pretrained backbone comes from its row in the backbone table (:mod:`kit.models.backbones`), built by
:func:`kit.models.pretrained.build`.

A builder has the signature ``build(cfg: ModelConfig, num_classes: int) -> keras.Model`` and returns a
model that takes raw 0-255 RGB pixels of shape (image_size, image_size, 3) and ends in one sigmoid
unit for two classes or ``num_classes`` softmax units otherwise (float32 even under mixed precision).
Pretrained models name their backbone layer ``"backbone"`` (a second one ``"backbone_2"``, ...) so the trainer can
freeze and unfreeze it.

``build_model(..., first_layer=layer)`` puts a layer on the raw pixels before everything the builder made (its own
Rescaling/Normalization included): the trainer passes kit's colour jitter there (``augment.jitter_on=model``). The
layer comes from the caller because kit.models and kit.data are independent layers (setup.cfg [importlinter]).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from kit.errors import unknown_choice
from kit.models.backbones import BACKBONES
from kit.models.hub_backbones import HUB_BACKBONES

if TYPE_CHECKING:
    import keras

    from kit.config import ModelConfig


@dataclass(frozen=True)
class ModelEntry:
    builder: str  # "module:function", imported only when the model is built (keeps `kit --help` fast)
    pretrained: bool = False
    description: str = ""


MODELS: dict[str, ModelEntry] = {
    "resnet9": ModelEntry("kit.models.resnet9:build", description="ResNet-9 from scratch (myrtle.ai; the fast baseline)"),
    "resnet20": ModelEntry("kit.models.resnet20:build", description="ResNet20 from scratch (He et al. 2016, CIFAR variant)"),
    "cnn": ModelEntry("kit.models.cnn:build", description="conv-BN-pool-dropout stacks from scratch"),
    "lstm": ModelEntry("kit.models.lstm:build", description="stacked LSTMs over image rows"),
    "fusion": ModelEntry(
        "kit.models.fusion:build", pretrained=True, description="two or more backbones side by side (model.options.backbones)"
    ),
    **{
        name: ModelEntry("kit.models.pretrained:build", pretrained=True, description=f"{row.constructor} backbone + head")
        for name, row in BACKBONES.items()
    },
    **{
        name: ModelEntry("kit.models.hub:build", pretrained=True, description=f"keras-hub {row.network_class} + head")
        for name, row in HUB_BACKBONES.items()
    },
}


def build_model(cfg: ModelConfig, num_classes: int, *, first_layer: keras.layers.Layer | None = None) -> keras.Model:
    """Build the model named by ``cfg.name`` for ``num_classes`` classes; ``first_layer`` (optional) runs first."""
    if cfg.name not in MODELS:
        raise unknown_choice("model", cfg.name, MODELS)
    module_name, function_name = MODELS[cfg.name].builder.split(":")
    builder = getattr(importlib.import_module(module_name), function_name)
    model = builder(cfg, num_classes)
    return model if first_layer is None else prepend_layer(cfg, model, first_layer)


def prepend_layer(cfg: ModelConfig, model: keras.Model, layer: keras.layers.Layer) -> keras.Model:
    """``model`` with ``layer`` between its raw-pixel input and everything else: the same layers (weights, names,
    the "backbone"), every use of the input now fed the layer's output.

    ``keras.models.clone_model`` re-runs the functional graph on a fresh input; its ``call_function`` is the
    documented hook to insert a layer before a given one, and a ``clone_function`` returning each layer itself
    shares the layer instead of copying it. So every builder stays as it is.
    """
    import keras

    from kit.models.common import image_input

    inputs = image_input(cfg)
    first = layer(inputs)

    def call(op: keras.layers.Layer, *args: object, **kwargs: object) -> object:
        args, kwargs = keras.tree.map_structure(lambda x: first if x is inputs else x, (args, kwargs))
        return op(*args, **kwargs)

    return keras.models.clone_model(model, input_tensors=inputs, clone_function=lambda same: same, call_function=call)
