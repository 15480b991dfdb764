"""Image augmentation: flips, rotation, shifts, color jitter and CutMix, online (per batch) or offline (baked in).

Two entry points, one per :attr:`AugmentConfig.mode`:

- :func:`build_online_augmenter` returns a graph-safe callable for ``tf.data.Dataset.map`` on *batches*
  (float32 images in 0..255, one-hot float labels). It uses the Keras core preprocessing layers, or the
  keras-cv ones when ``augment.library=keras_cv``.
- :func:`offline_augment` makes one augmented copy of a numpy batch (uint8) for the records writer. It is
  numpy + OpenCV, imports nothing heavy at module load, and is deterministic for a seed, so worker
  processes can call it per shard and a rebuilt shard is byte-identical.

References:
    - CutMix: S. Yun, D. Han, S. J. Oh, S. Chun, J. Choe, Y. Yoo. "CutMix: Regularization Strategy to
      Train Strong Classifiers with Localizable Features", ICCV 2019. https://arxiv.org/abs/1905.04899
    - Color jitter as in A. Krizhevsky, I. Sutskever, G. Hinton. "ImageNet Classification with Deep
      Convolutional Neural Networks", NeurIPS 2012 (photometric distortions), and the brightness/
      contrast/saturation/hue parametrisation of torchvision ``ColorJitter`` / Keras ``RandomColorJitter``.

Label mixing is by the *true* pasted area. Both libraries compute the label weight from the nominal
box size: Keras core's box has fractional corners (the pixel count differs by up to one row and one
column, which matters at 32-64 px), and keras-cv's box is centred anywhere and clipped at the border
without correcting the weight (its labels can be off by half the box). With keras-cv we therefore run
its CutMix on images with an extra "source index" channel and read back which source each pixel came
from. With Keras core we draw the layer's own random box and permutation and paste and count from them.

Speed. With Keras core (the default) every random number comes from the Keras layers (``RandomFlip``'s
flips, ``CutMix``'s box and permutation) or from kit's jitter draws, all tiny [B]-sized tensors, and the
pixel work -- uint8 -> float, flip, brightness, contrast, the saturation/hue colour matrix, the CutMix
paste and the final clip -- is one ``tf.function(jit_compile=True)`` kernel: XLA fuses it into about
three passes over the batch where the ops one by one made over fifteen (each a full read and write of
[B, H, W, 3] floats). Measured at 64 px, batch 64, in tf.data on 2 cores that a training run shared: flip +
jitter + CutMix went from 11.3 ms to 4.7 ms a batch; in BENCHMARKS.md (P2) the whole pipeline goes from 8.1k to
17.1k img/s with it. Flips and pastes are selects and exact 0/1 blends, so the
result equals the layers bit for bit (tests/test_augment_fast.py); ``augment.jit_compile=false`` runs the
same maths as plain TF ops for platforms without XLA on the CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from kit.errors import KitError

if TYPE_CHECKING:
    from kit.config import AugmentConfig

FLIP_MODES = {"horizontal": "horizontal", "vertical": "vertical", "both": "horizontal_and_vertical"}


# --------------------------------------------------------------------------------------------------
# Shared parameter checks and the jitter parametrisation (one definition for online and offline)
# --------------------------------------------------------------------------------------------------


def _check_config(cfg: AugmentConfig) -> None:
    if cfg.library not in ("keras", "keras_cv"):
        raise KitError(f"unknown augment.library '{cfg.library}'", "use augment.library=keras or augment.library=keras_cv")
    if cfg.flip not in ("none", *FLIP_MODES):
        raise KitError(f"unknown augment.flip '{cfg.flip}'", "use one of: none, horizontal, vertical, both")
    if not 0.0 <= cfg.rotation <= 1.0:
        raise KitError(
            f"augment.rotation={cfg.rotation} is outside [0, 1]", "give a fraction of a full turn, e.g. augment.rotation=0.05"
        )
    if not 0.0 <= cfg.translate <= 0.5:
        raise KitError(
            f"augment.translate={cfg.translate} is outside [0, 0.5]", "give a fraction of the side, e.g. augment.translate=0.125"
        )
    if not 0.0 <= cfg.color_jitter < 1.0:
        raise KitError(f"augment.color_jitter={cfg.color_jitter} is outside [0, 1)", "use e.g. augment.color_jitter=0.2")
    if not 0.0 <= cfg.cutmix <= 1.0:
        raise KitError(f"augment.cutmix={cfg.cutmix} is not a probability", "use e.g. augment.cutmix=0.5 (0 turns CutMix off)")
    if cfg.cutmix > 0 and not cfg.cutmix_alpha > 0:
        raise KitError(
            f"augment.cutmix_alpha={cfg.cutmix_alpha} must be positive", "use augment.cutmix_alpha=1.0 as in the CutMix paper"
        )
    if cfg.cutmix > 0 and cfg.library == "keras" and cfg.cutmix_alpha > 1.0:
        # keras.layers.CutMix only accepts factor in [0, 1]; keras-cv and the offline path take any alpha.
        raise KitError(
            f"augment.cutmix_alpha={cfg.cutmix_alpha} is above 1, which keras.layers.CutMix does not support",
            "use augment.cutmix_alpha<=1, or augment.library=keras_cv",
        )


def _jitter_ranges(strength: float) -> dict[str, tuple[float, float]]:
    """Sampling ranges of the four jitter parameters for strength ``s`` (0 = off).

    brightness: additive delta in [-s, s] of the value range; contrast: factor in [1-s, 1+s] around the
    per-channel mean; saturation: Keras' u in [0.5(1-s), 0.5(1+s)] mapped to the multiplier u/(1-u)
    (0.5 = unchanged); hue: a shift of +-[0, s/4] * 0.5 of the colour circle, as Keras' RandomHue(s/4).
    """
    s = float(strength)
    return {
        "brightness": (-s, s),
        "contrast": (1.0 - s, 1.0 + s),
        "saturation": (0.5 * (1.0 - s), 0.5 * (1.0 + s)),
        "hue": (0.0, s / 4.0),
    }


# --------------------------------------------------------------------------------------------------
# Online: a callable for tf.data on batches
# --------------------------------------------------------------------------------------------------


def _check_batch(images: Any, labels: Any, num_classes: int) -> None:
    """Fail loudly at trace time: CutMix on integer or unbatched labels silently does the wrong thing."""
    import tensorflow as tf

    images = tf.convert_to_tensor(images)
    labels = tf.convert_to_tensor(labels)
    if images.shape.rank != 4 or images.shape[-1] != 3:
        raise KitError(
            f"the augmenter needs batched RGB images [B, H, W, 3], got shape {images.shape}",
            "apply it after Dataset.batch(...)",
        )
    if not (images.dtype.is_floating or images.dtype == tf.uint8):
        raise KitError(
            f"the augmenter needs uint8 or float images in 0..255, got {images.dtype.name}",
            "cast with tf.cast(images, tf.float32)",
        )
    if not labels.dtype.is_floating or labels.shape.rank != 2:
        raise KitError(
            f"the augmenter needs one-hot float labels [B, {num_classes}], got {labels.dtype.name} of shape {labels.shape}",
            f"batch first and convert class indices with tf.one_hot(labels, {num_classes})",
        )
    if labels.shape[-1] is not None and labels.shape[-1] != num_classes:
        raise KitError(
            f"the augmenter was built for {num_classes} classes but the labels have {labels.shape[-1]} columns",
            "pass the manifest's num_classes to build_online_augmenter",
        )


def _jitter_draws(batch: Any, strength: float, seed: int) -> tuple[Any, Any, Any]:
    """Per-image jitter parameters for a batch: brightness delta [B], contrast factor [B], colour matrix [B, 3, 3]."""
    import tensorflow as tf

    r = _jitter_ranges(strength)

    def uniform(name: str, offset: int) -> Any:
        low, high = r[name]
        return tf.random.uniform([batch], low, high, seed=seed + offset)

    brightness, contrast, u = uniform("brightness", 0), uniform("contrast", 1), uniform("saturation", 2)
    sign = tf.where(tf.random.uniform([batch], seed=seed + 3) < 0.5, -1.0, 1.0)
    return brightness, contrast, _color_matrix_tf(u / (1.0 - u), sign * uniform("hue", 4) * 0.5)


def _jitter_apply(x: Any, brightness: Any, contrast: Any, matrix: Any, *, xla: bool) -> Any:
    """Apply :func:`_jitter_draws`' parameters to float images in 0..255 (result clipped to 0..255).

    Brightness is an additive step, contrast scales around the per-channel mean, and saturation + hue are
    one 3x3 colour matrix per image. Under XLA the matrix is a broadcast multiply-add over the channel
    axis, which fuses with the steps around it; without XLA a batched einsum is the fast form.
    """
    import tensorflow as tf

    shape = tf.shape(x)
    x = tf.clip_by_value(x + brightness[:, None, None, None] * 255.0, 0.0, 255.0)
    # The mean over a [B, H*W, 3] view: XLA's CPU reduction over two spatial axes is ~2x slower.
    mean = tf.reduce_mean(tf.reshape(x, [shape[0], shape[1] * shape[2], shape[3]]), axis=1)[:, None, None, :]
    x = tf.clip_by_value((x - mean) * contrast[:, None, None, None] + mean, 0.0, 255.0)
    if xla:
        x = tf.reduce_sum(x[..., None, :] * matrix[:, None, None, :, :], axis=-1)
    else:
        x = tf.einsum("bhwc,bdc->bhwd", x, matrix)
    return tf.clip_by_value(x, 0.0, 255.0)


def _fast_color_jitter(images: Any, strength: float, seed: int) -> Any:
    """Vectorised brightness/contrast/saturation/hue jitter of a batch in 0..255 (same ranges as the layers).

    Why not ``keras.layers.RandomColorJitter`` (or keras-cv's): four layers, each rescaling the value range,
    and saturation and hue each doing an RGB->HSV->RGB round trip per batch. Here brightness and contrast
    are one affine step each and saturation + hue are a single per-image 3x3 colour matrix in YIQ space:
    saturation scales the chroma (I, Q) -- the blend-with-luma definition of PIL ``ImageEnhance.Color`` and
    torchvision ``adjust_saturation`` -- and hue rotates it (the classic hue-rotation matrix, an
    approximation of an HSV hue shift). Measured on 2 shared CPU cores, batch 16 at 224 px in a tf.function:
    this ~1900 img/s, an HSV version of the same ~530 img/s, keras.layers.RandomColorJitter ~375 img/s,
    keras_cv.layers.RandomColorJitter ~400 img/s. Jitter is a regulariser, not a measurement, so the
    ~5x speed-up wins over bit-compatibility with the layers; offline uses the same maths in numpy.
    """
    import tensorflow as tf

    return _jitter_apply(images, *_jitter_draws(tf.shape(images)[0], strength, seed), xla=False)


def _reflect_index(index: Any, length: Any) -> Any:
    """Source positions for shifted positions, mirrored at the border like Keras' fill_mode="reflect"
    (d c b a | a b c d | d c b a); valid for shifts of at most one side."""
    import tensorflow as tf

    index = tf.where(index < 0, -index - 1, index)
    return tf.where(index >= length, 2 * length - index - 1, index)


def _shift_draws(images: Any, fraction: float, seed: int) -> tuple[Any, Any]:
    """Whole-pixel shifts (dy [B], dx [B]), uniform in [-round(fraction * side), round(fraction * side)]."""
    import tensorflow as tf

    shape = tf.shape(images)

    def draw(length: Any, offset: int) -> Any:
        most = tf.cast(tf.round(fraction * tf.cast(length, tf.float32)), tf.int32)
        return tf.random.uniform([shape[0]], -most, most + 1, dtype=tf.int32, seed=seed + offset)

    return draw(shape[1], 0), draw(shape[2], 1)


def _shift_apply(x: Any, dy: Any, dx: Any) -> Any:
    """Shift each image by (dy[b], dx[b]) pixels, reflecting at the border: two batched gathers (rows, then
    columns), which XLA fuses with the steps around them."""
    import tensorflow as tf

    shape = tf.shape(x)
    rows = _reflect_index(tf.range(shape[1])[None, :] - dy[:, None], shape[1])  # [B, H]
    cols = _reflect_index(tf.range(shape[2])[None, :] - dx[:, None], shape[2])  # [B, W]
    x = tf.gather(x, rows, axis=1, batch_dims=1)
    return tf.gather(x, cols, axis=2, batch_dims=1)


# RGB <-> YIQ (NTSC); Y is luma, (I, Q) the chroma plane that saturation scales and hue rotates.
_RGB2YIQ = np.array(
    [[0.299, 0.587, 0.114], [0.59590059, -0.27455667, -0.32134392], [0.21153661, -0.52273617, 0.31119955]], np.float32
)
_YIQ2RGB = np.linalg.inv(_RGB2YIQ).astype(np.float32)


def _color_matrix_np(saturation: float, hue_shift: float) -> np.ndarray:
    """RGB->RGB matrix scaling chroma by ``saturation`` and rotating hue by ``hue_shift`` turns."""
    angle = 2.0 * math.pi * hue_shift
    c, s = saturation * math.cos(angle), saturation * math.sin(angle)
    middle = np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], np.float32)
    return _YIQ2RGB @ middle @ _RGB2YIQ


def _color_matrix_tf(saturation: Any, hue_shift: Any) -> Any:
    """Batched :func:`_color_matrix_np`: [B] factors -> [B, 3, 3]."""
    import tensorflow as tf

    angle = 2.0 * math.pi * hue_shift
    c, s = saturation * tf.cos(angle), saturation * tf.sin(angle)
    one, zero = tf.ones_like(c), tf.zeros_like(c)
    middle = tf.stack([tf.stack([one, zero, zero], -1), tf.stack([zero, c, -s], -1), tf.stack([zero, s, c], -1)], -2)
    return tf.einsum("ij,bjk,kl->bil", tf.constant(_YIQ2RGB), middle, tf.constant(_RGB2YIQ))


class OnlineAugmenter:
    """Callable ``(images, labels) -> (images, labels)`` on batches; see :func:`build_online_augmenter`.

    Keras core (``library=keras``): the layers draw, one XLA kernel (:meth:`_kernel`) does the pixel work.
    keras-cv: its layers one after the other, kit's jitter, and CutMix on source-tagged images.
    """

    def __init__(self, cfg: AugmentConfig, num_classes: int) -> None:
        _check_config(cfg)
        self.cfg = cfg
        self.num_classes = int(num_classes)
        self.library = cfg.library
        self.names: list[str] = []
        self.stages: list[Any] = []  # run one after the other before the kernel (keras-cv: all of them)
        self.flip: Any = None  # Keras core: the RandomFlip whose draws the kernel applies
        self.cutmix: Any = None
        self.jitter_seed: int | None = None
        self.shift_seed: int | None = None
        if cfg.flip == "none" and cfg.rotation == 0 and cfg.translate == 0 and cfg.color_jitter == 0 and cfg.cutmix == 0:
            return  # identity: do not even import the layer libraries
        if cfg.library == "keras_cv":
            import keras_cv

            layers = keras_cv.layers
        else:
            import keras

            layers = keras.layers
        # Distinct seeds per layer so that flips, angles and jitter are not drawn from one stream.
        seed = int(cfg.seed)
        # dtype float32 explicitly: a mixed-precision global policy must not turn pixels into float16.
        if cfg.flip != "none":
            flip = layers.RandomFlip(mode=FLIP_MODES[cfg.flip], seed=seed, dtype="float32")
            self.names.append("flip")
            if cfg.library == "keras_cv":
                self.stages.append(flip)
            elif cfg.rotation > 0:
                self.stages.append(self._flip_stage(flip, cfg.flip))  # flips come before the rotation
            else:
                self.flip = flip
        if cfg.rotation > 0:
            self.names.append("rotation")
            self.stages.append(layers.RandomRotation(cfg.rotation, fill_mode="reflect", seed=seed + 1, dtype="float32"))
        if cfg.translate > 0:
            self.names.append("translate")
            if cfg.library == "keras_cv":
                self.stages.append(
                    layers.RandomTranslation(cfg.translate, cfg.translate, fill_mode="reflect", seed=seed + 5, dtype="float32")
                )
            else:
                self.shift_seed = seed + 5
        if cfg.color_jitter > 0:
            # Our vectorised jitter for both libraries: same parameter ranges as the RandomColorJitter
            # layers, ~5x faster (measurements and reasoning in _fast_color_jitter).
            self.names.append("color_jitter")
            self.jitter_seed = seed + 2
        if cfg.cutmix > 0:
            alpha = float(cfg.cutmix_alpha)
            if cfg.library == "keras_cv":
                self.cutmix = layers.CutMix(alpha=alpha, seed=seed + 3, dtype="float32")
            else:
                # factor=(a, a) pins Beta(a, a) as in the paper; a single float would draw a ~ U(0, a) first.
                self.cutmix = layers.CutMix(factor=(alpha, alpha), seed=seed + 3, dtype="float32")
            self.names.append(f"cutmix(p={cfg.cutmix}, alpha={alpha})")
        if cfg.library == "keras":
            import tensorflow as tf

            self.kernel = tf.function(self._kernel, jit_compile=bool(cfg.jit_compile), reduce_retracing=True)

    def __repr__(self) -> str:
        return f"OnlineAugmenter({self.library}: {', '.join(self.names) or 'identity'})"

    def __call__(self, images: Any, labels: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        _check_batch(images, labels, self.num_classes)
        images = tf.convert_to_tensor(images)
        if not self.names:
            return tf.cast(images, tf.float32), labels
        labels = tf.cast(labels, tf.float32)
        if self.library == "keras":
            return self._call_keras(images, labels)
        return self._call_layers(images, labels)

    # ---- Keras core: the layers' draws, one fused kernel -------------------------------------------------

    @staticmethod
    def _flip_stage(layer: Any, mode: str) -> Callable[[Any], Any]:
        """``keras.layers.RandomFlip`` with its own draw, applied with a row ``Select`` (bit-identical), for
        when a rotation must follow the flips outside the kernel. The layer's own ``tf.where`` with a
        [B, 1, 1, 1] condition broadcasts element by element (twice as slow as flipping)."""

        def flip(images: Any) -> Any:
            import tensorflow as tf

            flips = tf.reshape(layer.get_random_transformation(images, training=True)["flips"], [-1])
            if mode in ("horizontal", "both"):
                images = tf.raw_ops.Select(condition=flips, x=tf.reverse(images, [2]), y=images)
            if mode in ("vertical", "both"):
                images = tf.raw_ops.Select(condition=flips, x=tf.reverse(images, [1]), y=images)
            return images

        return flip

    def _call_keras(self, images: Any, labels: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        if self.stages:  # flips + rotation (interpolating) run as layers first
            images = tf.cast(images, tf.float32)
            for stage in self.stages:
                images = self._apply(stage, images)
        batch = tf.shape(images)[0]
        flips = shifts = jitter = paste = None
        if self.flip is not None:
            flips = tf.reshape(self.flip.get_random_transformation(images, training=True)["flips"], [-1])
        if self.shift_seed is not None:
            shifts = _shift_draws(images, self.cfg.translate, self.shift_seed)
        if self.jitter_seed is not None:
            jitter = _jitter_draws(batch, self.cfg.color_jitter, self.jitter_seed)
        if self.cutmix is not None:
            paste, labels = self._cutmix_draws(images, labels)
        mixed = self.kernel(images, flips, shifts, jitter, paste)
        return tf.ensure_shape(mixed, images.shape), labels

    def _cutmix_draws(self, images: Any, labels: Any) -> tuple[tuple[Any, Any, Any], Any]:
        """``keras.layers.CutMix``'s random box and permutation, as box rows [B, H] and columns [B, W] (0/1)
        plus the permutation, and the labels mixed by the true pasted area.

        The same calls in the same order as ``CutMix.get_random_transformation`` (so the same numbers), minus
        its [B, H, W, C] boolean mask: the box is the outer product of its rows and columns, which the kernel
        builds where it pastes. With ``cutmix < 1`` a batch draws whether to mix at all.
        """
        import tensorflow as tf

        layer = self.cutmix
        shape = layer.backend.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        seed = layer._get_seed_generator(layer.backend._backend)
        ratio = tf.sqrt(1.0 - layer._generate_mix_weight(batch, seed))
        x0, x1 = layer._compute_crop_bounds(batch, width, ratio, seed)
        y0, y1 = layer._compute_crop_bounds(batch, height, ratio, seed)
        perm = tf.cast(layer.backend.random.shuffle(layer.backend.numpy.arange(0, batch, dtype="int32"), seed=seed), tf.int32)

        def inside(start: Any, end: Any, length: Any) -> Any:
            grid = tf.range(length, dtype=tf.float32)[None, :]
            return tf.cast((grid >= start[:, None]) & (grid < end[:, None]), tf.float32)

        rows, cols = inside(y0, y1, height), inside(x0, x1, width)
        own = tf.range(batch)
        moved = tf.not_equal(perm, own)  # a box "pasted" from the image itself changes nothing
        weight = tf.cast(moved, tf.float32)
        if self.cfg.cutmix < 1.0:
            weight *= tf.cast(tf.random.uniform([], seed=int(self.cfg.seed) + 4) < self.cfg.cutmix, tf.float32)
        area = tf.reduce_mean(rows, axis=1) * tf.reduce_mean(cols, axis=1) * weight
        labels = (1.0 - area[:, None]) * labels + area[:, None] * tf.gather(labels, tf.where(moved, perm, own))
        return (rows * weight[:, None], cols, perm), labels

    def _kernel(self, images: Any, flips: Any, shifts: Any, jitter: Any, paste: Any) -> Any:
        """The pixel work of one batch (compiled by XLA unless ``augment.jit_compile=false``).

        uint8 or float images [B, H, W, 3] -> float32 in 0..255: flips where ``flips[b]``, whole-pixel
        shifts, jitter with the drawn parameters, then ``x * (1 - box) + x[perm] * box`` (exact for a 0/1
        box), then a clip (the rotation's interpolation can overshoot 0..255 slightly).
        """
        import tensorflow as tf

        x = tf.cast(images, tf.float32)
        if flips is not None:
            flipped = x
            if self.cfg.flip in ("horizontal", "both"):
                flipped = tf.reverse(flipped, [2])
            if self.cfg.flip in ("vertical", "both"):
                flipped = tf.reverse(flipped, [1])
            x = tf.where(flips[:, None, None, None], flipped, x)
        if shifts is not None:
            x = _shift_apply(x, *shifts)
        if jitter is not None:
            x = _jitter_apply(x, *jitter, xla=bool(self.cfg.jit_compile))
        if paste is not None:
            rows, cols, perm = paste
            box = rows[:, :, None, None] * cols[:, None, :, None]
            x = x * (1.0 - box) + tf.gather(x, perm) * box
        return tf.clip_by_value(x, 0.0, 255.0)

    # ---- layers one after the other (keras-cv; rotation on either) --------------------------------------------------------

    def _apply(self, stage: Any, images: Any) -> Any:
        if not hasattr(stage, "get_config"):
            return stage(images)
        if self.library == "keras_cv":
            return stage(images)  # keras-cv layers always augment and take no `training` argument
        return stage(images, training=True)

    def _call_layers(self, images: Any, labels: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        images = tf.cast(images, tf.float32)
        for stage in self.stages:
            images = self._apply(stage, images)
        if self.jitter_seed is not None:
            images = _fast_color_jitter(images, self.cfg.color_jitter, self.jitter_seed)  # clips to 0..255
        else:  # rotation interpolation can overshoot slightly; models expect 0..255
            images = tf.clip_by_value(images, 0.0, 255.0)
        if self.cutmix is not None:
            if self.cfg.cutmix >= 1.0:
                images, labels = self._cutmix_tagged(images, labels)
            else:
                apply = tf.random.uniform([], seed=int(self.cfg.seed) + 4) < self.cfg.cutmix
                images, labels = tf.cond(apply, lambda: self._cutmix_tagged(images, labels), lambda: (images, labels))
        return images, labels

    def _cutmix_tagged(self, images: Any, labels: Any) -> tuple[Any, Any]:
        """The library's CutMix on images plus a source-index channel; labels from the true pasted area."""
        import tensorflow as tf

        shape = tf.shape(images)
        batch = shape[0]
        own = tf.range(batch)
        index_plane = tf.broadcast_to(tf.cast(own, tf.float32)[:, None, None, None], [batch, shape[1], shape[2], 1])
        tagged = tf.concat([images, index_plane], axis=-1)
        if self.library == "keras_cv":
            mixed = self.cutmix({"images": tagged, "labels": labels})["images"]
        else:
            mixed = self.cutmix(tagged, training=True)
        source = tf.cast(tf.round(mixed[..., 3]), tf.int32)  # [B, H, W]: which image each pixel came from
        pasted = tf.not_equal(source, own[:, None, None])
        area = tf.reduce_mean(tf.cast(pasted, tf.float32), axis=(1, 2))[:, None]
        other = tf.reduce_max(tf.where(pasted, source, -1), axis=(1, 2))
        other = tf.where(other < 0, own, other)  # nothing pasted (or pasted from itself): keep own label
        labels = (1.0 - area) * labels + area * tf.gather(labels, other)
        return tf.ensure_shape(mixed[..., :3], images.shape), labels


def build_online_augmenter(cfg: AugmentConfig, num_classes: int) -> Callable[[Any, Any], tuple[Any, Any]]:
    """A graph-safe ``(images, labels) -> (images, labels)`` for ``tf.data`` on batches.

    ``images``: uint8 or float32 [B, H, W, 3] in 0..255 (the result is float32); ``labels``: float32 one-hot
    or soft [B, num_classes].
    Applies, in order: random flips (``cfg.flip``), rotation (``cfg.rotation``, reflect fill), whole-pixel
    shifts (``cfg.translate``, reflect fill), color jitter
    (``cfg.color_jitter`` strength), then CutMix on the whole batch with probability ``cfg.cutmix``, mixing
    labels by the pasted area. Pixels stay in 0..255. With everything off it returns its inputs (as float32).
    Raises :class:`KitError` at trace time for integer or unbatched labels or unbatched images.
    """
    return OnlineAugmenter(cfg, num_classes)


# --------------------------------------------------------------------------------------------------
# Offline: numpy + OpenCV, deterministic per seed, cheap to import in worker processes
# --------------------------------------------------------------------------------------------------


def _jitter_numpy(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """One image's jitter, the numpy twin of :func:`_fast_color_jitter` (float32 result in 0..255)."""
    r = _jitter_ranges(strength)
    x = np.clip(image.astype(np.float32) + rng.uniform(*r["brightness"]) * 255.0, 0.0, 255.0)
    mean = x.mean(axis=(0, 1), keepdims=True)
    x = np.clip((x - mean) * rng.uniform(*r["contrast"]) + mean, 0.0, 255.0)
    u = rng.uniform(*r["saturation"])
    sign = -1.0 if rng.random() < 0.5 else 1.0
    matrix = _color_matrix_np(u / (1.0 - u), sign * rng.uniform(*r["hue"]) * 0.5)
    return np.clip(x @ matrix.T, 0.0, 255.0)


def _augment_one(image: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Flip, rotate, shift and jitter one uint8 image; every random draw happens whether or not it is used,
    so the stream (and so every other image's augmentation) does not depend on earlier outcomes."""
    flip_h, flip_v, angle = rng.random(), rng.random(), rng.uniform(-1.0, 1.0)
    h, w = image.shape[:2]
    most_y, most_x = round(cfg.translate * h), round(cfg.translate * w)
    shift_y, shift_x = int(rng.integers(-most_y, most_y + 1)), int(rng.integers(-most_x, most_x + 1))
    out = image
    if cfg.flip in ("horizontal", "both") and flip_h < 0.5:
        out = out[:, ::-1]
    if cfg.flip in ("vertical", "both") and flip_v < 0.5:
        out = out[::-1]
    if cfg.rotation > 0:
        import cv2

        degrees = angle * cfg.rotation * 360.0  # Keras: factor is a fraction of 2*pi, angle in [-f, f]
        matrix = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), degrees, 1.0)
        # BORDER_REFLECT matches Keras' fill_mode="reflect" (d c b a | a b c d | d c b a).
        out = cv2.warpAffine(np.ascontiguousarray(out), matrix, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    if shift_y or shift_x:  # the online kernel's shift: source row y - dy, mirrored at the border
        rows = np.arange(h) - shift_y
        cols = np.arange(w) - shift_x
        rows = np.where(rows < 0, -rows - 1, np.where(rows >= h, 2 * h - rows - 1, rows))
        cols = np.where(cols < 0, -cols - 1, np.where(cols >= w, 2 * w - cols - 1, cols))
        out = out[rows][:, cols]
    if cfg.color_jitter > 0:
        jittered = _jitter_numpy(np.ascontiguousarray(out), cfg.color_jitter, rng)
        out = np.clip(np.rint(jittered), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


def cutmix_box(height: int, width: int, alpha: float, rng: np.random.Generator) -> tuple[int, int, int, int]:
    """A CutMix box ``(y0, x0, h, w)`` fully inside the image: lam ~ Beta(alpha, alpha) is the kept
    fraction, so the box has sides sqrt(1 - lam) of the image (Yun et al. 2019, eq. 2), rounded to pixels."""
    lam = rng.beta(alpha, alpha)
    ratio = math.sqrt(1.0 - lam)
    box_h, box_w = int(round(height * ratio)), int(round(width * ratio))
    y0 = int(rng.integers(0, height - box_h + 1))
    x0 = int(rng.integers(0, width - box_w + 1))
    return y0, x0, box_h, box_w


def offline_augment(images: np.ndarray, soft_labels: np.ndarray, cfg: AugmentConfig, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """One augmented copy of a batch, as baked into the records in offline mode.

    Each image is flipped/rotated/shifted/jittered; then, with probability ``cfg.cutmix`` per image, a box from
    another (augmented, unmixed) image of the batch is pasted in and the soft label becomes
    ``(1 - a) * own + a * other`` with ``a`` the exact pasted pixel fraction. Deterministic for ``seed``.

    Args:
        images: uint8 [N, H, W, 3].
        soft_labels: float [N, C], one-hot or soft, rows summing to 1.
    Returns:
        (uint8 [N, H, W, 3], float32 [N, C]).
    """
    _check_config(cfg)
    images = np.asarray(images)
    soft_labels = np.asarray(soft_labels)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise KitError(
            f"offline_augment needs uint8 images [N, H, W, 3], got {images.dtype} {images.shape}", "pass decoded RGB images"
        )
    if soft_labels.ndim != 2 or soft_labels.shape[0] != images.shape[0] or not np.issubdtype(soft_labels.dtype, np.floating):
        raise KitError(
            f"offline_augment needs float soft labels [{images.shape[0]}, C], got {soft_labels.dtype} {soft_labels.shape}",
            "one-hot encode the class indices, e.g. np.eye(C, dtype=np.float32)[labels]",
        )
    rng = np.random.default_rng(seed)
    n, h, w = images.shape[:3]
    base = np.stack([_augment_one(image, cfg, rng) for image in images]) if n else images.copy()
    out = base.copy()
    labels = soft_labels.astype(np.float32, copy=True)
    if cfg.cutmix > 0 and n > 1:
        for i in range(n):
            if rng.random() >= cfg.cutmix:
                continue
            j = int(rng.integers(0, n - 1))
            j += j >= i  # another image, never itself
            y0, x0, bh, bw = cutmix_box(h, w, cfg.cutmix_alpha, rng)
            out[i, y0 : y0 + bh, x0 : x0 + bw] = base[j, y0 : y0 + bh, x0 : x0 + bw]
            area = (bh * bw) / float(h * w)
            labels[i] = (1.0 - area) * soft_labels[i] + area * soft_labels[j]
    return out, labels
