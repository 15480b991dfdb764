"""One error type for everything a user can fix themselves.

The CLI catches :class:`KitError`, prints ``error: <message> (fix: <hint>)`` on one line and exits
with code 2, so a mistake in a CSV, a YAML file or a command line never ends in a traceback.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

EXIT_USER_ERROR = 2


class KitError(Exception):
    """A problem the user can fix: ``message`` says what is wrong, ``hint`` how to fix it."""

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        text = self.message if not self.hint else f"{self.message} (fix: {self.hint})"
        return " ".join(text.split())


def nearest(word: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The closest valid spellings of ``word``; prefix matches first when nothing is close."""
    choices = sorted(set(choices))
    close = difflib.get_close_matches(word, choices, n=n, cutoff=0.5)
    if close:
        return close
    tail = word.rsplit(".", 1)[-1]
    return [c for c in choices if c.rsplit(".", 1)[-1].startswith(tail[:3])][:n] or choices[:n]


def unknown_choice(kind: str, value: str, choices: Iterable[str]) -> KitError:
    """A KitError for a value not among ``choices``, suggesting the nearest ones."""
    choices = list(choices)
    near = nearest(value, choices)
    return KitError(
        f"unknown {kind} '{value}'",
        f"use one of: {', '.join(near)}" + (f" (all: {', '.join(sorted(choices))})" if len(choices) <= 12 else ""),
    )
