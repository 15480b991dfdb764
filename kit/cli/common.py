"""What every ``kit`` command shares: the app, the settings argument, loading settings, run folders given as settings."""

from __future__ import annotations

import shlex
from pathlib import Path
from types import FrameType

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


# ---------------------------------------------------------------------------------------------- interruptions

EXIT_INTERRUPTED = 128 + 2  # SIGINT (Ctrl-C), as shells report it
EXIT_TERMINATED = 128 + 15  # SIGTERM
# Commands whose rerun continues an interrupted run only when told to.
RESUME_FLAG = {"train": "--resume"}


class Terminated(BaseException):
    """SIGTERM, raised in the main thread like Ctrl-C's KeyboardInterrupt, so every ``finally`` and temp-file
    clean-up runs; a BaseException, so no ``except Exception`` of kit or a library swallows it."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated()


def interrupted_line(argv: list[str], code: int) -> str:
    """The one line an interrupted command ends with: what stopped it, that nothing was marked done, and the
    command to rerun (with the flag that makes it continue, where one is needed)."""
    words = list(argv)
    flag = RESUME_FLAG.get(words[0]) if words else None
    if flag and flag not in words:
        words.append(flag)
    what = "Ctrl-C" if code == EXIT_INTERRUPTED else "SIGTERM"
    return (
        f"interrupted ({what}): nothing unfinished was marked done; rerun `{shlex.join(['kit', *words])}` to continue "
        "where it stopped"
    )


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
