"""Run folders in one place: creating them, finding them (latest, resumable, a k-fold parent), reading what they hold.

A run lives in ``<run.root>/<comp>/<model>/<run-id>[/fold<k>]/``::

    config.yaml      the resolved config it was trained with (what ``run_config`` reads back)
    versions.json    library versions
    checkpoint/      resume state: ``state.json`` + the weights it names (``read_state``)
    best.keras       the best epoch of the whole run (what ``load_model`` loads)
    threshold.json   binary: the F1-best threshold (``kit evaluate``, or a k-fold parent's over its OOF predictions)
    kfold.json       only on a k-fold parent: marks it (its folds are the ``fold<k>/`` sub-runs)
    done             written last: the run is finished (``latest_run``), never resumed (``find_resumable``)

Training, k-fold, evaluation and prediction all find and read runs here; none reaches into another for them.
"""

from __future__ import annotations

import dataclasses
import importlib
import platform
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.config import from_yaml, to_yaml
from kit.errors import KitError
from kit.io import URLPath, as_path, atomic_write, local_copy, read_json, write_json

if TYPE_CHECKING:
    import keras

    from kit.config import Config

DONE = "done"
STATE = "checkpoint/state.json"
KFOLD = "kfold.json"
THRESHOLD_FILE = "threshold.json"
BEST_MODEL = "best.keras"
CONFIG_FILE = "config.yaml"
VERSIONS_FILE = "versions.json"
_FOLD_DIR = re.compile(r"^fold[_-]?(\d+)$")
_TRAIN_FIRST = "train first (kit train) or pass run=<a run directory>"


# --- where runs live --------------------------------------------------------------------------------------


def runs_of(cfg: Config) -> Path | URLPath:
    """``<run.root>/<comp>/<model>``: where this comp/model's runs live (a gs:// root stays a URL)."""
    return as_path(cfg.run.root) / cfg.comp.name / cfg.model.name


def run_dir_of(base: Path | URLPath, fold: int | None) -> Path | URLPath:
    """``base/fold<k>`` for fold ``k`` of a k-fold run, else ``base`` itself."""
    return base / f"fold{fold}" if fold is not None else base


def run_fold(run_dir: Path | URLPath) -> int | None:
    """The fold number of a k-fold sub-run (``.../fold3``), else None."""
    match = _FOLD_DIR.match(Path(run_dir).name)
    return int(match.group(1)) if match else None


def _started(path: Path | URLPath) -> bool:
    return (path / CONFIG_FILE).is_file()


def _newest(paths: list[Path]) -> Path | None:
    return max(paths, key=lambda p: (p.stat().st_mtime, p.name), default=None)


# --- creating one -----------------------------------------------------------------------------------------


def new_run_dir(cfg: Config, fold: int | None = None) -> Path:
    """``<runs>/<run.id or timestamp>[/fold<k>]``; an existing run is never reused without --resume."""
    root = runs_of(cfg)
    if cfg.run.id:
        run_dir = run_dir_of(root / cfg.run.id, fold)
        if _started(run_dir):
            finished = (run_dir / DONE).is_file()
            raise KitError(
                f"run {run_dir} already exists{' and is finished' if finished else ''}",
                "pick another run.id" + ("" if finished else ", or add --resume to continue it"),
            )
        return run_dir
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_id, n = stamp, 1
    while (root / run_id).exists():  # two runs started in the same second
        n += 1
        run_id = f"{stamp}-{n}"
    # Folds of one k-fold run share a parent only through run.id: the k-fold driver sets it once.
    return run_dir_of(root / run_id, fold)


def versions() -> dict[str, str]:
    """Library versions recorded in ``versions.json``."""
    import keras
    import numpy as np
    import tensorflow as tf

    import kit

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "kit": getattr(kit, "__version__", "unknown"),
    }


def write_run_files(cfg: Config, run_dir: Path | URLPath) -> None:
    """Create ``run_dir`` with the files every run starts with: ``config.yaml`` and ``versions.json``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / CONFIG_FILE, to_yaml(cfg))
    write_json(run_dir / VERSIONS_FILE, versions())


def mark_done(run_dir: Path | URLPath) -> None:
    """Write ``done``: the run is finished (``latest_run`` finds it, ``find_resumable`` never resumes it)."""
    atomic_write(run_dir / DONE, time.strftime("%Y-%m-%d %H:%M:%S\n"))


# --- finding one ------------------------------------------------------------------------------------------


def find_resumable(cfg: Config, fold: int | None = None) -> Path | None:
    """The newest started, unfinished run of comp/model (for ``fold``), or None."""
    root = runs_of(cfg)
    if cfg.run.id:
        candidates = [run_dir_of(root / cfg.run.id, fold)]
    else:
        candidates = [run_dir_of(d, fold) for d in root.iterdir() if d.is_dir()] if root.is_dir() else []
    # A k-fold parent is resumed by the k-fold driver (find_parent), never as one run.
    return _newest([c for c in candidates if _started(c) and not (c / DONE).is_file() and not (c / KFOLD).is_file()])


def latest_run(cfg: Config) -> Path:
    """The newest finished run of comp/model (a k-fold parent once all its folds and its CV are done)."""
    root = runs_of(cfg)
    finished = [d for d in root.iterdir() if d.is_dir() and (d / DONE).is_file()] if root.is_dir() else []
    newest = _newest(finished)
    if newest is None:
        raise KitError(
            f"no finished run of {cfg.comp.name}/{cfg.model.name} in {root}",
            f"run `kit train comp={cfg.comp.name} model={cfg.model.name}` first",
        )
    return newest


def read_state(run_dir: Path | URLPath) -> dict | None:
    """The resume point of ``run_dir`` (``checkpoint/state.json``), or None before the first epoch ended."""
    path = as_path(run_dir) / STATE
    if not path.is_file():
        return None
    state = read_json(path)
    if not (path.parent / state["weights"]).is_file():
        raise KitError(
            f"{path} names {state['weights']}, which is missing", f"delete {path.parent} to restart that run from scratch"
        )
    return state


# --- k-fold parents ---------------------------------------------------------------------------------------


def find_parent(cfg: Config) -> Path | URLPath | None:
    """The newest started, unfinished k-fold parent of comp/model (``run.id`` when set), or None."""
    root = runs_of(cfg)
    listed = [d for d in root.iterdir() if d.is_dir()] if not cfg.run.id and root.is_dir() else []
    candidates = [root / cfg.run.id] if cfg.run.id else listed
    return _newest([c for c in candidates if (c / KFOLD).is_file() and not (c / DONE).is_file()])


def start_parent(cfg: Config, marker: dict[str, Any]) -> Path | URLPath:
    """A new k-fold parent run (refuses an existing ``run.id``): the run files and ``kfold.json`` holding ``marker``."""
    parent = new_run_dir(cfg)
    write_run_files(cfg, parent)
    write_json(parent / KFOLD, marker)
    return parent


def read_parent(parent: Path | URLPath) -> dict[str, Any]:
    """What ``start_parent`` wrote into a k-fold parent's ``kfold.json``."""
    return read_json(parent / KFOLD)


def expand_runs(run_dirs: Sequence[Path]) -> list[Path]:
    """Run directories holding a ``best.keras``; a k-fold parent expands to its ``fold*`` sub-runs."""
    runs: list[Path] = []
    for run_dir in run_dirs:
        run_dir = as_path(run_dir)  # gs:// run dirs stay URLs
        folds = sorted(
            (d for d in run_dir.glob("fold*") if d.is_dir() and _FOLD_DIR.match(d.name) and (d / BEST_MODEL).is_file()),
            key=lambda d: int(_FOLD_DIR.match(d.name).group(1)),
        )
        if (run_dir / BEST_MODEL).is_file():
            runs.append(run_dir)
        runs.extend(folds)
        if not (run_dir / BEST_MODEL).is_file() and not folds:
            why = "does not exist" if not run_dir.exists() else f"has no {BEST_MODEL} (nor fold*/{BEST_MODEL})"
            raise KitError(f"run directory {run_dir} {why}", _TRAIN_FIRST)
    return runs


# --- reading one ------------------------------------------------------------------------------------------


def run_config(cfg: Config, run_dir: Path | URLPath) -> Config:
    """``cfg`` with the model (architecture, image size) and folds the run was trained with.

    Everything else (data paths, predict settings) stays from the current command line, so an
    ensemble of models with different image sizes reads each its own records. A fold reads its parent's
    config when it has none of its own.
    """
    for candidate in (as_path(run_dir) / CONFIG_FILE, as_path(run_dir).parent / CONFIG_FILE):
        if candidate.is_file():
            with local_copy(candidate) as local:  # from_yaml reads local files
                saved = from_yaml(local)
            data = dataclasses.replace(cfg.data, folds=saved.data.folds)
            comp = cfg.comp if cfg.comp.classes else dataclasses.replace(cfg.comp, classes=list(saved.comp.classes))
            return dataclasses.replace(cfg, model=saved.model, data=data, comp=comp)
    return cfg


def load_model(run_dir: Path | URLPath) -> keras.Model:
    """Load ``best.keras`` without compiling (metrics and optimizer are not needed to predict)."""
    import keras

    _register_custom_objects()
    path = as_path(run_dir) / BEST_MODEL
    if not path.is_file():
        raise KitError(f"{path} does not exist", _TRAIN_FIRST)
    return keras.models.load_model(str(path), compile=False)


def _register_custom_objects() -> None:
    """Import the model modules so any custom layer they register is known to the loader."""
    from kit.models.registry import MODELS

    for entry in MODELS.values():
        importlib.import_module(entry.builder.split(":")[0])


def read_threshold(run_dir: Path | URLPath) -> float:
    """The F1-best threshold ``kit evaluate`` (or the k-fold driver) saved for a run."""
    path = as_path(run_dir) / THRESHOLD_FILE
    if not path.is_file():
        raise KitError(
            f"threshold=auto but {path} does not exist", f"run `kit evaluate run={run_dir}` first, or set threshold=0.5"
        )
    return float(read_json(path)["threshold"])


def write_threshold(run_dir: Path | URLPath, threshold: float, f1: float, split: str, examples: int) -> None:
    """Save the F1-best ``threshold`` of a run (chosen on ``examples`` examples of ``split``)."""
    write_json(as_path(run_dir) / THRESHOLD_FILE, {"threshold": threshold, "f1": f1, "split": split, "examples": examples})


def threshold_runs(run_dirs: Sequence[Path]) -> list[Path]:
    """Where ``threshold=auto`` looks: a run dir's own threshold.json (a k-fold parent's is the F1-best over
    its out-of-fold predictions, see kit.train.kfold), else those of the runs it expands to."""
    sources: list[Path] = []
    for run_dir in run_dirs:
        run_dir = as_path(run_dir)
        sources.extend([run_dir] if (run_dir / THRESHOLD_FILE).is_file() else expand_runs([run_dir]))
    return sources
