"""Fitting a model through its phases into a run folder: one best checkpoint across phases, resume after a kill.

The phases (head first, then the unfrozen top of the backbone) come from :mod:`kit.train.phases`, the one path
``kit train`` and ``kit tune`` share. :func:`fit_phases` opens the run (:func:`open_run`: its phases, monitor and,
on a resume, the typed :class:`kit.train.resume.ResumeState`), trains each phase (:func:`run_phase`) and finishes
it (:func:`finish_training`: the best weights back, the final validation score, metrics.json and plots).

Epochs are numbered globally across phases. ``best.keras`` is the best epoch of the whole run by
:func:`kit.train.metrics.monitored_metric` (what predict loads); ``history.csv`` has a ``phase`` column. After every
epoch ``checkpoint/`` holds model + optimizer weights and ``state.json`` (phase, next epoch, best so far,
early-stopping/plateau counters): a resumed run ends with the same number of epochs an uninterrupted one would have.
On multi-worker runs only the chief writes to the run folder (the others write to a temp dir, TF's convention).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.errors import KitError
from kit.io import URLPath, as_path, put_file, write_json
from kit.progress import fit_verbosity
from kit.run_model import load_model
from kit.runs import BEST_MODEL
from kit.train.phases import Phase, compile_phase, enter_phase, plan_phases

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from kit.config import Config
    from kit.train.callbacks import Tracker
    from kit.train.resume import ResumeState


@dataclass
class PhasedRun:
    """One run being trained: what each phase needs, and what carries from one phase (or resume) to the next."""

    cfg: Config
    model: keras.Model
    strategy: tf.distribute.Strategy
    run_dir: Path  # or a URLPath (gs://) on TPUs
    out_dir: Path  # run_dir on the chief; a temp dir on the other workers
    tracker: Tracker
    phases: list[Phase]
    steps_per_epoch: int
    validation_steps: int | None
    verbose: int
    resume: ResumeState | None = None
    history: list[dict[str, Any]] = field(default_factory=list)
    extra_callbacks: Sequence[keras.callbacks.Callback] = ()

    @property
    def chief(self) -> bool:
        return self.out_dir == self.run_dir

    @property
    def replicas(self) -> int:
        """The replicas the global batch (and so the scaled rate, train.lr_scale_batch) is made of."""
        return int(self.strategy.num_replicas_in_sync)

    @property
    def multi_worker(self) -> bool:
        import tensorflow as tf

        return isinstance(self.strategy, tf.distribute.MultiWorkerMirroredStrategy)

    @property
    def binary(self) -> bool:
        return int(self.model.output_shape[-1]) == 1

    @property
    def num_classes(self) -> int:
        return max(2, int(self.model.output_shape[-1]))


def open_run(
    cfg: Config,
    model: keras.Model,
    run_dir: Path,
    strategy: tf.distribute.Strategy,
    *,
    has_val: bool,
    steps_per_epoch: int,
    validation_steps: int | None,
    resume: bool,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> PhasedRun:
    """The run's phases, monitor and tracker; with ``resume``, the tracker and history put back from its checkpoint."""
    from kit.train.callbacks import Tracker, read_history, write_history
    from kit.train.metrics import monitor_mode, monitored_metric
    from kit.train.resume import read_resume_state
    from kit.train.strategy import is_chief

    run_dir = as_path(run_dir)  # gs:// (TPU) run dirs stay URLs
    chief = is_chief(strategy)
    binary = int(model.output_shape[-1]) == 1
    monitor = monitored_metric(cfg, binary, has_val)
    verbose = fit_verbosity(cfg.train.verbose) if chief else 0  # a log: lines, never progress-bar redraws
    run = PhasedRun(
        cfg,
        model,
        strategy,
        run_dir,
        run_dir if chief else Path(tempfile.mkdtemp(prefix="kit-worker-")),
        Tracker(monitor, monitor_mode(monitor)),
        plan_phases(cfg, model),
        steps_per_epoch,
        validation_steps,
        verbose,
        resume=read_resume_state(run_dir) if resume else None,
        extra_callbacks=tuple(callbacks),
    )
    if run.resume is not None:
        state, tracker = run.resume, run.tracker
        tracker.best, tracker.best_epoch, tracker.best_phase = (state.tracker[k] for k in ("best", "best_epoch", "best_phase"))
        tracker.best_loss = state.tracker.get("best_loss")  # absent in checkpoints from before tie-breaking
        # Rows past the checkpoint belong to an epoch the kill interrupted; it runs again.
        run.history = [row for row in read_history(run_dir / "history.csv") if row["epoch"] < state.next_epoch]
        if chief:
            write_history(run.out_dir / "history.csv", run.history)
        print(f"resuming {run_dir} at epoch {state.next_epoch + 1} (phase {state.phase}); best {monitor} so far: {tracker.best}")
    return run


def run_phase(run: PhasedRun, phase: Phase, next_epoch: int, train_ds: tf.data.Dataset, val_ds: tf.data.Dataset | None) -> int:
    """Train ``phase`` from global epoch ``next_epoch`` (or from where an interrupted run stopped in it, or not at
    all when it finished before); returns the epoch the next phase starts at."""
    import tensorflow as tf

    from kit.train import multiworker
    from kit.train.callbacks import PhaseSpan, progress_callbacks, run_folder_callbacks, training_callbacks
    from kit.train.lr_schedules import scaled_rate
    from kit.train.resume import swap_ema_back

    state = run.resume
    if state is not None and state.finished(phase.index):
        return state.next_epoch
    resuming = state is not None and state.interrupted(phase.index)
    start = state.phase_start if state is not None and resuming else next_epoch
    span = PhaseSpan(start, start + phase.epochs)
    initial_epoch = state.next_epoch if state is not None and resuming else span.start

    if phase.index > 1 and not resuming:
        best = _best_weights(run.tracker, run.run_dir)
        if best is not None:  # a later phase continues from the best epoch so far
            run.model.set_weights(best)
    enter_phase(run.model, run.cfg, phase, run.strategy, binary=run.binary, num_classes=run.num_classes)
    if state is not None and resuming:
        multiworker.prepare(run.model, run.strategy, train_ds)  # every variable must exist before loading
        _load_checkpoint(run.model, run.run_dir / "checkpoint" / state.weights)
        if state.ema_swapped:
            swap_ema_back(run.model)  # the checkpoint holds the averaged weights in the model: train on from the raw ones

    train = run.cfg.train
    trainable = sum(int(tf.size(w)) for w in run.model.trainable_weights)
    rate = scaled_rate(train, phase.learning_rate, run.replicas)  # the rate the optimizer uses, not the setting
    lr_mult = train.fine_tune.lr_mult if phase.index > 1 else 1.0
    lowest = f", the lowest unfrozen layer at 1/{lr_mult:g} of it" if lr_mult > 1 else ""
    print(
        f"phase {phase.index}/{len(run.phases)}: {phase.what}; {trainable:,} trainable parameters; epochs "
        f"{initial_epoch + 1}-{span.end}; learning rate {rate:g} ({train.schedule}{lowest}); monitor {run.tracker.monitor}",
        flush=True,
    )
    behaviour, resumables = training_callbacks(
        train,
        monitor=run.tracker.monitor,
        mode=run.tracker.mode,
        learning_rate=phase.learning_rate,
        span=span,
        steps_per_epoch=run.steps_per_epoch,
        replicas=run.replicas,
        restore=state.callbacks if state is not None and resuming else None,
    )
    kept = run_folder_callbacks(
        run.out_dir,
        tracker=run.tracker,
        history_rows=run.history,
        phase=phase.index,
        span=span,
        resumables=resumables,
        ema_swapped=bool(train.ema),
    )
    fit_args = {
        "epochs": span.end,
        "initial_epoch": initial_epoch,
        "steps_per_epoch": run.steps_per_epoch,
        "callbacks": [*behaviour, *kept, *progress_callbacks(run.verbose, run.steps_per_epoch, span.end), *run.extra_callbacks],
        "validation_steps": run.validation_steps,
        "verbose": run.verbose,
    }
    if initial_epoch < span.end:
        if run.multi_worker:
            multiworker.fit(run.model, run.strategy, train_ds, val_ds, **fit_args)
        else:
            run.model.fit(train_ds, validation_data=val_ds, shuffle=False, **fit_args)
    return run.history[-1]["epoch"] + 1 if run.history else initial_epoch


def finish_training(run: PhasedRun, val_ds: tf.data.Dataset | None) -> dict[str, Any]:
    """Put the best weights back, score them on the validation split (or report the training metric without one),
    write metrics.json and the learning curves; returns what metrics.json holds."""
    from kit.train import multiworker

    model, tracker = run.model, run.tracker
    best = _best_weights(tracker, run.run_dir)
    if best is not None:
        model.set_weights(best)
    result = {**tracker.to_json(), "epochs": len(run.history), "phases": len(run.phases)}
    if tracker.best_epoch is not None:  # counted from 1 as history.csv and the log; the tracker keeps Keras' index
        result["best_epoch"] = tracker.best_epoch + 1
    if val_ds is not None:
        if not model.compiled:  # resumed after the last epoch's checkpoint (killed before `done`): no phase compiled
            compile_phase(model, run.cfg, run.phases[-1], run.strategy, binary=run.binary, num_classes=run.num_classes)
        if run.multi_worker:
            final = multiworker.evaluate(model, run.strategy, val_ds, int(run.validation_steps or 0))
        else:
            final = model.evaluate(val_ds, steps=run.validation_steps, verbose=0, return_dict=True)
        result["split"], result["metrics"] = "val", {f"val_{k}": float(v) for k, v in _scalars(final).items()}
    else:
        history = run.history
        row = next((r for r in history if r["epoch"] == tracker.best_epoch), history[-1] if history else {})
        result["split"], result["metrics"] = "train (no val split)", {k: v for k, v in row.items() if k not in ("epoch", "phase")}
    if run.chief:
        write_json(run.out_dir / "metrics.json", result)
        _plot(run.history, run.out_dir, result.get("best_epoch"), tracker.monitor)
    else:
        shutil.rmtree(run.out_dir, ignore_errors=True)
    return result


def fit_phases(
    cfg: Config,
    model: keras.Model,
    train_ds: tf.data.Dataset,
    val_ds: tf.data.Dataset | None,
    run_dir: Path,
    steps_per_epoch: int,
    *,
    strategy: tf.distribute.Strategy | None = None,
    validation_steps: int | None = None,
    resume: bool = False,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> dict[str, Any]:
    """Train ``model`` (built in ``strategy.scope()``) through its phases; returns what metrics.json holds.

    ``train_ds`` yields global batches and should repeat (``steps_per_epoch`` steps make an epoch);
    ``val_ds`` is finite (or None: the training metric is monitored). ``resume=True`` continues from
    ``run_dir/checkpoint`` when there is one. ``callbacks`` are added to every phase's own (Keras' convention).
    Writes history.csv, best.keras, checkpoint/, tensorboard/, metrics.json and plots/learning_curves.png into
    ``run_dir`` (the chief's; others write to a temp dir).
    """
    import tensorflow as tf

    strategy = strategy or tf.distribute.get_strategy()
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and val_ds is not None and not validation_steps:
        raise ValueError("multi-worker training needs validation_steps")
    run = open_run(
        cfg,
        model,
        run_dir,
        strategy,
        has_val=val_ds is not None,
        steps_per_epoch=steps_per_epoch,
        validation_steps=validation_steps,
        resume=resume,
        callbacks=callbacks,
    )
    next_epoch = 0
    for phase in run.phases:
        next_epoch = run_phase(run, phase, next_epoch, train_ds, val_ds)
    return finish_training(run, val_ds)


def _best_weights(tracker: Any, run_dir: Path) -> list | None:
    """The best weights so far: in memory, or (after a resume) read from ``best.keras`` (a damaged one: one line)."""
    if tracker.best_weights is not None:
        return tracker.best_weights
    if (run_dir / BEST_MODEL).is_file():
        return load_model(run_dir).get_weights()
    return None


def _load_checkpoint(model: keras.Model, weights: Path) -> None:
    """The resume point's weights; a truncated or foreign file is one line naming it (h5 files hold no code)."""
    try:
        model.load_weights(str(weights))
    except Exception as exc:  # noqa: BLE001 - whatever a damaged file raises inside Keras or h5py
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise KitError(
            f"{weights} cannot be loaded to resume the run ({type(exc).__name__}: {reason})",
            f"delete {weights.parent} to restart that run from its first epoch, or drop --resume to start a new run",
        ) from None


def _scalars(logs: dict) -> dict[str, float]:
    from kit.train.metrics import scalar_logs

    return scalar_logs(logs)


def _plot(history: list[dict[str, Any]], out_dir: Path, best_epoch: int | None, monitor: str) -> None:
    if not history:
        return
    import pandas as pd

    from kit import plots

    target, title = out_dir / "plots" / "learning_curves.png", f"{out_dir.parent.name}/{out_dir.name}"
    if isinstance(target, URLPath):  # plots write local files (matplotlib): render locally, then upload atomically
        with tempfile.TemporaryDirectory(prefix="kit-plot-") as folder:
            drawn = plots.learning_curves(
                pd.DataFrame(history), Path(folder) / target.name, title=title, best_epoch=best_epoch, monitor=monitor
            )
            put_file(drawn, target)
        return
    plots.learning_curves(pd.DataFrame(history), target, title=title, best_epoch=best_epoch, monitor=monitor)
