"""Fixed forensic transforms of raw 0-255 RGB pixels as Keras layers: a noise residual and a log spectrum.

Generator traces live in high frequencies that an RGB network's early layers can average away; these layers hand a
model the evidence directly, computed inside the graph so a saved, exported or Kaggle-kernel model still takes raw
pixels. Neither has weights: nothing here is trained, frozen or unfrozen, and the file stores only the settings.

- :class:`NoiseResidual`: the three SRM high-pass kernels of the Spatial Rich Model (Fridrich & Kodovsky 2012,
  "Rich Models for Steganalysis of Digital Images": KB 3x3 divided by 4, KV 5x5 divided by 12, the 2nd-order
  horizontal residual divided by 2), as the noise stream of Zhou et al. (CVPR 2018, "Learning Rich Features for
  Image Manipulation Detection") uses them, applied to each colour channel (9 maps: colour filter-array and
  per-channel generator traces differ), truncated at +-3 grey levels as the SRM truncates its residuals (scene
  content is large, the noise small) and scaled to [-1, 1].
- :class:`LogSpectrum`: the grey image's 2-D Fourier magnitude (orthonormal: divided by sqrt(H W), so a pixel
  noise level reads the same at any size), centred (fftshift: the zero frequency in the middle), ``log(1 + |F|)``,
  optionally times a band mask that keeps the radii in ``band`` (fractions of the Nyquist frequency; the corners
  reach sqrt(2)). Upsampling by a generator leaves periodic peaks at fixed fractions of the sampling rate (Durall et
  al. CVPR 2020, "Watch your Up-Convolution"; Frank et al. ICML 2020); a band mask looks at those rings only.

The spectrum comes from ``tf.signal.rfft2d`` (the half plane a real image needs), mirrored into the full plane with
slices and reversals: TFLite (RFFT2D, ComplexAbs) and tf2onnx (RFFT2D, ComplexAbs) convert these ops, while a complex
``fft2d`` has no ONNX conversion. ``log(1 + x)`` is written as such: tf2onnx does not convert ``Log1p``.
Both layers compute in float32 under a mixed-precision policy (a float16 spectrum of a 0-255 image overflows).

Registered as ``kit>NoiseResidual`` and ``kit>LogSpectrum``: ``keras.models.load_model`` finds them once this module
is imported (:func:`kit.run_model.load_model` imports it).
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np

# The SRM kernels, each divided by its quantisation step q (Fridrich & Kodovsky 2012; Zhou et al. 2018: q = 4, 12, 2).
SRM_KERNELS = (
    np.array([[0, 0, 0, 0, 0], [0, -1, 2, -1, 0], [0, 2, -4, 2, 0], [0, -1, 2, -1, 0], [0, 0, 0, 0, 0]]) / 4.0,
    np.array([[-1, 2, -2, 2, -1], [2, -6, 8, -6, 2], [-2, 8, -12, 8, -2], [2, -6, 8, -6, 2], [-1, 2, -2, 2, -1]]) / 12.0,
    np.array([[0, 0, 0, 0, 0], [0, 0, 0, 0, 0], [0, 1, -2, 1, 0], [0, 0, 0, 0, 0], [0, 0, 0, 0, 0]]) / 2.0,
)
TRUNCATION = 3.0  # grey levels: residuals beyond it are scene content, not noise
LUMA_RGB = (0.299, 0.587, 0.114)  # ITU-R BT.601, the grey of JPEG's Y channel


def residual_kernel(channels: int = 3) -> np.ndarray:
    """The conv kernel (5, 5, channels, 3 * channels): every SRM kernel on every input channel, nothing mixed."""
    kernel = np.zeros((5, 5, channels, len(SRM_KERNELS) * channels), np.float32)
    for c in range(channels):
        for k, srm in enumerate(SRM_KERNELS):
            kernel[:, :, c, len(SRM_KERNELS) * c + k] = srm
    return kernel


def band_mask(height: int, width: int, band: tuple[float, float] | None) -> np.ndarray | None:
    """1 where the centred spectrum's radius (in Nyquist units) lies in ``band``, else 0; None for no band."""
    if band is None:
        return None
    fy = np.fft.fftshift(np.fft.fftfreq(height))[:, None]
    fx = np.fft.fftshift(np.fft.fftfreq(width))[None, :]
    radius = np.sqrt(fy**2 + fx**2) / 0.5
    low, high = band
    return ((radius >= low) & (radius <= high)).astype(np.float32)


@keras.saving.register_keras_serializable(package="kit")
class NoiseResidual(keras.layers.Layer):
    """(B, H, W, 3) raw pixels -> (B, H, W, 9) SRM noise residuals in [-1, 1] (module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)

    def call(self, images: Any) -> Any:
        kernel = keras.ops.convert_to_tensor(residual_kernel(images.shape[-1]))
        residual = keras.ops.conv(images, kernel, strides=1, padding="same")
        return keras.ops.clip(residual, -TRUNCATION, TRUNCATION) / TRUNCATION

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*input_shape[:-1], len(SRM_KERNELS) * input_shape[-1])


@keras.saving.register_keras_serializable(package="kit")
class LogSpectrum(keras.layers.Layer):
    """(B, H, W, 3) raw pixels -> (B, H, W, 1): ``log(1 + |F|)`` of the grey image, centred, optionally band-masked."""

    def __init__(self, band: tuple[float, float] | list[float] | None = None, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.band = None if band is None else (float(band[0]), float(band[1]))

    def call(self, images: Any) -> Any:
        import tensorflow as tf

        height, width = int(images.shape[1]), int(images.shape[2])
        grey = tf.tensordot(images, tf.constant(LUMA_RGB, tf.float32), axes=[[3], [0]])
        half = tf.abs(tf.signal.rfft2d(grey)) / float(np.sqrt(height * width))  # (B, H, W // 2 + 1)
        spectrum = _centred(_full_plane(half, width))
        log_magnitude = tf.math.log(spectrum + 1.0)
        mask = band_mask(height, width, self.band)
        if mask is not None:
            log_magnitude = log_magnitude * tf.constant(mask)
        return log_magnitude[..., None]

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (*input_shape[:-1], 1)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "band": None if self.band is None else list(self.band)}


def _full_plane(half: Any, width: int) -> Any:
    """The full (B, H, W) magnitude from ``rfft2d``'s half plane: a real image's spectrum is point-symmetric,
    |F(u, v)| = |F(-u, -v)|, so column v > W/2 is column W - v of the half plane with its rows taken at -u mod H."""
    import tensorflow as tf

    missing = width - half.shape[2]  # the columns rfft2d leaves out: v = W // 2 + 1 ... W - 1
    if missing == 0:
        return half
    rows_negated = tf.concat([half[:, :1], tf.reverse(half[:, 1:], axis=[1])], axis=1)  # row u -> row -u mod H
    return tf.concat([half, tf.reverse(rows_negated[:, :, 1 : missing + 1], axis=[2])], axis=2)


def _centred(spectrum: Any) -> Any:
    """``np.fft.fftshift`` over the two spatial axes, as slices (static sizes; every converter takes them)."""
    import tensorflow as tf

    for axis in (1, 2):
        size = int(spectrum.shape[axis])
        cut = size - size // 2
        head, tail = tf.split(spectrum, [cut, size - cut], axis=axis)
        spectrum = tf.concat([tail, head], axis=axis)
    return spectrum
