"""The node's pre-encoded Fleet requests are byte-identical to betterproto2's (sans-IO)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from fl_async.codec import message_to_proto
from fl_async.common import (
    ConfigsRecord,
    Error,
    Message,
    Metadata,
    MetricsRecord,
    RecordSet,
)
from fl_async.proto.fl_async import v1 as pb
from fl_async.supernode._wire import (
    Encoded,
    auth_field,
    message_bytes,
    pull_request,
    push_request,
)

sint64 = st.integers(-(2**63), 2**63 - 1)
uint64 = st.integers(0, 2**64 - 1) | st.sampled_from([1, 2**63, 2**64 - 1])
uint32 = st.integers(0, 2**32 - 1)
doubles = st.floats(allow_nan=False) | st.sampled_from([0.0, -0.0, 1e-300, float("inf")])
auths = st.builds(pb.NodeAuth, node_id=uint64, token=st.binary(max_size=300))
metadata = st.builds(
    pb.Metadata,
    run_id=uint64,
    message_id=st.text(max_size=40),
    src_node_id=uint64,
    dst_node_id=uint64,
    reply_to_message=st.text(max_size=200),
    group_id=st.text(max_size=10),
    ttl=doubles,
    message_type=st.text(max_size=20),
    created_at=doubles,
)
errors = st.builds(pb.Error, code=sint64, reason=st.text(max_size=50))
contents = st.sampled_from(
    [
        pb.RecordSet(),
        message_to_proto(
            Message(
                Metadata(1, "", 0, 2, "", "g", 5.0, "train"),
                content=RecordSet(
                    metrics_records={"m": MetricsRecord({"a": 0.5, "n": 3})},
                    configs_records={"c": ConfigsRecord({"s": "x"})},
                ),
            )
        ).content,
    ]
)
messages = st.builds(pb.Message, metadata=st.none() | metadata, content=st.none() | contents, error=st.none() | errors)


@given(auths, uint32, doubles)
def test_pull_request_matches_betterproto2(auth: pb.NodeAuth, max_messages: int, timeout: float) -> None:
    expected = bytes(pb.PullInstructionsRequest(auth=auth, max_messages=max_messages, timeout=timeout))
    assert pull_request(auth_field(auth), max_messages, timeout) == expected


@given(auths, st.lists(messages, max_size=3), uint32, doubles)
def test_push_request_matches_betterproto2(
    auth: pb.NodeAuth, msgs: list[pb.Message], pull_max: int, pull_timeout: float
) -> None:
    expected = bytes(
        pb.PushRepliesRequest(auth=auth, messages=msgs, pull_max_messages=pull_max, pull_timeout=pull_timeout)
    )
    got = push_request(auth_field(auth), [message_bytes(m) for m in msgs], pull_max, pull_timeout)
    assert got == expected
    assert pb.PushRepliesRequest.parse(got) == pb.PushRepliesRequest.parse(expected)


@given(messages)
def test_message_bytes_matches_betterproto2(message: pb.Message) -> None:
    assert message_bytes(message) == bytes(message)


def test_codec_replies_and_nan_fields_match() -> None:
    for reply in (
        Message(Metadata(7, "", 3, 0, "m1", "1", 10.0, "train"), content=RecordSet()),
        Message(Metadata(7, "", 3, 0, "m1", "1", 10.0, "train"), error=Error(2, "boom")),
    ):
        wire = message_to_proto(reply)
        assert message_bytes(wire) == bytes(wire)
    nan = pb.Message(metadata=pb.Metadata(ttl=float("nan"), created_at=float("nan")), content=pb.RecordSet())
    assert message_bytes(nan) == bytes(nan)


def test_encoded_is_sent_as_is() -> None:
    enc = Encoded(b"\x08\x01")
    assert enc.SerializeToString() == b"\x08\x01" and len(enc) == 2
