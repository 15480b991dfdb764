"""Kaggle I/O: credentials, cached and safely unzipped downloads, submissions and their scores.

Everything goes through the official ``kaggle`` client (2.x, on ``kagglesdk``). Three things about
that client shape this module:

* ``import kaggle`` authenticates at import time and prints a page of help to stdout when it cannot,
  and ``KaggleApi`` reads ``KAGGLE_CONFIG_DIR`` / ``KAGGLE_API_ENVIRONMENT`` once, at import. We
  import it lazily with stdout captured and set those per call, so kit's output stays one line and
  a changed environment (tests, notebooks) is honoured.
* Its errors are ``requests.HTTPError`` whose text is the server's message; each becomes one
  :class:`KitError` naming the fix (401 credentials, 403 rules, 404 slug, 429/5xx after retries).
* It unzips with ``extractall`` and no checks, so kit downloads the archive only and extracts it
  itself: integrity test first, no ``..``/absolute/symlink entries, marker file written last.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import json
import os
import random
import re
import shutil
import stat
import subprocess
import sys
import time
import zipfile
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, TypeVar

from kit.errors import KitError
from kit.io import read_json, write_json

if TYPE_CHECKING:
    from kaggle.api.kaggle_api_extended import KaggleApi

    from kit.config import Config

T = TypeVar("T")

MARKER = ".kit-download.json"  # written last: its presence means the data is complete
PARTIAL_DIR = ".kit-download"  # where the client streams the archive (the client resumes it)
MAX_TRIES = 4  # attempts per Kaggle call on 429/5xx/connection errors
API_SETTINGS = "https://www.kaggle.com/settings/api"
NO_CREDENTIALS_HINT = (
    f"create an API token at {API_SETTINGS} and save it to ~/.kaggle/access_token (or export KAGGLE_API_TOKEN), "
    "or put the legacy kaggle.json in ~/.kaggle/ with chmod 600 (or export KAGGLE_USERNAME and KAGGLE_KEY)"
)
LIMIT_WORDS = re.compile(r"daily|allowance|limit|maximum number of submissions|max(imum)? submissions", re.I)


def _backoff_base() -> float:
    """Seconds before the first retry (doubles each time); KIT_KAGGLE_BACKOFF makes tests fast."""
    return float(os.environ.get("KIT_KAGGLE_BACKOFF", "2.0"))


def _poll_interval() -> float:
    return float(os.environ.get("KIT_KAGGLE_POLL", "10.0"))


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- credentials


def config_dir() -> Path:
    """The folder the client reads kaggle.json from (same rules as ``KaggleApi.config_dir``)."""
    if os.environ.get("KAGGLE_CONFIG_DIR"):
        return Path(os.environ["KAGGLE_CONFIG_DIR"])
    legacy = Path.home() / ".kaggle"
    if sys.platform.startswith("linux") and not legacy.exists():
        return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config") / "kaggle"
    return legacy


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
    path = config_dir() / "kaggle.json"
    if path.is_file():
        return str(path)
    return None


def check_kaggle_json() -> None:
    """Warn about a kaggle.json others can read (as the client does); fail on one that is not JSON."""
    path = config_dir() / "kaggle.json"
    if not path.is_file():
        return
    if os.name != "nt" and path.stat().st_mode & (stat.S_IRGRP | stat.S_IROTH):
        _say(
            f"Warning: Your Kaggle API key is readable by other users on this system! To fix this, you can run 'chmod 600 {path}'"
        )
    try:
        data = json.loads(path.read_text() or "{}")
    except (ValueError, UnicodeDecodeError):
        raise KitError(f"{path} is not valid JSON", f"download a fresh kaggle.json from {API_SETTINGS}") from None
    if not isinstance(data, dict) or (data and not ("username" in data and "key" in data)):
        raise KitError(f"{path} lacks 'username' or 'key'", f"download a fresh kaggle.json from {API_SETTINGS}")


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
        client.config_dir = str(config_dir())
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
        return KitError(f"daily submission limit reached for {slug}; try again after 00:00 UTC ({detail})", "")
    if status == 401:
        return KitError(
            f"Kaggle rejected the credentials from {credential_source() or 'nowhere'} (401: {detail})", NO_CREDENTIALS_HINT
        )
    if status == 403:
        if kind == "competition":
            return KitError(
                f"Kaggle refused {action} for competition '{slug}' (403: {detail})",
                f"accept the competition rules at https://www.kaggle.com/competitions/{slug}/rules, then rerun",
            )
        return KitError(
            f"Kaggle refused {action} for {what} (403: {detail})", "check that it exists and that your account may use it"
        )
    if status == 404:
        if kind == "competition":
            return KitError(
                f"Kaggle has no competition '{slug}' (404: {detail})",
                "check comp.slug: it is the last part of https://www.kaggle.com/competitions/<slug>",
            )
        if kind == "dataset":
            return KitError(
                f"Kaggle has no dataset '{slug}' (404: {detail})",
                "check comp.slug: it is owner/name from https://www.kaggle.com/datasets/<owner>/<name>",
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
    """Run one client call; retry 429/5xx/connection errors with bounded exponential backoff."""
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
            _say(f"Kaggle {action}: {_status(exc) or type(exc).__name__}; retry {attempt}/{MAX_TRIES - 1} in {delay:.1f}s")
            time.sleep(delay)
    raise AssertionError("unreachable")


# ----------------------------------------------------------------------------- download


def _check_member(info: zipfile.ZipInfo, dest: Path) -> None:
    """Refuse entries that would land outside ``dest`` (zip-slip) or create links."""
    name = info.filename
    posix = name.replace("\\", "/")
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise KitError(
            f"archive entry '{name}' has an absolute path: refused", "the archive is unsafe; report it to the data's owner"
        )
    if ".." in PurePosixPath(posix).parts:
        raise KitError(f"archive entry '{name}' points outside the data folder: refused", "the archive is unsafe; report it")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise KitError(
            f"archive entry '{name}' is a symbolic link: refused", "the archive is unsafe; report it to the data's owner"
        )
    if not (dest / posix).resolve().is_relative_to(dest.resolve()):
        raise KitError(f"archive entry '{name}' resolves outside {dest}: refused", "remove links inside the data folder")


def safe_extract(archive: Path, dest: Path) -> int:
    """Test then extract a zip into ``dest``; every entry is checked before anything is written.

    A corrupt archive is deleted (so a rerun downloads it again) and reported as a KitError.
    Returns the number of files written.
    """
    from tqdm.auto import tqdm

    try:
        zf = zipfile.ZipFile(archive)
        bad = zf.testzip()  # reads every entry: CRC and deflate errors surface here, before any write
        if bad is not None:
            raise zipfile.BadZipFile(f"bad CRC in entry '{bad}'")
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, ValueError) as exc:
        archive.unlink(missing_ok=True)
        raise KitError(
            f"downloaded archive {archive.name} is corrupt ({exc}); removed it", "rerun to download it again"
        ) from None
    written = 0
    with zf:
        members = zf.infolist()
        for info in members:
            _check_member(info, dest)
        dest.mkdir(parents=True, exist_ok=True)
        try:
            for info in tqdm(members, desc=f"unzip {archive.name}", unit="file", file=sys.stderr, disable=len(members) < 200):
                target = dest / info.filename.replace("\\", "/")
                if info.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.is_symlink():
                    target.unlink()  # never write through a link left in the folder
                with zf.open(info) as source, open(target, "wb") as out:
                    shutil.copyfileobj(source, out, 1 << 20)
                written += 1
        except OSError as exc:
            raise KitError(
                f"cannot extract {archive.name} into {dest}: {exc}", "free disk space or fix the folder's permissions, then rerun"
            ) from None
    return written


def download(cfg: Config) -> Path:
    """Download and unzip the competition or dataset into ``cfg.data.root``; cached by a marker file.

    A rerun with the marker present makes no Kaggle request. An interrupted download resumes (the
    client continues a partial archive in ``<root>/.kit-download/``); an interrupted unzip is redone.
    """
    root = Path(cfg.data.root)
    source, slug = cfg.comp.source, cfg.comp.slug
    if source == "local":
        _say(
            f"{cfg.comp.name} is local data in {root}: nothing to download"
            + (" (`kit demo` generates it)" if cfg.comp.name == "demo" else "")
        )
        return root
    marker = root / MARKER
    if marker.is_file():
        info = read_json(marker)
        _say(f"{slug} already downloaded to {root} ({info.get('date', '?')}); delete {marker} to download again")
        return root
    if not slug:
        raise KitError(f"comp.slug is empty for {cfg.comp.name}", "set comp.slug in the competition YAML")
    if source == "dataset" and slug.count("/") != 1:
        raise KitError(
            f"dataset slug '{slug}' is not owner/name", "use the owner/name from https://www.kaggle.com/datasets/<owner>/<name>"
        )

    client = api()
    partial = root / PARTIAL_DIR
    partial.mkdir(parents=True, exist_ok=True)
    _say(f"downloading {source} {slug} to {root}")
    if source == "competition":
        call("download", client.competition_download_files, slug, path=str(partial), quiet=False, slug=slug, kind="competition")
        archive = partial / f"{slug}.zip"
    else:
        call("download", client.dataset_download_files, slug, path=str(partial), quiet=False, slug=slug, kind="dataset")
        archive = partial / f"{slug.split('/')[1]}.zip"
    if not archive.is_file():
        found = sorted(partial.glob("*.zip"))
        if not found:
            raise KitError(
                f"Kaggle sent no zip archive for {slug} (got {[p.name for p in partial.iterdir()]})",
                "rerun; if it persists, download it by hand",
            )
        archive = found[0]
    size = archive.stat().st_size
    count = safe_extract(archive, root)
    shutil.rmtree(partial, ignore_errors=True)
    write_json(marker, {"slug": slug, "source": source, "archive": archive.name, "size": size, "files": count, "date": _now()})
    _say(f"unzipped {count} files of {archive.name} ({size / 1e6:.1f} MB) into {root}")
    return root


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- submit


def latest_submission(cfg: Config) -> Path:
    """The newest ``<run.root>/<comp>/*/*/<predict.output>``."""
    base = Path(cfg.run.root) / cfg.comp.name
    found = [p for p in base.glob(f"*/*/{Path(cfg.predict.output).name}") if p.is_file()]
    if not found:
        raise KitError(
            f"no submission found under {base}/<model>/<run>/", "run kit predict first, or pass --file <submission.csv>"
        )
    return max(found, key=lambda p: p.stat().st_mtime)


def _validate(cfg: Config, path: Path) -> None:
    try:
        from kit.predict import validate_submission
    except ModuleNotFoundError as exc:  # kit.predict is optional for this module; its absence must not block a submit
        if exc.name != "kit.predict":
            raise
        _say("kit.predict is not available: submission columns checked only")
        header = path.read_text().splitlines()[:1]
        wanted = [cfg.comp.submission.id_column, cfg.comp.submission.label_column]
        if not header or [c.strip() for c in header[0].split(",")][:2] != wanted:
            raise KitError(f"{path}: header is not {','.join(wanted)}", "write the columns of the sample submission") from None
        return
    validate_submission(cfg, path)


def _git_commit() -> str:
    from kit.config import PROJECT_ROOT

    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return out.stdout.strip() if out.returncode == 0 else ""


def _cv_score(run_dir: Path, metric: str) -> str:
    path = run_dir / "metrics.json"
    if not path.is_file():
        return ""
    try:
        metrics = read_json(path)
    except (ValueError, OSError):
        return ""
    names = [metric, "f1_score" if "f1" in metric else metric, "val_" + metric, "accuracy", "f1_score"]
    for scope in (metrics, *(v for v in metrics.values() if isinstance(v, dict))) if isinstance(metrics, dict) else ():
        for name in names:
            if isinstance(scope.get(name), (int, float)):
                return f"cv {name}={scope[name]:.4f}"
    return ""


def submission_message(cfg: Config, path: Path) -> str:
    """cfg.kaggle.message, or one naming the run: model, run id, CV score, git commit."""
    if cfg.kaggle.message:
        return cfg.kaggle.message
    run_dir = path.parent
    parts = ["kit"]
    runs_root = Path(cfg.run.root) / cfg.comp.name
    if run_dir.parent.parent.resolve() == runs_root.resolve():
        parts.append(f"{run_dir.parent.name} run {run_dir.name}")
    else:
        parts.append(cfg.model.name)
    parts.extend(p for p in (_cv_score(run_dir, cfg.comp.metric), f"git {_git_commit()}" if _git_commit() else "") if p)
    return " ".join(parts)[:250]


def submit(cfg: Config, file: Path | None = None, dry_run: bool = False) -> float | None:
    """Validate and upload a submission, then wait (cfg.kaggle.poll_timeout) for its public score."""
    slug = cfg.comp.slug
    if cfg.comp.source != "competition" or not slug:
        raise KitError(
            f"{cfg.comp.name} is not a Kaggle competition (source {cfg.comp.source}): nothing to submit to",
            "score it with kit evaluate",
        )
    path = Path(file) if file else latest_submission(cfg)
    if not path.is_file():
        raise KitError(f"submission file {path} does not exist", "run kit predict first, or pass --file <submission.csv>")
    _validate(cfg, path)
    message = submission_message(cfg, path)
    size = path.stat().st_size
    if dry_run:
        who = credential_source() or "no credentials found (a real submit would fail)"
        print(f"dry run: would submit {path} ({size} bytes) to {slug} with message '{message}' using {who}")
        return None

    client = api()
    _say(f"submitting {path} ({size} bytes) to {slug}: {message}")
    response = call("submit", client.competition_submit, str(path), message, slug, quiet=True, slug=slug, kind="competition")
    text = getattr(response, "message", "") or ""
    if text == getattr(client, "COMPETITION_SUBMIT_UPLOAD_FAILED_MESSAGE", None):
        raise KitError(f"upload of {path} to {slug} failed", "rerun kit submit")
    if LIMIT_WORDS.search(text) and not getattr(response, "ref", 0):
        raise KitError(f"daily submission limit reached for {slug}; try again after 00:00 UTC ({text})", "")
    return _wait_for_score(cfg, client, getattr(response, "ref", 0) or 0, message)


def _wait_for_score(cfg: Config, client: KaggleApi, ref: int, message: str) -> float | None:
    slug = cfg.comp.slug
    url = f"https://www.kaggle.com/competitions/{slug}/submissions"
    deadline = time.monotonic() + max(0, cfg.kaggle.poll_timeout)
    status = "PENDING"
    while True:
        submissions = call("list submissions", client.competition_submissions, slug, slug=slug, kind="competition") or []
        mine = next((s for s in submissions if s is not None and (s.ref == ref if ref else s.description == message)), None)
        if mine is not None:
            status = getattr(mine.status, "name", str(mine.status))
            if status == "COMPLETE":
                score = mine.public_score
                print(f"public score for {slug}: {score}")
                try:
                    return float(score) if score not in (None, "") else None
                except ValueError:
                    return None
            if status == "ERROR":
                raise KitError(
                    f"Kaggle could not score the submission to {slug}: {mine.error_description or 'no reason given'}",
                    "check the file against the sample submission, then resubmit",
                )
        if time.monotonic() >= deadline:
            _say(f"submission to {slug} is still {status.lower()} after {cfg.kaggle.poll_timeout}s; see {url}")
            return None
        time.sleep(min(_poll_interval(), max(0.0, deadline - time.monotonic())))
