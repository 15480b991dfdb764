"""Hyperparameter search with keras-tuner over the same registry, pipeline and compile as ``kit train``.

The original notebooks tuned the frozen EfficientNetB4 head with Hyperband (units, dropout, learning
rate, ``first_decay_steps``; objective ``val_f1_score``) and the CNN with RandomSearch (15 trials). Here
each model's YAML declares its space (``tuner.space``, see :mod:`kit.train.search_space`); a trial is
``cfg`` with the trial's values merged in, built by the model registry and trained through the same phase plan,
phase set-up and phase callbacks as ``kit train`` (:mod:`kit.train.phases`, :func:`kit.train.callbacks.
training_callbacks`): the trial's epochs shared between the phases as the settings share them, phase 2 at
``train.fine_tune.learning_rate``, the plateau reduction and EMA as the run would have them. What a trial does not
keep is the run folder (best.keras, history, resume point): keras-tuner keeps its own; so phase 2 of a trial goes
on from phase 1's last weights, not its best.

Hyperband: Li et al. 2018, "Hyperband: A Novel Bandit-Based Approach to Hyperparameter Optimization".

Output in ``<run.root>/<comp>/<model>/tune-<kind>/``: the tuner's own state (``search/``, kept so a killed
search resumes without repeating finished trials), ``search.json`` (what the search was started with: a rerun
resumes it only with the same objective, space, records and trial epochs, as ``kit train --resume`` does),
``best_hparams.yaml`` (a partial config for ``kit train hparams=...``), ``trials.csv`` and ``plots/tuning.png``.
The objective is checked against what the model logs before the first trial.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kit.config.checks import check_folders
from kit.errors import KitError, quoted
from kit.io import atomic_write
from kit.train.metrics import check_metric_name
from kit.train.search_space import Dimension, apply_values, nested, parse_space

if TYPE_CHECKING:
    import keras_tuner as kt

    from kit.config import Config
    from kit.train.phases import Phase

SEARCH_DIR = "search"
SEARCH_FILE = "search.json"
# What a search is started with, each as the settings name it: a rerun that changes one starts no mixed search.
SEARCH_IDENTITY = {
    "objective": "tuner.objective",
    "direction": "the objective's direction",
    "space": "tuner.space",
    "records": "the records (data, classes, image size)",
    "trial_epochs": "the epochs a trial trains (tuner.max_epochs, train.epochs)",
}


def tune_dir(cfg: Config) -> Path:
    check_folders(cfg)  # a config edited in Python has not been through load_config
    return Path(cfg.run.root) / cfg.comp.name / cfg.model.name / f"tune-{cfg.tuner.kind}"


def trial_epochs(cfg: Config) -> int:
    """Epochs one trial trains at most: ``tuner.max_epochs``, capped by ``train.epochs``.

    A trial never trains longer than the run it tunes for, so ``kit tune train.epochs=1`` is a one-epoch search
    (the budget Hyperband splits into its brackets is this number too).
    """
    return max(1, min(int(cfg.tuner.max_epochs), int(cfg.train.epochs)))


def objective_of(cfg: Config) -> tuple[str, str]:
    """(metric name, direction): ``tuner.objective`` or the training monitor (val_f1_score / val_accuracy)."""
    from kit.train.metrics import monitor_mode, monitored_metric

    binary = len(cfg.comp.classes) == 2  # tune() sets the classes from the records first
    name = monitored_metric(cfg, binary, has_val=True) if cfg.tuner.objective == "auto" else cfg.tuner.objective
    return name, monitor_mode(name)


def trial_hypermodel(cfg: Config, dims: list[Dimension], num_classes: int, steps_per_epoch: int) -> kt.HyperModel:
    """The keras-tuner HyperModel of a search: ``build`` makes the trial's model, ``fit`` trains it through its phases."""
    import keras
    import keras_tuner as kt
    import tensorflow as tf

    from kit.data.augment.layer import model_augmentation
    from kit.models.registry import build_model
    from kit.train.callbacks import PhaseSpan, training_callbacks
    from kit.train.phases import enter_phase, plan_phases

    binary = num_classes == 2
    monitor, direction = objective_of(cfg)

    def trial_phases(trial_cfg: Config, model: keras.Model, epochs: int) -> list[Phase]:
        phases = plan_phases(trial_cfg, model, budget=epochs)
        return phases[:1] if cfg.tuner.phase1_only else phases

    class KitHyperModel(kt.HyperModel):
        def build(self, hp: kt.HyperParameters) -> keras.Model:
            trial_cfg = apply_values(cfg, {d.name: d.declare(hp) for d in dims})
            model = build_model(trial_cfg.model, num_classes, first_layer=model_augmentation(trial_cfg.augment))
            # keras-tuner builds inside the distribution strategy's scope already.
            first = plan_phases(trial_cfg, model)[0]
            enter_phase(model, trial_cfg, first, tf.distribute.get_strategy(), binary=binary, num_classes=num_classes)
            return model

        def fit(self, hp: kt.HyperParameters, model: keras.Model, *args: Any, **kwargs: Any) -> Any:
            # The values build() declared, read back from the trial's hyperparameters (not stored on the model).
            trial_cfg = apply_values(cfg, {d.name: hp.get(d.name) for d in dims})
            end = int(kwargs.pop("epochs", trial_epochs(cfg)))
            initial = int(kwargs.pop("initial_epoch", 0))  # Hyperband goes on with an earlier trial's model
            searching = list(kwargs.pop("callbacks", []))  # keras-tuner's own: they report each epoch to the oracle
            strategy = tf.distribute.get_strategy()
            values: list[float] = []
            history = None
            start = 0
            for phase in trial_phases(trial_cfg, model, end):
                span = PhaseSpan(start, start + phase.epochs)
                start = span.end
                if span.end <= initial:
                    continue
                enter_phase(model, trial_cfg, phase, strategy, binary=binary, num_classes=num_classes)
                behaviour, _ = training_callbacks(
                    trial_cfg.train,
                    monitor=monitor,
                    mode=direction,
                    learning_rate=phase.learning_rate,
                    span=span,
                    steps_per_epoch=steps_per_epoch,
                    replicas=int(strategy.num_replicas_in_sync),
                )
                history = model.fit(
                    *args, epochs=span.end, initial_epoch=max(initial, span.start), callbacks=[*behaviour, *searching], **kwargs
                )
                values += history.history.get(monitor, [])
            if not values:
                return history
            return {monitor: (min if direction == "min" else max)(values)}

    return KitHyperModel()


def _make_tuner(cfg: Config, hypermodel: kt.HyperModel, strategy: Any, directory: Path) -> kt.Tuner:
    import keras_tuner as kt

    name, direction = objective_of(cfg)
    common = {
        "objective": kt.Objective(name, direction),
        "directory": str(directory),
        "project_name": SEARCH_DIR,
        "overwrite": False,  # keep finished trials: a rerun resumes the search
        "distribution_strategy": strategy,
        "executions_per_trial": cfg.tuner.executions_per_trial,
        "seed": cfg.train.seed,
    }
    if cfg.tuner.kind == "hyperband":
        return kt.Hyperband(hypermodel, max_epochs=trial_epochs(cfg), factor=3, **common)
    if cfg.tuner.kind == "random":
        return kt.RandomSearch(hypermodel, max_trials=cfg.tuner.max_trials, **common)
    return kt.BayesianOptimization(hypermodel, max_trials=cfg.tuner.max_trials, **common)


def settle_finished_trials(oracle: kt.Oracle) -> list[str]:
    """Trials that finished but are queued to run again, now counted as ended; returns their ids.

    keras-tuner ends a trial by writing its trial.json (COMPLETED, with its score) and then oracle.json; a kill
    between the two writes leaves the trial "ongoing", and the reload queues it for a retry, so a resumed search
    would train it again. Its result is on disk already: count it as ended, through the oracle's public state.
    """
    state = oracle.get_state()
    finished = [
        trial_id
        for trial_id in state["retry_queue"]
        if oracle.trials[trial_id].status == "COMPLETED" and oracle.trials[trial_id].score is not None
    ]
    if finished:
        state["retry_queue"] = [trial_id for trial_id in state["retry_queue"] if trial_id not in finished]
        state["end_order"] = [*state["end_order"], *(t for t in finished if t not in state["end_order"])]
        oracle.set_state(state)
        oracle.save()
    return finished


def check_same_search(out_dir: Path, identity: dict[str, Any]) -> None:
    """Start a search by writing ``identity`` to search.json; resume one only when it was started with the same.

    A search with another objective would pick the "best" trial across F1 and loss values; with another space,
    records or epochs, across trials that are not comparable. Either is one KitError naming what changed.
    """
    identity = json.loads(json.dumps(identity, default=str))  # as it reads back
    marker = out_dir / SEARCH_FILE
    if not (out_dir / SEARCH_DIR / "oracle.json").is_file():
        atomic_write(marker, json.dumps(identity, indent=2))
        return
    restart = f"rerun with the settings it was started with to resume it, or delete {out_dir} to start a new search"
    try:
        started = json.loads(marker.read_text())
    except (OSError, ValueError):
        raise KitError(
            f"the search in {out_dir} has no readable {SEARCH_FILE} saying what it was started with", restart
        ) from None
    changed = [key for key in SEARCH_IDENTITY if started.get(key) != identity[key]]
    if changed:
        what = "; ".join(
            f"{SEARCH_IDENTITY[key]}: {quoted(started.get(key))} then, {quoted(identity[key])} now" for key in changed
        )
        raise KitError(
            f"the search in {out_dir} was started with other settings ({what}): a search resumes only as started", restart
        )


def trials_table(tuner: kt.Tuner, objective: str) -> list[dict[str, Any]]:
    """One row per trial: id, status, score and every hyperparameter value."""
    rows = []
    for trial in tuner.oracle.trials.values():
        row = {"trial": trial.trial_id, "status": trial.status, objective: trial.score}
        row.update(trial.hyperparameters.values)
        rows.append(row)
    return sorted(rows, key=lambda r: r["trial"])


def _write_outputs(cfg: Config, tuner: kt.Tuner, out_dir: Path, dims: list[Dimension]) -> dict[str, Any]:
    import pandas as pd

    from kit import plots

    objective, direction = objective_of(cfg)
    best_trials = [t for t in tuner.oracle.get_best_trials(1) if t.status == "COMPLETED" and t.score is not None]
    if not best_trials:
        raise KitError(f"the search in {out_dir} finished no trial", "check the trial errors above, or raise tuner.max_trials")
    best = best_trials[0]
    values = {d.name: best.hyperparameters.get(d.name) for d in dims}
    header = (
        f"# best of {len(tuner.oracle.trials)} trials by {objective} ({direction}): {best.score}\n"
        "# use: kit train hparams=<this file>\n"
    )
    atomic_write(out_dir / "best_hparams.yaml", header + yaml.safe_dump(nested(values), sort_keys=True))
    rows = trials_table(tuner, objective)
    table = pd.DataFrame(rows)
    atomic_write(out_dir / "trials.csv", table.to_csv(index=False))
    log_scaled = [d.name for d in dims if d.spec.get("sampling") in ("log", "reverse_log")]
    plots.tuning(table, objective, [d.name for d in dims], out_dir / "plots" / "tuning.png", log_scaled=log_scaled)
    return {"best": values, "score": best.score, "trials": len(rows)}


def tune(cfg: Config) -> Path:
    """Run (or resume) the search for ``cfg.model``; returns the folder holding ``best_hparams.yaml``."""
    from kit.train.session import open_records, start_session

    if cfg.train.mode != "finetune":  # a trial is the phased fit; a probe has one setting (train.probe.c) and no epochs
        raise KitError(
            f"kit tune searches fine-tuning runs, not train.mode={cfg.train.mode}",
            "drop train.mode (or set train.mode=finetune) to tune, or try a few train.probe.c=... probe runs with kit train",
        )
    dims = parse_space(cfg.tuner.space, origin=f"tuner.space of model {cfg.model.name}")
    cfg, manifest = open_records(cfg)
    objective, direction = objective_of(cfg)
    if not manifest.count("val") and objective.startswith("val_"):
        raise KitError(
            f"the records in {manifest.records_dir} have no validation split to score {objective} on",
            "rebuild them with data.val_fraction=0.2 (kit records), or set tuner.objective to a training metric",
        )
    check_metric_name(objective, "tuner.objective", binary=len(cfg.comp.classes) == 2, has_val=bool(manifest.count("val")))

    session = start_session(cfg, manifest=manifest)
    out_dir = tune_dir(cfg)
    out_dir.mkdir(parents=True, exist_ok=True)
    resumed = (out_dir / SEARCH_DIR / "oracle.json").is_file()
    space = {d.name: d.spec for d in dims}
    identity = {"objective": objective, "direction": direction, "space": space, "records": manifest.fingerprint}
    check_same_search(out_dir, {**identity, "trial_epochs": trial_epochs(cfg)})
    print(
        f"tuning {cfg.model.name} on {cfg.comp.name} with {cfg.tuner.kind}: {len(dims)} hyperparameters, objective "
        f"{objective} ({direction}); up to {trial_epochs(cfg)} epochs a trial (tuner.max_epochs={cfg.tuner.max_epochs}, "
        f"train.epochs={cfg.train.epochs}); {session.description}; state in {out_dir}{' (resuming)' if resumed else ''}",
        flush=True,
    )

    with session.precision_policy():
        train_ds, val_ds = session.datasets()
        hypermodel = trial_hypermodel(session.cfg, dims, len(session.classes), session.steps_per_epoch)  # jitter_on resolved
        tuner = _make_tuner(cfg, hypermodel, session.strategy, out_dir)
        settled = settle_finished_trials(tuner.oracle)
        if settled:
            print(f"trials {', '.join(settled)} had finished before the search stopped: not run again", flush=True)
        from kit.progress import fit_verbosity
        from kit.train.callbacks import progress_callbacks

        verbose = fit_verbosity(cfg.train.verbose)  # as kit train: a bar on a terminal, lines in a log
        tuner.search(
            train_ds,
            validation_data=val_ds,
            validation_steps=session.validation_steps,
            steps_per_epoch=session.steps_per_epoch,
            epochs=trial_epochs(cfg),
            shuffle=False,  # the pipeline shuffles; Keras warns that it ignores shuffle for datasets
            verbose=verbose,
            callbacks=progress_callbacks(verbose, session.steps_per_epoch, trial_epochs(cfg)),
        )
    summary = _write_outputs(cfg, tuner, out_dir, dims)
    print(f"best {objective} = {summary['score']} with {summary['best']} ({summary['trials']} trials)")
    print(f"wrote {out_dir / 'best_hparams.yaml'}, {out_dir / 'trials.csv'}, {out_dir / 'plots' / 'tuning.png'}")
    print(f"next: kit train comp={cfg.comp.name} model={cfg.model.name} hparams={out_dir / 'best_hparams.yaml'}")
    return out_dir
