"""Whole-pipeline jobs built from the stage functions: the offline demo.

The demo is the README's first command: it must run on a fresh laptop without Kaggle credentials,
so it makes its competition from scikit-learn's bundled digits instead of downloading one.
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from kit.config import Config
from kit.errors import KitError
from kit.settings import load_settings

DEMO_GOAL = 0.97


def _stage(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def score_against_solution(cfg: Config, submission: Path) -> float:
    """The competition metric of ``submission`` against the hidden labels in ``comp.solution``."""
    from kit.evaluate import score

    solution_path = Path(cfg.data.root) / cfg.comp.solution
    if not cfg.comp.solution or not solution_path.is_file():
        raise KitError(f"no hidden labels at {solution_path}", "only competitions with comp.solution can be scored offline")
    id_col, label_col = cfg.comp.submission.id_column, cfg.comp.submission.label_column
    solution = pd.read_csv(solution_path, dtype={id_col: str, label_col: str})
    predicted = pd.read_csv(submission, dtype={id_col: str, label_col: str})
    merged = solution.merge(predicted, on=id_col, suffixes=("_true", "_pred"), validate="one_to_one")
    classes = list(cfg.comp.classes) or sorted(solution[label_col].unique())
    to_index = {name: i for i, name in enumerate(classes)}
    y_true = merged[f"{label_col}_true"].map(to_index).to_numpy()
    y_pred = merged[f"{label_col}_pred"].map(to_index).to_numpy()
    return float(score(cfg, y_true, y_pred))


def demo(settings: list[str]) -> float:
    """Make the digits competition, build records, train ResNet20, predict, validate and score."""
    from kit.data import demo as demo_data
    from kit.data import records, sources
    from kit.data.manifest import records_dir
    from kit.evaluate import evaluate
    from kit.predict import predict
    from kit.quiet import import_tensorflow
    from kit.train import trainer

    cfg = load_settings(["comp=demo", *settings])
    import_tensorflow()
    started = time.perf_counter()

    t = _stage(f"1/6 competition: scikit-learn digits as {cfg.comp.name} in {cfg.data.root}")
    demo_data.make_demo_competition(Path(cfg.data.root), size=32)
    index, classes = sources.read_index(cfg)
    sources.write_index(cfg)
    print(f"   {index.groupby('split').size().to_dict()} images, {len(classes)} classes ({time.perf_counter() - t:.1f} s)")

    t = _stage(f"2/6 records: {records_dir(cfg)}")
    manifest = records.build_records(cfg, index, classes)
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
