"""Records per split plan: hold-out and k-fold records live side by side, a run reads the records it was trained on,
training without validation happens only when asked, and records used without their raw images must say they were
built from data.root (built in-process: data.workers=1, no worker pool)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from run_fixtures import SIZE, folder_comp_config, make_model, make_run

from kit import workflow
from kit.data.manifest import read_manifest, records_dir, split_plan
from kit.errors import KitError

PER_CLASS = 12


def _competition(tmp_path: Path):
    """A two-class folder competition of 8 px PNGs (train/a, train/b, test/) and its hold-out settings."""
    rng = np.random.default_rng(0)
    for folder, n in (("train/a", PER_CLASS), ("train/b", PER_CLASS), ("test", 6)):
        (tmp_path / "raw" / folder).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(tmp_path / "raw" / folder / f"{folder[-1]}{i}.png"), rng.integers(0, 256, (SIZE, SIZE, 3), np.uint8))
    cfg = folder_comp_config(tmp_path, "plans")
    cfg.model.name, cfg.model.image_size = "cnn", SIZE
    cfg.data.val_fraction, cfg.data.workers, cfg.data.image_format = 0.25, 1, "png"
    cfg.comp.metric = "accuracy"
    return cfg


def _with(cfg, **data):
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, **data))


@pytest.mark.slow
def test_kfold_records_leave_the_hold_out_records_and_their_runs_alone(tmp_path: Path) -> None:
    """Before: `kit train folds=3` rewrote the one records folder without a val split; evaluating the hold-out run
    then failed, and a plain `kit train` trained with no validation at all."""
    from kit.evaluate import evaluate
    from kit.train.session import start_session

    holdout = _competition(tmp_path)
    kfold = _with(holdout, folds=3)
    held = workflow.ensure_records(holdout)
    run = make_run(holdout, tmp_path / "runs" / "plans" / "cnn" / "holdout", make_model(1, seed=3))
    folds = workflow.ensure_records(kfold)

    assert (split_plan(holdout), split_plan(kfold)) == ("holdout0.25-seed42", "kfold3-seed42")
    assert folds.records_dir != held.records_dir and folds.folds == 3
    assert read_manifest(records_dir(holdout)).fingerprint == held.fingerprint  # untouched by the k-fold build
    assert held.count("val") == 6 and folds.count("val") == 0

    result = evaluate(kfold, run)  # today's settings say folds=3: the run still reads the records it trained on
    assert result["examples"] == 6
    assert start_session(holdout).val_examples == 6  # a plain `kit train` validates on them


def test_training_without_validation_only_when_asked(tmp_path: Path) -> None:
    from kit.train.session import start_session

    holdout = _competition(tmp_path)
    asked = _with(holdout, val_fraction=0.0)
    no_val = workflow.ensure_records(asked)
    assert split_plan(asked) == "no-val" and no_val.count("val") == 0
    assert start_session(asked).val_examples == 0  # data.val_fraction=0: the user asked for it
    with pytest.raises(KitError) as refused:
        start_session(holdout, manifest=no_val)  # records without a val split, for settings that want one
    assert "hold no validation examples, but the split plan holdout0.25-seed42 asks for some" in refused.value.one_line()
    assert "data.val_fraction=0" in refused.value.hint


def test_records_without_their_raw_data_say_what_they_were_built_from_or_are_refused(tmp_path: Path, capsys) -> None:
    """Before: a wrong or forgotten data.root trained on whatever records were there ("training on the existing
    records"), even records of another split plan."""
    holdout = _competition(tmp_path)
    built = workflow.ensure_records(holdout)
    raw = Path(holdout.data.root)

    wrong = dataclasses.replace(holdout, data=dataclasses.replace(holdout.data, root=str(tmp_path / "typo")))
    with pytest.raises(KitError) as refused:
        workflow.ensure_records(wrong)
    assert f"were built from other data: data_root {raw.resolve()} (settings: {(tmp_path / 'typo').resolve()})" in str(
        refused.value
    )
    assert f"set data.root={raw.resolve()}" in refused.value.hint

    with pytest.raises(KitError, match="does not exist"):  # no k-fold records, no data to build them: never the hold-out's
        workflow.ensure_records(_with(wrong, folds=3))

    raw.rename(tmp_path / "moved")  # the raw data gone (a records-only dataset): used as they are, said so
    assert workflow.ensure_records(holdout).fingerprint == built.fingerprint
    line = capsys.readouterr().out
    assert f"using the records in {built.records_dir}, built from {raw.resolve()} (holdout0.25-seed42)" in line
    assert built.source["data_root"] == str(raw.resolve()) and built.source["split_plan"] == "holdout0.25-seed42"


def test_records_of_the_layout_before_plan_folders_name_the_rebuild(tmp_path: Path) -> None:
    cfg = _competition(tmp_path)
    old = records_dir(cfg).parent
    old.mkdir(parents=True)
    (old / "manifest.json").write_text(json.dumps({"version": 1, "classes": ["a", "b"], "image_size": SIZE}))
    with pytest.raises(KitError) as err:
        read_manifest(records_dir(cfg))
    assert "written before records had a folder per split plan" in str(err.value)
    assert "kit records comp=plans model=<model> data.val_fraction=0.25 data.seed=42" in err.value.hint
