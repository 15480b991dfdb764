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


@pytest.mark.parametrize("case", list(CASES))
def test_broken_table_is_one_line_exit_2(tmp_path: Path, case: str) -> None:
    root = tmp_path / "raw"
    _competition(root)
    breaker, expected = CASES[case]
    breaker(root)
    comp = tmp_path / "comp.yaml"
    comp.write_text(COMP_YAML)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-m", "kit", "records", f"comp={comp}", f"data.root={root}", f"data.records_root={tmp_path / 'rec'}"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr
    assert [line for line in result.stderr.splitlines() if line.strip()] == errors, result.stderr  # nothing else
    for part in expected:
        assert part in errors[0], f"{part!r} not in {errors[0]!r}"
    assert not (tmp_path / "rec" / "reli-tables").exists() or not any((tmp_path / "rec" / "reli-tables").rglob("*.tfrecord"))


def test_a_good_table_builds(tmp_path: Path) -> None:
    """The baseline the cases break: the untouched competition builds (exit 0)."""
    root = tmp_path / "raw"
    _competition(root)
    comp = tmp_path / "comp.yaml"
    comp.write_text(COMP_YAML)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "kit",
            "records",
            f"comp={comp}",
            f"data.root={root}",
            f"data.records_root={tmp_path / 'rec'}",
            "data.workers=1",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert result.returncode == 0, result.stderr
