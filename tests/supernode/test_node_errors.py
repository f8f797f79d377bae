"""SuperNode: every instruction it accepted ends in one reply, also when the ClientApp's reply cannot be encoded
or the node itself fails while handling it (trial report, defect 1)."""

from __future__ import annotations

import logging

import anyio

from fl_async.client import ClientApp
from fl_async.common import (
    Array,
    Context,
    ErrorCode,
    Message,
    MetricsRecord,
    ParametersRecord,
    RecordSet,
)
from fl_async.proto.fl_async import v1 as pb
from fl_async.supernode import SuperNode
from fl_async.supernode._instructions import InstructionHandler
from fl_async.testing.wire import RawDriver


def unencodable_app() -> ClientApp:
    """train: an Array whose payload does not match dtype x shape; query: a metrics list mutated to mix types;
    evaluate: a valid reply."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        bad = Array(dtype="float32", shape=[10], stype="numpy.ndarray", data=b"abc")  # 3 bytes, 40 needed
        return msg.create_reply(RecordSet(parameters_records={"p": ParametersRecord({"a": bad})}))

    @app.query()
    def query(msg: Message, ctx: Context) -> Message:
        rec = MetricsRecord({"acc": [1, 2]})
        rec["acc"].append("x")  # the record keeps the caller's list
        return msg.create_reply(RecordSet(metrics_records={"m": rec}))

    @app.evaluate()
    def evaluate(msg: Message, ctx: Context) -> Message:
        return msg.create_reply(RecordSet(metrics_records={"m": MetricsRecord({"ok": 1})}))

    return app


async def test_reply_that_cannot_be_encoded_becomes_an_invalid_reply_error_at_once(superlink, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="fl_async.supernode")
    async with (
        RawDriver(superlink.driver_address) as drv,
        SuperNode(unencodable_app(), superlink.fleet_address, insecure=True) as node,
    ):
        node_id = await node.wait_registered(timeout=5)
        run = await drv.create_run()
        with anyio.fail_after(5):  # at once, not at the instruction's TTL (60 s)
            array = await drv.reply(run, await drv.push_message(run, node_id, "train"))
            mixed = await drv.reply(run, await drv.push_message(run, node_id, "query"))
            ok = await drv.reply(run, await drv.push_message(run, node_id, "evaluate"))  # still serving
    assert array.error.code == ErrorCode.INVALID_REPLY
    assert "cannot be encoded" in array.error.reason and "'p/a'" in array.error.reason
    assert "3 bytes" in array.error.reason
    assert mixed.error.code == ErrorCode.INVALID_REPLY
    assert "'m'" in mixed.error.reason and "'acc'" in mixed.error.reason and "str" in mixed.error.reason
    assert ok.has_content() and ok.content.metrics_records["m"]["ok"] == 1
    assert not any(r.exc_info for r in caplog.records)  # an expected failure: one line, no traceback


class _BrokenHandler(InstructionHandler):
    """Fault injection: the node's own decoding step fails with an unexpected error for 'train' instructions."""

    def _decode(self, wire, blobs=None):  # type: ignore[no-untyped-def]
        if wire.metadata is not None and wire.metadata.message_type == "train":
            raise RuntimeError("injected node failure")
        return super()._decode(wire, blobs)


class _BrokenNode(SuperNode):
    """A SuperNode whose instruction handler is :class:`_BrokenHandler`."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._instructions = _BrokenHandler(self)


async def test_unexpected_node_failure_still_answers_the_instruction(superlink, caplog) -> None:
    caplog.set_level(logging.ERROR, logger="fl_async.supernode")
    async with (
        RawDriver(superlink.driver_address) as drv,
        _BrokenNode(unencodable_app(), superlink.fleet_address, insecure=True) as node,
    ):
        node_id = await node.wait_registered(timeout=5)
        run = await drv.create_run()
        with anyio.fail_after(5):
            failed = await drv.reply(run, await drv.push_message(run, node_id, "train"))
            ok = await drv.reply(run, await drv.push_message(run, node_id, "evaluate"))
    assert failed.error.code == ErrorCode.UNKNOWN
    assert "RuntimeError" in failed.error.reason and "injected node failure" in failed.error.reason
    assert ok.has_content()
    assert any("injected node failure" in r.getMessage() or r.exc_info for r in caplog.records)


async def test_link_logs_a_resent_reply_at_info_and_a_bad_one_at_warning(superlink, caplog) -> None:
    """A node re-sending a reply after a broken push (the link stored the first copy) is normal: INFO."""
    from fl_async.testing.wire import RawDriver as WireDriver
    from fl_async.testing.wire import RawNode, channel, instruction, reply_to

    caplog.set_level(logging.INFO, logger="fl_async.superlink")
    fleet, drv_ch = channel(superlink.fleet_address), channel(superlink.driver_address)
    try:
        node = await RawNode.create(pb.FleetStub(fleet))
        drv = await WireDriver.create(pb.DriverStub(drv_ch))
        await drv.push([instruction(drv.run_id, node.node_id), instruction(drv.run_id, node.node_id)])
        first, second = await node.pull(max_messages=2)
        reply = reply_to(first)
        assert (await node.reply([reply])).message_ids[0]
        assert not (await node.reply([reply])).message_ids[0]  # the same reply again, still stored
        assert len(await drv.pull([first.metadata.message_id])) == 1
        assert not (await node.reply([reply])).message_ids[0]  # again, after the driver took the first copy
        assert not (await node.reply([reply_to(second, run_id=drv.run_id + 1)])).message_ids[0]  # a bad reply
    finally:
        fleet.close()
        drv_ch.close()
    refused = [r for r in caplog.records if "refused" in r.getMessage()]
    assert [r.levelno for r in refused] == [logging.INFO, logging.INFO, logging.WARNING], [
        (r.levelname, r.getMessage()) for r in refused
    ]
