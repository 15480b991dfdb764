"""Shared test set-up: quiet TensorFlow, a private Keras home, small thread pools on 2 cores, the fast lane's guard.

Also the suite's only wall-clock limits. No test may depend on how fast the machine is: a test waits for a child
to reach a state by watching a file or a line it writes (``wait_until``), never by sleeping a fixed time, and every
limit below only guards against a real hang. They are generous on purpose; a slower machine or CI multiplies
them all with KIT_TEST_TIMEOUT_SCALE (e.g. KIT_TEST_TIMEOUT_SCALE=3 make test).
"""

from __future__ import annotations

import multiprocessing.process
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

# A suite started in the background of a script (`nohup make test &`) inherits SIGINT ignored, and so would every kit
# child the Ctrl-C tests interrupt: they would wait out COMMAND_TIMEOUT_S. A Python handler here is reset to the
# default in each child at exec, so the children answer Ctrl-C as in a terminal.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

TIMEOUT_SCALE = float(os.environ.get("KIT_TEST_TIMEOUT_SCALE", "1"))

TOOL_TIMEOUT_S = 300 * TIMEOUT_SCALE  # an external tool: ruff, lint-imports, hadolint, bash, a CPU-only helper
COMMAND_TIMEOUT_S = 600 * TIMEOUT_SCALE  # one kit command or helper script in a subprocess (each starts TensorFlow)
DEMO_TIMEOUT_S = 1800 * TIMEOUT_SCALE  # a whole `kit demo` run: data, records, 6 epochs of training, predict, score
STATE_TIMEOUT_S = 600 * TIMEOUT_SCALE  # a child reaching a state the test waits for (a file, a line in its log)
REAP_TIMEOUT_S = 120 * TIMEOUT_SCALE  # a SIGKILLed child exiting and its pipes closing
SLOW_PATH_BUDGET_S = 60 * TIMEOUT_SCALE  # an in-process step that must not be pathologically slow (quadratic, re-decoding)
POLL_INTERVAL_S = 0.005  # how often wait_until looks: short, so a child is caught soon after it gets there


def wait_until(ready: Callable[[], bool], what: str, proc: subprocess.Popen | None = None) -> None:
    """Return as soon as ``ready()`` is true; fail if ``proc`` ends first or STATE_TIMEOUT_S passes (a hang)."""
    deadline = time.monotonic() + STATE_TIMEOUT_S
    while not ready():
        if proc is not None:
            assert proc.poll() is None, f"the child ended before {what}"
        assert time.monotonic() < deadline, f"no {what} after {STATE_TIMEOUT_S:.0f} s (a hang? else raise KIT_TEST_TIMEOUT_SCALE)"
        time.sleep(POLL_INTERVAL_S)


def kit_error_line(args: list[str], cwd: str | os.PathLike, env: dict[str, str], timeout: float = COMMAND_TIMEOUT_S) -> str:
    """Run ``python -m kit ARGS`` and return its one ``error:`` line; fail unless it exited 2 with exactly one
    such line and no traceback (kit's promise for a user's mistake)."""
    import sys

    command = [sys.executable, "-m", "kit", *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    return errors[0]


# --- the fast lane ---------------------------------------------------------------------------------------------

FAST_LANE = os.environ.get("KIT_TEST_FAST") == "1"  # set by `make test-fast`, which also leaves out -m slow


@pytest.fixture(autouse=True)
def fast_lane_guard(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``make test-fast`` runs the tests not marked ``slow``. In that lane a test that starts a process (a kit command,
    a records worker pool) or trains a model (``keras.Model.fit``) without the mark fails at that call, naming the
    mark: the lane stays fast as tests are added, and ``make test`` still runs everything."""
    if not FAST_LANE or request.node.get_closest_marker("slow"):
        yield
        return

    def refuse(what: str) -> Callable[..., None]:
        def refused(*_args: object, **_kwargs: object) -> None:
            pytest.fail(f"{request.node.nodeid} {what}: mark it @pytest.mark.slow (make test-fast leaves those out)")

        return refused

    import keras  # the fast lane pays TensorFlow's import once per worker to guard fit

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse("starts a subprocess"))
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse("starts a worker process"))
    monkeypatch.setattr(keras.Model, "fit", refuse("trains a model"))
    yield
