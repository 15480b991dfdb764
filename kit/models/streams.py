"""Forensic input streams beside the RGB network: ``model.options.inputs=[rgb, residual, fft]``.

The model's own network (a scratch net, a backbone or two) always sees the RGB pixels; each extra stream computes a
fixed forensic view of the same raw pixels (:mod:`kit.models.forensic`), runs it through a small stem of its own and
pools it; the pooled features of every stream are concatenated with the network's pooled features before the head
(late fusion, as the two-stream detector of Zhou et al. 2018 and the RGB + residual + spectrum entries of Kaggle's
AI-vs-human competition). The exported model still takes raw 0-255 pixels only.

A stream's stem (``model.options.stream_widths``, default [16, 32, 64]) is conv3x3-BN-ReLU per width, the first at
stride 1 (the residual's and the spectrum's detail is per pixel: a first stride would alias it away), the others at
stride 2, then global average pooling. It is trained from scratch in both phases (it is not part of a backbone, so
freezing a backbone leaves it trainable).

Options every CNN builder accepts (:data:`STREAM_DEFAULTS`): ``inputs`` (the streams, ``rgb`` first and always
there), ``stream_widths``, and ``fft_band`` ([low, high], the spectrum radii kept, in Nyquist units: a band mask;
null keeps all). Adding a stream is one entry in :data:`STREAMS`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from kit.errors import KitError, nearest
from kit.models.common import batch_norm, l2, positive_ints

if TYPE_CHECKING:
    import keras

    from kit.config import ModelConfig

STREAM_DEFAULTS: dict[str, Any] = {"inputs": ["rgb"], "stream_widths": [16, 32, 64], "fft_band": None}
RGB = "rgb"


def _noise_residual(options: Mapping[str, Any]) -> keras.layers.Layer:
    from kit.models.forensic import NoiseResidual

    return NoiseResidual(name="noise_residual")


def _log_spectrum(options: Mapping[str, Any]) -> keras.layers.Layer:
    from kit.models.forensic import LogSpectrum

    return LogSpectrum(band=options["fft_band"], name="log_spectrum")


# The extra streams: name -> its fixed forensic layer, made from the model's options.
STREAMS: dict[str, Callable[[Mapping[str, Any]], keras.layers.Layer]] = {
    "residual": _noise_residual,
    "fft": _log_spectrum,
}
INPUTS = (RGB, *STREAMS)


@dataclass(frozen=True)
class Streams:
    """The checked stream options of one model: the extra streams in order, their stems' widths, the FFT band."""

    extra: tuple[str, ...]
    widths: tuple[int, ...]
    options: Mapping[str, Any]


def read_streams(cfg: ModelConfig, options: Mapping[str, Any]) -> Streams:
    """The stream options of ``options`` (already merged over :data:`STREAM_DEFAULTS`), checked: one-line errors."""
    inputs = options["inputs"]
    inputs = [inputs] if isinstance(inputs, str) else inputs
    if not isinstance(inputs, list | tuple) or not inputs:
        raise KitError(f"model.options.inputs={inputs!r} for {cfg.name} is not a list of inputs", f"e.g. [{', '.join(INPUTS)}]")
    for name in inputs:
        if name not in INPUTS:
            raise KitError(
                f"unknown input '{name}' in model.options.inputs for {cfg.name}",
                f"use {' or '.join(nearest(str(name), INPUTS))} (all: {', '.join(INPUTS)})",
            )
    if len(set(inputs)) != len(inputs) or inputs[0] != RGB:
        raise KitError(
            f"model.options.inputs={list(inputs)} for {cfg.name} must start with rgb and name each input once",
            "the network always sees the RGB pixels; the others are extra streams: e.g. [rgb, residual, fft]",
        )
    widths = positive_ints(cfg, "stream_widths", options["stream_widths"])
    _check_band(cfg, options["fft_band"])
    return Streams(tuple(inputs[1:]), tuple(widths), options)


def _check_band(cfg: ModelConfig, band: Any) -> None:
    if band is None:
        return
    numbers = isinstance(band, list | tuple) and len(band) == 2
    numbers = numbers and all(isinstance(v, int | float) and not isinstance(v, bool) for v in band)
    if not numbers or not 0 <= band[0] < band[1]:
        raise KitError(
            f"model.options.fft_band={band!r} for {cfg.name} is not [low, high] with 0 <= low < high",
            "radii in Nyquist units (1: the Nyquist frequency, 1.42 reaches the corners): e.g. [0.25, 1.42], or null",
        )
    from kit.models.forensic import band_mask

    if not band_mask(cfg.image_size, cfg.image_size, (float(band[0]), float(band[1]))).any():
        raise KitError(
            f"model.options.fft_band={list(band)} keeps no frequency of a {cfg.image_size} px image",
            "widen the band (radii up to 1.42) or set model.options.fft_band=null",
        )


def fuse_streams(streams: Streams, inputs: keras.KerasTensor, pooled: keras.KerasTensor, decay: float) -> keras.KerasTensor:
    """``pooled`` (the network's pooled RGB features) with each extra stream's pooled features appended."""
    import keras

    if not streams.extra:
        return pooled
    features = [pooled]
    for name in streams.extra:
        x = STREAMS[name](streams.options)(inputs)
        for i, width in enumerate(streams.widths, start=1):
            x = keras.layers.Conv2D(
                width,
                3,
                strides=1 if i == 1 else 2,
                padding="same",
                use_bias=False,  # BN's shift does it
                kernel_initializer="he_normal",
                kernel_regularizer=l2(decay),
                name=f"{name}_conv{i}",
            )(x)
            x = batch_norm(f"{name}_bn{i}")(x)
            x = keras.layers.ReLU(name=f"{name}_relu{i}")(x)
        features.append(keras.layers.GlobalAveragePooling2D(name=f"{name}_gap")(x))
    return keras.layers.Concatenate(name="fused_features")(features)
