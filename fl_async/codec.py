"""The one place that maps fl-async's data model to and from wire messages (``fl_async.proto``).

Nothing else in fl-async builds or reads generated record/message classes' content; the SuperLink only
reads metadata and array digests through the helpers at the bottom of this module.

Arrays travel in one of two ways:

* **inline**: the payload sits in the ``Array.data`` bytes field of the wire message;
* **external**: ``data`` is empty, ``digest`` is the BLAKE3 digest of the payload and ``nbytes`` its length;
  the payload travels separately as chunks (the blob path, :mod:`fl_async.blobs`). The encoder puts
  such payloads into the ``blobs`` mapping it is given (``digest -> buffer``, no copy), and the decoder
  takes them from one.

Decoded arrays hold writable buffers (inline payloads are copied once into a ``bytearray``; they are
small by construction), so ``Array.numpy()`` on received arrays gives writable views. External payloads
are checked against their BLAKE3 digest on decode (``verify=True``). Every array is checked for a
supported dtype and a payload length matching dtype and shape, on encode and on decode; decoding
hostile input raises only :class:`~fl_async.common.errors.IntegrityError`, ``TypeError`` or
``ValueError``, and nothing is ever unpickled. The wire format is described in ``docs/wire.md``.
"""

from __future__ import annotations

import operator
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

from fl_async._digest import DIGEST_SIZE, digest_of
from fl_async.common.errors import IntegrityError
from fl_async.common.message import Error, Message, Metadata
from fl_async.common.records import (
    INT64_MAX,
    INT64_MIN,
    UINT64_MAX,
    Array,
    ConfigsRecord,
    MetricsRecord,
    ParametersRecord,
    RecordSet,
)
from fl_async.proto.fl_async import v1 as pb

__all__ = [
    "DEFAULT_INLINE_LIMIT",
    "DIGEST_SIZE",
    "Buffer",
    "DigestMemo",
    "config_from_proto",
    "config_to_proto",
    "digest_of",
    "external_arrays",
    "message_from_proto",
    "message_to_proto",
    "recordset_from_proto",
    "recordset_to_proto",
]

DEFAULT_INLINE_LIMIT = 1 << 20
"""Arrays larger than this many bytes travel on the blob path (when the caller provides one)."""

Buffer = bytes | bytearray | memoryview


# --------------------------------------------------------------------------------------------
# values


def _value_to_proto(value: Any) -> pb.Value:
    if isinstance(value, bool):
        return pb.Value(bool=value)
    if isinstance(value, int):
        if INT64_MIN <= value <= INT64_MAX:
            return pb.Value(sint64=value)
        if INT64_MAX < value <= UINT64_MAX:
            return pb.Value(uint64=value)
        raise ValueError(f"integer outside [-2**63, 2**64 - 1]: {value}")
    if isinstance(value, float):
        return pb.Value(double=value)
    if isinstance(value, str):
        return pb.Value(string=value)
    if isinstance(value, (bytes, bytearray, memoryview)):
        return pb.Value(bytes=bytes(value))
    if isinstance(value, list):
        first = value[0] if value else 0.0
        if isinstance(first, bool):
            return pb.Value(bool_list=pb.BoolList(vals=value))
        if isinstance(first, int):
            if min(value) >= INT64_MIN and max(value) <= INT64_MAX:
                return pb.Value(sint64_list=pb.Sint64List(vals=value))
            if min(value) >= 0 and max(value) <= UINT64_MAX:
                return pb.Value(uint64_list=pb.Uint64List(vals=value))
            raise ValueError("list of integers fits neither [-2**63, 2**63 - 1] nor [0, 2**64 - 1]")
        if isinstance(first, float):
            return pb.Value(double_list=pb.DoubleList(vals=value))
        if isinstance(first, str):
            return pb.Value(string_list=pb.StringList(vals=value))
        if isinstance(first, (bytes, bytearray)):
            return pb.Value(bytes_list=pb.BytesList(vals=[bytes(v) for v in value]))
    raise TypeError(f"cannot encode value of type {type(value).__name__}")


_SCALAR_FIELDS = ("double", "sint64", "bool", "string", "bytes", "uint64")
_LIST_FIELDS = ("double_list", "sint64_list", "bool_list", "string_list", "bytes_list", "uint64_list")


def _value_from_proto(value: pb.Value | None, key: str) -> Any:
    if value is None:
        raise ValueError(f"record entry {key!r} has no value")
    found: list[Any] = []
    for name in _SCALAR_FIELDS:
        v = getattr(value, name)
        if v is not None:
            found.append(v)
    for name in _LIST_FIELDS:
        v = getattr(value, name)
        if v is not None:
            found.append(list(v.vals))
    if len(found) != 1:
        raise ValueError(f"record entry {key!r} must hold exactly one value, has {len(found)}")
    return found[0]


def _entries_to_proto(record: MetricsRecord | ConfigsRecord, where: str) -> list[pb.ValueEntry]:
    """Encode a record's entries, checking every value again (stored lists may have been mutated since)."""
    try:
        return [pb.ValueEntry(key=k, value=_value_to_proto(v)) for k, v in record.checked_items()]
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"{where}: {exc}") from None


def config_to_proto(config: Mapping[str, Any]) -> list[pb.ValueEntry]:
    """Encode a ``key -> value`` config (run or node config) as ordered wire entries.

    Raises:
        TypeError, ValueError: a value breaks the ConfigsRecord rules (the message names the key).
    """
    return _entries_to_proto(ConfigsRecord(config), "config")


def config_from_proto(entries: list[pb.ValueEntry]) -> dict[str, Any]:
    """Decode ordered wire entries into a ``key -> value`` dict (values checked as ConfigsRecord's).

    Raises:
        TypeError, ValueError: a value breaks the ConfigsRecord rules or a key appears twice.
    """
    return dict(ConfigsRecord(_entries_from_proto("config", "", entries)))


# --------------------------------------------------------------------------------------------
# arrays and records


DigestMemo = dict[int, tuple[Buffer, bytes]]
"""Digests of buffers by identity (``id(buffer) -> (buffer, digest)``; the buffer is kept so its id stays
unique), shared by the messages of one request so that a buffer several of them carry is hashed once."""


def _array_to_proto(
    array: Array,
    blobs: MutableMapping[bytes, Buffer] | None,
    inline_limit: int,
    where: str,
    digests: DigestMemo | None = None,
) -> pb.Array:
    try:
        array.check()
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"array {where!r}: {exc}") from None
    nbytes = array.nbytes
    if blobs is not None and nbytes > inline_limit:
        data = array.data
        known = None if digests is None else digests.get(id(data))
        if known is not None and known[0] is data:
            digest = known[1]
        else:
            digest = digest_of(data)
            if digests is not None:
                digests[id(data)] = (data, digest)
        blobs[digest] = data
        return pb.Array(dtype=array.dtype, shape=array.shape, stype=array.stype, digest=digest, nbytes=nbytes)
    data = array.data if isinstance(array.data, bytes) else bytes(array.data)
    return pb.Array(dtype=array.dtype, shape=array.shape, stype=array.stype, data=data, nbytes=nbytes)


def _buffer_size(data: Buffer) -> int:
    return data.nbytes if isinstance(data, memoryview) else len(data)


def _array_from_proto(
    arr: pb.Array, blobs: Mapping[bytes, Buffer] | None, where: str, verify: bool, used: set[bytes]
) -> Array:
    data: Buffer
    if arr.digest:
        if arr.data:
            raise IntegrityError(f"array {where!r}: has both an inline payload and a digest")
        if len(arr.digest) != DIGEST_SIZE:
            raise IntegrityError(f"array {where!r}: digest has {len(arr.digest)} bytes, expected {DIGEST_SIZE}")
        if blobs is None or arr.digest not in blobs:
            raise IntegrityError(
                f"array {where!r}: payload {arr.digest.hex()[:16]}… ({arr.nbytes} bytes) was not received"
            )
        data = blobs[arr.digest]
        size = _buffer_size(data)
        if size != arr.nbytes:
            raise IntegrityError(f"array {where!r}: payload has {size} bytes, announced {arr.nbytes}")
        if verify and digest_of(data) != arr.digest:
            raise IntegrityError(f"array {where!r}: payload does not match its BLAKE3 digest")
        if arr.digest in used:
            data = bytearray(data)  # a second reference to the same content gets its own buffer
        used.add(arr.digest)
    else:
        if len(arr.data) != arr.nbytes:
            raise IntegrityError(f"array {where!r}: payload has {len(arr.data)} bytes, announced {arr.nbytes}")
        data = bytearray(arr.data)
    try:
        array = Array(dtype=arr.dtype, shape=list(arr.shape), stype=arr.stype, data=data)
        array.check()
    except (TypeError, ValueError) as exc:
        raise type(exc)(f"array {where!r}: {exc}") from None
    return array


def recordset_to_proto(
    rs: RecordSet,
    *,
    blobs: MutableMapping[bytes, Buffer] | None = None,
    inline_limit: int = DEFAULT_INLINE_LIMIT,
    digests: DigestMemo | None = None,
) -> pb.RecordSet:
    """Encode a :class:`RecordSet`.

    Args:
        rs: the record set.
        blobs: where to put the payloads of arrays larger than ``inline_limit`` bytes (``digest ->
            buffer``, the array's own buffer, not a copy); ``None`` keeps every array inline.
        inline_limit: size in bytes above which an array goes to ``blobs``.
        digests: a :data:`DigestMemo` shared by the messages of one request (a broadcast names one
            model buffer N times: it is hashed once). Valid only while no buffer is modified, i.e.
            within one encode of a batch.

    Raises:
        TypeError, ValueError: a ``"numpy.ndarray"`` array has an unsupported dtype or a payload length
            that does not match its dtype and shape (the message names ``record/key``), or a metrics/configs
            value no longer satisfies its record's rules, e.g. a stored list mutated to mix types after it
            was set (the message names the record and the key).
    """
    return pb.RecordSet(
        parameters=[
            pb.ParametersRecord(
                name=name,
                keys=list(rec.keys()),
                arrays=[_array_to_proto(a, blobs, inline_limit, f"{name}/{k}", digests) for k, a in rec.items()],
            )
            for name, rec in rs.parameters_records.items()
        ],
        metrics=[
            pb.MetricsRecord(name=n, entries=_entries_to_proto(r, f"metrics record {n!r}"))
            for n, r in rs.metrics_records.items()
        ],
        configs=[
            pb.ConfigsRecord(name=n, entries=_entries_to_proto(r, f"configs record {n!r}"))
            for n, r in rs.configs_records.items()
        ],
    )


def _unique(kind: str, name: str, seen: set[str]) -> None:
    if name in seen:
        raise ValueError(f"{kind} {name!r} appears twice")
    seen.add(name)


def _entries_from_proto(kind: str, record_name: str, entries: list[pb.ValueEntry]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for e in entries:
        if e.key in out:
            where = f"{kind} {record_name!r}" if record_name else kind
            raise ValueError(f"{where}: key {e.key!r} appears twice")
        out[e.key] = _value_from_proto(e.value, e.key)
    return out


def recordset_from_proto(
    rs: pb.RecordSet,
    *,
    blobs: Mapping[bytes, Buffer] | None = None,
    verify: bool = True,
    used: set[bytes] | None = None,
) -> RecordSet:
    """Decode a wire record set; external payloads are looked up in ``blobs`` by digest.

    Inline payloads are copied once into a ``bytearray`` (so ``Array.numpy()`` is a writable view);
    external payloads are used as they are in ``blobs`` (no copy: pass ``bytearray`` or writable
    ``memoryview`` buffers to get writable arrays). When one message refers to the same digest
    twice, the second array gets its own copy, so that updating one in place never changes another;
    ``used`` extends that rule across the messages of a batch decoded from one ``blobs`` mapping.
    Nothing is ever unpickled.

    Args:
        rs: the wire record set.
        blobs: ``digest -> payload`` for external arrays; ``None`` when the message has none.
        verify: check each external payload against its BLAKE3 digest (about 0.025 s per 100 MiB
            on one core); pass ``False`` only when the transport has verified it already.
        used: digests whose buffer was already handed to an array (updated in place): pass one set for
            every message of a batch (e.g. the replies of one pull, where nodes that echo the model
            unchanged name the same digest) so that each gets its own buffer.

    Raises:
        IntegrityError: a payload is missing, has a length other than its announced ``nbytes``, or
            (``verify``) does not match its digest.
        TypeError, ValueError: an array's dtype/shape/payload or a value breaks the record rules (as
            when building records locally), or a name appears twice; the message names the key.
    """
    out = RecordSet()
    used = set() if used is None else used
    seen: set[str] = set()
    for prec in rs.parameters:
        _unique("parameters record", prec.name, seen)
        if len(prec.keys) != len(prec.arrays):
            raise ValueError(f"parameters record {prec.name!r}: {len(prec.keys)} keys for {len(prec.arrays)} arrays")
        arrays: dict[str, Array] = {}
        for k, a in zip(prec.keys, prec.arrays):
            if k in arrays:
                raise ValueError(f"parameters record {prec.name!r}: key {k!r} appears twice")
            arrays[k] = _array_from_proto(a, blobs, f"{prec.name}/{k}", verify, used)
        out.parameters_records[prec.name] = ParametersRecord(arrays)
    for mrec in rs.metrics:  # one namespace for all three kinds (as a RecordSet has)
        _unique("metrics record", mrec.name, seen)
        out.metrics_records[mrec.name] = MetricsRecord(_entries_from_proto("metrics record", mrec.name, mrec.entries))
    for crec in rs.configs:
        _unique("configs record", crec.name, seen)
        out.configs_records[crec.name] = ConfigsRecord(_entries_from_proto("configs record", crec.name, crec.entries))
    return out


# --------------------------------------------------------------------------------------------
# messages


def _int_in(name: str, value: Any, low: int, high: int, what: str) -> int:
    try:
        if isinstance(value, bool):
            raise TypeError
        value = operator.index(value)  # int, numpy integers
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if not low <= value <= high:
        raise ValueError(f"{name} is outside {what}: {value}")
    return value


def _id64(name: str, value: Any) -> int:
    """A metadata id: unsigned 64-bit (0 = "none": the server app as source or destination)."""
    return _int_in(name, value, 0, UINT64_MAX, "[0, 2**64 - 1] (ids are unsigned 64-bit)")


def metadata_to_proto(md: Metadata) -> pb.Metadata:
    """Encode :class:`Metadata` (``partition_id`` is not sent, as in Flower 1.9).

    Raises:
        TypeError, ValueError: an id is not an int in ``[0, 2**64 - 1]`` (the wire would silently
            corrupt it), or a text field is not a ``str``.
    """
    for name in ("message_id", "reply_to_message", "group_id", "message_type"):
        if not isinstance(getattr(md, name), str):
            raise TypeError(f"metadata {name} must be a str, got {type(getattr(md, name)).__name__}")
    return pb.Metadata(
        run_id=_id64("metadata run_id", md.run_id),
        message_id=md.message_id,
        src_node_id=_id64("metadata src_node_id", md.src_node_id),
        dst_node_id=_id64("metadata dst_node_id", md.dst_node_id),
        reply_to_message=md.reply_to_message,
        group_id=md.group_id,
        ttl=float(md.ttl),
        message_type=md.message_type,
        created_at=md.created_at,
    )


def message_to_proto(
    msg: Message,
    *,
    blobs: MutableMapping[bytes, Buffer] | None = None,
    inline_limit: int = DEFAULT_INLINE_LIMIT,
    digests: DigestMemo | None = None,
) -> pb.Message:
    """Encode a :class:`Message`; see :func:`recordset_to_proto` for ``blobs``, ``inline_limit`` and ``digests``.

    Raises:
        TypeError, ValueError: bad metadata (ids outside ``[0, 2**64 - 1]``) or arrays (see
            :func:`recordset_to_proto`).
    """
    md = metadata_to_proto(msg.metadata)
    if msg.has_content():
        return pb.Message(
            metadata=md,
            content=recordset_to_proto(msg.content, blobs=blobs, inline_limit=inline_limit, digests=digests),
        )
    err = msg.error
    return pb.Message(
        metadata=md,
        error=pb.Error(
            code=_int_in("error code", err.code, INT64_MIN, INT64_MAX, "signed 64 bits"), reason=err.reason or ""
        ),
    )


def message_from_proto(
    wire: pb.Message,
    *,
    blobs: Mapping[bytes, Buffer] | None = None,
    verify: bool = True,
    used: set[bytes] | None = None,
) -> Message:
    """Decode a wire message, restoring ``created_at`` from the wire (as Flower's deserializers).

    Args:
        wire: the wire message.
        blobs: ``digest -> payload`` of its external arrays (see :func:`recordset_from_proto`).
        verify: check external payloads against their BLAKE3 digests.
        used: see :func:`recordset_from_proto` (one set for all messages decoded from one ``blobs``).

    Raises:
        ValueError: the message has no metadata, or both or neither of content and error; or a
            record value breaks the record rules (the message names the key).
        TypeError: an array has an unsupported dtype or a value has a refused type.
        IntegrityError: an external payload is missing, has the wrong size or fails its digest.
    """
    md = wire.metadata
    if md is None:
        raise ValueError("wire message without metadata")
    metadata = Metadata(
        run_id=md.run_id,
        message_id=md.message_id,
        src_node_id=md.src_node_id,
        dst_node_id=md.dst_node_id,
        reply_to_message=md.reply_to_message,
        group_id=md.group_id,
        ttl=md.ttl,
        message_type=md.message_type,
    )
    if (wire.content is None) == (wire.error is None):
        raise ValueError("wire message must carry exactly one of content and error")
    if wire.error is not None:
        msg = Message(metadata, error=Error(wire.error.code, wire.error.reason or None))
    else:
        msg = Message(metadata, content=recordset_from_proto(wire.content, blobs=blobs, verify=verify, used=used))
    msg.metadata.created_at = md.created_at
    return msg


def external_arrays(wire: pb.Message) -> Iterator[tuple[bytes, int]]:
    """Yield ``(digest, nbytes)`` of every external array a wire message refers to (for the link)."""
    if wire.content is None:
        return
    for prec in wire.content.parameters:
        for arr in prec.arrays:
            if arr.digest:
                yield arr.digest, arr.nbytes
