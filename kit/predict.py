"""``kit predict``: the test split through one run or an ensemble, the threshold, a validated submission.

The path of one ``kit predict``::

    run dirs, each a member (a k-fold parent is one member: the mean of its folds, kit.runs.expand_runs)
      -> per model: best.keras on the test records of its own split plan, mean over the original + each TTA view
      -> one run: its probabilities, its threshold, its recorded score   -> written into the run's folder
      -> an ensemble: each member's held-out rows predicted too (a hold-out run's val rows, a k-fold run's folds'
         val rows: out-of-fold), the members blended by predict.weights on the rows held out from every member and
         scored there honestly (kit.blend)                               -> written into its own folder,
         <run.root>/<comp>/ensembles/<run.id or a timestamp>/ with ensemble.json, never into a member's
      -> binary: prob >= threshold, else argmax -> rows in the sample submission's order -> validate_submission
      -> submission.csv + probabilities.csv, and submission.json: how the file was made (kit.provenance), what
         ``kit submit`` words its message from
      -> a labelled test split (CIFAKE's test/REAL, test/FAKE): its score, printed as "test", in test_metrics.json
         and test_confusion_matrix.png beside the submission

``validate_submission`` is also what ``kit submit`` runs before uploading.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kit.blend import blend, fit_blend
from kit.config.symmetry import forbidden_views_warning
from kit.data.manifest import Manifest
from kit.data.sources import reference_ids
from kit.errors import KitError
from kit.evaluate import score
from kit.inference import (
    batches_in_split,
    check_tta,
    class_names,
    labels_from_probs,
    predict_labelled,
    predict_probabilities,
    resolve_threshold,
    split_dataset,
    to_class_probs,
)
from kit.io import as_path, write_csvs, write_json
from kit.provenance import run_record, run_records, write_provenance
from kit.run_model import check_records, load_model, run_config
from kit.runs import expand_runs, latest_run, run_fold
from kit.scores import degenerate_warning
from kit.submission import submission_frame, validate_submission

if TYPE_CHECKING:
    from kit.config import Config

PROBABILITIES_FILE = "probabilities.csv"
TEST_METRICS_FILE = "test_metrics.json"
TEST_CONFUSION_FILE = "test_confusion_matrix.png"
ENSEMBLES = "ensembles"  # <run.root>/<comp>/ensembles/<id>/: every ensemble's own folder
ENSEMBLE_FILE = "ensemble.json"


def _align(ids: np.ndarray, probs: np.ndarray, reference: np.ndarray, run_dir: Path) -> np.ndarray:
    """Reorder ``probs`` to the ids of ``reference`` (runs must have predicted the same examples)."""
    if len(ids) == len(reference) and np.array_equal(ids, reference):
        return probs
    frame = pd.DataFrame(probs, index=ids)
    if frame.index.has_duplicates or set(ids) != set(reference):
        missing = sorted(set(reference) - set(ids))[:1]
        raise KitError(
            f"run {run_dir} predicted other examples than the first run ({len(ids)} vs {len(reference)} ids; e.g. {missing})",
            "ensemble runs trained on the same competition and records",
        )
    return frame.loc[reference].to_numpy()


# --------------------------------------------------------------------------------------- one member


@dataclass
class Member:
    """One run given to ``kit predict`` (a k-fold parent: its folds together): its test and held-out predictions."""

    run: Path
    model: str  # the model name it was trained with
    ids: np.ndarray  # test ids
    probs: np.ndarray  # (N, C) test class probabilities: the mean over its models
    held_out: pd.DataFrame | None  # id-indexed: "label" + one column per class; None unless asked, or without val rows
    held_out_kind: str  # "val" | "OOF" | ""
    manifest: Manifest
    test_truth: np.ndarray | None  # true classes of a labelled test split, in ``ids`` order


def _predict_member(cfg: Config, run: Path, tta: list[str], held_out: bool, want_truth: bool) -> Member:
    """Every model of ``run`` on the test split (and, for an ensemble, on the rows it was validated on)."""
    models = expand_runs([run])
    ids: np.ndarray | None = None
    total: np.ndarray | None = None
    truth = None
    parts: list[pd.DataFrame] | None = [] if held_out else None
    for model_run in models:
        run_cfg = run_config(cfg, model_run)
        print(f"  {model_run} ({run_cfg.model.name} {run_cfg.model.image_size}px, tta={'+'.join(tta) or 'none'})")
        manifest = run_records(cfg, model_run, val_rows=held_out)  # its own split plan's (image size, hold-out or folds)
        check_records(run_cfg, manifest, model_run)
        batch, source = run_cfg.predict.batch_size, f"run {model_run}"
        model = load_model(model_run)
        test_args = (model, split_dataset(run_cfg, manifest, "test"), tta)
        test_kwargs = {"total": batches_in_split(manifest, "test", batch), "source": source}
        if ids is None and want_truth and has_test_labels(manifest):
            run_ids, probs, truth = predict_labelled(*test_args, **test_kwargs)
        else:
            run_ids, probs = predict_probabilities(*test_args, **test_kwargs)
        probs = to_class_probs(probs)
        if ids is None:
            ids, total = run_ids, probs
        else:
            total = total + _align(run_ids, probs, ids, model_run)
        if parts is not None:
            part = _held_out_rows(model, run_cfg, manifest, run_fold(model_run), tta, source)
            parts = None if part is None else [*parts, part]
        del model
        _free_memory()
    assert ids is not None and total is not None
    frame = pd.concat(parts) if parts else None
    kind = "" if frame is None else ("OOF" if all(run_fold(m) is not None for m in models) else "val")
    return Member(run, run_cfg.model.name, ids, total / len(models), frame, kind, manifest, truth)


def _held_out_rows(
    model: Any, run_cfg: Config, manifest: Manifest, fold: int | None, tta: list[str], source: str
) -> pd.DataFrame | None:
    """One model's predictions (id-indexed: label + class columns) of the rows it was validated on: its fold's, or the
    val split; None when it has none (records without validation)."""
    try:
        dataset = split_dataset(run_cfg, manifest, "val", fold)
        total = batches_in_split(manifest, "val", run_cfg.predict.batch_size, fold)
        ids, probs, y_true = predict_labelled(model, dataset, tta, total=total, source=source)
    except KitError as exc:
        print(f"  no held-out rows: {exc.one_line()}")
        return None
    frame = pd.DataFrame(to_class_probs(probs), index=pd.Index(ids.astype(str), name="id"))
    frame.insert(0, "label", y_true.astype(int))
    return frame


# --------------------------------------------------------------------------------------- kit predict


def _output_path(cfg: Config, folder: Path) -> Path:
    output = Path(cfg.predict.output)
    if output.is_absolute() or len(output.parts) > 1:
        return output
    return as_path(folder) / output


def predict(cfg: Config, run_dirs: list[Path]) -> Path:
    """Predict the test split with one run or an ensemble and write a validated submission; return its path."""
    tta = check_tta(cfg.predict.tta)
    warning = forbidden_views_warning(tta, cfg.augment.flip)
    if warning:
        print(warning, flush=True)
    members_given = [as_path(r) for r in run_dirs] or [latest_run(cfg)]
    ensemble = len(members_given) > 1
    auto = str(cfg.predict.threshold).strip().lower() == "auto"
    if cfg.binary and not ensemble:
        resolve_threshold(cfg.predict.threshold, members_given)  # fail before loading any model when threshold.json is missing
    members = []
    for i, run in enumerate(members_given):
        print(f"[{i + 1}/{len(members_given)}] {run}")
        members.append(_predict_member(cfg, run, tta, held_out=ensemble, want_truth=i == 0))
    ids = members[0].ids
    test_probs = np.stack([_align(m.ids, m.probs, ids, m.run) for m in members])
    binary = test_probs.shape[2] == 2

    if ensemble:
        folder = ensemble_dir(cfg)
        print(f"ensemble of {len(members)} runs: {folder}")
        made = _blend_members(cfg, members, test_probs, auto, binary)
        class_probs, threshold = made.pop("class_probs"), made["threshold"]
        made["ensemble_id"] = folder.name
    else:
        folder = members[0].run
        class_probs = test_probs[0]
        threshold = resolve_threshold(cfg.predict.threshold, members_given) if binary else None
        setting = f"predict.threshold={cfg.predict.threshold}"
        made = run_record(members[0].run, members[0].model, str(cfg.comp.metric), threshold, auto, setting, tta)
    cut_at = 0.5 if threshold is None else threshold  # multi-class files are cut at the argmax
    if warning := degenerate_warning(class_probs, cut_at):
        made["degenerate"] = warning
        print(
            f"WARNING: {warning} on the test split; the submission would score as chance (kit submit refuses it without --force)"
        )

    manifest = members[0].manifest
    classes = class_names(cfg, manifest)  # every run of one competition has the same classes: no second read
    reference = reference_ids(cfg)
    cut = functools.partial(labels_from_probs, threshold=cut_at)
    frame = validate_submission(cfg, submission_frame(cfg, ids, class_probs, reference, classes, cut), reference, classes)
    out = _output_path(cfg, folder)
    names = classes if len(classes) == class_probs.shape[1] else [str(c) for c in range(class_probs.shape[1])]
    probs_frame = pd.DataFrame(class_probs, columns=names)
    probs_frame.insert(0, cfg.comp.submission.id_column, ids)
    _write_outputs([(frame, out), (probs_frame, out.parent / PROBABILITIES_FILE)])
    write_provenance(out, {**made, "tta": list(tta), "threshold_auto": auto and binary, "metric": str(cfg.comp.metric)})
    if ensemble:
        write_json(folder / ENSEMBLE_FILE, {k: v for k, v in made.items() if k != "degenerate"})
    print(f"submission: {out} ({len(frame)} rows{f', threshold {threshold:.4f}' if binary else ''})")
    truth = members[0].test_truth
    if truth is not None:
        report_test_score(cfg, truth, class_probs, cut_at, names, out.parent, [str(m.run) for m in members])
    return out


def ensemble_dir(cfg: Config) -> Path:
    """``<run.root>/<comp>/ensembles/<run.id or a timestamp>``: an ensemble's own folder, never one of its runs'."""
    root = as_path(cfg.run.root) / cfg.comp.name / ENSEMBLES
    if cfg.run.id:
        (root / cfg.run.id).mkdir(parents=True, exist_ok=True)  # predicted again: the same ensemble's files replaced
        return root / cfg.run.id
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        folder = root / (stamp if n == 1 else f"{stamp}-{n}")
        try:
            folder.mkdir(parents=True)  # atomic: two ensembles made in the same second get two folders
            return folder
        except FileExistsError:
            continue
    raise KitError(f"cannot make a new folder under {root}", "set run.id=<a name> for the ensemble")


def _shared_held_out(members: list[Member]) -> tuple[np.ndarray, np.ndarray, str] | None:
    """(M, N, C) probabilities and N true classes of the rows held out from every member, and what those rows are;
    None, said in one line, when the members share none (other val splits, or one without validation)."""
    frames = [m.held_out for m in members]
    if any(f is None for f in frames):
        print("no validation score for the ensemble: a run has no held-out rows")
        return None
    shared = frames[0].index
    for frame in frames[1:]:
        shared = shared.intersection(frame.index, sort=False)
    if shared.empty:
        print("no validation score for the ensemble: its runs were validated on different rows (no row is held out from all)")
        return None
    labels = np.stack([f.loc[shared, "label"].to_numpy() for f in frames])
    if (labels != labels[0]).any():
        raise KitError("the ensemble's runs disagree on the labels of the rows they share", "ensemble runs of one competition")
    kinds = sorted({m.held_out_kind for m in members})
    where = "hold-out" if kinds == ["val"] else ("k-fold OOF" if kinds == ["OOF"] else "held-out (val and OOF)")
    probs = np.stack([f.loc[shared].drop(columns="label").to_numpy(dtype=np.float64) for f in frames])
    return probs, labels[0], where


def _blend_members(cfg: Config, members: list[Member], test_probs: np.ndarray, auto: bool, binary: bool) -> dict[str, Any]:
    """Blend the members' test probabilities by predict.weights, chosen and scored on their shared held-out rows."""
    rule = str(cfg.predict.weights)
    fixed = None if auto or not binary else float(cfg.predict.threshold)
    held = _shared_held_out(members)
    record: dict[str, Any] = {"ensemble": True, "weights": rule, "score": None}
    record["threshold_source"] = f"predict.threshold={fixed}" if fixed is not None else ""
    if held is None:
        if rule != "equal":
            raise KitError(f"predict.weights={rule} needs rows held out from every run", "use predict.weights=equal")
        weights = np.full(len(members), 1.0 / len(members))
        threshold = resolve_threshold(cfg.predict.threshold, [m.run for m in members]) if binary else None
        record["why"] = "no rows held out from every run: not scored"
        if auto and binary:
            record["threshold_source"] = "auto: the mean of the runs' saved thresholds"
    else:
        probs, y_true, where = held
        made = fit_blend(rule, probs, y_true, functools.partial(score, cfg), fixed, auto, where)
        weights, threshold = made.weights, made.threshold
        if warning := degenerate_warning(blend(probs, weights), 0.5 if threshold is None else threshold, y_true):
            print(f"WARNING: the ensemble on its held-out rows: {warning}")
        for member, value in zip(members, made.run_scores, strict=True):
            print(f"  {where} {cfg.comp.metric} {value:.4f} on the {len(y_true)} shared rows  {member.run}")
        if made.score is None:
            record["why"] = f"too few shared held-out rows ({len(y_true)}) to score the blend on rows it was not fitted on"
        else:
            low, high = made.score["interval"]
            label = f"{where} blend {cfg.comp.metric}" + (" at chosen threshold" if auto and binary else "")
            record["score"] = {**made.score, "metric": str(cfg.comp.metric), "label": label}
            print(f"  {label} {made.score['value']:.4f} [{low:.4f}, {high:.4f}] ({made.score['what']})")
        if auto and binary:
            record["threshold_source"] = f"auto: the F1-best threshold of the blend on the {len(y_true)} shared held-out rows"
    record["runs"] = [{"run": str(m.run), "model": m.model, "weight": float(w)} for m, w in zip(members, weights, strict=True)]
    record["threshold"] = threshold
    print(f"  weights ({rule}): " + ", ".join(f"{w:.3f} {m.run}" for m, w in zip(members, weights, strict=True)))
    return {**record, "class_probs": blend(test_probs, weights)}


def has_test_labels(manifest: Manifest) -> bool:
    """Every test example has a label (the index keeps a labelled test folder's labels; unlabelled rows count in no class)."""
    counts = manifest.counts.get("test")
    return counts is not None and counts.total > 0 and sum(counts.per_class.values()) == counts.total


def report_test_score(
    cfg: Config,
    y_true: np.ndarray,
    class_probs: np.ndarray,
    threshold: float,
    classes: Sequence[str],
    folder: Path,
    runs: Sequence[str],
) -> dict:
    """Score the labelled test split at the threshold the submission used; print it, write test_metrics.json + a PNG.

    The threshold came from the runs' validation data (threshold.json) or the config, never from these test rows,
    so this score is an honest estimate; binary problems also show the score at a fixed 0.5 beside it.
    """
    from sklearn.metrics import confusion_matrix

    from kit import plots

    binary = class_probs.shape[1] == 2
    predicted = labels_from_probs(class_probs, threshold)
    value = score(cfg, y_true, predicted, class_probs)
    metrics: dict = {
        "split": "test",
        "metric": cfg.comp.metric,
        "score": value,
        "threshold": threshold if binary else None,
        "examples": len(y_true),
        "runs": list(runs),
        "classes": list(classes),
        "confusion_matrix": confusion_matrix(y_true, predicted, labels=list(range(class_probs.shape[1]))).tolist(),
    }
    at_half = ""
    if binary:
        metrics["score_at_0.5"] = score(cfg, y_true, labels_from_probs(class_probs, 0.5), class_probs)
        at_half = f", threshold {threshold:.4f} from validation; at 0.5: {metrics['score_at_0.5']:.4f}"
    write_json(folder / TEST_METRICS_FILE, metrics)
    plots.confusion_matrix(
        np.array(metrics["confusion_matrix"]),
        classes,
        folder / TEST_CONFUSION_FILE,
        title=f"test {cfg.comp.metric} {value:.4f} ({len(y_true)} labelled test images)",
    )
    print(f"test {cfg.comp.metric} {value:.4f} ({len(y_true)} labelled test images{at_half}): {folder / TEST_METRICS_FILE}")
    return metrics


def _write_outputs(tables: list[tuple[pd.DataFrame, Path]]) -> None:
    """submission.csv and probabilities.csv together or not at all (``write_csvs``); a failed write names the file."""
    try:
        write_csvs(tables)
    except OSError as exc:
        where = exc.filename or tables[0][1]
        raise KitError(
            f"cannot write {where}: {(exc.strerror or str(exc)).lower()}; no submission or probabilities file was changed",
            "free space there (or fix its permissions), or set predict.output=<a path on a disk with room>",
        ) from None


def _free_memory() -> None:
    """Drop the previous run's graphs before loading the next model (large ensembles on one GPU)."""
    import gc

    import keras

    keras.backend.clear_session()
    gc.collect()
