"""The files and folders settings name inside ``data.root``, and the one check each goes through.

Every setting the schema marks ``in_root`` (a split's CSV, folder and image folder, the sample submission, the
solution) names something inside the competition's folder. :func:`confined` is the one check every reader of such
a setting calls before it opens anything: the path, symlinks followed, stays inside data.root; a file is a regular
file within the table cap (:func:`kit.inputs.check_table_file`); a folder is a folder. A test walks the schema's
marks, so a new setting of this kind is confined without a new branch.

The locations kit reads and writes (data.root, data.records_root, run.root, predict.output, model.weights) are
local paths, or gs:// URLs where TPUs need them, and no setting holds a NUL byte: :func:`check_locations`, at load.
"""

from __future__ import annotations

import dataclasses
import os
import re
import typing
from functools import cache
from pathlib import Path
from typing import Any

from kit.config.schema import Config
from kit.errors import KitError, quoted
from kit.inputs import check_table_file

PATH_CHARS = 300  # characters of a resolved path a message shows


@cache
def root_settings(node: type = Config, prefix: str = "") -> dict[str, str]:
    """Dotted key -> ``file`` or ``folder`` of every setting that names something inside data.root."""
    found: dict[str, str] = {}
    hints = typing.get_type_hints(node)
    for f in dataclasses.fields(node):
        if dataclasses.is_dataclass(hints[f.name]):
            found |= root_settings(hints[f.name], f"{prefix}{f.name}.")
        elif "in_root" in f.metadata:
            found[f"{prefix}{f.name}"] = f.metadata["in_root"]
    return found


def inside(real: str, root_real: str) -> bool:
    """Whether the resolved path ``real`` is ``root_real`` or below it."""
    return real == root_real or real.startswith(root_real.rstrip(os.sep) + os.sep)


def confined(root: str | os.PathLike, key: str, value: str) -> Path:
    """``data.root / value`` for the setting ``key``, once checked: inside data.root with symlinks followed, a regular
    file within the table cap (``file`` settings) or a folder (``folder`` settings) when it exists. A path that does
    not exist is returned as it is (the reader says what is missing); anything else is one KitError naming ``key``."""
    kind = root_settings()[key]
    path = Path(root) / value
    fix = f"set {key} to a {kind} inside data.root={quoted(root, PATH_CHARS)} (no '..', no absolute path or symlink out of it)"
    try:
        real, root_real = os.path.realpath(path), os.path.realpath(root)
        exists = path.exists()
    except (OSError, ValueError) as exc:  # a name too long, a NUL byte, a folder without permission
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise KitError(f"{key}={quoted(value)}: {quoted(path, PATH_CHARS)} cannot be read ({reason})", fix) from None
    if not inside(real, root_real):
        shown = quoted(real, PATH_CHARS)
        raise KitError(f"{key}={quoted(value)} names {shown}, outside data.root {quoted(root_real, PATH_CHARS)}", fix)
    if exists and kind == "file":
        check_table_file(path, fix)
    elif exists and kind == "folder" and not path.is_dir():
        raise KitError(f"{key}={quoted(value)}: {quoted(path, PATH_CHARS)} is not a folder", fix)
    return path


# ---------------------------------------------------------------------------------------------- locations

# Settings naming where kit reads or writes, and whether a gs:// URL may stand there (records and runs on TPUs).
LOCATIONS = {"data.root": False, "data.records_root": True, "run.root": True, "predict.output": True, "model.weights": False}
URL_PREFIX = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]+):/")  # scheme:// (or scheme:/, as pathlib collapses it); not C:/


def _text_leaves(node: Any, prefix: str = "") -> list[tuple[str, str]]:
    """(dotted key, text) of every string in the config: fields, list items, mapping keys and values."""
    if dataclasses.is_dataclass(node):
        return [leaf for f in dataclasses.fields(node) for leaf in _text_leaves(getattr(node, f.name), f"{prefix}{f.name}.")]
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in [(prefix + str(k), str(k)), *_text_leaves(v, f"{prefix}{k}.")]]
    if isinstance(node, (list, tuple)):
        return [leaf for item in node for leaf in _text_leaves(item, prefix)]
    return [(prefix.rstrip("."), node)] if isinstance(node, str) else []


def check_locations(cfg: Config) -> None:
    """No setting holds a NUL byte (no path or name can), and every location is a local path, or a gs:// URL where
    one may stand: kit has no reader for http://, s3:// or TensorFlow's ram://, and writing "ram://x" to a local
    folder named ``ram:`` would only end in "no records" later."""
    for key, text in _text_leaves(cfg):
        if "\0" in text:
            raise KitError(f"{key}={quoted(text)} holds a NUL byte", f"set {key} without control characters")
    for key, url_allowed in LOCATIONS.items():
        section, name = key.split(".")
        value = str(getattr(getattr(cfg, section), name))
        scheme = URL_PREFIX.match(value)
        if scheme and not (url_allowed and value.startswith("gs://")):
            allowed = "a local path or a gs:// URL" if url_allowed else "a local path"
            raise KitError(f"{key}={quoted(value)}: {scheme.group(1)}: is not supported here", f"set {key} to {allowed}")
