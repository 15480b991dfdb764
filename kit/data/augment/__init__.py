"""Image augmentation: flips, rotation, shifts, colour jitter, CutMix/MixUp and the degradations AI-image detection
trains with (random resized crop, resampling, blur, noise, JPEG, erasing), online (per batch) or offline (baked in).

Two entry points, one per :attr:`AugmentConfig.mode`:

- :func:`build_online_augmenter` (:mod:`.online`) returns a graph-safe callable for ``tf.data.Dataset.map`` on
  *batches* (uint8 or float32 images in 0..255, one-hot float labels), Keras core or keras-cv.
- :func:`offline_augment` (:mod:`.offline`) makes one augmented copy of a numpy batch (uint8) for the records
  writer: numpy + OpenCV, nothing heavy imported at module load, deterministic for a seed.

With ``augment.jitter_on=model`` the colour jitter runs instead in :class:`.layer.ColorJitter`, a Keras layer the
trainer puts first in the model (on the model's device; the same draws and ops; identity in inference).

Inside: :mod:`.draws` holds all the online randomness (pure functions of a seed tensor, stateless TF ops),
:mod:`.ops` the pixel maths that both paths apply (flip, reflect-index shift, jitter colour matrix, the
CutMix box, paste and label mixing, each written once for numpy and TensorFlow), :mod:`.degrade` the degradations
(one row each: its two settings, its draw from uniforms, its pixel maths; where each setting comes from).
Both augmenters check their settings against the ranges declared in :mod:`kit.config.schema` (a config edited
in Python skips load_config) and flip along the axes :data:`kit.config.symmetry.FLIP_AXES` gives each ``augment.flip`` word.

Label mixing is by the *true* pasted area: the CutMix box is clipped at the border and the label weight is
the clipped box's pixel fraction (timm's ``correct_lam``), counted from the same 0/1 masks that paste.

References:
    - CutMix: S. Yun, D. Han, S. J. Oh, S. Chun, J. Choe, Y. Yoo. "CutMix: Regularization Strategy to
      Train Strong Classifiers with Localizable Features", ICCV 2019. https://arxiv.org/abs/1905.04899
    - The box and its area correction as in timm ``timm/data/mixup.py`` (``rand_bbox``,
      ``cutmix_bbox_and_lam(correct_lam=True)``).
    - Color jitter as in A. Krizhevsky, I. Sutskever, G. Hinton. "ImageNet Classification with Deep
      Convolutional Neural Networks", NeurIPS 2012 (photometric distortions), and the brightness/
      contrast/saturation/hue parametrisation of torchvision ``ColorJitter`` / Keras ``RandomColorJitter``.
"""

from kit.data.augment.offline import offline_augment
from kit.data.augment.online import build_online_augmenter

__all__ = ["build_online_augmenter", "offline_augment"]
