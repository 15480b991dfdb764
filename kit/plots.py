"""Plots shared by evaluate, predict and audit: PNG files written atomically, never a window.

We draw on standalone :class:`matplotlib.figure.Figure` objects instead of ``pyplot``: no global
figure registry (nothing leaks in long runs, nothing is thread-unsafe), no GUI backend to pick on a
headless machine, and ``Figure.savefig`` renders with Agg for PNG output.
"""

from __future__ import annotations

import textwrap
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kit.io import atomic_path

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.axes import Axes
    from matplotlib.backend_bases import RendererBase
    from matplotlib.figure import Figure
    from matplotlib.text import Text

# history.csv columns that are bookkeeping, not curves
_NOT_CURVES = {"epoch", "phase", "lr", "learning_rate", "time", "seconds"}
RATE_COLUMNS = ("learning_rate", "lr")  # the rate at each epoch's end, as Keras logs it (newer name first)
TITLE_ROOM = 0.96  # share of its figure (or axes) a title may span: constrained layout's padding stays clear


def _figure(width: float, height: float) -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def save(fig: Figure, path: str | Path, dpi: int = 100) -> Path:
    """Render ``fig`` to ``path`` as PNG atomically (a reader never sees half a file), its titles fitted first."""
    path = Path(path)
    fit_titles(fig, dpi)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    return path


def fit_titles(fig: Figure, dpi: int = 100) -> None:
    """Wrap (then, for a word too long, shrink) every title to its width: the figure's for the figure's titles
    (``suptitle``), the axes' for an axes title, so none is cut at the edge or runs into its neighbour."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig.set_dpi(dpi)  # measured in the pixels of the saved file
    renderer = FigureCanvasAgg(fig).get_renderer()
    for _ in range(6):  # a wrapped title is taller: the layout then narrows the axes a little, so fit again
        fig.draw_without_rendering()  # the layout: each axes' width
        room = [(text, fig.bbox.width) for text in fig.texts]
        room += [(ax.title, ax.get_window_extent(renderer).width) for ax in fig.axes if ax.get_visible() and ax.title.get_text()]
        crowded = [
            (text, TITLE_ROOM * width) for text, width in room if text.get_window_extent(renderer).width > TITLE_ROOM * width
        ]
        if not crowded:
            return
        for text, width in crowded:
            _fit_text(text, width, renderer)


def _fit_text(text: Text, width: float, renderer: RendererBase) -> None:
    for _ in range(4):
        extent = text.get_window_extent(renderer).width
        if extent <= width:
            return
        lines = text.get_text().splitlines()
        chars = max(1, int(max(map(len, lines)) * width / extent))
        wrapped = "\n".join(textwrap.fill(line, chars, break_long_words=False) for line in lines)
        if wrapped != text.get_text():
            text.set_text(wrapped)
        else:  # one word wider than the room
            text.set_fontsize(text.get_fontsize() * width / extent * 0.98)


def integer_axis(ax: Axes, count: int) -> None:
    """An x axis of whole numbers 1..count (epochs, trials): one tick each when few, never 0.945..1.05 for one point."""
    from matplotlib.ticker import MaxNLocator

    ax.set_xlim(0.5, max(1, count) + 0.5)
    if count <= 12:
        ax.set_xticks(range(1, max(1, count) + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def learning_curves(
    history: pd.DataFrame, path: str | Path, title: str = "", best_epoch: int | None = None, monitor: str | None = None
) -> Path:
    """``learning_curves_figure`` as a PNG at ``path``."""
    return save(learning_curves_figure(history, title, best_epoch, monitor), path)


def learning_curves_figure(
    history: pd.DataFrame, title: str = "", best_epoch: int | None = None, monitor: str | None = None
) -> Figure:
    """One panel per metric (train and ``val_`` curves), one for the learning rate when history.csv has it; a
    dashed line where the ``phase`` column changes; the best epoch (1-based, as history.csv counts) marked in
    every panel, with its value on the ``monitor`` curve (e.g. ``val_accuracy``).

    Rows are plotted in file order (x = 1..n, history.csv's 1-based epochs, numbered across phases) so a resumed
    or two-phase history reads left to right.
    """
    names = [c for c in history.columns if not c.startswith("val_") and c not in _NOT_CURVES]
    names += [c[4:] for c in history.columns if c.startswith("val_") and c[4:] not in names]
    names = [n for n in names if any(_numeric(history, c) for c in (n, f"val_{n}"))]
    rate = next((c for c in RATE_COLUMNS if _numeric(history, c)), None)
    panels = [*names, "learning rate"] if rate is not None else names
    cols = min(3, max(1, len(panels)))
    rows = max(1, -(-len(panels) // cols))
    fig = _figure(4.2 * cols, 3.0 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    x = np.arange(1, len(history) + 1)
    boundaries: list[float] = []
    if "phase" in history.columns and len(history):
        phase = history["phase"].astype(str).to_numpy()
        boundaries = [i + 0.5 for i in range(1, len(phase)) if phase[i] != phase[i - 1]]
    for ax, name in zip(axes, names, strict=False):
        if name in history.columns:
            ax.plot(x, history[name], marker=".", label="train")
        if f"val_{name}" in history.columns:
            ax.plot(x, history[f"val_{name}"], marker=".", label="val")
        ax.set_title(name)
    if rate is not None:
        _rate_panel(axes[len(names)], x, history[rate])
    for ax, panel in zip(axes, panels, strict=False):
        for b in boundaries:
            ax.axvline(b, color="gray", linestyle="--", linewidth=1)
            ax.text(b, 1.0, " phase 2", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="gray")
        if best_epoch is not None and 1 <= best_epoch <= len(history):
            _mark_best(ax, history, best_epoch, monitor if panel == _panel_of(monitor) else None)
        ax.set_xlabel("epoch")
        integer_axis(ax, len(history))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig


def _numeric(history: pd.DataFrame, column: str) -> bool:
    return column in history.columns and np.issubdtype(history[column].dtype, np.number) and history[column].notna().any()


def _panel_of(monitor: str | None) -> str | None:
    """The panel a monitored metric is drawn in: ``val_accuracy`` -> ``accuracy``."""
    return monitor[4:] if monitor and monitor.startswith("val_") else monitor


def _rate_panel(ax: Axes, x: np.ndarray, rate: pd.Series) -> None:
    """The learning rate at each epoch's end; a log axis when it spans more than 10x (warmup, one-cycle, decay)."""
    constant = rate.dropna().nunique() == 1
    label = f"learning rate (constant {rate.dropna().iloc[0]:g})" if constant else "learning rate"
    ax.plot(x, rate, marker=".", color="tab:green", label=label)
    ax.set_ylabel("at the epoch's end", fontsize=8)  # what Keras logs: after a schedule's last step of the epoch
    positive = rate[rate > 0]
    if len(positive) == len(rate.dropna()) and len(positive) and positive.max() > 10 * positive.min():
        ax.set_yscale("log")
    elif constant and len(positive):  # from 0: a flat line, not +/-4% of one value in five-decimal ticks
        ax.set_ylim(0, 2 * float(positive.iloc[0]))
    if ax.get_yscale() != "log":
        from matplotlib.ticker import FormatStrFormatter

        ax.yaxis.set_major_formatter(FormatStrFormatter("%.3g"))
    ax.set_title("learning rate")


def _mark_best(ax: Axes, history: pd.DataFrame, best_epoch: int, monitor: str | None) -> None:
    """A dotted line at the best epoch; on the monitored curve's panel a star with its value in the legend."""
    line = {"color": "tab:red", "linestyle": ":", "linewidth": 1.2}
    if monitor is None or monitor not in history.columns:
        ax.axvline(best_epoch, **line, label=f"best epoch {best_epoch}")
        return
    ax.axvline(best_epoch, **line)
    value = float(history[monitor].iloc[best_epoch - 1])
    ax.plot([best_epoch], [value], "*", color="tab:red", markersize=12, label=f"best {monitor} {value:.4f} (epoch {best_epoch})")


def confusion_matrix(matrix: np.ndarray, classes: Sequence[str], path: str | Path, title: str = "confusion matrix") -> Path:
    """Row-normalised colours (recall per true class) with the raw counts written in small matrices."""
    matrix = np.asarray(matrix)
    n = len(classes)
    size = min(14.0, 3.0 + 0.45 * n)
    fig = _figure(size + 1.0, size)
    ax = fig.subplots()
    rows = matrix.sum(axis=1, keepdims=True)
    norm = np.divide(matrix, rows, out=np.zeros(matrix.shape, float), where=rows > 0)
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, label="fraction of the true class")
    if n <= 30:  # beyond that, labels and counts are unreadable anyway
        ax.set_xticks(range(n), [str(c) for c in classes], rotation=90 if n > 6 else 0, fontsize=8)
        ax.set_yticks(range(n), [str(c) for c in classes], fontsize=8)
        for i in range(n):
            for j in range(n):
                ax.text(
                    j,
                    i,
                    str(int(matrix[i, j])),
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if norm[i, j] > 0.5 else "black",
                )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    return save(fig, path)


def roc_curve(y_true: np.ndarray, prob: np.ndarray, path: str | Path) -> Path:
    """ROC curve of a binary problem with its AUC."""
    from sklearn.metrics import roc_auc_score
    from sklearn.metrics import roc_curve as sk_roc

    fpr, tpr, _ = sk_roc(y_true, prob)
    fig = _figure(4.5, 4.2)
    ax = fig.subplots()
    ax.plot(fpr, tpr, label=f"AUC {roc_auc_score(y_true, prob):.4f}")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    return save(fig, path)


def pr_curve(y_true: np.ndarray, prob: np.ndarray, path: str | Path, threshold: float | None = None) -> Path:
    """Precision-recall curve with average precision; marks the operating point at ``threshold``."""
    from sklearn.metrics import average_precision_score, precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y_true, prob)
    fig = _figure(4.5, 4.2)
    ax = fig.subplots()
    ax.plot(recall, precision, label=f"AP {average_precision_score(y_true, prob):.4f}")
    if threshold is not None and len(thresholds):
        i = int(np.clip(np.searchsorted(thresholds, threshold), 0, len(thresholds) - 1))
        ax.scatter([recall[i]], [precision[i]], color="red", zorder=3, label=f"threshold {threshold:.3f}")
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("precision-recall")
    ax.legend(loc="lower left")
    ax.grid(alpha=0.3)
    return save(fig, path)


FEW_VALUES = 12  # a quantity with at most this many distinct values is drawn as bars per value, not a histogram


def histograms(
    groups: dict[str, np.ndarray], path: str | Path, xlabel: str, title: str = "", bins: int = 40, log: bool = False
) -> Path:
    """``histograms_figure`` as a PNG at ``path``."""
    return save(histograms_figure(groups, xlabel, title, bins, log), path)


def histograms_figure(groups: dict[str, np.ndarray], xlabel: str, title: str = "", bins: int = 40, log: bool = False) -> Figure:
    """Overlaid, density-normalised histograms of one quantity per group (e.g. per class); a quantity with few distinct
    values (every JPEG saved at quality 90, three image sizes) as side-by-side bars of each group's share per value."""
    fig = _figure(6.0, 3.6)
    ax = fig.subplots()
    values = [np.asarray(v, float) for v in groups.values() if len(v)]
    distinct = np.unique(np.concatenate(values)) if values else np.zeros(0)
    title = title or xlabel
    if 0 < len(distinct) <= FEW_VALUES:
        _value_bars(ax, groups, distinct)
        if len(distinct) == 1:
            title += f": every image {distinct[0]:g}"
    elif values:
        everything = np.concatenate(values)
        low, high = float(everything.min()), float(everything.max())
        if log and low > 0:
            edges = np.geomspace(low, high if high > low else low * 1.01, bins + 1)
            ax.set_xscale("log")
        else:
            edges = np.linspace(low, high if high > low else low + 1.0, bins + 1)
        for name, v in groups.items():
            if len(v):
                ax.hist(np.asarray(v, float), bins=edges, alpha=0.5, density=True, label=f"{name} (n={len(v)})")
        ax.set_ylabel("density")
    if values and len(groups) <= 12:
        ax.legend(fontsize=8, loc="upper right", ncols=min(3, len(groups)) if len(distinct) <= FEW_VALUES else 1)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return fig


def _value_bars(ax: Axes, groups: dict[str, np.ndarray], distinct: np.ndarray) -> None:
    """Each group's share of images at each of the ``distinct`` values, the groups' bars side by side."""
    shown = [(name, np.asarray(v, float)) for name, v in groups.items() if len(v)]
    width = 0.8 / len(shown)
    for k, (name, v) in enumerate(shown):
        shares = [(v == value).mean() for value in distinct]
        ax.bar(np.arange(len(distinct)) + (k - (len(shown) - 1) / 2) * width, shares, width, label=f"{name} (n={len(v)})")
    ax.set_xticks(range(len(distinct)), [f"{d:g}" for d in distinct], fontsize=8)
    ax.set_ylim(0, 1.3)  # room above the bars for the legend
    ax.set_yticks(np.linspace(0, 1, 6))
    ax.set_ylabel("share of the group's images")


def bar_chart(counts: dict[str, int], path: str | Path, title: str, ylabel: str = "images") -> Path:
    """Counts per category (e.g. class balance)."""
    n = len(counts)
    fig = _figure(min(16.0, 3.0 + 0.3 * n), 3.6)
    ax = fig.subplots()
    ax.bar(range(n), list(counts.values()))
    if n <= 40:
        ax.set_xticks(range(n), list(counts.keys()), rotation=90 if n > 8 else 0, fontsize=8)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="y")
    return save(fig, path)


def tuning(
    trials: pd.DataFrame, objective: str, hyperparameters: Sequence[str], path: str | Path, log_scaled: Collection[str] = ()
) -> Path:
    """``tuning_figure`` as a PNG at ``path``."""
    return save(tuning_figure(trials, objective, hyperparameters, log_scaled), path)


def tuning_figure(
    trials: pd.DataFrame, objective: str, hyperparameters: Sequence[str], log_scaled: Collection[str] = ()
) -> Figure:
    """The objective per trial (trials numbered 1..n), and per value of each hyperparameter (one panel each).

    A hyperparameter in ``log_scaled`` (sampled on a log scale by the search space) gets a log x axis, so the
    trials spread as the tuner drew them.
    """
    import pandas as pd

    panels = 1 + len(hyperparameters)
    cols = min(3, panels)
    rows = -(-panels // cols)
    fig = _figure(4.0 * cols, 3.2 * rows)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    scores = pd.to_numeric(trials[objective], errors="coerce")
    order = np.arange(1, len(trials) + 1)
    axes[0].plot(order, scores, "o-", alpha=0.7, label="trial")
    axes[0].plot(order, scores.cummax() if not objective.endswith("loss") else scores.cummin(), "-", label="best so far")
    axes[0].set_xlabel("trial")
    integer_axis(axes[0], len(trials))
    axes[0].set_ylabel(objective)
    axes[0].legend(fontsize=8, loc="lower left", bbox_to_anchor=(0, 1.0), ncols=2, frameon=False)  # above the trials
    for ax, name in zip(axes[1:], hyperparameters, strict=False):
        values = trials[name] if name in trials else pd.Series([np.nan] * len(trials))
        numeric = pd.to_numeric(values, errors="coerce")
        if numeric.notna().all() and (name in log_scaled or numeric.nunique() > FEW_CHOICES):
            ax.scatter(numeric, scores, alpha=0.8)
            if (numeric > 0).all() and (name in log_scaled or numeric.max() / max(numeric.min(), 1e-12) > 50):
                ax.set_xscale("log")
        else:  # a choice (names, or a few numbers such as 64/128/256 units): one tick per value, in order
            categories = sorted(numeric.unique()) if numeric.notna().all() else None
            labels = [f"{v:g}" for v in categories] if categories else sorted(values.astype(str).unique())
            keys = [f"{v:g}" for v in numeric] if categories else list(values.astype(str))
            ax.scatter([labels.index(k) for k in keys], scores, alpha=0.8)
            _category_ticks(ax, labels)
        ax.set_xlabel(name + (" (log scale)" if ax.get_xscale() == "log" else ""))
        ax.set_ylabel(objective)
    for ax in axes[panels:]:
        ax.set_visible(False)
    for ax in axes[:panels]:
        ax.grid(alpha=0.3)
    return fig


FEW_CHOICES = 8  # a numeric hyperparameter with at most this many values tried is drawn as a choice, a tick each
TICK_CHARACTERS = 40  # category labels longer than this in all (about a panel's width at 8 pt) are slanted


def _category_ticks(ax: Axes, labels: Sequence[str]) -> None:
    """One tick per category; slanted, right-aligned, when the labels side by side would run into each other."""
    slanted = sum(len(label) + 2 for label in labels) > TICK_CHARACTERS
    ax.set_xticks(range(len(labels)), labels, fontsize=8, rotation=30 if slanted else 0, ha="right" if slanted else "center")
    ax.set_xlim(-0.5, len(labels) - 0.5)


def score_intervals(rows: Sequence[tuple[str, float, float, float]], path: str | Path, title: str = "score") -> Path:
    """One horizontal bar per score (label, value, low, high) with its bootstrap interval as an error bar."""
    fig = _figure(7.0, 0.9 + 0.6 * max(1, len(rows)))
    ax = fig.subplots()
    for i, (_label, value, low, high) in enumerate(rows):
        ax.errorbar([value], [i], xerr=[[value - low], [high - value]], fmt="o", capsize=4)
        ax.annotate(f"{value:.4f} [{low:.4f}, {high:.4f}]", (value, i), textcoords="offset points", xytext=(0, 8), ha="center")
    ax.set_yticks(range(len(rows)), [label for label, *_ in rows], fontsize=9)
    ax.set_ylim(-0.6, len(rows) - 0.4)
    ax.set_xlabel("score (95% bootstrap interval)")
    ax.set_title(title)
    ax.grid(alpha=0.3, axis="x")
    return save(fig, path)
