"""Reliability, where kit writes: an output goes only to a regular file or a new path. A FIFO, a device, a socket or a
folder named as an output (``predict.output``, ``kit runs --csv``, a plot) is refused in one line and left as it was;
every writer goes through ``kit.io.atomic_path``, where the check lives.

Devices are made inside the test's folder (a node with /dev/null's numbers), never the machine's own.
"""

from __future__ import annotations

import os
import socket
import stat
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import pytest
from conftest import kit_error_line
from test_reliability_interrupts import predict_setup  # noqa: F401  (a fixture)

from kit.errors import KitError

ROOT = Path(__file__).resolve().parent.parent


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _char_device(path: Path) -> None:
    try:
        os.mknod(path, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # /dev/null's numbers, in the test's own folder
    except PermissionError:
        pytest.skip("making a device node needs CAP_MKNOD")


def _socket(path: Path) -> None:
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(str(path))
    listener.close()


def _folder(path: Path) -> None:
    path.mkdir()


def _link_to_fifo(path: Path) -> None:
    os.mkfifo(path.with_name("real-fifo"))
    path.symlink_to(path.with_name("real-fifo"))


SPECIAL: dict[str, tuple[Callable[[Path], None], str, Callable[[int], bool]]] = {
    "FIFO": (_fifo, "a FIFO", stat.S_ISFIFO),
    "character device": (_char_device, "a character device", stat.S_ISCHR),
    "socket": (_socket, "a socket", stat.S_ISSOCK),
    "folder": (_folder, "a folder", stat.S_ISDIR),
    "link to a FIFO": (_link_to_fifo, "a FIFO", stat.S_ISFIFO),
}


def _writers() -> dict[str, Callable[[Path], object]]:
    from matplotlib.figure import Figure

    from kit.io import atomic_write, write_csv, write_csvs, write_json
    from kit.plots import save

    frame = pd.DataFrame({"id": ["a"], "label": [1]})
    return {
        "atomic_write": lambda path: atomic_write(path, b"x"),
        "write_json": lambda path: write_json(path, {"a": 1}),
        "write_csv": lambda path: write_csv(frame, path),
        "write_csvs (a submission and its probabilities)": lambda path: write_csvs(
            [(frame, path), (frame, path.with_name("probabilities.csv"))]
        ),
        "plots.save": lambda path: save(Figure(), path),
    }


@pytest.mark.parametrize("writer", list(_writers()))
@pytest.mark.parametrize("kind", list(SPECIAL))
def test_no_writer_replaces_a_special_file(tmp_path: Path, kind: str, writer: str) -> None:
    make, what, still = SPECIAL[kind]
    target = tmp_path / "out.csv"
    make(target)
    with pytest.raises(KitError, match=f"is {what}: kit writes its outputs only to regular files or new paths"):
        _writers()[writer](target)
    assert still(os.stat(target).st_mode)  # left as it was
    assert not [p.name for p in tmp_path.iterdir() if p.name not in ("out.csv", "real-fifo")]  # no temp, no other output


def test_regular_files_and_new_paths_are_written(tmp_path: Path) -> None:
    (tmp_path / "old.csv").write_text("old")
    (tmp_path / "link.csv").symlink_to(tmp_path / "old.csv")
    for name in ("old.csv", "new.csv", "link.csv"):
        _writers()["write_csv"](tmp_path / name)
        assert (tmp_path / name).read_text().startswith("id,label")


@pytest.mark.slow
def test_predict_to_a_fifo_is_one_line_and_the_fifo_stays(predict_setup, tmp_path: Path) -> None:  # noqa: F811
    args, run_dir = predict_setup
    fifo = tmp_path / "submission-fifo"
    os.mkfifo(fifo)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{ROOT / 'tests'}"}
    assert f"{fifo} is a FIFO" in kit_error_line([*args, f"predict.output={fifo}"], tmp_path, env)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode) and not (tmp_path / "probabilities.csv").exists()
