"""Admin API calls go through the link's admission (credentials from headers, anonymous size limit), and a
stopped run still ends by its idle TTL. Real link on 127.0.0.1; the lifetime case on a sans-IO LinkState."""

from __future__ import annotations

import grpclib.client
import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from fl_async.common import ErrorCode
from fl_async.proto.fl_async import v1 as pb
from fl_async.server import AsyncDriver
from fl_async.superlink.control import LinkControl
from fl_async.superlink.state import LinkState
from tests.driver_fixtures import cluster
from tests.superlink.test_link_state import T0, Clock, Recorder, node, push_one


async def test_admin_calls_pass_the_links_admission() -> None:
    async with cluster(num_nodes=1) as c, AsyncDriver(c.link.driver_address, insecure=True) as driver:
        big = pb.CancelMessagesRequest(run_id=driver.run_id, message_ids=["x" * 1000] * 100)  # ~100 KiB
        host, port = c.link.driver_address.rsplit(":", 1)
        channel = grpclib.client.Channel(host, int(port))
        try:
            anonymous = pb.AdminStub(channel)
            with pytest.raises(GRPCError) as refused:  # over the anonymous limit (64 KiB): refused from the header
                await anonymous.cancel_messages(big)
            assert refused.value.status is Status.RESOURCE_EXHAUSTED
            small = await anonymous.list_runs(pb.ListRunsRequest())  # small anonymous calls still work
            assert [r.run_id for r in small.runs] == [driver.run_id]
            creds = driver._transport.credentials  # type: ignore[union-attr]
            assert creds is not None
            ok = await anonymous.cancel_messages(big, metadata=creds)  # the run's own credentials: larger limit
            assert list(ok.cancelled) == []
            with pytest.raises(GRPCError) as other:  # credentials of one run, body naming another
                await anonymous.stop_run(pb.StopRunRequest(run_id=driver.run_id ^ 1), metadata=creds)
            assert other.value.status is Status.UNAUTHENTICATED
        finally:
            channel.close()


def test_stopped_run_ends_by_its_idle_ttl() -> None:
    clock = Clock()
    state = LinkState(heartbeat_patience=2.0, clock=clock, listener=Recorder(), run_idle_ttl=100.0)
    auth = node(state, interval=1000.0)
    run_id = state.create_run()
    state.touch_run(run_id)
    queued = push_one(state, run_id, auth)
    assert LinkControl(state).stop_run(run_id) == (1, False)
    ins = state.store.get_instruction(queued)
    assert ins is not None and ins.reply is not None and ins.reply.error is not None
    assert ins.reply.error.code == ErrorCode.CANCELLED
    clock.now = T0 + 101  # the stopped run's driver makes no more calls: the run ends and frees its reply
    state.advance()
    assert state.store.get_run(run_id) is None and state.store.get_instruction(queued) is None
