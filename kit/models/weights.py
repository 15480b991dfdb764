"""Backbone weight files: the Keras cache, ``model.weights`` resolved to a file, and files that are not what they seem.

``model.weights``:

- ``imagenet``: the row's notop file (:mod:`kit.models.backbones`) in the Keras cache, ``$KERAS_HOME/models/``
  or ``~/.keras/models/`` (the rule ``keras.utils.get_file`` documents for ``cache_dir=None``; read at each call).
  A cached file is checked against the row's hash, as Keras does; a missing one is downloaded there with
  ``keras.utils.get_file``. Offline (no connection, or ``KIT_OFFLINE=1``) a missing file is a KitError naming
  the file, the folder and the alternatives; no network timeout.
- ``none``: random initialisation (training from scratch; also what the tests use).
- a path: a weights file for the **backbone only**: a Keras 3 ``.weights.h5`` written by
  ``get_backbone(model).save_weights(...)``, or Keras' own notop ``.h5`` (e.g. ``efficientnetb4_notop.h5``
  attached to a Kaggle kernel as a dataset).

A wrong file (a directory, an empty file, not HDF5, another backbone's notop file, one whose hash differs) is
one KitError line naming the file and the backbone it fits, found by its hash among the table's rows.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from kit.errors import KitError
from kit.models.backbones import BACKBONES, Backbone

OFFLINE_ENV = "KIT_OFFLINE"  # set to 1 to never try a download (e.g. Kaggle kernels without internet)
HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"  # the first 8 bytes of every HDF5 file (h5py writes no user block)
CHUNK = 1 << 20
MISSING = "does not exist"


def weights_cache_dir() -> Path:
    """Where Keras caches application weights: ``$KERAS_HOME/models`` (read now), else ``~/.keras/models``."""
    home = os.environ.get("KERAS_HOME") or "~/.keras"
    return Path(home).expanduser() / "models"


def online(host: str = "storage.googleapis.com", timeout: float = 3.0) -> bool:
    """Whether a download can be tried: not when KIT_OFFLINE is set or the host cannot be reached."""
    if os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


# --- what a file is -----------------------------------------------------------------------------------


def file_problem(path: Path) -> str | None:
    """Why ``path`` cannot be a weights file (``"is a directory"``, ``"is empty"``, ...), or None if it may be."""
    if path.is_dir():
        return "is a directory"
    if not path.is_file():
        return MISSING
    with path.open("rb") as handle:
        head = handle.read(len(HDF5_SIGNATURE))
    if not head:
        return "is empty"
    if head != HDF5_SIGNATURE:
        return "is not an HDF5 file"
    return None


def digests(path: Path) -> set[str]:
    """The file's md5 and sha256 (hex), read once: Keras publishes one or the other per file."""
    md5, sha256 = hashlib.md5(usedforsecurity=False), hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            md5.update(chunk)
            sha256.update(chunk)
    return {md5.hexdigest(), sha256.hexdigest()}


def _row_with_digest(found: set[str], rows: Iterable[Backbone] | None) -> Backbone | None:
    return next((row for row in (BACKBONES.values() if rows is None else rows) if row.file_hash in found), None)


def fitting_backbone(path: Path, rows: Iterable[Backbone] | None = None) -> Backbone | None:
    """The row whose Keras notop file ``path`` is (by hash), or None."""
    return _row_with_digest(digests(path), rows)


def fits(path: Path, rows: Iterable[Backbone] | None = None) -> str:
    """Which backbone ``path`` fits, in words, for an error message."""
    if file_problem(path) is not None:
        return "it fits no backbone"
    row = fitting_backbone(path, rows)
    return f"it is the {row.name} notop file ({row.weights_file})" if row else "it is none of the table's Keras notop files"


# --- model.weights to a file ----------------------------------------------------------------------------


def check_cached(path: Path, spec: Backbone, rows: Iterable[Backbone] | None = None) -> None:
    """Refuse a cached ``spec.weights_file`` that is not Keras' file for ``spec`` (one line, the backbone it fits)."""
    hint = f"delete {path} (kit downloads it again when online) or copy Keras' {spec.weights_file} there (see `kit weights list`)"
    problem = file_problem(path)
    if problem is not None:
        raise KitError(f"{path} {problem}: it fits no backbone, and {spec.name} needs Keras' {spec.weights_file} there", hint)
    found = digests(path)
    if spec.file_hash in found:
        return
    other = _row_with_digest(found, rows)
    if other is not None:
        raise KitError(f"{path} is the {other.name} notop file ({other.weights_file}), not the {spec.name} weights", hint)
    raise KitError(f"{path} is not Keras' {spec.weights_file} for {spec.name} (its hash differs: truncated or replaced?)", hint)


def imagenet_weights(spec: Backbone) -> Path:
    """The cached ImageNet notop weights file for ``spec``, checked, or downloaded into the Keras cache."""
    cache = weights_cache_dir()
    cached = cache / spec.weights_file
    if cached.exists():
        check_cached(cached, spec)
        return cached
    hint = (
        f"download {spec.weights_url} into {cache}/ (or point KERAS_HOME at a folder with models/{spec.weights_file}), "
        f"or set model.weights=<path to {spec.weights_file} or a .weights.h5>, or model.weights=none"
    )
    if not online():
        raise KitError(
            f"ImageNet weights for {spec.name} are not cached ({spec.weights_file} is not in {cache}) and there is no internet",
            hint,
        )
    from keras.utils import get_file

    # get_file silently falls back to /tmp/.keras when the folder is missing; create it instead.
    with contextlib.suppress(OSError):
        cache.mkdir(parents=True, exist_ok=True)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            path = get_file(
                spec.weights_file, spec.weights_url, cache_subdir="models", file_hash=spec.file_hash, cache_dir=str(cache.parent)
            )
    except Exception as exc:  # noqa: BLE001 - any download or hash failure is the same fix for the user
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise KitError(f"could not get ImageNet weights {spec.weights_file} for {spec.name}: {reason}", hint) from None
    return Path(path)


RANDOM_INIT = ("", "none", "null", "random")  # the model.weights words for no weights at all


def is_random_init(weights: str) -> bool:
    """Whether ``model.weights`` asks for no weights (random initialisation: training from scratch)."""
    return str(weights or "").strip().lower() in RANDOM_INIT


def resolve_weights(weights: str, spec: Backbone) -> Path | None:
    """``model.weights`` as a file to load into the backbone, or None for random initialisation."""
    value = str(weights or "").strip()
    if is_random_init(value):
        return None
    if value.lower() == "imagenet":
        return imagenet_weights(spec)
    path = Path(value).expanduser()
    problem = file_problem(path)
    if problem == MISSING:
        raise KitError(
            f"model.weights={value}: no such file",
            f"give imagenet, none, or the path of a backbone weights file (.weights.h5, or Keras' {spec.weights_file})",
        )
    if problem is not None:
        raise KitError(
            f"model.weights={value} {problem}: it fits no backbone ({spec.name} needs a weights file)",
            f"give the path of {spec.weights_file} or of a .weights.h5 saved with get_backbone(model).save_weights",
        )
    if not path.name.endswith((".h5", ".hdf5")):
        raise KitError(
            f"model.weights={value} is not an .h5 weights file",
            "save backbone weights with get_backbone(model).save_weights('x.weights.h5')",
        )
    return path


# --- the cache, row by row (kit weights list) -------------------------------------------------------------


@dataclass(frozen=True)
class CachedFile:
    row: Backbone
    path: Path
    state: str  # "present", "missing", or what is wrong ("is empty", "is a directory", ...)
    size: int  # bytes; 0 unless a file is there


def cache_listing(verify: bool = False) -> list[CachedFile]:
    """Every row's notop file in the Keras cache: whether it is there and its size; ``verify`` also checks
    each present file's hash (reads every file: seconds for the large ones)."""
    cache = weights_cache_dir()
    listing = []
    for row in BACKBONES.values():
        path = cache / row.weights_file
        problem = file_problem(path)
        state = "missing" if problem == MISSING else problem or "present"
        if state == "present" and verify:
            other = fitting_backbone(path)
            state = "verified" if other is row else (f"is the {other.name} file" if other else "hash differs")
        listing.append(CachedFile(row, path, state, path.stat().st_size if path.is_file() else 0))
    return listing
