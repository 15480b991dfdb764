"""``kit show``: looking at the data as the model gets it (logic in :mod:`kit.show`)."""

from __future__ import annotations

from pathlib import Path

import typer

from kit.cli.common import Settings, app, load, say
from kit.errors import KitError

TRUE_WORDS = ("", "1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")


def show_words(settings: list[str] | None, split: str, augmented: bool, per_class: int) -> tuple[list[str], str, bool, int]:
    """Accept ``split=val``, ``per_class=4`` and ``augmented`` (or ``augmented=true``) among the settings too."""
    rest = []
    for item in settings or []:
        key, _, value = item.partition("=")
        if key == "split":
            split = value
        elif key == "augmented":
            if value.lower() not in TRUE_WORDS + FALSE_WORDS:
                raise KitError(f"augmented={value} is not true or false", "write augmented (or --augmented)")
            augmented = value.lower() in TRUE_WORDS
        elif key == "per_class":
            try:
                per_class = int(value)
            except ValueError:
                raise KitError(f"per_class={value} is not a whole number", "e.g. per_class=8 (or --per-class 8)") from None
        else:
            rest.append(item)
    return rest, split, augmented, per_class


@app.command()
def show(
    settings: list[str] = Settings,
    split: str = typer.Option("train", "--split", help="train | val | test (or split=... among the settings)."),
    augmented: bool = typer.Option(False, "--augmented", help="After the training pipeline's augmentation (split=train)."),
    per_class: int = typer.Option(8, "--per-class", help="Images per class: one row each."),
    output: Path = typer.Option(None, "--output", "-o", help="The PNG; default runs/<comp>/show/<split>-<size>px.png."),
) -> None:
    """A grid of each class's images as the model gets them (resized; --augmented: augmented), with file names: a PNG."""
    from kit.show import check_request

    settings, split, augmented, per_class = show_words(settings, split, augmented, per_class)
    check_request(split, augmented, per_class)  # before TensorFlow loads: a mistake is reported at once
    cfg = load(settings, tensorflow=True)
    from kit.show import show as show_grid

    say(f"wrote {show_grid(cfg, split, augmented=augmented, per_class=per_class, output=output)}")
