"""One error type for everything a user can fix themselves, and the one rule for every line kit shows.

The CLI catches :class:`KitError`, prints ``error: <message> (fix: <hint>)`` on one line and exits
with code 2, so a mistake in a CSV, a YAML file or a command line never ends in a traceback. A full disk,
missing permissions or a file where a folder belongs are the user's to fix too: :func:`os_error` and
:func:`tf_disk_full` turn them into the same one line.

Every line kit raises or prints may quote input (a CSV's header, a setting's value, a path), and input may be
anything: the environment (``/proc/self/environ`` named as a table), a whole file on one line. So a KitError's
message and hint are redacted (:func:`kit.secrets.redact`) and cut to ``MAX_LINE_CHARS`` when it is made, a
value quoted from input is cut to ``QUOTE_CHARS`` (:func:`quoted`, :func:`listing`), and the CLI writes its
output through :class:`SafeStream`, which applies the same scan and bound to every line printed.
"""

from __future__ import annotations

import contextlib
import difflib
import errno
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO

from kit.secrets import Credentials, credential_values, redact

EXIT_USER_ERROR = 2
MAX_LINE_CHARS = 1000  # characters of one line kit prints or raises; the rest is cut and the cut said
QUOTE_CHARS = 80  # characters of one value quoted from input (a cell, a column name, a setting's value)
QUOTED_ITEMS = 8  # values of a list quoted from input (a CSV's columns)
CUT = " [... cut at {} characters]"


def safe_line(text: str, limit: int = MAX_LINE_CHARS) -> str:
    """``text`` as one line: credentials redacted, whitespace runs made one space, at most ``limit`` characters."""
    line = " ".join(redact(str(text)).split())
    return line if len(line) <= limit else line[:limit] + CUT.format(limit)


def quoted(value: Any, limit: int = QUOTE_CHARS) -> str:
    """A value from input as a message shows it: at most ``limit`` characters, and in quotes with escapes when it holds
    control characters (a NUL, a newline)."""
    text = str(value)
    text = text if text.isprintable() else repr(text)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def listing(values: Iterable[Any], n: int = QUOTED_ITEMS) -> str:
    """Values from input as a message lists them: the first ``n``, each :func:`quoted`, and how many there are."""
    values = list(values)
    shown = ", ".join(quoted(v) for v in values[:n])
    return shown + (f", ... ({len(values)} in all)" if len(values) > n else "")


class KitError(Exception):
    """A problem the user can fix: ``message`` says what is wrong, ``hint`` how to fix it.

    Both are redacted and bounded when the error is made, so no code path can raise a credential or a whole file.
    """

    def __init__(self, message: str, hint: str = "") -> None:
        message, hint = safe_line(message), safe_line(hint)
        super().__init__(message)
        self.message = message
        self.hint = hint

    def one_line(self) -> str:
        return safe_line(self.message if not self.hint else f"{self.message} (fix: {self.hint})")


class SafeStream:
    """A text stream that redacts the credentials in ``credentials`` (read once) from every write and cuts every
    line at MAX_LINE_CHARS; everything else is the wrapped stream's. The CLI puts it over stdout and stderr."""

    def __init__(self, stream: TextIO, credentials: Credentials | None = None) -> None:
        self.stream = stream
        self.credentials = credential_values() if credentials is None else credentials
        self.column = 0  # characters written since the last line break; over MAX_LINE_CHARS once the line was cut

    def write(self, text: str) -> int:
        if not isinstance(text, str):  # a text stream: click tells text from binary streams by this TypeError
            raise TypeError(f"write() argument must be str, not {type(text).__name__}")
        out = []
        for piece in re.split(r"([\r\n])", redact(text, self.credentials)):
            if piece in ("\r", "\n"):
                out.append(piece)
                self.column = 0
                continue
            room = MAX_LINE_CHARS - self.column
            if room < 0:
                continue  # the rest of a line already cut
            if len(piece) > room:
                out.append(piece[:room] + CUT.format(MAX_LINE_CHARS))
                self.column = MAX_LINE_CHARS + 1
            else:
                out.append(piece)
                self.column += len(piece)
        self.stream.write("".join(out))
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.stream, name)


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
        f"unknown {kind} '{quoted(value)}'",
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


def _shown_path(path: str | os.PathLike) -> Path:
    """A path an error names, as the user knows it: a kit.io temp file (".best.keras.x1y2.tmp") is its folder."""
    name = Path(os.fsdecode(path))
    return name.parent if name.name.startswith(".") and ".tmp" in name.name else name


def os_error(exc: OSError, folder: str | os.PathLike | None = None) -> KitError | None:
    """A one-line KitError for a user-caused OS error (full disk, permissions, a file where a folder
    belongs), or None when it does not look like one and must surface as a traceback. A full disk reported
    without a file name names ``folder`` (where the command was writing) when given."""
    hint = _OS_HINTS.get(exc.errno)  # type: ignore[arg-type]
    if hint is None:
        return None
    full = exc.errno in (errno.ENOSPC, errno.EDQUOT)
    path = exc.filename if exc.filename is not None or not full else folder
    if path is None and not full and exc.errno != errno.EROFS:
        return None  # no path named: nothing tells it is about the user's folders
    reason = (exc.strerror or str(exc)).lower()
    return KitError(reason if path is None else f"{reason}: {_shown_path(path)}", hint)


# A full disk in other libraries' words: TensorFlow's file errors name the file before the reason; h5py (Keras
# weights files) raises a RuntimeError naming it as filename = '...'.
DISK_FULL_TEXT = "No space left on device"
DISK_FULL_FILE = (re.compile(r"filename = '([^']+)'"), re.compile(r"(\S+); No space left on device"))


def disk_full(exc: BaseException, folder: str | os.PathLike | None = None) -> KitError | None:
    """A full disk however it is reported (an OSError, TensorFlow's and h5py's own error types) as one line naming
    the file (an OSError's) or the folder of the file (the others') it names, else ``folder``; None for any other
    error."""
    if isinstance(exc, OSError):
        return os_error(exc, folder) if exc.errno in (errno.ENOSPC, errno.EDQUOT) else None
    text = str(exc)
    if DISK_FULL_TEXT not in text:
        return None
    named = next((match.group(1) for pattern in DISK_FULL_FILE if (match := pattern.search(text))), None)
    where = Path(named).parent if named else folder  # the folder of the file being written (a temp name means nothing)
    return KitError(f"no space left on device{f': {where}' if where else ''}", _SPACE_HINT)


@contextlib.contextmanager
def full_disk_named(folder: str | os.PathLike) -> Iterator[None]:
    """Inside: a full disk, however reported, is one KitError naming the file, else ``folder`` (a training run's
    folder), never a traceback or a line naming nothing."""
    try:
        yield
    except KitError:
        raise
    except Exception as exc:
        error = disk_full(exc, folder)
        if error is None:
            raise
        raise error from None
