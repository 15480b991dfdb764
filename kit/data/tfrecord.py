"""TFRecord files of ``tf.train.Example`` protobufs, written without TensorFlow.

Why: the records workers (:mod:`kit.data.records`) only need to *write* examples. Importing TensorFlow for
``tf.io.TFRecordWriter`` and ``tf.train.Example`` cost every spawned worker 7-15 s of start-up and ~0.6 GiB
of memory, which dominated ``kit records`` (BENCHMARKS.md, records build speed). So the ``Example`` messages are defined here
in Python (:func:`example_proto`) and serialized by the ``protobuf`` runtime TensorFlow itself uses, and the
framing is written with the standard library and ``google_crc32c`` (a C CRC-32C); the tests
(tests/test_tfrecord.py) prove the bytes equal TensorFlow's and that ``tf.data`` reads the files back.

**Example protobuf** (tensorflow/core/example/example.proto and feature.proto, proto3)::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }
    Int64List { repeated int64 value = 1 [packed = true]; }

The descriptors are built from a ``FileDescriptorProto`` in a pool of their own (no protoc, no generated
module, no clash with TensorFlow's registration of the same messages when both are loaded). Field numbers
and types are all the wire format depends on, so ``SerializeToString(deterministic=True)`` gives the same
bytes as ``tf.train.Example``'s, map order included: the same runtime sorts the same keys. Measured on
one 64x64x3 raw-image example with label/size/fold/id (best of 3): 5.9 µs against the former hand-written
encoder's 6.5 µs.

**TFRecord framing** (https://www.tensorflow.org/tutorials/load_data/tfrecord#tfrecords_format_details)::

    uint64 length                      (little-endian)
    uint32 masked_crc32c(length bytes)
    byte   data[length]
    uint32 masked_crc32c(data)

with ``masked_crc(c) = ((c >> 15) | (c << 17)) + 0xa282ead8 (mod 2**32)`` on the CRC-32C (Castagnoli) of the bytes.
"""

from __future__ import annotations

import functools
import os
import struct
from collections.abc import Callable, Iterator
from typing import Any, BinaryIO, NamedTuple

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
WRITE_BUFFER = 1 << 20  # bytes buffered per open shard: few, large write() calls
_crc32c: Callable[[bytes], int] | None = None  # google_crc32c.value, imported on first use (writers only)
_PACKAGE = "kit.example"  # not "tensorflow": the package name is not on the wire, and this one cannot clash

# ---------------------------------------------------------------------------------------------- protobuf


class ExampleProto(NamedTuple):
    """The message classes of tensorflow/core/example/{example,feature}.proto.

    Typed ``Any``: the classes are made at run time, so a type checker cannot know their fields.
    """

    Example: Any
    Features: Any
    Feature: Any
    BytesList: Any
    FloatList: Any
    Int64List: Any


@functools.cache
def example_proto() -> ExampleProto:
    """The ``Example`` message classes, defined at first use (protobuf is imported only by who serializes)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    field = descriptor_pb2.FieldDescriptorProto
    optional, repeated = field.LABEL_OPTIONAL, field.LABEL_REPEATED
    proto = descriptor_pb2.FileDescriptorProto(name="kit/example.proto", package=_PACKAGE, syntax="proto3")

    def message(name: str, *fields: tuple[str, int, int, int, str]) -> descriptor_pb2.DescriptorProto:
        described = proto.message_type.add(name=name)
        for field_name, number, kind, label, type_name in fields:
            added = described.field.add(name=field_name, number=number, type=kind, label=label)
            if type_name:  # set only for message fields: an empty type_name still counts as set
                added.type_name = type_name
        return described

    message("BytesList", ("value", 1, field.TYPE_BYTES, repeated, ""))
    message("FloatList", ("value", 1, field.TYPE_FLOAT, repeated, ""))  # proto3: repeated scalars are packed
    message("Int64List", ("value", 1, field.TYPE_INT64, repeated, ""))
    feature = message(
        "Feature",
        ("bytes_list", 1, field.TYPE_MESSAGE, optional, f".{_PACKAGE}.BytesList"),
        ("float_list", 2, field.TYPE_MESSAGE, optional, f".{_PACKAGE}.FloatList"),
        ("int64_list", 3, field.TYPE_MESSAGE, optional, f".{_PACKAGE}.Int64List"),
    )
    feature.oneof_decl.add(name="kind")
    for member in feature.field:
        member.oneof_index = 0
    features = message("Features", ("feature", 1, field.TYPE_MESSAGE, repeated, f".{_PACKAGE}.Features.FeatureEntry"))
    entry = features.nested_type.add(name="FeatureEntry")  # what protoc makes of map<string, Feature>
    entry.field.add(name="key", number=1, type=field.TYPE_STRING, label=optional)
    entry.field.add(name="value", number=2, type=field.TYPE_MESSAGE, label=optional, type_name=f".{_PACKAGE}.Feature")
    entry.options.map_entry = True
    message("Example", ("features", 1, field.TYPE_MESSAGE, optional, f".{_PACKAGE}.Features"))

    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return ExampleProto(
        *(message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PACKAGE}.{name}")) for name in ExampleProto._fields)
    )


# ---------------------------------------------------------------------------------------------- TFRecord framing


def _crc32c_function() -> Callable[[bytes], int]:
    """``google_crc32c.value``, imported lazily: readers of kit.data.schema (the tf.data pipeline) never need
    it, so a Kaggle image installing kit with ``--no-deps`` only needs it where records are written."""
    global _crc32c
    if _crc32c is None:
        try:
            import google_crc32c
        except ImportError as exc:
            from kit.errors import KitError

            raise KitError(f"writing TFRecords needs the google-crc32c package ({exc})", "pip install google-crc32c") from None
        _crc32c = google_crc32c.value
    return _crc32c


def masked_crc(data: bytes) -> int:
    """TFRecord's masked CRC-32C: rotate right by 15 bits and add a constant, all mod 2**32."""
    crc = (_crc32c or _crc32c_function())(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & _U32


def frame(record: bytes) -> bytes:
    """One record with its TFRecord header and footer."""
    length = _LENGTH.pack(len(record))
    return length + _CRC.pack(masked_crc(length)) + record + _CRC.pack(masked_crc(record))


class TFRecordWriter:
    """Write records to an uncompressed TFRecord file; a context manager like ``tf.io.TFRecordWriter``.

    Errors (a full disk included) surface as ``OSError`` from :meth:`write` or :meth:`close`.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self._file: BinaryIO = open(path, "wb", buffering=WRITE_BUFFER)  # noqa: SIM115  (closed by close())

    def write(self, record: bytes) -> None:
        self._file.write(frame(record))

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> TFRecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_records(path: str | os.PathLike, *, check_crc: bool = True) -> Iterator[bytes]:
    """The records of an uncompressed TFRecord file, without TensorFlow (tools and tests).

    Raises ``ValueError`` on a truncated file or, with ``check_crc``, a corrupt length or record.
    """
    with open(path, "rb") as handle:
        while True:
            header = handle.read(12)
            if not header:
                return
            if len(header) < 12:
                raise ValueError(f"{path}: truncated record header")
            length_bytes, (length_crc,) = header[:8], _CRC.unpack(header[8:])
            if check_crc and masked_crc(length_bytes) != length_crc:
                raise ValueError(f"{path}: corrupt record length")
            (length,) = _LENGTH.unpack(length_bytes)
            record = handle.read(length)
            footer = handle.read(4)
            if len(record) < length or len(footer) < 4:
                raise ValueError(f"{path}: truncated record")
            if check_crc and masked_crc(record) != _CRC.unpack(footer)[0]:
                raise ValueError(f"{path}: corrupt record data")
            yield record
