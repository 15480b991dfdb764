"""``kit predict``: the test split through one run or an ensemble, the threshold, a validated submission.

The path of one ``kit predict``::

    run dirs (a run with fold*/ sub-runs counts as all its folds: kit.runs.expand_runs)
      -> per run: best.keras on the test records, mean over the original + each TTA view (kit.inference)
      -> mean over runs (aligned by id)          -> binary: prob >= threshold, else argmax
      -> rows in the sample submission's order   -> validate_submission -> submission.csv + probabilities.csv
      -> a labelled test split (CIFAKE's test/REAL, test/FAKE): its score, printed as "test", in test_metrics.json
         and test_confusion_matrix.png beside the submission

``validate_submission`` is also what ``kit submit`` runs before uploading.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kit.data.manifest import Manifest, read_manifest, records_dir
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
from kit.run_model import check_records, load_model, run_config
from kit.runs import expand_runs, latest_run, run_fold
from kit.scores import degenerate_warning
from kit.submission import submission_frame, validate_submission

if TYPE_CHECKING:
    from kit.config import Config

PROBABILITIES_FILE = "probabilities.csv"
TEST_METRICS_FILE = "test_metrics.json"
TEST_CONFUSION_FILE = "test_confusion_matrix.png"


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


# --------------------------------------------------------------------------------------- kit predict


def _output_path(cfg: Config, first_run: Path) -> Path:
    output = Path(cfg.predict.output)
    if output.is_absolute() or len(output.parts) > 1:
        return output
    return as_path(first_run) / output


def predict(cfg: Config, run_dirs: list[Path]) -> Path:
    """Predict the test split with one run or an ensemble and write a validated submission; return its path."""
    tta = check_tta(cfg.predict.tta)
    if not run_dirs:
        run_dirs = [latest_run(cfg)]
    runs = expand_runs(run_dirs)
    if cfg.binary:
        resolve_threshold(cfg.predict.threshold, run_dirs)  # fail before loading any model when threshold.json is missing
    ids: np.ndarray | None = None
    total: np.ndarray | None = None
    test_truth: np.ndarray | None = None  # true class indices of a labelled test split, in ``ids`` order
    val_runs = len(runs) > 1 and all(run_fold(r) is None for r in runs)  # an ensemble sharing one val split
    val_results: list[tuple[Path, np.ndarray, np.ndarray, np.ndarray]] = []  # run, ids, true labels, probs

    for i, run in enumerate(runs):
        run_cfg = run_config(cfg, run)
        print(f"[{i + 1}/{len(runs)}] {run} ({run_cfg.model.name} {run_cfg.model.image_size}px, tta={tta or 'none'})")
        manifest = read_manifest(records_dir(run_cfg))  # once per run: an ensemble's image sizes have their own records
        check_records(run_cfg, manifest, run)
        batch = run_cfg.predict.batch_size
        model = load_model(run)
        test_args = (model, split_dataset(run_cfg, manifest, "test"), tta)
        test_kwargs = {"total": batches_in_split(manifest, "test", batch), "source": f"run {run}"}
        if ids is None and has_test_labels(manifest):  # the labels are the same for every run: read them once
            run_ids, probs, test_truth = predict_labelled(*test_args, **test_kwargs)
        else:
            run_ids, probs = predict_probabilities(*test_args, **test_kwargs)
        if ids is None:
            ids, total = run_ids, probs.astype(np.float64)
        else:
            total += _align(run_ids, probs, ids, run)
        if val_runs:
            try:
                v_ids, v_probs, v_true = predict_labelled(
                    model,
                    split_dataset(run_cfg, manifest, "val"),
                    tta,
                    total=batches_in_split(manifest, "val", batch),
                    source=f"run {run}",
                )
                val_results.append((run, v_ids, v_true, v_probs))
            except KitError as exc:
                print(f"no ensemble validation score: {exc.one_line()}")
                val_runs = False
        del model
        _free_memory()

    assert ids is not None and total is not None
    class_probs = to_class_probs(total / len(runs))
    threshold = resolve_threshold(cfg.predict.threshold, run_dirs) if class_probs.shape[1] == 2 else 0.5
    if warning := degenerate_warning(class_probs, threshold):
        print(
            f"WARNING: {warning} on the test split; the submission would score as chance (kit submit refuses it without --force)"
        )
    if val_runs and val_results:
        _report_ensemble(cfg, val_results, threshold)

    classes = class_names(cfg, manifest)  # every run of one competition has the same classes: no second read
    reference = reference_ids(cfg)
    frame = submission_frame(cfg, ids, class_probs, reference, classes, functools.partial(labels_from_probs, threshold=threshold))
    frame = validate_submission(cfg, frame, reference, classes)
    out = _output_path(cfg, as_path(run_dirs[0]))
    names = classes if len(classes) == class_probs.shape[1] else [str(c) for c in range(class_probs.shape[1])]
    probs_frame = pd.DataFrame(class_probs, columns=names)
    probs_frame.insert(0, cfg.comp.submission.id_column, ids)
    _write_outputs([(frame, out), (probs_frame, out.parent / PROBABILITIES_FILE)])
    print(f"submission: {out} ({len(frame)} rows{f', threshold {threshold:.4f}' if class_probs.shape[1] == 2 else ''})")
    if test_truth is not None:
        report_test_score(cfg, test_truth, class_probs, threshold, names, out.parent, [str(r) for r in runs])
    return out


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


def _report_ensemble(cfg: Config, results: list[tuple[Path, np.ndarray, np.ndarray, np.ndarray]], threshold: float) -> float:
    """Print each run's and the ensemble's validation score (runs that share one val split)."""
    _, ref_ids, truth, _ = results[0]
    summed = np.zeros_like(to_class_probs(results[0][3]))
    for run, v_ids, v_true, v_probs in results:
        cp = to_class_probs(v_probs)
        print(f"  val {cfg.comp.metric} {score(cfg, v_true, labels_from_probs(cp, threshold), cp):.4f}  {run}")
        summed += _align(v_ids, cp, ref_ids, run)
    cp = summed / len(results)
    if warning := degenerate_warning(cp, threshold, truth):
        print(f"WARNING: the ensemble on val: {warning}")
    ensemble = score(cfg, truth, labels_from_probs(cp, threshold), cp)
    print(f"  val {cfg.comp.metric} {ensemble:.4f}  ensemble of {len(results)} runs")
    return ensemble
