"""Multi-worker start-up: a limit on the wait for the other workers, the workers named, SIGTERM kept kit's.

``tf.distribute.MultiWorkerMirroredStrategy()`` blocks until every task ``TF_CONFIG`` names has started, with no
limit and no output, inside TensorFlow's C++ code without releasing Python's GIL: no Python code of the process
runs meanwhile (no signal handler, no other thread). It also installs TensorFlow's own SIGTERM handler (its
preemption notifier), which only takes note. A worker whose peer never comes (a typo in TF_CONFIG, a crashed
machine) then hung silently and ignored SIGTERM.

So kit waits for the other workers *before* building the strategy, in Python: each worker listens on its own
address (so its peers see it has started), tries the others' addresses until every one answers, says whom it waits
for, and gives up after :func:`start_timeout` seconds with one line naming them; SIGTERM ends the wait as it ends
any command. Once every worker answers, the strategy builds at once, and kit puts its SIGTERM handler back.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import threading
import time
from typing import TYPE_CHECKING, Any

from kit.errors import KitError

if TYPE_CHECKING:
    import tensorflow as tf

START_TIMEOUT_S = 600  # seconds a worker waits for the others at start-up
START_TIMEOUT_ENV = "KIT_MULTIWORKER_START_S"  # raises (or lowers) it
POLL_S = 0.2  # how often a waiting worker tries the others' addresses


def tf_config() -> dict[str, Any]:
    """``TF_CONFIG`` as a mapping ({} when unset); invalid JSON is one KitError."""
    raw = os.environ.get("TF_CONFIG", "")
    if not raw:
        return {}
    try:
        config = json.loads(raw)
        if not isinstance(config, dict) or not isinstance(config.get("cluster", {}), dict):
            raise ValueError
    except ValueError:
        raise KitError(
            "TF_CONFIG is not valid JSON", 'set TF_CONFIG=\'{"cluster": {"worker": [...]}, "task": {...}}\' or unset it'
        ) from None
    return config


def tf_config_tasks() -> int:
    """Number of worker/chief tasks in ``TF_CONFIG`` (0 when unset)."""
    cluster = tf_config().get("cluster", {})
    return len(cluster.get("worker", [])) + len(cluster.get("chief", []))


def other_tasks() -> list[tuple[str, str]]:
    """(``worker 1``, ``host:port``) of every chief/worker task of TF_CONFIG but this one."""
    config = tf_config()
    task = config.get("task", {})
    me = (task.get("type"), int(task.get("index", 0)))
    found = []
    for kind in ("chief", "worker"):
        for index, address in enumerate(config.get("cluster", {}).get(kind, [])):
            if (kind, index) != me:
                found.append((f"{kind} {index}", str(address)))
    return found


def _answers(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=1):
            return True
    except (OSError, ValueError):
        return False


def start_timeout() -> float:
    value = os.environ.get(START_TIMEOUT_ENV, "")
    try:
        return float(value) if value else START_TIMEOUT_S
    except ValueError:
        raise KitError(f"{START_TIMEOUT_ENV}={value!r} is not a number of seconds", f"e.g. {START_TIMEOUT_ENV}=1800") from None


def _listen(address: str) -> socket.socket | None:
    """A socket listening on this worker's own port, so peers waiting in :func:`wait_for_workers` see it started;
    None when the port cannot be had (then only TensorFlow's server, once built, answers for this worker)."""
    try:
        listener = socket.socket(socket.AF_INET6 if address.startswith("[") else socket.AF_INET)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("", int(address.rpartition(":")[2])))
        listener.listen()
        return listener
    except (OSError, ValueError):
        return None


def own_address() -> str | None:
    config = tf_config()
    task = config.get("task", {})
    tasks = config.get("cluster", {}).get(task.get("type"), [])
    index = int(task.get("index", 0))
    return str(tasks[index]) if 0 <= index < len(tasks) else None


def wait_for_workers(limit: float) -> None:
    """Return once every other worker of TF_CONFIG accepts a connection; a KitError naming those that do not after
    ``limit`` seconds. This worker listens on its own address meanwhile, so its peers do not wait for it."""
    others = other_tasks()
    if not others:
        return
    address = own_address()
    listener = _listen(address) if address else None
    started, announced = time.monotonic(), False
    try:
        while True:
            silent = [f"{name} ({where})" for name, where in others if not _answers(where)]
            if not silent:
                return
            if time.monotonic() - started > limit:
                raise KitError(
                    f"multi-worker start-up: no answer from {', '.join(silent)} after {limit:.0f} s",
                    "start every worker of TF_CONFIG (each with its own task index), fix TF_CONFIG's addresses, or wait "
                    f"longer with {START_TIMEOUT_ENV}=<seconds>",
                )
            if not announced:
                print(f"multi-worker start-up: waiting for {', '.join(silent)} (up to {limit:.0f} s)", flush=True)
                announced = True
            time.sleep(POLL_S)
    finally:
        if listener is not None:
            listener.close()


def start_multiworker() -> tf.distribute.Strategy:
    """``MultiWorkerMirroredStrategy()`` once every worker answers (:func:`wait_for_workers`), with the SIGTERM
    handler the process had put back over TensorFlow's."""
    import tensorflow as tf

    wait_for_workers(start_timeout())
    handler = signal.getsignal(signal.SIGTERM)
    strategy = tf.distribute.MultiWorkerMirroredStrategy()
    if handler is not None and threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)  # TensorFlow's preemption notifier replaced it: SIGTERM would only be noted
    return strategy
