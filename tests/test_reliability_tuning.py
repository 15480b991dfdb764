"""Reliability, tuning: an objective no model logs is refused before the first trial (no traceback, no exit 0, no
best_hparams.yaml from a failed trial), and a search resumes only with the objective, space, records and trial
epochs it was started with, so the "best" trial is never picked across F1 and loss values.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from conftest import kit_error_line
from test_tuner import SPACE, completed, tiny_search

from kit.errors import KitError
from kit.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
@pytest.mark.parametrize(
    ("setting", "value"),
    [("tuner.objective", "val_nonsense"), ("train.monitor", "val_f1"), ("tuner.objective", "accuracy_val")],
)
def test_a_metric_no_model_logs_is_refused_at_load(tmp_path: Path, setting: str, value: str) -> None:
    with pytest.raises(KitError, match=f"unknown metric for {setting} '{value}'"):
        load_settings(["model=cnn", f"{setting}={value}"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    line = kit_error_line(["tune", "comp=demo", "model=cnn", f"{setting}={value}"], cwd=tmp_path, env=env)
    assert f"unknown metric for {setting} '{value}'" in line and "fix: use one of:" in line, line
    assert not (tmp_path / "runs").exists()  # nothing was tuned


def test_an_objective_the_problem_does_not_log_is_refused_before_the_first_trial(tmp_path: Path) -> None:
    """``val_auc`` is logged by binary models only: a 3-class search names it before any trial runs."""
    from run_fixtures import make_config, random_images, write_split

    from kit.train.tuner import tune, tune_dir

    cfg = make_config(tmp_path, ["a", "b", "c"])
    cfg.tuner.space, cfg.tuner.objective, cfg.tuner.kind = SPACE, "val_auc", "random"
    for split, n in (("train", 12), ("val", 6)):
        write_split(cfg, split, random_images(n, 0), np.arange(n) % 3, [f"{split}{i}" for i in range(n)])
    with pytest.raises(KitError, match="unknown metric for tuner.objective 'val_auc'"):
        tune(cfg)
    assert not (tune_dir(cfg) / "search").exists() and not (tune_dir(cfg) / "best_hparams.yaml").exists()


def test_a_probe_is_not_tuned_as_if_it_fine_tuned(tmp_path: Path) -> None:
    """train.mode=probe fits a linear head on cached features; a trial would fine-tune instead. Refused, nothing run."""
    from run_fixtures import make_config

    from kit.train.tuner import tune, tune_dir

    cfg = make_config(tmp_path, ["a", "b"])
    cfg.tuner.space, cfg.train.mode = SPACE, "probe"
    with pytest.raises(KitError, match="kit tune searches fine-tuning runs, not train.mode=probe"):
        tune(cfg)
    assert not tune_dir(cfg).exists()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _other_objective(cfg) -> None:
    cfg.tuner.objective = "val_loss"


def _other_space(cfg) -> None:
    cfg.tuner.space = {**SPACE, "model.dense_units": {"type": "choice", "values": [4, 16]}}


def _longer_trials(cfg) -> None:
    cfg.tuner.max_epochs = 2


# case -> (the change between the first search and its rerun, words of the refusal)
CHANGES = {
    "another objective": (_other_objective, ["tuner.objective: val_f1_score then, val_loss now", "direction: max then"]),
    "another space": (_other_space, ["tuner.space:"]),
    "longer trials": (_longer_trials, ["the epochs a trial trains", "1 then, 2 now"]),
}


@pytest.fixture(scope="module")
def finished_search(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from kit.train.tuner import tune

    tmp = tmp_path_factory.mktemp("search")
    tune(tiny_search(tmp, "random", max_trials=2))
    return tmp


@pytest.mark.slow
@pytest.mark.parametrize("case", list(CHANGES))
def test_a_search_resumes_only_as_it_was_started(finished_search: Path, case: str) -> None:
    from kit.train.tuner import tune, tune_dir

    cfg = tiny_search(finished_search, "random", max_trials=3)  # the same records, written again
    out = tune_dir(cfg)
    before = _snapshot(out)
    change, words = CHANGES[case]
    change(cfg)
    with pytest.raises(KitError) as info:
        tune(cfg)
    for word in words:
        assert word in info.value.message, info.value.one_line()
    assert f"delete {out}" in info.value.hint
    assert _snapshot(out) == before  # neither the search nor its best_hparams.yaml were touched


@pytest.mark.slow
def test_the_same_search_resumes(finished_search: Path) -> None:
    from kit.train.tuner import tune, tune_dir

    cfg = tiny_search(finished_search, "random", max_trials=3)
    first = completed(tune_dir(cfg)).set_index("trial")
    out = tune(cfg)
    assert len(completed(out)) == 3 and set(first.index) <= set(completed(out)["trial"])
    assert yaml.safe_load((out / "best_hparams.yaml").read_text())
