"""Download a competition or dataset from Kaggle into ``cfg.data.root``: cached, resumable, safely unzipped.

The client would unzip with ``extractall`` and no checks, so kit downloads the archive only and
extracts it itself: integrity test first, no ``..``/absolute/symlink entries, marker file written last.
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
import stat
import sys
import zipfile
import zlib
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from kit.errors import KitError
from kit.io import read_json, write_json
from kit.kaggle.client import api, call, dataset_url, is_dataset_ref, say, slug_name

if TYPE_CHECKING:
    from kit.config import Config

MARKER = ".kit-download.json"  # written last: its presence means the data is complete
PARTIAL_DIR = ".kit-download"  # where the client streams the archive (the client resumes it)


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
        say(
            f"{cfg.comp.name} is local data in {root}: nothing to download"
            + (" (`kit demo` generates it)" if cfg.comp.name == "demo" else "")
        )
        return root
    marker = root / MARKER
    if marker.is_file():
        info = read_json(marker)
        say(f"{slug} already downloaded to {root} ({info.get('date', '?')}); delete {marker} to download again")
        return root
    if not slug:
        raise KitError(f"comp.slug is empty for {cfg.comp.name}", "set comp.slug in the competition YAML")
    if source == "dataset" and not is_dataset_ref(slug):
        raise KitError(f"dataset slug '{slug}' is not owner/name", f"use the owner/name from {dataset_url('<owner>/<name>')}")

    client = api()
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
