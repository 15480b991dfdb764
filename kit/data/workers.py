"""How kit starts worker processes: from the ``spawn`` context (never fork, TensorFlow may already be loaded in
this process), with children that never run the caller's main script.

A spawned child rebuilds its parent's ``__main__`` before it runs anything: for ``python my_script.py`` it runs
the script again (as ``__mp_main__``). A script that builds records without an ``if __name__ == "__main__":``
guard then builds them again in every worker, where starting a pool fails; the pool replaces each dead worker
and the build waits for ever. kit's workers need nothing from ``__main__`` (their function, initializer and
arguments are all kit's), so while they start ``__main__`` is an empty module.

Ctrl-C in a terminal reaches every process of the group. The parent handles it (it ends the pool and says what to
rerun); a worker that took it too would print a traceback of its own, even while it is still starting up. So the
workers are started with SIGINT ignored, a disposition they inherit and Python keeps.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import signal
import sys
import threading
import types
from collections.abc import Iterator

SPAWN = multiprocessing.get_context("spawn")


@contextlib.contextmanager
def starting_workers() -> Iterator[None]:
    """Within the block, processes started from :data:`SPAWN` get no main script to run and ignore Ctrl-C (see the
    module). Only the main thread may change a signal's handling: from another thread the workers start as they are."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if in_main_thread else None
    try:
        yield
    finally:
        sys.modules["__main__"] = main
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
