"""The callbacks of a training phase: the rate schedule, weight EMA, early stopping, the best model, the resume point.

Two builders, one per concern: :func:`training_callbacks` is how a phase trains (the rate at every step, the
averaged weights, when to stop, the plateau reduction) and is what both ``kit train`` and every ``kit tune`` trial
use; :func:`run_folder_callbacks` is what a run keeps (best.keras, history.csv, TensorBoard, the resume point).
Optimizers and rate schedules live in :mod:`kit.train.lr_schedules`.

The checkpoint callbacks write every file atomically (temp file + rename): a kill at any moment leaves the
previous complete file, never half of one. On multi-worker runs every worker runs the same callbacks (a
save may all-reduce synchronised variables, so all must take part), non-chief workers into a temp dir.
"""

from __future__ import annotations

import csv
import io
import os
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras

from kit.io import URLPath, as_path, atomic_write, is_url, put_file, write_json
from kit.progress import LineProgress
from kit.train.lr_schedules import StepLearningRate, make_schedule, scaled_rate
from kit.train.metrics import is_better, scalar_logs
from kit.train.resume import ResumeState

if TYPE_CHECKING:
    import numpy as np

    from kit.config import TrainConfig

# --- callbacks that survive a resume -------------------------------------------------------------------


class Resumable:
    """Mixin: counters (patience, best so far) saved in ``state.json`` and put back after ``on_train_begin``."""

    FIELDS: tuple[str, ...] = ()

    def __init__(self, *args: Any, restore: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.restore_values = dict(restore or {})

    def on_train_begin(self, logs: dict | None = None) -> None:
        super().on_train_begin(logs)  # resets the counters, so restore after it
        for name, value in self.restore_values.items():
            setattr(self, name, value)
        self.restore_values = {}

    def snapshot(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name, None)) for name in self.FIELDS}


class ResumableEarlyStopping(Resumable, keras.callbacks.EarlyStopping):
    FIELDS = ("wait", "best", "best_epoch")


class ResumablePlateau(Resumable, keras.callbacks.ReduceLROnPlateau):
    FIELDS = ("wait", "best", "cooldown_counter")


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, str)):
        return value
    try:
        return float(keras.ops.convert_to_numpy(value))
    except (TypeError, ValueError):
        return value


# --- the best model, the history, the resume checkpoint -----------------------------------------------


@dataclass
class Tracker:
    """What survives phases and resumes: the best monitored value and where it came from."""

    monitor: str
    mode: str
    best: float | None = None
    best_epoch: int | None = None
    best_phase: int | None = None
    best_loss: float | None = None  # val_loss at the best epoch: breaks ties of a saturated metric
    best_weights: list[np.ndarray] | None = field(default=None, repr=False)  # in memory only

    def to_json(self) -> dict[str, Any]:
        """Every field but the weights, in declaration order (what state.json and metrics.json hold)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "best_weights"}


def save_model_atomic(model: keras.Model, path: str | os.PathLike, weights_only: bool = False) -> Path | URLPath:
    """``model.save`` (or ``save_weights``) to a temp file beside ``path``, then rename it over ``path``.

    Keras picks the format from the file name, so the temp name keeps the ``.keras``/``.weights.h5`` ending.
    """
    if is_url(path):  # gs:// (TPU) run dirs: save locally, then kit.io uploads to a temp name and renames
        name = as_path(path).name
        with tempfile.TemporaryDirectory(prefix="kit-save-") as folder:
            local = os.path.join(folder, name)  # Keras picks the format from the name's ending
            if weights_only:
                model.save_weights(local, overwrite=True)
            else:
                model.save(local, overwrite=True)
            return put_file(local, path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ending = ".weights.h5" if path.name.endswith(".weights.h5") else path.suffix
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + ending, dir=path.parent)
    os.close(fd)
    try:
        if weights_only:
            model.save_weights(tmp, overwrite=True)
        else:
            model.save(tmp, overwrite=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


class BestCheckpoint(keras.callbacks.Callback):
    """Saves ``best.keras`` whenever the monitored value beats the best of the whole run (all phases)."""

    def __init__(self, path: Path, tracker: Tracker, phase: int) -> None:
        super().__init__()
        self.path = as_path(path)
        self.tracker = tracker
        self.phase = phase
        self._warned = False

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        scalars = scalar_logs(logs)
        value = scalars.get(self.tracker.monitor)
        if value is None:
            if not self._warned:
                print(
                    f"warning: {self.tracker.monitor} is not in the logs ({', '.join(sorted(logs or {}))}); "
                    "best.keras not updated"
                )
                self._warned = True
            return
        loss = scalars.get("val_loss")
        # A tie counts when val_loss is lower: a small val set saturates (accuracy 1.0 early, at a high learning
        # rate), and without this the first epoch to get there stays the best however far training goes on.
        tie_better = value == self.tracker.best and None not in (loss, self.tracker.best_loss) and loss < self.tracker.best_loss
        if is_better(value, self.tracker.best, self.tracker.mode) or tie_better:
            self.tracker.best, self.tracker.best_epoch, self.tracker.best_phase = value, epoch, self.phase
            self.tracker.best_loss = loss
            self.tracker.best_weights = self.model.get_weights()
            save_model_atomic(self.model, self.path)


class HistoryCSV(keras.callbacks.Callback):
    """``history.csv`` with ``epoch`` (global, counted from 1 as the Keras log prints "Epoch 1/N") and ``phase`` columns.

    ``rows`` is shared by the phases and holds what a resumed run already logged; the whole file is
    rewritten atomically every epoch, so a kill never leaves a torn line and a resumed epoch never
    appears twice (the trainer drops rows past the checkpoint before continuing).
    """

    def __init__(self, path: Path, rows: list[dict[str, Any]], phase: int) -> None:
        super().__init__()
        self.path = as_path(path)
        self.rows = rows
        self.phase = phase

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self.rows.append({"epoch": epoch, "phase": self.phase, **scalar_logs(logs)})
        write_history(self.path, self.rows)


def write_history(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """``rows`` as history.csv, its ``epoch`` counted from 1 like the log; in memory a row keeps Keras' 0-based index
    (the resume arithmetic: state.json ``next_epoch``, ``Tracker.best_epoch``), and read_history turns it back."""
    rows = [{**row, "epoch": row["epoch"] + 1} if "epoch" in row else row for row in rows]
    columns: list[str] = ["epoch", "phase"]
    for row in rows:
        columns += [k for k in row if k not in columns]
    train_cols = [c for c in columns[2:] if not c.startswith("val_") and c != "learning_rate"]
    val_cols = [c for c in columns[2:] if c.startswith("val_")]
    columns = ["epoch", "phase", *train_cols, *val_cols] + (["learning_rate"] if "learning_rate" in columns else [])
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, buffer.getvalue())


def read_history(path: Path) -> list[dict[str, Any]]:
    """Rows of an existing ``history.csv`` (numbers as numbers; ``epoch`` back to Keras' 0-based index), or []."""
    path = as_path(path)  # a gs:// run dir on TPU
    if not path.is_file():
        return []
    rows = []
    with io.StringIO(path.read_text(), newline="") as handle:
        for raw in csv.DictReader(handle):
            row: dict[str, Any] = {}
            for key, value in raw.items():
                if value in ("", None):
                    continue
                row[key] = int(value) if key in ("epoch", "phase") else float(value)
            if "epoch" in row:
                row["epoch"] -= 1
            rows.append(row)
    return rows


class EpochCheckpoint(keras.callbacks.Callback):
    """The resume point: model + optimizer weights and ``state.json`` (a :class:`ResumeState`) after every epoch.

    Weights go to a new file per epoch and ``state.json`` names it, written after it: whatever moment a
    kill hits, ``state.json`` points at a complete file of the same epoch. Older files are removed after.
    Must run after the other callbacks of the epoch (it records their counters and the stop decision), the
    EMA swap included: with ``ema_swapped`` the checkpoint holds the averaged weights in the model.
    """

    def __init__(
        self,
        directory: Path,
        *,
        tracker: Tracker,
        phase: int,
        phase_start: int,
        end_epoch: int,
        resumables: dict[str, Resumable],
        ema_swapped: bool,
    ) -> None:
        super().__init__()
        self.directory = as_path(directory)
        self.tracker = tracker
        self.phase = phase
        self.phase_start = phase_start
        self.end_epoch = end_epoch
        self.resumables = resumables
        self.ema_swapped = ema_swapped

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        name = f"epoch-{epoch + 1:04d}.weights.h5"
        save_model_atomic(self.model, self.directory / name, weights_only=True)
        state = ResumeState(
            phase=self.phase,
            phase_start=self.phase_start,
            next_epoch=epoch + 1,
            phase_done=bool(epoch + 1 >= self.end_epoch or self.model.stop_training),
            weights=name,
            tracker=self.tracker.to_json(),
            callbacks={key: cb.snapshot() for key, cb in self.resumables.items()},
            ema_swapped=self.ema_swapped,
        )
        write_json(self.directory / "state.json", state.to_json())
        for old in self.directory.glob("epoch-*.weights.h5"):
            if old.name != name:
                old.unlink(missing_ok=True)


# --- one phase's callbacks ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PhaseSpan:
    """Where a phase sits in the run's global epoch count: it began at ``start`` and ends before ``end``."""

    start: int
    end: int

    @property
    def epochs(self) -> int:
        return self.end - self.start


class EpochProgress(keras.callbacks.Callback):
    """In a log (``verbose=2``: Keras writes one line per epoch), lines inside a long epoch as well, at most one every
    :data:`kit.progress.LOG_EVERY_S` seconds: the batches done, the time taken and left, the running loss."""

    def __init__(self, steps_per_epoch: int | None, epochs: int) -> None:
        super().__init__()
        self.steps, self.epochs = steps_per_epoch, epochs
        self.epoch = ""
        self.lines: LineProgress | None = None

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self.epoch = f"epoch {epoch + 1}/{self.epochs}"
        self.lines = LineProgress(self.epoch, self.steps, "batches", stream=sys.stdout)

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        if self.lines is not None:
            loss = (logs or {}).get("loss")
            self.lines.desc = self.epoch if loss is None else f"{self.epoch} (loss {float(loss):.4f})"
            self.lines.update(1)


def progress_callbacks(verbose: int, steps_per_epoch: int | None, epochs: int) -> list[keras.callbacks.Callback]:
    """What a fit shows besides Keras' own output: :class:`EpochProgress` in a log (``verbose=2``), else nothing."""
    return [EpochProgress(steps_per_epoch, epochs)] if verbose == 2 else []


def training_callbacks(
    train: TrainConfig,
    *,
    monitor: str,
    mode: str,
    learning_rate: float,
    span: PhaseSpan,
    steps_per_epoch: int,
    replicas: int = 1,
    restore: dict[str, dict[str, Any]] | None = None,
) -> tuple[list[keras.callbacks.Callback], dict[str, Resumable]]:
    """How one phase trains, for ``kit train`` and every tuner trial alike: the rate at every step (the phase's
    schedule from ``learning_rate``, scaled to the global batch of ``replicas``), the EMA swap, early stopping and
    the plateau reduction, in the order they must run at each epoch's end.

    Returns the callbacks and, by name, those whose counters a resume restores (``restore`` holds them).
    """
    restore = restore or {}
    callbacks: list[keras.callbacks.Callback] = [
        StepLearningRate(make_schedule(train, learning_rate, steps_per_epoch, span.epochs, replicas)),
    ]
    if train.ema:
        # First: the averaged weights are in the model before any other callback sees the epoch's end, so
        # validation, best.keras and the resume point all hold them (raw weights go back at the next epoch's begin).
        callbacks.append(keras.callbacks.SwapEMAWeights(swap_on_epoch=True))
    resumables: dict[str, Resumable] = {}
    if train.early_stopping_patience > 0:
        resumables["early_stopping"] = ResumableEarlyStopping(
            monitor=monitor, mode=mode, patience=train.early_stopping_patience, verbose=1, restore=restore.get("early_stopping")
        )
    if train.schedule == "plateau":
        resumables["plateau"] = ResumablePlateau(
            monitor=monitor,
            mode=mode,
            factor=0.2,
            patience=max(1, train.early_stopping_patience // 2),
            min_lr=scaled_rate(train, learning_rate, replicas) * 1e-3,
            verbose=1,
            restore=restore.get("plateau"),
        )
    return [*callbacks, *resumables.values()], resumables


def run_folder_callbacks(
    out_dir: Path,
    *,
    tracker: Tracker,
    history_rows: list[dict[str, Any]],
    phase: int,
    span: PhaseSpan,
    resumables: dict[str, Resumable],
    ema_swapped: bool,
) -> list[keras.callbacks.Callback]:
    """What a run keeps of a phase, after :func:`training_callbacks`: best.keras (the best of every phase and
    resume), history.csv, TensorBoard and, last, the resume point (which records the others' counters)."""
    return [
        BestCheckpoint(out_dir / "best.keras", tracker, phase),
        HistoryCSV(out_dir / "history.csv", history_rows, phase),
        keras.callbacks.TensorBoard(log_dir=str(out_dir / "tensorboard"), write_graph=False, profile_batch=0),
        EpochCheckpoint(
            out_dir / "checkpoint",
            tracker=tracker,
            phase=phase,
            phase_start=span.start,
            end_epoch=span.end,
            resumables=resumables,
            ema_swapped=ema_swapped,
        ),
    ]
