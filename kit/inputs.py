"""Reading the tables kit is handed: regular files only, a byte cap, streamed, and one-line errors.

A table (a competition's CSV, a sample submission, a solution) is input like an image: it may be a FIFO, a
device, ``/proc/self/environ`` or 8 GB. Each is checked before it is opened (:func:`check_table_file`: a regular
file, at most :func:`max_table_bytes`), then parsed straight from the file (no copy of its bytes and its text
beside the table pandas builds), and every mistake is one :class:`~kit.errors.KitError` naming the file. Which
files a *setting* may name (inside ``data.root``) is :mod:`kit.config.files`' concern; it uses this cap.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING

from kit.errors import KitError, listing, nearest, quoted

if TYPE_CHECKING:
    import pandas as pd

MAX_TABLE_BYTES = 1 << 30  # bytes of one table file (1 GiB: Kaggle's largest image-competition CSVs are ~0.5 GB)
MAX_TABLE_BYTES_ENV = "KIT_MAX_TABLE_BYTES"  # raises (or lowers) the cap
CHUNK = 1 << 20  # bytes read at a time when looking for the first byte that is not UTF-8


def max_table_bytes() -> int:
    """The table cap now (read each time, so a changed environment is honoured)."""
    value = os.environ.get(MAX_TABLE_BYTES_ENV, "")
    try:
        return int(value) if value else MAX_TABLE_BYTES
    except ValueError:
        raise KitError(f"{MAX_TABLE_BYTES_ENV}={quoted(value)} is not a whole number of bytes", "e.g. 4000000000") from None


def check_table_file(path: Path, fix: str) -> os.stat_result:
    """A table file that exists, is a regular file (links followed: a FIFO or a device is never opened) and holds
    at most :func:`max_table_bytes`; its stat, else one KitError."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise KitError(f"{path}: CSV file not found", fix) from None
    except (OSError, ValueError) as exc:  # a name too long, no permission, a NUL byte
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise KitError(f"{path}: cannot be read ({reason})", fix) from None
    if not stat.S_ISREG(info.st_mode):
        raise KitError(f"{path}: not a regular file", fix)
    limit = max_table_bytes()
    if info.st_size > limit:
        raise KitError(
            f"{path}: {info.st_size:,} bytes, over the {limit:,}-byte limit for a table",
            f"check the file; a table this big is allowed with {MAX_TABLE_BYTES_ENV}=<bytes>",
        )
    return info


def _first_bad_utf8(path: Path) -> tuple[int, int, int]:
    """(offset, line, byte) of the first byte of ``path`` that is not UTF-8, read a CHUNK at a time."""
    offset, lines, carry = 0, 1, b""
    with open(path, "rb") as handle:
        while True:
            chunk = handle.read(CHUNK)
            data = carry + chunk
            try:
                data.decode("utf-8")
                good = len(data)
            except UnicodeDecodeError as exc:
                if chunk and exc.reason == "unexpected end of data":  # a character split between two chunks
                    good = exc.start
                else:
                    return offset + exc.start, lines + data[: exc.start].count(b"\n"), data[exc.start]
            lines += data[:good].count(b"\n")
            offset, carry = offset + good, data[good:]
            if not chunk:
                return offset, lines, 0


def read_csv(path: str | os.PathLike, fix: str = "re-download the file or fix it by hand") -> pd.DataFrame:
    """Read a CSV as text columns (ids keep leading zeros), with one-line errors for broken files.

    UTF-8 with or without a byte-order mark is accepted (``utf-8-sig`` decodes both; plain ``utf-8``
    would leave the mark glued to the first column name). Column names are stripped of spaces. The file is
    checked first (:func:`check_table_file`) and parsed as it is read.
    """
    import pandas as pd  # here, not at the top: the CLI imports this module at start-up

    path = Path(path)
    check_table_file(path, fix)
    try:
        with open(path, "rb") as handle:
            frame = pd.read_csv(
                handle,
                dtype=str,
                keep_default_na=False,
                skipinitialspace=True,
                encoding="utf-8-sig",
                compression=None,  # never unpack: a table named .gz is read as it is
            )
    except OSError as exc:
        raise KitError(f"{path}: cannot read the CSV ({exc.strerror or type(exc).__name__})", fix) from None
    except UnicodeDecodeError:
        offset, line, byte = _first_bad_utf8(path)
        raise KitError(
            f"{path} line {line}: not UTF-8 text (byte 0x{byte:02x} at offset {offset})",
            f"re-save it as UTF-8, e.g. iconv -f latin1 -t utf-8 {path.name} > fixed.csv",
        ) from None
    except pd.errors.EmptyDataError:
        raise KitError(f"{path}: the CSV file is empty", fix) from None
    except pd.errors.ParserError as exc:
        detail = str(exc).strip().splitlines()[-1]
        fix_fields = "every row needs as many comma-separated fields as the header"
        raise KitError(f"{path}: not a valid CSV ({detail})", fix_fields) from None
    frame.columns = [str(c).strip() for c in frame.columns]
    if frame.shape[1] == 1:
        header = frame.columns[0]
        for sep, word in ((";", "semicolon"), ("\t", "tab"), ("|", "pipe")):
            if sep in header:
                raise KitError(
                    f"{path} line 1: read as one column '{quoted(header)}': the file looks {word}-separated",
                    "save it comma-separated (e.g. pandas: pd.read_csv(f, sep=...).to_csv(f, index=False))",
                )
    return frame


def require_columns(frame: pd.DataFrame, source: str, wanted: dict[str, str]) -> None:
    """A one-line error naming the nearest column when one is missing.

    ``wanted`` maps a setting name (e.g. comp.train.label_column) to the column it names; an empty
    column name is not wanted.
    """
    for setting, column in wanted.items():
        if column and column not in frame.columns:
            near = nearest(column, frame.columns, n=1)
            raise KitError(
                f"{source}: no column '{quoted(column)}' (columns: {listing(frame.columns)})",
                f"set {setting}={quoted(near[0])}" if near else f"set {setting} to one of the columns",
            )
