"""Interpreting a run on its held-out rows: one row per image, the top losses, Grad-CAM of the worst.

``kit evaluate`` writes, beside metrics.json::

    val_predictions.csv   id, path, label, true_class, predicted, predicted_class, p_<class> per class, loss
                          (a k-fold parent's held-out rows are its oof.csv: id, fold, label, p_<class> per class)
    plots/top_losses.png  the highest-loss val images: file name, true and predicted class, loss, every class's
                          probability (the true class's and the 2 likeliest when there are more than 3)
    plots/gradcam.png     Grad-CAM (kit.gradcam) of the 8 worst: for the predicted class, and for the true class
                          (the runner-up when the prediction is right); skipped, with a line, without conv layers.
                          An out-of-fold row is explained by the model of the fold that held it out.

``loss`` is the cross-entropy of the true class, ``-log p_true`` (probabilities clipped at 1e-7 as Keras
does), the quantity training minimised; ``predicted`` is the argmax (p >= 0.5 for binary), not the tuned threshold:
these files are about the model. ``path`` is the image file the example was read from, from the competition's
cached index (``index.csv`` beside the records); empty when that index is not there.
"""

from __future__ import annotations

import heapq
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kit.data.pipeline import AUGMENTED_MARK
from kit.data.sources import index_dir
from kit.errors import KitError
from kit.inference import labels_from_probs, to_class_probs, true_labels
from kit.io import URLPath, as_path, join, local_copy, write_csv

if TYPE_CHECKING:
    import keras

    from kit.config import Config
    from kit.data.manifest import Manifest

VAL_PREDICTIONS = "val_predictions.csv"
OOF = "oof.csv"  # a k-fold parent's out-of-fold predictions (kit.train.kfold writes it, kit.evaluate reads it)
OOF_KEYS = ("id", "fold", "label")
TOP_LOSSES = 16  # val images in top_losses.png
GRADCAM_IMAGES = 8  # of them, explained in gradcam.png
PROBABILITY_PREFIX = "p_"  # val_predictions.csv: p_<class name>, clear of the other columns whatever the names
EPSILON = 1e-7  # probabilities clipped here before the log, as Keras' cross-entropy does


# --- where each example came from --------------------------------------------------------------------------


def example_paths(cfg: Config) -> dict[str, str]:
    """id -> image file of every example of the competition's cached index; empty without one.

    Read as it is (never rebuilt): a look at a run must not change the splits later commands use.
    """
    index = index_dir(cfg) / "index.csv"
    if not index.is_file():
        return {}
    try:
        frame = pd.read_csv(index, usecols=["id", "path"], dtype=str, keep_default_na=False)
    except (ValueError, OSError, pd.errors.ParserError):
        return {}
    return dict(zip(frame["id"], frame["path"], strict=True))


def example_path(example_id: str, paths: dict[str, str]) -> str:
    """The image file of one example id ("" when unknown); an offline-augmented copy names its original's."""
    return paths.get(example_id) or paths.get(example_id.split(AUGMENTED_MARK)[0], "")


def file_name(example_id: str, paths: dict[str, str]) -> str:
    """What a figure calls an example: its image file's name, else its id; an augmented copy keeps its mark."""
    path = example_path(example_id, paths)
    if not path:
        return example_id
    copy = example_id.partition(AUGMENTED_MARK)[1:]
    return os.path.basename(path) + "".join(copy)


# --- losses and the rows that have the highest -----------------------------------------------------------


def row_losses(class_probs: np.ndarray, y_true: np.ndarray) -> np.ndarray:
    """Cross-entropy of each row's true class: ``-log p_true`` (p clipped to [1e-7, 1])."""
    class_probs = np.asarray(class_probs, dtype=np.float64)
    y_true = np.asarray(y_true).astype(int)
    truth = class_probs[np.arange(len(y_true)), y_true]
    return -np.log(np.clip(truth, EPSILON, 1.0))


class TopLosses:
    """An ``on_batch`` collector for :func:`kit.inference.predict_probabilities`: every batch's true labels, and
    the ``k`` images with the highest loss (uint8), by position in the split; ties keep the earlier row."""

    def __init__(self, k: int) -> None:
        self.k = k
        self.heap: list[tuple[float, int, np.ndarray]] = []  # (loss, -position, image): the smallest loss on top
        self.true: list[np.ndarray] = []
        self.seen = 0

    def __call__(self, images: np.ndarray, targets: np.ndarray | None, probs: np.ndarray) -> None:
        if targets is None:
            raise KitError("the val dataset yields no targets", "evaluate needs labelled val records (kit records)")
        truth = true_labels(targets)
        self.true.append(truth)
        for i, loss in enumerate(row_losses(to_class_probs(probs), truth)):
            item = (float(loss), -(self.seen + i), np.clip(images[i], 0, 255).astype(np.uint8))
            if len(self.heap) < self.k:
                heapq.heappush(self.heap, item)
            elif item[:2] > self.heap[0][:2]:
                heapq.heapreplace(self.heap, item)
        self.seen += len(images)

    def labels(self) -> np.ndarray:
        """The true class index of every row seen, in order."""
        return np.concatenate(self.true) if self.true else np.zeros(0, np.int64)

    def worst(self) -> tuple[list[int], np.ndarray]:
        """(positions, images) of the kept rows, highest loss first."""
        kept = sorted(self.heap, key=lambda item: (-item[0], -item[1]))
        images = np.stack([image for *_, image in kept]) if kept else np.zeros((0, 1, 1, 3), np.uint8)
        return [-position for _, position, _ in kept], images


# --- the table ---------------------------------------------------------------------------------------------


def probability_column(class_name: str) -> str:
    """The column of one class's probability in every table of predictions kit writes (val_predictions.csv, oof.csv)."""
    return f"{PROBABILITY_PREFIX}{class_name}"


def probability_columns(classes: Sequence[str]) -> list[str]:
    """The probability columns of ``classes``, in class-index order."""
    return [probability_column(str(c)) for c in classes]


def read_oof(parent: str | os.PathLike, classes: Sequence[str]) -> pd.DataFrame:
    """A k-fold parent's oof.csv: id, fold, label and the classes' probability columns (bare class names, as kits
    before the ``p_`` prefix wrote them, are read as well)."""
    path = as_path(join(parent, OOF))
    if not path.is_file():
        raise KitError(f"{path} does not exist", "finish the k-fold run first: kit train folds=<k> --resume")
    with local_copy(path) as local:
        frame = pd.read_csv(local, dtype={"id": str}, keep_default_na=False)
    columns = probability_columns(classes)
    older = [str(c) for c in classes]
    if not set(columns) <= set(frame.columns) and set(older) <= set(frame.columns):
        frame = frame.rename(columns=dict(zip(older, columns, strict=True)))
    missing = [c for c in (*OOF_KEYS, *columns) if c not in frame.columns]
    if missing:
        raise KitError(f"{path} has no column {missing[0]} (classes {', '.join(older)})", "train the k-fold run again")
    return frame


def predictions_frame(
    ids: Sequence[str], class_probs: np.ndarray, y_true: np.ndarray, classes: Sequence[str], paths: dict[str, str]
) -> pd.DataFrame:
    """One row per val example (in records order): id, path, true and predicted class, probabilities, loss."""
    class_probs = np.asarray(class_probs, dtype=np.float64)
    y_true = np.asarray(y_true).astype(np.int64)
    predicted = labels_from_probs(class_probs)  # class 1 at p >= 0.5 for binary; else the argmax
    names = np.asarray([str(c) for c in classes], dtype=object)
    frame = pd.DataFrame(
        {
            "id": [str(i) for i in ids],
            "path": [example_path(str(i), paths) for i in ids],
            "label": y_true,
            "true_class": names[y_true],
            "predicted": predicted,
            "predicted_class": names[predicted],
        }
    )
    for k, name in enumerate(names):
        frame[probability_column(name)] = class_probs[:, k]
    frame["loss"] = row_losses(class_probs, y_true)
    return frame


def write_val_predictions(run_dir: str | os.PathLike, frame: pd.DataFrame) -> Path | URLPath:
    """``val_predictions.csv`` in the run folder (atomically; a gs:// run stays a URL)."""
    return write_csv(frame, join(run_dir, VAL_PREDICTIONS))


# --- the figures of a run -----------------------------------------------------------------------------------

MANY_CLASSES = 3  # beyond this, a caption gives the true class's probability and the likeliest, not every class
LIKELIEST = 2


def probability_line(row: pd.Series, classes: Sequence[str]) -> str:
    """Every class's probability ("human 0.96 · ai 0.04"); with many classes the true one's and the 2 likeliest."""
    probs = np.array([row[probability_column(str(c))] for c in classes], dtype=np.float64)
    if len(classes) <= MANY_CLASSES:
        return " · ".join(f"{c} {p:.2f}" for c, p in zip(classes, probs, strict=True))
    likeliest = [int(k) for k in np.argsort(-probs, kind="stable")[:LIKELIEST]]
    return f"p(true) {probs[int(row['label'])]:.2f} · " + " · ".join(f"{classes[k]} {probs[k]:.2f}" for k in likeliest)


def top_loss_caption(row: pd.Series, classes: Sequence[str], paths: dict[str, str]) -> str:
    """File name; true and predicted class and the loss; the classes' probabilities (a line each: short enough
    for a panel, so only a long file name is ever cut)."""
    return (
        f"{file_name(str(row['id']), paths)}\n"
        f"true {row['true_class']} · pred {row['predicted_class']} · loss {row['loss']:.2f}\n"
        f"{probability_line(row, classes)}"
    )


def contrast_classes(rows: pd.DataFrame, classes: Sequence[str]) -> np.ndarray:
    """The class each row's second Grad-CAM explains: the true class when the prediction is wrong, else the
    runner-up (what argued against the right answer)."""
    probs = rows[[probability_column(str(c)) for c in classes]].to_numpy(dtype=np.float64)
    runner_up = np.argsort(-probs, axis=1, kind="stable")[:, 1]
    labels, predicted = rows["label"].to_numpy(), rows["predicted"].to_numpy()
    return np.where(predicted != labels, labels, runner_up)


def worst_rows(frame: pd.DataFrame, k: int = TOP_LOSSES) -> list[int]:
    """Positions of the ``k`` highest-loss rows of a predictions table, highest first; ties keep the earlier row
    (the order :class:`TopLosses` keeps while predicting)."""
    return frame["loss"].reset_index(drop=True).sort_values(ascending=False, kind="stable").index[:k].tolist()


def record_images(manifest: Manifest, split: str, ids: Sequence[str]) -> dict[str, np.ndarray]:
    """id -> uint8 image of the examples ``ids`` in ``split``'s records, as the model saw them (no augmentation).

    Only the wanted examples are decoded: the ids are compared on a partial parse first."""
    import tensorflow as tf

    from kit.data import schema
    from kit.data.pipeline import require_shards

    wanted = tf.constant([str(i) for i in ids] or [""], dtype=tf.string)
    id_spec = {"id": schema.feature_spec(1)["id"]}
    records = tf.data.TFRecordDataset(require_shards(manifest, split)).filter(
        lambda serialized: tf.reduce_any(tf.equal(tf.io.parse_single_example(serialized, id_spec)["id"], wanted))
    )
    parse = lambda serialized: schema.parse(serialized, manifest.num_classes, manifest.image_size, manifest.image_format)  # noqa: E731
    found = {}
    for parsed in records.map(parse):
        found[parsed["id"].numpy().decode()] = parsed["image"].numpy()
    return found


ModelOf = Callable[[pd.Series], "keras.Model"]  # the model that predicted a row (a fold's, for out-of-fold rows)


def interpretation_plots(
    model_of: ModelOf,
    frame: pd.DataFrame,
    worst: tuple[list[int], np.ndarray],
    classes: Sequence[str],
    plot_dir: Path,
    paths: dict[str, str],
    rows_name: str = "val",
) -> tuple[list[Path], str | None]:
    """top_losses.png, and gradcam.png when the model has a convolutional feature map.

    ``worst``: (positions in ``frame``, their uint8 images), highest loss first (:meth:`TopLosses.worst`).
    ``rows_name`` names the rows in titles ("val", "out-of-fold"). Returns the files written and, when Grad-CAM was
    skipped, the one line saying why.
    """
    from kit import gradcam
    from kit.image_grids import write_grid

    positions, images = worst
    rows = frame.iloc[positions]
    title = f"top losses: the {len(rows)} of {len(frame)} {rows_name} images whose true class got the lowest probability"
    captions = [top_loss_caption(row, classes, paths) for _, row in rows.iterrows()]
    written = [write_grid(images, captions, plot_dir / "top_losses.png", cols=4, title=title)]
    shown, explained = images[:GRADCAM_IMAGES], rows.iloc[:GRADCAM_IMAGES]
    if explained.empty:
        return written, None
    first = model_of(explained.iloc[0])
    if gradcam.feature_layer(first) is None:
        return written, f"no Grad-CAM: model {first.name} has no convolutional feature map (top_losses.png only)"
    explained_classes = np.stack([explained["predicted"].to_numpy(), contrast_classes(explained, classes)], axis=1)
    maps, layers = _heat_maps(model_of, explained, shown, explained_classes)
    panels, heat, panel_captions = [], [], []
    for i, (_, row) in enumerate(explained.iterrows()):
        name = file_name(str(row["id"]), paths)
        for side, k in enumerate(explained_classes[i]):
            which = "pred" if side == 0 else ("true" if k == row["label"] else "runner-up")
            probability = row[probability_column(str(classes[k]))]
            panels.append(shown[i])
            heat.append(maps[side][i])
            panel_captions.append(f"{name}\nfor {which} {classes[k]} ({probability:.2f})")
    title = (
        f"Grad-CAM of the top-loss {rows_name} images at layer {', '.join(sorted(layers))} (red: where a class's evidence "
        "is): left for the predicted class, right for the true class (the runner-up when the prediction is right)"
    )
    written.append(write_grid(panels, panel_captions, plot_dir / "gradcam.png", cols=4, title=title, heat=heat))
    return written, None


def _heat_maps(
    model_of: ModelOf, rows: pd.DataFrame, images: np.ndarray, explained_classes: np.ndarray
) -> tuple[list[np.ndarray], set[str]]:
    """Grad-CAM maps of each row for its two explained classes (``explained_classes[:, side]``), each row by the model
    that predicted it (rows sharing a model in one call); also the names of the feature layers used."""
    from kit import gradcam

    maps = [np.zeros(images.shape[:3], np.float32) for _ in (0, 1)]
    by_model: dict[int, tuple[keras.Model, list[int]]] = {}
    for i, (_, row) in enumerate(rows.iterrows()):
        model = model_of(row)
        by_model.setdefault(id(model), (model, []))[1].append(i)
    layers = set()
    for model, members in by_model.values():
        layer = gradcam.feature_layer(model)
        layers.add(layer.name)
        for side in (0, 1):
            maps[side][members] = gradcam.heat_maps(model, images[members], explained_classes[members, side], layer)
    return maps, layers
