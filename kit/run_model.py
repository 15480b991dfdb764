"""A run put to use: the settings it was trained with and its model file, checked against each other and against
the current settings wherever a run is used (predict, evaluate, export, kernel build, k-fold's out-of-fold
predictions, kit runs).

A run folder is input like any other: its best.keras may have been copied from another run, comp.classes may have
been reordered since it trained, its records rebuilt with other classes. Each once gave silent, wrong output (a
reordered class list swapped every label of a submission; an export named classes the model never had). So:

- :func:`load_model` checks the model file against the run's own config.yaml: its outputs (one for two classes,
  else one per class), its input size, and its name when it is one of kit's models;
- :func:`run_config` checks the current settings against the run's: the competition, and comp.classes when both
  name them (the same names in the same order);
- :func:`check_records` checks the records a run is applied to: the run's classes and image size.
"""

from __future__ import annotations

import dataclasses
import importlib
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING

from kit.config import from_yaml
from kit.errors import KitError, listing
from kit.io import URLPath, as_path, local_copy
from kit.models.hub_backbones import hub_row
from kit.runs import BEST_MODEL, CONFIG_FILE, TRAIN_FIRST

if TYPE_CHECKING:
    import keras

    from kit.config import Config
    from kit.data.manifest import Manifest

RETRAIN = "copy the run's own best.keras back, or retrain it (kit train)"


def saved_config(run_dir: Path | URLPath) -> Config | None:
    """The settings a run was trained with: its config.yaml, or a fold's parent's; None when it has neither."""
    for candidate in (as_path(run_dir) / CONFIG_FILE, as_path(run_dir).parent / CONFIG_FILE):
        if candidate.is_file():
            with local_copy(candidate) as local:  # from_yaml reads local files
                return from_yaml(local)
    return None


def run_config(cfg: Config, run_dir: Path | URLPath, *, with_data: bool = True) -> Config:
    """``cfg`` with the model (architecture, image size), split plan (folds, val fraction, seed), resize policy
    (data.resize, data.max_side) and classes the run was trained with; when the run is applied to the current
    competition's data (``with_data``: predict, evaluate, kernels, k-fold), the current settings checked against the
    run's first (:func:`check_run_settings`). Export reads no data: it needs none.

    Everything else (data paths, predict settings) stays from the current command line, so an ensemble of models
    with different image sizes or splits reads each its own records.
    """
    saved = saved_config(run_dir)
    if saved is None:
        return cfg
    if with_data:
        check_run_settings(cfg, saved, run_dir)
    split = {key: getattr(saved.data, key) for key in ("folds", "val_fraction", "seed", "resize", "max_side")}
    data = dataclasses.replace(cfg.data, **split)
    comp = cfg.comp if cfg.comp.classes else dataclasses.replace(cfg.comp, classes=list(saved.comp.classes))
    return dataclasses.replace(cfg, model=saved.model, data=data, comp=comp)


def settings_mismatch(cfg: Config, saved: Config) -> str:
    """How the current settings disagree with the run's ('' when they do not): another competition, or comp.classes
    (when both name them) that are other names, or the same names in another order, which would swap every label."""
    if saved.comp.name != cfg.comp.name:
        return f"trained on competition {saved.comp.name}, not {cfg.comp.name}"
    given, trained = [str(c) for c in cfg.comp.classes], [str(c) for c in saved.comp.classes]
    if given and trained and given != trained:
        reordered = sorted(given) == sorted(trained)
        how = "the same names in another order: every label would be swapped" if reordered else "other classes"
        return f"trained on classes [{listing(trained)}], comp.classes now [{listing(given)}]: {how}"
    return ""


def check_run_settings(cfg: Config, saved: Config, run_dir: Path | URLPath) -> None:
    """One KitError when the current settings disagree with the run's (:func:`settings_mismatch`)."""
    if mismatch := settings_mismatch(cfg, saved):
        raise KitError(
            f"run {run_dir} does not fit these settings: {mismatch}",
            "use a run of this competition; give comp.classes in the run's order (or leave it empty), or retrain",
        )


def load_model(run_dir: Path | URLPath) -> keras.Model:
    """Load ``best.keras`` without compiling (metrics and optimizer are not needed to predict), checked against the
    run's config.yaml (:func:`check_model_file`).

    Keras's safe_mode stays on: a file holding code (a Lambda layer) is refused, never run. A file that is
    truncated, not a Keras file or refused is one line naming it."""
    import keras

    from kit.models.hub import keras_hub

    _register_custom_objects()
    path = as_path(run_dir) / BEST_MODEL
    if not path.is_file():
        raise KitError(f"{path} does not exist", TRAIN_FIRST)
    saved = saved_config(run_dir)
    if saved is not None and hub_row(saved.model.name) is not None:
        keras_hub()  # registers keras-hub's classes with Keras' loader; imported only for a run of a hub row
    try:
        model = keras.models.load_model(str(path), compile=False, safe_mode=True)
    except Exception as exc:  # noqa: BLE001 - whatever a damaged or hostile file raises inside Keras
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise KitError(
            f"{path} cannot be loaded as a Keras model ({type(exc).__name__}: {reason})",
            f"the file is truncated, not a best.keras, or holds code (refused by Keras safe_mode): retrain the run "
            f"(kit train), or copy a good {BEST_MODEL} there",
        ) from None
    if saved is not None:
        check_model_file(model, saved, path)
    return model


def check_model_file(model: keras.Model, saved: Config, path: Path | URLPath) -> None:
    """The model file against the run's settings: outputs for its classes, input for its image size, and (a model
    kit built carries its registry name) the architecture; one KitError naming every difference."""
    from kit.models.registry import MODELS

    problems = []
    classes = list(saved.comp.classes)
    outputs, wanted = int(model.output_shape[-1]), 1 if len(classes) == 2 else len(classes)
    if classes and outputs != wanted:
        problems.append(f"{outputs} output(s) where the run's {len(classes)} classes need {wanted}")
    height, width = tuple(model.input_shape)[1:3]
    size = int(saved.model.image_size)
    if height is not None and width is not None and (height, width) != (size, size):
        problems.append(f"a {height}x{width} input where the run's model.image_size is {size}")
    if model.name in MODELS and model.name != saved.model.name:
        problems.append(f"a {model.name} model where the run trained {saved.model.name}")
    if problems:
        raise KitError(f"{path} does not match its run's config.yaml: {'; '.join(problems)}", RETRAIN)


def check_records(run_cfg: Config, manifest: Manifest, run_dir: Path | URLPath) -> None:
    """The records a run predicts or is scored on hold the classes and image size it was trained with."""
    trained = [str(c) for c in run_cfg.comp.classes]
    if trained and list(manifest.classes) != trained:
        raise KitError(
            f"the records in {manifest.records_dir} hold classes [{listing(manifest.classes)}], run {run_dir} was trained "
            f"on [{listing(trained)}]",
            "rebuild the records with the run's classes (comp.classes=[...], kit records), or retrain on these records",
        )
    if int(manifest.image_size) != int(run_cfg.model.image_size):
        raise KitError(
            f"the records in {manifest.records_dir} are {manifest.image_size} px, "
            f"run {run_dir} takes {run_cfg.model.image_size} px",
            "build records for the run's model.image_size (kit records), or retrain",
        )


def model_file_problem(run_dir: Path) -> str:
    """Why the run's best.keras cannot be a Keras file ('' when it may be, or when there is none): a zip holding the
    model's config.json and weights. Cheap (no Keras), for listing many runs; :func:`load_model` is the full check."""
    path = Path(run_dir) / BEST_MODEL
    if not path.is_file():
        return ""
    try:
        with zipfile.ZipFile(path) as archive:
            names = set(archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return f"{BEST_MODEL} is not a Keras file"
    return "" if {"config.json", "model.weights.h5"} <= names else f"{BEST_MODEL} lacks the model's config or weights"


def _register_custom_objects() -> None:
    """Import the model modules so any custom layer they register is known to the loader (and kit's ColorJitter,
    the first layer of a model trained with augment.jitter_on=model, and the forensic streams' fixed layers)."""
    from kit.models.registry import MODELS

    for entry in MODELS.values():
        importlib.import_module(entry.builder.split(":")[0])
    importlib.import_module("kit.data.augment.layer")
    importlib.import_module("kit.models.forensic")
