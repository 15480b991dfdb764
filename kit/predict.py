"""Test-set prediction: test-time augmentation, ensembles of runs, the threshold, a validated submission.

The path of one ``kit predict``::

    run dirs (a run with fold*/ sub-runs counts as all its folds)
      -> per run: best.keras on the test records, mean over the original + each TTA view
      -> mean over runs (aligned by id)          -> binary: prob >= threshold, else argmax
      -> rows in the sample submission's order   -> validate_submission -> submission.csv + probabilities.csv

Every model takes raw 0..255 pixels and does its own preprocessing, so a TTA view is just a flipped or
rotated copy of the batch. ``validate_submission`` is also what ``kit submit`` runs before uploading.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kit.data.sources import reference_ids
from kit.errors import KitError, unknown_choice
from kit.io import as_path, local_copy, read_json, write_csv
from kit.submission import submission_frame, validate_submission

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from kit.config import Config

# Test-time views of a batch (B, H, W, C); images are square, so the rotations keep the shape.
TTA_TRANSFORMS: dict[str, Callable[[np.ndarray], np.ndarray]] = {
    "flip": lambda x: x[:, :, ::-1],
    "hflip": lambda x: x[:, :, ::-1],
    "vflip": lambda x: x[:, ::-1],
    "rot90": lambda x: np.rot90(x, 1, axes=(1, 2)),
    "rot180": lambda x: x[:, ::-1, ::-1],
    "rot270": lambda x: np.rot90(x, 3, axes=(1, 2)),
    "transpose": lambda x: np.swapaxes(x, 1, 2),
}
THRESHOLD_FILE = "threshold.json"
PROBABILITIES_FILE = "probabilities.csv"
_FOLD_DIR = re.compile(r"^fold[_-]?(\d+)$")


def check_tta(names: Sequence[str]) -> list[str]:
    """The TTA names, checked (a typo fails before any model is loaded)."""
    names = [str(n).strip().lower() for n in names if str(n).strip() and str(n).strip().lower() != "none"]
    for name in names:
        if name not in TTA_TRANSFORMS:
            raise unknown_choice("TTA transform", name, TTA_TRANSFORMS)
    return names


# ---------------------------------------------------------------------------------------------- runs


def expand_runs(run_dirs: Sequence[Path]) -> list[Path]:
    """Run directories holding a ``best.keras``; a k-fold parent expands to its ``fold*`` sub-runs."""
    runs: list[Path] = []
    for run_dir in run_dirs:
        run_dir = as_path(run_dir)  # gs:// run dirs stay URLs
        folds = sorted(
            (d for d in run_dir.glob("fold*") if d.is_dir() and _FOLD_DIR.match(d.name) and (d / "best.keras").is_file()),
            key=lambda d: int(_FOLD_DIR.match(d.name).group(1)),
        )
        if (run_dir / "best.keras").is_file():
            runs.append(run_dir)
        runs.extend(folds)
        if not (run_dir / "best.keras").is_file() and not folds:
            why = "does not exist" if not run_dir.exists() else "has no best.keras (nor fold*/best.keras)"
            raise KitError(f"run directory {run_dir} {why}", "train first (kit train) or pass run=<a run directory>")
    return runs


def run_fold(run_dir: Path) -> int | None:
    """The fold number of a k-fold sub-run (``.../fold3``), else None."""
    match = _FOLD_DIR.match(Path(run_dir).name)
    return int(match.group(1)) if match else None


def run_config(cfg: Config, run_dir: Path) -> Config:
    """``cfg`` with the model (architecture, image size) and folds the run was trained with.

    Everything else (data paths, predict settings) stays from the current command line, so an
    ensemble of models with different image sizes reads each its own records.
    """
    from kit.config import from_yaml

    for candidate in (as_path(run_dir) / "config.yaml", as_path(run_dir).parent / "config.yaml"):
        if candidate.is_file():
            with local_copy(candidate) as local:  # from_yaml reads local files
                saved = from_yaml(local)
            data = dataclasses.replace(cfg.data, folds=saved.data.folds)
            comp = cfg.comp if cfg.comp.classes else dataclasses.replace(cfg.comp, classes=list(saved.comp.classes))
            return dataclasses.replace(cfg, model=saved.model, data=data, comp=comp)
    return cfg


def load_model(run_dir: Path) -> keras.Model:
    """Load ``best.keras`` without compiling (metrics and optimizer are not needed to predict)."""
    import keras

    _register_custom_objects()
    path = as_path(run_dir) / "best.keras"
    if not path.is_file():
        raise KitError(f"{path} does not exist", "train first (kit train) or pass run=<a run directory>")
    return keras.models.load_model(str(path), compile=False)


def _register_custom_objects() -> None:
    """Import the model modules so any custom layer they register is known to the loader."""
    try:
        from kit.models.registry import MODELS
    except ImportError:
        return
    for entry in MODELS.values():
        # a model module that cannot be imported cannot have made this run
        with contextlib.suppress(ImportError):
            importlib.import_module(entry.builder.split(":")[0])


# ---------------------------------------------------------------------------------------- prediction


def _unpack(element: Any) -> tuple[Any, Any, Any]:
    """(images, targets or None, ids or None) from the elements make_dataset yields."""
    if not isinstance(element, tuple | list):
        return element, None, None
    if len(element) >= 3:
        return element[0], element[1], element[2]
    if len(element) == 2:
        second = element[1]
        if getattr(second, "dtype", None) is not None and "string" in str(second.dtype):
            return element[0], None, second
        return element[0], second, None
    return element[0], None, None


def predict_probabilities(
    model: keras.Model,
    dataset: tf.data.Dataset,
    tta: Sequence[str] = (),
    *,
    total: int | None = None,
    progress: bool = True,
    on_batch: Callable[[np.ndarray, np.ndarray | None, np.ndarray], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Run ``model`` over ``dataset``; return ``(ids, probs)`` with probs shaped like the model output.

    With TTA the probabilities are the mean over the original batch and each transformed view.
    ``on_batch(images, targets, probs)`` sees every batch (evaluate uses it to keep the worst errors
    without holding the whole split in memory). ``total`` is the number of batches, for the bar.
    """
    from tqdm.auto import tqdm

    views = [TTA_TRANSFORMS[name] for name in check_tta(tta)]
    all_ids: list[np.ndarray] = []
    all_probs: list[np.ndarray] = []
    counter = 0
    for element in tqdm(dataset, total=total, disable=not progress, unit="batch", desc="predict", leave=False):
        images, targets, ids = _unpack(element)
        batch = np.asarray(images, dtype=np.float32)
        probs = np.asarray(model.predict_on_batch(batch), dtype=np.float64)
        for view in views:
            probs += np.asarray(model.predict_on_batch(np.ascontiguousarray(view(batch))), dtype=np.float64)
        probs /= 1 + len(views)
        if ids is None:  # no ids in the dataset: number the examples
            ids = np.arange(counter, counter + len(batch)).astype(str)
        else:
            ids = np.array([i.decode("utf-8") if isinstance(i, bytes) else str(i) for i in np.asarray(ids).reshape(-1)])
        counter += len(batch)
        if on_batch is not None:
            on_batch(batch, None if targets is None else np.asarray(targets), probs)
        all_ids.append(ids)
        all_probs.append(probs)
    if not all_probs:
        raise KitError("the dataset to predict is empty", "check that the records hold this split (kit records)")
    return np.concatenate(all_ids), np.concatenate(all_probs).astype(np.float32)


def to_class_probs(probs: np.ndarray) -> np.ndarray:
    """(N, C) class probabilities; a single sigmoid column becomes [1 - p, p]."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 1:
        probs = probs[:, None]
    if probs.shape[1] == 1:
        return np.concatenate([1.0 - probs, probs], axis=1)
    return probs


def labels_from_probs(class_probs: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """Binary: class 1 when p >= threshold; otherwise the argmax."""
    if class_probs.shape[1] == 2:
        return (class_probs[:, 1] >= threshold).astype(np.int64)
    return class_probs.argmax(axis=1).astype(np.int64)


def batches_in_split(cfg: Config, split: str) -> int | None:
    """Batches in one split of the records (for the progress bar), if the manifest says."""
    try:
        from kit.data.records import read_manifest

        total = int(read_manifest(cfg.records_dir)["counts"][split]["total"])
    except (ImportError, KitError, KeyError, TypeError, ValueError, OSError):
        return None
    return -(-total // cfg.predict.batch_size)


def _split_dataset(cfg: Config, split: str, fold: int | None = None) -> tf.data.Dataset:
    from kit.data.pipeline import make_dataset

    kwargs: dict[str, Any] = {"training": False, "batch_size": cfg.predict.batch_size, "with_ids": True}
    if fold is not None:
        kwargs["fold"] = fold
    return make_dataset(cfg, split, **kwargs)


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


# ----------------------------------------------------------------------------------- threshold & ids


def read_threshold(run_dir: Path) -> float:
    """The F1-best threshold ``kit evaluate`` saved for a run."""
    path = as_path(run_dir) / THRESHOLD_FILE
    if not path.is_file():
        raise KitError(
            f"threshold=auto but {path} does not exist", f"run `kit evaluate run={run_dir}` first, or set threshold=0.5"
        )
    return float(read_json(path)["threshold"])


def resolve_threshold(cfg: Config, runs: Sequence[Path]) -> float:
    """``predict.threshold`` as a number; ``auto``: the runs' saved thresholds (their mean for an ensemble)."""
    if str(cfg.predict.threshold).strip().lower() != "auto":
        return float(cfg.predict.threshold)
    return float(np.mean([read_threshold(run) for run in runs]))


def threshold_runs(run_dirs: Sequence[Path]) -> list[Path]:
    """Where ``threshold=auto`` looks: a run dir's own threshold.json (a k-fold parent's is the F1-best over
    its out-of-fold predictions, see kit.train.kfold), else those of the runs it expands to."""
    sources: list[Path] = []
    for run_dir in run_dirs:
        run_dir = as_path(run_dir)
        sources.extend([run_dir] if (run_dir / THRESHOLD_FILE).is_file() else expand_runs([run_dir]))
    return sources


def class_names(cfg: Config) -> list[str]:
    """Class names in label-index order: the config, else the records' manifest, else the index."""
    if cfg.comp.classes:
        return [str(c) for c in cfg.comp.classes]
    try:
        from kit.data.records import read_manifest

        classes = read_manifest(cfg.records_dir).get("classes")
        if classes:
            return [str(c) for c in classes]
    except (ImportError, KitError, OSError):
        pass
    try:
        from kit.data.sources import load_index

        return [str(c) for c in load_index(cfg)[1]]
    except ImportError:
        return []


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
        from kit.train.trainer import latest_run

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
            model, _split_dataset(run_cfg, "test"), tta, total=batches_in_split(run_cfg, "test")
        )
        if ids is None:
            ids, total = run_ids, probs.astype(np.float64)
        else:
            total += _align(run_ids, probs, ids, run)
        if val_runs:
            try:
                targets: list[np.ndarray] = []
                v_ids, v_probs = predict_probabilities(
                    model,
                    _split_dataset(run_cfg, "val"),
                    tta,
                    total=batches_in_split(run_cfg, "val"),
                    on_batch=lambda _x, t, _p, keep=targets: keep.append(t),
                )
                val_results.append((run, v_ids, _true_labels(np.concatenate(targets)), v_probs))
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
    reference = reference_ids(cfg)
    frame = submission_frame(cfg, ids, class_probs, reference, classes, functools.partial(labels_from_probs, threshold=threshold))
    frame = validate_submission(cfg, frame, reference, classes)
    out = _output_path(cfg, as_path(run_dirs[0]))
    write_csv(frame, out)
    names = classes if len(classes) == class_probs.shape[1] else [str(c) for c in range(class_probs.shape[1])]
    probs_frame = pd.DataFrame(class_probs, columns=names)
    probs_frame.insert(0, cfg.comp.submission.id_column, ids)
    write_csv(probs_frame, out.parent / PROBABILITIES_FILE)
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
    from kit.evaluate import score

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


def _true_labels(targets: np.ndarray) -> np.ndarray:
    """Class indices from pipeline targets: (B, 1) probability of class 1, or (B, C) one-hot/soft."""
    targets = np.asarray(targets)
    if targets.ndim == 1 or targets.shape[1] == 1:
        return (targets.reshape(-1) >= 0.5).astype(np.int64)
    return targets.argmax(axis=1).astype(np.int64)
