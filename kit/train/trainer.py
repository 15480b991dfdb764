"""Training: two-phase fine-tuning, one best checkpoint across phases, resume after a crash or kill.

The recipe (keras-io "Image classification via fine-tuning with EfficientNet"; Keras transfer-learning guide):

1. Phase 1 trains the head with the backbone frozen (pretrained models), or the whole model (scratch).
2. Phase 2 (pretrained models with ``train.fine_tune.epochs > 0``) starts from the best phase-1 weights,
   unfreezes the top ``fine_tune.unfreeze`` backbone layers (BatchNorm stays frozen and, since the
   backbone is called with ``training=False``, in inference mode) and recompiles with the lower
   ``fine_tune.learning_rate``.

Epochs are numbered globally across phases. ``best.keras`` is the best epoch of the whole run by
:func:`kit.train.metrics.monitored_metric` (what predict loads); ``history.csv`` has a ``phase`` column. After every epoch
``checkpoint/`` holds model + optimizer weights and ``state.json`` (phase, next epoch, best so far,
early-stopping/plateau counters): ``train(cfg, resume=True)`` continues the newest unfinished run of the
comp/model from there and ends with the same number of epochs an uninterrupted run would have.

Run directory ``<run.root>/<comp>/<model>/<run-id>[/fold<k>]/``: config.yaml, versions.json,
strategy.json, history.csv, tensorboard/, best.keras, checkpoint/, metrics.json,
plots/learning_curves.png and ``done`` once finished. On multi-worker runs only the chief writes there
(the others write to a temp dir, TF's convention), and all workers read a resume point from it, so the
run root must be a shared file system (or gs://).
"""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.errors import KitError
from kit.io import URLPath, as_path, put_file, write_json
from kit.runs import (
    BEST_MODEL,
    check_resume_settings,
    find_resumable,
    finish_run,
    load_model,
    new_run_dir,
    read_state,
    write_run_files,
    writing,
)

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from kit.config import Config
    from kit.data.manifest import Manifest
    from kit.train.session import Session


@dataclass(frozen=True)
class Phase:
    index: int  # 1: head (or the whole scratch model), 2: fine-tuning
    epochs: int
    learning_rate: float
    what: str  # for the progress line


def plan_phases(cfg: Config, model: keras.Model) -> list[Phase]:
    """Phase 1 always; phase 2 for models with a backbone when ``fine_tune.epochs > 0``."""
    from kit.models.pretrained import get_backbone

    pretrained = get_backbone(model) is not None
    phases = [Phase(1, cfg.train.epochs, cfg.train.learning_rate, "head only, backbone frozen" if pretrained else "whole model")]
    if pretrained and cfg.train.fine_tune.epochs > 0:
        unfreeze = cfg.train.fine_tune.unfreeze
        what = f"top {unfreeze} backbone layers unfrozen" if unfreeze >= 0 else "whole backbone unfrozen"
        phases.append(Phase(2, cfg.train.fine_tune.epochs, cfg.train.fine_tune.learning_rate, what + ", BatchNorm frozen"))
    return phases


def _set_phase(model: keras.Model, phase: Phase, cfg: Config) -> None:
    from kit.models.pretrained import freeze_backbone, unfreeze_top

    if phase.index == 1:
        freeze_backbone(model)  # no-op (False) for scratch models
    else:
        unfreeze_top(model, cfg.train.fine_tune.unfreeze)


def compile_phase(
    model: keras.Model, cfg: Config, phase: Phase, strategy: tf.distribute.Strategy, binary: bool, num_classes: int
) -> None:
    from kit.train.lr_schedules import build_optimizer, jit_compile
    from kit.train.metrics import build_loss, build_metrics
    from kit.train.strategy import device_type

    with strategy.scope():
        model.compile(
            optimizer=build_optimizer(cfg.train, phase.learning_rate, int(strategy.num_replicas_in_sync)),
            loss=build_loss(binary, cfg.train.label_smoothing),
            metrics=build_metrics(binary, num_classes),
            jit_compile=jit_compile(cfg.train, device_type(strategy)),
        )


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
) -> dict[str, Any]:
    """Train ``model`` (built in ``strategy.scope()``) through its phases; returns what metrics.json holds.

    ``train_ds`` yields global batches and should repeat (``steps_per_epoch`` steps make an epoch);
    ``val_ds`` is finite (or None: the training metric is monitored). ``resume=True`` continues from
    ``run_dir/checkpoint`` when there is one. Writes history.csv, best.keras, checkpoint/, tensorboard/,
    metrics.json and plots/learning_curves.png into ``run_dir`` (the chief's; others write to a temp dir).
    """
    import tensorflow as tf

    from kit.train import multiworker
    from kit.train.lr_schedules import scaled_rate
    from kit.train.metrics import monitor_mode, monitored_metric
    from kit.train.schedules import Tracker, build_callbacks, read_history, write_history
    from kit.train.strategy import is_chief

    strategy = strategy or tf.distribute.get_strategy()
    replicas = int(strategy.num_replicas_in_sync)  # the global batch the rate is scaled to (train.lr_scale_batch)
    run_dir = as_path(run_dir)  # gs:// (TPU) run dirs stay URLs
    chief = is_chief(strategy)
    out_dir = run_dir if chief else Path(tempfile.mkdtemp(prefix="kit-worker-"))
    multi_worker = isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
    if multi_worker and val_ds is not None and not validation_steps:
        raise ValueError("multi-worker training needs validation_steps")
    units = int(model.output_shape[-1])
    binary, num_classes = units == 1, max(2, units)
    monitor = monitored_metric(cfg, binary, val_ds is not None)
    tracker = Tracker(monitor, monitor_mode(monitor))
    phases = plan_phases(cfg, model)
    verbose = cfg.train.verbose if chief else 0
    if verbose == 1 and not sys.stdout.isatty():
        verbose = 2  # a log file gets one line per epoch instead of thousands of progress-bar redraws

    state = read_state(run_dir) if resume else None
    history: list[dict[str, Any]] = []
    if state is not None:
        saved = state["tracker"]
        tracker.best, tracker.best_epoch, tracker.best_phase = saved["best"], saved["best_epoch"], saved["best_phase"]
        tracker.best_loss = saved.get("best_loss")  # absent in checkpoints from before tie-breaking
        # Rows past the checkpoint belong to an epoch the kill interrupted; it runs again.
        history = [row for row in read_history(run_dir / "history.csv") if row["epoch"] < state["next_epoch"]]
        if chief:
            write_history(out_dir / "history.csv", history)
        print(
            f"resuming {run_dir} at epoch {state['next_epoch'] + 1} (phase {state['phase']}); "
            f"best {monitor} so far: {tracker.best}"
        )

    next_epoch = 0
    for phase in phases:
        if state is not None and (phase.index < state["phase"] or (phase.index == state["phase"] and state["phase_done"])):
            next_epoch = state["next_epoch"]
            continue
        resuming = state is not None and phase.index == state["phase"]
        phase_start = state["phase_start"] if resuming else next_epoch
        initial_epoch = state["next_epoch"] if resuming else next_epoch
        end_epoch = phase_start + phase.epochs

        _set_phase(model, phase, cfg)
        if phase.index > 1 and not resuming:
            best = _best_weights(tracker, run_dir)
            if best is not None:  # phase 2 continues from the best phase-1 epoch
                model.set_weights(best)
        compile_phase(model, cfg, phase, strategy, binary, num_classes)
        if resuming:
            multiworker.prepare(model, strategy, train_ds)  # every variable must exist before loading
            _load_checkpoint(model, run_dir / "checkpoint" / state["weights"])
        trainable = sum(int(tf.size(w)) for w in model.trainable_weights)
        rate = scaled_rate(cfg.train, phase.learning_rate, replicas)  # the rate the optimizer uses, not the setting
        print(
            f"phase {phase.index}/{len(phases)}: {phase.what}; {trainable:,} trainable parameters; "
            f"epochs {initial_epoch + 1}-{end_epoch}; learning rate {rate:g} ({cfg.train.schedule}); "
            f"monitor {monitor}",
            flush=True,
        )
        callbacks = build_callbacks(
            cfg.train,
            out_dir=out_dir,
            tracker=tracker,
            history_rows=history,
            phase=phase.index,
            phase_start=phase_start,
            end_epoch=end_epoch,
            base_lr=phase.learning_rate,
            steps_per_epoch=steps_per_epoch,
            restore=state.get("callbacks") if resuming else None,
            replicas=replicas,
        )
        fit_args = {
            "epochs": end_epoch,
            "initial_epoch": initial_epoch,
            "steps_per_epoch": steps_per_epoch,
            "callbacks": callbacks,
        }
        if initial_epoch < end_epoch:
            if multi_worker:
                multiworker.fit(model, strategy, train_ds, val_ds, validation_steps=validation_steps, verbose=verbose, **fit_args)
            else:
                model.fit(
                    train_ds,
                    validation_data=val_ds,
                    validation_steps=validation_steps,
                    shuffle=False,
                    verbose=verbose,
                    **fit_args,
                )
        next_epoch = history[-1]["epoch"] + 1 if history else initial_epoch

    best = _best_weights(tracker, run_dir)
    if best is not None:
        model.set_weights(best)
    result = {**tracker.to_json(), "epochs": len(history), "phases": len(phases)}
    if tracker.best_epoch is not None:  # counted from 1 as history.csv and the log; the tracker keeps Keras' index
        result["best_epoch"] = tracker.best_epoch + 1
    if val_ds is not None:
        if not model.compiled:  # resumed after the last epoch's checkpoint (killed before `done`): no phase compiled
            compile_phase(model, cfg, phases[-1], strategy, binary, num_classes)
        if multi_worker:
            final = multiworker.evaluate(model, strategy, val_ds, int(validation_steps or 0))
        else:
            final = model.evaluate(val_ds, steps=validation_steps, verbose=0, return_dict=True)
        result["split"], result["metrics"] = "val", {f"val_{k}": float(v) for k, v in _scalars(final).items()}
    else:
        row = next((r for r in history if r["epoch"] == tracker.best_epoch), history[-1] if history else {})
        result["split"], result["metrics"] = "train (no val split)", {k: v for k, v in row.items() if k not in ("epoch", "phase")}
    if chief:
        write_json(out_dir / "metrics.json", result)
        _plot(history, out_dir)
    else:
        shutil.rmtree(out_dir, ignore_errors=True)
    return result


def _scalars(logs: dict) -> dict[str, float]:
    from kit.train.metrics import scalar_logs

    return scalar_logs(logs)


def _plot(history: list[dict[str, Any]], out_dir: Path) -> None:
    if not history:
        return
    import pandas as pd

    from kit import plots

    target, title = out_dir / "plots" / "learning_curves.png", f"{out_dir.parent.name}/{out_dir.name}"
    if isinstance(target, URLPath):  # plots write local files (matplotlib): render locally, then upload atomically
        with tempfile.TemporaryDirectory(prefix="kit-plot-") as folder:
            put_file(plots.learning_curves(pd.DataFrame(history), Path(folder) / target.name, title=title), target)
        return
    plots.learning_curves(pd.DataFrame(history), target, title=title)


# --- the entry point -------------------------------------------------------------------------------------


def train(cfg: Config, resume: bool = False, fold: int | None = None, *, manifest: Manifest | None = None) -> Path:
    """Train ``cfg.model`` on ``cfg.comp``'s records; returns the run directory (the CLI's ``kit train``).

    ``manifest``: the records' manifest when the caller has read it already (k-fold reads it once for every fold).
    """
    from kit.train.session import start_session
    from kit.train.strategy import is_chief

    session = start_session(cfg, fold, manifest)  # resolves augment.jitter_on for the device
    cfg = session.cfg
    print(f"{session.summary()}{jitter_summary(cfg)}")

    run_dir = find_resumable(cfg, fold) if resume else None
    if resume and run_dir is None:
        print(f"nothing to resume for {cfg.comp.name}/{cfg.model.name}: starting a new run")
    resuming = run_dir is not None
    run_dir = run_dir or new_run_dir(cfg, fold)
    chief = is_chief(session.strategy)
    # The chief is the run's one writer: a second `kit train --resume` of a live run is refused, naming it.
    with writing(run_dir) if chief else contextlib.nullcontext():
        if resuming:
            check_resume_settings(cfg, run_dir)  # before config.yaml is rewritten
        if chief:
            write_run_files(cfg, run_dir)
            write_json(run_dir / "strategy.json", session.describe())
        print(f"run directory: {run_dir}{' (resumed)' if resuming else ''}")
        _fit(session, cfg, run_dir, resuming)
        if chief:
            finish_run(run_dir)  # not marked done without a best.keras: latest_run would pick a run that cannot predict
    return run_dir


def jitter_summary(cfg: Config) -> str:
    """``; colour jitter in the pipeline|model`` for the setup line, when the online augmenter jitters."""
    if str(cfg.augment.mode) != "online" or cfg.augment.color_jitter <= 0:
        return ""
    return f"; colour jitter in the {cfg.augment.jitter_on} (augment.jitter_on)"


def _fit(session: Session, cfg: Config, run_dir: Path, resuming: bool) -> None:
    """Build the model in the session's strategy and precision, and train it through its phases into ``run_dir``."""
    from kit.data.augment.layer import model_augmentation
    from kit.models.registry import build_model

    with session.precision_policy():
        train_ds, val_ds = session.datasets()
        with session.strategy.scope():
            # augment.jitter_on=model: kit's colour jitter as the model's first layer (identity in inference).
            model = build_model(cfg.model, len(session.classes), first_layer=model_augmentation(cfg.augment))
        fit_phases(
            cfg,
            model,
            train_ds,
            val_ds,
            run_dir,
            session.steps_per_epoch,
            strategy=session.strategy,
            validation_steps=session.validation_steps,
            resume=resuming,
        )
