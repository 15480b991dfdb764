"""A plain CNN from scratch: the VGG-style recipe (Simonyan & Zisserman 2015) with batch normalization
(Ioffe & Szegedy 2015) and dropout (Srivastava et al. 2014), and global average pooling instead of large
fully connected layers (Lin et al. 2014, "Network in Network").

Each block is conv3x3-BN-ReLU (twice by default: two stacked 3x3 convs see 5x5 with fewer weights, as
in VGG), 2x2 max pooling and dropout. The head is GAP, Dense(``model.dense_units``, ReLU, L2 ``model.l2``)
and dropout ``model.dropout``, then the classifier.

Options (``model.options``): ``filters`` (one block per entry, default [32, 64, 128]), ``double_conv``
(two convs per block, default true), ``conv_dropout`` (dropout after each block; default null: use
``model.dropout``), ``stem_stride`` (the first conv's: 1 keeps every pixel; 2 quarters the cost of large images)
and the forensic streams of :mod:`kit.models.streams` (``inputs``, ...), fused after the global average pool.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from kit.errors import KitError
from kit.models.common import batch_norm, check_options, choice, classifier_output, image_input, l2, positive_ints
from kit.models.streams import STREAM_DEFAULTS, fuse_streams, read_streams

if TYPE_CHECKING:
    import keras

    from kit.config import ModelConfig

DEFAULTS = {"filters": [32, 64, 128], "double_conv": True, "conv_dropout": None, "stem_stride": 1, **STREAM_DEFAULTS}
STEM_STRIDES = (1, 2)


def build(cfg: ModelConfig, num_classes: int) -> keras.Model:
    """conv-BN-ReLU(-conv-BN-ReLU)-maxpool-dropout blocks, GAP, dense head, for raw 0-255 input."""
    import keras

    layers = keras.layers
    options = check_options(cfg, DEFAULTS)
    filters = positive_ints(cfg, "filters", options["filters"])
    stride = choice(cfg, "stem_stride", options["stem_stride"], STEM_STRIDES)
    streams = read_streams(cfg, options)
    if cfg.image_size // (stride * 2 ** len(filters)) < 1:
        raise KitError(
            f"model.options.filters has {len(filters)} pooling blocks, too many for {cfg.image_size}px images",
            f"use at most {max(cfg.image_size.bit_length() - 1, 1)} entries or a larger model.image_size",
        )
    conv_dropout = cfg.dropout if options["conv_dropout"] is None else float(options["conv_dropout"])
    convs = 2 if options["double_conv"] else 1

    inputs = image_input(cfg)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, width in enumerate(filters, start=1):
        for j in range(1, convs + 1):
            # No bias: BN's beta takes its place.
            x = layers.Conv2D(
                width,
                3,
                strides=stride if (i, j) == (1, 1) else 1,
                padding="same",
                use_bias=False,
                kernel_initializer="he_normal",
                kernel_regularizer=l2(cfg.l2),
                name=f"block{i}_conv{j}",
            )(x)
            x = batch_norm(f"block{i}_bn{j}")(x)
            x = layers.ReLU(name=f"block{i}_relu{j}")(x)
        x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
        if conv_dropout > 0:
            x = layers.Dropout(conv_dropout, name=f"block{i}_dropout")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = fuse_streams(streams, inputs, x, cfg.l2)
    if cfg.dense_units > 0:
        x = layers.Dense(
            cfg.dense_units, activation="relu", kernel_initializer="he_normal", kernel_regularizer=l2(cfg.l2), name="head_dense"
        )(x)
    if cfg.dropout > 0:
        x = layers.Dropout(cfg.dropout, name="head_dropout")(x)
    outputs = classifier_output(x, num_classes)
    return keras.Model(inputs, outputs, name="cnn")
