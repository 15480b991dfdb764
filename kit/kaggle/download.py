"""Download a competition or dataset from Kaggle into ``cfg.data.root``: cached, resumable, safely unzipped.

The client would unzip with ``extractall`` and no checks, so kit downloads the archive only and
extracts it itself. Every entry of the central directory is checked before anything is written: no
``..``/absolute/symlink entries, no two entries for one file, no entry named like kit's own files
(``.kit-*``: a forged download marker would make an interrupted unzip look complete), and the sizes
fit the limits and the free disk. Entries are then unzipped into a staging folder with their byte
counts enforced while writing (headers can lie), moved into place once all are complete, and the
marker file is written last; a failure removes the staging folder, so nothing partial is left.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from kit.errors import KitError
from kit.io import read_json, write_json
from kit.kaggle.client import api, call, dataset_url, is_dataset_ref, say, slug_name

if TYPE_CHECKING:
    from kit.config import Config

RESERVED_PREFIX = ".kit-"  # names kit writes beside the data; never taken from an archive
MARKER = ".kit-download.json"  # written last: its presence means the data is complete
PARTIAL_DIR = ".kit-download"  # where the client streams the archive (the client resumes it)
STAGING_DIR = "unzip"  # under PARTIAL_DIR: entries are unzipped here, then moved into place
COPY_CHUNK = 1 << 20
SHOWN_NAME_CHARS = 120  # longer entry names are cut in messages
MAX_PATH_BYTES = 4096  # Linux PATH_MAX: a longer path cannot be opened
DISK_BLOCK = 4096  # a file takes whole blocks of the disk: the free-space check counts them
ENCRYPTED_FLAG = 0x1  # general purpose bit 0 of a zip entry
UNZIPPABLE = (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA)

# Unzip limits (README "when things go wrong"): an environment variable raises each.
MAX_UNZIP_GB = 200.0  # total size of the unzipped files; the largest Kaggle competitions are ~100-200 GB
MAX_UNZIP_GB_ENV = "KIT_MAX_UNZIP_GB"
MAX_UNZIP_RATIO = 100.0  # unzipped / compressed size; images are ~1, CSV ~3-20, a zip bomb ~1000
MAX_UNZIP_RATIO_ENV = "KIT_MAX_UNZIP_RATIO"
RATIO_FLOOR_BYTES = 1 << 20  # an entry (or archive) smaller than this unzipped is not ratio-checked: harmless


@dataclass(frozen=True)
class UnzipLimits:
    max_bytes: int
    max_ratio: float


def _limit_from_env(name: str, default: float) -> float:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise KitError(f"{name}={raw!r} is not a positive number", f"set {name} to a number such as {default:g}, or unset it")
    return value


def unzip_limits() -> UnzipLimits:
    """The archive limits now (read at each unzip, so a changed environment is honoured)."""
    gigabytes = _limit_from_env(MAX_UNZIP_GB_ENV, MAX_UNZIP_GB)
    return UnzipLimits(max_bytes=int(gigabytes * 1e9), max_ratio=_limit_from_env(MAX_UNZIP_RATIO_ENV, MAX_UNZIP_RATIO))


def _gb(size: int) -> str:
    return f"{size / 1e9:.3g} GB"


UNSAFE_HINT = "the archive is unsafe; report it to the data's owner"


def _short(name: str) -> str:
    """A name as an error line shows it: a hostile one can be thousands of characters."""
    return name if len(name) <= SHOWN_NAME_CHARS else f"{name[:SHOWN_NAME_CHARS]}...({len(name)} characters)"


def _max_name_bytes(dest: Path) -> int:
    """The longest file name the disk under ``dest`` takes (the nearest existing folder's, 255 where unknown)."""
    folder = next((p for p in (dest, *dest.parents) if p.is_dir()), Path("/"))
    try:
        return os.pathconf(folder, "PC_NAME_MAX")
    except (OSError, ValueError, AttributeError):
        return 255


def _member_path(archive: Path, info: zipfile.ZipInfo, dest: Path) -> PurePosixPath:
    """The entry's path relative to ``dest``; refuse entries that would land outside it (zip-slip) or create links."""
    name = info.filename
    posix = name.replace("\\", "/")
    where = f"archive {archive.name} entry '{_short(name)}'"
    if posix.startswith("/") or re.match(r"^[A-Za-z]:", posix):
        raise KitError(f"{where} has an absolute path: refused", UNSAFE_HINT)
    relative = PurePosixPath(posix)
    if ".." in relative.parts:
        raise KitError(f"{where} points outside the data folder: refused", UNSAFE_HINT)
    longest = max((len(part.encode()) for part in relative.parts), default=0)
    if longest > _max_name_bytes(dest) or len(str(dest / PARTIAL_DIR / STAGING_DIR / relative).encode()) >= MAX_PATH_BYTES:
        raise KitError(
            f"{where} has a name too long for this disk ({longest} bytes in one name, {len(posix)} in all): refused",
            "unzip it by hand and shorten the names, or report it to the data's owner",
        )
    if stat.S_ISLNK(info.external_attr >> 16):
        raise KitError(f"{where} is a symbolic link: refused", UNSAFE_HINT)
    if not (dest / relative).resolve().is_relative_to(dest.resolve()):
        raise KitError(f"{where} resolves outside {dest}: refused", "remove links inside the data folder")
    return relative


@dataclass
class _Plan:
    """What an archive would write: files (entry, relative path), folders, skipped reserved names, total bytes."""

    files: list[tuple[zipfile.ZipInfo, PurePosixPath]]
    folders: list[PurePosixPath]
    skipped: list[str]
    total: int


def _plan(archive: Path, zf: zipfile.ZipFile, dest: Path, limits: UnzipLimits) -> _Plan:
    """Check every entry of the central directory before anything is written."""
    plan = _Plan(files=[], folders=[], skipped=[], total=0)
    files: dict[str, str] = {}  # normalised path ("./a", "a//b" and "a\\b" name one file) -> entry name
    parents: dict[str, str] = {}  # folder implied by a file -> that file's entry name
    for info in zf.infolist():
        relative = _member_path(archive, info, dest)
        if not relative.parts:
            continue  # the archive's root folder entry ("./")
        if any(part.casefold().startswith(RESERVED_PREFIX) for part in relative.parts):  # a case-insensitive disk too
            plan.skipped.append(info.filename)  # kit's markers never come from an archive
            continue
        if info.is_dir():
            plan.folders.append(relative)
            parents.setdefault(relative.as_posix(), info.filename)
            continue
        if info.flag_bits & ENCRYPTED_FLAG:
            raise KitError(
                f"archive {archive.name} entry '{_short(info.filename)}' is encrypted: refused",
                "unzip it by hand with its password",
            )
        if info.compress_type not in UNZIPPABLE:
            raise KitError(
                f"archive {archive.name} entry '{_short(info.filename)}' uses compression method {info.compress_type}, "
                "which Python's zipfile cannot unzip: refused",
                "unzip it by hand (e.g. 7z x) into data.root, then rerun",
            )
        key = relative.as_posix()
        if key in files:
            raise KitError(
                f"archive {archive.name} has two entries for '{_short(str(relative))}' "
                f"('{_short(files[key])}' and '{_short(info.filename)}'): refused",
                "the archive is ambiguous; unzip it by hand and keep the right one, or report it to the data's owner",
            )
        files[key] = info.filename
        for parent in relative.parents:
            if parent.parts:
                parents.setdefault(parent.as_posix(), info.filename)
        _check_ratio(f"archive {archive.name} entry '{_short(info.filename)}'", info.file_size, info.compress_size, limits)
        plan.files.append((info, relative))
        plan.total += info.file_size
    for key, name in files.items():
        if key in parents:
            raise KitError(
                f"archive {archive.name} entry '{_short(name)}' is a file "
                f"and also the folder of '{_short(parents[key])}': refused",
                "the archive is ambiguous; report it to the data's owner",
            )
    _check_existing(archive, dest, files, parents)
    if plan.total > limits.max_bytes:
        raise KitError(
            f"archive {archive.name} unzips to {_gb(plan.total)}, over the {_gb(limits.max_bytes)} limit: refused",
            f"if the data really is that large, raise the limit: export {MAX_UNZIP_GB_ENV}=<GB>, then rerun",
        )
    _check_ratio(f"archive {archive.name}", plan.total, archive.stat().st_size, limits)
    return plan


def _check_existing(archive: Path, dest: Path, files: dict[str, str], folders: dict[str, str]) -> None:
    """Refuse before unzipping when what ``dest`` holds would block a move (a folder where a file goes, or back)."""
    for key, name in files.items():
        if (dest / key).is_dir() and not (dest / key).is_symlink():
            raise KitError(
                f"archive {archive.name} entry '{_short(name)}' would replace the folder {_short(str(dest / key))}: refused",
                "move that folder away (or choose another data.root), then rerun",
            )
    for key, name in folders.items():
        if (dest / key).exists() and not (dest / key).is_dir():
            raise KitError(
                f"archive {archive.name} entry '{_short(name)}' needs the folder {_short(str(dest / key))}, "
                "which is a file: refused",
                "move that file away (or choose another data.root), then rerun",
            )


def _check_ratio(what: str, size: int, compressed: int, limits: UnzipLimits) -> None:
    if size >= RATIO_FLOOR_BYTES and size > limits.max_ratio * max(compressed, 1):
        raise KitError(
            f"{what} expands {size / max(compressed, 1):.0f} times ({compressed} -> {size} bytes), "
            f"over the {limits.max_ratio:g}x limit: refused as a zip bomb",
            f"if the data really compresses that well, raise the limit: export {MAX_UNZIP_RATIO_ENV}=<ratio>, then rerun",
        )


def _copy_entry(archive: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, budget: int) -> int:
    """Unzip one entry, never writing more than its declared size or the archive's remaining budget."""
    allowed = min(info.file_size, budget)
    written = 0
    with zf.open(info) as source, open(target, "xb") as out:
        while chunk := source.read(COPY_CHUNK):
            written += len(chunk)
            if written > allowed:
                raise KitError(
                    f"archive {archive.name} entry '{_short(info.filename)}' unzips to more than the {info.file_size} bytes "
                    "its header declares: refused",
                    UNSAFE_HINT,
                )
            out.write(chunk)
    return written


def _corrupt(archive: Path, exc: BaseException) -> KitError:
    archive.unlink(missing_ok=True)
    return KitError(f"downloaded archive {archive.name} is corrupt ({exc}); removed it", "rerun to download it again")


def safe_extract(archive: Path, dest: Path) -> int:
    """Check, then unzip ``archive`` into ``dest`` through a staging folder; returns the number of files written.

    A corrupt archive is deleted (so a rerun downloads it again) and reported as a KitError. On any
    failure, interrupts included, the staging folder is removed and ``dest`` holds no file of the archive.
    """
    from kit.progress import progress

    limits = unzip_limits()
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, zlib.error, ValueError) as exc:
        raise _corrupt(archive, exc) from None
    staging = dest / PARTIAL_DIR / STAGING_DIR
    with zf:
        plan = _plan(archive, zf, dest, limits)
        for name in plan.skipped:
            say(f"warning: archive {archive.name} entry '{_short(name)}' has a name kit reserves ({RESERVED_PREFIX}*): skipped")
        try:
            shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted unzip
            staging.mkdir(parents=True)
            needed = sum(-(-info.file_size // DISK_BLOCK) * DISK_BLOCK for info, _ in plan.files)  # whole blocks per file
            free = shutil.disk_usage(staging).free
            if needed > free:
                raise KitError(
                    f"archive {archive.name} unzips to {_gb(needed)} but {dest} has {_gb(free)} free: refused",
                    "free disk space, or set data.root to a folder on a larger disk, then rerun",
                )
            written = 0
            shown = progress(plan.files, f"unzip {archive.name}", unit="file", disable=len(plan.files) < 200)
            for info, relative in shown:
                target = staging / relative
                target.parent.mkdir(parents=True, exist_ok=True)
                written += _copy_entry(archive, zf, info, target, limits.max_bytes - written)
        except (zipfile.BadZipFile, EOFError, zlib.error) as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise _corrupt(archive, exc) from None
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            raise KitError(
                f"cannot unzip {archive.name} into {dest}: {_short(str(exc))}",
                "free disk space or fix the folder's permissions, then rerun",
            ) from None
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    _move_into_place(archive, staging, dest, plan)
    return len(plan.files)


def _move_into_place(archive: Path, staging: Path, dest: Path, plan: _Plan) -> None:
    """Rename the complete files from the staging folder into ``dest`` (same disk: no copy)."""
    try:
        for folder in plan.folders:
            (dest / folder).mkdir(parents=True, exist_ok=True)
        for _, relative in plan.files:
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.is_symlink():
                target.unlink()  # never write through a link left in the folder
            os.replace(staging / relative, target)
    except OSError as exc:
        raise KitError(
            f"cannot move the files of {archive.name} into {dest}: {_short(str(exc))}",
            "fix what the message names in the data folder, then rerun",
        ) from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _completed(marker: Path, slug: str) -> dict | None:
    """The marker's record when it is kit's marker of this slug's complete download, else None."""
    if not marker.is_file():
        return None
    try:
        info = read_json(marker)
    except (OSError, ValueError, UnicodeDecodeError):
        info = None
    if not isinstance(info, dict) or info.get("slug") != slug or not isinstance(info.get("files"), int):
        say(f"warning: {marker} is not kit's record of a complete download of {slug}: downloading again")
        return None
    return info


def download(cfg: Config) -> Path:
    """Download and unzip the competition or dataset into ``cfg.data.root``; cached by a marker file.

    A rerun with the marker present makes no Kaggle request. An interrupted download resumes (the
    client continues a partial archive in ``<root>/.kit-download/``); an interrupted unzip is redone.
    """
    root = Path(cfg.data.root)
    source, slug = cfg.comp.source, cfg.comp.slug
    if source == "local":
        say(
            f"{cfg.comp.name} is local data in {root}: nothing to download"
            + (" (`kit demo` generates it)" if cfg.comp.name == "demo" else "")
        )
        return root
    marker = root / MARKER
    info = _completed(marker, slug)
    if info is not None:
        say(f"{slug} already downloaded to {root} ({info.get('date', '?')}); delete {marker} to download again")
        return root
    if not slug:
        raise KitError(f"comp.slug is empty for {cfg.comp.name}", "set comp.slug in the competition YAML")
    if source == "dataset" and not is_dataset_ref(slug):
        raise KitError(f"dataset slug '{slug}' is not owner/name", f"use the owner/name from {dataset_url('<owner>/<name>')}")

    client = api()
    marker.unlink(missing_ok=True)  # a marker that is not kit's record never outlives a new download
    partial = root / PARTIAL_DIR
    partial.mkdir(parents=True, exist_ok=True)
    say(f"downloading {source} {slug} to {root}")
    kind = "competition" if source == "competition" else "dataset"
    fetch = client.competition_download_files if kind == "competition" else client.dataset_download_files
    call("download", fetch, slug, path=str(partial), quiet=False, slug=slug, kind=kind)
    archive = partial / f"{slug_name(slug)}.zip"
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
    say(f"unzipped {count} files of {archive.name} ({size / 1e6:.1f} MB) into {root}")
    return root


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
