"""Message, Metadata, Error: Flower 1.9 semantics, the TTL rule and TTLExpiredError."""

from __future__ import annotations

import time

import pytest

from fl_async.common import (
    DEFAULT_TTL,
    Context,
    Error,
    ErrorCode,
    FlAsyncError,
    Message,
    MessageType,
    Metadata,
    MetricsRecord,
    RecordSet,
    TTLExpiredError,
)


def _metadata(ttl: float = DEFAULT_TTL, message_id: str = "m-1") -> Metadata:
    return Metadata(
        run_id=7,
        message_id=message_id,
        src_node_id=0,
        dst_node_id=42,
        reply_to_message="",
        group_id="round-1",
        ttl=ttl,
        message_type=MessageType.TRAIN,
        partition_id=3,
    )


def test_constants_and_namespaces() -> None:
    assert DEFAULT_TTL == 3600
    assert (MessageType.TRAIN, MessageType.EVALUATE, MessageType.QUERY) == ("train", "evaluate", "query")
    assert (ErrorCode.UNKNOWN, ErrorCode.LOAD_CLIENT_APP_EXCEPTION, ErrorCode.CLIENT_APP_RAISED_EXCEPTION) == (0, 1, 2)
    assert ErrorCode.NODE_UNAVAILABLE == 3 and ErrorCode.MESSAGE_EXPIRED == 4
    assert ErrorCode.name(3) == "NODE_UNAVAILABLE" and ErrorCode.name(99) == "UNKNOWN(99)"
    for ns in (MessageType, ErrorCode):
        with pytest.raises(TypeError):
            ns()


def test_message_requires_exactly_one_of_content_and_error() -> None:
    with pytest.raises(ValueError, match="Either `content` or `error`"):
        Message(_metadata())
    with pytest.raises(ValueError, match="Either `content` or `error`"):
        Message(_metadata(), content=RecordSet(), error=Error(0))
    with pytest.raises(TypeError, match="RecordSet"):
        Message(_metadata(), content={"a": 1})  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="Error"):
        Message(_metadata(), error="boom")  # type: ignore[arg-type]


def test_created_at_is_set_by_message() -> None:
    md = _metadata()
    before = time.time()
    Message(md, content=RecordSet())
    assert before <= md.created_at <= time.time()


def test_content_and_error_accessors() -> None:
    msg = Message(_metadata(), content=RecordSet())
    assert msg.has_content() and not msg.has_error()
    with pytest.raises(ValueError, match="has no error"):
        msg.error  # noqa: B018 - the property access itself must raise
    with pytest.raises(ValueError, match="cannot get an error"):
        msg.error = Error(0)
    new = RecordSet(metrics_records={"m": MetricsRecord({"a": 1})})
    msg.content = new
    assert msg.content is new
    with pytest.raises(TypeError, match="RecordSet"):
        msg.content = {}  # type: ignore[assignment]

    err = Message(_metadata(), error=Error(ErrorCode.CLIENT_APP_RAISED_EXCEPTION, "boom"))
    assert err.has_error() and not err.has_content()
    with pytest.raises(ValueError, match="no content.*CLIENT_APP_RAISED_EXCEPTION.*boom.*has_content"):
        err.content  # noqa: B018 - the property access itself must raise
    with pytest.raises(ValueError, match="cannot get content"):
        err.content = RecordSet()
    assert err.error == Error(2, "boom")


def test_reply_metadata_as_flower() -> None:
    msg = Message(_metadata(), content=RecordSet())
    reply = msg.create_reply(RecordSet())
    md = reply.metadata
    assert (md.run_id, md.message_id, md.src_node_id, md.dst_node_id) == (7, "", 42, 0)
    assert (md.reply_to_message, md.group_id, md.message_type, md.partition_id) == ("m-1", "round-1", "train", 3)
    # ttl = time left on the instruction
    assert 0 < md.ttl <= DEFAULT_TTL
    assert md.ttl == pytest.approx(DEFAULT_TTL - (md.created_at - msg.metadata.created_at))


def test_reply_ttl_is_time_left() -> None:
    msg = Message(_metadata(ttl=100.0), content=RecordSet())
    msg.metadata.created_at -= 40  # the instruction is 40 s old
    reply = msg.create_error_reply(Error(ErrorCode.UNKNOWN))
    assert reply.metadata.ttl == pytest.approx(60.0, abs=0.5)
    assert reply.has_error()


def test_explicit_reply_ttl_is_used_verbatim() -> None:
    msg = Message(_metadata(ttl=100.0), content=RecordSet())
    assert msg.create_reply(RecordSet(), ttl=5.5).metadata.ttl == 5.5


@pytest.mark.parametrize("make", ["create_reply", "create_error_reply"])
def test_reply_to_expired_instruction_raises(make: str) -> None:
    msg = Message(_metadata(ttl=10.0), content=RecordSet())
    msg.metadata.created_at -= 11
    arg = RecordSet() if make == "create_reply" else Error(ErrorCode.UNKNOWN)
    with pytest.raises(TTLExpiredError, match="'m-1'.*ran out") as info:
        getattr(msg, make)(arg)
    assert isinstance(info.value, ValueError) and isinstance(info.value, FlAsyncError)


@pytest.mark.parametrize("ttl", [0, -1.0, float("nan")])
def test_reply_with_non_positive_ttl_raises(ttl: float) -> None:
    msg = Message(_metadata(), content=RecordSet())
    with pytest.raises(TTLExpiredError, match="> 0"):
        msg.create_reply(RecordSet(), ttl=ttl)
    with pytest.raises(TTLExpiredError, match="> 0"):
        msg.create_error_reply(Error(0), ttl=ttl)


def test_metadata_and_error_equality_and_repr() -> None:
    a, b = _metadata(), _metadata()
    assert a == b
    b.group_id = "other"
    assert a != b
    assert "group_id='round-1'" in repr(a)
    assert Error(1, "x") == Error(1, "x") != Error(1, None)
    assert "LOAD_CLIENT_APP_EXCEPTION" in repr(Error(1))
    for name in ("run_id", "message_id", "src_node_id", "reply_to_message"):
        with pytest.raises(AttributeError):
            setattr(a, name, 1)


def test_context_defaults() -> None:
    ctx = Context()
    assert ctx.node_id == 0 and ctx.node_config == {} and ctx.run_config == {}
    assert ctx.state == RecordSet()
    assert Context().state is not ctx.state
