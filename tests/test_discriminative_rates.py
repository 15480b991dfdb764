"""Discriminative rates in phase 2 (fastai's lr_mult): the lowest unfrozen backbone layer steps at the fine-tune rate
divided by train.fine_tune.lr_mult, rising geometrically towards the head, which keeps the full rate."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import COMMAND_TIMEOUT_S
from train_helpers import ROOT, config, datasets, tiny_pretrained


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_a_scaled_variable_steps_at_its_share_of_the_rate(optimizer: str) -> None:
    """One step of each optimizer kind on two variables with the same gradient: the one listed at 0.1 moves a tenth
    as far (Adam's first step is the rate times the gradient's sign, so its scale shows as plainly as SGD's)."""
    import keras

    from kit.config import TrainConfig
    from kit.train.lr_schedules import build_optimizer

    train = TrainConfig(optimizer=optimizer, weight_decay=0.0)
    slow, fast = keras.Variable(np.ones(3, "float32"), name="slow"), keras.Variable(np.ones(3, "float32"), name="fast")
    opt = build_optimizer(train, 0.5, rate_scales={slow.path: 0.1})
    grad = np.full(3, 0.2, "float32")
    opt.apply([grad, grad], [slow, fast])
    moved_slow, moved_fast = 1 - np.asarray(slow), 1 - np.asarray(fast)
    np.testing.assert_allclose(moved_slow, 0.1 * moved_fast, rtol=1e-4)
    assert moved_fast[0] > 0.05
    assert type(build_optimizer(train, 0.5)).__module__.startswith("keras")  # without scales: Keras' own class


def test_replica_variables_are_named_by_their_path() -> None:
    from kit.train.lr_schedules import variable_path

    class TfVariable:  # what the TensorFlow backend hands update_step: a name, no path
        def __init__(self, name: str) -> None:
            self.name = name

    assert variable_path(TfVariable("backbone_conv/kernel:0")) == "backbone_conv/kernel"
    assert variable_path(TfVariable("backbone_conv/kernel/replica_1:0")) == "backbone_conv/kernel"


def test_rates_rise_geometrically_from_the_lowest_unfrozen_layer_to_the_head(tmp_path: Path) -> None:
    from kit.models.pretrained import unfreeze_top
    from kit.train.phases import rate_scales

    model = tiny_pretrained()
    unfreeze_top(model, -1)  # conv1, conv2 have trainable weights (BatchNorm stays frozen)
    scales = rate_scales(model, 10.0)
    assert scales == pytest.approx({"conv1/kernel": 0.1, "conv1/bias": 0.1, "conv2/kernel": 10**-0.5, "conv2/bias": 10**-0.5})
    assert "head/kernel" not in scales  # the head trains at the full rate
    assert rate_scales(model, 1.0) == {}
    unfreeze_top(model, 3)  # only conv2 (and its BN and ReLU) of the last three layers
    assert rate_scales(model, 10.0) == pytest.approx({"conv2/kernel": 0.1, "conv2/bias": 0.1})


@pytest.mark.slow
def test_a_run_with_lr_mult_fine_tunes_and_its_best_keras_loads_in_a_fresh_process(tmp_path: Path) -> None:
    """Phase 2 compiles with the scales (printed on the phase line), trains, and best.keras loads through kit (no
    optimizer needed) and, once kit's optimizers are imported, with its optimizer and scales."""
    import keras

    from kit.train.fitting import fit_phases

    cfg = config(tmp_path, epochs=1, optimizer="sgd", fine_tune={"epochs": 1, "learning_rate": 1e-2, "lr_mult": 10.0})
    train_ds, val_ds = datasets(16)
    model = tiny_pretrained()
    fit_phases(cfg, model, train_ds, val_ds, tmp_path / "run", steps_per_epoch=2)
    assert model.optimizer.rate_scales["conv1/kernel"] == pytest.approx(0.1)
    assert isinstance(model.optimizer, keras.optimizers.SGD)
    script = (
        "import json, sys, keras\n"
        "from kit.run_model import load_model\n"
        "plain = load_model(sys.argv[1])\n"
        "import kit.train.lr_schedules\n"
        "full = keras.models.load_model(sys.argv[1] + '/best.keras')\n"
        "print(json.dumps([plain.count_params(), full.optimizer.rate_scales['conv1/kernel']]))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_S,
        cwd=ROOT,
        check=True,
    )
    params, scale = json.loads(out.stdout.strip().splitlines()[-1])
    assert params == model.count_params() and scale == pytest.approx(0.1)
