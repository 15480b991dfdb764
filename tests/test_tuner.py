"""kit tune: every tuner kind finishes tiny searches, writes its files, and a killed search resumes."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import COMMAND_TIMEOUT_S, REAP_TIMEOUT_S, wait_until
from run_fixtures import make_config, write_split

from kit.config import load_config, to_yaml
from kit.errors import KitError
from kit.train.search_space import parse_space

SPACE = {
    "model.dense_units": {"type": "choice", "values": [4, 8]},
    "train.learning_rate": {"type": "float", "min": 0.003, "max": 0.03, "sampling": "log"},
}


def tiny_search(tmp_path: Path, kind: str, **tuner):
    """Binary records where bright images are class 1, and a 2-hyperparameter CNN search over them."""
    cfg = make_config(tmp_path, ["dark", "bright"])
    cfg.model.options = {"filters": [4]}
    cfg.train.batch_size = 16
    cfg.train.verbose = 0
    cfg.train.early_stopping_patience = 0
    cfg.augment.mode = "none"
    cfg.tuner.kind = kind
    cfg.tuner.space = SPACE
    cfg.tuner.max_trials = tuner.get("max_trials", 2)
    cfg.tuner.max_epochs = tuner.get("max_epochs", 1)
    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("val", 16)):
        labels = np.arange(n) % 2
        images = (rng.integers(0, 60, (n, 8, 8, 3)) + 150 * labels[:, None, None, None]).astype(np.uint8)
        write_split(cfg, split, images, labels, [f"{split}{i}" for i in range(n)])
    return cfg


def completed(out_dir: Path) -> pd.DataFrame:
    table = pd.read_csv(out_dir / "trials.csv")
    return table[table["status"] == "COMPLETED"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["random", "hyperband", "bayesian"])
def test_each_tuner_kind_writes_best_hparams_trials_and_plot(tmp_path, kind):
    from kit.train.tuner import tune

    cfg = tiny_search(tmp_path, kind, max_epochs=2)
    out = tune(cfg)
    trials = completed(out)
    assert len(trials) >= 2
    best = yaml.safe_load((out / "best_hparams.yaml").read_text())
    assert best["model"]["dense_units"] in (4, 8)
    assert 0.003 <= best["train"]["learning_rate"] <= 0.03
    # the best file names the trial with the highest objective
    top = trials.sort_values("val_f1_score", ascending=False).iloc[0]
    assert best["model"]["dense_units"] == top["model.dense_units"]
    assert (out / "plots" / "tuning.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_best_hparams_are_applied_by_kit_train(tmp_path):
    from kit.models.registry import build_model
    from kit.train.tuner import tune

    out = tune(tiny_search(tmp_path, "random"))
    best = yaml.safe_load((out / "best_hparams.yaml").read_text())
    cfg = load_config(["model=cnn", "model.image_size=16", f"hparams={out / 'best_hparams.yaml'}"])
    assert cfg.model.dense_units == best["model"]["dense_units"]
    assert cfg.train.learning_rate == pytest.approx(best["train"]["learning_rate"])
    model = build_model(cfg.model, 2)
    assert model.get_layer("head_dense").units == best["model"]["dense_units"]


@pytest.mark.slow
def test_a_rerun_keeps_finished_trials(tmp_path):
    from kit.train.tuner import tune

    cfg = tiny_search(tmp_path, "random", max_trials=2)
    out = tune(cfg)
    first = completed(out).set_index("trial")
    cfg.tuner.max_trials = 3
    tune(cfg)
    again = completed(out).set_index("trial")
    assert len(again) == 3
    pd.testing.assert_frame_equal(again.loc[first.index], first)


def _ended_trials(search: Path) -> list[str]:
    """The trial folders that the search's oracle.json records as ended (it is written in place: may be partial)."""
    try:
        return [f"trial_{trial_id}" for trial_id in json.loads((search / "oracle.json").read_text())["end_order"]]
    except (FileNotFoundError, json.JSONDecodeError, KeyError):
        return []


def _completed_trials(search: Path) -> dict[str, str]:
    """The ended trials whose trial.json says COMPLETED (a trial can also end INVALID, e.g. a NaN score), by folder."""
    done = {}
    for name in _ended_trials(search):
        try:
            text = (search / name / "trial.json").read_text()
        except FileNotFoundError:
            continue
        if '"COMPLETED"' in text:
            done[name] = text
    return done


@pytest.mark.slow
def test_a_killed_search_resumes_without_repeating_finished_trials(tmp_path):
    cfg = tiny_search(tmp_path, "random", max_trials=3, max_epochs=3)
    config = tmp_path / "tune.yaml"
    config.write_text(to_yaml(cfg))
    script = f"from kit.config import from_yaml; from kit.train.tuner import tune; tune(from_yaml({str(config)!r}))"
    search = tmp_path / "runs" / "tiny" / "cnn" / "tune-random" / "search"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        # A trial is finished once oracle.json lists it as ended (keras-tuner writes trial.json just before it) and
        # its trial.json says COMPLETED: one that ended INVALID is run no more either way, and proves nothing here.
        wait_until(lambda: bool(_completed_trials(search)), "completed trial", proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()  # a no-op after the SIGKILL; a failed wait must not leave the child running
        proc.wait(timeout=REAP_TIMEOUT_S)
    done_before = _completed_trials(search)
    assert done_before, "no trial finished before the kill"
    from kit.train.tuner import tune

    out = tune(cfg)
    assert len(completed(out)) == 3
    for name, text in done_before.items():  # finished trials were not run again
        assert (search / name / "trial.json").read_text() == text


@pytest.mark.parametrize(
    ("space", "expected"),
    [
        ({"model.dense_unit": {"type": "int", "min": 1, "max": 4}}, "model.dense_units"),
        ({"model.dropout": {"type": "float", "min": 0.5, "max": 0.1}}, "below max"),
        ({"model.dropout": {"type": "uniform", "min": 0.1, "max": 0.5}}, "needs type"),
        ({"train.learning_rate": {"type": "float", "min": 0, "max": 0.1, "sampling": "log"}}, "min > 0"),
        ({"model.dense_units": {"type": "choice", "values": []}}, "non-empty list"),
        ({"model.dense_units": {"type": "int", "min": 1, "max": 4, "stepp": 1}}, "unknown field 'stepp'"),
    ],
)
def test_bad_search_space_entries_are_one_line_errors(space, expected):
    with pytest.raises(KitError) as info:
        parse_space(space)
    assert expected in info.value.one_line() and "\n" not in info.value.one_line()


@pytest.mark.slow
def test_bad_space_in_a_model_yaml_is_caught_on_load_with_exit_2(tmp_path):
    model_yaml = tmp_path / "mycnn.yaml"
    model_yaml.write_text("model: {name: cnn}\ntuner:\n  space:\n    model.dropout: {type: float}\n")
    result = subprocess.run(
        [sys.executable, "-m", "kit", "tune", f"model={model_yaml}"],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().startswith("error:") and "needs min and max" in result.stderr


@pytest.mark.slow
def test_a_trial_finished_just_before_a_kill_is_not_run_again(tmp_path):
    """The window between keras-tuner's two writes at a trial's end: trial.json says COMPLETED, oracle.json still
    lists the trial as ongoing. The resumed search counts it as ended instead of training it again."""
    from kit.train.tuner import tune

    cfg = tiny_search(tmp_path, "random", max_trials=1, max_epochs=1)
    out = tune(cfg)
    search = out / "search"
    (trial_dir,) = [p for p in search.iterdir() if p.name.startswith("trial_")]
    trial_json = (trial_dir / "trial.json").read_text()
    assert '"COMPLETED"' in trial_json
    oracle = json.loads((search / "oracle.json").read_text())
    trial_id = trial_dir.name.removeprefix("trial_")
    oracle["end_order"].remove(trial_id)  # as if killed after trial.json, before oracle.json
    oracle["ongoing_trials"] = {"tuner0": trial_id}
    (search / "oracle.json").write_text(json.dumps(oracle))

    cfg2 = tiny_search(tmp_path, "random", max_trials=1, max_epochs=1)
    tune(cfg2)
    after = json.loads((search / "oracle.json").read_text())
    assert after["run_times"][trial_id] == 1  # trained once: a retry would make it 2
    assert trial_id in after["end_order"] and not after["retry_queue"]
    assert (trial_dir / "trial.json").read_text() == trial_json


@pytest.mark.slow
def test_tune_trains_train_epochs_a_trial_and_logs_no_progress_bar_escapes(tmp_path):
    """``kit tune train.epochs=2`` with tuner.max_epochs=3 trains two epochs a trial; a log file (not a terminal) gets
    one line per epoch as from ``kit train``, not progress-bar redraws (\\r, \\x08 backspaces, ANSI escapes)."""
    cfg = tiny_search(tmp_path, "random", max_trials=2, max_epochs=3)
    cfg.train.epochs = 2
    cfg.train.verbose = 1  # the default: a bar on a terminal
    config = tmp_path / "tune.yaml"
    config.write_text(to_yaml(cfg))
    log = tmp_path / "tune.log"
    script = f"from kit.config import from_yaml; from kit.train.tuner import tune; tune(from_yaml({str(config)!r}))"
    with log.open("wb") as handle:
        command = [sys.executable, "-c", script]
        subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT, timeout=COMMAND_TIMEOUT_S, check=True)
    text = log.read_text()
    assert "up to 2 epochs a trial (tuner.max_epochs=3, train.epochs=2)" in text
    assert text.count("Epoch 2/2") == 2 and "Epoch 1/3" not in text and "Epoch 3/" not in text, text
    assert not any(escape in text for escape in ("\r", "\x08", "\x1b[")), repr(text[-2000:])


def test_tuning_plot_has_a_log_axis_for_log_sampled_rates_and_whole_trial_numbers():
    from kit.plots import tuning_figure

    trials = pd.DataFrame(
        {
            "trial": ["00", "01", "02"],
            "val_f1_score": [0.61, 0.74, 0.70],
            "model.dense_units": [4, 8, 4],
            "train.learning_rate": [0.004, 0.011, 0.027],  # a ratio below 50: linear before, though sampled on a log scale
        }
    )
    fig = tuning_figure(trials, "val_f1_score", ["model.dense_units", "train.learning_rate"], log_scaled=["train.learning_rate"])
    by_trial, units, rate = fig.axes[:3]
    assert list(by_trial.get_xticks()) == [1, 2, 3]  # whole trial numbers, not 0.0, 0.5, 1.0, ...
    assert rate.get_xscale() == "log" and rate.get_xlabel() == "train.learning_rate (log scale)"
    assert units.get_xscale() == "linear"


# --- a trial trains as kit train does: the same phase plan, phase set-up and phase callbacks ------------------


def _rates_by_epoch(cfg, model, epochs: int) -> dict[int, list[float]]:
    """Fit one trial of ``cfg`` on ``model`` as keras-tuner would (its own callback last), recording the optimizer's
    rate after every batch and the backbone's trainable weights per epoch."""
    import keras
    import keras_tuner as kt
    from train_helpers import datasets

    from kit.train.tuner import trial_hypermodel

    rates: dict[int, list[float]] = {}

    class Recorder(keras.callbacks.Callback):  # stands where keras-tuner's reporting callback stands
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            rates.setdefault(self.epoch, []).append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    train_ds, val_ds = datasets(16)
    hypermodel = trial_hypermodel(cfg, [], num_classes=2, steps_per_epoch=2)
    hypermodel.fit(
        kt.HyperParameters(),
        model,
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        steps_per_epoch=2,
        callbacks=[Recorder()],
        verbose=0,
    )
    return rates


@pytest.mark.slow
def test_a_two_phase_trial_fine_tunes_at_the_fine_tune_rate_with_the_backbone_unfrozen(tmp_path):
    """With tuner.phase1_only=false a trial's epochs are shared between the phases as the settings share them, and
    phase 2 follows its own cosine from train.fine_tune.learning_rate (phase 1's schedule does not overwrite it)."""
    from train_helpers import config, tiny_pretrained

    fine_tune = {"epochs": 2, "learning_rate": 1e-4, "unfreeze": -1}
    cfg = config(tmp_path, epochs=2, learning_rate=1e-2, schedule="cosine", fine_tune=fine_tune)
    cfg.tuner.phase1_only = False
    cfg.model.weights = "imagenet"  # a pretrained backbone keeps its BatchNorm frozen (not loaded here)
    model = tiny_pretrained()
    rates = _rates_by_epoch(cfg, model, epochs=4)
    assert sorted(rates) == [0, 1, 2, 3]
    phase1, phase2 = rates[0] + rates[1], rates[2] + rates[3]
    assert phase1[0] == pytest.approx(1e-2) and phase1 == sorted(phase1, reverse=True), rates
    assert phase2[0] == pytest.approx(1e-4) and max(phase2) <= 1e-4 * (1 + 1e-6), rates
    assert phase2 == sorted(phase2, reverse=True) and phase2[-1] < phase2[0]  # its own decay, from its own start
    assert model.get_layer("backbone").get_layer("conv1").trainable  # unfrozen (BatchNorm stays frozen)
    assert not model.get_layer("backbone").get_layer("bn1").trainable


@pytest.mark.slow
def test_a_plateau_trial_reduces_its_rate_as_kit_train_does(tmp_path):
    """schedule=plateau: a trial whose metric stops improving has its rate cut by the plateau callback kit train uses
    (factor 0.2 after half the early-stopping patience). At a rate of 1e-8 the weights cannot move the metric."""
    from train_helpers import config, tiny_scratch

    cfg = config(tmp_path, epochs=4, learning_rate=1e-8, schedule="plateau", early_stopping_patience=2, optimizer="adam")
    rates = _rates_by_epoch(cfg, tiny_scratch(), epochs=4)
    assert rates[0][-1] == pytest.approx(1e-8) and rates[1][-1] == pytest.approx(1e-8)
    assert rates[2][0] == pytest.approx(2e-9), rates  # reduced after epoch 2 did not improve on epoch 1
    assert 3 not in rates  # early stopping (patience 2) ended the trial, as it would end the run


def test_a_trial_budget_is_shared_between_the_phases_as_the_settings_share_them(tmp_path):
    from train_helpers import config, tiny_pretrained, tiny_scratch

    from kit.train.phases import plan_phases

    cfg = config(tmp_path, epochs=3, fine_tune={"epochs": 12, "learning_rate": 1e-4})
    model = tiny_pretrained()
    assert [p.epochs for p in plan_phases(cfg, model)] == [3, 12]
    shares = {budget: [p.epochs for p in plan_phases(cfg, model, budget=budget)] for budget in (1, 2, 5, 10, 30)}
    assert shares == {1: [1], 2: [1, 1], 5: [1, 4], 10: [2, 8], 30: [6, 24]}
    assert [p.learning_rate for p in plan_phases(cfg, model, budget=5)] == [cfg.train.learning_rate, 1e-4]
    assert [p.epochs for p in plan_phases(cfg, tiny_scratch(), budget=7)] == [7]  # no backbone: one phase
