"""The phase plan and how a phase begins: one path for ``kit train`` and every ``kit tune`` trial.

The recipe (keras-io "Image classification via fine-tuning with EfficientNet"; Keras transfer-learning guide):

1. Phase 1 trains the head with the backbone frozen (pretrained models), or the whole model (scratch).
2. Phase 2 (pretrained models with ``train.fine_tune.epochs > 0``) unfreezes the top ``fine_tune.unfreeze``
   backbone layers (BatchNorm stays frozen and, since the backbone is called with ``training=False``, in
   inference mode) and recompiles with the lower ``fine_tune.learning_rate``.

:func:`plan_phases` says which phases a model trains and for how long; :func:`enter_phase` freezes or unfreezes
and compiles at the phase's rate; the phase's callbacks come from :func:`kit.train.callbacks.training_callbacks`.
The trainer and the tuner both go through these three, so a trial trains as the run it tunes for.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras
    import tensorflow as tf

    from kit.config import Config


@dataclass(frozen=True)
class Phase:
    index: int  # 1: head (or the whole scratch model), 2: fine-tuning
    epochs: int
    learning_rate: float
    what: str  # for the progress line


def plan_phases(cfg: Config, model: keras.Model, budget: int | None = None) -> list[Phase]:
    """Phase 1 always; phase 2 for models with a backbone when ``fine_tune.epochs > 0``.

    ``budget`` (a tuner trial's epochs) shares that many epochs between the phases in the proportion the settings
    give them (at least one each while the budget allows; a phase left with none is dropped).
    """
    from kit.models.pretrained import get_backbone

    pretrained = get_backbone(model) is not None
    phases = [Phase(1, cfg.train.epochs, cfg.train.learning_rate, "head only, backbone frozen" if pretrained else "whole model")]
    if pretrained and cfg.train.fine_tune.epochs > 0:
        unfreeze = cfg.train.fine_tune.unfreeze
        what = f"top {unfreeze} backbone layers unfrozen" if unfreeze >= 0 else "whole backbone unfrozen"
        phases.append(Phase(2, cfg.train.fine_tune.epochs, cfg.train.fine_tune.learning_rate, what + ", BatchNorm frozen"))
    return phases if budget is None else _share_budget(phases, budget)


def _share_budget(phases: list[Phase], budget: int) -> list[Phase]:
    total, left = sum(p.epochs for p in phases), max(1, int(budget))
    shared = []
    for i, phase in enumerate(phases):
        if left == 0:
            break
        later = len(phases) - 1 - i  # phases after this one, each owed an epoch while the budget allows
        wanted = max(1, round(budget * phase.epochs / total))
        epochs = left if later == 0 else min(wanted, max(1, left - later))
        shared.append(replace(phase, epochs=epochs))
        left -= epochs
    return shared


def enter_phase(
    model: keras.Model, cfg: Config, phase: Phase, strategy: tf.distribute.Strategy, *, binary: bool, num_classes: int
) -> None:
    """Freeze (phase 1) or unfreeze the top of the backbone (phase 2), then compile at the phase's rate; in phase 2
    with ``fine_tune.lr_mult`` > 1, the unfrozen backbone layers at discriminative rates (:func:`rate_scales`).

    Compiling makes a new optimizer: its step count starts at 0, which is where the phase's schedule starts.
    """
    from kit.models.pretrained import freeze_backbone, unfreeze_top
    from kit.models.weights import is_random_init

    scales = None
    if phase.index == 1:
        freeze_backbone(model)  # no-op (False) for scratch models
    else:
        unfreeze_top(model, cfg.train.fine_tune.unfreeze, pretrained=not is_random_init(cfg.model.weights))
        scales = rate_scales(model, cfg.train.fine_tune.lr_mult)
    compile_phase(model, cfg, phase, strategy, binary=binary, num_classes=num_classes, rate_scales=scales)


def rate_scales(model: keras.Model, lr_mult: float) -> dict[str, float]:
    """Discriminative rates (fastai's ``lr_mult``): each unfrozen backbone layer's variables by path, from
    ``1 / lr_mult`` at the lowest to ``lr_mult ** (-1/k)`` at the k-th (the top), geometrically, in every backbone
    (a fusion model has several); the head keeps the full rate (not listed). Empty with ``lr_mult`` 1 or no backbone."""
    from kit.models.pretrained import backbone_units, get_backbones

    if lr_mult <= 1:
        return {}
    scales = {}
    for backbone in get_backbones(model):
        layers = [layer for layer in backbone_units(backbone) if layer.trainable_weights]  # bottom up, as unfreeze_top left them
        for i, layer in enumerate(layers):
            scale = float(lr_mult) ** -((len(layers) - i) / len(layers))
            scales.update({weight.path: scale for weight in layer.trainable_weights})
    return scales


def compile_phase(
    model: keras.Model,
    cfg: Config,
    phase: Phase,
    strategy: tf.distribute.Strategy,
    *,
    binary: bool,
    num_classes: int,
    rate_scales: dict[str, float] | None = None,
) -> None:
    """``model.compile`` with the phase's optimizer (rate scaled to the global batch, discriminative ``rate_scales``),
    loss, metrics and XLA choice."""
    from kit.train.lr_schedules import build_optimizer, jit_compile
    from kit.train.metrics import build_loss, build_metrics
    from kit.train.strategy import device_type

    with strategy.scope():
        model.compile(
            optimizer=build_optimizer(cfg.train, phase.learning_rate, int(strategy.num_replicas_in_sync), rate_scales),
            loss=build_loss(binary, cfg.train.label_smoothing),
            metrics=build_metrics(binary, num_classes),
            jit_compile=jit_compile(cfg.train, device_type(strategy)),
        )
