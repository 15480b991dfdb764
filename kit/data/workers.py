"""How kit starts worker processes: from the ``spawn`` context (never fork, TensorFlow may already be loaded in
this process), with children that never run the caller's main script.

A spawned child rebuilds its parent's ``__main__`` before it runs anything: for ``python my_script.py`` it runs
the script again (as ``__mp_main__``). A script that builds records without an ``if __name__ == "__main__":``
guard then builds them again in every worker, where starting a pool fails; the pool replaces each dead worker
and the build waits for ever. kit's workers need nothing from ``__main__`` (their function, initializer and
arguments are all kit's), so while they start ``__main__`` is an empty module.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import sys
import types
from collections.abc import Iterator

SPAWN = multiprocessing.get_context("spawn")


@contextlib.contextmanager
def main_script_hidden() -> Iterator[None]:
    """Within the block, processes started from :data:`SPAWN` get no main script to run (see the module)."""
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        yield
    finally:
        sys.modules["__main__"] = main
