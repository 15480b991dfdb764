"""P4: ``kit train`` images/s over a bare ``model.fit`` on in-memory tensors, ResNet20 at 32 px (goal >= 0.95)."""

from __future__ import annotations

import numpy as np

from bench.common import (
    BATCH,
    Context,
    ensure_synth_folder,
    epoch_clock,
    images_per_second,
    log,
    row,
    steady_seconds,
    write_comp_yaml,
)
from bench.report import bar_png


def section_p4(ctx: Context) -> dict:
    import keras

    from kit.config import load_config
    from kit.data.records import build_from_config
    from kit.models.registry import build_model
    from kit.train.lr_schedules import build_optimizer
    from kit.train.trainer import train

    s, num_classes, size = ctx.sizes, 10, 32
    name = "bench-p4-quick" if ctx.quick else "bench-p4"
    base = ctx.work / name
    paths = ensure_synth_folder(base / "data" / "train", s.p4_images, size, num_classes)
    classes = [f"c{k:03d}" for k in range(num_classes)]
    yaml_path = write_comp_yaml(base / "comp.yaml", name, base / "data", classes)
    cfg = load_config(
        [
            f"comp={yaml_path}",
            "model=resnet20",
            f"model.image_size={size}",
            "data.val_fraction=0",  # the bare fit has no validation either
            "augment.mode=none",  # nor augmentation: P2/P3 measure that
            f"train.batch_size={BATCH}",
            f"train.epochs={s.p4_epochs}",
            "train.verbose=0",
        ]
    )
    build_from_config(cfg)
    steps = s.p4_images // BATCH
    cfg.train.steps_per_epoch = steps  # the same steps as the bare fit (which drops nothing: p4_images % 64 == 0)

    import cv2

    x = np.stack([cv2.imread(str(p), cv2.IMREAD_COLOR_RGB) for p in paths]).astype(np.float32)
    y = keras.utils.to_categorical(np.arange(len(paths)) % num_classes, num_classes).astype(np.float32)

    def kit_run() -> float:
        clock = epoch_clock()
        train(cfg, callbacks=[clock])
        seconds = steady_seconds(clock.ends)
        if seconds is None:
            raise RuntimeError("kit train stopped before two epochs")
        return images_per_second(steps * BATCH, seconds)

    def bare_run() -> float:
        keras.utils.set_random_seed(cfg.train.seed)
        model = build_model(cfg.model, num_classes)
        # The preset's Keras optimizer and loss (ResNet20: SGD with momentum, label smoothing) at a constant rate,
        # so the ratio prices kit's loop, not a cheaper or dearer update rule.
        model.compile(
            optimizer=build_optimizer(cfg.train, cfg.train.learning_rate),
            loss=keras.losses.CategoricalCrossentropy(label_smoothing=cfg.train.label_smoothing),
            metrics=["accuracy"],
        )
        clock = epoch_clock()
        model.fit(x, y, batch_size=BATCH, epochs=s.p4_epochs, steps_per_epoch=steps, shuffle=True, verbose=0, callbacks=[clock])
        return images_per_second(steps * BATCH, steady_seconds(clock.ends) or 0.0)

    rates: dict[str, list[float]] = {"kit": [], "bare": []}
    order = []
    for number in range(s.p4_rounds):
        pair = [("kit", kit_run), ("bare", bare_run)]
        for name_, run in pair if number % 2 == 0 else pair[::-1]:  # ABBA: drift over time hits both alike
            log(f"P4 round {number + 1}/{s.p4_rounds}: {name_} ({s.p4_epochs} epochs x {steps} steps)")
            rates[name_].append(run())
            order.append(name_)
            log(f"  {name_}: {rates[name_][-1]:.0f} img/s (epochs 2..{s.p4_epochs})")
    kit_rate, bare_rate = float(np.mean(rates["kit"])), float(np.mean(rates["bare"]))
    ratio = kit_rate / bare_rate if bare_rate else 0.0
    title = "P4: kit train vs bare model.fit (ResNet20, 32 px, batch 64)"
    return {
        "title": title,
        "rows": [
            row("images/s, kit train / bare model.fit", f"{kit_rate:,.0f} / {bare_rate:,.0f}", ">= 0.95", ratio, ratio >= 0.95),
            row("per run (kit)", ", ".join(f"{r:.0f}" for r in rates["kit"])),
            row("per run (bare)", ", ".join(f"{r:.0f}" for r in rates["bare"])),
        ],
        "raw": {"rates": rates, "order": order, "steps_per_epoch": steps, "epochs": s.p4_epochs, "ratio": ratio},
        "plots": [bar_png(ctx.results / "p4_train.png", {"kit train": kit_rate, "bare model.fit": bare_rate}, title)],
        "notes": [
            f"{s.p4_images:,} generated 32x32 PNGs, 10 classes; both build the model with kit.models.registry.build_model "
            f"(resnet20), batch {BATCH}, {steps} steps per epoch, {s.p4_epochs} epochs; images/s from the wall time of "
            f"epochs 2..{s.p4_epochs} (an end-of-epoch clock placed after every other callback).",
            "kit train: records -> make_dataset (no augmentation, no validation split, as the bare fit), kit's "
            "optimizer and per-step learning-rate schedule, its metrics (accuracy, F1, AUC, precision, recall), "
            "best.keras, checkpoint/ and history.csv every epoch, TensorBoard. Bare: model.fit on in-memory float32 "
            "tensors, the preset's optimizer (SGD, momentum 0.9) and label-smoothed cross-entropy at a constant rate, "
            "accuracy.",
            f"Runs alternate (kit, bare, bare, kit, ...) over {s.p4_rounds} round(s); the figure is the mean per side.",
        ],
    }
