"""The trained runs an inference kernel predicts with, packed as a Kaggle dataset folder.

``kit kernel build --from-run RUN`` (or ``runs=a,b`` for an ensemble) copies what ``kit predict`` reads from
each run into ``build/model/<comp>/<name>/``: ``best.keras``, ``config.yaml``, ``threshold.json`` and the
run's scores, and for a k-fold parent the same of every ``fold<k>/``, so ``kit.runs.expand_runs`` finds the
members inside the kernel exactly as here. Checkpoints, TensorBoard logs and predictions stay behind. The
threshold the submission will use is resolved here, once, and written into ``kit-model.json`` beside them.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path

from kit.errors import KitError
from kit.inference import resolve_threshold
from kit.io import as_path, write_json
from kit.runs import BEST_MODEL, CONFIG_FILE, KFOLD, THRESHOLD_FILE, expand_runs, run_fold

SUMMARY_FILE = "kit-model.json"
# What an inference kernel needs of a run (model, settings, threshold) and what tells the user how good it was.
RUN_FILES = (BEST_MODEL, CONFIG_FILE, THRESHOLD_FILE, KFOLD, "metrics.json", "cv.json", "versions.json")


def _copy_run(run_dir: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if (run_dir / name).is_file():
            shutil.copy2(run_dir / name, target / name)
    for fold in sorted(run_dir.iterdir()):
        if fold.is_dir() and run_fold(fold) is not None and (fold / BEST_MODEL).is_file():
            _copy_run(fold, target / fold.name)


def member_names(run_dirs: Sequence[Path]) -> list[str]:
    """Folder names inside the dataset: ``<n>-<run id>``, so two runs with one id (two models) never collide."""
    return [f"{i}-{as_path(run).name}" for i, run in enumerate(run_dirs)]


def chosen_threshold(binary: bool, setting: str, run_dirs: Sequence[Path]) -> float | None:
    """The threshold a binary submission uses: ``predict.threshold`` as a number, or (auto) the mean of the runs'
    saved thresholds, as ``kit predict`` resolves it; None for more than two classes (argmax)."""
    return resolve_threshold(setting, run_dirs) if binary else None


def pack(run_dirs: Sequence[Path], folder: Path, threshold: float | None, comp: str) -> list[str]:
    """Copy the runs into a fresh ``folder``; return the member folder names (what the kernel passes as runs=)."""
    runs = [as_path(r) for r in run_dirs]
    members = expand_runs(runs)  # a KitError naming a run without best.keras, before anything is written
    if any(not isinstance(r, Path) for r in runs):
        raise KitError("runs on gs:// cannot be packed for a kernel", "copy the run folder to this machine first")
    # Packed beside, then renamed into place: a kill while copying leaves no truncated best.keras under the final name.
    staging = folder.with_name(f".{folder.name}.packing")
    shutil.rmtree(staging, ignore_errors=True)
    names = member_names(runs)
    for run, name in zip(runs, names, strict=True):
        _copy_run(run, staging / name)
    origins = {name: str(run) for name, run in zip(names, runs, strict=True)}
    write_json(staging / SUMMARY_FILE, {"comp": comp, "runs": origins, "models": len(members), "threshold": threshold})
    shutil.rmtree(folder, ignore_errors=True)
    os.replace(staging, folder)
    return names
