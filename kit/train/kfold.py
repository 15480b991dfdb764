"""k-fold cross-validation: every fold under one parent run, out-of-fold predictions, the CV score.

``kit train folds=5`` (records built with the same ``data.folds``) runs ``trainer.train(cfg, fold=k)``
for k = 0..4 under one run id, predicts each fold's validation examples with that fold's ``best.keras``
and scores all out-of-fold (OOF) predictions together with the competition metric::

    <run.root>/<comp>/<model>/<run-id>/
        config.yaml, versions.json
        kfold.json         written first: marks a k-fold parent (what --resume looks for), folds, records
        fold0/ .. fold4/   complete runs (best.keras, history.csv, done, ...) + oof.csv: that fold's val predictions
        oof.csv            id, fold, label (class index), p_<class> per class (kit.interpret's columns)
        cv.json            CV score at 0.5 and (binary) at a threshold chosen on the other folds' OOF rows,
                           each with a 95% bootstrap interval and labelled "k-fold OOF"; per-fold scores
        threshold.json     binary: the F1-best threshold over all OOF predictions (``kit predict threshold=auto``),
                           never scored on those rows: its honest score is the cross-fitted one (kit.scores)
        done

``--resume`` continues the newest unfinished k-fold parent: finished folds (``fold<k>/done``) are not
touched, an interrupted fold resumes from its checkpoint, the rest train. ``kit predict`` on the parent
(or right after, via ``latest_run``) averages the folds' test probabilities (``runs.expand_runs``).
"""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kit.errors import KitError
from kit.evaluate import held_out_scores, score
from kit.inference import labels_from_probs, predict_labelled, split_dataset, to_class_probs
from kit.interpret import OOF, OOF_KEYS, probability_columns
from kit.io import atomic_path, local_copy, read_json, write_json
from kit.run_model import load_model, run_config
from kit.runs import (
    DONE,
    check_resume_settings,
    find_parent,
    mark_done,
    new_run_dir,
    read_parent,
    run_dir_of,
    start_parent,
    write_threshold,
    writing,
)

if TYPE_CHECKING:
    from pathlib import Path

    from kit.config import Config
    from kit.data.manifest import Manifest
    from kit.io import URLPath

CV = "cv.json"


# --- the records ------------------------------------------------------------------------------------------


def record_folds(manifest: Manifest) -> dict[int, int]:
    """Examples per ``fold`` value in the train records: the manifest's per-fold counts, or for a manifest
    written before them a scan of the shards that parses only the small ``fold`` feature, never an image."""
    counts = manifest.fold_counts()
    if counts is not None:
        return counts
    import tensorflow as tf

    from kit.data import schema
    from kit.data.pipeline import require_shards

    spec = {"fold": schema.feature_spec(1)["fold"]}
    dataset = (
        tf.data.TFRecordDataset(require_shards(manifest, "train"))
        .batch(8192)
        .map(lambda serialized: tf.io.parse_example(serialized, spec)["fold"], num_parallel_calls=tf.data.AUTOTUNE)
    )
    values = np.concatenate([batch.numpy() for batch in dataset] or [np.zeros(0, np.int64)])
    found, counts = np.unique(values, return_counts=True)
    return {int(k): int(n) for k, n in zip(found, counts, strict=True)}


def check_record_folds(cfg: Config, manifest: Manifest) -> dict[int, int]:
    """The records must hold folds 0..data.folds-1 (built by ``kit records ... folds=N``); examples per fold."""
    folds = int(cfg.data.folds)
    rebuild = f"rerun `kit records comp={cfg.comp.name} model={cfg.model.name} folds={folds}`"
    counts = record_folds(manifest)
    found = sorted(k for k in counts if k >= 0)
    if not found:
        raise KitError(f"the records in {manifest.records_dir} were built without folds (data.folds={folds} asked)", rebuild)
    if found != list(range(folds)):
        raise KitError(
            f"the records in {manifest.records_dir} hold folds {found}, not the {folds} folds of data.folds={folds}", rebuild
        )
    return counts


# --- the parent run ---------------------------------------------------------------------------------------


def _start_parent(cfg: Config, parent: Path | URLPath, manifest: Manifest) -> None:
    """Make ``parent`` a new parent run marked with the folds and the records they are cut from (what a resume checks)."""
    marker = {
        "folds": int(cfg.data.folds),
        "records_dir": str(manifest.records_dir),
        "records_fingerprint": manifest.fingerprint,
    }
    start_parent(cfg, parent, marker, manifest)


def _check_resumable(cfg: Config, parent: Path | URLPath, manifest: Manifest) -> None:
    """A parent resumes only with the folds, records and settings it was started with."""
    saved = read_parent(parent)
    if int(saved["folds"]) != int(cfg.data.folds):
        raise KitError(
            f"{parent} was started with data.folds={saved['folds']}, not {cfg.data.folds}",
            f"resume with folds={saved['folds']}, or drop --resume to start a new k-fold run",
        )
    if saved.get("records_fingerprint") != manifest.fingerprint:
        # Folds trained on other records would be mixed into one CV score.
        raise KitError(
            f"the records in {manifest.records_dir} changed since {parent} started", "drop --resume to start a new run"
        )
    check_resume_settings(cfg, parent)


# --- out-of-fold predictions ------------------------------------------------------------------------------


def fold_oof(cfg: Config, fold_dir: Path | URLPath, fold: int, classes: list[str], manifest: Manifest) -> pd.DataFrame:
    """Fold ``fold``'s val examples predicted by its ``best.keras``; cached in ``fold<k>/oof.csv`` so a resume
    does not load the model again."""
    columns = probability_columns(classes)
    cached = fold_dir / OOF
    if cached.is_file():
        with local_copy(cached) as local:
            frame = pd.read_csv(local, dtype={"id": str}, keep_default_na=False)
        if list(frame.columns) == [*OOF_KEYS, *columns]:
            return frame
    run_cfg = run_config(cfg, fold_dir)  # the model and image size this fold was trained with
    model = load_model(fold_dir)
    ids, probs, y_true = predict_labelled(
        model, split_dataset(run_cfg, manifest, "val", fold), progress=False, source=f"run {fold_dir}"
    )
    frame = pd.DataFrame(to_class_probs(probs), columns=columns)
    frame.insert(0, "label", y_true)
    frame.insert(0, "fold", fold)
    frame.insert(0, "id", ids.astype(str))
    with atomic_path(cached, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)
    return frame


def score_frame(cfg: Config, frame: pd.DataFrame, classes: list[str], threshold: float = 0.5) -> float:
    """The competition metric of OOF rows (binary: class 1 when p >= threshold; else argmax)."""
    class_probs = frame[probability_columns(classes)].to_numpy(dtype=np.float64)
    return score(cfg, frame["label"].to_numpy(), labels_from_probs(class_probs, threshold), class_probs)


# --- the entry point --------------------------------------------------------------------------------------


def _figure(entry: dict) -> str:
    low, high = entry["interval"]
    return f"{entry['value']:.4f} [{low:.4f}, {high:.4f}]"


def _honest_oof_scores(cfg: Config, parent: Path | URLPath, oof: pd.DataFrame, classes: list[str], where: str) -> dict:
    """The OOF scores (:func:`kit.evaluate.held_out_scores`, the folds as the parts a threshold is cross-fitted over)
    and, binary, threshold.json with the threshold of all rows."""
    y_true = oof["label"].to_numpy().astype(int)
    class_probs = oof[probability_columns(classes)].to_numpy(dtype=np.float64)
    out = held_out_scores(cfg, y_true, class_probs, where, oof["fold"].to_numpy())
    if "threshold" in out:
        write_threshold(parent, out["threshold"], "oof", len(oof), out.get("at_chosen"))
    return out


def train_folds(cfg: Config, resume: bool = False) -> Path | URLPath:
    """Train every fold of ``cfg.data.folds`` under one parent run; write oof.csv, cv.json (+ threshold.json for
    binary problems) and ``done`` there; return the parent (the CLI's ``kit train folds=N``)."""
    from kit.train.session import open_records
    from kit.train.strategy import tf_config_tasks

    folds = int(cfg.data.folds)
    if folds < 2:
        raise KitError(f"data.folds={folds}: k-fold training needs at least 2 folds", "set folds=5 (and build the records so)")
    if cfg.train.strategy == "multiworker" or tf_config_tasks() > 1:
        # Every worker would write the parent's files; the driver runs folds one after another on one machine.
        raise KitError("k-fold training runs on one machine (one strategy per fold)", "unset TF_CONFIG or train one fold per job")
    cfg, manifest = open_records(cfg)  # read once: every fold's training gets it handed down
    counts = check_record_folds(cfg, manifest)

    parent = find_parent(cfg) if resume else None
    if resume and parent is None:
        print(f"no unfinished k-fold run of {cfg.comp.name}/{cfg.model.name} to resume: starting a new one")
    resuming = parent is not None
    parent = parent or new_run_dir(cfg)
    with writing(parent):  # the driver is the parent's one writer: a second `kit train folds=N --resume` is refused
        if resuming:
            _check_resumable(cfg, parent, manifest)
            print(f"resuming k-fold run {parent}")
        else:
            _start_parent(cfg, parent, manifest)
            print(f"k-fold run {parent}: {folds} folds of {', '.join(str(counts[k]) for k in range(folds))} examples")
        return _train_and_score(cfg, parent, manifest)


def _train_and_score(cfg: Config, parent: Path | URLPath, manifest: Manifest) -> Path | URLPath:
    """Every fold under ``parent`` (finished ones skipped), then oof.csv, cv.json, threshold.json and ``done``."""
    import keras

    from kit.train import trainer

    folds, classes = int(cfg.data.folds), list(manifest.classes)
    # Every fold goes under the parent: runs.new_run_dir / runs.find_resumable join run.id and fold<k>.
    fold_cfg = dataclasses.replace(cfg, run=dataclasses.replace(cfg.run, id=parent.name))

    parts: list[pd.DataFrame] = []
    per_fold: list[dict[str, Any]] = []
    for k in range(folds):
        fold_dir = run_dir_of(parent, k)
        started = time.monotonic()
        if (fold_dir / DONE).is_file():
            how = "finished earlier, skipped"
        else:
            resuming = (fold_dir / "config.yaml").is_file()  # started before a kill: continue its checkpoint
            trainer.train(fold_cfg, resume=resuming, fold=k, manifest=manifest)
            how = "resumed" if resuming else "trained"
        frame = fold_oof(fold_cfg, fold_dir, k, classes, manifest)
        keras.backend.clear_session()  # the next fold builds its model from a clean graph
        value = score_frame(cfg, frame, classes)
        parts.append(frame)
        metrics = read_json(fold_dir / "metrics.json") if (fold_dir / "metrics.json").is_file() else {}
        per_fold.append(
            {"fold": k, "score": value, "examples": len(frame), "best_epoch": metrics.get("best_epoch"), "run": str(fold_dir)}
        )
        print(
            f"fold {k + 1}/{folds}: {cfg.comp.metric} {value:.4f} on {len(frame)} val examples "
            f"({how}, {time.monotonic() - started:.0f} s)",
            flush=True,
        )

    oof = pd.concat(parts, ignore_index=True)
    twice = oof["id"][oof["id"].duplicated()]
    if len(twice):  # each example is validated in exactly one fold
        raise KitError(f"ids validated in more than one fold, e.g. {twice.iloc[0]}", "rebuild the records")
    with atomic_path(parent / OOF, suffix=".csv") as tmp:
        oof.to_csv(tmp, index=False)
    scores = np.array([f["score"] for f in per_fold])
    where = f"{folds}-fold OOF"
    result: dict[str, Any] = {
        "metric": cfg.comp.metric,
        "score": score_frame(cfg, oof, classes),  # all OOF predictions at once at 0.5 / argmax: the CV score
        "examples": len(oof),
        "folds": per_fold,
        "fold_mean": float(scores.mean()),
        "fold_std": float(scores.std()),
    }
    result.update(_honest_oof_scores(cfg, parent, oof, classes, where))
    line = f"CV {cfg.comp.metric} ({where}) {_figure(result['at_0.5'])}"
    if "at_chosen" in result:
        line += f"; {_figure(result['at_chosen'])} at a threshold chosen on the other folds"
    if "degenerate" in result:
        print(f"WARNING: {result['degenerate']}; do not submit it (kit submit refuses without --force)", flush=True)
    write_json(parent / CV, result)
    mark_done(parent)
    print(f"{line} (folds {result['fold_mean']:.4f} +/- {result['fold_std']:.4f}); {parent}", flush=True)
    return parent
