"""``kit predict``: the test split through one run or an ensemble, the threshold, a validated submission.

The path of one ``kit predict``::

    run dirs (a run with fold*/ sub-runs counts as all its folds: kit.runs.expand_runs)
      -> per run: best.keras on the test records, mean over the original + each TTA view (kit.inference)
      -> mean over runs (aligned by id)          -> binary: prob >= threshold, else argmax
      -> rows in the sample submission's order   -> validate_submission -> submission.csv + probabilities.csv

``validate_submission`` is also what ``kit submit`` runs before uploading.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kit.errors import KitError
from kit.evaluate import score
from kit.inference import (
    batches_in_split,
    check_tta,
    class_names,
    labels_from_probs,
    predict_labelled,
    predict_probabilities,
    split_dataset,
    to_class_probs,
)
from kit.io import as_path, atomic_path
from kit.runs import expand_runs, latest_run, load_model, read_threshold, run_config, run_fold, threshold_runs

if TYPE_CHECKING:
    from kit.config import Config

PROBABILITIES_FILE = "probabilities.csv"


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


def resolve_threshold(cfg: Config, runs: Sequence[Path]) -> float:
    """``predict.threshold`` as a number; ``auto``: the runs' saved thresholds (their mean for an ensemble)."""
    if str(cfg.predict.threshold).strip().lower() != "auto":
        return float(cfg.predict.threshold)
    return float(np.mean([read_threshold(run) for run in runs]))


def _read_csv(path: Path) -> pd.DataFrame:
    # strings everywhere: ids such as "007" keep their zeros; only empty cells count as missing
    return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])


def sample_submission_path(cfg: Config) -> Path | None:
    if not cfg.comp.sample_submission:
        return None
    path = Path(cfg.data.root) / cfg.comp.sample_submission
    return path if path.is_file() else None


def reference_ids(cfg: Config) -> tuple[list[str] | None, str]:
    """The ids a submission must have, in order: the sample submission's, else the test index's."""
    sample = sample_submission_path(cfg)
    if sample is not None:
        frame = _read_csv(sample)
        column = cfg.comp.submission.id_column if cfg.comp.submission.id_column in frame.columns else frame.columns[0]
        return frame[column].astype(str).tolist(), str(sample)
    try:
        from kit.data.sources import load_index
    except ImportError:
        return None, ""
    index, _ = load_index(cfg)
    return index.loc[index["split"] == "test", "id"].astype(str).tolist(), "the test index"


def expected_columns(cfg: Config) -> list[str]:
    sample = sample_submission_path(cfg)
    if sample is not None:
        return list(_read_csv(sample).columns)
    return [cfg.comp.submission.id_column, cfg.comp.submission.label_column]


# ---------------------------------------------------------------------------------------- validation


def validate_submission(cfg: Config, frame_or_path: pd.DataFrame | str | Path) -> pd.DataFrame:
    """Check a submission against the competition; return it with the columns in the expected order.

    Columns as the sample submission (or the submission config), no empty cell, no duplicate id, exactly
    the expected ids, and labels valid for ``comp.submission.label_format``. Any failure is one KitError
    naming the file, the row and the fix.
    """
    if isinstance(frame_or_path, pd.DataFrame):
        name, frame = "submission", frame_or_path.copy()
    else:
        path = Path(frame_or_path)
        name = str(path)
        if not path.is_file():
            raise KitError(f"submission file {path} does not exist", "run kit predict first, or pass --file <submission.csv>")
        try:
            frame = _read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
            raise KitError(
                f"{name}: not a readable CSV ({str(exc).splitlines()[0]})", "write it with a header row and comma separators"
            ) from None

    sub = cfg.comp.submission
    columns = expected_columns(cfg)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KitError(
            f"{name}: missing column '{missing[0]}' (has {list(frame.columns)}, expected {columns})",
            f"write the columns {', '.join(columns)} as in the sample submission",
        )
    extra = [c for c in frame.columns if c not in columns]
    if extra:
        raise KitError(f"{name}: unexpected column '{extra[0]}' (expected exactly {columns})", f"drop the column '{extra[0]}'")
    frame = frame[columns]
    id_col = sub.id_column if sub.id_column in columns else columns[0]
    label_col = sub.label_column if sub.label_column in columns else columns[-1]

    empty = frame.isna().to_numpy()
    if empty.any():
        row, col = (int(v) for v in np.argwhere(empty)[0])
        raise KitError(
            f"{name}: row {row + 1} (line {row + 2}) has no value in column '{columns[col]}' ({int(empty.sum())} empty cells)",
            "fill every cell; predict every test image",
        )
    ids = frame[id_col].astype(str)
    duplicated = ids.duplicated(keep=False)
    if duplicated.any():
        rows = np.flatnonzero(duplicated.to_numpy())
        first = ids.iloc[rows[0]]
        same = np.flatnonzero((ids == first).to_numpy())
        raise KitError(
            f"{name}: id '{first}' appears {len(same)} times (rows {', '.join(str(r + 1) for r in same[:5])}); "
            f"{int(ids.duplicated().sum())} duplicate rows in all",
            "keep one row per id",
        )
    reference, source = reference_ids(cfg)
    if reference is not None:
        have, want = set(ids), set(reference)
        if have != want:
            lacking = [i for i in reference if i not in have]
            surplus = [i for i in ids if i not in want]
            parts = []
            if lacking:
                parts.append(f"{len(lacking)} ids of {source} are missing (e.g. '{lacking[0]}')")
            if surplus:
                row = int(np.flatnonzero((ids == surplus[0]).to_numpy())[0])
                parts.append(f"{len(surplus)} ids are not in {source} (e.g. '{surplus[0]}' at row {row + 1})")
            raise KitError(
                f"{name}: {'; '.join(parts)} ({len(ids)} rows, {len(reference)} expected)",
                f"write exactly one row for each id of {source}",
            )
    _check_labels(cfg, frame[label_col], name, label_col)
    return frame


def _check_labels(cfg: Config, labels: pd.Series, name: str, column: str) -> None:
    fmt = cfg.comp.submission.label_format

    def fail(bad: np.ndarray, what: str, fix: str) -> None:
        row = int(np.flatnonzero(bad)[0])
        raise KitError(
            f"{name}: row {row + 1} (line {row + 2}) has {column}='{labels.iloc[row]}': {what} ({int(bad.sum())} such rows)", fix
        )

    if fmt == "name":
        classes = class_names(cfg)
        if classes:
            bad = ~labels.astype(str).isin(classes).to_numpy()
            if bad.any():
                fail(
                    bad,
                    f"not a class name ({', '.join(classes[:10])}{', ...' if len(classes) > 10 else ''})",
                    "write class names",
                )
        return
    numbers = pd.to_numeric(labels, errors="coerce").to_numpy(dtype=float)
    if fmt == "probability":
        bad = ~((numbers >= 0.0) & (numbers <= 1.0))  # NaN from non-numbers fails too
        if bad.any():
            fail(bad, "not a probability in [0, 1]", "write the probability of the positive class")
        return
    classes = class_names(cfg)
    upper = len(classes) if classes else np.inf
    bad = ~((numbers >= 0) & (numbers < upper) & (np.floor(numbers) == numbers))
    if bad.any():
        what = f"not a class index in 0..{len(classes) - 1}" if classes else "not a class index"
        fail(bad, what, "write integer class indices")


# --------------------------------------------------------------------------------------- kit predict


def _format_labels(cfg: Config, class_probs: np.ndarray, threshold: float, classes: list[str]) -> list:
    fmt = cfg.comp.submission.label_format
    if fmt == "probability":
        if class_probs.shape[1] != 2:
            raise KitError(
                f"label_format=probability needs a binary competition, this one has {class_probs.shape[1]} classes",
                "set comp.submission.label_format=index or name",
            )
        return [float(p) for p in class_probs[:, 1]]
    labels = labels_from_probs(class_probs, threshold)
    if fmt == "name":
        if len(classes) != class_probs.shape[1]:
            raise KitError(
                f"label_format=name needs {class_probs.shape[1]} class names, found {len(classes)}",
                "set comp.classes in the competition YAML (names in label-index order)",
            )
        return [classes[i] for i in labels]
    return [int(i) for i in labels]


def _output_path(cfg: Config, first_run: Path) -> Path:
    output = Path(cfg.predict.output)
    if output.is_absolute() or len(output.parts) > 1:
        return output
    return as_path(first_run) / output


def _write_csv(frame: pd.DataFrame, path: Path) -> Path:
    with atomic_path(path, suffix=".csv") as tmp:
        frame.to_csv(tmp, index=False)
    return path


def predict(cfg: Config, run_dirs: list[Path]) -> Path:
    """Predict the test split with one run or an ensemble and write a validated submission; return its path."""
    tta = check_tta(cfg.predict.tta)
    if not run_dirs:
        run_dirs = [latest_run(cfg)]
    runs = expand_runs(run_dirs)
    if cfg.binary:
        resolve_threshold(cfg, threshold_runs(run_dirs))  # fail before loading any model when threshold.json is missing
    ids: np.ndarray | None = None
    total: np.ndarray | None = None
    val_runs = len(runs) > 1 and all(run_fold(r) is None for r in runs)  # an ensemble sharing one val split
    val_results: list[tuple[Path, np.ndarray, np.ndarray, np.ndarray]] = []  # run, ids, true labels, probs

    for i, run in enumerate(runs):
        run_cfg = run_config(cfg, run)
        print(f"[{i + 1}/{len(runs)}] {run} ({run_cfg.model.name} {run_cfg.model.image_size}px, tta={tta or 'none'})")
        model = load_model(run)
        run_ids, probs = predict_probabilities(
            model, split_dataset(run_cfg, "test"), tta, total=batches_in_split(run_cfg, "test")
        )
        if ids is None:
            ids, total = run_ids, probs.astype(np.float64)
        else:
            total += _align(run_ids, probs, ids, run)
        if val_runs:
            try:
                v_ids, v_probs, v_true = predict_labelled(
                    model, split_dataset(run_cfg, "val"), tta, total=batches_in_split(run_cfg, "val")
                )
                val_results.append((run, v_ids, v_true, v_probs))
            except KitError as exc:
                print(f"no ensemble validation score: {exc.one_line()}")
                val_runs = False
        del model
        _free_memory()

    assert ids is not None and total is not None
    class_probs = to_class_probs(total / len(runs))
    threshold = resolve_threshold(cfg, threshold_runs(run_dirs)) if class_probs.shape[1] == 2 else 0.5
    if val_runs and val_results:
        _report_ensemble(cfg, val_results, threshold)

    classes = class_names(cfg)
    frame = _submission_frame(cfg, ids, class_probs, threshold, classes)
    frame = validate_submission(cfg, frame)
    out = _output_path(cfg, as_path(run_dirs[0]))
    _write_csv(frame, out)
    names = classes if len(classes) == class_probs.shape[1] else [str(c) for c in range(class_probs.shape[1])]
    probs_frame = pd.DataFrame(class_probs, columns=names)
    probs_frame.insert(0, cfg.comp.submission.id_column, ids)
    _write_csv(probs_frame, out.parent / PROBABILITIES_FILE)
    print(f"submission: {out} ({len(frame)} rows{f', threshold {threshold:.4f}' if class_probs.shape[1] == 2 else ''})")
    return out


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
    ensemble = score(cfg, truth, labels_from_probs(cp, threshold), cp)
    print(f"  val {cfg.comp.metric} {ensemble:.4f}  ensemble of {len(results)} runs")
    return ensemble


def _submission_frame(
    cfg: Config, ids: np.ndarray, class_probs: np.ndarray, threshold: float, classes: list[str]
) -> pd.DataFrame:
    """Rows in the reference order; examples the records skipped (unreadable images) get the mean prediction."""
    sub = cfg.comp.submission
    reference, source = reference_ids(cfg)
    by_id = pd.DataFrame(class_probs, index=pd.Index(ids.astype(str)))
    by_id = by_id[~by_id.index.duplicated()]
    if reference is not None:
        lacking = [i for i in reference if i not in by_id.index]
        if lacking:
            print(
                f"warning: {len(lacking)} ids of {source} have no prediction (e.g. '{lacking[0]}', probably unreadable "
                "images skipped by kit records): they get the mean test prediction"
            )
        by_id = by_id.reindex(reference)
        by_id = by_id.fillna(pd.Series(class_probs.mean(axis=0), index=by_id.columns))
    labels = _format_labels(cfg, by_id.to_numpy(), threshold, classes)
    frame = pd.DataFrame({sub.id_column: by_id.index.astype(str), sub.label_column: labels})
    columns = expected_columns(cfg)
    if set(columns) == set(frame.columns):
        frame = frame[columns]
    return frame
