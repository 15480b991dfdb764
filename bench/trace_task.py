"""D-trace's generated task: high-resolution "real" vs "AI" images where the only difference is a resampling trace.

Both classes come from one scene generator (a smooth colour field, a multi-scale texture, soft shapes and per-pixel
sensor noise, all laid out relative to the image's size). A "real" image is drawn at its full size; an "AI" image is
drawn at half its size and upsampled 2x, by nearest neighbour (2x2 blocks) or by a transposed-convolution-like kernel
(zeros inserted, then a fixed 3-tap kernel whose two phases weigh 1.05 and 0.95: the faint checkerboard of a
generator's deconvolution, with the mean brightness kept). Then BOTH classes are JPEG-encoded at a quality drawn from
one mix and their sizes drawn from one mix, independently of the class, so neither size nor format is a shortcut:
what tells them apart is a period-2 pattern in the pixels, which a stretch to the model's size averages away.

Class folders ``train/real``, ``train/ai``, ``test/real``, ``test/ai`` (a labelled test split, as CIFAKE's) and
``generator.json`` (the parameters and every file's label, size, quality and upsampling). Deterministic for a seed.
Module top: stdlib + numpy only (as the rest of bench/).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.common import GENERATOR_FILE, generated_before

CLASSES = ["real", "ai"]
# (width, height) of the final images, drawn alike for both classes; all even, so a 2x upsampling lands exactly.
SIZES = ((768, 512), (512, 768), (640, 640), (768, 576), (576, 768), (704, 512))
QUALITIES = (80, 88, 95)  # JPEG qualities, drawn alike for both classes
UPSAMPLING = ("nearest", "transposed")
FACTOR = 2
# Transposed-convolution taps: output pixel 2k takes 1.05 x_k, pixel 2k+1 takes 0.5 x_k + 0.45 x_k+1 (sum 0.95).
TRANSPOSED_TAPS = np.array([0.45, 1.05, 0.5], np.float32)
SENSOR_NOISE = 4.0  # grey levels of per-pixel noise, at the resolution the scene is drawn at


def scene(rng: np.random.Generator, width: int, height: int) -> np.ndarray:
    """One RGB scene (uint8 [height, width, 3]) whose content is laid out relative to its size."""
    import cv2

    field = cv2.resize(rng.uniform(40, 215, (4, 4, 3)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    texture = np.zeros((height, width), np.float32)
    for cells, amplitude in ((8, 18.0), (24, 10.0), (72, 6.0)):  # a few octaves of value noise: 1/f-like grain
        grid = rng.normal(0.0, 1.0, (cells * height // max(height, width) + 2, cells * width // max(height, width) + 2))
        texture += amplitude * cv2.resize(grid.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    image = field + texture[..., None] * rng.uniform(0.6, 1.4, 3).astype(np.float32)
    side = min(width, height)
    for _ in range(int(rng.integers(3, 8))):
        colour = rng.uniform(20, 235, 3).tolist()
        centre = (int(rng.uniform(0, width)), int(rng.uniform(0, height)))
        if rng.random() < 0.5:
            cv2.circle(image, centre, int(rng.uniform(0.05, 0.25) * side), colour, -1, cv2.LINE_AA)
        else:
            half = (int(rng.uniform(0.05, 0.2) * side), int(rng.uniform(0.05, 0.2) * side))
            cv2.ellipse(image, centre, half, float(rng.uniform(0, 180)), 0, 360, colour, -1, cv2.LINE_AA)
    image = cv2.GaussianBlur(image, (0, 0), 0.02 * side)  # soft edges at any size: no sharp step only one class keeps
    image += rng.normal(0.0, SENSOR_NOISE, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def upsample(image: np.ndarray, method: str) -> np.ndarray:
    """``image`` enlarged 2x: ``nearest`` repeats each pixel into a 2x2 block; ``transposed`` inserts zeros and runs
    :data:`TRANSPOSED_TAPS` along each axis (a stride-2 transposed convolution with a fixed kernel)."""
    if method == "nearest":
        return image.repeat(FACTOR, axis=0).repeat(FACTOR, axis=1)
    if method != "transposed":
        raise ValueError(f"unknown upsampling {method!r}; choose among {UPSAMPLING}")
    out = image.astype(np.float32)
    centre, left, right = TRANSPOSED_TAPS[1], TRANSPOSED_TAPS[2], TRANSPOSED_TAPS[0]
    for axis in (0, 1):
        following = np.concatenate([np.delete(out, 0, axis), np.take(out, [-1], axis)], axis)  # x_k+1, edge repeated
        even, odd = centre * out, left * out + right * following
        out = np.stack([even, odd], axis=axis + 1)
        out = out.reshape(out.shape[:axis] + (FACTOR * image.shape[axis],) + out.shape[axis + 2 :])
    return np.clip(out, 0, 255).astype(np.uint8)


def period2_signature(grey: np.ndarray) -> float:
    """How much a grey image's pixels follow a period of 2 (0: none), the largest of, along either axis:
    - the split between the mean |step| from an even to an odd pixel and from an odd to an even one (2x2 blocks), and
    - the split between the mean brightness of even and of odd pixels (a checkerboard),
    each relative to its mean. A real image of this task scores near 0; an upsampled one well above."""
    x = grey.astype(np.float64)
    scores = []
    for axis in (0, 1):
        steps = np.abs(np.diff(x, axis=axis))
        even, odd = np.take(steps, range(0, steps.shape[axis], 2), axis), np.take(steps, range(1, steps.shape[axis], 2), axis)
        scores.append(abs(even.mean() - odd.mean()) / max(steps.mean(), 1e-9))
        rows_even, rows_odd = np.take(x, range(0, x.shape[axis], 2), axis), np.take(x, range(1, x.shape[axis], 2), axis)
        scores.append(abs(rows_even.mean() - rows_odd.mean()) / max(x.mean(), 1e-9) * 20)  # 5 % split -> 1
    return float(max(scores))


def trace_image(seed: int, split_number: int, index: int, ai: bool) -> tuple[bytes, dict]:
    """The JPEG bytes of one image and its facts (size, quality, upsampling); deterministic in its arguments.
    Size and quality are drawn first, from the same streams for both classes."""
    import cv2

    rng = np.random.default_rng([seed, split_number, index])
    width, height = SIZES[int(rng.integers(len(SIZES)))]
    quality = int(QUALITIES[int(rng.integers(len(QUALITIES)))])
    method = UPSAMPLING[int(rng.integers(len(UPSAMPLING)))]
    image = upsample(scene(rng, width // FACTOR, height // FACTOR), method) if ai else scene(rng, width, height)
    ok, data = cv2.imencode(".jpg", image[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("OpenCV could not encode a JPEG")
    facts = {"width": width, "height": height, "quality": quality, "upsampling": method if ai else None}
    return data.tobytes(), facts


def make_trace_task(root: Path, n_train: int, n_test: int, seed: int) -> Path:
    """The task's class folders under ``root`` (half of each split per class, alternating), reused when
    ``generator.json`` records the same parameters. Returns ``root``."""
    from kit.io import write_json

    root = Path(root)
    params = {"version": 1, "n_train": n_train, "n_test": n_test, "seed": seed}
    if generated_before(root, params):
        return root
    marker = root / GENERATOR_FILE
    files = {}
    for split_number, (split, count) in enumerate((("train", n_train), ("test", n_test))):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        for index in range(count):
            label = CLASSES[index % 2]
            data, facts = trace_image(seed, split_number, index, label == "ai")
            path = f"{split}/{label}/{index:05d}.jpg"
            (root / path).write_bytes(data)
            files[path] = {"label": label, **facts}
    write_json(marker, {"params": params, "classes": CLASSES, "files": files})
    return root
