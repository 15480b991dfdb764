"""kit.io on local paths and on URL paths (TF's in-memory ``ram://`` file system stands in for gs://)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from kit.io import URLPath, as_path, atomic_path, atomic_write, is_url, read_json, write_json


def _ram(name: str) -> str:
    """A fresh ram:// folder: the in-memory file system lives as long as the process."""
    return f"ram://kit-tests/{name}-{uuid.uuid4().hex[:8]}"


def test_local_paths_stay_pathlib(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b.json"
    assert write_json(path, {"x": 1}) == path and isinstance(as_path(str(path)), Path)
    assert read_json(path) == {"x": 1}
    assert [p.name for p in path.parent.iterdir()] == ["b.json"]  # no temp file left behind
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert read_json(path) == {"x": 1} and [p.name for p in path.parent.iterdir()] == ["b.json"]


def test_url_json_round_trip_is_atomic() -> None:
    import tensorflow as tf

    root = _ram("json")
    path = f"{root}/deep/er/value.json"
    assert is_url(path) and not is_url("/tmp/x") and not is_url(Path("gs://b/x"))  # Path already lost the //
    written = write_json(path, {"x": 1})
    assert isinstance(written, URLPath) and str(written) == path
    assert tf.io.gfile.exists(path) and read_json(path) == {"x": 1}
    write_json(path, {"x": 2})  # rename over an existing file
    assert read_json(path) == {"x": 2}
    assert tf.io.gfile.listdir(f"{root}/deep/er") == ["value.json"]  # the temp name was renamed away

    with atomic_path(f"{root}/table.csv", suffix=".csv") as tmp:  # writers that need a real local file
        assert isinstance(tmp, Path)
        tmp.write_text("a,b\n1,2\n")
    assert as_path(f"{root}/table.csv").read_text() == "a,b\n1,2\n" and not tmp.exists()
    with pytest.raises(RuntimeError), atomic_path(f"{root}/never.csv") as tmp:
        raise RuntimeError("killed")
    assert not tf.io.gfile.exists(f"{root}/never.csv") and not tmp.exists()
    atomic_write(f"{root}/raw.bin", b"\x00\x01")
    assert as_path(f"{root}/raw.bin").read_bytes() == b"\x00\x01"


def test_url_path_behaves_like_pathlib_where_kit_uses_it() -> None:
    root = as_path(_ram("paths"))
    assert isinstance(root, URLPath) and str(root).startswith("ram://kit-tests/")
    run = root / "comp" / "model" / "run1"
    assert run.name == "run1" and run.parent.name == "model" and (run / "best.keras").suffix == ".keras"
    assert not run.exists() and not run.is_dir()
    run.mkdir(parents=True, exist_ok=True)
    write_json(run / "config.json", {})
    assert run.is_dir() and (run / "config.json").is_file() and not run.is_file()
    assert [p.name for p in run.parent.iterdir()] == ["run1"]
    assert [p.name for p in run.glob("*.json")] == ["config.json"]
    assert (run / "config.json").stat().st_size == 3
    (run / "config.json").unlink()
    (run / "config.json").unlink(missing_ok=True)
    with pytest.raises(FileNotFoundError):
        (run / "config.json").unlink()


def test_records_dir_keeps_the_scheme() -> None:
    from kit.config import Config
    from kit.data.manifest import records_dir

    cfg = Config()
    cfg.data.records_root = "gs://bucket/records"
    assert str(records_dir(cfg)) == f"gs://bucket/records/{cfg.comp.name}/{cfg.model.image_size}/holdout0.2-seed42"
    cfg.data.records_root = "data/records"
    assert records_dir(cfg) == Path("data/records") / cfg.comp.name / str(cfg.model.image_size) / "holdout0.2-seed42"


@pytest.mark.slow
def test_fit_phases_writes_its_run_dir_on_a_url() -> None:
    """A tiny training run whose run dir is ram://: best.keras, history.csv, checkpoint, metrics, plots, tensorboard."""
    import keras
    import tensorflow as tf
    from train_helpers import config, datasets, tiny_scratch

    from kit.runs import read_state
    from kit.train.callbacks import read_history
    from kit.train.fitting import fit_phases

    run_dir = _ram("run")
    cfg = config(run_dir, epochs=2)
    train, val = datasets(16)
    result = fit_phases(cfg, tiny_scratch(), train, val, run_dir, steps_per_epoch=4)

    assert result["epochs"] == 2
    for name in ("best.keras", "history.csv", "metrics.json", "checkpoint/state.json", "plots/learning_curves.png"):
        assert tf.io.gfile.exists(f"{run_dir}/{name}"), name
    assert tf.io.gfile.glob(f"{run_dir}/tensorboard/*/events.out.tfevents.*")
    assert [row["epoch"] for row in read_history(f"{run_dir}/history.csv")] == [0, 1]
    assert read_state(run_dir)["next_epoch"] == 2
    assert keras.models.load_model(f"{run_dir}/best.keras", compile=False).output_shape == (None, 1)
    assert not tf.io.gfile.glob(f"{run_dir}/**.tmp") and not tf.io.gfile.glob(f"{run_dir}/.*")
    assert not Path("ram:").exists()  # nothing was written to a local folder named after the scheme

    # As if killed during the second epoch: the resume point says epoch 1; the weights load from the URL.
    state = read_state(run_dir)
    write_json(f"{run_dir}/checkpoint/state.json", {**state, "next_epoch": 1, "phase_done": False})
    assert fit_phases(cfg, tiny_scratch(), train, val, run_dir, steps_per_epoch=4, resume=True)["epochs"] == 2
    assert [row["epoch"] for row in read_history(f"{run_dir}/history.csv")] == [0, 1]
    assert read_state(run_dir)["next_epoch"] == 2


def test_atomic_files_get_the_usual_mode_not_mkstemps_private_one(tmp_path):
    import os
    import stat

    from kit.io import atomic_write

    umask = os.umask(0o022)
    os.umask(umask)
    path = atomic_write(tmp_path / "submission.csv", "id,label\n")
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
