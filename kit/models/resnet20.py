"""ResNet20 from scratch: the CIFAR-10 residual network of He et al. 2016, "Deep Residual Learning for
Image Recognition", section 4.2.

The paper's CIFAR net: a 3x3 conv with 16 filters, then 3 stages of ``n`` basic blocks on feature maps of
32/16/8 pixels with 16/32/64 filters (6n + 2 layers; n = 3 gives ResNet20, 0.27M parameters), global
average pooling and the classifier. A basic block is conv3x3-BN-ReLU-conv3x3-BN, added to the shortcut,
then ReLU. The first block of stages 2 and 3 halves the feature map with stride 2; its shortcut is a 1x1
stride-2 convolution with BN (the paper's projection option B) so the shapes match. Weights use He normal
init (He et al. 2015) and L2 decay (the paper uses 1e-4: set ``model.l2``).

Options (``model.options``): ``blocks`` (n, default 3: ResNet20; 5: ResNet32, 9: ResNet56),
``filters`` (the three stage widths, default [16, 32, 64]), ``stem_stride`` (the first conv's: 1, the paper's,
keeps every pixel; 2 quarters the cost of large images) and the forensic streams of :mod:`kit.models.streams`
(``inputs``, ...), fused after the global average pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kit.models.common import batch_norm, check_options, choice, classifier_output, image_input, l2, positive_ints
from kit.models.streams import STREAM_DEFAULTS, fuse_streams, read_streams

if TYPE_CHECKING:
    import keras

    from kit.config import ModelConfig

DEFAULTS = {"blocks": 3, "filters": [16, 32, 64], "stem_stride": 1, **STREAM_DEFAULTS}
STEM_STRIDES = (1, 2)


def _conv(filters: int, kernel: int, strides: int, decay: float, name: str) -> keras.layers.Conv2D:
    import keras

    # No bias: the BatchNormalization that follows every conv has its own shift (beta).
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_initializer="he_normal",
        kernel_regularizer=l2(decay),
        name=name,
    )


def _basic_block(x: keras.KerasTensor, filters: int, strides: int, decay: float, name: str) -> keras.KerasTensor:
    import keras

    layers = keras.layers
    shortcut = x
    y = _conv(filters, 3, strides, decay, f"{name}_conv1")(x)
    y = batch_norm(f"{name}_bn1")(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(filters, 3, 1, decay, f"{name}_conv2")(y)
    y = batch_norm(f"{name}_bn2")(y)
    if strides != 1 or x.shape[-1] != filters:
        # Projection shortcut (paper option B): a 1x1 conv matches the halved size and doubled width.
        shortcut = _conv(filters, 1, strides, decay, f"{name}_proj")(x)
        shortcut = batch_norm(f"{name}_proj_bn")(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def build(cfg: ModelConfig, num_classes: int) -> keras.Model:
    """ResNet(6n+2) for raw 0-255 input of shape (cfg.image_size, cfg.image_size, 3)."""
    import keras

    options = check_options(cfg, DEFAULTS)
    blocks = positive_ints(cfg, "blocks", options["blocks"])[0]
    filters = positive_ints(cfg, "filters", options["filters"])
    stride = choice(cfg, "stem_stride", options["stem_stride"], STEM_STRIDES)
    streams = read_streams(cfg, options)

    inputs = image_input(cfg)
    x = keras.layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = _conv(filters[0], 3, stride, cfg.l2, "stem_conv")(x)
    x = batch_norm("stem_bn")(x)
    x = keras.layers.ReLU(name="stem_relu")(x)
    for stage, width in enumerate(filters, start=1):
        for block in range(1, blocks + 1):
            strides = 2 if stage > 1 and block == 1 else 1  # downsample at the start of stages 2 and 3
            x = _basic_block(x, width, strides, cfg.l2, f"stage{stage}_block{block}")
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = fuse_streams(streams, inputs, x, cfg.l2)
    if cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout, name="head_dropout")(x)
    outputs = classifier_output(x, num_classes, cfg.l2)
    return keras.Model(inputs, outputs, name=f"resnet{6 * blocks + 2}")
