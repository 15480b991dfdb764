"""ResNet-9 from scratch: the fast CIFAR-10 net of David Page, "How to train your ResNet" (myrtle.ai, 2018,
https://myrtle.ai/learn/how-to-train-your-resnet/), as also used by Keller Jordan's airbench
(https://github.com/KellerJordan/cifar10-airbench).

The layout (myrtle.ai, part 4 "Architecture"): a prep conv; layer1 = conv, 2x2 max pool, then a residual
branch of two convs added back; layer2 = conv, max pool; layer3 = conv, max pool, residual branch; a global
max pool and a linear classifier whose logits are scaled by 0.125 (Page: it keeps the softmax from saturating
early, which helped more than tuning the rate). Each conv is 3x3 conv-BN-ReLU (no conv bias, BN's shift does it).
myrtle's widths are 64-128-256-512; kit's default is a quarter (16-32-64-128, 0.41M parameters), which fits
28-64 px images on 2 CPU cores: at 32 px an augmented training epoch costs about half a bare ResNet20 epoch
(measured on Fashion-MNIST, batch 128; widths 24-48-96-192 cost 0.6). ``model.options.widths=[64,128,256,512]``
is the paper's net (6.6M parameters) for a GPU.

The scale is applied to the pooled features before the Dense layer (``W(s x) + b = s W x + b``: the same
logits and the same weight gradients as scaling the logits, with a bias myrtle's bias-free head does not have),
so the model keeps kit's float32 sigmoid/softmax output layer and built-in layers only.

Options (``model.options``): ``widths`` (prep, layer1, layer2, layer3; default [16, 32, 64, 128]),
``head_scale`` (default 0.125), ``stem_stride`` (the prep conv's stride: 1, myrtle's, keeps every pixel; 2 quarters
the cost of large images) and the forensic streams of :mod:`kit.models.streams` (``inputs``, ...), fused after the
global max pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kit.errors import KitError
from kit.models.common import batch_norm, check_options, choice, classifier_output, image_input, l2, positive_ints
from kit.models.streams import STREAM_DEFAULTS, fuse_streams, read_streams

if TYPE_CHECKING:
    import keras

    from kit.config import ModelConfig

DEFAULTS = {"widths": [16, 32, 64, 128], "head_scale": 0.125, "stem_stride": 1, **STREAM_DEFAULTS}
STEM_STRIDES = (1, 2)


def _conv_bn(
    x: keras.KerasTensor, filters: int, decay: float, name: str, pool: bool = False, strides: int = 1
) -> keras.KerasTensor:
    """3x3 conv, optional 2x2 max pool (myrtle pools after the conv, before BN), BN, ReLU."""
    import keras

    x = keras.layers.Conv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=l2(decay),
        name=f"{name}_conv",
    )(x)
    if pool:
        x = keras.layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    x = batch_norm(f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


def _residual(x: keras.KerasTensor, filters: int, decay: float, name: str) -> keras.KerasTensor:
    import keras

    y = _conv_bn(x, filters, decay, f"{name}_res1")
    y = _conv_bn(y, filters, decay, f"{name}_res2")
    return keras.layers.Add(name=f"{name}_add")([x, y])


def build(cfg: ModelConfig, num_classes: int) -> keras.Model:
    """ResNet-9 for raw 0-255 input of shape (cfg.image_size, cfg.image_size, 3); needs 8 px or more."""
    import keras

    options = check_options(cfg, DEFAULTS)
    widths = positive_ints(cfg, "widths", options["widths"])
    if len(widths) != 4:
        raise KitError(
            f"model.options.widths={widths} for resnet9 needs 4 widths (prep, layer1, layer2, layer3)",
            "use e.g. model.options.widths=[32,64,128,256]",
        )
    scale = options["head_scale"]
    if isinstance(scale, bool) or not isinstance(scale, int | float) or not 0 < scale <= 100:
        raise KitError(f"model.options.head_scale={scale!r} for resnet9 is not a number in (0, 100]", "use e.g. 0.125")
    stride = choice(cfg, "stem_stride", options["stem_stride"], STEM_STRIDES)
    streams = read_streams(cfg, options)
    if cfg.image_size < 8 * stride:
        raise KitError(
            f"resnet9 needs model.image_size >= {8 * stride} (three 2x2 pools, stem stride {stride}), got {cfg.image_size}",
            "set model.image_size=32",
        )

    inputs = image_input(cfg)
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = _conv_bn(x, widths[0], cfg.l2, "prep", strides=stride)
    x = _conv_bn(x, widths[1], cfg.l2, "layer1", pool=True)
    x = _residual(x, widths[1], cfg.l2, "layer1")
    x = _conv_bn(x, widths[2], cfg.l2, "layer2", pool=True)
    x = _conv_bn(x, widths[3], cfg.l2, "layer3", pool=True)
    x = _residual(x, widths[3], cfg.l2, "layer3")
    x = keras.layers.GlobalMaxPooling2D(name="global_max_pool")(x)
    x = fuse_streams(streams, inputs, x, cfg.l2)
    if cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
    x = keras.layers.Rescaling(float(scale), name="head_scale")(x)
    outputs = classifier_output(x, num_classes, cfg.l2)
    return keras.Model(inputs, outputs, name="resnet9")
