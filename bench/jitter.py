"""JITTER: keras.layers.RandomColorJitter against kit's vectorised jitter at 224 px, batch 32 (information)."""

from __future__ import annotations

import time

from bench.common import Context, images_per_second, log, row
from bench.pipelines import PIPE_JITTER, keras_color_jitter
from bench.report import bar_png


def section_jitter(ctx: Context) -> dict:
    import tensorflow as tf

    from kit.data.augment import draws, ops

    s, strength, batch = ctx.sizes, PIPE_JITTER, 32
    tf_ops, seed = ops.tensorflow_ops(), tf.constant([5, 0], tf.int64)
    layer = keras_color_jitter(strength, seed=2)
    images = tf.random.uniform([batch, s.jitter_size, s.jitter_size, 3], 0.0, 255.0, seed=1)
    candidates = {
        "keras.layers.RandomColorJitter": tf.function(lambda x: layer(x, training=True)),
        "kit ops.jitter": tf.function(lambda x: ops.jitter(x, *draws.jitter(seed, tf.shape(x)[0], strength), tf_ops)),
    }
    for fn in candidates.values():  # trace and warm up
        for _ in range(2):
            fn(images).numpy()
    seconds = dict.fromkeys(candidates, 0.0)
    log(f"JITTER: {s.jitter_rounds} alternating rounds of {s.jitter_batches} batches of {batch} at {s.jitter_size} px")
    for _ in range(s.jitter_rounds):
        for name, fn in candidates.items():
            start = time.perf_counter()
            for _ in range(s.jitter_batches):
                fn(images).numpy()
            seconds[name] += time.perf_counter() - start
    total = s.jitter_rounds * s.jitter_batches * batch
    rates = {name: images_per_second(total, sec) for name, sec in seconds.items()}
    keras_rate, kit_rate = rates["keras.layers.RandomColorJitter"], rates["kit ops.jitter"]
    ratio = kit_rate / keras_rate if keras_rate else 0.0
    log(f"JITTER: keras {keras_rate:.0f} img/s, kit {kit_rate:.0f} img/s ({ratio:.1f}x)")
    title = f"Color jitter at {s.jitter_size}x{s.jitter_size}, batch {batch}"
    return {
        "title": f"JITTER: {title} (before/after)",
        "rows": [
            row("keras.layers.RandomColorJitter (before)", f"{keras_rate:,.0f} img/s"),
            row("kit's vectorised jitter (after)", f"{kit_rate:,.0f} img/s", "", ratio, None, "ratio = kit / Keras layer"),
        ],
        "raw": {"rates": rates, "ratio": ratio, "strength": strength, "batch": batch, "size": s.jitter_size},
        "plots": [bar_png(ctx.results / "jitter.png", {"Keras layer": keras_rate, "kit": kit_rate}, title)],
        "notes": [
            f"Both in a tf.function on the same random float batch in 0..255, strength {strength} with the same parameter "
            "ranges (kit.data.augment.ops.jitter_ranges); alternating rounds. The issue sets no goal here: this shows why "
            "kit's online augmenter uses its own jitter (brightness/contrast as affine steps, saturation + hue as one "
            "YIQ colour matrix) instead of the layer, which bounds a 224 px pipeline on 2 cores.",
        ],
    }
