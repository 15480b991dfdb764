"""Grids of images with a caption each and, optionally, a heat map over each: kit show, top losses, Grad-CAM.

Captions are fitted to their column (a long file name loses its middle, keeping the start and the extension)
and the figure's title is wrapped to the figure's width, so nothing runs into a neighbour or off the page.
Standalone :class:`matplotlib.figure.Figure` objects, saved with :func:`kit.plots.save` (as every kit plot).
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kit.plots import save

if TYPE_CHECKING:
    from matplotlib.figure import Figure

PANEL_INCHES = 2.2  # width of one image in the grid
CAPTION_POINTS = 7.5
TITLE_POINTS = 11.0
HEAT_ALPHA = 0.45  # how strongly a heat map covers its image
CHAR_WIDTH = 0.6  # a character's average width in ems, for fitting text to a width


def chars_fitting(inches: float, points: float) -> int:
    """How many characters of ``points``-sized text fit across ``inches``."""
    return max(8, int(inches * 72 / (points * CHAR_WIDTH)))


def elide(text: str, width: int) -> str:
    """``text`` cut to ``width`` characters by dropping its middle ("start…end"), so a file's extension stays."""
    if len(text) <= width:
        return text
    tail = max(4, width // 3)
    return f"{text[: width - tail - 1]}…{text[-tail:]}"


def fit_caption(caption: str, width: int) -> str:
    """Each line of a caption elided to ``width`` characters."""
    return "\n".join(elide(line, width) for line in caption.split("\n"))


def grid_figure(
    images: Sequence[np.ndarray] | np.ndarray,
    captions: Sequence[str],
    *,
    cols: int,
    title: str = "",
    heat: Sequence[np.ndarray] | np.ndarray | None = None,
) -> Figure:
    """Images (uint8 or 0..255 floats, RGB or grey) left to right, top to bottom, ``cols`` a row, a caption under
    each title line; ``heat`` (one (H, W) map in 0..1 per image) is drawn over its image in the jet colours."""
    from matplotlib.figure import Figure

    n = len(images)
    cols = max(1, min(cols, max(1, n)))
    rows = max(1, -(-n // cols))
    lines = max((caption.count("\n") + 1 for caption in captions), default=1)
    width = PANEL_INCHES * cols
    wrapped = textwrap.fill(title, chars_fitting(width, TITLE_POINTS)) if title else ""
    title_inches = (wrapped.count("\n") + 1) * TITLE_POINTS * 1.5 / 72 if title else 0.0
    panel_height = PANEL_INCHES + lines * CAPTION_POINTS * 1.4 / 72
    fig = Figure(figsize=(width, panel_height * rows + title_inches), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    fit = chars_fitting(PANEL_INCHES, CAPTION_POINTS)
    for ax in axes:
        ax.axis("off")
    for i, (ax, image, caption) in enumerate(zip(axes, images, captions, strict=False)):
        pixels = np.clip(np.asarray(image, dtype=np.float32), 0, 255).astype(np.uint8)
        grey = pixels.ndim == 2 or pixels.shape[-1] == 1
        ax.imshow(pixels.squeeze(), cmap="gray" if grey else None, vmin=0, vmax=255, interpolation="nearest")
        if heat is not None:
            ax.imshow(np.asarray(heat[i]), cmap="jet", alpha=HEAT_ALPHA, vmin=0.0, vmax=1.0, interpolation="bilinear")
        ax.set_title(fit_caption(caption, fit), fontsize=CAPTION_POINTS)
    if not n:
        axes[0].text(0.5, 0.5, "nothing to show", ha="center", va="center")
    if wrapped:
        fig.suptitle(wrapped, fontsize=TITLE_POINTS)
    return fig


def write_grid(
    images: Sequence[np.ndarray] | np.ndarray,
    captions: Sequence[str],
    path: str | Path,
    *,
    cols: int,
    title: str = "",
    heat: Sequence[np.ndarray] | np.ndarray | None = None,
) -> Path:
    """:func:`grid_figure` as a PNG at ``path``."""
    return save(grid_figure(images, captions, cols=cols, title=title, heat=heat), path)
