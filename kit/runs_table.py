"""``kit runs``: one table of every run of a competition, read from the run folders (the public score each got on
Kaggle is filled in by :func:`kit.kaggle.public_scores.attach_public_scores`).

A row is one run folder ``<run.root>/<comp>/<model>/<run-id>/`` (a k-fold parent is one row; its ``fold<k>/``
sub-runs are not rows of their own). Each figure is read from what the run wrote, and labelled for what it is:

    best_val    the best value of the monitored metric on the validation split during training (the trainer's
                ``metrics.json`` ``best``/``monitor``; once ``kit evaluate`` rewrote that file, the tracker in
                ``checkpoint/state.json``; else the best monitored ``val_*`` column of ``history.csv``)
    cv          a k-fold parent's score over all its out-of-fold predictions (``cv.json``)
    threshold   the binary threshold ``threshold=auto`` uses, and where it was chosen (``threshold.json``: val or oof)
    public      the public score of the newest scored Kaggle submission whose message names the run
                (``kit submit`` writes ``kit <model> run <run-id> ...``); the column says why when there is none

``settings`` lists the settings that differ between the runs (locations and display
settings left out: ``RESUME_FREE_SETTINGS``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.config import read_settings
from kit.errors import KitError, unknown_choice
from kit.io import atomic_write, read_json
from kit.run_model import model_file_problem, saved_config, settings_mismatch
from kit.runs import CONFIG_FILE, DONE, KFOLD, RESUME_FREE_SETTINGS, STATE, THRESHOLD_FILE

if TYPE_CHECKING:
    from kit.config import Config

CV_FILE = "cv.json"
METRICS_FILE = "metrics.json"
HISTORY_FILE = "history.csv"
SETTINGS_SHOWN = 60  # characters of the settings column in the printed table (the CSV holds them all)
# Columns in table order; numbers sort best (highest) first, text alphabetically.
COLUMNS = ("run", "model", "state", "epochs", "monitor", "best_val", "cv", "tta", "threshold", "public", "settings")
NUMERIC = frozenset({"epochs", "best_val", "cv", "threshold", "public"})
# Left out of "settings": where things are and how they are shown, plus what has its own column.
_NOT_SETTINGS = (*RESUME_FREE_SETTINGS, "run", "model.name", "comp.classes", "predict.tta")


@dataclass
class RunRow:
    """One run's row: raw values (the CSV) and the notes that say what a figure is (the printed table)."""

    path: Path
    values: dict[str, Any] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)  # column -> a label printed beside the value
    settings: dict[str, Any] = field(default_factory=dict)  # every setting as section.key


# --- reading the runs -------------------------------------------------------------------------------------


def competition_runs(cfg: Config) -> list[Path]:
    """Every run folder of ``cfg.comp.name`` (all models), oldest run id first."""
    base = Path(cfg.run.root) / cfg.comp.name
    if not base.is_dir():
        return []
    found = [run for model in base.iterdir() if model.is_dir() for run in model.iterdir() if (run / CONFIG_FILE).is_file()]
    return sorted(found, key=lambda p: (p.name, p.parent.name))


def flat_settings(tree: dict, prefix: str = "") -> dict[str, Any]:
    """A nested settings mapping as ``section.key`` -> value (lists kept whole)."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        flat.update(flat_settings(value, f"{name}.") if isinstance(value, dict) and value else {name: value})
    return flat


def _json_or_none(path: Path) -> dict[str, Any] | None:
    """A run file kit wrote (a JSON object), or None when it is missing, damaged or not an object (a list, a number):
    a table of runs never stops on one run."""
    if not path.is_file():
        return None
    try:
        value = read_json(path)
    except (ValueError, OSError):
        return None
    return value if isinstance(value, dict) else None


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) else None


def _history(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    try:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle))
    except (OSError, csv.Error, UnicodeDecodeError):
        return []


def _tracked_best(tracker: dict) -> tuple[str | None, float | None]:
    """The trainer's ``monitor`` and ``best`` (metrics.json, or checkpoint/state.json's tracker), or (None, None)."""
    name, best = tracker.get("monitor"), _number(tracker.get("best"))
    return (name, best) if isinstance(name, str) and best is not None else (None, None)


def _best_from_history(rows: list[dict[str, str]], monitor: str | None) -> tuple[str | None, float | None]:
    """The monitored column's best value in ``history.csv`` (``monitor``, else val_f1_score, else val_accuracy)."""
    columns = rows[0].keys() if rows else ()
    name = next((c for c in (monitor, "val_f1_score", "val_accuracy") if c and c in columns), None)
    if name is None:
        return None, None
    values = [v for row in rows if (v := parse_float(row.get(name))) is not None]
    if not values:
        return name, None
    return name, (min(values) if name.endswith("loss") else max(values))


def parse_float(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def read_row(run_dir: Path) -> RunRow:
    """What one run folder says about itself."""
    row = RunRow(run_dir)
    values = row.values
    values["run"], values["model"] = run_dir.name, run_dir.parent.name
    try:
        row.settings = flat_settings(read_settings(run_dir / CONFIG_FILE, "run config"))
    except KitError:
        row.notes["settings"] = "config.yaml unreadable"
    kfold = (run_dir / KFOLD).is_file()
    values["state"] = ("k-fold " if kfold else "") + ("done" if (run_dir / DONE).is_file() else "unfinished")
    sources = sorted(p for p in run_dir.glob("fold*") if p.is_dir()) if kfold else [run_dir]
    epochs, bests, monitor = [], [], None
    for source in sources:
        metrics = _json_or_none(source / METRICS_FILE) or {}
        history = _history(source / HISTORY_FILE)
        epochs.append(len(history) or _number(metrics.get("epochs")) or 0)
        name, best = _tracked_best(metrics)
        if best is None:  # kit evaluate rewrites metrics.json without them: the resume state keeps the tracker
            name, best = _tracked_best((_json_or_none(source / STATE) or {}).get("tracker") or {})
        if best is None:
            name, best = _best_from_history(history, row.settings.get("train.monitor"))
        monitor = monitor or name
        if best is not None:
            bests.append(best)
    values["epochs"] = int(max(epochs)) if epochs else None
    values["monitor"] = monitor
    values["best_val"] = sum(bests) / len(bests) if bests else None
    if kfold and bests:
        row.notes["best_val"] = f"mean of {len(bests)} folds"
    cv = _json_or_none(run_dir / CV_FILE) or {}
    values["cv"] = _number(cv.get("score"))
    if values["cv"] is not None:
        row.notes["cv"] = f"{len(cv.get('folds') or [])}-fold OOF {cv.get('metric', '')}".strip()
    values["tta"] = ",".join(row.settings.get("predict.tta") or []) or "none"
    threshold = _json_or_none(run_dir / THRESHOLD_FILE) or {}
    values["threshold"] = _number(threshold.get("threshold"))
    if values["threshold"] is not None:
        row.notes["threshold"] = str(threshold.get("chosen_on", threshold.get("split", "?")))  # older runs wrote "split"
    return row


def usable_problem(cfg: Config, run_dir: Path) -> str:
    """Why ``kit predict`` would refuse the run with the current settings ('' when nothing is seen): its model file is
    not a Keras file, or it was trained on another competition or other comp.classes (kit.run_model's checks)."""
    if problem := model_file_problem(run_dir):
        return problem
    try:
        saved = saved_config(run_dir)
    except KitError:
        return ""  # config.yaml unreadable: the settings column says so
    mismatch = settings_mismatch(cfg, saved) if saved is not None else ""
    return f"not usable now: {mismatch.split(':')[0]}" if mismatch else ""


def differing_settings(rows: Sequence[RunRow]) -> list[str]:
    """The settings whose values are not the same in every run (locations and display settings left out).

    Those that differ between runs of one model come first: a model's preset differs from another's in many settings
    the model column already implies, and the printed column is cut at ``SETTINGS_SHOWN`` characters."""
    keys = sorted({k for row in rows for k in row.settings})
    free = tuple(f"{name}." for name in _NOT_SETTINGS)

    def varies(group: Sequence[RunRow], key: str) -> bool:
        return len({repr(row.settings.get(key, "<unset>")) for row in group}) > 1

    differ = [k for k in keys if not f"{k}.".startswith(free) and varies(rows, k)]
    models = {row.values["model"] for row in rows}
    within = {k for k in differ for m in models if varies([r for r in rows if r.values["model"] == m], k)}
    return sorted(differ, key=lambda k: k not in within)


# --- the public scores ------------------------------------------------------------------------------------


def no_scores(rows: Sequence[RunRow], why: str, note: str) -> str:
    for row in rows:
        row.values["public"] = None
        row.notes["public"] = note
    return why


# --- the table --------------------------------------------------------------------------------------------


def runs_table(
    cfg: Config, sort: str = "run", public_scores: Callable[[Config, Sequence[RunRow]], str | None] | None = None
) -> tuple[list[RunRow], list[str], str | None]:
    """Every run of the competition as rows (sorted by ``sort``), the settings that differ, and why there are no
    public scores (None when they were filled). ``public_scores`` fills the public column (kit.kaggle asks Kaggle);
    without it the column says the scores were not asked for."""
    if sort not in COLUMNS:
        raise unknown_choice("runs column", sort, COLUMNS)
    rows = [read_row(run) for run in competition_runs(cfg)]
    for row in rows:
        if problem := usable_problem(cfg, row.path):
            row.notes["state"] = problem
    differ = differing_settings(rows)
    for row in rows:
        row.values["settings"] = " ".join(f"{k}={_plain(row.settings.get(k, '<unset>'))}" for k in differ)
    if public_scores is None:
        why = no_scores(rows, "public scores not asked (--offline)", "not asked")
    else:
        why = public_scores(cfg, rows) if rows else None
    return sort_rows(rows, sort), differ, why


def sort_rows(rows: Sequence[RunRow], column: str) -> list[RunRow]:
    """Numbers best (highest) first, text alphabetically; a row without the value goes last either way."""
    present = [r for r in rows if r.values.get(column) not in (None, "")]
    missing = [r for r in rows if r.values.get(column) in (None, "")]
    numeric = column in NUMERIC
    return sorted(present, key=lambda r: r.values[column], reverse=numeric) + missing


def _plain(value: Any) -> str:
    return ",".join(map(str, value)) if isinstance(value, list) else str(value)


def _cell(row: RunRow, column: str) -> str:
    value = row.values.get(column)
    note = row.notes.get(column, "")
    if value is None or value == "":
        text = "-"
    elif column in ("best_val", "cv", "threshold", "public"):
        text = f"{value:.4f}"
    else:
        text = str(value)
    if column == "settings" and len(text) > SETTINGS_SHOWN:
        text = text[: SETTINGS_SHOWN - 3] + "..."
    return f"{text} ({note})" if note and text != "-" else note or text


def format_table(rows: Sequence[RunRow]) -> str:
    """The rows as aligned plain text, one line a run."""
    cells = [list(COLUMNS)] + [[_cell(row, c) for c in COLUMNS] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(COLUMNS))]
    return "\n".join("  ".join(text.ljust(w) for text, w in zip(line, widths, strict=True)).rstrip() for line in cells)


def to_csv(rows: Sequence[RunRow]) -> str:
    """The rows as CSV: raw numbers (no rounding), the labels in ``<column>_note`` columns, the run's path."""
    noted = [c for c in COLUMNS if any(c in row.notes for row in rows)]
    header = [*COLUMNS, *(f"{c}_note" for c in noted), "path"]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    for row in rows:
        values = ["" if row.values.get(c) is None else row.values[c] for c in COLUMNS]
        writer.writerow([*values, *(row.notes.get(c, "") for c in noted), str(row.path)])
    return buffer.getvalue()


def write_csv(rows: Sequence[RunRow], path: Path) -> Path:
    """``to_csv`` written atomically (a half-written table is never left at ``path``)."""
    atomic_write(path, to_csv(rows))
    return Path(path)


def plot_scores(rows: Sequence[RunRow], path: Path) -> Path:
    """:func:`scores_figure` as a PNG at ``path``."""
    from kit.plots import save

    return save(scores_figure(rows), path)


def scores_figure(rows: Sequence[RunRow]) -> Any:
    """One line a run, its best val score, k-fold CV and public score side by side, so a CV that stops tracking the
    leaderboard shows at a glance; the legend beside the axes. A run without a figure has no marker for it."""
    from matplotlib.figure import Figure

    series = (("best_val", "best val (during training)", "o"), ("cv", "CV (k-fold OOF)", "s"), ("public", "public (Kaggle)", "^"))
    fig = Figure(figsize=(8, 1.2 + 0.35 * max(1, len(rows))), layout="constrained")
    ax = fig.add_subplot()
    for column, label, marker in series:
        points = [(row.values[column], i) for i, row in enumerate(rows) if row.values.get(column) is not None]
        if points:
            ax.scatter([x for x, _ in points], [y for _, y in points], marker=marker, label=label, s=40)
    ax.set_yticks(range(len(rows)), [f"{row.values['model']}/{row.values['run']}" for row in rows])
    ax.set_ylim(len(rows) - 0.5, -0.5)  # the table's first row on top, half a row clear of the frame
    ax.set_xlabel("score")
    ax.grid(axis="x", alpha=0.3)
    if rows:  # beside the axes, never over a run's points
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", borderaxespad=0)
    ax.set_title("runs: validation, CV and public scores")
    return fig


# --- two runs side by side --------------------------------------------------------------------------------


def find_run(cfg: Config, name: str) -> Path:
    """A run folder from a path, or from a run id among the competition's runs (``<model>/<run-id>`` when the id
    is not unique)."""
    path = Path(name)
    if (path / CONFIG_FILE).is_file():
        return path
    runs = competition_runs(cfg)
    matches = [r for r in runs if r.name == name or f"{r.parent.name}/{r.name}" == name]
    if len(matches) == 1:
        return matches[0]
    base = Path(cfg.run.root) / cfg.comp.name
    if not runs:
        raise KitError(
            f"no runs of {cfg.comp.name} in {base}", f"train one first (kit train comp={cfg.comp.name}), or pass a run folder"
        )
    if not matches:
        raise unknown_choice(f"run of {cfg.comp.name} (in {base})", name, [r.name for r in runs])
    raise KitError(
        f"run id {name} is in {len(matches)} models of {cfg.comp.name}", "name it <model>/<run-id>, or pass its folder"
    )


def diff_runs(cfg: Config, first: str, second: str) -> str:
    """The settings that differ between two runs, one line each (``<unset>``: the run has no such setting)."""
    rows = [read_row(find_run(cfg, name)) for name in (first, second)]
    for row in rows:
        if "settings" in row.notes:
            raise KitError(f"{row.path / CONFIG_FILE} cannot be read", "pass another run, or restore its config.yaml")
    keys = sorted(set(rows[0].settings) | set(rows[1].settings))
    differ = [k for k in keys if repr(rows[0].settings.get(k, "<unset>")) != repr(rows[1].settings.get(k, "<unset>"))]
    names = [f"{row.values['model']}/{row.values['run']}" for row in rows]
    if not differ:
        return f"{names[0]} and {names[1]} have the same settings"
    lines = [["setting", names[0], names[1]]]
    lines += [[k, *(_plain(row.settings.get(k, "<unset>")) for row in rows)] for k in differ]
    widths = [max(len(line[i]) for line in lines) for i in range(3)]
    return "\n".join("  ".join(t.ljust(w) for t, w in zip(line, widths, strict=True)).rstrip() for line in lines)
