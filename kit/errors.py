"""One error type for everything a user can fix themselves.

The CLI catches :class:`KitError`, prints ``error: <message> (fix: <hint>)`` on one line and exits
with code 2, so a mistake in a CSV, a YAML file or a command line never ends in a traceback. A full disk,
missing permissions or a file where a folder belongs are the user's to fix too: :func:`os_error` and
:func:`tf_disk_full` turn them into the same one line.
"""

from __future__ import annotations

import difflib
import errno
import os
import re
from collections.abc import Iterable
from pathlib import Path

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


# --- errors of the user's machine, told apart from kit's bugs (the CLI prints these as one line) ----------

_SPACE_HINT = (
    "free disk space, or point data.records_root / run.root at a disk with room; then rerun the same command "
    "(finished shards, best.keras and the resume checkpoint are kept)"
)
_PATHS_HINT = "check data.root, data.records_root and run.root (and --run / --file)"
# OS errors caused by the user's machine or settings, not by kit: each becomes one line naming the path.
# Anything else (FileNotFoundError included: kit checks the paths a user gives) stays a traceback: a bug.
_OS_HINTS = {
    errno.ENOSPC: _SPACE_HINT,
    errno.EDQUOT: _SPACE_HINT,
    errno.EROFS: "the file system is read-only: point data.records_root / run.root at a writable folder",
    errno.EACCES: f"fix the permissions of that path, or {_PATHS_HINT}",
    errno.EPERM: f"fix the permissions of that path, or {_PATHS_HINT}",
    errno.ENOTDIR: f"a file stands where a folder is expected: {_PATHS_HINT}",
    errno.EEXIST: f"a file stands where a folder is expected: {_PATHS_HINT}",
    errno.EISDIR: f"a folder stands where a file is expected: {_PATHS_HINT}",
}


def os_error(exc: OSError) -> KitError | None:
    """A one-line KitError for a user-caused OS error (full disk, permissions, a file where a folder
    belongs), or None when it does not look like one and must surface as a traceback."""
    hint = _OS_HINTS.get(exc.errno)  # type: ignore[arg-type]
    if hint is None:
        return None
    path = exc.filename
    if path is None and exc.errno not in (errno.ENOSPC, errno.EDQUOT, errno.EROFS):
        return None  # no path named: nothing tells it is about the user's folders
    reason = (exc.strerror or str(exc)).lower()
    if path is None:
        return KitError(reason, hint)
    name = Path(os.fsdecode(path))
    # a kit.io temp file (".best.keras.x1y2.tmp"): the folder means more to the user than the temp name
    where = name.parent if name.name.startswith(".") and ".tmp" in name.name else name
    return KitError(f"{reason}: {where}", hint)


def tf_disk_full(exc: BaseException) -> KitError | None:
    """TensorFlow reports a full disk (summary writers, checkpoints, TFRecords) as its own error type, not as
    an OSError: the same one line for it, naming the folder; None for any other TensorFlow error."""
    text = str(exc)
    if not type(exc).__module__.startswith("tensorflow") or "No space left on device" not in text:
        return None
    match = re.search(r"(\S+); No space left on device", text)
    return KitError(f"no space left on device{f': {Path(match.group(1)).parent}' if match else ''}", _SPACE_HINT)
