"""Progress is one mechanism (kit.progress): a bar on a terminal, whole lines in a log, never carriage returns there;
training in a log adds lines inside long epochs; kit train ends naming the best epoch and the next commands."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest

from kit import progress


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_progress_is_whole_lines_the_first_at_once_then_one_an_interval_and_one_at_the_end() -> None:
    log = io.StringIO()
    assert list(progress.progress(range(5), "records demo/32", unit="img", stream=log)) == list(range(5))
    # an interval longer than the loop: the first unit's line (what started, its size, a first ETA), then only the
    # last line, which says how long it all took
    first, last = log.getvalue().splitlines()
    assert first.startswith("records demo/32: 1/5 img (20%), ") and "s left" in first
    assert last.startswith("records demo/32: 5/5 img (100%) in ")

    log = io.StringIO()
    bar = progress.LineProgress("predict", 4, "batch", stream=log, every_s=0)
    for _ in range(4):
        bar.update(1)
    bar.close()
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(lines) == 5
    assert lines[0].startswith("predict: 1/4 batch (25%), ") and "s left" in lines[0]
    assert lines[-1].startswith("predict: 4/4 batch (100%) in ")


def test_a_loop_that_fails_does_not_claim_to_have_finished() -> None:
    log = io.StringIO()

    def items():
        yield 1
        raise ValueError("bad file")

    with pytest.raises(ValueError):
        list(progress.progress(items(), "audit", 10, "img", stream=log))
    assert " in " not in log.getvalue()


def test_on_a_terminal_the_bar_is_tqdm_and_training_keeps_keras_bar() -> None:
    from tqdm import tqdm

    bar = progress.progress_bar("records", 3, "img", stream=Terminal())
    assert isinstance(bar, tqdm)
    bar.close()
    assert progress.fit_verbosity(1, Terminal()) == 1
    assert progress.fit_verbosity(1, io.StringIO()) == 2  # a log: Keras' line per epoch
    assert progress.fit_verbosity(0, io.StringIO()) == 0


def test_predicting_into_a_log_writes_lines_not_carriage_returns(tmp_path: Path, capsys) -> None:
    from run_fixtures import make_config, make_model, random_images, write_split

    from kit.data.manifest import read_manifest, records_dir
    from kit.inference import predict_probabilities, split_dataset

    cfg = make_config(tmp_path, ["a", "b"])
    cfg.predict.batch_size = 4
    write_split(cfg, "val", random_images(10, seed=1), np.arange(10) % 2, [f"v{i}" for i in range(10)])
    manifest = read_manifest(records_dir(cfg))
    model, dataset = make_model(1, seed=3), split_dataset(cfg, manifest, "val")
    ids, _ = predict_probabilities(model, dataset, total=3)
    err = capsys.readouterr().err
    assert len(ids) == 10
    assert "\r" not in err and "predict: 3/3 batch (100%) in " in err
    # a dataset whose length is unknown until read (a fold's rows are filtered): counted without a total
    ids, _ = predict_probabilities(model, dataset.filter(lambda *_: True))
    assert len(ids) == 10 and "predict: 3 batch in " in capsys.readouterr().err


def test_a_long_epoch_in_a_log_gets_lines_between_keras_epoch_lines(monkeypatch, capsys) -> None:
    from kit.train.callbacks import EpochProgress, progress_callbacks

    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)  # every batch past the interval
    assert progress_callbacks(1, 10, 3) == []  # a terminal: Keras' own bar
    (callback,) = progress_callbacks(2, 10, 3)
    assert isinstance(callback, EpochProgress)
    callback.on_epoch_begin(1)
    callback.on_train_batch_end(0, {"loss": 0.6931})
    callback.on_train_batch_end(1, {"loss": 0.5})
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("epoch 2/3 (loss 0.6931): 1/10 batches (10%), ")
    assert lines[1].startswith("epoch 2/3 (loss 0.5000): 2/10 batches (20%), ")


def test_training_ends_with_the_best_epoch_its_score_and_the_next_commands(tmp_path: Path) -> None:
    from kit.config import load_config
    from kit.workflow import closing_line

    cfg = load_config(["comp=demo", "model=cnn"])
    run = tmp_path / "20261206-083030"
    run.mkdir()
    metrics = {"monitor": "val_accuracy", "best": 0.9712, "best_epoch": 7, "epochs": 12}
    (run / "metrics.json").write_text(json.dumps(metrics))
    line = closing_line(cfg, run)
    assert line.startswith("best epoch 7 of 12: val_accuracy 0.9712; next: ")
    assert f"kit evaluate comp=demo model=cnn run={run}" in line and f"kit predict comp=demo model=cnn run={run}" in line

    (run / "cv.json").write_text(json.dumps({"metric": "accuracy", "score": 0.95, "folds": [{}, {}, {}]}))
    assert closing_line(cfg, run).startswith("CV accuracy 0.9500 over 3 folds; next: kit evaluate comp=demo")
