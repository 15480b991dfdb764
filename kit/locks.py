"""One writer at a time: an exclusive ``flock`` held for a block, released when the process ends however it ends
(SIGKILL included), so a rerun after a kill just works. Readers never take it.

Used by the run folders (:func:`kit.runs.writing`: the lock file names the process that holds it) and the records
build (:mod:`kit.data.records`: the folder itself is the lock).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Callable, Iterator
from pathlib import Path

from kit.errors import KitError


@contextlib.contextmanager
def exclusive(path: Path, busy: Callable[[str], KitError], *, record_pid: bool = False) -> Iterator[None]:
    """Hold an exclusive flock on ``path`` (a file, created if missing, or an existing folder) for the block; when
    another process holds it, raise ``busy(holder)``, ``holder`` naming that process when ``record_pid`` files keep
    it (``process <pid> (<its command>)``), else ``another process``."""
    fd = os.open(path, os.O_RDONLY) if path.is_dir() else os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise busy(holder(fd) if record_pid else "another process") from None
        if record_pid:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)


def holder(fd: int) -> str:
    """``process <pid> (<its command>)`` from a lock file (the command from /proc, never stored in the file)."""
    pid = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    if not pid.isdigit():  # written a moment after the lock is taken
        return "another process"
    try:
        argv = [os.fsdecode(a) for a in Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")]
    except OSError:
        return f"process {pid}"
    command = " ".join(" ".join([Path(argv[0]).name, *argv[1:]]).split())  # a `python -c` script: one line
    return f"process {pid} ({command[:160]}{'...' if len(command) > 160 else ''})"
