"""keras-hub preset folders: ``model.weights`` of a hub row resolved to a local folder, and folders that do not fit.

A preset folder is what ``backbone.save_to_preset(folder)`` writes and ``keras_hub.models.Backbone.from_preset(folder)``
reads: ``config.json`` (the class and its architecture), ``model.weights.h5``, ``metadata.json``. For a row of
:mod:`kit.models.hub_backbones`, ``model.weights``:

- ``preset`` (or ``imagenet``, the word every backbone row takes): the row's preset, found in this order: attached
  to a Kaggle kernel as a Kaggle Model (``model_sources``, mounted at ``<input>/<model>/keras/<variation>/<version>``,
  the input folder ``$KIT_KAGGLE_INPUT`` or ``/kaggle/input``), then the kagglehub cache
  (``$KAGGLEHUB_CACHE`` or ``~/.cache/kagglehub``, ``models/<handle>``), where keras-hub's own download puts it.
  Not found: when online (not ``KIT_OFFLINE=1`` and Kaggle reachable) keras-hub downloads it into that cache
  (the preset name is returned); offline, one KitError line saying where kit looked and how to get it.
- ``none``: random initialisation from the row's architecture (no file at all).
- a folder: that preset folder; its config.json defines the architecture. A missing path, a file, a folder without
  config.json or whose config names another keras-hub class is one KitError line naming the path and what it fits.

Nothing here imports keras or keras_hub: ``kit weights list`` and the kernel builder read it on any machine.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from kit.errors import KitError
from kit.models.hub_backbones import HUB_ROWS, HubBackbone
from kit.models.weights import is_random_init, online

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
PRESET_WORDS = ("preset", "imagenet")  # model.weights values meaning the row's own preset
KAGGLE_HOST = "www.kaggle.com"


def kaggle_input_root() -> Path:
    """Where a kernel's inputs are mounted (read now, as the kernel script does)."""
    return Path(os.environ.get("KIT_KAGGLE_INPUT", "/kaggle/input"))


def kagglehub_cache() -> Path:
    """kagglehub's cache folder: ``$KAGGLEHUB_CACHE``, else ``~/.cache/kagglehub`` (kagglehub's own rule)."""
    return Path(os.environ.get("KAGGLEHUB_CACHE") or "~/.cache/kagglehub").expanduser()


def preset_places(row: HubBackbone) -> list[Path]:
    """Where the row's preset folder may lie, in the order kit looks: a kernel's Kaggle Model, the kagglehub cache."""
    return [kaggle_input_root() / row.kernel_folder, kagglehub_cache() / "models" / row.handle]


def find_preset(row: HubBackbone) -> Path | None:
    """The first of :func:`preset_places` holding a preset folder (its config.json), or None."""
    return next((place for place in preset_places(row) if (place / CONFIG_FILE).is_file()), None)


def preset_class(folder: Path) -> str | None:
    """The class a preset folder's config.json names, or None when there is no readable one."""
    try:
        config = json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    name = config.get("class_name") if isinstance(config, dict) else None
    return name if isinstance(name, str) else None


def fits(folder: Path) -> str:
    """Which hub rows a preset folder fits, in words, for an error message."""
    name = preset_class(folder)
    if name is None:
        return "it fits no hub backbone"
    rows = [row.name for row in HUB_ROWS if row.preset_class == name]
    return f"it is a {name} preset" + (f" (fits {', '.join(rows)})" if rows else ", which no hub row uses")


def check_preset_folder(folder: Path, row: HubBackbone, setting: str) -> None:
    """Refuse a path that is not a preset folder of ``row``'s class (one line naming it and what it fits)."""
    hint = (
        f"give a folder written by {row.preset_class}.save_to_preset(folder), model.weights=preset "
        f"({row.preset}, see `kit weights list`), or model.weights=none"
    )
    if not folder.exists():
        raise KitError(f"model.weights={setting}: no such preset folder", hint)
    if not folder.is_dir():
        raise KitError(f"model.weights={setting} is a file, not a keras-hub preset folder ({row.name} needs one)", hint)
    if not (folder / CONFIG_FILE).is_file():
        raise KitError(f"model.weights={setting} has no {CONFIG_FILE}: it is not a keras-hub preset folder", hint)
    found = preset_class(folder)
    if found != row.preset_class:
        what = f"{fits(folder)}; {row.name} needs {row.preset_class}"
        raise KitError(f"model.weights={setting} does not fit {row.name} ({what})", hint)
    if not (folder / WEIGHTS_FILE).is_file():
        raise KitError(f"model.weights={setting} has no {WEIGHTS_FILE}: the preset folder is incomplete", hint)


def missing_preset(row: HubBackbone) -> KitError:
    """The one line for a preset found nowhere: where kit looked and how to get it there."""
    places = " or ".join(str(place) for place in preset_places(row))
    return KitError(
        f"the {row.preset} preset for {row.name} is not in {places} and there is no internet",
        f"on a machine with internet run python -c \"import keras_hub; keras_hub.models.Backbone.from_preset('{row.preset}')\" "
        f"(fills the kagglehub cache), attach the Kaggle Model {row.handle} to the kernel, give model.weights=<preset folder>, "
        "or model.weights=none",
    )


def resolve_preset(weights: str, row: HubBackbone) -> str | None:
    """``model.weights`` of a hub row as what ``from_preset`` loads (a local folder, or the preset's name to download
    when online), or None for random initialisation."""
    value = str(weights or "").strip()
    if is_random_init(value):
        return None
    if value.lower() in PRESET_WORDS:
        found = find_preset(row)
        if found is not None:
            check_preset_folder(found, row, str(found))
            return str(found)
        if online(KAGGLE_HOST):
            return row.preset  # keras-hub downloads it into the kagglehub cache
        raise missing_preset(row)
    folder = Path(value).expanduser()
    check_preset_folder(folder, row, value)
    return str(folder)


def preset_identity(weights: str, row: HubBackbone) -> str:
    """What a hub row's weights are, for a cache key: the Kaggle handle of its own preset, else the setting."""
    value = str(weights or "").strip()
    return row.handle if value.lower() in PRESET_WORDS else value


# --- the presets, row by row (kit weights list) -----------------------------------------------------------


@dataclass(frozen=True)
class PresetState:
    row: HubBackbone
    folder: Path | None  # where it was found, or None
    size: int  # bytes of the folder's files; 0 when not found

    @property
    def in_kernel(self) -> bool:
        """Found as a Kaggle Model attached to the kernel (else in the kagglehub cache)."""
        return self.folder is not None and self.folder.is_relative_to(kaggle_input_root())


def preset_listing() -> list[PresetState]:
    """Every hub row's preset: where it was found (kernel mount or kagglehub cache) and its size."""
    listing = []
    for row in HUB_ROWS:
        folder = find_preset(row)
        size = sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) if folder else 0
        listing.append(PresetState(row, folder, size))
    return listing
