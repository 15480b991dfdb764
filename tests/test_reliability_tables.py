"""Reliability, tables: every broken CSV stops ``python -m kit records`` with exit code 2 and exactly one
stderr line ``error: <file> row <n> ...: <what> (fix: <how>)``, never a traceback.

The messages themselves are unit-tested in tests/test_sources.py; this checks what a user sees on the CLI.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import COMMAND_TIMEOUT_S

ROOT = Path(__file__).resolve().parent.parent

COMP_YAML = """\
comp:
  name: reli-tables
  source: local
  train: {csv: train.csv, id_column: id, label_column: label, image_dir: train, image_ext: .png}
  test: {csv: test.csv, id_column: id, image_dir: test, image_ext: .png}
  sample_submission: sample_submission.csv
  classes: [cat, dog]
  submission: {id_column: id, label_column: label, label_format: name}
"""

# A 1x1 grey PNG: valid, tiny; the index checks only that files exist.
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d49484452000000010000000108000000003a7e9b55"
    "0000000a4944415478da63f80f00010101001b74f9a20000000049454e44ae426082"
)
TRAIN = "id,label\nt0,cat\nt1,dog\nt2,cat\nt3,dog\n"
TEST = "id\ns0\ns1\n"
SAMPLE = "id,label\ns0,cat\ns1,cat\n"


def _competition(root: Path) -> None:
    for folder, ids in (("train", ["t0", "t1", "t2", "t3"]), ("test", ["s0", "s1"])):
        (root / folder).mkdir(parents=True)
        for i in ids:
            (root / folder / f"{i}.png").write_bytes(PNG)
    (root / "train.csv").write_text(TRAIN)
    (root / "test.csv").write_text(TEST)
    (root / "sample_submission.csv").write_text(SAMPLE)


def _write(name: str, content: str | bytes) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        path = root / name
        path.write_bytes(content) if isinstance(content, bytes) else path.write_text(content)

    return apply


# case -> (how to break the competition, what the one error line must contain)
CASES: dict[str, tuple[Callable[[Path], None], list[str]]] = {
    "missing column": (_write("train.csv", TRAIN.replace("label", "lable", 1)), ["train.csv", "no column 'label'", "fix:"]),
    "duplicate id": (
        _write("train.csv", TRAIN.replace("t3,dog", "t1,dog")),
        ["train.csv", "duplicate id 't1'", "row 2", "row 4", "fix:"],
    ),
    "label not in class list": (
        _write("train.csv", TRAIN.replace("t2,cat", "t2,cow")),
        ["train.csv row 3", "'cow' is not in the class list", "fix:"],
    ),
    "NaN label": (_write("train.csv", TRAIN.replace("t1,dog", "t1,NaN")), ["train.csv row 2", "empty label", "fix:"]),
    "empty label cell": (_write("train.csv", TRAIN.replace("t1,dog", "t1,")), ["train.csv row 2", "empty label", "fix:"]),
    "path to a missing file": (lambda root: (root / "train" / "t2.png").unlink(), ["train.csv row 3", "t2.png does not exist"]),
    "empty CSV": (_write("train.csv", ""), ["train.csv", "empty", "fix:"]),
    "header only": (_write("train.csv", "id,label\n"), ["train.csv", "no rows", "fix:"]),
    "semicolon delimiter": (_write("train.csv", TRAIN.replace(",", ";")), ["train.csv line 1", "semicolon-separated", "fix:"]),
    "latin-1 encoding": (
        _write("train.csv", TRAIN.replace("t3,dog", "t3,d\u00f6g").encode("latin-1")),
        ["train.csv line 5", "not UTF-8", "fix:"],
    ),
    "ragged rows": (_write("train.csv", TRAIN + "t4,cat,extra,more\n"), ["train.csv", "not a valid CSV", "fix:"]),
    "test ids not in sample_submission": (
        _write("sample_submission.csv", "id,label\ns0,cat\ns9,cat\n"),
        ["test", "do not match", "sample_submission.csv", "'s1'", "'s9'", "fix:"],
    ),
    "sample_submission without the id column": (
        _write("sample_submission.csv", "ID,label\ns0,cat\ns1,cat\n"),
        ["sample_submission.csv", "no column 'id'", "comp.submission.id_column=ID"],
    ),
}


def _records(tmp_path: Path, root: Path, overrides: list[str] = (), data_workers: bool = False) -> subprocess.CompletedProcess:
    """``python -m kit records`` on the competition at ``root``; ``overrides`` come last, so they win."""
    comp = tmp_path / "comp.yaml"
    comp.write_text(COMP_YAML)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    records_root = tmp_path / "rec"
    command = [sys.executable, "-m", "kit", "records", f"comp={comp}", f"data.root={root}", f"data.records_root={records_root}"]
    return subprocess.run(
        [*command, *(["data.workers=1"] if data_workers else []), *overrides],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,  # generous: only a hang (a FIFO read, a runaway allocation) comes near it
    )


def _assert_one_error_line(tmp_path: Path, result: subprocess.CompletedProcess, expected: list[str]) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == errors, result.stderr  # nothing else
    for part in expected:
        assert part in errors[0], f"{part!r} not in {errors[0]!r}"
    assert not (tmp_path / "rec" / "reli-tables").exists() or not any((tmp_path / "rec" / "reli-tables").rglob("*.tfrecord"))


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_broken_table_is_one_line_exit_2(tmp_path: Path, case: str) -> None:
    root = tmp_path / "raw"
    _competition(root)
    breaker, expected = CASES[case]
    breaker(root)
    _assert_one_error_line(tmp_path, _records(tmp_path, root), expected)


# ----------------------------------------------------------------------------------------------------
# Hostile and odd tables: paths leaving data.root, labels that would make absurd class lists,
# splits that cannot be made, sample submissions that can never be matched, names the OS refuses.
# ----------------------------------------------------------------------------------------------------

LONG = "d" * 300  # one path component beyond NAME_MAX (255): the OS answers ENAMETOOLONG


def _outside(root: Path) -> Path:
    target = root.parent / "secret.png"
    target.write_bytes(PNG)
    return target


def _link_out(root: Path) -> None:
    (root / "train" / "t1.png").unlink()
    (root / "train" / "t1.png").symlink_to(_outside(root))


def _class_folder_linked_out(root: Path) -> None:
    (root / "folders" / "dog").mkdir(parents=True)
    (root / "folders" / "dog" / "d.png").write_bytes(PNG)
    elsewhere = root.parent / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "c.png").write_bytes(PNG)
    (root / "folders" / "cat").symlink_to(elsewhere)


def _twelve_rows(root: Path) -> None:
    for i in range(4, 12):
        (root / "train" / f"t{i}.png").write_bytes(PNG)
    (root / "train.csv").write_text("id,label\n" + "".join(f"t{i},{('cat', 'dog')[i % 2]}\n" for i in range(12)))


def _fifo_csv(root: Path) -> None:
    (root / "train.csv").unlink()
    os.mkfifo(root / "train.csv")


def _then(*steps: Callable[[Path], None]) -> Callable[[Path], None]:
    def apply(root: Path) -> None:
        for step in steps:
            step(root)

    return apply


FOLDER_TRAIN = ["comp.train.csv=''", "comp.train.dir=folders", "comp.train.label_column=''"]

# case -> (how to break the competition, overrides, what the one error line must contain)
HOSTILE: dict[str, tuple[Callable[[Path], None], list[str], list[str]]] = {
    "path with ../ out of data.root": (
        _then(_outside, _write("train.csv", TRAIN.replace("t1,dog", "../../secret,dog"))),
        [],
        ["train.csv row 2", "secret.png is outside data.root", "fix:"],
    ),
    "absolute path elsewhere": (
        lambda root: (root / "train.csv").write_text(TRAIN.replace("t1,dog", f"{_outside(root).with_suffix('')},dog")),
        [],
        ["train.csv row 2", "secret.png is outside data.root", "fix:"],
    ),
    "symlink out of data.root": (_link_out, [], ["train.csv row 2", "t1.png (really", "secret.png) is outside data.root"]),
    "class folder linked out of data.root": (_class_folder_linked_out, FOLDER_TRAIN, ["folders/cat", "is outside data.root"]),
    "one labelled row": (_write("train.csv", "id,label\nt0,cat\n"), [], ["train.csv", "data.val_fraction=0.2 of 1", "fix:"]),
    "val_fraction 0.95 of 12 rows": (_twelve_rows, ["data.val_fraction=0.95"], ["train.csv", "leaves 0 for training", "fix:"]),
    "huge integer label without classes": (
        _write("train.csv", "id,label\nt0,0\nt1,1\nt2,999999999\nt3,0\n"),
        ["comp.classes=[]"],
        ["train.csv row 3", "label 999999999", "comp.classes"],
    ),
    "typo integer label without classes": (
        _write("train.csv", "id,label\nt0,0\nt1,99999\nt2,1\nt3,0\n"),
        ["comp.classes=[]"],
        ["train.csv row 2", "label 99999 would make 100000 classes", "comp.classes"],
    ),
    "label -1 with classes [cat, dog]": (
        _write("train.csv", "id,label\nt0,1\nt1,-1\nt2,1\nt3,-1\n"),
        [],
        ["train.csv row 2", "label -1 is not a class index", "fix:"],
    ),
    "sample_submission with an extra column": (
        _write("sample_submission.csv", "id,label,extra\ns0,cat,1\ns1,cat,1\n"),
        [],
        ["sample_submission.csv", "column 'extra'", "fix:"],
    ),
    "duplicate id in sample_submission": (
        _write("sample_submission.csv", "id,label\ns0,cat\ns1,cat\ns1,dog\n"),
        [],
        ["sample_submission.csv", "id 's1' appears 2 times", "rows 2, 3", "fix:"],
    ),
    "300-character folder in a CSV path": (
        _write("train.csv", TRAIN.replace("t1,dog", f"{LONG}/t1,dog")),
        [],
        ["train.csv row 2", "File name too long", "fix:"],
    ),
    "NUL byte in a CSV folder name": (
        _write("train.csv", TRAIN.replace("t1,dog", "tr\x00ain/t1,dog")),
        [],
        ["train.csv row 2", "tr\\x00ain/t1.png' cannot be read (embedded null byte)", "fix:"],
    ),
    "300-character comp.train.dir": (
        lambda root: None,
        ["comp.train.csv=''", f"comp.train.dir={LONG}"],
        ["File name too long", "fix:"],
    ),
    "300-character data.root": (lambda root: None, [f"data.root={LONG}"], ["File name too long", "fix:"]),
    "300-character comp.train.csv": (lambda root: None, [f"comp.train.csv={LONG}.csv"], ["File name too long", "fix:"]),
    "300-character comp.sample_submission": (
        lambda root: None,
        [f"comp.sample_submission={LONG}.csv"],
        ["File name too long", "fix:"],
    ),
    "FIFO as train.csv": (_fifo_csv, [], ["train.csv", "not a regular file", "fix:"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(HOSTILE))
def test_hostile_table_is_one_line_exit_2(tmp_path: Path, case: str) -> None:
    root = tmp_path / "raw"
    _competition(root)
    breaker, overrides, expected = HOSTILE[case]
    breaker(root)
    _assert_one_error_line(tmp_path, _records(tmp_path, root, overrides), expected)


@pytest.mark.slow
def test_a_good_table_builds(tmp_path: Path) -> None:
    """The baseline the cases break: the untouched competition builds (exit 0)."""
    root = tmp_path / "raw"
    _competition(root)
    result = _records(tmp_path, root, data_workers=True)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_links_inside_data_root_are_fine(tmp_path: Path) -> None:
    """Symlinks that stay inside data.root (a deduplicated image, a linked class folder) are not refused."""
    root = tmp_path / "raw"
    _competition(root)
    (root / "train" / "t1.png").unlink()
    (root / "train" / "t1.png").symlink_to(root / "train" / "t0.png")
    (root / "train.csv").write_text(TRAIN.replace("t3,dog", "./../train/t3,dog"))
    result = _records(tmp_path, root, data_workers=True)
    assert result.returncode == 0, result.stderr
