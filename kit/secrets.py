"""The credentials this process can reach, and the one scan for them: everything kit prints, raises or uploads.

A credential is recognised two ways: by its *value*, read from each environment variable whose name says it
holds a secret (``KAGGLE_KEY``, ``CLIENT_SECRET``, a file such a variable names) and from Kaggle's credential
files; and by its *shape* (a Kaggle API token, a private key, an AWS or GitHub token), wherever it came from.
:func:`secret_in` says where the first one found lives (never the value); :func:`redact` replaces each one by
that place. kit.errors bounds and redacts every error line and printed line with it; kit.kaggle refuses an
upload that holds one. This module imports nothing of kit: it is the lowest layer.
"""

from __future__ import annotations

import functools
import json
import os
import re
import stat
import sys
from pathlib import Path

# A variable or JSON field holds a secret when a word of its name says so (KAGGLE_KEY, client_secret; not GIT_AUTHOR_NAME)
SECRET_NAME = re.compile(r"(?:^|[_.-])(?:api)?(?:key|token|secret|password|passwd|credentials?)(?:$|[_.-])", re.I)
MIN_SECRET_CHARS = 8  # shorter values ("1", "true", a port) are flags, not secrets, and would match everywhere
SECRET_FILE_BYTES = 1 << 16  # a credential file is small; a larger (or special) file named by a variable is not read
SECRET_SHAPES = (  # credentials recognised by their shape, wherever they came from
    ("a Kaggle API token", re.compile(r"KGAT_[A-Za-z0-9_]{16,}")),
    ("a kaggle.json key", re.compile(r"""["']?\bkey["']?\s*[:=]\s*["']?[0-9a-f]{32}\b""")),
    ("a private key", re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")),
    ("an AWS access key", re.compile(r"\bAKIA[0-9A-Z]{16}\b")),
    ("a GitHub token", re.compile(r"\bgh[pousr]_[A-Za-z0-9]{36,}\b|\bgithub_pat_[A-Za-z0-9_]{22,}")),
)

Credentials = list[tuple[str, str]]  # (where it lives, value)


def kaggle_config_dir() -> Path:
    """The folder the Kaggle client reads kaggle.json from (same rules as ``KaggleApi.config_dir``)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return legacy


def _file_secrets(path: Path) -> list[str]:
    """The secrets in a credential file: JSON fields with a secret's name, else its whole text; [] if unreadable."""
    try:
        info = path.stat()
        if not stat.S_ISREG(info.st_mode) or info.st_size > SECRET_FILE_BYTES:
            return []  # never open a FIFO or a device: open() could block or read forever
        text = path.read_text(errors="replace").strip()
    except (OSError, ValueError):
        return []
    try:
        data = json.loads(text)
    except ValueError:
        return [text]
    if isinstance(data, dict):
        return [value for name, value in data.items() if SECRET_NAME.search(str(name)) and isinstance(value, str)]
    return [data] if isinstance(data, str) else []


def credential_values() -> Credentials:
    """(where it lives, value) of each credential this process can reach: variables with a secret's name (or the
    secrets of the file one names) and Kaggle's credential files. Callers name only the place, never the value."""
    found: Credentials = []
    for name, value in os.environ.items():
        if not SECRET_NAME.search(name):
            continue
        if len(value) < 4096 and "\0" not in value and os.path.lexists(value):
            found += [(f"the file named by ${name}", secret) for secret in _file_secrets(Path(value))]
        else:
            found.append((f"${name}", value))
    home = Path.home() / ".kaggle"
    for path in (kaggle_config_dir() / "kaggle.json", home / "kaggle.json", home / "access_token", home / "access_token.txt"):
        found += [(str(path), secret) for secret in _file_secrets(path)]
    return [(where, value.strip()) for where, value in found if len(value.strip()) >= MIN_SECRET_CHARS]


@functools.lru_cache(maxsize=64)
def _written_forms(value: str) -> tuple[str, ...]:
    """``value`` as it reads once written: as is, as a YAML scalar, then JSON-escaped once or twice (a YAML in
    JSON); longest first, so a replacement never leaves the tail of a longer form behind."""
    import yaml

    scalar = yaml.safe_dump(value, width=1 << 30).strip().removesuffix("...").strip()  # '...' ends a plain scalar
    if len(scalar) > 1 and scalar[0] in "'\"" and scalar[-1] == scalar[0]:
        scalar = scalar[1:-1]
    forms = {value, scalar}
    for _ in range(2):
        forms |= {json.dumps(form)[1:-1] for form in forms}
    return tuple(sorted(forms, key=len, reverse=True))


def secret_in(text: str, credentials: Credentials | None = None) -> str | None:
    """Where the credential that ``text`` holds comes from (never the value itself); None when it holds none."""
    for where, value in credential_values() if credentials is None else credentials:
        if any(form in text for form in _written_forms(value)):
            return f"the value of {where}"
    for what, shape in SECRET_SHAPES:
        if shape.search(text):
            return what
    return None


def redact(text: str, credentials: Credentials | None = None) -> str:
    """``text`` with every credential (by value or by shape) replaced by ``[redacted: <where it lives>]``."""
    for where, value in credential_values() if credentials is None else credentials:
        for form in _written_forms(value):
            if form in text:
                text = text.replace(form, f"[redacted: the value of {where}]")
    for what, shape in SECRET_SHAPES:
        text = shape.sub(f"[redacted: {what}]", text)
    return text
