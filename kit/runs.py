"""Run folders in one place: creating them, finding them (latest, resumable, a k-fold parent), reading what they hold.

A run lives in ``<run.root>/<comp>/<model>/<run-id>[/fold<k>]/``::

    config.yaml      the resolved config it was trained with (what ``kit.run_model.run_config`` reads back)
    records.json     the records it trained on: folder, fingerprint, data root, split plan (kit.provenance)
    versions.json    library versions
    checkpoint/      resume state: ``state.json`` + the weights it names (``read_state``)
    best.keras       the best epoch of the whole run (what ``kit.run_model.load_model`` loads, checked)
    threshold.json   binary: the F1-best threshold (``kit evaluate``, or a k-fold parent's over its OOF predictions)
    kfold.json       only on a k-fold parent: marks it (its folds are the ``fold<k>/`` sub-runs)
    done             written last, only beside a best.keras: the run is finished (``latest_run``), never resumed
    lock             held (flock) by the one process writing the run (``writing``); it names that process's pid

Training, k-fold, evaluation and prediction all find runs here; :mod:`kit.run_model` reads one for use (its settings
and its model, checked against each other and the current settings). None reaches into another for them.
"""

from __future__ import annotations

import contextlib
import platform
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from kit.config import from_yaml, readable_yaml, to_yaml
from kit.config.checks import check_folders
from kit.errors import KitError
from kit.io import URLPath, as_path, atomic_write, local_copy, read_json, write_json
from kit.locks import exclusive

if TYPE_CHECKING:
    from kit.config import Config
    from kit.data.manifest import Manifest

DONE = "done"
STATE = "checkpoint/state.json"
KFOLD = "kfold.json"
THRESHOLD_FILE = "threshold.json"
BEST_MODEL = "best.keras"
CONFIG_FILE = "config.yaml"
VERSIONS_FILE = "versions.json"
RECORDS_FILE = "records.json"
LOCK_FILE = "lock"
# Settings a --resume may change: where things are, how the run is shown or driven, what comes after training.
# Every other one shapes the model or how and on what it learns (epochs too: a finished phase is never extended),
# so a resume with another value is refused.
RESUME_FREE_SETTINGS = (
    "run", "predict", "kaggle", "tuner", "audit", "train.verbose", "train.strategy",
    "comp.slug", "comp.source", "comp.sample_submission", "comp.solution", "comp.submission", "comp.image_sizes",
    "comp.code_competition",
    "data.root", "data.records_root", "data.workers", "data.shard_mb",
)  # fmt: skip
_FOLD_DIR = re.compile(r"^fold[_-]?(\d+)$")
TRAIN_FIRST = "train first (kit train) or pass run=<a run directory>"


# --- where runs live --------------------------------------------------------------------------------------


def runs_of(cfg: Config) -> Path | URLPath:
    """``<run.root>/<comp>/<model>``: where this comp/model's runs live (a gs:// root stays a URL); the names checked
    again here for configs edited in Python."""
    check_folders(cfg)
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
    while not _claim(root / run_id):  # two runs started in the same second
        n += 1
        run_id = f"{stamp}-{n}"
    # Folds of one k-fold run share a parent only through run.id: the k-fold driver sets it once.
    return run_dir_of(root / run_id, fold)


def _claim(run_dir: Path | URLPath) -> bool:
    """Create ``run_dir`` if no other run has it: a local mkdir is atomic, so two runs never share a timestamp."""
    if isinstance(run_dir, URLPath):
        return not run_dir.exists()
    run_dir.parent.mkdir(parents=True, exist_ok=True)
    try:
        run_dir.mkdir()
    except FileExistsError:
        return False
    return True


@contextlib.contextmanager
def writing(run_dir: Path | URLPath) -> Iterator[None]:
    """Hold the run folder's write lock for the block: one writer a run (training, resuming, a k-fold driver).

    An flock on ``run_dir/lock`` (:func:`kit.locks.exclusive`); a second writer gets one line naming the live one.
    Readers (predict, evaluate) never take it. gs:// run folders have no locks: there the one-writer rule is the user's.
    """
    if isinstance(run_dir, URLPath):
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)

    def busy(holder: str) -> KitError:
        return KitError(
            f"run {run_dir} is being written by {holder}",
            "wait for that process to finish (or stop it), then rerun; kit predict and kit evaluate may read it meanwhile",
        )

    with exclusive(run_dir / LOCK_FILE, busy, record_pid=True):
        yield


def versions() -> dict[str, str]:
    """Library versions recorded in ``versions.json``."""
    import keras
    import numpy as np
    import tensorflow as tf

    from kit.version import __version__

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "numpy": np.__version__,
        "kit": __version__,
    }


def write_run_files(cfg: Config, run_dir: Path | URLPath, manifest: Manifest | None = None) -> None:
    """Create ``run_dir`` with ``config.yaml``, ``versions.json`` and (given the records' manifest) ``records.json``."""
    text = readable_yaml(cfg, run_dir / CONFIG_FILE)  # checked first: never a config.yaml kit cannot read back
    run_dir.mkdir(parents=True, exist_ok=True)
    atomic_write(run_dir / CONFIG_FILE, text)
    write_json(run_dir / VERSIONS_FILE, versions())
    if manifest is not None:
        write_json(run_dir / RECORDS_FILE, manifest.reference())


def mark_done(run_dir: Path | URLPath) -> None:
    """Write ``done``: the run is finished (``latest_run`` finds it, ``find_resumable`` never resumes it)."""
    atomic_write(run_dir / DONE, time.strftime("%Y-%m-%d %H:%M:%S\n"))


def finish_run(run_dir: Path | URLPath) -> None:
    """``mark_done`` for a trained run, which must hold its ``best.keras``: one without is left unfinished, and said so."""
    if not (run_dir / BEST_MODEL).is_file():
        raise KitError(
            f"run {run_dir} ended without a {BEST_MODEL} (no epoch ended with a finite monitored metric): not marked done",
            "train at least one epoch (train.epochs >= 1); if the loss in its history.csv is NaN, lower train.learning_rate",
        )
    mark_done(run_dir)


def check_resume_settings(cfg: Config, run_dir: Path | URLPath) -> None:
    """Refuse a resume whose settings differ from the run's ``config.yaml`` in anything that shapes the model or the
    data (all but ``RESUME_FREE_SETTINGS``): one line naming them, before anything in the run is touched."""
    path = as_path(run_dir) / CONFIG_FILE
    with local_copy(path) as local:
        saved = _flat_settings(from_yaml(local))
    now = _flat_settings(cfg)
    free = tuple(f"{name}." for name in RESUME_FREE_SETTINGS)
    differ = [k for k in sorted(saved.keys() | now.keys()) if saved.get(k) != now.get(k) and not f"{k}.".startswith(free)]
    if differ:
        shown = "; ".join(f"{k}={saved.get(k)!r} there, {now.get(k)!r} now" for k in differ[:4])
        raise KitError(
            f"cannot resume {run_dir} with other settings: {shown}{f' (and {len(differ) - 4} more)' if len(differ) > 4 else ''}",
            "resume with the settings it was started with (its config.yaml), or drop --resume to start a new run",
        )


def _flat_settings(cfg: Config | dict, prefix: str = "") -> dict[str, Any]:
    """Every setting as ``section.key``: the YAML a run saves, read back, so both sides compare as plain values."""
    tree = yaml.safe_load(to_yaml(cfg)) if not isinstance(cfg, dict) else cfg
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        flat.update(_flat_settings(value, f"{name}.") if isinstance(value, dict) and value else {name: value})
    return flat


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
    """The newest finished run of comp/model that has a model (a k-fold parent once all its folds and its CV are done)."""
    root = runs_of(cfg)
    listed = [d for d in root.iterdir() if d.is_dir() and (d / DONE).is_file()] if root.is_dir() else []
    finished = [d for d in listed if _has_model(d)]  # a `done` without best.keras (older kits wrote one) cannot predict
    newest = _newest(finished)
    if newest is None:
        raise KitError(
            f"no finished run of {cfg.comp.name}/{cfg.model.name} in {root}",
            f"run `kit train comp={cfg.comp.name} model={cfg.model.name}` first",
        )
    return newest


def _has_model(run_dir: Path) -> bool:
    """``best.keras`` in the run, or in each fold of a k-fold parent."""
    if (run_dir / KFOLD).is_file():
        folds = [d for d in run_dir.iterdir() if d.is_dir() and _FOLD_DIR.match(d.name)]
        return bool(folds) and all((d / BEST_MODEL).is_file() for d in folds)
    return (run_dir / BEST_MODEL).is_file()


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


def start_parent(cfg: Config, parent: Path | URLPath, marker: dict[str, Any], manifest: Manifest | None = None) -> None:
    """Make ``parent`` (from ``new_run_dir``) a k-fold parent run: the run files and ``kfold.json`` holding ``marker``."""
    write_run_files(cfg, parent, manifest)
    write_json(parent / KFOLD, marker)


def is_parent(run_dir: Path | URLPath) -> bool:
    """True for a k-fold parent run (its folds are sub-runs)."""
    return (as_path(run_dir) / KFOLD).is_file()


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
            raise KitError(f"run directory {run_dir} {why}", TRAIN_FIRST)
    return runs


# --- reading one ------------------------------------------------------------------------------------------


def read_threshold(run_dir: Path | URLPath) -> float:
    """The F1-best threshold ``kit evaluate`` (or the k-fold driver) saved for a run."""
    path = as_path(run_dir) / THRESHOLD_FILE
    if not path.is_file():
        raise KitError(
            f"threshold=auto but {path} does not exist", f"run `kit evaluate run={run_dir}` first, or set threshold=0.5"
        )
    return float(read_json(path)["threshold"])


def write_threshold(run_dir: Path | URLPath, threshold: float, chosen_on: str, examples: int, honest: dict | None) -> None:
    """Save the F1-best ``threshold``, chosen on ``examples`` rows of ``chosen_on`` (val | oof), with the honest score
    of that rule (kit.scores: chosen on other rows than those scored; None if too few rows); no flattering in-sample F1."""
    record = {"threshold": threshold, "rule": "F1-best", "chosen_on": chosen_on, "examples": examples, "honest_score": honest}
    write_json(as_path(run_dir) / THRESHOLD_FILE, record)


def threshold_runs(run_dirs: Sequence[Path]) -> list[Path]:
    """Where ``threshold=auto`` looks: a run dir's own threshold.json (a k-fold parent's is the F1-best over
    its out-of-fold predictions, see kit.train.kfold), else those of the runs it expands to."""
    sources: list[Path] = []
    for run_dir in run_dirs:
        run_dir = as_path(run_dir)
        sources.extend([run_dir] if (run_dir / THRESHOLD_FILE).is_file() else expand_runs([run_dir]))
    return sources
