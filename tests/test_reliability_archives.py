"""Reliability, archives: a hostile or careless zip is refused with one line before anything is written,
or unzipped without leaving anything partial; kit's own marker never comes from an archive.

Covered elsewhere (not repeated): zip-slip entries (../, absolute, symlink) and a corrupt archive
(tests/test_kaggle.py::test_zip_slip_is_refused, ::test_corrupt_zip_is_removed_and_a_rerun_recovers).
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
import warnings
import zipfile
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import COMMAND_TIMEOUT_S
from disk import small_tmpfs
from fake_kaggle import KEY, demo_files, write_comp_yaml

from kit.config import PROJECT_ROOT, load_config
from kit.errors import KitError
from kit.kaggle.download import MARKER, MAX_UNZIP_GB_ENV, MAX_UNZIP_RATIO_ENV, PARTIAL_DIR, download, safe_extract

pytest_plugins = ["fake_kaggle"]  # the fake_kaggle fixture

MB = 1 << 20


def _zip(entries: list[tuple[str, bytes]], method: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip with these entries in this order (duplicates allowed, as a hostile archive has them)."""
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w", method) as archive:
        warnings.simplefilter("ignore")  # zipfile warns of a duplicate name: that is the point here
        for name, data in entries:
            info = zipfile.ZipInfo(name)
            info.compress_type = method
            archive.writestr(info, data)
    return buffer.getvalue()


def _patch(data: bytes, name: str, field: str, value: int) -> bytes:
    """Rewrite one field of entry ``name`` in its local and central headers, as a hostile archive has it."""
    # field -> (struct format, offset in the local header, offset in the central directory header)
    fmt, local_at, central_at = {"flags": ("<H", 6, 8), "method": ("<H", 8, 10), "size": ("<I", 22, 24)}[field]
    out = bytearray(data)
    encoded = name.encode()
    for signature, at, name_at in ((b"PK\x03\x04", local_at, 30), (b"PK\x01\x02", central_at, 46)):
        start = 0
        while (start := out.find(signature, start)) >= 0:
            if out[start + name_at : start + name_at + len(encoded)] == encoded:
                out[start + at : start + at + struct.calcsize(fmt)] = struct.pack(fmt, value)
            start += 4
    return bytes(out)


def _declare_size(data: bytes, name: str, size: int) -> bytes:
    """A header that lies about the entry's unzipped size."""
    return _patch(data, name, "size", size)


def _write(tmp_path: Path, data: bytes) -> Path:
    archive = tmp_path / "comp.zip"
    archive.write_bytes(data)
    return archive


def _files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


GOOD_CSV = ("train.csv", b"id,label\n1,0\n")

# (case, archive bytes, environment, words the one line must hold)
REFUSED: list[tuple[str, Callable[[], bytes], dict[str, str], list[str]]] = [
    (
        "bomb: one entry 1000x",
        lambda: _zip([GOOD_CSV, ("big.bin", b"\0" * (8 * MB))]),
        {},
        ["big.bin", "zip bomb", MAX_UNZIP_RATIO_ENV],
    ),
    (
        "bomb: the header declares 1 GB in a 1 KB zip",
        lambda: _declare_size(_zip([GOOD_CSV, ("big.bin", b"\0" * 1000)]), "big.bin", 10**9),
        {},
        ["big.bin", "zip bomb", MAX_UNZIP_RATIO_ENV],
    ),
    (
        "bomb: many small entries, 1000x together",
        lambda: _zip([(f"part{i}.bin", b"\0" * (MB // 4)) for i in range(16)]),
        {},
        ["comp.zip", "zip bomb", MAX_UNZIP_RATIO_ENV],
    ),
    (
        "over the size limit",
        lambda: _zip([GOOD_CSV, ("images.bin", os.urandom(2 * MB))], zipfile.ZIP_STORED),
        {MAX_UNZIP_GB_ENV: "0.001"},
        ["comp.zip", "over the 0.001 GB limit", MAX_UNZIP_GB_ENV],
    ),
    (
        "two train.csv entries",
        lambda: _zip([GOOD_CSV, ("a.png", b"x"), ("train.csv", b"id,label\n")]),
        {},
        ["two entries", "train.csv"],
    ),
    ("train.csv and ./train.csv", lambda: _zip([GOOD_CSV, ("./train.csv", b"id,label\n")]), {}, ["two entries", "./train.csv"]),
    (
        "a file that is also a folder",
        lambda: _zip([GOOD_CSV, ("train", b"x"), ("train/a.png", b"y")]),
        {},
        ["'train'", "train/a.png"],
    ),
    ("a folder entry that is also a file", lambda: _zip([GOOD_CSV, ("train/", b""), ("train", b"x")]), {}, ["'train'", "train/"]),
    (
        "a name longer than the disk takes",
        lambda: _zip([GOOD_CSV, ("a" * 300 + ".png", b"x")]),
        {},
        ["name too long", "304 characters"],
    ),
    (
        "a path longer than PATH_MAX",
        lambda: _zip([GOOD_CSV, ("d/" * 2100 + "x.png", b"x")]),
        {},
        ["name too long", "4205 characters"],
    ),
    (
        "an encrypted entry",
        lambda: _patch(_zip([GOOD_CSV, ("a.png", b"x" * 100)]), "a.png", "flags", 1),
        {},
        ["a.png", "encrypted"],
    ),
    (
        "a compression method zipfile lacks (deflate64)",
        lambda: _patch(_zip([GOOD_CSV, ("a.png", b"x" * 100)]), "a.png", "method", 9),
        {},
        ["a.png", "compression method 9"],
    ),
    ("a bad limit setting", lambda: _zip([GOOD_CSV]), {MAX_UNZIP_RATIO_ENV: "lots"}, [MAX_UNZIP_RATIO_ENV, "positive number"]),
]


@pytest.mark.parametrize("case,make,env,words", REFUSED, ids=[c[0] for c in REFUSED])
def test_hostile_archive_is_refused_before_writing(tmp_path, monkeypatch, case, make, env, words):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    archive = _write(tmp_path, make())
    dest = tmp_path / "raw"
    with pytest.raises(KitError) as info:
        safe_extract(archive, dest)
    line = info.value.one_line()
    for word in words:
        assert word in line, line
    assert _files(dest) == [], "nothing may be written"
    assert archive.is_file(), "a refused archive is kept, so a rerun with a raised limit needs no new download"


@pytest.mark.parametrize("existing", ["folder where a file goes", "file where a folder goes"])
def test_what_the_data_folder_holds_never_blocks_a_half_done_unzip(tmp_path, existing):
    dest = tmp_path / "raw"
    if existing.startswith("folder"):
        (dest / "test.csv").mkdir(parents=True)
    else:
        dest.mkdir()
        (dest / "test").write_text("mine")
    archive = _write(tmp_path, _zip([GOOD_CSV, ("test.csv", b"id\n"), ("test/a.png", b"x")]))
    with pytest.raises(KitError) as info:
        safe_extract(archive, dest)
    assert "refused" in info.value.one_line() and "move that" in info.value.one_line()
    assert not (dest / "train.csv").exists()


def test_a_header_that_understates_the_size_leaves_nothing(tmp_path):
    """The CRC check at the end of the lying entry fails after the good entries were unzipped: none of them stays."""
    data = _declare_size(_zip([GOOD_CSV, ("big.bin", b"\0" * (2 * MB))]), "big.bin", 1000)
    archive = _write(tmp_path, data)
    dest = tmp_path / "raw"
    with pytest.raises(KitError, match="corrupt"):
        safe_extract(archive, dest)
    assert _files(dest) == []


TOO_BIG_FOR_1_MB = {
    "one large file": lambda: _zip([GOOD_CSV, ("images.bin", os.urandom(2 * MB))], zipfile.ZIP_STORED),
    "many small files (each takes a whole disk block)": lambda: _zip([(f"t/{i}.png", b"x" * 10) for i in range(400)]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(TOO_BIG_FOR_1_MB))
def test_an_archive_larger_than_the_free_disk_is_refused_before_writing(tmp_path, case):
    archive = _write(tmp_path, TOO_BIG_FOR_1_MB[case]())
    with small_tmpfs(tmp_path, "1m") as disk:
        with pytest.raises(KitError) as info:
            safe_extract(archive, disk / "raw")
        line = info.value.one_line()
        assert "comp.zip" in line and "free" in line and "free disk space" in line, line
        assert _files(disk) == []


def test_reserved_names_are_skipped(tmp_path, capsys):
    forged = json.dumps({"slug": "fake-comp", "files": 3000}).encode()
    entries = [
        (MARKER, forged),
        (f"{PARTIAL_DIR}/fake-comp.zip", b"PK"),
        ("sub/.kit-demo-complete", b""),
        (".KIT-Download.json", forged),
    ]
    entries.append(GOOD_CSV)
    dest = tmp_path / "raw"
    assert safe_extract(_write(tmp_path, _zip(entries)), dest) == 1
    assert [p.relative_to(dest).as_posix() for p in _files(dest)] == ["train.csv"]
    err = capsys.readouterr().err
    assert all(f"'{name}'" in err for name, _ in entries[:4]) and "reserves" in err


def _cfg(tmp_path: Path):
    comp = write_comp_yaml(tmp_path)
    return load_config([f"comp={comp}", f"data.root={tmp_path / 'raw'}", f"run.root={tmp_path / 'runs'}"])


def test_a_forged_marker_never_makes_a_failed_unzip_complete(fake_kaggle, tmp_path):
    """The archive's own .kit-download.json, then an unzip that fails half way; the rerun must not
    take the data as downloaded."""
    forged = json.dumps({"slug": "fake-comp", "source": "competition", "files": 3000, "date": "forged"}).encode()
    good = list(demo_files().items())
    fake_kaggle.competitions["fake-comp"] = _zip([(MARKER, forged), *good, ("clash", b"x"), ("clash/inner.png", b"y")])
    cfg = _cfg(tmp_path)
    root = Path(cfg.data.root)
    with pytest.raises(KitError):
        download(cfg)
    with pytest.raises(KitError):  # not "already downloaded": the same archive is fetched and refused again
        download(cfg)
    assert len(fake_kaggle.calls("DownloadDataFiles")) == 2

    fake_kaggle.competitions["fake-comp"] = _zip([(MARKER, forged), *good])  # the owner fixes the archive
    shutil.rmtree(root / PARTIAL_DIR)  # the kept copy is older than the fixed one: the client fetches it again
    download(cfg)
    marker = json.loads((root / MARKER).read_text())
    assert marker["files"] == len(good) and marker["date"] != "forged"
    assert sorted(p.relative_to(root).as_posix() for p in _files(root) if p.name != MARKER) == sorted(dict(good))


@pytest.mark.slow
def test_cli_duplicate_entry_is_one_line(fake_kaggle, tmp_path):
    fake_kaggle.competitions["fake-comp"] = _zip([*demo_files().items(), GOOD_CSV])
    comp = write_comp_yaml(tmp_path)
    env = dict(os.environ, PYTHONPATH=str(PROJECT_ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "kit", "data", f"comp={comp}", f"data.root={tmp_path / 'raw'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "fake-comp.zip" in lines[0] and "two entries for 'train.csv'" in lines[0], result.stderr
    assert "Traceback" not in result.stderr and KEY not in result.stdout + result.stderr
    assert not (tmp_path / "raw" / "train.csv").exists() and not (tmp_path / "raw" / MARKER).exists()
