"""``kit kernel build|dataset|push|status``: the Kaggle kernel commands (logic in :mod:`kit.kaggle.kernel`)."""

from __future__ import annotations

from pathlib import Path

import typer

from kit.cli.common import Settings, load, runs_setting
from kit.config import Config

kernel_app = typer.Typer(
    help="Build, push and follow a Kaggle kernel that trains and predicts inside Kaggle.", no_args_is_help=True
)


FromRun = typer.Option(None, "--from-run", help="A trained run (or runs=a,b): an inference-only kernel that predicts with it.")
Owner = typer.Option(None, "--owner", help="Kaggle user who owns the kernel; default: $KAGGLE_USERNAME or the credentials.")
Internet = typer.Option(False, "--internet", help="Push the kernel with internet on (kaggle.kernel_internet=true).")


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


@kernel_app.command("status")
def kernel_status(
    settings: list[str] = Settings, predict: bool = typer.Option(False, "--predict", help="The --from-run kernel.")
) -> None:
    """Report the pushed kernel's status."""
    from kit.kaggle import kernel

    kernel.status(load(settings), predict)
