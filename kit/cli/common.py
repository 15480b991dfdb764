"""What every ``kit`` command shares: the app, the settings argument, loading settings, run folders given as settings."""

from __future__ import annotations

from pathlib import Path

import typer

from kit.config import Config
from kit.settings import load_settings

SETTINGS_HELP = "Settings as key=value, e.g. comp=cifake model=cnn train.epochs=3 (see `kit config`)."

app = typer.Typer(
    help="kit: from a Kaggle image-classification competition to a scored submission.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

Settings = typer.Argument(None, help=SETTINGS_HELP, show_default=False)


def load(settings: list[str] | None, tensorflow: bool = False) -> Config:
    """The resolved, checked settings; with ``tensorflow=True`` also load TensorFlow quietly (after the
    checks, so a typo is reported at once rather than after TensorFlow's start-up)."""
    cfg = load_settings(list(settings or []))
    if tensorflow:
        from kit.quiet import import_tensorflow

        import_tensorflow()
    return cfg


def say(message: str) -> None:
    typer.echo(message, err=True)


def run_setting(settings: list[str] | None, run: Path | None) -> tuple[list[str], Path | None]:
    """Accept ``run=<dir>`` among the settings as well as ``--run``."""
    rest = []
    for item in settings or []:
        if item.startswith("run="):
            run = Path(item.split("=", 1)[1])
        else:
            rest.append(item)
    return rest, run


def runs_setting(settings: list[str] | None, run: Path | None) -> tuple[list[str], list[Path]]:
    """Accept ``run=<dir>`` or ``runs=a,b,c`` (an ensemble) among the settings."""
    rest, runs = [], [run] if run else []
    for item in settings or []:
        key, _, value = item.partition("=")
        if key in ("run", "runs"):
            runs.extend(Path(v) for v in value.split(",") if v)
        else:
            rest.append(item)
    return rest, runs
