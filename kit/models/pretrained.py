"""Pretrained backbones from ``keras.applications`` with a small classification head (transfer learning).

- EfficientNetB4 (Tan & Le 2019, "EfficientNet: Rethinking Model Scaling for CNNs"), native input 380 px.
  Its stem rescales and normalizes 0-255 pixels itself (``include_preprocessing``), so nothing is added.
- ResNet50 (He et al. 2016), native input 224 px. It expects ``resnet50.preprocess_input`` ("caffe" mode:
  RGB -> BGR and subtraction of the ImageNet channel means, no scaling); we put exactly that in the graph
  with built-in ops (``keras.ops.flip`` + a constant ``Normalization`` layer), so a saved model loads
  without custom objects and takes raw pixels.

The backbone is ``include_top=False``, a nested model layer named ``"backbone"``, called with
``training=False``: its BatchNormalization layers stay in inference mode in both training phases, so
fine-tuning on small batches does not wreck the ImageNet statistics (keras-io, "Image classification via
fine-tuning with EfficientNet"; Keras transfer-learning guide). The head is GAP, dropout, an optional
Dense(``model.dense_units``, ReLU, L2 ``model.l2``) with dropout, and the float32 classifier.

``model.weights``:

- ``imagenet``: Keras' ``*_notop.h5`` file, taken from the Keras cache ``$KERAS_HOME/models/`` (default
  ``~/.keras/models/``) or downloaded there. Offline (no connection, or ``KIT_OFFLINE=1``) without the
  cached file is a KitError naming the file, the folder and the alternatives; no network timeout.
- ``none``: random initialisation (training from scratch; also what the tests use).
- a path: a weights file for the **backbone only**, loaded with ``backbone.load_weights(path)``: either
  a Keras 3 ``.weights.h5`` written by ``get_backbone(model).save_weights(...)``, or Keras' own legacy
  notop ``.h5`` file (e.g. ``efficientnetb4_notop.h5`` attached to a Kaggle kernel as a dataset). Whole-
  model weights (``model.save_weights``) do not fit the backbone and are a KitError.

The trainer uses :func:`get_backbone`, :func:`freeze_backbone` and :func:`unfreeze_top` for the two
phases (head first, then the top of the backbone at a lower learning rate); recompile after each change.
"""

from __future__ import annotations

import contextlib
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kit.errors import KitError
from kit.models.common import check_num_classes, check_options, classifier_output, image_input, l2

if TYPE_CHECKING:
    import keras

    from kit.config import ModelConfig

# ImageNet statistics of Keras' applications (keras/src/applications/imagenet_utils.py).
IMAGENET_MEAN_RGB = (0.485, 0.456, 0.406)
IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)
CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)  # resnet50.preprocess_input, "caffe" mode, 0-255 scale
MIN_SIZE = 32  # keras.applications refuses smaller inputs when include_top=False
OFFLINE_ENV = "KIT_OFFLINE"  # set to 1 to never try a download (e.g. Kaggle kernels without internet)


@dataclass(frozen=True)
class Backbone:
    name: str  # kit's model name
    application: str  # keras.applications function
    weights_file: str  # the file name keras.applications looks for in <keras home>/models/
    weights_module: str  # module holding BASE_WEIGHTS_PATH and WEIGHTS_HASHES
    weights_key: str  # key into WEIGHTS_HASHES


BACKBONES = {
    "effnetb4": Backbone("effnetb4", "EfficientNetB4", "efficientnetb4_notop.h5", "keras.src.applications.efficientnet", "b4"),
    "resnet50": Backbone(
        "resnet50",
        "ResNet50",
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "keras.src.applications.resnet",
        "resnet50",
    ),
}


# --- builders --------------------------------------------------------------------------------------


def build_effnetb4(cfg: ModelConfig, num_classes: int) -> keras.Model:
    """EfficientNetB4 backbone + head; the backbone normalizes raw 0-255 pixels itself."""
    return _build(cfg, num_classes, BACKBONES["effnetb4"])


def build_resnet50(cfg: ModelConfig, num_classes: int) -> keras.Model:
    """ResNet50 backbone + head, with ``resnet50.preprocess_input`` (caffe mode) inside the graph."""
    return _build(cfg, num_classes, BACKBONES["resnet50"])


def _build(cfg: ModelConfig, num_classes: int, spec: Backbone) -> keras.Model:
    import keras

    check_options(cfg, {})
    check_num_classes(num_classes)
    if cfg.image_size < MIN_SIZE:
        raise KitError(
            f"{spec.name} needs model.image_size >= {MIN_SIZE}, got {cfg.image_size}", f"use e.g. model.image_size={MIN_SIZE * 2}"
        )
    weights_path = resolve_weights(cfg.weights, spec)  # before building: a missing file fails fast

    application = getattr(keras.applications, spec.application)
    backbone = application(include_top=False, weights=None, input_shape=(cfg.image_size, cfg.image_size, 3), name="backbone")
    if weights_path is not None:
        load_backbone_weights(backbone, weights_path, spec)

    inputs = image_input(cfg)
    x = resnet50_preprocess(inputs) if spec.name == "resnet50" else inputs
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


def resnet50_preprocess(x: keras.KerasTensor) -> keras.KerasTensor:
    """``keras.applications.resnet50.preprocess_input`` for 0-255 RGB as graph ops that save and load.

    Caffe mode: reverse the channels to BGR, subtract the ImageNet BGR means, no scaling. A Lambda would
    not load safely; ``keras.ops.flip`` is a serializable Keras op and ``Normalization`` with constant
    mean and unit variance is a plain subtraction with no weights, so nothing here can ever be trained.
    Kept in float32 under mixed precision so the mean subtraction is exact.
    """
    import keras

    x = keras.ops.flip(x, axis=-1)
    return keras.layers.Normalization(
        mean=list(CAFFE_MEAN_BGR), variance=[1.0, 1.0, 1.0], dtype="float32", name="caffe_preprocess"
    )(x)


# --- weights ---------------------------------------------------------------------------------------


def weights_cache_dir() -> Path:
    """Where Keras caches application weights: ``$KERAS_HOME/models`` (read now), else ``~/.keras/models``."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        from keras.src.backend.config import keras_home  # the same rule keras.utils.get_file applies

        home = keras_home()
    return Path(home).expanduser() / "models"


def _online(host: str = "storage.googleapis.com", timeout: float = 3.0) -> bool:
    if os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def imagenet_weights(spec: Backbone) -> Path:
    """The cached ImageNet notop weights file for ``spec``, downloaded into the Keras cache if needed."""
    import importlib

    from keras.utils import get_file

    module = importlib.import_module(spec.weights_module)
    url = module.BASE_WEIGHTS_PATH + spec.weights_file
    file_hash = module.WEIGHTS_HASHES[spec.weights_key][1]  # [1]: the include_top=False file
    cache = weights_cache_dir()
    hint = (
        f"download {url} into {cache}/ (or point KERAS_HOME at a folder with models/{spec.weights_file}), "
        f"or set model.weights=<path to {spec.weights_file} or a .weights.h5>, or model.weights=none"
    )
    cached = cache / spec.weights_file
    # get_file silently falls back to /tmp/.keras when the folder is missing; create it instead.
    with contextlib.suppress(OSError):
        cache.mkdir(parents=True, exist_ok=True)
    if not cached.is_file() and not _online():
        raise KitError(
            f"ImageNet weights for {spec.name} are not cached ({spec.weights_file} is not in {cache}) and there is no internet",
            hint,
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = get_file(spec.weights_file, url, cache_subdir="models", file_hash=file_hash, cache_dir=str(cache.parent))
    except Exception as exc:  # noqa: BLE001 - any download or hash failure is the same fix for the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KitError(f"could not get ImageNet weights {spec.weights_file} for {spec.name}: {reason}", hint) from None
    return Path(path)


def resolve_weights(weights: str, spec: Backbone) -> Path | None:
    """``model.weights`` as a file to load into the backbone, or None for random initialisation."""
    value = str(weights or "").strip()
    if value.lower() in ("", "none", "null", "random"):
        return None
    if value.lower() == "imagenet":
        return imagenet_weights(spec)
    path = Path(value).expanduser()
    if not path.is_file():
        raise KitError(
            f"model.weights={value}: no such file",
            f"give imagenet, none, or the path of a backbone weights file (.weights.h5, or Keras' {spec.weights_file})",
        )
    if not path.name.endswith((".h5", ".hdf5")):
        raise KitError(
            f"model.weights={value} is not an .h5 weights file",
            "save backbone weights with get_backbone(model).save_weights('x.weights.h5')",
        )
    return path


def load_backbone_weights(backbone: keras.Model, path: Path, spec: Backbone) -> None:
    """``backbone.load_weights(path)``, turning a mismatch into a KitError; fixes Keras' EfficientNet stem."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # numpy-2 __array__ chatter from h5py; errors still raise
            backbone.load_weights(str(path))
    except Exception as exc:  # noqa: BLE001 - Keras raises ValueError/KeyError/OSError for a wrong file
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise KitError(
            f"weights file {path} does not fit the {spec.name} backbone: {reason}",
            f"give backbone weights (get_backbone(model).save_weights('b.weights.h5') or Keras' {spec.weights_file}),"
            " not whole-model weights",
        ) from None
    if spec.name == "effnetb4":
        _fix_efficientnet_variance(backbone)


def _fix_efficientnet_variance(backbone: keras.Model) -> None:
    """Make the stem divide by the ImageNet std, as ``EfficientNetB4(weights="imagenet")`` does.

    Keras' EfficientNet weight files store the ImageNet *standard deviations* as the Normalization
    layer's *variance* (tensorflow/tensorflow#49930), so the layer divides by sqrt(std); with
    ``weights="imagenet"`` Keras appends a Rescaling(1/sqrt(std)) to compensate. We build the backbone
    with ``weights=None`` (to load from our own cache or a path) and compensate instead by storing the
    true variance std**2. Idempotent: files saved after the fix already hold std**2 and are left alone.
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
