"""Optimizers and learning-rate schedules: the rate at every step of a phase, set by a per-batch callback.

The learning rate lives in the optimizer as a plain variable and :class:`StepLearningRate` sets it before
every batch from a schedule function of the phase's step (``optimizer.iterations``, which a resume
restores). Doing it from a callback rather than passing a ``LearningRateSchedule`` to the optimizer lets
warmup compose with every schedule (Keras has no built-in "warmup + restarts"), keeps
``ReduceLROnPlateau`` usable, and keeps ``best.keras`` free of custom classes so it loads anywhere.

- constant: ``train.learning_rate`` throughout.
- plateau: ``ReduceLROnPlateau`` on the monitored metric (factor 0.2, patience half the early stopping's).
- cosine: ``keras.optimizers.schedules.CosineDecay`` over the phase's total steps (Loshchilov & Hutter
  2017, "SGDR"), with its own linear warmup (``warmup_target``): with ``train.warmup_epochs`` this is the
  warmup-cosine recipe.
- cosine_restarts: ``CosineDecayRestarts(first_decay_steps=train.first_decay_steps)`` (SGDR restarts).
- one_cycle: Smith & Topin 2018 ("Super-Convergence"), as fastai's ``fit_one_cycle``: a cosine rise from
  peak/25 to the peak over the warmup (``train.warmup_epochs``, or the first 25 % of the phase when 0:
  fastai's ``pct_start=0.25``), then a cosine fall to peak/1e5 (~0) at the phase's last step. fastai also
  cycles the momentum (0.95 -> 0.85 -> 0.95); Keras' SGD momentum is a constant of the compiled step, so
  kit leaves it at 0.9.
- ``train.warmup_epochs``: a linear ramp from ~0 to the phase's learning rate first (Goyal et al. 2017,
  "Accurate, Large Minibatch SGD"); each phase warms up again from its own step 0.
- ``train.lr_scale_batch``: the linear scaling rule of Goyal et al. 2017: the rate is
  ``learning_rate x global batch / lr_scale_batch``, so a rate found at the reference batch carries to another.

Weight EMA (``train.ema``): the optimizer's own ``use_ema``/``ema_momentum`` (Polyak averaging); the callbacks
(:mod:`kit.train.schedules`) swap the averaged weights in for validation and for saving ``best.keras``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import keras

if TYPE_CHECKING:
    from kit.config import TrainConfig

Schedule = Callable[[int], "float | None"]  # step -> learning rate, or None: leave it as it is

ONE_CYCLE_START_DIV = 25.0  # fastai fit_one_cycle div: the first rate is peak / 25
ONE_CYCLE_FINAL_DIV = 1e5  # fastai div_final: the last rate is peak / 1e5
ONE_CYCLE_WARMUP_FRACTION = 0.25  # fastai pct_start, used when train.warmup_epochs is 0


def scaled_rate(train: TrainConfig, learning_rate: float, replicas: int = 1) -> float:
    """``learning_rate`` scaled linearly to the global batch (``train.lr_scale_batch`` > 0), else as it is."""
    reference = int(train.lr_scale_batch)
    if reference <= 0:
        return float(learning_rate)
    return float(learning_rate) * int(train.batch_size) * max(1, int(replicas)) / reference


def build_optimizer(
    train: TrainConfig, learning_rate: float, replicas: int = 1, rate_scales: dict[str, float] | None = None
) -> keras.optimizers.Optimizer:
    """adam | adamw | sgd (momentum 0.9), with ``train.weight_decay`` (decoupled for adamw, L2-like otherwise),
    the rate scaled to the batch (:func:`scaled_rate`) and weight EMA when ``train.ema``. ``rate_scales`` (variable
    path -> factor): discriminative rates, each listed variable stepping at the rate times its factor."""
    lr = scaled_rate(train, learning_rate, replicas)
    decay = float(train.weight_decay) or None
    common = {"learning_rate": lr, "use_ema": bool(train.ema), "ema_momentum": float(train.ema_momentum)}
    if train.optimizer == "adam":
        kind, options = Adam, {"weight_decay": decay}
    elif train.optimizer == "adamw":
        kind, options = AdamW, {"weight_decay": decay if decay is not None else 0.004}
    elif train.optimizer == "sgd":
        kind, options = SGD, {"momentum": 0.9, "weight_decay": decay}
    else:
        raise ValueError(f"unknown optimizer {train.optimizer!r}")  # config.validate already rejects it
    if rate_scales:
        return kind(**common, **options, rate_scales=rate_scales)
    return getattr(keras.optimizers, kind.__name__)(**common, **options)  # Keras' own class: best.keras needs no kit


class ScaledRates:
    """A Keras optimizer whose listed variables step at the rate times their own factor (fastai's discriminative
    rates: the lower layers of a pretrained backbone move less than the head). Scaling the rate, not the gradient,
    because Adam's step does not change with the gradient's scale. AdamW's decoupled weight decay stays at the full
    rate (Keras applies it apart from ``update_step``). Variables are named by their path; the TensorFlow
    backend hands ``update_step`` the underlying ``tf.Variable``, named ``<path>:0`` (``<path>/replica_<k>:0`` on the
    other replicas of a mirrored variable)."""

    def __init__(self, *args: Any, rate_scales: dict[str, float] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.rate_scales = {str(k): float(v) for k, v in (rate_scales or {}).items()}

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> Any:
        scale = self.rate_scales.get(variable_path(variable))
        if scale is not None and scale != 1.0:
            learning_rate = keras.ops.multiply(learning_rate, scale)
        return super().update_step(gradient, variable, learning_rate)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate_scales": dict(self.rate_scales)}


def variable_path(variable: Any) -> str:
    """A Keras variable's path, also from the ``tf.Variable`` beneath it (``conv1/kernel:0``, a replica's
    ``conv1/kernel/replica_1:0``)."""
    path = getattr(variable, "path", None)
    if isinstance(path, str):
        return path
    name = str(getattr(variable, "name", ""))
    return re.sub(r"(/replica_\d+)?:\d+$", "", name)


@keras.saving.register_keras_serializable(package="kit")
class Adam(ScaledRates, keras.optimizers.Adam):
    """Adam with discriminative rates (:class:`ScaledRates`)."""


@keras.saving.register_keras_serializable(package="kit")
class AdamW(ScaledRates, keras.optimizers.AdamW):
    """AdamW with discriminative rates (:class:`ScaledRates`)."""


@keras.saving.register_keras_serializable(package="kit")
class SGD(ScaledRates, keras.optimizers.SGD):
    """SGD with discriminative rates (:class:`ScaledRates`)."""


def one_cycle(peak: float, total: int, warmup: int) -> Schedule:
    """fastai's one-cycle rate: cosine peak/25 -> peak over ``warmup`` steps, cosine peak -> peak/1e5 after."""
    start, end = peak / ONE_CYCLE_START_DIV, peak / ONE_CYCLE_FINAL_DIV
    warmup = min(max(0, warmup), total - 1)

    def cosine(a: float, b: float, fraction: float) -> float:  # fastai's SchedCos
        return b + (a - b) * (1 + math.cos(math.pi * min(1.0, max(0.0, fraction)))) / 2

    def rate(step: int) -> float:
        if step < warmup:
            return cosine(start, peak, step / warmup)
        return cosine(peak, end, (step - warmup) / max(1, total - 1 - warmup))

    return rate


def make_schedule(train: TrainConfig, base_lr: float, steps_per_epoch: int, epochs: int, replicas: int = 1) -> Schedule:
    """The learning rate at each step of a phase of ``epochs`` x ``steps_per_epoch`` steps.

    Returns None where the rate must be left alone: constant after warmup, and plateau after warmup
    (``ReduceLROnPlateau`` owns it then; its reductions survive a resume in the optimizer's variable).
    """
    base_lr = scaled_rate(train, base_lr, replicas)
    warmup = max(0, int(train.warmup_epochs)) * max(1, steps_per_epoch)
    total = max(1, epochs * max(1, steps_per_epoch))
    kind = train.schedule

    def ramp(step: int) -> float:
        return base_lr * (step + 1) / warmup

    if kind == "one_cycle":
        return one_cycle(base_lr, total, warmup or round(ONE_CYCLE_WARMUP_FRACTION * total))
    if kind == "cosine":
        # CosineDecay warms up from initial_learning_rate to warmup_target itself, then decays to 0.
        cosine = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=base_lr / max(1, warmup) if warmup else base_lr,
            decay_steps=max(1, total - warmup),
            warmup_target=base_lr if warmup else None,
            warmup_steps=warmup,
        )
        return lambda step: float(cosine(step))
    if kind == "cosine_restarts":
        restarts = keras.optimizers.schedules.CosineDecayRestarts(base_lr, first_decay_steps=max(1, int(train.first_decay_steps)))
        return lambda step: ramp(step) if step < warmup else float(restarts(step - warmup))
    if kind in ("constant", "plateau"):
        return lambda step: ramp(step) if step < warmup else (base_lr if step == warmup and warmup else None)
    raise ValueError(f"unknown schedule {kind!r}")


class StepLearningRate(keras.callbacks.Callback):
    """Sets the optimizer's learning rate before each batch from ``schedule(step)``; logs ``learning_rate``.

    The step is counted in Python from ``optimizer.iterations`` at the start (restored on resume), so no
    device read happens per batch.
    """

    def __init__(self, schedule: Schedule) -> None:
        super().__init__()
        self.schedule = schedule
        self.step = 0
        self._last: float | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        self.step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self._last = None

    def on_train_batch_begin(self, batch: int, logs: dict | None = None) -> None:
        value = self.schedule(self.step)
        if value is not None and value != self._last:
            self.model.optimizer.learning_rate = value
            self._last = value

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.step += 1

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:  # the rate this epoch ended with (before a plateau reduction)
            logs["learning_rate"] = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))


def jit_compile(train: TrainConfig, device: str) -> bool | str:
    """``model.compile(jit_compile=...)`` for ``train.jit_compile``: on | off, or auto: XLA on GPUs and TPUs only.

    On 2 CPU cores XLA's compile time and its CPU kernels did not pay (measured for resnet20 and cnn at 32 px:
    the figures are in the kit README, "XLA train step"); on accelerators it fuses the step's many small ops.
    """
    if train.jit_compile == "on":
        return True
    if train.jit_compile == "off":
        return False
    return "auto" if device != "cpu" else False  # Keras' auto: XLA where the model's ops allow it
