"""Grad-CAM (Selvaraju et al. 2017): where in an image a model's class score comes from, in plain Keras/TF.

The map of class c is ``ReLU(sum_k w_k A_k)``: ``A_k`` the channels of the last convolutional feature map,
``w_k`` the spatial mean of ``d score_c / d A_k``. It is upsampled to the image and scaled to 0..1 per image.

Which feature map: the output of the model's last top-level layer with a 4-D output, at or after its first
convolution. For kit's scratch models that is the last conv block; for the pretrained ones it is the nested
model named "backbone" (one layer at the top level, whose output is the backbone's last feature map). A model
without a convolution (the LSTM) has none, and :func:`feature_layer` says so with ``None``.

The score is the class *logit*, not its probability: a confident sigmoid or softmax saturates in float32 and
its gradient is then exactly zero. The output layer is re-run without its sigmoid/softmax (a copy built from its
config, the same weights); a binary model's one logit z scores class 1 as z and class 0 as -z. Reaching the
feature map inside the graph uses ``keras.models.clone_model``'s ``call_function`` hook with the layers
themselves (nothing copied, nothing in the run's model changed), as :func:`kit.models.registry.prepend_layer`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import keras

SQUASHING = ("sigmoid", "softmax")  # output activations whose input (the logit) is the class score


def _convolution_types() -> tuple[type, ...]:
    import keras

    layers = keras.layers
    return (layers.Conv1D, layers.Conv2D, layers.Conv3D, layers.DepthwiseConv2D, layers.SeparableConv2D)


def has_convolution(layer: keras.layers.Layer) -> bool:
    """True for a convolution layer, or a nested model holding one at any depth."""
    import keras

    if isinstance(layer, _convolution_types()):
        return True
    return isinstance(layer, keras.Model) and any(has_convolution(inner) for inner in layer.layers)


def feature_layer(model: keras.Model) -> keras.layers.Layer | None:
    """The top-level layer whose output is the last convolutional feature map; None without a convolution."""
    found, convolved = None, False
    for layer in _functional(model).layers:
        convolved = convolved or has_convolution(layer)
        if convolved and len(layer.output.shape) == 4:
            found = layer
    return found


def _functional(model: keras.Model) -> keras.Model:
    """A Sequential model as a functional one over the same layers (clone_model's hook needs a graph)."""
    import keras

    if isinstance(model, keras.Sequential):
        return keras.Model(model.inputs[0], model.outputs[0])
    return model


def _without_squashing(layer: keras.layers.Layer) -> keras.layers.Layer | None:
    """A copy of an output layer without its sigmoid/softmax (weights set once built); None when it has neither."""
    config = layer.get_config()
    if config.get("activation") not in SQUASHING:
        return None
    return type(layer).from_config({**config, "activation": "linear", "name": f"{config['name']}_logits"})


def score_model(model: keras.Model, layer: keras.layers.Layer) -> keras.Model:
    """images -> (``layer``'s feature maps, class logits): the same layers, the output without its squashing."""
    import keras

    model = _functional(model)
    output_layer = model.layers[-1]
    logits = _without_squashing(output_layer)
    captured: dict[str, Any] = {}

    def call(op: keras.layers.Layer, *args: object, **kwargs: object) -> object:
        if op is output_layer and logits is not None:
            out = logits(*args, **kwargs)
            logits.set_weights(output_layer.get_weights())
            return out
        out = op(*args, **kwargs)
        if op is layer:
            captured["features"] = out
        return out

    clone = keras.models.clone_model(model, clone_function=lambda same: same, call_function=call)
    return keras.Model(clone.inputs[0], [captured["features"], clone.outputs[0]])


def class_scores(logits: Any, class_indices: Any) -> Any:
    """Each row's score of its class: the logit of that class; a single logit z scores class 1 as z, class 0 as -z."""
    import tensorflow as tf

    logits = tf.cast(logits, tf.float32)
    class_indices = tf.cast(class_indices, tf.int32)
    if logits.shape[-1] == 1:
        return tf.where(class_indices == 1, logits[:, 0], -logits[:, 0])
    return tf.gather(logits, class_indices, axis=1, batch_dims=1)


def heat_maps(
    model: keras.Model, images: np.ndarray, class_indices: Sequence[int], layer: keras.layers.Layer | None = None
) -> np.ndarray:
    """Grad-CAM maps (N, H, W) in 0..1 of ``images`` (N, H, W, 3) in 0..255, each for its class in ``class_indices``.

    ``layer``: the feature map's layer (default :func:`feature_layer`); a map with no positive evidence is all 0.
    """
    import tensorflow as tf

    layer = layer or feature_layer(model)
    if layer is None:
        raise ValueError(f"model {model.name} has no convolutional feature map for Grad-CAM")
    images = np.asarray(images, dtype=np.float32)
    scorer = score_model(model, layer)
    batch = tf.convert_to_tensor(images)
    with tf.GradientTape() as tape:
        features, logits = scorer(batch, training=False)
        scores = class_scores(logits, np.asarray(class_indices))
    gradients = tf.cast(tape.gradient(scores, features), tf.float32)  # mixed precision: the maths in float32
    features = tf.cast(features, tf.float32)
    weights = tf.reduce_mean(gradients, axis=(1, 2), keepdims=True)  # one weight per channel and image
    cams = tf.nn.relu(tf.reduce_sum(weights * features, axis=-1, keepdims=True))
    cams = tf.image.resize(cams, images.shape[1:3], method="bilinear")[..., 0]
    peak = tf.reduce_max(cams, axis=(1, 2), keepdims=True)
    cams = tf.math.divide_no_nan(cams, peak)
    return np.clip(np.asarray(cams, dtype=np.float32), 0.0, 1.0)
