"""The files and folders settings name inside ``data.root``, and the one check each goes through.

Every setting the schema marks ``in_root`` (a split's CSV, folder and image folder, the sample submission, the
solution) names something inside the competition's folder. :func:`confined` is the one check every reader of such
a setting calls before it opens anything: the path, symlinks followed, stays inside data.root; a file is a regular
file within the table cap (:func:`kit.inputs.check_table_file`); a folder is a folder. A test walks the schema's
marks, so a new setting of this kind is confined without a new branch.
"""

from __future__ import annotations

import dataclasses
import os
import typing
from functools import cache
from pathlib import Path

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
