"""``kit kernel build|dataset|push|run|status``: the Kaggle kernel commands (logic in :mod:`kit.kaggle.kernel` and
:mod:`kit.kaggle.kernel_run`)."""

from __future__ import annotations

import contextlib
import shlex
from collections.abc import Iterator
from pathlib import Path

import typer

from kit.cli.common import EXIT_INTERRUPTED, Settings, load, runs_setting, say
from kit.config import Config

kernel_app = typer.Typer(
    help="Build, push and follow a Kaggle kernel that trains and predicts inside Kaggle.", no_args_is_help=True
)


FromRun = typer.Option(None, "--from-run", help="A trained run (or runs=a,b): an inference-only kernel that predicts with it.")
Owner = typer.Option(None, "--owner", help="Kaggle user who owns the kernel; default: $KAGGLE_USERNAME or the credentials.")
Internet = typer.Option(False, "--internet", help="Push the kernel with internet on (kaggle.kernel_internet=true).")
Predict = typer.Option(False, "--predict", help="The inference kernel (pushed with --from-run).")
Version = typer.Option(None, "--version", help="The kernel's version; default: the one kit pushed last from here.")


@contextlib.contextmanager
def waiting(settings: list[str] | None, predict: bool) -> Iterator[None]:
    """Ctrl-C while waiting (or fetching the outputs) stops kit, not the kernel: say how to wait again, exit 130."""
    from kit.kaggle.kernel_run import WaitStopped

    try:
        yield
    except WaitStopped as stopped:
        version = stopped.version
        again = ["kit", "kernel", "status", *(settings or []), *(["--predict"] if predict else [])]
        again += ["--version", str(version.number), "--wait"] if version.number else ["--wait"]
        say(f"stopped waiting for {version.label}, which goes on on Kaggle; wait for it again with `{shlex.join(again)}`")
        raise SystemExit(EXIT_INTERRUPTED) from None


def _kernel_args(settings: list[str] | None, run: Path | None, internet: bool) -> tuple[Config, list[Path]]:
    settings, runs = runs_setting(settings, run)
    return load([*settings, *(["kaggle.kernel_internet=true"] if internet else [])]), runs


@kernel_app.command("build")
def kernel_build(settings: list[str] = Settings, from_run: Path = FromRun, owner: str = Owner, internet: bool = Internet) -> None:
    """Write the kernel bundle (kernel-metadata.json + script) under build/kernel/<comp>/; no credentials needed."""
    from kit.kaggle import kernel

    cfg, runs = _kernel_args(settings, from_run, internet)
    kernel.build(cfg, owner, runs)


@kernel_app.command("dataset")
def kernel_dataset(settings: list[str] = Settings) -> None:
    """Publish (or version) the kit wheel as a Kaggle dataset that kernels install from."""
    from kit.kaggle import kernel

    kernel.publish_dataset(load(settings))


@kernel_app.command("push")
def kernel_push(settings: list[str] = Settings, from_run: Path = FromRun, owner: str = Owner, internet: bool = Internet) -> None:
    """Build and push the kernel with the Kaggle API (--from-run: publish the runs, push the inference kernel)."""
    from kit.kaggle import kernel

    cfg, runs = _kernel_args(settings, from_run, internet)
    kernel.push(cfg, owner, runs)


@kernel_app.command("run")
def kernel_run_command(
    settings: list[str] = Settings, from_run: Path = FromRun, owner: str = Owner, internet: bool = Internet
) -> None:
    """Push the kernel, wait for it (Ctrl-C stops the waiting, not the kernel), then fetch its outputs into
    runs/<comp>/<model>/kernel-<slug>-v<version>/; a failed kernel shows its log's last lines and exits non-zero."""
    from kit.kaggle import kernel_run

    cfg, runs = _kernel_args(settings, from_run, internet)
    with waiting(runs_setting(settings, None)[0], bool(runs)):
        kernel_run.run(cfg, owner, runs)


@kernel_app.command("status")
def kernel_status(
    settings: list[str] = Settings,
    predict: bool = Predict,
    version: int = Version,
    wait: bool = typer.Option(False, "--wait", help="Wait until it ends, then fetch its outputs as kit kernel run does."),
) -> None:
    """Report the pushed kernel's status (--wait: wait for it and fetch its outputs)."""
    from kit.kaggle import kernel_run

    cfg = load(settings)
    if not wait:
        kernel_run.status(cfg, predict, version)
        return
    with waiting(settings, predict):
        kernel_run.wait_for(cfg, predict, version)
