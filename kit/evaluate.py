"""Score a run on its validation split: metrics, the F1-best threshold, plots.

``kit evaluate`` writes into the run directory::

    metrics.json     accuracy, precision, recall, F1 (+ AUC, AP and the metrics at the best threshold
                     for binary problems; macro and per-class for multi-class), the competition score;
                     with comp.group_column, ``groups``: the score of each group (source, generator) on its own
    threshold.json   binary only: the threshold that maximises F1 on val (``predict.threshold=auto``)
    val_predictions.csv  one row per val image: path, true and predicted class, probabilities, loss
    plots/           learning_curves.png, confusion_matrix.png, roc.png, pr.png, scores.png,
                     top_losses.png, gradcam.png (kit.interpret: the worst images, where the model looked)

The threshold is tuned on the same val split it is reported on, so the F1 at that threshold is
optimistic by a little; the plain 0.5 numbers are reported beside it.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from kit import interpret, plots
from kit.data.manifest import read_manifest, records_dir, source_split
from kit.errors import KitError
from kit.inference import batches_in_split, class_names, predict_probabilities, split_dataset, to_class_probs
from kit.io import write_json
from kit.run_model import check_records, load_model, run_config
from kit.runs import is_parent, latest_run, read_state, run_dir_of, run_fold, write_threshold
from kit.scores import degenerate_warning, group_scores, honest_binary_scores, scored, threshold_parts

if TYPE_CHECKING:
    from kit.config import Config
    from kit.data.manifest import Manifest


def classification_metrics(y_true: np.ndarray, class_probs: np.ndarray, classes: Sequence[str], threshold: float = 0.5) -> dict:
    """Metrics of (N,) integer labels against (N, C) class probabilities, computed with scikit-learn."""
    from sklearn import metrics as skm

    y_true = np.asarray(y_true).astype(int)
    class_probs = np.asarray(class_probs, dtype=np.float64)
    n = class_probs.shape[1]
    if class_probs.shape[1] == 2:
        prob = class_probs[:, 1]
        y_pred = (prob >= threshold).astype(int)
        out: dict[str, Any] = {
            "threshold": float(threshold),
            "accuracy": float(skm.accuracy_score(y_true, y_pred)),
            "precision": float(skm.precision_score(y_true, y_pred, zero_division=0)),
            "recall": float(skm.recall_score(y_true, y_pred, zero_division=0)),
            "f1": float(skm.f1_score(y_true, y_pred, zero_division=0)),
        }
        if len(np.unique(y_true)) == 2:  # AUC is undefined with one class present
            out["auc"] = float(skm.roc_auc_score(y_true, prob))
            out["average_precision"] = float(skm.average_precision_score(y_true, prob))
    else:
        y_pred = class_probs.argmax(axis=1)
        labels = list(range(n))
        p, r, f, support = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
        out = {
            "accuracy": float(skm.accuracy_score(y_true, y_pred)),
            "macro_precision": float(p.mean()),
            "macro_recall": float(r.mean()),
            "macro_f1": float(f.mean()),
            "per_class": {
                str(classes[i]) if i < len(classes) else str(i): {
                    "precision": float(p[i]),
                    "recall": float(r[i]),
                    "f1": float(f[i]),
                    "support": int(support[i]),
                }
                for i in labels
            },
        }
    out["confusion_matrix"] = skm.confusion_matrix(y_true, y_pred, labels=list(range(n))).tolist()
    return out


def score(
    cfg: Config,
    y_true: Sequence[int] | np.ndarray,
    y_pred_labels: Sequence[int] | np.ndarray | None,
    prob: np.ndarray | None = None,
) -> float:
    """The competition metric (``cfg.comp.metric``: accuracy | f1 | macro_f1) of predicted class indices.

    ``f1`` is the F1 of class 1 for binary problems and macro F1 otherwise. Without labels, ``prob``
    ((N,) or (N, 1) positive probabilities, or (N, C)) is turned into labels at 0.5 / argmax.
    """
    from sklearn import metrics as skm

    y_true = np.asarray(y_true).reshape(-1).astype(int)
    if y_pred_labels is None:
        if prob is None:
            raise ValueError("score needs y_pred_labels or prob")
        p = np.asarray(prob, dtype=np.float64)
        p = p.reshape(-1, 1) if p.ndim == 1 else p
        y_pred = (p[:, 0] >= 0.5).astype(int) if p.shape[1] == 1 else p.argmax(axis=1)
    else:
        y_pred = np.asarray(y_pred_labels).reshape(-1).astype(int)
    metric = cfg.comp.metric
    if metric == "accuracy":
        return float(skm.accuracy_score(y_true, y_pred))
    binary = cfg.binary or (not cfg.comp.classes and set(np.unique(np.concatenate([y_true, y_pred]))) <= {0, 1})
    if metric == "f1" and binary:
        return float(skm.f1_score(y_true, y_pred, zero_division=0))
    if metric in ("f1", "macro_f1"):
        return float(skm.f1_score(y_true, y_pred, average="macro", zero_division=0))
    raise KitError(f"unknown metric '{metric}'", "use comp.metric=accuracy, f1 or macro_f1")


def _learning_curves(run_dir: Path, plot_dir: Path) -> Path | None:
    history_path = run_dir / "history.csv"
    if not history_path.is_file():
        return None
    try:
        history = pd.read_csv(history_path)
    except (pd.errors.EmptyDataError, pd.errors.ParserError):
        return None
    if history.empty:
        return None
    # The trainer's tracker (checkpoint/state.json) still holds the best epoch once this command rewrites metrics.json.
    tracker = (read_state(run_dir) or {}).get("tracker") or {}
    best = tracker.get("best_epoch")
    return plots.learning_curves(
        history,
        plot_dir / "learning_curves.png",
        title=f"{run_dir.parent.name}/{run_dir.name}",
        best_epoch=None if best is None else int(best) + 1,  # the tracker counts from 0, history.csv from 1
        monitor=tracker.get("monitor"),
    )


def held_out_scores(cfg: Config, y_true: np.ndarray, class_probs: np.ndarray, where: str, parts: np.ndarray) -> dict:
    """The honest scores of held-out rows (``where``: "hold-out", "5-fold OOF"): ``at_0.5`` (argmax for multi-class)
    with its interval; binary: ``threshold``, the F1-best over all rows (what threshold=auto uses, never scored on them),
    and ``at_chosen``, each part cut at the threshold of the other ``parts``; ``degenerate`` for a constant model.
    kit evaluate and the k-fold driver both score through here."""
    metric = functools.partial(score, cfg)
    out: dict[str, Any] = {}
    if class_probs.shape[1] == 2:
        out.update(honest_binary_scores(y_true, class_probs[:, 1], metric, where, parts))
    else:
        out["at_0.5"] = scored(y_true, class_probs.argmax(axis=1), metric, f"{where} (argmax)")
    warning = degenerate_warning(class_probs, 0.5, y_true)
    if warning:
        out["degenerate"] = warning
    return out


def evaluate(cfg: Config, run_dir: Path | None = None) -> dict:
    """Evaluate ``run_dir`` (default: the newest run) on val, a k-fold parent on its out-of-fold predictions; write
    metrics.json, threshold.json, plots/."""
    run_dir = Path(latest_run(cfg) if run_dir is None else run_dir)
    if is_parent(run_dir):
        return evaluate_oof(cfg, run_dir)
    model = load_model(run_dir)  # a run without best.keras fails here, before anything is read
    run_cfg = run_config(cfg, run_dir)
    fold = run_fold(run_dir)
    manifest = read_manifest(records_dir(run_cfg))  # once for the command: dataset, progress bar, class names
    check_records(run_cfg, manifest, run_dir)
    top = interpret.TopLosses(interpret.TOP_LOSSES)
    dataset = split_dataset(run_cfg, manifest, "val", fold)
    total = batches_in_split(manifest, "val", run_cfg.predict.batch_size, fold)
    ids, probs = predict_probabilities(model, dataset, (), total=total, on_batch=top, source=f"run {run_dir}")
    y_true = top.labels()
    try:
        parts = threshold_parts(y_true)
    except ValueError:
        parts = np.zeros(len(y_true), dtype=np.int64)  # one part: no tuned score (honest_binary_scores says so)
    rows = Rows(ids, y_true, to_class_probs(probs), parts, "val", "hold-out")
    result = _report(run_cfg, run_dir, manifest, rows, lambda _row: model, top.worst())
    result["fold"] = fold
    return _finish(run_dir, result)


def evaluate_oof(cfg: Config, parent: Path) -> dict:
    """Evaluate a k-fold parent on its out-of-fold predictions (oof.csv): the scores, the threshold chosen as the
    k-fold driver chooses it (on all OOF rows; its score cross-fitted over the folds), the plots; the top losses'
    images read from the records and explained by the model of the fold that held each out."""
    run_cfg = run_config(cfg, parent)
    manifest = read_manifest(records_dir(run_cfg))
    check_records(run_cfg, manifest, parent)
    classes = class_names(run_cfg, manifest)
    oof = interpret.read_oof(parent, classes)
    folds = oof["fold"].to_numpy().astype(int)
    class_probs = oof[interpret.probability_columns(classes)].to_numpy(dtype=np.float64)
    where = f"{len(np.unique(folds))}-fold OOF"
    rows = Rows(oof["id"].to_numpy(), oof["label"].to_numpy().astype(int), class_probs, folds, "out-of-fold", where)
    frame = interpret.predictions_frame(rows.ids, class_probs, rows.y_true, classes, {})
    positions = interpret.worst_rows(frame)
    images = interpret.record_images(manifest, source_split("val", 0), frame["id"].iloc[positions].tolist())
    kept = [p for p in positions if frame["id"].iloc[p] in images]  # rows whose records are gone are not shown
    worst = (kept, np.stack([images[frame["id"].iloc[p]] for p in kept]) if kept else np.zeros((0, 1, 1, 3), np.uint8))
    model_of = functools.cache(lambda fold: load_model(run_dir_of(parent, fold)))
    result = _report(run_cfg, parent, manifest, rows, lambda row: model_of(int(folds[row.name])), worst)
    return _finish(parent, result)


@dataclasses.dataclass
class Rows:
    """Held-out rows and what a model predicted for them: ids, true class indices, (N, C) class probabilities, the
    parts the threshold is cross-fitted over (the folds, for OOF rows), and their names in titles and scores."""

    ids: np.ndarray
    y_true: np.ndarray
    class_probs: np.ndarray
    parts: np.ndarray
    name: str  # "val" | "out-of-fold"
    where: str  # "hold-out" | "5-fold OOF"


def _report(run_cfg: Config, run_dir: Path, manifest: Manifest, rows: Rows, model_of: interpret.ModelOf, worst: tuple) -> dict:
    """Scores, threshold.json, plots and the interpretation figures of ``rows``; the result metrics.json will hold."""
    n = rows.class_probs.shape[1]
    classes = class_names(run_cfg, manifest)
    if len(classes) != n:
        classes = [str(i) for i in range(n)]
    y_true, class_probs = rows.y_true, rows.class_probs
    result: dict[str, Any] = {"run": str(run_dir), "split": rows.name, "examples": int(len(y_true))}
    honest = held_out_scores(run_cfg, y_true, class_probs, rows.where, rows.parts)
    threshold = honest.get("threshold")
    result.update(classification_metrics(y_true, class_probs, classes, 0.5))
    result["score"] = {"metric": run_cfg.comp.metric, **honest["at_0.5"]}
    if threshold is not None:
        result["saved_threshold"] = threshold
        if "at_chosen" in honest:
            result["score_at_threshold"] = {"metric": run_cfg.comp.metric, **honest["at_chosen"]}
        chosen_on = "oof" if rows.name == "out-of-fold" else "val"
        write_threshold(run_dir, threshold, chosen_on, int(len(y_true)), result.get("score_at_threshold"))
    if "degenerate" in honest:
        result["degenerate"] = honest["degenerate"]

    plot_dir = run_dir / "plots"
    written = [p for p in [_learning_curves(run_dir, plot_dir)] if p]
    written.append(plots.confusion_matrix(np.array(result["confusion_matrix"]), classes, plot_dir / "confusion_matrix.png"))
    if n == 2 and "auc" in result:
        written.append(plots.roc_curve(y_true, class_probs[:, 1], plot_dir / "roc.png"))
        written.append(plots.pr_curve(y_true, class_probs[:, 1], plot_dir / "pr.png", threshold))
    title = f"{run_cfg.comp.metric} on {rows.name} ({rows.where})"
    written.append(plots.score_intervals(_score_rows(result), plot_dir / "scores.png", title=title))
    paths = interpret.example_paths(run_cfg)
    frame = interpret.predictions_frame(rows.ids, class_probs, y_true, classes, paths)
    if rows.name == "val":  # a k-fold parent's table of held-out rows is its oof.csv
        result["predictions"] = str(interpret.write_val_predictions(run_dir, frame))
    figures, result["skipped"] = interpret.interpretation_plots(model_of, frame, worst, classes, plot_dir, paths, rows.name)
    written += figures
    result["plots"] = [str(p) for p in written]
    result.update(score_groups(run_cfg, rows.ids, y_true, class_probs, functools.partial(score, run_cfg)))
    return result


def _finish(run_dir: Path, result: dict) -> dict:
    """Write metrics.json and print the table (and why Grad-CAM was skipped, and the per-group scores)."""
    skipped = result.pop("skipped", None)
    write_json(run_dir / "metrics.json", result)
    print(format_table(result))
    if skipped:
        print(skipped)
    if "groups" in result:
        print(format_groups(result["groups"]))
    return result


def format_table(result: dict) -> str:
    """A short plain-text table of the headline numbers."""
    rows = [("examples", str(result.get("examples", "")))]
    for key in (
        "accuracy",
        "precision",
        "recall",
        "f1",
        "auc",
        "average_precision",
        "macro_precision",
        "macro_recall",
        "macro_f1",
    ):
        if key in result:
            rows.append((key, f"{result[key]:.4f}"))
    for key, at in _score_names(result).items():
        if key in result:
            entry = result[key]
            low, high = entry["interval"]
            rows.append((f"score ({entry['metric']}) {at}", f"{entry['value']:.4f}  [{low:.4f}, {high:.4f}]  {entry['what']}"))
    width = max(len(k) for k, _ in rows)
    where = "hold-out" if result.get("split", "val") == "val" else "k-fold"
    lines = [f"evaluation of {result.get('run', '')} on {result.get('split', 'val')} rows ({where})"]
    lines += [f"  {k:<{width}}  {v}" for k, v in rows]
    if "saved_threshold" in result:
        lines.append(
            f"  threshold saved for predict (threshold=auto): {result['saved_threshold']:.4f}, "
            f"chosen on all {result.get('examples', '')} {result.get('split', 'val')} rows and never scored on them"
        )
    if "degenerate" in result:
        lines.append(f"WARNING: {result['degenerate']}; do not submit it (kit submit refuses without --force)")
    return "\n".join(lines)


def _score_rows(result: dict) -> list[tuple[str, float, float, float]]:
    """(label, value, low, high) of each headline score, for plots.score_intervals."""
    return [(at, result[key]["value"], *result[key]["interval"]) for key, at in _score_names(result).items() if key in result]


def _score_names(result: dict) -> dict[str, str]:
    """metrics.json key -> short name of each headline score (binary results carry their ``threshold``)."""
    if "threshold" not in result:
        return {"score": "argmax"}
    return {"score": "at 0.5", "score_at_threshold": "at chosen threshold"}


def score_groups(cfg: Config, ids: np.ndarray, y_true: np.ndarray, class_probs: np.ndarray, metric: Any) -> dict:
    """``{"groups": ...}``: the val rows of each ``comp.group_column`` group scored on their own
    (:func:`kit.scores.group_scores`), at 0.5 (binary) or argmax; ``{}`` without a group column. Each row's group is
    read from the index by its id."""
    if not cfg.comp.group_column:
        return {}
    from kit.data.sources import load_index

    index, _ = load_index(cfg)
    group_of = dict(zip(index["id"].astype(str), index["group"].astype(str), strict=True))
    groups = np.array([group_of.get(str(i), "") for i in ids], dtype=object)
    binary = class_probs.shape[1] == 2
    y_pred = (class_probs[:, 1] >= 0.5).astype(int) if binary else class_probs.argmax(axis=1)
    scores, unscored = group_scores(y_true, y_pred, groups, metric)
    return {
        "groups": {
            "column": cfg.comp.group_column,
            "metric": cfg.comp.metric,
            "at": "0.5" if binary else "argmax",
            "held_out": cfg.data.holdout_group,
            "scores": scores,
            "unscored_groups": unscored,
        }
    }


def format_groups(groups: dict) -> str:
    """Lines of the per-group scores under the headline table; the held-out group (data.holdout_group) is marked."""
    level = groups["scores"][0]["interval_level"] if groups["scores"] else 0.95
    lines = [f"  per group of comp.group_column={groups['column']} ({groups['metric']} at {groups['at']}, {level:.0%} interval):"]
    for entry in groups["scores"]:
        name = entry["group"] or "(no group)"
        if name == groups["held_out"]:
            name += " (held out: never trained on)"
        low, high = entry["interval"]
        value, accuracy = entry["value"], entry["accuracy"]
        lines.append(f"    {name}: {value:.4f} [{low:.4f}, {high:.4f}], accuracy {accuracy:.4f}, {entry['examples']} rows")
    if groups["unscored_groups"]:
        lines.append(f"    ... and {groups['unscored_groups']} smaller groups (not scored one by one)")
    return "\n".join(lines)
