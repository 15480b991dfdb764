"""The public score each run got on Kaggle, for ``kit runs``: matched by the message ``kit submit`` writes.

Kaggle is asked once (``competition_submissions``); offline or without credentials the public column says so and
the table still prints.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

from kit.errors import KitError
from kit.kaggle.client import api, call
from kit.runs_table import RunRow, no_scores, parse_float

if TYPE_CHECKING:
    from kit.config import Config

SUBMISSIONS_PAGE = 100  # Kaggle's list is paged; the newest page holds the submissions a table is about


def _run_pattern(model: str, run_id: str) -> re.Pattern[str]:
    """What ``kit submit``'s message says about a run: ``<model> run <run-id>`` (a longer id is another run)."""
    return re.compile(rf"(?:^|\s){re.escape(model)} run {re.escape(run_id)}(?=\s|$)")


def attach_public_scores(cfg: Config, rows: Sequence[RunRow]) -> str | None:
    """Fill ``public`` from the competition's Kaggle submissions; return why there are none (offline, ...)."""
    slug = cfg.comp.slug
    if cfg.comp.source != "competition" or not slug:
        return no_scores(rows, f"no public scores: {cfg.comp.name} is not a Kaggle competition", "n/a")
    try:
        submissions = call(
            "list submissions", api().competition_submissions, slug, page_size=SUBMISSIONS_PAGE, slug=slug, kind="competition"
        )
    except KitError as exc:  # no credentials, offline, rules not accepted: the table prints all the same
        note = "no credentials" if "credentials" in exc.message else "offline" if "cannot reach" in exc.message else "unavailable"
        return no_scores(rows, f"no public scores ({exc.one_line()})", note)
    for row in rows:
        pattern = _run_pattern(row.values["model"], row.values["run"])
        mine = [s for s in submissions or [] if s is not None and pattern.search(getattr(s, "description", "") or "")]
        scored = [s for s in mine if parse_float(str(getattr(s, "public_score", "") or "")) is not None]
        row.values["public"] = parse_float(str(scored[0].public_score)) if scored else None  # the list is newest first
        if len(scored) > 1:
            row.notes["public"] = f"newest of {len(scored)}"
        elif mine and not scored:
            row.notes["public"] = getattr(getattr(mine[0], "status", None), "name", "pending").lower()
        elif not mine:
            row.notes["public"] = "not submitted"
    return None
