"""TFRecord files of ``tf.train.Example`` protobufs, written without TensorFlow.

Why: the records workers (:mod:`kit.data.records`) only need to *write* examples. Importing TensorFlow for
``tf.io.TFRecordWriter`` and ``tf.train.Example`` cost every spawned worker 7-15 s of start-up and ~0.6 GiB
of memory, which dominated ``kit records`` (BENCHMARKS.md, P1). Both formats are small and stable, so they
are encoded here by hand with the standard library, numpy and ``google_crc32c`` (a C CRC-32C); the tests
(tests/test_tfrecord.py) prove the bytes equal TensorFlow's and that ``tf.data`` reads the files back.

**Example protobuf** (tensorflow/core/example/example.proto and feature.proto; protobuf wire format
https://protobuf.dev/programming-guides/encoding/)::

    Example  { Features features = 1; }
    Features { map<string, Feature> feature = 1; }   // a map is a repeated entry message {key = 1; value = 2;}
    Feature  { oneof kind { BytesList bytes_list = 1; FloatList float_list = 2; Int64List int64_list = 3; } }
    BytesList { repeated bytes value = 1; }
    FloatList { repeated float value = 1 [packed = true]; }    // little-endian float32s in one field
    Int64List { repeated int64 value = 1 [packed = true]; }    // varints; negatives take 10 bytes

Map entries are written in the order of protobuf's deterministic serialization
(``SerializeToString(deterministic=True)``), so the same example always gives the same bytes. Note that
this order is implementation-defined: upb (the Python protobuf runtime TensorFlow uses) orders keys
bytewise but puts a key *after* the longer keys it is a prefix of ("aa" < "ab" < "a" < "b"); the C++
runtime puts it before. kit's own keys (``kit.data.schema``) share no prefixes, so both agree on them.

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
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import BinaryIO

import numpy as np

_MASK_DELTA = 0xA282EAD8
_U32 = 0xFFFFFFFF
_U64 = 0xFFFFFFFFFFFFFFFF
_LENGTH = struct.Struct("<Q")
_CRC = struct.Struct("<I")
WRITE_BUFFER = 1 << 20  # bytes buffered per open shard: few, large write() calls
_crc32c: Callable[[bytes], int] | None = None  # google_crc32c.value, imported on first use (writers only)

# ---------------------------------------------------------------------------------------------- protobuf


_SMALL = [bytes((value,)) for value in range(0x80)]  # one-byte varints, prebuilt: most lengths and labels
# Tags of the length-delimited fields below (field number << 3 | wire type 2), each a single byte.
_TAG_1, _TAG_2, _TAG_3 = b"\x0a", b"\x12", b"\x1a"


def _varint(value: int) -> bytes:
    """Base-128 varint of an unsigned value (protobuf wire type 0)."""
    if value < 0x80:  # ids' lengths, labels, sizes: nearly always one byte
        return _SMALL[value]
    if value < 0x4000:  # an encoded image's or a soft label's length
        return bytes(((value & 0x7F) | 0x80, value >> 7))
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _field(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2): its one-byte ``tag``, the length, the payload.

    The records workers call this ~20 times per image, so it takes a prebuilt tag and inlines the
    one-byte length (BENCHMARKS.md, P1: serialising an example went from ~29 to ~7 µs).
    """
    length = len(payload)
    return tag + (_SMALL[length] if length < 0x80 else _varint(length)) + payload


def bytes_feature(values: Sequence[bytes]) -> bytes:
    """A serialized ``Feature`` holding a ``BytesList``."""
    return _field(_TAG_1, b"".join([_field(_TAG_1, bytes(value)) for value in values]))


def float_feature(values: Iterable[float] | np.ndarray) -> bytes:
    """A serialized ``Feature`` holding a packed ``FloatList`` (float32, little-endian as on the wire)."""
    packed = np.asarray(values, dtype="<f4").ravel().tobytes()
    return _field(_TAG_2, _field(_TAG_1, packed) if packed else b"")  # an empty packed field is omitted, as protobuf does


def int64_feature(values: Iterable[int]) -> bytes:
    """A serialized ``Feature`` holding a packed ``Int64List``; negatives are 64-bit two's complement."""
    packed = b"".join([_varint(int(value) & _U64) for value in values])
    return _field(_TAG_3, _field(_TAG_1, packed) if packed else b"")


@functools.lru_cache(maxsize=4096)
def int64_scalar_feature(value: int) -> bytes:
    """``int64_feature([value])``, cached: labels, sizes and folds repeat across a build's records."""
    return int64_feature((value,))


def _upb_order(key: bytes) -> tuple[int, ...]:
    """Sort key of upb's deterministic map order: bytewise, and a prefix after its extensions.

    upb sorts string keys by (descending memcmp of the common prefix, ascending length) and encodes back
    to front (``_upb_mapsorter_cmpstr`` in upb/message/map_sorter.c; upb/wire/encode.c), which leaves
    them ascending with longer-first ties;
    a terminator above every byte value gives exactly that order.
    """
    return (*key, 256)


@functools.lru_cache(maxsize=64)
def _entry_heads(keys: tuple[str, ...]) -> tuple[tuple[str, bytes], ...]:
    """``(key, its encoded map-entry key field)`` in deterministic order; cached, as every record of a
    build has the same keys."""
    encoded = sorted(((key, key.encode("utf-8")) for key in keys), key=lambda pair: _upb_order(pair[1]))
    return tuple((key, _field(_TAG_1, raw)) for key, raw in encoded)


def example(features: Mapping[str, bytes]) -> bytes:
    """A serialized ``tf.train.Example`` from ``{name: serialized Feature}`` (see the *_feature helpers).

    Entries go in the order ``SerializeToString(deterministic=True)`` of the upb runtime writes them (see
    the module docstring).
    """
    entries = [_field(_TAG_1, head + _field(_TAG_2, features[key])) for key, head in _entry_heads(tuple(features))]
    return _field(_TAG_1, b"".join(entries))


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
