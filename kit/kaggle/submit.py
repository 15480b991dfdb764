"""Submit to a Kaggle competition: find and validate the file, word the message from its provenance, upload, await the score."""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING

from kit.config import git_commit
from kit.errors import KitError
from kit.kaggle.client import (
    LIMIT_WORDS,
    api,
    call,
    competition_url,
    credential_source,
    daily_limit_error,
    poll_interval,
    refuse_secrets,
    say,
)
from kit.provenance import describe, read_provenance, run_scores

if TYPE_CHECKING:
    from kaggle.api.kaggle_api_extended import KaggleApi

    from kit.config import Config


def latest_submission(cfg: Config) -> Path:
    """The newest ``<run.root>/<comp>/*/*/<predict.output>``: a run's, or an ensemble's (``ensembles/<id>/``)."""
    base = Path(cfg.run.root) / cfg.comp.name
    found = [p for p in base.glob(f"*/*/{Path(cfg.predict.output).name}") if p.is_file()]
    if not found:
        raise KitError(
            f"no submission found under {base}/<model>/<run>/", "run kit predict first, or pass --file <submission.csv>"
        )
    return max(found, key=lambda p: p.stat().st_mtime)


def submission_message(cfg: Config, path: Path) -> str:
    """cfg.kaggle.message, or one worded from the file's own provenance (kit.provenance: the runs, threshold, TTA and
    honest score ``kit predict`` recorded when it wrote this very file), then the git commit of the kit submitting it;
    a file without one (made elsewhere, or changed since) gets a neutral message that claims no score."""
    if cfg.kaggle.message:
        return cfg.kaggle.message
    record = read_provenance(path)
    if record is None:
        return f"kit {path.name} (no kit predict record of this file: no score claimed)"[:250]
    commit = git_commit()
    return " ".join(p for p in ("kit", describe(record), f"git {commit}" if commit else "") if p)[:250]


def refuse_degenerate(cfg: Config, path: Path) -> None:
    """A KitError naming the run when it predicts a constant: the file's provenance says so (kit predict), or its
    runs' metrics.json / cv.json do (kit evaluate, k-fold), or every row of the file has one label."""
    import pandas as pd

    record = read_provenance(path) or {}
    runs = [Path(r["run"]) for r in record.get("runs", [])] or [path.parent]
    reason = record.get("degenerate") or next((found for r in runs if (found := run_scores(r).get("degenerate"))), None)
    if reason is None:
        column = cfg.comp.submission.label_column
        labels = pd.read_csv(path, usecols=lambda name: name == column, dtype=str, keep_default_na=False).get(column)
        if labels is not None and len(labels) > 1 and labels.nunique() == 1:
            reason = f"every one of the {len(labels)} rows of {path.name} has {column} {labels.iloc[0]}"
    if reason:
        raise KitError(
            f"run {runs[0] if len(runs) == 1 else path.parent} predicts a constant ({reason}); {path} would score as chance",
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
        time.sleep(min(poll_interval(), max(0.0, deadline - time.monotonic())))
