"""The images' symmetries, stated once: the flips each ``augment.flip`` word allows, and the test-time views
(``predict.tta``), each with its transform and the flips it needs the data to allow.

Readers: :class:`~kit.config.schema.Flip` takes its words from :data:`FLIP_AXES`; config loading narrows
``augment.flip`` and drops the TTA views the data forbids; the online and offline augmenters flip along the
word's axes; :mod:`kit.inference` applies the views. A new flip word or view is one row here.

The transforms use only slicing and array methods (``np.rot90`` written out), so this module imports no numpy
and ``import kit`` stays light.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kit.errors import unknown_choice

# The axes of an image batch [B, H, W, C] that a flip reverses: a horizontal (mirror) flip the width.
WIDTH = 2
HEIGHT = 1

# Each augment.flip word -> the axes it flips when augmenting, and so the flips the data allows. The online
# augmenter draws one coin per axis in this order ("both": width first), so the order is part of its seed stream.
FLIP_AXES: dict[str, tuple[int, ...]] = {
    "none": (),
    "horizontal": (WIDTH,),
    "vertical": (HEIGHT,),
    "both": (WIDTH, HEIGHT),
}


@dataclass(frozen=True)
class TtaView:
    """One test-time view: ``transform`` maps a numpy batch [B, H, W, C] to the view (images are square, so the
    rotations keep the shape); ``needs`` are the flip axes the data must allow for the view to be the same image."""

    transform: Callable[[Any], Any]
    needs: frozenset[int]


_MIRROR = frozenset({WIDTH})
_UPSIDE_DOWN = frozenset({HEIGHT})
_ORIENTATION_FREE = frozenset({WIDTH, HEIGHT})  # rotations and the transpose: only when every flip is allowed

# predict.tta's views by name. rot90 and rot270 are np.rot90(x, k, axes=(1, 2)) for k = 1 and 3.
TTA_VIEWS: dict[str, TtaView] = {
    "flip": TtaView(lambda x: x[:, :, ::-1], _MIRROR),
    "hflip": TtaView(lambda x: x[:, :, ::-1], _MIRROR),
    "vflip": TtaView(lambda x: x[:, ::-1], _UPSIDE_DOWN),
    "rot90": TtaView(lambda x: x[:, :, ::-1].swapaxes(1, 2), _ORIENTATION_FREE),
    "rot180": TtaView(lambda x: x[:, ::-1, ::-1], _ORIENTATION_FREE),
    "rot270": TtaView(lambda x: x.swapaxes(1, 2)[:, :, ::-1], _ORIENTATION_FREE),
    "transpose": TtaView(lambda x: x.swapaxes(1, 2), _ORIENTATION_FREE),
}


def allowed_flips(flip: str) -> frozenset[int]:
    """The flip axes an ``augment.flip`` word allows (an unknown word allows none)."""
    return frozenset(FLIP_AXES.get(str(flip), ()))


def flip_word(axes: Iterable[int]) -> str:
    """The ``augment.flip`` word that allows exactly ``axes``."""
    wanted = frozenset(axes)
    return next(word for word, word_axes in FLIP_AXES.items() if frozenset(word_axes) == wanted)


def view_name(text: object) -> str:
    """A ``predict.tta`` entry as the view's name: trimmed, lower case."""
    return str(text).strip().lower()


def forbidden_views(names: Iterable[object], flip: object) -> list[str]:
    """The TTA views among ``names`` that need a flip the ``augment.flip`` word ``flip`` does not allow (unknown names
    are :func:`check_tta`'s to refuse)."""
    allowed = allowed_flips(str(flip))
    return [str(n) for n in names if view_name(n) in TTA_VIEWS and not TTA_VIEWS[view_name(n)].needs <= allowed]


def forbidden_views_warning(names: Iterable[object], flip: object) -> str | None:
    """One WARNING line for TTA views the data's symmetry forbids (kept: the command line may know better), or None."""
    forbidden = forbidden_views(names, flip)
    if not forbidden:
        return None
    return (
        f"WARNING: tta={','.join(forbidden)} shows the model views the data does not allow (augment.flip={flip}): "
        "they are averaged in all the same; drop them unless you know the images have that symmetry"
    )


def check_tta(names: Iterable[object]) -> list[str]:
    """The TTA view names, checked (a typo fails before any model is loaded); blanks and ``none`` dropped."""
    views = [view_name(n) for n in names if view_name(n) not in ("", "none")]
    for name in views:
        if name not in TTA_VIEWS:
            raise unknown_choice("TTA transform", name, TTA_VIEWS)
    return views
