"""The Kaggle client as kit uses it: credentials, one authenticated API, calls with retries and one-line errors.

Everything goes through the official ``kaggle`` client (2.x, on ``kagglesdk``). Three things about
that client shape this package:

* ``import kaggle`` authenticates at import time and prints a page of help to stdout when it cannot,
  and ``KaggleApi`` reads ``KAGGLE_CONFIG_DIR`` / ``KAGGLE_API_ENVIRONMENT`` once, at import. We
  import it lazily with stdout captured and set those per call, so kit's output stays one line and
  a changed environment (tests, notebooks) is honoured.
* Its errors are ``requests.HTTPError`` whose text is the server's message; each becomes one
  :class:`KitError` naming the fix (401 credentials, 403 rules, 404 slug, 429/5xx after retries).
* It unzips with ``extractall`` and no checks, so kit downloads the archive only and extracts it
  itself (:mod:`kit.kaggle.download`).

The Kaggle web addresses and the shape of slugs are written here once, for every module of the package.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import re
import stat
import sys
import time
import zipfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from kit.errors import KitError
from kit.secrets import credential_values, kaggle_config_dir, secret_in

if TYPE_CHECKING:
    from kaggle.api.kaggle_api_extended import KaggleApi

T = TypeVar("T")

MAX_TRIES = 4  # attempts per Kaggle call on 429/5xx/connection errors
WEB = "https://www.kaggle.com"
API_SETTINGS = f"{WEB}/settings/api"
NO_CREDENTIALS_HINT = (
    f"create an API token at {API_SETTINGS} and save it to ~/.kaggle/access_token (or export KAGGLE_API_TOKEN), "
    "or put the legacy kaggle.json in ~/.kaggle/ with chmod 600 (or export KAGGLE_USERNAME and KAGGLE_KEY)"
)
LIMIT_WORDS = re.compile(r"daily|allowance|limit|maximum number of submissions|max(imum)? submissions", re.I)


def competition_url(slug: str) -> str:
    return f"{WEB}/competitions/{slug}"


def dataset_url(ref: str) -> str:
    """The page of dataset ``owner/name``."""
    return f"{WEB}/datasets/{ref}"


def slug_name(slug: str) -> str:
    """The name in a slug: a competition's slug itself, the ``name`` of a dataset's ``owner/name``.

    Kaggle names a download's archive and the folder an input is mounted at in a kernel by it.
    """
    return slug.split("/")[-1]


def is_dataset_ref(slug: str) -> bool:
    """Whether ``slug`` has the ``owner/name`` shape of a dataset."""
    return slug.count("/") == 1


def say(message: str) -> None:
    """Progress and warnings go to stderr, so stdout holds only results (a score, a URL)."""
    print(message, file=sys.stderr, flush=True)


def _backoff_base() -> float:
    """Seconds before the first retry (doubles each time); KIT_KAGGLE_BACKOFF makes tests fast."""
    return float(os.environ.get("KIT_KAGGLE_BACKOFF", "2.0"))


# ----------------------------------------------------------------------------- credentials


def credential_source() -> str | None:
    """Where the client will find credentials, in its own order of preference; None if nowhere.

    Never returns (or logs) a secret, only where it lives.
    """
    token = os.environ.get("KAGGLE_API_TOKEN")
    if token:
        return f"KAGGLE_API_TOKEN file {token}" if Path(token).exists() else "KAGGLE_API_TOKEN"
    for name in ("access_token", "access_token.txt"):
        path = Path.home() / ".kaggle" / name
        if path.is_file() and path.read_text().strip():
            return str(path)
    if os.environ.get("KAGGLE_USERNAME") and os.environ.get("KAGGLE_KEY"):
        return "KAGGLE_USERNAME/KAGGLE_KEY"
    path = kaggle_config_dir() / "kaggle.json"
    if path.is_file():
        return str(path)
    return None


def check_kaggle_json() -> None:
    """Warn about a kaggle.json others can read (as the client does); fail on one that is not JSON."""
    path = kaggle_config_dir() / "kaggle.json"
    if not path.is_file():
        return
    if os.name != "nt" and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        say(
            f"Warning: Your Kaggle API key is readable by other users on this system! To fix this, you can run 'chmod 600 {path}'"
        )
    try:
        data = json.loads(path.read_text() or "{}")
    except (ValueError, UnicodeDecodeError):
        raise KitError(f"{path} is not valid JSON", f"download a fresh kaggle.json from {API_SETTINGS}") from None
    if not isinstance(data, dict) or (data and not ("username" in data and "key" in data)):
        raise KitError(f"{path} lacks 'username' or 'key'", f"download a fresh kaggle.json from {API_SETTINGS}")


# ----------------------------------------------------------------------------- secrets in what kit uploads


def upload_files(paths: Iterable[Path]) -> dict[str, bytes]:
    """The content of every regular file among ``paths`` (folders walked), a wheel's or zip's members each, by name."""
    files: dict[str, bytes] = {}
    for path in sorted(p for top in paths for p in ([top] if top.is_file() else top.rglob("*"))):
        if path.is_symlink() or not path.is_file():
            continue
        if path.suffix in (".whl", ".zip"):
            with zipfile.ZipFile(path) as archive:
                files.update({f"{path}:{i.filename}": archive.read(i) for i in archive.infolist() if not i.is_dir()})
        else:
            files[str(path)] = path.read_bytes()
    return files


def refuse_secrets(files: Mapping[str, str | bytes], what: str) -> None:
    """A KitError naming the first file that holds a credential and where that credential lives (never its value)."""
    credentials = credential_values()
    for name, content in files.items():
        where = secret_in(content.decode("utf-8", "replace") if isinstance(content, bytes) else content, credentials)
        if where is not None:
            raise KitError(
                f"{name} holds {where}: {what} refused",
                "remove it from the setting or file that carries it (a YAML, an override, a ${oc.env:...} value), then rerun",
            )


@contextlib.contextmanager
def _client_output() -> Iterator[None]:
    """The client prints progress and chatter on stdout; keep kit's stdout for results."""
    with contextlib.redirect_stdout(sys.stderr):
        yield


def api() -> KaggleApi:
    """An authenticated ``KaggleApi``; a KitError with the fix when there are no usable credentials."""
    check_kaggle_json()
    source = credential_source()
    with contextlib.redirect_stdout(io.StringIO()):  # import-time auth help text is not ours to print
        from kaggle.api.kaggle_api_extended import KaggleApi

        client = KaggleApi()
        # KaggleApi fixes these at import; recompute them for the current environment.
        client.config_dir = str(kaggle_config_dir())
        client.config = os.path.join(client.config_dir, client.config_file)
        client.args = ["--local"] if os.environ.get("KAGGLE_API_ENVIRONMENT") == "LOCALHOST" else []
        try:
            client.authenticate()
        except SystemExit:
            if source is None:
                raise KitError("no Kaggle credentials found", NO_CREDENTIALS_HINT) from None
            raise KitError(f"Kaggle rejected the credentials from {source}", NO_CREDENTIALS_HINT) from None
        except Exception as exc:  # the token check is a request: 401, 5xx, no network
            raise _kit_error(exc, "check the credentials", slug="", kind="") from None
    return client


def username(client: KaggleApi | None = None) -> str:
    """The Kaggle user name, from the client config (kaggle.json, env or the token's owner)."""
    name = os.environ.get("KAGGLE_USERNAME")
    if client is None and not name:
        client = api()
    if client is not None:
        name = client.get_config_value("username") or name
    if not name:
        raise KitError("cannot tell your Kaggle user name", NO_CREDENTIALS_HINT)
    return name


# ----------------------------------------------------------------------------- errors and retries


def daily_limit_error(slug: str, detail: str) -> KitError:
    """The daily submission limit, whether Kaggle reports it as an HTTP error or in a submit's reply."""
    return KitError(f"daily submission limit reached for {slug}; try again after 00:00 UTC ({detail})", "")


def _status(exc: BaseException) -> int | None:
    response = getattr(exc, "response", None)
    return getattr(response, "status_code", None)


def _is_limit(exc: BaseException) -> bool:
    return _status(exc) in (400, 403, 409, 429) and bool(LIMIT_WORDS.search(str(exc)))


def _retriable(exc: BaseException) -> bool:
    if _is_limit(exc):
        return False  # the daily limit does not lift in seconds
    status = _status(exc)
    if status is not None:
        return status == 429 or status >= 500
    import requests

    return isinstance(exc, (requests.ConnectionError, requests.Timeout))


def _retry_after(exc: BaseException) -> float | None:
    response = getattr(exc, "response", None)
    value = getattr(response, "headers", {}).get("Retry-After") if response is not None else None
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def _kit_error(exc: BaseException, action: str, slug: str, kind: str, tries: int = 1) -> KitError:
    """One line for a failed Kaggle call: what failed, the server's word, and the fix."""
    if isinstance(exc, KitError):
        return exc
    status = _status(exc)
    detail = " ".join(str(exc).split())[:200] or type(exc).__name__
    what = f"{kind} '{slug}'" if slug else "Kaggle"
    if kind == "competition" and _is_limit(exc):
        return daily_limit_error(slug, detail)
    if status == 401:
        return KitError(
            f"Kaggle rejected the credentials from {credential_source() or 'nowhere'} (401: {detail})", NO_CREDENTIALS_HINT
        )
    if status == 403:
        if kind == "competition":
            return KitError(
                f"Kaggle refused {action} for competition '{slug}' (403: {detail})",
                f"accept the competition rules at {competition_url(slug)}/rules, then rerun",
            )
        return KitError(
            f"Kaggle refused {action} for {what} (403: {detail})", "check that it exists and that your account may use it"
        )
    if status == 404:
        if kind == "competition":
            return KitError(
                f"Kaggle has no competition '{slug}' (404: {detail})",
                f"check comp.slug: it is the last part of {competition_url('<slug>')}",
            )
        if kind == "dataset":
            return KitError(
                f"Kaggle has no dataset '{slug}' (404: {detail})",
                f"check comp.slug: it is owner/name from {dataset_url('<owner>/<name>')}",
            )
        return KitError(f"Kaggle could not find {what} (404: {detail})", "check the name")
    if status == 429:
        return KitError(f"Kaggle rate limit for {action} after {tries} tries (429: {detail})", "wait a few minutes, then rerun")
    if status is not None and status >= 500:
        return KitError(
            f"Kaggle server error for {action} after {tries} tries ({status}: {detail})",
            "a problem on Kaggle's side: rerun later",
        )
    if status is not None:
        return KitError(f"Kaggle refused {action} for {what} ({status}: {detail})", "check the settings the message names")
    import requests

    if isinstance(exc, (requests.ConnectionError, requests.Timeout)):
        return KitError(
            f"cannot reach Kaggle for {action} after {tries} tries ({type(exc).__name__})",
            "check the internet connection or proxy",
        )
    return KitError(f"Kaggle {action} failed for {what}: {detail}", "rerun; if it persists, run the same with the kaggle CLI")


def call(action: str, fn: Callable[..., T], *args: Any, slug: str = "", kind: str = "", **kwargs: Any) -> T:
    """Run one client call; retry 429/5xx/connection errors with bounded exponential backoff.

    ``kind`` (competition, dataset, kernel) and ``slug`` name what the call is about in the error line.
    """
    for attempt in range(1, MAX_TRIES + 1):
        try:
            with _client_output():
                return fn(*args, **kwargs)
        except KitError:
            raise
        except Exception as exc:
            if not _retriable(exc) or attempt == MAX_TRIES:
                raise _kit_error(exc, action, slug, kind, tries=attempt) from None
            delay = _retry_after(exc)
            delay = min(60.0, delay if delay is not None else _backoff_base() * 2 ** (attempt - 1) * (1 + 0.1 * random.random()))
            say(f"Kaggle {action}: {_status(exc) or type(exc).__name__}; retry {attempt}/{MAX_TRIES - 1} in {delay:.1f}s")
            time.sleep(delay)
    raise AssertionError("unreachable")


def poll_interval() -> float:
    """Seconds before the first look again at something Kaggle is still doing (a kernel, a score); KIT_KAGGLE_POLL
    makes tests fast."""
    return float(os.environ.get("KIT_KAGGLE_POLL", "10.0"))
