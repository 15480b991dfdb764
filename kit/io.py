"""Atomic file writes: a reader never sees a half-written file, a kill never leaves one behind.

Local paths use the OS (temp file in the same folder, fsync, ``os.replace``). URL-like paths
(``gs://bucket/...`` for TPUs, TF's in-memory ``ram://`` in tests, any ``scheme://``) go through
``tf.io.gfile``, imported only when such a path is used: the content goes to a temp name beside the
target, then ``gfile.rename(..., overwrite=True)`` moves it over the target. :func:`as_path` gives a
:class:`URLPath` for those, a small pathlib-like handle that keeps the ``//`` that ``pathlib.Path``
collapses (``Path("gs://b/x")`` is ``gs:/b/x``), so code written against ``Path`` keeps working.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import stat
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any, BinaryIO, TextIO

from kit.errors import KitError

if TYPE_CHECKING:
    import pandas as pd

# The process umask, read once (reading it means setting it, which is not thread-safe to repeat).
_UMASK = os.umask(0o022)
os.umask(_UMASK)

_URL = re.compile(r"^[A-Za-z][A-Za-z0-9+.\-]*://")


def is_url(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` paths (gs://, ram://, s3://, hdfs://)."""
    return bool(_URL.match(str(path)))


def join(directory: str | os.PathLike, name: str) -> str:
    """``directory/name`` for a local folder or a URL (the one place kit joins a ``gs://`` path to a name).

    A URL that went through ``pathlib.Path`` lost one slash (``gs:/bucket``); the join puts it back.
    """
    text = os.fspath(directory)
    collapsed = re.match(r"^([A-Za-z][A-Za-z0-9+.\-]*):/(?!/)", text)
    if collapsed and len(collapsed.group(1)) > 1:  # "C:/..." on Windows is a drive, not a collapsed URL
        text = f"{collapsed.group(1)}://{text[collapsed.end() :]}"
    if is_url(text):
        return text.rstrip("/") + "/" + name
    return os.path.join(text, name)


def _gfile() -> Any:
    import tensorflow as tf  # only for URL paths: local file handling never pays TensorFlow's import

    return tf.io.gfile


class URLPath:
    """The part of ``pathlib.Path`` that kit uses, over ``tf.io.gfile``, for one ``scheme://`` path.

    ``str()``/``os.fspath()`` give the URL, which Keras (``model.save``, ``load_model``, ``load_weights``)
    and TensorFlow (TFRecords, summaries) accept as they are.
    """

    __slots__ = ("_url",)

    def __init__(self, url: str | os.PathLike) -> None:
        url = os.fspath(url) if not isinstance(url, str) else url
        scheme, sep, rest = url.partition("://")
        if not sep:
            raise ValueError(f"not a URL: {url!r}")
        rest = "/".join(part for part in rest.split("/") if part not in ("", "."))
        self._url = f"{scheme}://{rest}"

    # --- names -----------------------------------------------------------------------------------------
    def __str__(self) -> str:
        return self._url

    def __fspath__(self) -> str:
        return self._url

    def __repr__(self) -> str:
        return f"URLPath({self._url!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, URLPath) and str(other) == self._url

    def __hash__(self) -> int:
        return hash(self._url)

    def __lt__(self, other: URLPath) -> bool:
        return self._url < str(other)

    def __truediv__(self, other: str | os.PathLike) -> URLPath:
        return URLPath(f"{self._url}/{os.fspath(other)}")

    @property
    def _rest(self) -> str:
        return self._url.partition("://")[2]

    @property
    def name(self) -> str:
        return posixpath.basename(self._rest)

    @property
    def suffix(self) -> str:
        return posixpath.splitext(self.name)[1]

    @property
    def stem(self) -> str:
        return posixpath.splitext(self.name)[0]

    @property
    def parent(self) -> URLPath:
        scheme = self._url.partition("://")[0]
        return URLPath(f"{scheme}://{posixpath.dirname(self._rest)}")

    def with_name(self, name: str) -> URLPath:
        return self.parent / name

    def as_posix(self) -> str:
        return self._url

    def resolve(self) -> URLPath:
        return self

    # --- the file system -------------------------------------------------------------------------------
    def exists(self) -> bool:
        return bool(_gfile().exists(self._url))

    def is_dir(self) -> bool:
        return bool(_gfile().isdir(self._url))

    def is_file(self) -> bool:
        gfile = _gfile()
        return bool(gfile.exists(self._url) and not gfile.isdir(self._url))

    def mkdir(self, parents: bool = False, exist_ok: bool = False) -> None:
        # Object stores have no real folders; makedirs creates what the file system needs either way.
        if not exist_ok and self.exists():
            raise FileExistsError(self._url)
        _gfile().makedirs(self._url)

    def iterdir(self) -> Iterator[URLPath]:
        for name in _gfile().listdir(self._url):
            yield self / name.rstrip("/")  # GCS lists folders with a trailing slash

    def glob(self, pattern: str) -> Iterator[URLPath]:
        for match in _gfile().glob(f"{self._url}/{pattern}"):
            yield URLPath(match)

    def unlink(self, missing_ok: bool = False) -> None:
        import tensorflow as tf

        try:
            _gfile().remove(self._url)
        except tf.errors.NotFoundError:
            if not missing_ok:
                raise FileNotFoundError(self._url) from None

    def stat(self) -> SimpleNamespace:
        """``st_mtime`` and ``st_size``; 0 for object-store folders, which have no object to stat."""
        import tensorflow as tf

        try:
            info = _gfile().stat(self._url)
        except tf.errors.NotFoundError:
            if self.is_dir():
                return SimpleNamespace(st_mtime=0.0, st_size=0)
            raise FileNotFoundError(self._url) from None
        return SimpleNamespace(st_mtime=info.mtime_nsec / 1e9, st_size=int(info.length))

    def open(self, mode: str = "r") -> TextIO | BinaryIO:
        return _gfile().GFile(self._url, mode)

    def read_bytes(self) -> bytes:
        with _gfile().GFile(self._url, "rb") as handle:
            return handle.read()

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def write_bytes(self, data: bytes) -> int:
        atomic_write(self, data)
        return len(data)

    def write_text(self, data: str, encoding: str = "utf-8") -> int:
        atomic_write(self, data.encode(encoding))
        return len(data)


def as_path(path: str | os.PathLike) -> Path | URLPath:
    """``Path`` for local paths, :class:`URLPath` for ``scheme://`` ones (which ``Path`` would mangle)."""
    if isinstance(path, Path | URLPath):
        return path
    return URLPath(path) if is_url(path) else Path(path)


def _url_temp(target: URLPath) -> str:
    """A hidden, unique temp name beside ``target`` (same bucket, so the rename is cheap)."""
    return str(target.parent / f".{target.name}.{uuid.uuid4().hex[:12]}.tmp")


def put_file(local: str | os.PathLike, target: str | os.PathLike) -> URLPath:
    """Copy a local file to the URL ``target`` atomically: a temp name beside it, then a rename over it."""
    target, gfile = URLPath(target), _gfile()
    gfile.makedirs(str(target.parent))
    tmp = _url_temp(target)
    try:
        gfile.copy(os.fspath(local), tmp, overwrite=True)
        gfile.rename(tmp, str(target), overwrite=True)
    except BaseException:
        with contextlib.suppress(Exception):
            gfile.remove(tmp)
        raise
    return target


_SPECIAL_FILES = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
)


def refuse_special(path: Path) -> None:
    """Outputs go only to regular files or new paths: a KitError when ``path`` (links followed) is a device, a FIFO,
    a socket or a folder, which a rename would otherwise replace (as root, /dev/full itself)."""
    try:
        mode = os.stat(path).st_mode
    except (OSError, ValueError):
        return  # a new path (or one the write itself will report on)
    for test, what in _SPECIAL_FILES:
        if test(mode):
            raise KitError(
                f"{path} is {what}: kit writes its outputs only to regular files or new paths, and never replaces {what}",
                "name a new file (or an existing regular file) as the output",
            )


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only if the block succeeds.

    For a URL the temp file is local (so any writer that wants a real file works: pandas, matplotlib,
    Keras) and is uploaded with :func:`put_file` at the end. A local ``path`` that exists must be a regular file
    (:func:`refuse_special`).
    """
    if is_url(path):
        fd, tmp = tempfile.mkstemp(prefix=f".{URLPath(path).name}.", suffix=suffix + ".tmp")
        os.close(fd)
        try:
            yield Path(tmp)
            put_file(tmp, path)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return
    path = Path(path)
    refuse_special(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix + ".tmp", dir=path.parent)
    # mkstemp makes the file private (0600); the result should get the usual mode, as open() would give it.
    os.fchmod(fd, 0o666 & ~_UMASK)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except OSError as exc:
        tmp_path.unlink(missing_ok=True)
        if exc.filename is None or os.fsdecode(exc.filename) == tmp:
            # A write that failed on the temp (a full disk reports no file at all): name the file meant, not the temp.
            raise OSError(exc.errno, exc.strerror or str(exc), os.fspath(path)) from exc
        raise
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path | URLPath:
    """Write ``data`` to ``path`` atomically (temp file in the same folder, fsync, rename)."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:  # a URL: written locally, then put_file
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    return as_path(path)


def write_json(path: str | os.PathLike, value: Any) -> Path | URLPath:
    """Atomically write ``value`` as indented JSON."""
    return atomic_write(path, json.dumps(value, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(as_path(path).read_text())


@contextlib.contextmanager
def local_copy(path: str | os.PathLike) -> Iterator[Path]:
    """A local file with the content of ``path``: ``path`` itself when local, else a temp download."""
    if not is_url(path):
        yield Path(path)
        return
    name = URLPath(path).name
    with tempfile.TemporaryDirectory(prefix="kit-") as folder:
        local = Path(folder) / name
        _gfile().copy(str(path), str(local), overwrite=True)
        yield local


# ----------------------------------------------------------------------------------------------------
# CSV tables, written atomically (reading them, with limits and one-line errors: kit.inputs)
# ----------------------------------------------------------------------------------------------------


def write_csv(frame: pd.DataFrame, path: str | os.PathLike) -> Path | URLPath:
    """Write ``frame`` (without its index) atomically; local paths and URLs alike."""
    return write_csvs([(frame, path)])[0]


def write_csvs(tables: Sequence[tuple[pd.DataFrame, str | os.PathLike]]) -> list[Path | URLPath]:
    """Write files that belong together (a submission and its probabilities) so they stay in step: every table to
    its temp file first, and only when all are written are they renamed into place; a failure leaves none changed."""
    with contextlib.ExitStack() as stack:
        for frame, path in tables:
            frame.to_csv(stack.enter_context(atomic_path(path, suffix=".csv")), index=False)
    return [as_path(path) for _, path in tables]
