"""What things were made from: the records a run trained on, the scores a run recorded, how a submission was made.

- ``records.json`` (written with the run's first files, :func:`kit.runs.write_run_files`): the records' folder,
  fingerprint, data root and split plan. :func:`run_records` reads the records of a run's own split plan and says
  in one line when they were rebuilt since.
- A run's scores (``metrics.json`` of ``kit evaluate``, ``cv.json`` of a k-fold parent): :func:`run_scores`, and
  :func:`recorded_score`, the one that matches how a submission was cut (threshold, TTA).
- ``<submission>.json`` beside each file ``kit predict`` writes (:func:`write_provenance`): its runs and their
  weights, the threshold and where it came from, the TTA views, the honest score with the rows it was measured on,
  the time, and the file's SHA-256. ``kit submit`` words its message from it
  (:func:`read_provenance`: None when there is none, or the file changed since), never from today's settings.
"""

from __future__ import annotations

import hashlib
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kit.io import as_path, read_json, write_json
from kit.run_model import run_config
from kit.runs import RECORDS_FILE, THRESHOLD_FILE, threshold_runs

if TYPE_CHECKING:
    from kit.config import Config
    from kit.data.manifest import Manifest
    from kit.io import URLPath

CV_FILE = "cv.json"  # a k-fold parent's scores (kit.train.kfold)
METRICS_FILE = "metrics.json"  # a run's scores (kit.evaluate)


# --- the records of a run ---------------------------------------------------------------------------------


def run_records(cfg: Config, run_dir: Path | URLPath, val_rows: bool = True) -> Manifest:
    """The records ``run_dir`` was trained on (its split plan's folder). With ``val_rows`` (its validation rows will be
    read), one line when they were rebuilt since (its ``records.json``, or its parent's, names another fingerprint):
    a rebuilt val split may hold rows it trained on."""
    from kit.data.manifest import read_manifest, records_dir

    manifest = read_manifest(records_dir(run_config(cfg, run_dir)))
    recorded = next((p for p in (as_path(run_dir) / RECORDS_FILE, as_path(run_dir).parent / RECORDS_FILE) if p.is_file()), None)
    trained_on = read_json(recorded).get("fingerprint") if recorded else manifest.fingerprint
    if val_rows and trained_on != manifest.fingerprint:
        print(
            f"note: the records in {manifest.records_dir} were rebuilt since {run_dir} trained on them (fingerprint "
            f"{trained_on}, now {manifest.fingerprint}): its val rows may differ from those it was validated on"
        )
    return manifest


# --- the scores of a run ----------------------------------------------------------------------------------


def _read(path: Path | URLPath) -> dict:
    try:
        found = read_json(path) if path.is_file() else {}
    except (ValueError, OSError):
        return {}
    return found if isinstance(found, dict) else {}


def run_scores(run_dir: Path | URLPath) -> dict:
    """The scores a run recorded: a k-fold parent's cv.json, else a run's metrics.json, as the keys ``at_0.5`` and
    ``at_chosen`` (each ``{"value", "interval", "what"}``) and ``degenerate`` when present."""
    run_dir = as_path(run_dir)
    cv = _read(run_dir / CV_FILE)
    if cv:
        return {k: cv[k] for k in ("at_0.5", "at_chosen", "degenerate") if k in cv}
    metrics = _read(run_dir / METRICS_FILE)
    found = {"degenerate": metrics["degenerate"]} if "degenerate" in metrics else {}
    for key, name in (("score", "at_0.5"), ("score_at_threshold", "at_chosen")):
        if isinstance(metrics.get(key), dict) and "interval" in metrics[key]:
            found[name] = metrics[key]
    return found


def score_label(entry: dict, metric: str, at: str = "") -> str:
    """``hold-out f1 at chosen threshold``: the rows an entry was measured on (the head of its ``what``), the metric,
    and where it was cut."""
    kind = entry["what"].split(" at ")[0].split(" (")[0]  # "hold-out" | "5-fold OOF"
    return f"{kind} {entry.get('metric', metric)}{at}"


def recorded_score(run_dir: Path | URLPath, metric: str, threshold: float | None, auto: bool, tta: list[str]) -> dict:
    """The run's recorded score that matches a file cut at ``threshold`` (None: multi-class argmax; ``auto``: the
    run's saved threshold, whose honest score is the cross-fitted one): ``{"score": entry + "label"}``, or
    ``{"score": None, "why": ...}`` when none was measured so (another fixed threshold, no kit evaluate yet)."""
    scores = run_scores(run_dir)
    if auto:
        key, at = "at_chosen", " at chosen threshold"
    elif threshold is None or threshold == 0.5:
        key, at = "at_0.5", "" if threshold is None else " at 0.5"
    else:
        return {"score": None, "why": f"no score measured at threshold {threshold:g}"}
    entry = scores.get(key)
    if not entry:
        return {"score": None, "why": f"no recorded score{at} in {run_dir} (run kit evaluate)"}
    note = " (val without TTA)" if tta else ""  # kit evaluate and the k-fold OOF predict without TTA
    return {"score": {**entry, "label": score_label(entry, metric, at) + note}}


def run_record(
    run_dir: Path, model: str, metric: str, threshold: float | None, auto: bool, setting: str, tta: list[str]
) -> dict[str, Any]:
    """The provenance of a file predicted by one run (``kit predict``): the run, the threshold it was cut at (None:
    multi-class) and where that came from (``setting``, or with ``auto`` the threshold.json it was read from), and
    the run's recorded score that matches (:func:`recorded_score`)."""
    record: dict[str, Any] = {"runs": [{"run": str(run_dir), "model": model, "weight": 1.0}], "ensemble": False}
    record.update(threshold=threshold, threshold_source=setting)
    auto = auto and threshold is not None
    if auto:
        found = threshold_runs([run_dir])
        record["threshold_source"] = ", ".join(_threshold_file(r) for r in found)
        if found != [as_path(run_dir)]:
            return {**record, "score": None, "why": f"no score measured at the mean threshold of {len(found)} folds"}
    return {**record, **recorded_score(run_dir, metric, threshold, auto, tta)}


def _threshold_file(run_dir: Path | URLPath) -> str:
    """A run's threshold.json and what it was chosen on."""
    saved = _read(as_path(run_dir) / THRESHOLD_FILE)
    on = f" (chosen on {saved.get('examples', '?')} {saved['chosen_on']} rows)" if saved.get("chosen_on") else ""
    return f"{as_path(run_dir) / THRESHOLD_FILE}{on}"


# --- the provenance of a submission -----------------------------------------------------------------------


def provenance_path(submission: Path | URLPath) -> Path | URLPath:
    """``submission.json`` beside ``submission.csv`` (``<name>.provenance.json`` should the file itself end in .json)."""
    submission = as_path(submission)
    own = submission.suffix == ".json"
    return submission.with_name(f"{submission.name}.provenance.json" if own else f"{submission.stem}.json")


def _sha256(path: Path | URLPath) -> str:
    return hashlib.sha256(as_path(path).read_bytes()).hexdigest()


def write_provenance(submission: Path | URLPath, record: dict[str, Any]) -> Path | URLPath:
    """Write ``record`` (runs, threshold and its source, TTA, score) beside the ``submission`` just written, with
    the file's name, SHA-256 and the time: what ``kit submit`` words its message from."""
    path = provenance_path(submission)
    stamp = {"file": as_path(submission).name, "sha256": _sha256(submission), "written": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_json(path, {**stamp, **record})
    return path


def read_provenance(submission: Path) -> dict | None:
    """The provenance ``kit predict`` wrote for this very file; None when there is none, it is unreadable, or the file
    changed since (its SHA-256 differs)."""
    record = _read(provenance_path(submission))
    if not record or record.get("sha256") != _sha256(submission):
        return None
    return record


def threshold_of(record: dict) -> str:
    """``threshold 0.3925 (auto)`` of a provenance record; empty for a multi-class file."""
    if record.get("threshold") is None:
        return ""
    return f"threshold {record['threshold']:.4f} ({'auto' if record.get('threshold_auto') else 'fixed'})"


def describe(record: dict) -> str:
    """One line of what a file was made from: its runs, threshold, TTA and score (the submission message's body)."""
    runs = record.get("runs", [])
    if record.get("ensemble"):
        names = "+".join(f"{r.get('model', '?')}/{Path(r['run']).name}" for r in runs)
        made = f"ensemble {record.get('ensemble_id', '')} of {names} ({record.get('weights', 'equal')} weights)"
    else:
        made = f"{runs[0].get('model', '?')} run {Path(runs[0]['run']).name}" if runs else "?"
    parts = [made, threshold_of(record), f"tta {'+'.join(record['tta'])}" if record.get("tta") else ""]
    score = record.get("score")
    if score:
        low, high = score["interval"]
        parts.append(f"{score['label']} {score['value']:.4f} [{low:.4f}-{high:.4f}]")
    elif record.get("why"):
        parts.append(record["why"])
    return " ".join(p for p in parts if p)
