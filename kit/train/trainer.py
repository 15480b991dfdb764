"""``kit train``: one run of a model on a competition's records, in its own run folder, resumable.

:func:`train` starts the session (records, strategy, batch, precision: :mod:`kit.train.session`), opens or resumes
the run folder under its lock, writes what the run was made with (config.yaml, versions.json, strategy.json),
builds the model and fits it through its phases (:func:`kit.train.fitting.fit_phases`), then marks the run done.

Run directory ``<run.root>/<comp>/<model>/<run-id>[/fold<k>]/``: config.yaml, versions.json, strategy.json,
history.csv, tensorboard/, best.keras, checkpoint/, metrics.json, plots/learning_curves.png and ``done`` once
finished. On multi-worker runs all workers read a resume point from it, so the run root must be a shared file
system (or gs://).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from kit.errors import full_disk_named
from kit.io import write_json
from kit.runs import check_resume_settings, find_resumable, finish_run, new_run_dir, write_run_files, writing

if TYPE_CHECKING:
    import keras

    from kit.config import Config
    from kit.data.manifest import Manifest
    from kit.train.session import Session


# --- the entry point -------------------------------------------------------------------------------------


def train(
    cfg: Config,
    resume: bool = False,
    fold: int | None = None,
    *,
    manifest: Manifest | None = None,
    callbacks: Sequence[keras.callbacks.Callback] = (),
) -> Path:
    """Train ``cfg.model`` on ``cfg.comp``'s records; returns the run directory (the CLI's ``kit train``).

    ``manifest``: the records' manifest when the caller has read it already (k-fold reads it once for every fold).
    ``callbacks``: added to every phase's own (e.g. a clock or a test-set curve).
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
            write_run_files(cfg, run_dir, session.manifest)
            write_json(run_dir / "strategy.json", session.describe())
        print(f"run directory: {run_dir}{' (resumed)' if resuming else ''}")
        with full_disk_named(run_dir):  # Keras, h5py and TensorFlow report a full disk each their own way
            _fit(session, cfg, run_dir, resuming, callbacks)
        if chief:
            finish_run(run_dir)  # not marked done without a best.keras: latest_run would pick a run that cannot predict
    return run_dir


def jitter_summary(cfg: Config) -> str:
    """``; colour jitter in the pipeline|model`` for the setup line, when the online augmenter jitters."""
    if str(cfg.augment.mode) != "online" or cfg.augment.color_jitter <= 0:
        return ""
    return f"; colour jitter in the {cfg.augment.jitter_on} (augment.jitter_on)"


def _fit(session: Session, cfg: Config, run_dir: Path, resuming: bool, callbacks: Sequence[keras.callbacks.Callback]) -> None:
    """Build the model in the session's strategy and precision, and train it through its phases into ``run_dir``."""
    from kit.data.augment.layer import model_augmentation
    from kit.models.registry import build_model
    from kit.train.fitting import fit_phases
    from kit.train.probe import fit_probe

    if cfg.train.mode == "probe":  # no phases: a linear head on the frozen backbone's cached features
        fit_probe(session, run_dir)
        return
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
            callbacks=callbacks,
        )
