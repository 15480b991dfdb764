"""Whole-pipeline jobs built from the stage functions: getting the data, training with records built on
demand, and the offline demo.

The demo is the README's first command: it must run on a fresh laptop without Kaggle credentials,
so it makes its competition from scikit-learn's bundled digits instead of downloading one. ``kit data
comp=demo`` writes the same folder, so ``make data train COMP=demo`` needs no Kaggle account either.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from kit.config import Config
from kit.config.files import confined
from kit.errors import KitError, quoted
from kit.inputs import read_csv
from kit.settings import load_settings

if TYPE_CHECKING:
    from kit.data.manifest import Manifest
    from kit.io import URLPath

DEMO_GOAL = 0.97
DEMO_IMAGE_SIZE = 32  # the pixel size of the demo's PNGs (the models resize them to model.image_size)


def fetch_data(cfg: Config) -> pd.DataFrame:
    """``kit data``: get the competition into ``data.root`` and write its checked index; return the index.

    The demo competition is written locally from scikit-learn's digits (seconds, no Kaggle account);
    any other competition is downloaded from Kaggle (cached).
    """
    from kit.data import sources

    if cfg.comp.name == "demo":
        from kit.data.demo import make_demo_competition

        make_demo_competition(Path(cfg.data.root), size=DEMO_IMAGE_SIZE)
    else:
        from kit.kaggle.download import download

        download(cfg)
    return sources.write_index(cfg)


def ensure_records(cfg: Config) -> Manifest:
    """The records ``cfg`` trains on, built first when they are missing or stale (the same build as ``kit
    records``: a no-op when the manifest's fingerprint matches the current index and settings).

    Records on a remote store (``gs://`` for TPUs) are only read: they are built where the images are. Records
    without their raw images (e.g. a Kaggle dataset holding only the records) are used as they are when they were
    built from ``data.root`` with this split plan, said so in one line naming them; otherwise (a wrong or forgotten
    ``data.root``) one line refuses them.
    """
    from kit.data.manifest import read_manifest, records_dir
    from kit.data.records import build_from_config
    from kit.data.schema import MANIFEST
    from kit.io import is_url

    folder = records_dir(cfg)
    if is_url(folder):
        return read_manifest(folder)
    if not Path(cfg.data.root).is_dir() and (Path(folder) / MANIFEST).is_file():
        manifest = read_manifest(folder)
        check_records_source(cfg, manifest)
        print(f"raw data {cfg.data.root} not found: using the records in {folder}, {manifest.describe_source()}")
        return manifest
    return build_from_config(cfg)


def check_records_source(cfg: Config, manifest: Manifest) -> None:
    """Records used without their raw images must say they were built from ``data.root`` with this split plan."""
    from kit.data.manifest import records_source

    wanted, built = records_source(cfg), manifest.source
    if not built.get("data_root"):
        raise KitError(
            f"raw data {cfg.data.root} not found, and the records in {manifest.records_dir} do not say which data they "
            "were built from (an older kit)",
            f"point data.root=... at the competition's folder (or get it with `kit data comp={cfg.comp.name}`)",
        )
    differ = ", ".join(f"{k} {built.get(k)} (settings: {v})" for k, v in wanted.items() if built.get(k) != v)
    if differ:
        raise KitError(
            f"raw data {cfg.data.root} not found, and the records in {manifest.records_dir} were built from other data: {differ}",
            f"set data.root={built['data_root']} to use them as they are, or point data.root=... at the competition's folder",
        )


def train(cfg: Config, resume: bool = False) -> Path | URLPath:
    """``kit train``: build missing or stale records, then train one run, or every fold under one parent run
    when ``data.folds > 1`` (out-of-fold predictions, CV score); return the run directory."""
    manifest = ensure_records(cfg)
    if cfg.data.folds > 1:
        from kit.train import kfold

        return kfold.train_folds(cfg, resume=resume)
    from kit.train import trainer

    return trainer.train(cfg, resume=resume, manifest=manifest)


def closing_line(cfg: Config, run_dir: Path | URLPath) -> str:
    """The line ``kit train`` ends with: the best epoch and its monitored score (a k-fold run: the CV score), and the
    commands to look at the run and to predict with it."""
    from kit.io import as_path, read_json

    run_dir = as_path(run_dir)
    cv, metrics = run_dir / "cv.json", run_dir / "metrics.json"
    if cv.is_file():
        scores = read_json(cv)
        done = f"CV {scores.get('metric', cfg.comp.metric)} {scores['score']:.4f} over {len(scores.get('folds') or [])} folds"
    elif metrics.is_file():
        scores = read_json(metrics)
        best, epoch, monitor = scores.get("best"), scores.get("best_epoch"), scores.get("monitor")
        done = f"best epoch {epoch} of {scores.get('epochs')}: {monitor} {best:.4f}" if best is not None else "trained"
    else:
        done = "trained"
    words = f"comp={quoted(cfg.comp.name)} model={quoted(cfg.model.name)} run={run_dir}"
    return f"{done}; next: kit evaluate {words} (scores, threshold, plots), then kit predict {words}"


def tune(cfg: Config) -> Path:
    """``kit tune``: build missing or stale records, then run (or resume) the hyperparameter search."""
    from kit.train import tuner

    ensure_records(cfg)
    return tuner.tune(cfg)


def _stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def score_against_solution(cfg: Config, submission: Path) -> float:
    """The competition metric of ``submission`` against the hidden labels in ``comp.solution``."""
    from kit.evaluate import score

    solution_path = confined(cfg.data.root, "comp.solution", cfg.comp.solution)
    if not cfg.comp.solution or not solution_path.is_file():
        raise KitError(f"no hidden labels at {solution_path}", "only competitions with comp.solution can be scored offline")
    id_col, label_col = cfg.comp.submission.id_column, cfg.comp.submission.label_column
    solution = read_csv(solution_path, fix="check comp.solution and data.root")
    predicted = pd.read_csv(submission, dtype={id_col: str, label_col: str})
    merged = solution.merge(predicted, on=id_col, suffixes=("_true", "_pred"), validate="one_to_one")
    classes = list(cfg.comp.classes) or sorted(solution[label_col].unique())
    fmt, ids = str(cfg.comp.submission.label_format), merged[id_col]
    y_true = _label_indices(merged[f"{label_col}_true"], ids, solution_path, fmt, classes)
    y_pred = _label_indices(merged[f"{label_col}_pred"], ids, submission, fmt, classes)
    return float(score(cfg, y_true, y_pred))


def _label_indices(labels: pd.Series, ids: pd.Series, source: Path, label_format: str, classes: list[str]) -> np.ndarray:
    """Class indices of a solution or submission column written as ``comp.submission.label_format``: class names,
    indices 0..k-1, or a binary probability (class 1 at >= 0.5); a label that is none of them is one line."""
    if label_format == "name":
        indices = labels.map({name: i for i, name in enumerate(classes)})
    else:
        indices = pd.to_numeric(labels, errors="coerce")
        if label_format == "probability":
            indices = indices.where(indices.isna(), (indices >= 0.5).astype(float))
        indices = indices.where(indices.isin(range(len(classes))))
    if indices.isna().any():
        first = int(np.flatnonzero(indices.isna().to_numpy())[0])
        raise KitError(
            f"{source}: id {quoted(ids.iloc[first])} has label '{quoted(labels.iloc[first])}', not a class as "
            f"comp.submission.label_format={label_format} writes them",
            f"write class names {classes} (label_format: name) or indices 0..{len(classes) - 1} (index)",
        )
    return indices.astype(int).to_numpy()


def demo(settings: list[str]) -> float:
    """Make the digits competition, build records, train ResNet-9 (the quick baseline; model=... for another), predict,
    validate and score."""
    from kit.data import demo as demo_data
    from kit.data import records, sources
    from kit.data.manifest import records_dir
    from kit.evaluate import evaluate
    from kit.predict import predict
    from kit.quiet import import_tensorflow
    from kit.train import trainer

    cfg = load_settings(["comp=demo", "model=resnet9", *settings])  # a model= in settings comes later and wins
    import_tensorflow()
    started = time.perf_counter()

    t = _stage(f"1/6 competition: scikit-learn digits as {cfg.comp.name} in {cfg.data.root}")
    demo_data.make_demo_competition(Path(cfg.data.root), size=DEMO_IMAGE_SIZE)
    index, classes = sources.load_index(cfg)  # built and written once (or read back, when the folder is unchanged)
    print(f"   {index.groupby('split').size().to_dict()} images, {len(classes)} classes ({time.perf_counter() - t:.1f} s)")

    t = _stage(f"2/6 records: {records_dir(cfg)}")
    manifest = records.build_records(cfg, index, classes)  # the index just built, not built again
    print(f"   done ({time.perf_counter() - t:.1f} s)")

    t = _stage(f"3/6 train: {cfg.model.name}, {cfg.train.epochs} epochs at most")
    run_dir = trainer.train(cfg, manifest=manifest)  # the records just written, not read back
    print(f"   done ({time.perf_counter() - t:.1f} s)")

    t = _stage("4/6 evaluate: validation metrics and plots")
    evaluate(cfg, run_dir)
    print(f"   done ({time.perf_counter() - t:.1f} s)")

    t = _stage("5/6 predict: submission.csv, validated against sample_submission.csv")
    submission = predict(cfg, [run_dir])
    print(f"   done ({time.perf_counter() - t:.1f} s)")

    _stage("6/6 score on the hidden test labels")
    accuracy = score_against_solution(cfg, submission)
    verdict = "meets" if accuracy >= DEMO_GOAL else "is below"
    print(f"   {cfg.comp.metric} = {accuracy:.4f} ({verdict} the demo goal of {DEMO_GOAL})")
    print(
        "\nartifacts:\n"
        f"   competition   {cfg.data.root}\n"
        f"   records       {records_dir(cfg)}\n"
        f"   run           {run_dir}  (config.yaml, history.csv, best.keras, metrics.json, plots/*.png, tensorboard/)\n"
        f"   submission    {submission}\n"
        f"   total time    {time.perf_counter() - started:.0f} s"
    )
    return accuracy
