"""Reliability, what kit shows: no line it prints or raises holds a credential, and none is longer than
``kit.errors.MAX_LINE_CHARS``; a value quoted from input (a CSV's header, a cell, a setting) is cut at
``QUOTE_CHARS``, so an error never echoes a file's contents at length.

The credential is KAGGLE_KEY's value, planted where a careless or hostile input puts it: in a table's header (a
copy of the environment), a cell, a setting's value, a file named by a setting; or a token recognised by its shape.
"""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMMAND_TIMEOUT_S
from test_reliability_tables import TRAIN, _competition

from kit.data.tables import PATH_CHARS
from kit.errors import CUT, MAX_LINE_CHARS, QUOTE_CHARS, QUOTED_ITEMS, KitError, SafeStream, quoted

ROOT = Path(__file__).resolve().parent.parent
KEY = "kgl-9f8e7d6c5b4a39281706f5e4d3c2b1a0"  # KAGGLE_KEY's value in every child
GITHUB_TOKEN = "ghp_" + "A1b2C3d4E5f6G7h8I9j0" * 2  # a credential by its shape alone
ENVIRON = "\0".join([f"VAR{i}=value-{i}-" + "x" * 40 for i in range(200)] + [f"KAGGLE_KEY={KEY}"])  # /proc/self/environ
LONGEST = MAX_LINE_CHARS + len(CUT.format(MAX_LINE_CHARS)) + len("error: ")

COMP_YAML = """\
comp:
  name: leaks
  source: local
  train: {csv: train.csv, id_column: id, label_column: label, image_dir: train, image_ext: .png}
  test: {csv: test.csv, id_column: id, image_dir: test, image_ext: .png}
  sample_submission: sample_submission.csv
  classes: [cat, dog]
  submission: {id_column: id, label_column: label, label_format: name}
"""


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "KAGGLE_KEY": KEY}


def _kit(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "kit", *args],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def _write(name: str, content: str):
    return lambda root: (root / name).write_text(content)


BIG_HEADER = ENVIRON.replace("\0", ",")  # the environment as a CSV header: 200 columns, the key among them
LONG_CELL = f"{KEY}-" + "y" * 5000

# case -> (what to plant, settings, words the error line must hold)
CASES = {
    "the environment as a table's header": (_write("train.csv", BIG_HEADER + "\n" + "1," * 200 + "1\n"), [], ["no column 'id'"]),
    "the environment as the sample submission": (
        _write("sample_submission.csv", BIG_HEADER + "\n" + "1," * 200 + "1\n"),
        [],
        ["sample_submission.csv", "no column 'id'"],
    ),
    "a key as one column of the header": (_write("train.csv", f"ident,{KEY},label\n"), [], ["no column 'id'"]),
    "a long label holding a key": (_write("train.csv", TRAIN.replace("t1,dog", f"t1,{LONG_CELL}")), [], ["row 2", "label"]),
    "a long duplicate id holding a key": (
        _write("train.csv", f"id,label\n{LONG_CELL},cat\n{LONG_CELL},dog\n"),
        [],
        ["duplicate id"],
    ),
    "a long path outside data.root holding a key": (
        _write("train.csv", TRAIN.replace("t1,dog", f"/{LONG_CELL[:200]}/{LONG_CELL[:200]},dog")),
        [],
        ["row 2", "outside data.root"],
    ),
    "a GitHub token in a header": (_write("train.csv", f"ident,{GITHUB_TOKEN},label\n"), [], ["no column 'id'"]),
    "a key as a setting's value": (lambda root: None, [f"model.name={KEY}"], ["unknown model"]),
    "a key as a folder name": (lambda root: None, [f"comp.name={KEY}/x"], ["comp.name"]),
    "a key as an unknown setting": (lambda root: None, [f"train.{KEY}=1"], ["unknown setting"]),
    "a key in an argument without '='": (lambda root: None, [LONG_CELL], ["is not key=value"]),
    "a long class list holding a key": (
        lambda root: None,
        ["comp.classes=[" + ",".join([KEY, *(f"c{i}" for i in range(500)), KEY]) + "]"],
        ["comp.classes names"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_every_error_quoting_input_is_redacted_and_bounded(tmp_path: Path, case: str) -> None:
    root = tmp_path / "raw"
    _competition(root)
    plant, settings, expected = CASES[case]
    plant(root)
    (tmp_path / "comp.yaml").write_text(COMP_YAML)
    result = _kit(tmp_path, "records", f"comp={tmp_path / 'comp.yaml'}", f"data.root={root}", *settings)
    assert result.returncode == 2, result.stderr
    output = result.stdout + result.stderr
    assert KEY not in output and GITHUB_TOKEN not in output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in expected:
        assert word in errors[0], errors[0]
    assert max(map(len, output.splitlines())) <= LONGEST
    assert sum(f"VAR{i}=" in output for i in range(200)) <= QUOTED_ITEMS  # a header is listed, not echoed
    assert "y" * (PATH_CHARS + 1) not in output  # a cell is quoted, cut (a path at PATH_CHARS, others shorter)


@pytest.fixture
def kaggle_key(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("KAGGLE_KEY", KEY)
    return KEY


def test_a_kit_error_is_redacted_and_bounded_when_made(kaggle_key: str) -> None:
    """The mechanism every error path shares: what the Python API raises is already safe."""
    error = KitError(f"bad value {KEY} " + "z" * 5000, f"hint with {GITHUB_TOKEN}")
    assert KEY not in str(error) and KEY not in error.message and GITHUB_TOKEN not in error.hint
    assert "[redacted: the value of $KAGGLE_KEY]" in error.message and "[redacted: a GitHub token]" in error.hint
    assert len(error.one_line()) <= MAX_LINE_CHARS + len(CUT.format(MAX_LINE_CHARS))
    assert quoted("a\0b\nc" + "q" * 500).startswith("'a\\x00b\\nc") and len(quoted("q" * 500)) < QUOTE_CHARS + 30


def test_the_printed_stream_redacts_and_cuts_every_line(kaggle_key: str) -> None:
    """What the CLI puts over stdout and stderr: every write scanned, every line cut, partial writes counted."""
    target = io.StringIO()
    stream = SafeStream(target)
    stream.write(f"key {kaggle_key} here\n")
    stream.write("a" * (MAX_LINE_CHARS - 10))
    stream.write("b" * 50)  # the same line, written in two parts
    stream.write("c" * 50 + "\nnext line\n")
    lines = target.getvalue().splitlines()
    assert lines[0] == "key [redacted: the value of $KAGGLE_KEY] here"
    assert lines[1] == "a" * (MAX_LINE_CHARS - 10) + "b" * 10 + CUT.format(MAX_LINE_CHARS)
    assert lines[2] == "next line"
    with pytest.raises(TypeError):
        stream.write(b"bytes")  # a text stream, as click expects


@pytest.mark.slow
def test_a_printed_setting_passes_the_scan(tmp_path: Path) -> None:
    """Lines kit prints besides errors: `kit config` echoes the settings (a key given as a value among them)."""
    result = _kit(tmp_path, "config", "comp=demo", f"kaggle.message={KEY}")
    assert result.returncode == 0, result.stderr
    assert KEY not in result.stdout + result.stderr and "[redacted: the value of $KAGGLE_KEY]" in result.stdout
