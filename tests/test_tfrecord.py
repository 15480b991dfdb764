"""The TensorFlow-free TFRecord writer and the raw image format.

- ``kit.data.tfrecord``'s standalone Example messages / ``schema.serialize`` give the bytes of
  ``tf.train.Example.SerializeToString(deterministic=True)`` and of ``tf.io.TFRecordWriter`` exactly, and
  ``tf.data`` parses them back;
- records workers never import TensorFlow;
- ``data.image_format``: auto resolves to raw up to 128 px (JPEG above), raw records give the exact pixels through the
  batched pipeline, the same batches as PNG records, and a static batch size with ``drop_remainder``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import tensorflow as tf
from conftest import COMMAND_TIMEOUT_S

from kit.config import Config, load_config
from kit.data import records, schema, tfrecord
from kit.data.images import decode, resize
from kit.data.manifest import read_manifest, records_dir
from kit.data.pipeline import make_dataset

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["cat", "dog", "fox"]
F = tf.train.Feature


def tf_example(example: schema.Example) -> bytes:
    """The reference: the same example built and serialized by TensorFlow's protobuf classes."""

    def int64(value: int) -> tf.train.Feature:
        return F(int64_list=tf.train.Int64List(value=[value]))

    def raw(value: bytes) -> tf.train.Feature:
        return F(bytes_list=tf.train.BytesList(value=[value]))

    features = {
        "image": raw(example.image),
        "label": int64(example.label),
        "soft_label": F(float_list=tf.train.FloatList(value=np.asarray(example.soft_label, np.float32).tolist())),
        "id": raw(example.id.encode("utf-8")),
        "height": int64(example.height),
        "width": int64(example.width),
        "fold": int64(example.fold),
    }
    return tf.train.Example(features=tf.train.Features(feature=features)).SerializeToString(deterministic=True)


def some_examples(rng: np.random.Generator) -> list[schema.Example]:
    soft = rng.dirichlet(np.ones(5)).astype(np.float32)
    return [
        schema.Example(b"\x89PNG" + rng.bytes(300), 2, np.eye(5, dtype=np.float32)[2], "img_001", 480, 640, 3),
        schema.Example(rng.bytes(64 * 64 * 3), -1, np.zeros(5, np.float32), "test/é-ünïcode", 1, 1, -1),  # raw, test row
        schema.Example(b"", 0, soft, "a#aug1", 2**31 + 5, 7, 0),  # CutMix soft label, big size, empty image
        schema.Example(rng.bytes(200_000), 0, np.array([1.0], np.float32), "", 0, 0, 2**40),  # 1 class, long varints
    ]


def test_serialize_equals_tensorflow_byte_for_byte() -> None:
    for example in some_examples(np.random.default_rng(0)):
        assert schema.serialize(example) == tf_example(example)


def ours_and_tensorflows(features: dict[str, tuple[str, list]]) -> tuple[bytes, tf.train.Example]:
    """``{key: (kind, values)}`` built as an Example by kit's standalone message classes and by TensorFlow's."""
    proto = tfrecord.example_proto()
    ours = proto.Example()
    theirs = tf.train.Example()
    for key, (kind, values) in features.items():
        getattr(ours.features.feature[key], kind).value.extend(values)
        getattr(theirs.features.feature[key], kind).value.extend(values)
        if not values:  # an empty list still chooses the oneof member
            getattr(ours.features.feature[key], kind).SetInParent()
            getattr(theirs.features.feature[key], kind).SetInParent()
    return ours.SerializeToString(deterministic=True), theirs


def test_standalone_example_messages_match_tensorflow() -> None:
    features = {
        "b": ("bytes_list", [b"x", b"", b"yz"]),
        "big": ("int64_list", [2**63 - 1, -(2**63), 300, 0]),
        "f": ("float_list", [0.1, -0.0, 1e30, -2.5]),
        "empty_f": ("float_list", []),
        "empty_i": ("int64_list", []),
        "empty_b": ("bytes_list", []),
        "Zeta": ("int64_list", [1]),
        "ünï": ("int64_list", [-7]),
    }
    ours, theirs = ours_and_tensorflows(features)
    assert ours == theirs.SerializeToString(deterministic=True)
    assert tf.train.Example.FromString(ours) == theirs
    assert tfrecord.example_proto().Example.FromString(ours).SerializeToString(deterministic=True) == ours


def test_map_key_order_with_shared_prefixes_matches_the_protobuf_runtime() -> None:
    """Keys that are prefixes of each other: the runtimes order them differently, but both sides use the one installed."""
    keys = ["b", "ab", "a", "B", "aa", "_", "é", "z", "abc"]
    ours, theirs = ours_and_tensorflows({key: ("int64_list", [n]) for n, key in enumerate(keys)})
    assert ours == theirs.SerializeToString(deterministic=True)


def test_serialize_takes_numpy_scalars() -> None:
    example = schema.Example(b"x", np.int64(2), np.eye(3, dtype=np.float32)[2], "a", np.int32(5), np.int64(6), np.int64(-1))
    plain = schema.Example(b"x", 2, np.eye(3, dtype=np.float32)[2], "a", 5, 6, -1)
    assert schema.serialize(example) == schema.serialize(plain) == tf_example(plain)


def test_writer_equals_tf_writer_and_tf_data_parses_it(tmp_path: Path) -> None:
    examples = some_examples(np.random.default_rng(1))[:3]
    serialized = [schema.serialize(e) for e in examples]
    ours, theirs = tmp_path / "ours.tfrecord", tmp_path / "theirs.tfrecord"
    with tfrecord.TFRecordWriter(ours) as writer:
        for record in serialized:
            writer.write(record)
    with tf.io.TFRecordWriter(str(theirs)) as writer:
        for record in serialized:
            writer.write(record)
    assert ours.read_bytes() == theirs.read_bytes()
    assert list(tfrecord.read_records(ours)) == serialized

    spec = schema.feature_spec(5)
    parsed = [tf.io.parse_single_example(raw, spec) for raw in tf.data.TFRecordDataset(str(ours))]
    assert len(parsed) == len(examples)
    for example, values in zip(examples, parsed, strict=True):
        assert values["image"].numpy() == example.image
        assert values["id"].numpy().decode("utf-8") == example.id
        assert [int(values[k]) for k in ("label", "height", "width", "fold")] == [
            example.label,
            example.height,
            example.width,
            example.fold,
        ]
        np.testing.assert_array_equal(values["soft_label"].numpy(), example.soft_label)


def test_masked_crc_and_corruption_checks(tmp_path: Path) -> None:
    # The CRC-32C check value (RFC 3720) and TFRecord's mask, computed by hand.
    crc = 0xE3069283
    assert tfrecord.masked_crc(b"123456789") == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF
    path = tmp_path / "one.tfrecord"
    with tfrecord.TFRecordWriter(path) as writer:
        writer.write(b"hello records")
    data = bytearray(path.read_bytes())
    data[14] ^= 1  # a bit of the payload
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="corrupt record data"):
        list(tfrecord.read_records(path))
    path.write_bytes(bytes(data[:-2]))
    with pytest.raises(ValueError, match="truncated"):
        list(tfrecord.read_records(path))


def test_google_crc32c_is_the_c_implementation() -> None:
    import google_crc32c

    assert google_crc32c.implementation == "c", "the pure-Python fallback makes records builds slow"


# ---------------------------------------------------------------------------------------------- workers

# The probe is its own module: kit's workers never run (or import) the caller's __main__, so a function they
# receive by reference must live in an importable module.
PROBE_MODULE = """
import json, os, sys, time
from pathlib import Path

from kit.data import shards

ORIGINAL = shards._write_shard


def probe(task):
    # Runs in a spawned worker: what it has imported, and how long after the build started it got work.
    out = Path(os.environ["PROBE_DIR"]) / f"{os.getpid()}.json"
    if not out.exists():
        out.write_text(json.dumps({"started_s": time.time() - float(os.environ["PROBE_T0"])}))
    result = ORIGINAL(task)
    state = json.loads(out.read_text())
    heavy = sorted(m for m in ("tensorflow", "keras", "tf_keras") if m in sys.modules)
    state.update(heavy=heavy, pid=os.getpid())
    out.write_text(json.dumps(state))
    return result
"""

PROBE = """
import json, os, sys, time

import pandas as pd

from kit.config import Config
from kit.data import records, shards
from probe_module import probe

if __name__ == "__main__":
    cfg = Config()
    cfg.comp.name = "probe"
    cfg.comp.classes = __CLASSES__
    cfg.model.image_size = 16
    cfg.data.records_root = __ROOT__
    cfg.data.workers = 2
    cfg.data.shard_mb = 0.002  # a couple of examples per shard: both workers get shards
    index = pd.read_csv(__INDEX__, dtype={"id": str})
    shards._write_shard = probe  # the pool pickles the function by reference: the workers run probe_module.probe
    os.environ["PROBE_T0"] = repr(time.time())
    records.build_records(cfg, index, __CLASSES__)
    print("PARENT", json.dumps({"pid": os.getpid(), "heavy": sorted(m for m in ("tensorflow", "keras") if m in sys.modules)}))
"""


def make_index(folder: Path, n: int = 12, side: int = 24) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        path = folder / f"{i:03d}.png"
        cv2.imwrite(str(path), rng.integers(0, 256, (side + i, side, 3), dtype=np.uint8))
        split = "train" if i < n - 4 else ("val" if i < n - 2 else "test")
        label = -1 if split == "test" else i % len(CLASSES)
        rows.append({"id": f"id{i:03d}", "path": str(path), "label": label, "split": split, "fold": -1})
    return pd.DataFrame(rows)


@pytest.mark.slow
def test_records_workers_never_import_tensorflow(tmp_path: Path) -> None:
    index = make_index(tmp_path / "src")
    index_csv = tmp_path / "index.csv"
    index.to_csv(index_csv, index=False)
    script = tmp_path / "probe_build.py"
    source = PROBE.replace("__CLASSES__", repr(CLASSES)).replace("__ROOT__", repr(str(tmp_path / "records")))
    script.write_text(source.replace("__INDEX__", repr(str(index_csv))))
    (tmp_path / "probe_module.py").write_text(PROBE_MODULE)
    probes = tmp_path / "probes"
    probes.mkdir()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(tmp_path)]), "PROBE_DIR": str(probes)}
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S
    )
    assert done.returncode == 0, done.stderr[-3000:]
    parent = json.loads(done.stdout.split("PARENT", 1)[1])
    assert parent["heavy"] == []  # the in-process side (plan, fingerprint, manifest) does not need it either
    workers = [json.loads(p.read_text()) for p in probes.glob("*.json")]
    assert workers, "no worker wrote a shard"  # on a loaded machine one worker may write them all
    for worker in workers:
        assert worker["pid"] != parent["pid"]  # a spawned pool worker, not the in-process path
        assert worker["heavy"] == [], f"a records worker imported {worker['heavy']}"
        print(f"records worker {worker['pid']} got its first shard {worker['started_s']:.2f} s after the build started")
    manifest = read_manifest(next((tmp_path / "records" / "probe" / "16").glob("*/manifest.json")).parent)
    assert manifest.image_format == "raw" and manifest.counts["train"].total == 8


# ---------------------------------------------------------------------------------------------- raw format


def test_resolve_image_format() -> None:
    assert schema.resolve_image_format("auto", 32) == "raw"
    assert schema.resolve_image_format("auto", 128) == "raw"
    assert schema.resolve_image_format("auto", 129) == "jpeg"
    assert schema.resolve_image_format("jpeg", 32) == "jpeg"
    with pytest.raises(ValueError, match="unknown image format"):
        schema.resolve_image_format("webp", 32)
    assert Config().data.image_format == "auto"


def build(tmp_path: Path, index: pd.DataFrame, name: str, *extra: str) -> Config:
    cfg = load_config(["comp=demo", f"data.records_root={tmp_path / name}", "model.image_size=16", "data.workers=1", *extra])
    records.build_records(cfg, index, CLASSES)
    return cfg


@pytest.mark.slow
def test_raw_records_give_exact_pixels_and_the_same_batches_as_png(tmp_path: Path) -> None:
    index = make_index(tmp_path / "src")
    raw_cfg = build(tmp_path, index, "raw")  # auto at 16 px
    png_cfg = build(tmp_path, index, "png", "data.image_format=png")
    raw_manifest = read_manifest(records_dir(raw_cfg))
    png_manifest = read_manifest(records_dir(png_cfg))
    assert raw_manifest.image_format == "raw"
    assert png_manifest.image_format == "png"
    # auto and the format it stands for are the same records: no rebuild.
    assert records_dir(build(tmp_path, index, "raw", "data.image_format=raw")) == records_dir(raw_cfg)
    assert read_manifest(records_dir(raw_cfg)).fingerprint == raw_manifest.fingerprint

    expected = {row.id: resize(decode(row.path), 16) for row in index.itertuples()}
    for split in ("train", "val", "test"):
        raw = make_dataset(raw_cfg, split, training=False, batch_size=3, manifest=raw_manifest, with_ids=True)
        png = make_dataset(png_cfg, split, training=False, batch_size=3, manifest=png_manifest, with_ids=True)
        raw_batches, png_batches = list(raw.as_numpy_iterator()), list(png.as_numpy_iterator())
        assert len(raw_batches) == len(png_batches)
        for (raw_images, raw_targets, raw_ids), (png_images, png_targets, png_ids) in zip(raw_batches, png_batches, strict=True):
            assert raw_images.dtype == np.float32 and raw_images.shape[1:] == (16, 16, 3)
            np.testing.assert_array_equal(raw_images, png_images)
            np.testing.assert_array_equal(raw_targets, png_targets)
            np.testing.assert_array_equal(raw_ids, png_ids)
            for image, example_id in zip(raw_images, raw_ids, strict=True):
                np.testing.assert_array_equal(image, expected[example_id.decode()].astype(np.float32))


@pytest.mark.slow
def test_raw_batches_keep_a_static_size_with_drop_remainder_and_train_with_augmentation(tmp_path: Path) -> None:
    index = make_index(tmp_path / "src", n=20)
    cfg = build(tmp_path, index, "raw", "augment.flip=both", "augment.color_jitter=0.3", "augment.cutmix=1.0")
    manifest = read_manifest(records_dir(cfg))
    dataset = make_dataset(cfg, "train", training=True, batch_size=4, manifest=manifest, drop_remainder=True, repeat=True)
    assert dataset.element_spec[0].shape.as_list() == [4, 16, 16, 3]  # static: TPU/XLA need it
    images, targets = next(iter(dataset))
    assert images.shape == (4, 16, 16, 3) and targets.shape == (4, 3)
    assert float(tf.reduce_min(images)) >= 0.0 and float(tf.reduce_max(images)) <= 255.0
    np.testing.assert_allclose(targets.numpy().sum(axis=1), 1.0, atol=1e-5)


def test_raw_record_of_the_wrong_size_fails_loudly() -> None:
    good = schema.encode_image(np.zeros((4, 4, 3), np.uint8), "raw")
    assert len(good) == 48
    spec_batch = tf.constant([schema.serialize(schema.Example(good[:-3], 0, np.ones(1, np.float32), "x", 4, 4))] * 2)
    with pytest.raises(tf.errors.InvalidArgumentError):
        schema.parse_batch(spec_batch, 1, 4, "raw")
