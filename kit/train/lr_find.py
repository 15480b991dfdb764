"""``kit lr-find``: the learning-rate range test (Smith 2017, "Cyclical Learning Rates", section 3.3; fastai's
``lr_find``), which picks the peak rate for ``train.schedule=one_cycle``.

The model trains on the training records (augmented as in training) with the rate rising exponentially from
``start`` to ``end`` over ``steps`` batches, one batch an "epoch" of ``model.fit`` so each logged loss is that
batch's own (Keras' batch logs are running means). The loss is smoothed as fastai does (an exponential average,
beta 0.98, bias-corrected) and the test stops when the smoothed loss exceeds 4x its minimum (fastai's
``stop_div``) or is not finite. Two rates are read off the smoothed curve: the minimum's rate / 10 (fastai's
``lr_min``; the suggestion) and the rate of steepest descent (fastai's ``lr_steep``). ``lr_find.json`` and
``lr_find.png`` go to ``<run.root>/<comp>/<model>/``; no run folder is created and no ``best.keras`` touched.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from kit.errors import KitError
from kit.io import is_url, write_json

if TYPE_CHECKING:
    from kit.config import Config
    from kit.data.manifest import Manifest

SMOOTHING = 0.98  # fastai's beta
DIVERGED = 4.0  # stop once the smoothed loss is this many times its minimum (fastai stop_div)


def smooth(losses: list[float], beta: float = SMOOTHING) -> list[float]:
    """fastai's bias-corrected exponential moving average of the losses."""
    average, out = 0.0, []
    for i, loss in enumerate(losses, start=1):
        average = beta * average + (1 - beta) * loss
        out.append(average / (1 - beta**i))
    return out


def suggest(rates: list[float], smoothed: list[float]) -> dict[str, Any]:
    """The minimum's rate / 10 (the suggestion) and the steepest-descent rate of the smoothed loss."""
    if len(rates) < 5:
        raise KitError(
            f"the learning-rate range test stopped after {len(rates)} steps: too few to read a rate off",
            "start lower (--start) or run more steps (--steps)",
        )
    lowest = int(np.argmin(smoothed))
    # The slope d loss / d log(rate) before the minimum; the first tenth is the average's warm-up, skipped.
    slope = np.gradient(np.asarray(smoothed), np.log(np.asarray(rates)))
    begin = max(1, len(rates) // 10)
    window = slope[begin : max(begin + 1, lowest)]
    steepest = rates[begin + int(np.argmin(window))] if window.size else rates[lowest]
    return {
        "suggested": rates[lowest] / 10,
        "rule": "min/10: a tenth of the rate at the smoothed loss's minimum (fastai lr_min)",
        "min_loss_rate": rates[lowest],
        "steepest": steepest,
        "min_at_end": lowest == len(rates) - 1,  # the loss still fell at `end`: the range was too short
    }


def lr_find(cfg: Config, *, manifest: Manifest | None = None, steps: int = 200, start: float = 1e-7, end: float = 10.0) -> Path:
    """Run the range test for ``cfg``'s model on its training records; return the path of ``lr_find.json``."""
    import keras

    from kit import plots
    from kit.data.augment.layer import model_augmentation
    from kit.models.registry import build_model
    from kit.progress import progress_bar
    from kit.runs import runs_of
    from kit.train.lr_schedules import build_optimizer, jit_compile
    from kit.train.metrics import build_loss
    from kit.train.session import start_session

    if is_url(runs_of(cfg)):
        raise KitError(f"lr-find writes its plot locally, but run.root is {cfg.run.root}", "add run.root=runs for the test")
    if not (0 < start < end) or steps < 10:
        raise KitError(f"lr-find needs 0 < start < end and 10 or more steps, got start={start} end={end} steps={steps}")
    # The test sets the rate itself: no batch scaling, and no EMA (it would only cost time).
    reference_batch = int(cfg.train.lr_scale_batch)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, lr_scale_batch=0, ema=False))
    session = start_session(cfg, None, manifest, validates=False)  # the range test reads only training batches
    rates = [start * (end / start) ** (i / (steps - 1)) for i in range(steps)]
    losses: list[float] = []

    shown = progress_bar("lr-find", steps, "batches")  # a bar on a terminal, lines in a log

    class RangeTest(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
            self.model.optimizer.learning_rate = rates[epoch]

        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            loss = float((logs or {}).get("loss", math.nan))
            losses.append(loss)
            shown.update(1)
            smoothed = smooth(losses)
            if not math.isfinite(loss) or smoothed[-1] > DIVERGED * min(smoothed):
                self.model.stop_training = True

    with session.precision_policy():
        train_ds, _ = session.datasets()
        with session.strategy.scope():
            keras.utils.set_random_seed(cfg.train.seed)
            model = build_model(cfg.model, len(session.classes), first_layer=model_augmentation(session.cfg.augment))
            model.compile(
                optimizer=build_optimizer(cfg.train, start),
                loss=build_loss(session.binary, cfg.train.label_smoothing),
                jit_compile=jit_compile(cfg.train, session.device),
            )
        print(f"lr-find: {cfg.model.name}, rates {start:g} to {end:g} over up to {steps} batches of {session.global_batch}")
        # shuffle=False: the pipeline shuffles (Keras warns that it ignores the flag for a dataset).
        model.fit(train_ds, epochs=steps, steps_per_epoch=1, callbacks=[RangeTest()], verbose=0, shuffle=False)
        shown.close()

    finite = [i for i, loss in enumerate(losses) if math.isfinite(loss)]
    tried, raw = [rates[i] for i in finite], [losses[i] for i in finite]
    smoothed = smooth(raw)
    found = suggest(tried, smoothed)
    folder = runs_of(cfg)
    Path(folder).mkdir(parents=True, exist_ok=True)
    figure = _figure(tried, raw, smoothed, found, f"{cfg.comp.name}/{cfg.model.name}, batch {session.global_batch}")
    plots.save(figure, Path(folder) / "lr_find.png")
    at_reference = ""
    if reference_batch:  # the setting is the rate at the reference batch (the linear scaling rule)
        reference_rate = found["suggested"] * reference_batch / session.global_batch
        found["learning_rate_setting"] = reference_rate
        at_reference = f": set train.learning_rate={reference_rate:.3g}, the rate at train.lr_scale_batch={reference_batch}"
    result = {
        "model": cfg.model.name,
        "global_batch": session.global_batch,
        "optimizer": str(cfg.train.optimizer),
        "start": start,
        "end": end,
        "steps_run": len(losses),
        "stopped": "loss diverged" if len(losses) < steps else "all steps run",
        **found,
        "rates": tried,
        "losses": raw,
        "smoothed": smoothed,
    }
    path = write_json(Path(folder) / "lr_find.json", result)
    warning = "; the loss was still falling at the end: raise --end" if found["min_at_end"] else ""
    print(
        f"lr-find: suggested learning rate {found['suggested']:.3g} ({found['rule']}){at_reference}; "
        f"steepest descent at {found['steepest']:.3g}; {len(losses)} steps, {result['stopped']}{warning}"
    )
    return Path(path)


def _figure(rates: list[float], raw: list[float], smoothed: list[float], found: dict[str, Any], title: str) -> Any:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7, 4.5), layout="constrained")
    ax = figure.add_subplot()
    ax.plot(rates, raw, color="0.75", linewidth=0.8, label="training loss, each batch")
    ax.plot(rates, smoothed, color="C0", label=f"smoothed (EMA {SMOOTHING})")
    ax.axvline(found["suggested"], color="C2", linestyle="--", label=f"suggested {found['suggested']:.2g} (min/10)")
    ax.axvline(found["steepest"], color="C1", linestyle=":", label=f"steepest descent {found['steepest']:.2g}")
    ax.set_xscale("log")
    top = min(max(raw), DIVERGED * min(smoothed) * 1.2)
    ax.set_ylim(min(raw) * 0.95 if min(raw) > 0 else min(raw), top)
    ax.set_xlabel("learning rate (log scale)")
    ax.set_ylabel("training loss")
    ax.set_title(f"learning-rate range test: {title}")
    ax.legend(loc="upper left")
    return figure
