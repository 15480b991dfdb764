"""Submit to a Kaggle competition: find and validate the file, name the run in the message, upload, wait for the score."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

from kit.config import git_commit
from kit.errors import KitError
from kit.io import read_json
from kit.kaggle.client import (
    LIMIT_WORDS,
    api,
    call,
    competition_url,
    credential_source,
    daily_limit_error,
    refuse_secrets,
    say,
)

if TYPE_CHECKING:
    from kaggle.api.kaggle_api_extended import KaggleApi

    from kit.config import Config


def _poll_interval() -> float:
    """Seconds between two looks at the submission list; KIT_KAGGLE_POLL makes tests fast."""
    return float(os.environ.get("KIT_KAGGLE_POLL", "10.0"))


def latest_submission(cfg: Config) -> Path:
    """The newest ``<run.root>/<comp>/*/*/<predict.output>``."""
    base = Path(cfg.run.root) / cfg.comp.name
    found = [p for p in base.glob(f"*/*/{Path(cfg.predict.output).name}") if p.is_file()]
    if not found:
        raise KitError(
            f"no submission found under {base}/<model>/<run>/", "run kit predict first, or pass --file <submission.csv>"
        )
    return max(found, key=lambda p: p.stat().st_mtime)


def _read(path: Path) -> dict:
    try:
        found = read_json(path) if path.is_file() else {}
    except (ValueError, OSError):
        return {}
    return found if isinstance(found, dict) else {}


def run_scores(run_dir: Path) -> tuple[dict, dict]:
    """(the scores of a run, its threshold.json): a k-fold parent's cv.json, else a run's metrics.json, with the
    keys ``at_0.5`` and ``at_chosen`` (each ``{"value", "interval", "what"}``) and ``degenerate`` when present."""
    cv = _read(run_dir / "cv.json")
    if cv:
        found = {k: cv[k] for k in ("at_0.5", "at_chosen", "degenerate") if k in cv}
    else:
        metrics = _read(run_dir / "metrics.json")
        found = {"degenerate": metrics["degenerate"]} if "degenerate" in metrics else {}
        for key, name in (("score", "at_0.5"), ("score_at_threshold", "at_chosen")):
            if isinstance(metrics.get(key), dict) and "interval" in metrics[key]:
                found[name] = metrics[key]
    return found, _read(run_dir / "threshold.json")


def matching_score(cfg: Config, run_dir: Path) -> str:
    """The run's score that matches the uploaded file, labelled: threshold=auto -> the honest score at the chosen
    threshold; a fixed 0.5 (or a multi-class run) -> the score at it; another fixed threshold has none."""
    scores, threshold_file = run_scores(run_dir)
    binary = bool(threshold_file) or "at_chosen" in scores
    setting = str(cfg.predict.threshold).strip().lower()
    if not binary or setting != "auto" and float(setting) == 0.5:
        entry, where = scores.get("at_0.5"), "" if not binary else " at 0.5"
    elif setting == "auto":
        entry, where = scores.get("at_chosen"), " at chosen threshold"
        if entry is None:
            return "no honest score at the chosen threshold" if scores else ""
    else:
        return f"threshold {float(setting):g}: no score measured at it"
    if not entry:
        return ""
    low, high = entry["interval"]
    kind = entry["what"].split(" at ")[0].split(" (")[0]  # "hold-out" | "5-fold OOF"
    return f"{kind} {entry.get('metric', cfg.comp.metric)}{where} {entry['value']:.4f} [{low:.4f}-{high:.4f}]"


def submission_message(cfg: Config, path: Path) -> str:
    """cfg.kaggle.message, or one naming the run: model, run id, the score matching the file (labelled), git commit."""
    if cfg.kaggle.message:
        return cfg.kaggle.message
    run_dir = path.parent
    parts = ["kit"]
    runs_root = Path(cfg.run.root) / cfg.comp.name
    if run_dir.parent.parent.resolve() == runs_root.resolve():
        parts.append(f"{run_dir.parent.name} run {run_dir.name}")
    else:
        parts.append(cfg.model.name)
    commit = git_commit()
    parts.extend(p for p in (matching_score(cfg, run_dir), f"git {commit}" if commit else "") if p)
    return " ".join(parts)[:250]


def refuse_degenerate(cfg: Config, path: Path) -> None:
    """A KitError naming the run when it predicts a constant: its metrics.json / cv.json say so (kit evaluate, k-fold),
    or every row of the file has one label (a run never evaluated, an ensemble)."""
    import pandas as pd

    scores, _ = run_scores(path.parent)
    reason = scores.get("degenerate")
    if reason is None:
        column = cfg.comp.submission.label_column
        labels = pd.read_csv(path, usecols=lambda name: name == column, dtype=str, keep_default_na=False).get(column)
        if labels is not None and len(labels) > 1 and labels.nunique() == 1:
            reason = f"every one of the {len(labels)} rows of {path.name} has {column} {labels.iloc[0]}"
    if reason:
        raise KitError(
            f"run {path.parent} predicts a constant ({reason}); {path} would score as chance",
            "retrain (check the learning rate, the labels and the records), or submit anyway with --force",
        )


def submit(cfg: Config, file: Path | None = None, dry_run: bool = False, force: bool = False) -> float | None:
    """Validate and upload a submission, then wait (cfg.kaggle.poll_timeout) for its public score; a run that
    predicts a constant is refused unless ``force``."""
    slug = cfg.comp.slug
    if cfg.comp.source != "competition" or not slug:
        raise KitError(
            f"{cfg.comp.name} is not a Kaggle competition (source {cfg.comp.source}): nothing to submit to",
            "score it with kit evaluate",
        )
    path = Path(file) if file else latest_submission(cfg)
    if not path.is_file():
        raise KitError(f"submission file {path} does not exist", "run kit predict first, or pass --file <submission.csv>")
    from kit.data.sources import reference_ids
    from kit.inference import class_names
    from kit.submission import validate_submission

    validate_submission(cfg, path, reference_ids(cfg), class_names(cfg))
    if not force:
        refuse_degenerate(cfg, path)
    message = submission_message(cfg, path)
    refuse_secrets({str(path): path.read_bytes(), "the submission message": message}, "submission")  # both go to Kaggle
    size = path.stat().st_size
    if dry_run:
        who = credential_source() or "no credentials found (a real submit would fail)"
        print(f"dry run: would submit {path} ({size} bytes) to {slug} with message '{message}' using {who}")
        return None

    client = api()
    say(f"submitting {path} ({size} bytes) to {slug}: {message}")
    response = call("submit", client.competition_submit, str(path), message, slug, quiet=True, slug=slug, kind="competition")
    text = getattr(response, "message", "") or ""
    if text == getattr(client, "COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE", None):
        raise KitError(f"upload of {path} to {slug} failed", "rerun kit submit")
    if LIMIT_WORDS.search(text) and not getattr(response, "ref", 0):
        raise daily_limit_error(slug, text)
    return wait_for_score(cfg, client, getattr(response, "ref", 0) or 0, message)


def wait_for_score(cfg: Config, client: KaggleApi, ref: int, message: str) -> float | None:
    """The public score of submission ``ref`` (or the one with ``message``); None once cfg.kaggle.poll_timeout passed."""
    slug = cfg.comp.slug
    url = f"{competition_url(slug)}/submissions"
    deadline = time.monotonic() + max(0, cfg.kaggle.poll_timeout)
    status = "PENDING"
    while True:
        submissions = call("list submissions", client.competition_submissions, slug, slug=slug, kind="competition") or []
        mine = next((s for s in submissions if s is not None and (s.ref == ref if ref else s.description == message)), None)
        if mine is not None:
            status = getattr(mine.status, "name", str(mine.status))
            if status == "COMPLETE":
                score = mine.public_score
                print(f"public score for {slug}: {score}")
                try:
                    return float(score) if score not in (None, "") else None
                except ValueError:
                    return None
            if status == "ERROR":
                raise KitError(
                    f"Kaggle could not score the submission to {slug}: {mine.error_description or 'no reason given'}",
                    "check the file against the sample submission, then resubmit",
                )
        if time.monotonic() >= deadline:
            say(f"submission to {slug} is still {status.lower()} after {cfg.kaggle.poll_timeout}s; see {url}")
            return None
        time.sleep(min(_poll_interval(), max(0.0, deadline - time.monotonic())))
