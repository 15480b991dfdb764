"""Where presets are found and where ``kit new-comp`` writes a user's competition YAML.

Search order (first match wins), so a user's own preset shadows a packaged one of the same name::

    ./configs/<kind>/               the working directory's folder (in a clone: the repository's presets)
    ~/.config/kit/<kind>/           the user's folder ($XDG_CONFIG_HOME/kit when that is set)
    the packaged presets            <project>/configs and kit/configs (site-packages in a wheel install)

A user's YAML is never written into the package: in a wheel install that is site-packages, and the next
kernel dataset would bundle it with its local paths.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]
PACKAGED_CONFIG_DIRS = [PROJECT_ROOT / "configs", Path(__file__).resolve().parents[1] / "configs"]


def working_config_dir() -> Path:
    """``./configs`` of the working directory."""
    return Path.cwd() / "configs"


def home_config_dir() -> Path:
    """``~/.config/kit`` (or ``$XDG_CONFIG_HOME/kit``)."""
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "kit"


def preset_dirs() -> list[Path]:
    """The folders searched for presets, first match wins; the same folder reached twice is listed once."""
    seen: set[Path] = set()
    folders = []
    for folder in [working_config_dir(), home_config_dir(), *PACKAGED_CONFIG_DIRS]:
        key = folder.resolve()
        if key not in seen:
            seen.add(key)
            folders.append(folder)
    return folders


def _usable(folder: Path) -> bool:
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:  # a file named configs, a read-only working directory
        return False
    return os.access(folder, os.W_OK | os.X_OK)


def user_preset_dir(kind: str) -> Path:
    """Where a new preset of ``kind`` (``competitions``) goes: ``./configs/<kind>`` when it can be written,
    else ``~/.config/kit/<kind>``; both are searched by :func:`preset_dirs`."""
    working = working_config_dir() / kind
    if _usable(working):
        return working
    return home_config_dir() / kind


def git_commit() -> str:
    """The short commit of kit's checkout, named in submission messages, wheel notes and exports.

    Outside a git checkout (a wheel install, the Docker image, which has no .git) it is $KIT_COMMIT: the image gets
    it as a build argument from ``make docker-build``; '' when neither is known.
    """
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        out = None
    if out is not None and out.returncode == 0 and out.stdout.strip():
        return out.stdout.strip()
    return os.environ.get("KIT_COMMIT", "").strip()
