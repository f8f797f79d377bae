"""The driver's sans-IO core: argument checks, message building/validation, wire mapping, deadlines."""

from __future__ import annotations

import logging
import math
import time

import numpy as np
import pytest

from fl_async import codec
from fl_async.common import DEFAULT_TTL, ErrorCode, FlAsyncError, Message, MessageType, Metadata, RecordSet
from fl_async.proto.fl_async import v1 as pb
from fl_async.server import _base as base

RUN = 7


def _msg(**overrides: object) -> Message:
    fields = dict(
        run_id=RUN,
        message_id="",
        src_node_id=0,
        dst_node_id=3,
        reply_to_message="",
        group_id="1",
        ttl=60.0,
        message_type=MessageType.TRAIN,
    )
    fields.update(overrides)
    return Message(Metadata(**fields), content=RecordSet())  # type: ignore[arg-type]


def _args(**kw: object) -> base.ConnectArgs:
    defaults: dict[str, object] = dict(
        insecure=True, root_certificates=None, run_config=None, fab_id="", fab_version=""
    )
    defaults.update(kw)
    return base.check_connect_args("127.0.0.1:9091", **defaults)  # type: ignore[arg-type]


class TestConnectArgs:
    def test_valid(self) -> None:
        args = _args(run_config={"lr": np.float64(0.5), "n": 3})
        assert (args.host, args.port) == ("127.0.0.1", 9091)
        assert args.run_config == {"lr": 0.5, "n": 3} and type(args.run_config["lr"]) is float
        assert _args(insecure=False, root_certificates=b"-----BEGIN CERTIFICATE-----").root_certificates

    @pytest.mark.parametrize(
        ("kw", "exc", "match"),
        [
            (dict(insecure=False), ValueError, "no transport security"),
            (dict(root_certificates=b"pem"), ValueError, "not both"),
            (dict(insecure="yes"), TypeError, "insecure must be a bool"),
            (dict(insecure=False, root_certificates=42), TypeError, "root_certificates"),
            (dict(run_config=[("a", 1)]), TypeError, "run_config must be a mapping"),
            (dict(run_config={"a": {"nested": 1}}), TypeError, "'a'"),
            (dict(run_config={"big": 2**70}), ValueError, "big"),
            (dict(fab_id=1), TypeError, "fab_id"),
        ],
    )
    def test_refusals(self, kw: dict, exc: type, match: str) -> None:
        with pytest.raises(exc, match=match):
            _args(**kw)

    @pytest.mark.parametrize("address", ["", "host", "host:", "host:99999", "::1:9091", "127.0.0.1:0"])
    def test_bad_addresses(self, address: str) -> None:
        with pytest.raises(ValueError, match="address"):
            base.check_connect_args(
                address, insecure=True, root_certificates=None, run_config=None, fab_id="", fab_version=""
            )


class TestBuildMessage:
    def test_flower_metadata(self) -> None:
        msg = base.build_message(RUN, RecordSet(), MessageType.TRAIN, 5, "2", None)
        md = msg.metadata
        assert (
            md.run_id,
            md.message_id,
            md.src_node_id,
            md.dst_node_id,
            md.reply_to_message,
            md.group_id,
            md.ttl,
            md.message_type,
        ) == (RUN, "", 0, 5, "", "2", DEFAULT_TTL, "train")
        assert md.created_at == pytest.approx(time.time(), abs=5)
        assert base.build_message(RUN, RecordSet(), "custom", np.int64(9), "g", 1.5).metadata.dst_node_id == 9

    @pytest.mark.parametrize(
        ("args", "exc", "match"),
        [
            (({"x": 1}, "train", 1, "g", None), TypeError, "RecordSet"),
            ((RecordSet(), "", 1, "g", None), ValueError, "message_type"),
            ((RecordSet(), 3, 1, "g", None), TypeError, "message_type"),
            ((RecordSet(), "train", "1", "g", None), TypeError, "dst_node_id"),
            ((RecordSet(), "train", 2**64, "g", None), ValueError, "dst_node_id"),
            ((RecordSet(), "train", 0, "g", None), ValueError, "dst_node_id must name a node"),
            ((RecordSet(), "train", -1, "g", None), ValueError, "dst_node_id"),
            ((RecordSet(), "train", 1, 2, None), TypeError, "group_id"),
            ((RecordSet(), "train", 1, "g", 0), ValueError, "ttl"),
            ((RecordSet(), "train", 1, "g", -1.0), ValueError, "ttl"),
            ((RecordSet(), "train", 1, "g", math.inf), ValueError, "ttl"),
            ((RecordSet(), "train", 1, "g", "60"), TypeError, "ttl"),
        ],
    )
    def test_refusals(self, args: tuple, exc: type, match: str) -> None:
        with pytest.raises(exc, match=match):
            base.build_message(RUN, *args)


class TestValidateForPush:
    def test_valid_batch_passes_unchanged(self) -> None:
        msgs = [_msg(), _msg(dst_node_id=4)]
        assert base.validate_for_push(RUN, iter(msgs)) == msgs

    @pytest.mark.parametrize(
        ("overrides", "match"),
        [
            (dict(run_id=8), "run_id 8 is not this driver's run 7"),
            (dict(src_node_id=3), "src_node_id must be 0"),
            (dict(message_id="abc"), "message_id is already set"),
            (dict(reply_to_message="abc"), "reply_to_message must be empty"),
            (dict(ttl=0), "ttl must be"),
            (dict(ttl=-5.0), "ttl must be"),
            (dict(ttl=math.nan), "ttl must be"),
        ],
    )
    def test_invalid_message_names_item_and_rule(self, overrides: dict, match: str) -> None:
        with pytest.raises(ValueError, match=rf"Invalid message: item 1 \(to node 3\): {match}"):
            base.validate_for_push(RUN, [_msg(dst_node_id=4), _msg(**overrides)])

    def test_types(self) -> None:
        with pytest.raises(TypeError, match="single Message"):
            base.validate_for_push(RUN, _msg())  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="iterable"):
            base.validate_for_push(RUN, 3)  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="item 0 is a dict"):
            base.validate_for_push(RUN, [{}])  # type: ignore[list-item]


class TestWire:
    def test_push_request_and_response(self, caplog: pytest.LogCaptureFixture) -> None:
        msgs = [_msg(), _msg(dst_node_id=99)]
        req = base.push_request(RUN, msgs)
        assert req.run_id == RUN and [m.metadata.dst_node_id for m in req.messages] == [3, 99]
        resp = pb.PushMessagesResponse(message_ids=["id-1", ""], reasons=["", "node 99 is not online"])
        with caplog.at_level(logging.WARNING, logger="fl_async.server"):
            assert base.read_push_response(resp, msgs) == ["id-1", ""]
        assert "node 99 is not online" in caplog.text
        with pytest.raises(FlAsyncError, match="1 message ids for 2"):
            base.read_push_response(pb.PushMessagesResponse(message_ids=["x"]), msgs)

    def test_decode_replies_keeps_undecodable_as_error(self) -> None:
        good = codec.message_to_proto(_msg(src_node_id=3, message_id="r1", reply_to_message="m1", dst_node_id=0))
        md = codec.metadata_to_proto(Metadata(RUN, "r2", 4, 0, "m2", "1", 60.0, "train"))
        broken = pb.Message(
            metadata=md,
            content=pb.RecordSet(
                parameters=[pb.ParametersRecord(name="p", keys=["a", "b"], arrays=[pb.Array(dtype="float32")])]
            ),
        )
        out = base.decode_replies(pb.PullMessagesResponse(messages=[good, broken]))
        assert [m.metadata.reply_to_message for m in out] == ["m1", "m2"]
        assert out[0].has_content()
        assert out[1].has_error() and out[1].error.code == ErrorCode.INVALID_REPLY
        assert "undecodable" in (out[1].error.reason or "")

    def test_normalize_ids(self) -> None:
        assert base.normalize_ids(["a", "", "b", "a"]) == ["a", "b"]
        assert base.normalize_ids(iter(())) == []
        with pytest.raises(TypeError, match="single string"):
            base.normalize_ids("abc")
        with pytest.raises(TypeError, match=r"message_ids\[1\] is a int"):
            base.normalize_ids(["a", 1])  # type: ignore[list-item]


class TestDeadline:
    def test_infinite_and_finite(self) -> None:
        forever = base.Deadline(None)
        assert forever.infinite and forever.remaining() == math.inf and not forever.expired()
        assert forever.wait_slice() == base.MAX_WAIT_PER_CALL
        soon = base.Deadline(0.5)
        assert 0.4 < soon.remaining() <= 0.5 and soon.wait_slice() <= 0.5
        assert base.Deadline(0).expired()

    @pytest.mark.parametrize(
        ("value", "exc"), [(-1, ValueError), (math.nan, ValueError), ("1", TypeError), (True, TypeError)]
    )
    def test_refusals(self, value: object, exc: type) -> None:
        with pytest.raises(exc):
            base.Deadline(value)  # type: ignore[arg-type]


def test_still_waiting_follows_the_links_outstanding_list() -> None:
    reply = pb.Message(metadata=pb.Metadata(reply_to_message="a"), content=pb.RecordSet())
    wanted = ["a", "b", "c", "unknown"]
    resp = pb.PullMessagesResponse(messages=[reply], outstanding=["c", "b", "zzz"])
    assert base.still_waiting(wanted, resp) == ["b", "c"]  # request order; unknown and answered ids dropped
    assert base.still_waiting(wanted, pb.PullMessagesResponse(messages=[reply])) == []  # none outstanding
    # a link answering a reply and listing it as outstanding (it must not): the reply wins
    assert base.still_waiting(["a"], pb.PullMessagesResponse(messages=[reply], outstanding=["a"])) == []


def test_poll_pause_only_paces_early_empty_answers() -> None:
    assert base.poll_pause(0.001, 5.0, 10.0) == pytest.approx(base.POLL_PAUSE - 0.001)
    assert base.poll_pause(0.001, 5.0, 0.002) == 0.002  # never beyond the deadline
    assert base.poll_pause(base.POLL_PAUSE, 5.0, 10.0) == 0.0  # the link held the call: poll again at once
    assert base.poll_pause(0.0, 0.0, 10.0) == 0.0  # no wait was asked for
    assert not hasattr(base, "IMMEDIATE")  # the old timing heuristic is gone


@pytest.mark.parametrize("value", [-1, 0, math.nan])
def test_call_timeout_refusals_state_one_bound(value: float) -> None:
    """call_timeout=-1 and =0 are refused with the same bound in the message (> 0 seconds)."""
    from fl_async.server import AsyncDriver

    with pytest.raises(ValueError, match=r"call_timeout must be > 0 seconds, got"):
        AsyncDriver("127.0.0.1:9091", insecure=True, call_timeout=value)
    assert base.check_timeout(0, "timeout") == 0.0
