"""Reliability, what kit reads and writes stays where the settings say: every file or folder a setting names is a
regular file (or a folder) inside ``data.root``, a table is at most ``KIT_MAX_TABLE_BYTES``; kit's own index read
back is checked like a table; names that become folders are checked again wherever a folder is made from them (a
config edited in Python never passed load_config).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import COMMAND_TIMEOUT_S
from test_reliability_tables import PNG, TRAIN, _competition

from kit.config import load_config
from kit.config.files import root_settings
from kit.errors import KitError

ROOT = Path(__file__).resolve().parent.parent

COMP_YAML = """\
comp:
  name: confined
  source: local
  train: {csv: train.csv, id_column: id, label_column: label, image_dir: train, image_ext: .png}
  test: {csv: test.csv, id_column: id, image_dir: test, image_ext: .png}
  sample_submission: sample_submission.csv
  solution: solution.csv
  classes: [cat, dog]
  submission: {id_column: id, label_column: label, label_format: name}
"""


@pytest.fixture
def comp(tmp_path: Path) -> tuple[Path, Path]:
    """(the competition's YAML, data.root): the tables and images of tests/test_reliability_tables.py, a solution,
    and beside data.root a table and a folder of images that no setting may reach."""
    root = tmp_path / "raw"
    _competition(root)
    (root / "solution.csv").write_text("id,label\ns0,cat\ns1,dog\n")
    (tmp_path / "outside.csv").write_text(TRAIN)
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside" / "t0.png").write_bytes(PNG)
    yaml = tmp_path / "comp.yaml"
    yaml.write_text(COMP_YAML)
    return yaml, root


def _settings(tmp_path: Path, yaml: Path, root: Path, *extra: str) -> list[str]:
    return [f"comp={yaml}", f"data.root={root}", f"data.records_root={tmp_path / 'rec'}", f"run.root={tmp_path / 'runs'}", *extra]


def _read_everything(cfg) -> None:
    """Every reader of a setting that names a file: the index (tables, folders, sample submission) and the scorer."""
    from kit.data.sources import read_index
    from kit.workflow import score_against_solution

    read_index(cfg)
    submission = Path(cfg.run.root) / "submission.csv"
    submission.parent.mkdir(parents=True, exist_ok=True)
    submission.write_text("id,label\ns0,cat\ns1,dog\n")
    score_against_solution(cfg, submission)


def _outside_value(tmp_path: Path, key: str) -> list[str]:
    """Settings that point ``key`` outside data.root (and make its split read it)."""
    kind = root_settings()[key]
    target = tmp_path / ("outside.csv" if kind == "file" else "outside")
    settings = [f"{key}={target}"]
    split = key.split(".")[1]
    if key.endswith(".dir"):
        settings.append(f"comp.{split}.csv=''")
    if split == "val" and not key.endswith((".csv", ".dir")):
        settings += ["comp.val.csv=train.csv", "comp.val.id_column=id", "comp.val.label_column=label"]
    return settings


def test_the_schema_marks_the_settings_that_name_files() -> None:
    marked = root_settings()
    assert {"comp.train.csv", "comp.test.csv", "comp.sample_submission", "comp.solution", "comp.train.dir"} <= set(marked)
    assert marked["comp.val.image_dir"] == "folder" and marked["comp.solution"] == "file"


@pytest.mark.slow
@pytest.mark.parametrize("key", sorted(root_settings()))
def test_every_setting_naming_a_file_is_confined_to_data_root(comp, tmp_path: Path, key: str) -> None:
    yaml, root = comp
    _read_everything(load_config(_settings(tmp_path, yaml, root)))  # the baseline reads
    cfg = load_config(_settings(tmp_path, yaml, root, *_outside_value(tmp_path, key)))
    with pytest.raises(KitError) as info:
        _read_everything(cfg)
    assert key in info.value.message and "outside data.root" in info.value.message, info.value.one_line()


def _records(tmp_path: Path, yaml: Path, root: Path, *extra: str, env: dict[str, str] | None = None):
    return subprocess.run(
        [sys.executable, "-m", "kit", "records", *_settings(tmp_path, yaml, root, *extra), "data.workers=1"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )


def _link(name: str, target: str):
    def apply(root: Path) -> None:
        (root / name).unlink(missing_ok=True)
        (root / name).symlink_to(target)

    return apply


# case -> (what to do to data.root, settings, words of the one error line)
CASES = {
    "an absolute table elsewhere": (None, ["comp.train.csv=/etc/os-release"], ["comp.train.csv=/etc/os-release", "outside"]),
    "../ out of data.root": (None, ["comp.train.csv=../../../../etc/passwd"], ["comp.train.csv", "/etc/passwd, outside"]),
    "the environment as the sample": (
        None,
        ["comp.sample_submission=/proc/self/environ"],
        ["comp.sample_submission", "outside data.root"],
    ),
    "a table linked out of data.root": (_link("train.csv", "/etc/passwd"), [], ["comp.train.csv=train.csv", "outside"]),
    "a class folder setting out of data.root": (None, ["comp.train.csv=''", "comp.train.dir=/etc"], ["comp.train.dir=/etc"]),
    "an image folder out of data.root": (None, ["comp.train.image_dir=../.."], ["comp.train.image_dir=../..", "outside"]),
    "a folder as a table": (lambda root: (root / "dir.csv").mkdir(), ["comp.train.csv=dir.csv"], ["not a regular file"]),
    "a FIFO as the sample": (
        lambda root: ((root / "sample_submission.csv").unlink(), os.mkfifo(root / "sample_submission.csv")),
        [],
        ["sample_submission.csv", "not a regular file"],
    ),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CASES))
def test_a_table_from_anywhere_is_one_line_exit_2(comp, tmp_path: Path, case: str) -> None:
    yaml, root = comp
    change, settings, words = CASES[case]
    if change:
        change(root)
    result = _records(tmp_path, yaml, root, *settings)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    assert "root:x:0:0" not in result.stderr and "PRETTY_NAME" not in result.stderr  # nothing of it was read out


@pytest.mark.slow
def test_a_table_over_the_byte_cap_is_refused_before_it_is_read(comp, tmp_path: Path) -> None:
    yaml, root = comp
    result = _records(tmp_path, yaml, root, env={"KIT_MAX_TABLE_BYTES": str(len(TRAIN) - 1)})
    assert result.returncode == 2, result.stderr
    assert f"over the {len(TRAIN) - 1}-byte limit for a table" in result.stderr and "KIT_MAX_TABLE_BYTES" in result.stderr
    assert _records(tmp_path, yaml, root, env={"KIT_MAX_TABLE_BYTES": str(len(TRAIN))}).returncode == 0


@pytest.mark.slow
def test_an_edited_index_pointing_outside_data_root_is_refused(comp, tmp_path: Path) -> None:
    yaml, root = comp
    assert _records(tmp_path, yaml, root).returncode == 0
    index = tmp_path / "rec" / "confined" / "index.csv"
    stamp = index.stat()
    index.write_text(index.read_text().replace(str(root / "train" / "t1.png"), "/etc/passwd"))
    os.utime(index, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # still newer than the tables: read back, not rebuilt
    result = _records(tmp_path, yaml, root)
    assert result.returncode == 2, result.stderr
    assert "index.csv row" in result.stderr and "/etc/passwd is outside data.root" in result.stderr, result.stderr


@pytest.mark.parametrize(
    ("key", "value"), [("comp.name", "../../x"), ("model.name", "../m"), ("run.id", "../../r"), ("comp.name", "{tmp}/abs")]
)
def test_a_name_edited_in_python_is_checked_before_anything_is_written(comp, tmp_path: Path, key: str, value: str) -> None:
    """The notebook API: load_config checked the names, then the user changed one; every function that makes a
    folder from a name checks it again."""
    from kit import build_records
    from kit.data.manifest import records_dir
    from kit.data.sources import index_dir
    from kit.runs import runs_of
    from kit.train.tuner import tune_dir

    yaml, root = comp
    deep = tmp_path / "a" / "b"  # the folders a name climbs out of stay inside tmp_path, where the test looks
    cfg = load_config([*_settings(tmp_path, yaml, root, "run.id=r1"), f"data.records_root={deep / 'rec'}", f"run.root={deep}"])
    section, name = key.split(".")
    setattr(getattr(cfg, section), name, value.format(tmp=tmp_path))
    before = sorted(tmp_path.rglob("*"))
    for make_folder in (build_records, records_dir, index_dir, runs_of, tune_dir):
        with pytest.raises(KitError, match=f"{key}=.*is used as a folder name"):
            make_folder(cfg)
    assert sorted(tmp_path.rglob("*")) == before  # nothing written anywhere


# ---------------------------------------------------------------------------------------------- paths and URLs

# case -> (settings, a line added to the competition's YAML, words of the one error line)
LOCATION_CASES = {
    "ram:// records": (["data.records_root=ram://x"], "", ["data.records_root=ram://x", "ram: is not supported"]),
    "an unknown scheme": (["data.records_root=foo://x"], "", ["data.records_root=foo://x", "foo: is not supported"]),
    "runs over http": (["run.root=http://example.com/runs"], "", ["run.root=http://example.com/runs", "http:"]),
    "a collapsed URL": (["run.root=s3:/bucket/runs"], "", ["run.root=s3:/bucket/runs", "s3: is not supported"]),
    "raw data on gs://": (["data.root=gs://bucket/raw"], "", ["data.root=gs://bucket/raw", "set data.root to a local path"]),
    "weights from a URL": (["model.weights=https://example.com/w.h5"], "", ["model.weights", "https:"]),
    "a NUL byte from a settings file": (
        [],
        'predict: {output: "sub\\0x.csv"}\n',
        ["predict.output='sub\\x00x.csv' holds a NUL byte"],
    ),
    "a NUL byte in records_root": (['data.records_root="rec\\0x"'], "", ["data.records_root='rec\\x00x' holds a NUL byte"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", list(LOCATION_CASES))
def test_only_local_paths_and_gs_are_accepted_at_load(comp, tmp_path: Path, case: str) -> None:
    yaml, root = comp
    settings, yaml_line, words = LOCATION_CASES[case]
    yaml.write_text(COMP_YAML + yaml_line)
    result = _records(tmp_path, yaml, root, *settings)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    for word in words:
        assert word in errors[0], errors[0]
    assert not [p.name for p in tmp_path.iterdir() if ":" in p.name or p.name == "rec"]  # no folder named ram:, nothing built


def test_gs_records_and_runs_are_accepted(comp, tmp_path: Path) -> None:
    yaml, root = comp
    cfg = load_config(_settings(tmp_path, yaml, root, "data.records_root=gs://bucket/rec", "run.root=gs://bucket/runs"))
    assert cfg.data.records_root == "gs://bucket/rec" and cfg.run.root == "gs://bucket/runs"


def test_a_nul_byte_set_in_python_is_one_error_where_a_folder_is_made(comp, tmp_path: Path) -> None:
    from kit.runs import runs_of

    yaml, root = comp
    cfg = load_config(_settings(tmp_path, yaml, root))
    cfg.run.root = f"{tmp_path}/runs\0x"
    with pytest.raises(KitError, match="holds a NUL byte"):
        runs_of(cfg)
