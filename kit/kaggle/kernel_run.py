"""Follow a pushed kernel version to its end: wait with a progress line, fetch its outputs into a run folder, and on
failure show Kaggle's message and the last lines of the kernel's log.

``kit kernel run`` pushes (:func:`kit.kaggle.kernel.push`) then follows the new version; ``kit kernel status --wait``
follows one pushed before. Waiting only watches: Ctrl-C stops the watching (:class:`WaitStopped`), never the kernel.
The status is polled with a backoff (``KIT_KAGGLE_POLL`` seconds first, growing to ``MAX_POLL_S``): a kernel runs
for hours, and Kaggle rate-limits its API.

A version's outputs become a run folder like those ``kit train`` writes, so ``kit runs`` lists it beside the local
runs and ``kit submit``'s message names it::

    <run.root>/<comp>/<model>/kernel-<kernel slug>-v<version>/
        config.yaml, metrics.json, history.csv, plots/, best.keras, ...   the training kernel's best run (its run/)
        submission.csv, probabilities.csv, kit-config.yaml                what the kernel left in /kaggle/working
        kernel.log                                                        the kernel's log (Kaggle's JSON)
        kernel.json                                                       which version, how it ended, what it sent

Names come from Kaggle's answer, so they are not trusted: the client refuses a name that leaves its download
folder, the files land in a staging folder outside the competition's runs, and only then move into place, so a
run folder is never half written and nothing outside it is touched.
"""

from __future__ import annotations

import json
import re
import shutil
import sys
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from kit.errors import KitError
from kit.io import write_json
from kit.kaggle.client import api, call, poll_interval, say, username
from kit.kaggle.kernel import kernel_ref, last_pushed, push
from kit.kaggle.kernel_script import CONFIG_FILE, SUBMISSION_FILE

if TYPE_CHECKING:
    from kaggle.api.kaggle_api_extended import KaggleApi

    from kit.config import Config

COMPLETE = "complete"
FAILED = frozenset({"error", "cancel_requested", "cancel_acknowledged"})  # KernelWorkerStatus names, lower case
MAX_POLL_S = 60.0  # the longest pause between two looks at a running kernel
BACKOFF = 1.5  # each pause this many times the one before, up to MAX_POLL_S
PROGRESS_EVERY_S = 300.0  # a log (not a terminal) gets a progress line this often while the state holds
KERNEL_FILE = "kernel.json"
LOG_FILE = "kernel.log"
LOG_TAIL_LINES = 20
LOG_LINE_CHARS = 300  # a log line shown on failure is cut here (a progress bar can be one very long line)
RUN_OUTPUT = "run"  # the training kernel copies its best run here (kernel_script.TRAIN_BODY)
STAGING = ".kernel-downloads"  # under run.root, beside the competitions: never read as a run
SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # a model name from the kernel's config, used as a folder


@dataclass(frozen=True)
class Version:
    """One version of a kernel: ``ref`` (owner/slug), its number (None: the latest) and its session's time limit."""

    ref: str
    number: int | None
    time_limit_s: int

    @property
    def label(self) -> str:
        return f"{self.ref} version {self.number}" if self.number else self.ref

    @property
    def slug(self) -> str:
        return self.ref.split("/", 1)[1]

    @property
    def client_ref(self) -> str:
        """How the client names it: owner/slug/version (it asks Kaggle for version label v<N>)."""
        return f"{self.ref}/{self.number}" if self.number else self.ref


class WaitStopped(KeyboardInterrupt):
    """Ctrl-C while waiting for ``version`` or fetching its outputs: the kernel goes on on Kaggle (the command says how
    to wait again)."""

    def __init__(self, version: Version) -> None:
        super().__init__(version.label)
        self.version = version


def chosen_version(cfg: Config, client: KaggleApi, inference: bool = False, number: int | None = None) -> Version:
    """The training kernel (``inference``: the --from-run one) at version ``number``, else the version kit pushed
    last from here, else the latest (number None)."""
    pushed = last_pushed(cfg, inference)
    ref = pushed.ref if pushed else kernel_ref(cfg, username(client), inference)
    limit = pushed.time_limit_s if pushed else round(cfg.comp.kernel_hours * 3600)
    return Version(ref, number if number is not None else pushed.version if pushed else None, limit)


def numbered(version: Version) -> Version:
    """``version`` itself when it has a number; a KitError naming the fix when it does not (nothing pushed from here)."""
    if version.number is None:
        raise KitError(
            f"which version of {version.ref}? kit pushed none from this folder",
            "pass --version N (kit kernel push prints it; the kernel's page lists them)",
        )
    return version


def look(client: KaggleApi, version: Version) -> tuple[str, str]:
    """(state, Kaggle's failure message or '') of the version's session, e.g. ('running', '')."""
    response = call("kernel status", client.kernels_status, version.client_ref, slug=version.ref, kind="kernel")
    state = getattr(response.status, "name", str(response.status)).lower()
    return state, getattr(response, "failure_message", None) or ""


def status(cfg: Config, inference: bool = False, number: int | None = None) -> str:
    """Print and return the state of the kernel's version (queued, running, complete, error, ...): one look."""
    client = api()
    version = chosen_version(cfg, client, inference, number)
    state, failure = look(client, version)
    print(f"{version.label}: {state}" + (f" ({failure})" if failure else ""))
    if state == COMPLETE:
        say("fetch its outputs into a run folder with --wait")
    return state


def progress_line(version: Version, state: str, elapsed_s: float) -> str:
    elapsed, limit = timedelta(seconds=int(elapsed_s)), timedelta(seconds=version.time_limit_s)
    return f"{version.label}: {state}, {elapsed} elapsed of the kernel's {limit} limit"


def wait(client: KaggleApi, version: Version, started: float | None = None) -> tuple[str, str]:
    """Poll until the version completes or fails; return (state, failure message). One progress line per state
    (rewritten in place on a terminal, repeated every PROGRESS_EVERY_S in a log)."""
    started = time.monotonic() if started is None else started
    terminal, pause = sys.stderr.isatty(), poll_interval()
    shown, shown_at, width = "", -PROGRESS_EVERY_S, 0
    try:
        while True:
            state, failure = look(client, version)
            elapsed = time.monotonic() - started
            line = progress_line(version, state, elapsed)
            if terminal:
                sys.stderr.write("\r" + line.ljust(width))
                sys.stderr.flush()
                width = max(width, len(line))
            elif state != shown or elapsed - shown_at >= PROGRESS_EVERY_S:
                say(line)
                shown_at = elapsed
            shown = state
            if state == COMPLETE or state in FAILED:
                return state, failure
            time.sleep(pause)
            pause = min(pause * BACKOFF, max(MAX_POLL_S, poll_interval()))
    finally:
        if terminal and width:
            sys.stderr.write("\n")


# ----------------------------------------------------------------------------- outputs


def run_folder(cfg: Config, version: Version, model: str) -> Path:
    return Path(cfg.run.root) / cfg.comp.name / model / f"kernel-{version.slug}-v{version.number}"


def fetched(cfg: Config, version: Version) -> Path | None:
    """The run folder this version's outputs were fetched into before, if any."""
    found = sorted((Path(cfg.run.root) / cfg.comp.name).glob(f"*/kernel-{version.slug}-v{version.number}/{KERNEL_FILE}"))
    return found[0].parent if found else None


def _model_name(config: Path) -> str | None:
    """``model.name`` of a config the kernel wrote, when it is a plain folder name (it names a folder here)."""
    try:
        name = (yaml.safe_load(config.read_text()) or {}).get("model", {}).get("name")
    except (OSError, ValueError, AttributeError, yaml.YAMLError):
        return None
    return name if isinstance(name, str) and SAFE_NAME.fullmatch(name) else None


def _arrange(received: Path, ready: Path, slug: str) -> list[str]:
    """Move the received files into the run folder's layout (the best run's files at the top, the working folder's
    beside them and winning a clash, the log as kernel.log); return the names Kaggle sent."""
    files = sorted(p for p in received.rglob("*") if p.is_file() or p.is_symlink())
    names = [p.relative_to(received).as_posix() for p in files]
    if any(p.is_symlink() for p in files):
        raise KitError(f"the outputs of kernel {slug} hold a symbolic link: not kept", "look at the kernel's output page")
    order = sorted(files, key=lambda p: p.relative_to(received).parts[0] != RUN_OUTPUT)  # run/ first, the rest on top
    for path in order:
        parts = path.relative_to(received).parts
        if parts == (f"{slug}.log",):  # where kernels_output writes the session's log
            parts = (LOG_FILE,)
        elif parts[0] == RUN_OUTPUT and len(parts) > 1:
            parts = parts[1:]
        target = ready.joinpath(*parts)
        target.parent.mkdir(parents=True, exist_ok=True)
        path.replace(target)
    if not (ready / "config.yaml").is_file() and (ready / CONFIG_FILE).is_file():
        shutil.copyfile(ready / CONFIG_FILE, ready / "config.yaml")  # the inference kernel: its resolved config
    return names


def fetch(cfg: Config, client: KaggleApi, version: Version, state: str, failure: str = "") -> Path:
    """Download the version's outputs and log into its run folder (replacing an earlier fetch); return the folder."""
    version = numbered(version)
    if "://" in str(cfg.run.root):
        raise KitError(
            f"kernel outputs are fetched to a local folder, not run.root={cfg.run.root}", "set run.root to a local folder"
        )
    staging = Path(cfg.run.root) / STAGING / f"{cfg.comp.name}-{version.slug}-v{version.number}"
    shutil.rmtree(staging, ignore_errors=True)
    received, ready = staging / "received", staging / "ready"
    try:
        received.mkdir(parents=True)
        ready.mkdir()
        say(f"fetching the outputs of {version.label}")
        call(
            "kernel output", client.kernels_output, version.client_ref, str(received), force=True, slug=version.ref, kind="kernel"
        )
        names = _arrange(received, ready, version.slug)
        write_json(
            ready / KERNEL_FILE,
            {"kernel": version.ref, "version": version.number, "state": state, "failure": failure, "files": names},
        )
        folder = run_folder(cfg, version, _model_name(ready / "config.yaml") or cfg.model.name)
        earlier = fetched(cfg, version)
        if earlier is not None:
            shutil.rmtree(earlier)
        folder.parent.mkdir(parents=True, exist_ok=True)
        ready.rename(folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return folder


def log_lines(text: str) -> list[str]:
    """The text lines of a kernel log: Kaggle keeps it as JSON, a list of {stream_name, time, data} entries."""
    try:
        entries = json.loads(text)
    except ValueError:
        return text.splitlines()
    if not isinstance(entries, list):
        return text.splitlines()
    return "".join(str(e.get("data", "")) for e in entries if isinstance(e, dict)).splitlines()


def log_tail(folder: Path, n: int = LOG_TAIL_LINES) -> list[str]:
    path = folder / LOG_FILE
    lines = log_lines(path.read_text(errors="replace")) if path.is_file() else []
    return [line[:LOG_LINE_CHARS] for line in lines if line.strip()][-n:]


# ----------------------------------------------------------------------------- the commands


def follow(cfg: Config, client: KaggleApi, version: Version, started: float | None = None) -> Path:
    """Wait for the version, fetch its outputs into a run folder and return it; a failed version's Kaggle message
    and last log lines are shown, then a KitError (so the command exits non-zero). Ctrl-C raises WaitStopped."""
    version = numbered(version)
    try:
        state, failure = wait(client, version, started)
        folder = fetch(cfg, client, version, state, failure)
    except KeyboardInterrupt:  # the kernel goes on; waiting (and fetching) again is what is left to do
        raise WaitStopped(version) from None
    if state in FAILED:
        tail = log_tail(folder)
        if tail:
            say(f"the last {len(tail)} lines of the kernel's log ({folder / LOG_FILE}):")
            for line in tail:
                say(f"  {line}")
        raise KitError(
            f"kernel {version.label} ended {state}: {failure or 'Kaggle gave no message'}",
            f"read {folder / LOG_FILE}, fix what it says, then kit kernel run again",
        )
    print(f"outputs of {version.label} in {folder}")
    if not (folder / SUBMISSION_FILE).is_file():
        say(f"{version.label} wrote no {SUBMISSION_FILE}: it cannot be submitted")
    return folder


def run(cfg: Config, user: str | None = None, runs: list[Path] | None = None) -> Path:
    """``kit kernel run``: push (training, or with ``runs`` inference), wait, fetch the outputs; return the run folder."""
    started = time.monotonic()
    pushed = push(cfg, user, runs)
    return follow(cfg, api(), Version(pushed.ref, pushed.version, pushed.time_limit_s), started)


def wait_for(cfg: Config, inference: bool = False, number: int | None = None) -> Path:
    """``kit kernel status --wait``: follow a version pushed before (by default the one kit pushed last)."""
    client = api()
    return follow(cfg, client, chosen_version(cfg, client, inference, number))
