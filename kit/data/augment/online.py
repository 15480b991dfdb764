"""The online augmenter: a graph-safe ``(images, labels) -> (images, labels)`` for ``tf.data`` on batches.

Keras core (``augment.library=keras``, the default): kit draws (:mod:`~kit.data.augment.draws`, one seed a
batch from a ``tf.random.Generator``) and kit applies (:mod:`~kit.data.augment.ops`). The pixel work --
uint8 -> float, flips, shifts, brightness, contrast, the colour matrix, the CutMix paste and the final
clip -- is one ``tf.function(jit_compile=True)`` kernel: XLA fuses it into about three passes over the
batch where the ops one by one make over fifteen (each a full read and write of [B, H, W, 3] floats).
Measured at 64 px, batch 64, in tf.data on 2 shared cores: flip + jitter + CutMix went from 11.3 ms to
4.7 ms a batch; in BENCHMARKS.md (input pipeline) the whole pipeline goes from 8.1k to 17.1k img/s with it.
``augment.jit_compile=false`` runs the same kernel as plain TF ops. A rotation (which interpolates) runs
as ``keras.layers.RandomRotation`` between the flips and the kernel.

The degradations (:mod:`~kit.data.augment.degrade`: random resized crop, resampling, blur, noise, JPEG) come first,
as a kernel call of their own, then JPEG per image (a codec XLA cannot compile), then the kernel above; erasing runs
in that kernel, after the jitter. Fused into the one kernel, XLA repeats the blur's taps for each consumer: flip +
jitter + CutMix + blur(p=0.5) took 160-240 ms a batch of 64 at 96 px against 55-68 ms as its own call (2 shared
cores). Each degradation draws from its own seed (:func:`~kit.data.augment.draws.fold`), so turning one on leaves
every other draw as it was; with all of them off the graph and the batches are those of the augmenter without them.

``augment.jitter_on=model`` (resolved by :func:`kit.train.strategy.choose_jitter_on`; ``auto`` unresolved counts as
``pipeline``): the augmenter skips the colour jitter, which the model's first layer applies instead
(:class:`kit.data.augment.layer.ColorJitter`, after CutMix/MixUp rather than before).

keras-cv (``augment.library=keras_cv``): its public layers one after the other (flip, rotation,
translation, CutMix), kit's colour jitter and MixUp. keras-cv's CutMix box is clipped at the border without
correcting the label weight (its labels can be off by half the box), so it runs on the images plus a
"source index" channel and the labels are mixed by the pixels each image actually received.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from kit.config.checks import check_ranges
from kit.config.symmetry import FLIP_AXES, HEIGHT, WIDTH
from kit.data.augment import degrade, ops
from kit.errors import KitError

if TYPE_CHECKING:
    from kit.config import AugmentConfig

# keras-cv's RandomFlip mode for each set of flipped axes (kit's words and their axes: kit.config.symmetry).
KERAS_CV_FLIP_MODES = {
    frozenset({WIDTH}): "horizontal",
    frozenset({HEIGHT}): "vertical",
    frozenset({WIDTH, HEIGHT}): "horizontal_and_vertical",
}


def check_batch(images: Any, labels: Any, num_classes: int) -> None:
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


class OnlineAugmenter:
    """Callable ``(images, labels) -> (images, labels)`` on batches; see :func:`build_online_augmenter`."""

    def __init__(self, cfg: AugmentConfig, num_classes: int) -> None:
        check_ranges(cfg, "augment.")  # a config edited in Python never passed load_config's checks
        self.cfg = cfg
        self.num_classes = int(num_classes)
        self.library = str(cfg.library)
        self.flip_axes = FLIP_AXES[str(cfg.flip)]
        # The jitter runs here unless the model's first layer runs it (augment.jitter_on=model, kit.data.augment.layer).
        self.jitter = cfg.color_jitter if cfg.color_jitter > 0 and str(cfg.jitter_on) != "model" else 0.0
        self.degradations = degrade.chosen(cfg, degrade.ROWS)
        self.names = degrade.describe(cfg) + [
            name
            for name, on in [
                ("flip", bool(self.flip_axes)),
                ("rotation", cfg.rotation > 0),
                ("translate", cfg.translate > 0),
                ("color_jitter", self.jitter > 0),
                (f"cutmix(p={cfg.cutmix}, alpha={float(cfg.cutmix_alpha)})", cfg.cutmix > 0),
                (f"mixup(p={cfg.mixup}, alpha={float(cfg.mixup_alpha)})", cfg.mixup > 0),
            ]
            if on
        ]
        if not self.names:
            return  # identity: do not even import TensorFlow
        import tensorflow as tf

        # One seed a batch; every draw of the batch derives from it (kit.data.augment.draws).
        self.seeds = tf.random.Generator.from_seed(int(cfg.seed))
        self.layers = self._library_layers() if self.library == "keras_cv" else self._keras_layers()
        self.kernel = tf.function(self._kernel, jit_compile=bool(cfg.jit_compile), reduce_retracing=True)

    def _keras_layers(self) -> list[Any]:
        """Keras core: only the rotation is a layer (it interpolates); kit draws and applies everything else."""
        if self.cfg.rotation <= 0:
            return []
        import keras

        # dtype float32 explicitly: a mixed-precision global policy must not turn pixels into float16.
        seed = int(self.cfg.seed) + 1
        return [keras.layers.RandomRotation(self.cfg.rotation, fill_mode="reflect", seed=seed, dtype="float32")]

    def _library_layers(self) -> list[Any]:
        """keras-cv's layers for flip, rotation and translation, in that order (jitter and CutMix follow)."""
        try:
            import keras_cv
        except ImportError:  # an optional extra: a user install has only kit's own requirements
            raise KitError(
                "augment.library=keras_cv needs keras-cv, which is not installed",
                "pip install -e '.[keras-cv]' in kit's folder, or set augment.library=keras",
            ) from None

        cfg, seed, layers = self.cfg, int(self.cfg.seed), keras_cv.layers
        stages = []
        if self.flip_axes:
            stages.append(layers.RandomFlip(mode=KERAS_CV_FLIP_MODES[frozenset(self.flip_axes)], seed=seed, dtype="float32"))
        if cfg.rotation > 0:
            stages.append(layers.RandomRotation(cfg.rotation, fill_mode="reflect", seed=seed + 1, dtype="float32"))
        if cfg.translate > 0:
            t = cfg.translate
            stages.append(layers.RandomTranslation(t, t, fill_mode="reflect", seed=seed + 5, dtype="float32"))
        if cfg.cutmix > 0:
            self.cutmix_layer = layers.CutMix(alpha=float(cfg.cutmix_alpha), seed=seed + 3, dtype="float32")
        return stages

    def __repr__(self) -> str:
        return f"OnlineAugmenter({self.library}: {', '.join(self.names) or 'identity'})"

    def __call__(self, images: Any, labels: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        check_batch(images, labels, self.num_classes)
        images = tf.convert_to_tensor(images)
        if not self.names:
            return tf.cast(images, tf.float32), labels
        labels = tf.cast(labels, tf.float32)
        seed = self.seeds.make_seeds(1)[:, 0]
        if self.library == "keras_cv":
            return self._call_keras_cv(images, labels, seed)
        return self._call_keras(images, labels, seed)

    # ---- Keras core: kit's draws, one fused kernel ------------------------------------------------------

    def _call_keras(self, images: Any, labels: Any, seed: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        from kit.data.augment import draws

        cfg = self.cfg
        shape = tf.shape(images)
        batch, height, width = shape[0], shape[1], shape[2]
        seed_flips, seed_shifts, seed_jitter, seed_cutmix = draws.split(seed, 4)
        degraded = self._draw_degradations(seed, shape)
        erasing = degraded.pop(degrade.ERASING.name, None)
        if degraded:
            images = self._degrade(images, degraded)
        # (axis, [B] booleans) per flipped axis: "both" flips each axis on its own draw.
        flips = [(axis, draws.coin_flips(s, batch)) for axis, s in zip(self.flip_axes, draws.split(seed_flips, 2), strict=False)]
        if self.layers:  # a rotation (a layer, outside the kernel) must come after the flips: flip first
            images = tf.cast(images, tf.float32)
            for axis, flipped in flips:
                images = ops.flip(images, flipped, axis, ops.tensorflow_ops())
            flips = []
            for layer in self.layers:
                images = layer(images, training=True)
        shifts = draws.shifts(seed_shifts, batch, height, width, cfg.translate) if cfg.translate > 0 else None
        jitter = draws.jitter(seed_jitter, batch, self.jitter) if self.jitter > 0 else None
        paste, blend, tf_ops = None, None, ops.tensorflow_ops()
        if cfg.mixup > 0:  # its seed split off CutMix's only when on, so CutMix alone draws as before
            seed_cutmix, seed_mixup = draws.split(seed_cutmix, 2)
            partner, weight, mixed_up = draws.mixup(seed_mixup, batch, float(cfg.mixup_alpha), cfg.mixup)
            labels = ops.mix_labels(labels, partner, weight, tf_ops)
            blend = (partner, weight)
        if cfg.cutmix > 0:
            partner, rows, cols, area = draws.cutmix(seed_cutmix, batch, height, width, float(cfg.cutmix_alpha), cfg.cutmix)
            if blend is not None:  # a MixUped batch is not CutMixed too
                rows, area = rows * (1.0 - mixed_up), area * (1.0 - mixed_up)
            labels = ops.mix_labels(labels, partner, area, tf_ops)
            paste = (partner, rows, cols)
        mixed = self.kernel(images, flips, shifts, jitter, paste, blend, erasing=erasing)
        return tf.ensure_shape(mixed, images.shape), labels

    def _draw_degradations(self, seed: Any, shape: Any) -> dict[str, Any]:
        """The draws of the degradations that are on, by name; each row's seed folded in from its place in the table."""
        from kit.data.augment import draws

        cfg = self.cfg
        return {
            row.name: draws.degradation(
                draws.fold(seed, degrade.ROWS.index(row)), shape, row, getattr(cfg, row.name), getattr(cfg, row.parameter)
            )
            for row in self.degradations
        }

    def _degrade(self, images: Any, degraded: dict[str, Any]) -> Any:
        """The drawn degradations, a stage of their own: the pixel maths as a kernel call, then JPEG per image."""
        pixel_rows = {name: params for name, params in degraded.items() if name != "jpeg"}
        if pixel_rows:
            images = self.kernel(images, [], None, None, None, None, degraded=pixel_rows)
        return degrade.reencode_tf(images, degraded["jpeg"]) if "jpeg" in degraded else images

    def _kernel(
        self,
        images: Any,
        flips: list[tuple[int, Any]],
        shifts: Any,
        jitter: Any,
        paste: Any,
        blend: Any,
        degraded: dict[str, Any] | None = None,
        erasing: Any = None,
    ) -> Any:
        """The pixel work of one batch (compiled by XLA unless ``augment.jit_compile=false``).

        uint8 or float images [B, H, W, 3] -> float32 in 0..255: the drawn degradations (pixel maths only; clipped),
        each image flipped along each axis where drawn, whole-pixel shifts, jitter with the drawn parameters, random
        erasing, the CutMix paste (an exact 0/1 blend) or the MixUp blend, then a clip (the rotation's interpolation
        can overshoot 0..255 slightly).
        """
        import tensorflow as tf

        tf_ops = ops.tensorflow_ops()
        x = tf.cast(images, tf.float32)
        if degraded:
            x = tf.clip_by_value(degrade.apply_pixel_rows(x, degraded, tf_ops), 0.0, 255.0)
        for axis, flipped in flips:
            x = ops.flip(x, flipped, axis, tf_ops)
        if shifts is not None:
            x = ops.shift(x, *shifts, tf_ops)
        if jitter is not None:
            x = ops.jitter(x, *jitter, tf_ops, fused=bool(self.cfg.jit_compile))
        if erasing is not None:
            x = degrade.ERASING.apply(x, erasing, tf_ops)
        if paste is not None:
            x = ops.paste(x, *paste, tf_ops)
        if blend is not None:
            x = ops.blend(x, *blend, tf_ops)
        return tf.clip_by_value(x, 0.0, 255.0)

    # ---- keras-cv: its layers one after the other ---------------------------------------------------------

    def _call_keras_cv(self, images: Any, labels: Any, seed: Any) -> tuple[Any, Any]:
        import tensorflow as tf

        from kit.data.augment import draws

        seed_jitter, seed_apply = draws.split(seed, 2)
        images = tf.cast(images, tf.float32)
        degraded = self._draw_degradations(seed, tf.shape(images))
        erasing = degraded.pop(degrade.ERASING.name, None)
        if degraded:
            images = self._degrade(images, degraded)
        for layer in self.layers:
            images = layer(images)  # keras-cv layers always augment and take no `training` argument
        if self.jitter > 0:
            jitter = draws.jitter(seed_jitter, tf.shape(images)[0], self.jitter)
            images = ops.jitter(images, *jitter, ops.tensorflow_ops())  # clips to 0..255
        else:  # rotation interpolation can overshoot slightly; models expect 0..255
            images = tf.clip_by_value(images, 0.0, 255.0)
        if erasing is not None:
            images = degrade.ERASING.apply(images, erasing, ops.tensorflow_ops())
        mixed_up = None
        if self.cfg.mixup > 0:  # keras-cv's MixUp draws one weight a batch; kit's blend is per image, as online above
            seed_apply, seed_mixup = draws.split(seed_apply, 2)
            partner, weight, mixed_up = draws.mixup(seed_mixup, tf.shape(images)[0], float(self.cfg.mixup_alpha), self.cfg.mixup)
            images, labels = (
                ops.blend(images, partner, weight, ops.tensorflow_ops()),
                ops.mix_labels(labels, partner, weight, ops.tensorflow_ops()),
            )
        if self.cfg.cutmix >= 1.0 and mixed_up is None:
            images, labels = self._cutmix_tagged(images, labels)
        elif self.cfg.cutmix > 0:
            apply = draws.uniform(seed_apply, [], 0.0, 1.0) < self.cfg.cutmix
            if mixed_up is not None:  # a MixUped batch is not CutMixed too
                apply = apply & (mixed_up == 0.0)
            images, labels = tf.cond(apply, lambda: self._cutmix_tagged(images, labels), lambda: (images, labels))
        return images, labels

    def _cutmix_tagged(self, images: Any, labels: Any) -> tuple[Any, Any]:
        """keras-cv's CutMix on images plus a source-index channel; labels from the true pasted area."""
        import tensorflow as tf

        shape = tf.shape(images)
        batch = shape[0]
        own = tf.range(batch)
        index_plane = tf.broadcast_to(tf.cast(own, tf.float32)[:, None, None, None], [batch, shape[1], shape[2], 1])
        tagged = tf.concat([images, index_plane], axis=-1)
        mixed = self.cutmix_layer({"images": tagged, "labels": labels})["images"]
        source = tf.cast(tf.round(mixed[..., 3]), tf.int32)  # [B, H, W]: which image each pixel came from
        pasted = tf.not_equal(source, own[:, None, None])
        area = tf.reduce_mean(tf.cast(pasted, tf.float32), axis=(1, 2))
        partner = tf.reduce_max(tf.where(pasted, source, -1), axis=(1, 2))
        partner = tf.where(partner < 0, own, partner)  # nothing pasted (or pasted from itself): keep own label
        labels = ops.mix_labels(labels, partner, area, ops.tensorflow_ops())
        return tf.ensure_shape(mixed[..., :3], images.shape), labels


def build_online_augmenter(cfg: AugmentConfig, num_classes: int) -> Callable[[Any, Any], tuple[Any, Any]]:
    """A graph-safe ``(images, labels) -> (images, labels)`` for ``tf.data`` on batches.

    ``images``: uint8 or float32 [B, H, W, 3] in 0..255 (the result is float32); ``labels``: float32 one-hot
    or soft [B, num_classes].
    Applies, in order: the degradations (:mod:`~kit.data.augment.degrade`: random resized crop, resampling, blur,
    noise, JPEG; each with its probability per image), random flips (``cfg.flip``; ``both`` flips each axis on its
    own draw), rotation (``cfg.rotation``, reflect fill), whole-pixel shifts (``cfg.translate``, reflect fill), color
    jitter (``cfg.color_jitter`` strength; skipped with ``cfg.jitter_on=model``, the model's layer), random erasing
    (``cfg.erase``), then MixUp on the whole batch with probability ``cfg.mixup`` (per-image Beta(mixup_alpha)
    weights) or else CutMix with probability ``cfg.cutmix``, mixing labels by the blend weight or the pasted area.
    Pixels stay in 0..255. With everything off it returns its inputs (as float32).
    The same ``cfg.seed`` gives the same sequence of batches' draws.
    Raises :class:`KitError` at trace time for integer or unbatched labels or unbatched images.
    """
    return OnlineAugmenter(cfg, num_classes)
