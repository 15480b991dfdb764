"""Plots read well: every title fits its figure (and an axes title its axes), learning curves show the learning
rate and mark the best epoch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from kit import plots

TITLE = "most confidently wrong val images"


def _extents(fig: Figure) -> tuple[object, list[tuple[str, object, object]]]:
    """The renderer-measured boxes (pixels, as saved) of the figure, and of each title with the box it must fit."""
    renderer = FigureCanvasAgg(fig).get_renderer()
    fig.draw_without_rendering()
    titles = [(text.get_text(), text.get_window_extent(renderer), fig.bbox) for text in fig.texts]
    for ax in fig.axes:
        if ax.get_visible() and ax.title.get_text():
            titles.append((ax.title.get_text(), ax.title.get_window_extent(renderer), ax.get_window_extent(renderer)))
    return fig.bbox, titles


def _assert_inside(fig: Figure) -> None:
    figure_box, titles = _extents(fig)
    assert titles
    for text, box, room in titles:
        assert figure_box.x0 <= box.x0 and box.x1 <= figure_box.x1, (text, box, figure_box)
        assert box.y1 <= figure_box.y1, (text, box, figure_box)
        assert room.x0 - 1 <= box.x0 and box.x1 <= room.x1 + 1, (text, box, room)


def test_a_long_title_over_one_image_is_wrapped_inside_the_figure(tmp_path: Path) -> None:
    """An image grid with one image: a 2.3-inch figure whose title used to be cut to "st confidently wrong val ima"."""
    fig = Figure(figsize=(2.3, 2.9), layout="constrained")
    ax = fig.subplots()
    ax.imshow(np.zeros((32, 32, 3), np.uint8))
    ax.set_title("true human / pred ai\n0.97", fontsize=8)
    fig.suptitle(TITLE)
    plots.save(fig, tmp_path / "one.png")
    _assert_inside(fig)
    assert " ".join(fig.texts[0].get_text().split()) == TITLE  # wrapped, every word kept
    assert (tmp_path / "one.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow
def test_long_captions_fit_their_images_and_one_word_too_long_is_elided(tmp_path: Path) -> None:
    from kit.image_grids import grid_figure

    images = [np.full((16, 16), 128, np.uint8)] * 5
    captions = ["true a_very_long_class_name / pred another_long_class_name\n0.97"] * 4 + ["x" * 80]
    fig = grid_figure(images, captions, cols=4, title=TITLE)
    plots.save(fig, tmp_path / "grid.png")
    _assert_inside(fig)
    assert len(fig.axes[4].title.get_text()) < 80  # one 80-letter word cannot be wrapped: it is shortened


@pytest.mark.slow
def test_a_long_run_title_on_learning_curves_stays_inside(tmp_path: Path) -> None:
    history = pd.DataFrame({"epoch": [1, 2], "loss": [0.7, 0.5], "val_loss": [0.8, 0.6]})
    fig = plots.learning_curves_figure(history, title="ai-vs-human/" + "20261201-120000-" * 6)
    plots.save(fig, tmp_path / "curves.png")
    _assert_inside(fig)


def _history() -> pd.DataFrame:
    rate = [0.01, 0.1, 0.2, 0.1, 0.001, 1e-5]
    return pd.DataFrame(
        {
            "epoch": range(1, 7),
            "phase": [1, 1, 1, 2, 2, 2],
            "accuracy": [0.5, 0.6, 0.7, 0.8, 0.9, 0.95],
            "loss": [1.0, 0.8, 0.6, 0.4, 0.3, 0.2],
            "val_accuracy": [0.55, 0.65, 0.8, 0.85, 0.84, 0.83],
            "val_loss": [0.9, 0.8, 0.5, 0.45, 0.5, 0.55],
            "learning_rate": rate,
        }
    )


def test_learning_curves_show_the_learning_rate_on_its_own_log_panel() -> None:
    fig = plots.learning_curves_figure(_history())
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert set(panels) == {"accuracy", "loss", "learning rate"}
    (line,) = [line for line in panels["learning rate"].get_lines() if line.get_label() == "learning rate"]
    assert list(line.get_xdata()) == [1, 2, 3, 4, 5, 6]
    assert list(line.get_ydata()) == [0.01, 0.1, 0.2, 0.1, 0.001, 1e-5]
    assert panels["learning rate"].get_yscale() == "log"  # 1e-5 .. 0.2: linear would flatten the warmup
    assert panels["accuracy"].get_yscale() == "linear"


@pytest.mark.slow
def test_learning_curves_mark_the_best_epoch_with_the_monitored_value(tmp_path: Path) -> None:
    fig = plots.learning_curves_figure(_history(), best_epoch=4, monitor="val_accuracy")
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    for name, ax in panels.items():  # a vertical line at epoch 4 in every panel, the rate's included
        verticals = [line for line in ax.get_lines() if list(line.get_xdata()) == [4, 4]]
        assert len(verticals) == 1, name
    stars = [line for line in panels["accuracy"].get_lines() if line.get_marker() == "*"]
    assert len(stars) == 1 and (list(stars[0].get_xdata()), list(stars[0].get_ydata())) == ([4], [0.85])
    labels = [text.get_text() for text in panels["accuracy"].get_legend().get_texts()]
    assert "best val_accuracy 0.8500 (epoch 4)" in labels
    assert "best epoch 4" in [text.get_text() for text in panels["loss"].get_legend().get_texts()]
    assert plots.learning_curves(_history(), tmp_path / "lc.png", best_epoch=4, monitor="val_accuracy").is_file()


def test_learning_curves_without_a_rate_or_a_best_epoch_draw_as_before() -> None:
    history = _history().drop(columns=["learning_rate"])
    fig = plots.learning_curves_figure(history)
    panels = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in panels] == ["accuracy", "loss"]
    assert not [line for ax in panels for line in ax.get_lines() if line.get_linestyle() == ":"]


def _boxes(fig: Figure, artists) -> list:
    renderer = FigureCanvasAgg(fig).get_renderer()
    plots.fit_titles(fig)
    fig.draw_without_rendering()
    return [artist.get_window_extent(renderer) for artist in artists]


def test_a_quantity_with_one_value_is_one_bar_per_group_named_in_the_title() -> None:
    """Every JPEG saved at quality 90: a share of 1.0 at 90 per class, not a 'density' of 40 in a sliver of a bin."""
    fig = plots.histograms_figure({"cat": np.full(60, 90.0), "dog": np.full(40, 90.0)}, "JPEG quality", "JPEG quality by class")
    (ax,) = fig.axes
    assert ax.get_title() == "JPEG quality by class: every image 90"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["90"]
    assert sorted(p.get_height() for p in ax.patches) == [1.0, 1.0]
    legend, *bars = _boxes(fig, [ax.get_legend(), *ax.patches])
    assert not any(legend.overlaps(bar) for bar in bars)  # the legend sits above the bars


def test_few_distinct_values_are_shares_per_value_and_many_stay_a_histogram() -> None:
    qualities = {"real": np.r_[np.full(30, 75.0), np.full(10, 90.0)], "fake": np.full(40, 95.0)}
    (ax,) = plots.histograms_figure(qualities, "JPEG quality").axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["75", "90", "95"]
    assert sorted(round(p.get_height(), 2) for p in ax.patches if p.get_height() > 0) == [0.25, 0.75, 1.0]
    (ax,) = plots.histograms_figure({"a": np.linspace(0, 1, 100)}, "aspect").axes
    assert ax.get_ylabel() == "density"


def test_tuning_choices_get_one_readable_tick_each() -> None:
    rng = np.random.default_rng(0)
    names = ["efficientnetb0", "efficientnetv2b0", "convnext_tiny", "resnet50v2", "mobilenetv3large", "densenet121"]
    trials = pd.DataFrame(
        {
            "val_f1_score": rng.uniform(0.6, 0.9, 60),
            "model.backbone": rng.choice(names, 60),
            "model.dense_units": rng.choice([64, 128, 256, 512, 1024, 2048], 60),
        }
    )
    fig = plots.tuning_figure(trials, "val_f1_score", ["model.backbone", "model.dense_units"])
    for ax in fig.axes[1:3]:
        labels = [t for t in ax.get_xticklabels() if t.get_text()]
        boxes = _boxes(fig, labels)
        angle = np.radians(labels[0].get_rotation())
        if angle == 0:  # side by side: their boxes must not touch
            assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1 :]), [t.get_text() for t in labels]
        else:  # slanted parallel lines of text: the gap across them (tick spacing x sin) holds a line's height
            spacing = (boxes[-1].x1 - boxes[0].x1) / (len(boxes) - 1)
            height = labels[0].get_fontsize() * fig.dpi / 72
            assert spacing * np.sin(angle) >= height, (spacing, height)
    assert [t.get_text() for t in fig.axes[2].get_xticklabels()] == ["64", "128", "256", "512", "1024", "2048"]
    trial_axes = fig.axes[0]
    legend, *points = _boxes(fig, [trial_axes.get_legend(), trial_axes])
    assert legend.y0 >= points[0].y1 - 1  # the legend above the trials, never over them


def test_a_constant_learning_rate_reads_as_one_value_from_zero() -> None:
    history = pd.DataFrame({"loss": [0.9, 0.7, 0.6], "learning_rate": [0.001] * 3})
    fig = plots.learning_curves_figure(history, best_epoch=3)
    rate = next(ax for ax in fig.axes if ax.get_title() == "learning rate")
    assert rate.get_ylim() == (0.0, 0.002)
    assert "constant 0.001" in rate.get_legend().get_texts()[0].get_text()
