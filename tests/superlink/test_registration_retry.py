"""A retried CreateNode (same ``registration_id``) gets the node its first attempt registered: no phantom nodes."""

from __future__ import annotations

import pytest
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from fl_async.proto.fl_async import v1 as pb
from fl_async.superlink import SuperLink
from fl_async.superlink.state import MAX_REGISTRATION_ID_BYTES, InvalidArgumentError, LinkState
from fl_async.testing.wire import RawDriver, channel

T0 = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> float:
        return self.now


def test_same_registration_id_answers_the_same_node_while_it_is_online() -> None:
    clock = Clock()
    state = LinkState(heartbeat_patience=2.0, min_heartbeat_interval=0.5, clock=clock)
    first = state.create_node(1.0, registration_id=b"attempt-1")
    assert state.create_node(1.0, registration_id=b"attempt-1") == first  # the retry: same id, same token
    other = state.create_node(1.0, registration_id=b"attempt-2")
    plain = [state.create_node(1.0)[0] for _ in range(2)]  # no registration id: always a new node
    assert len({first[0], other[0], *plain}) == 4
    assert state.stats().nodes == 4

    clock.now += 1.5  # the retry was a sign of life: the node stays online past its first deadline
    assert state.create_node(1.0, registration_id=b"attempt-1")[0] == first[0]
    clock.now += 1.9
    assert state.store.get_node(first[0]) is not None

    state.delete_node(pb.NodeAuth(node_id=first[0], token=first[1]))  # gone: the id registers a new node
    again = state.create_node(1.0, registration_id=b"attempt-1")
    assert again[0] != first[0] and state.create_node(1.0, registration_id=b"attempt-1") == again

    clock.now += 10  # offline by silence: forgotten with the node
    state.advance()
    assert state.create_node(1.0, registration_id=b"attempt-1")[0] != again[0]


def test_registration_id_length_is_bounded() -> None:
    state = LinkState()
    state.create_node(1.0, registration_id=b"x" * MAX_REGISTRATION_ID_BYTES)
    with pytest.raises(InvalidArgumentError, match="registration_id"):
        state.create_node(1.0, registration_id=b"x" * (MAX_REGISTRATION_ID_BYTES + 1))
    assert state.stats().nodes == 1


async def test_retried_create_node_over_grpc_registers_one_node(superlink: SuperLink) -> None:
    fleet_channel, driver_channel = channel(superlink.fleet_address), channel(superlink.driver_address)
    try:
        fleet = pb.FleetStub(fleet_channel)
        request = pb.CreateNodeRequest(heartbeat_interval=5.0, registration_id=b"0123456789abcdef")
        first = await fleet.create_node(request)
        second = await fleet.create_node(request)
        assert (second.node_id, second.token) == (first.node_id, first.token)
        driver = await RawDriver.create(pb.DriverStub(driver_channel))
        assert await driver.node_ids() == [first.node_id]
        with pytest.raises(GRPCError) as info:
            await fleet.create_node(pb.CreateNodeRequest(heartbeat_interval=5.0, registration_id=b"x" * 65))
        assert info.value.status is Status.INVALID_ARGUMENT
    finally:
        fleet_channel.close()
        driver_channel.close()


def test_a_keyed_node_retrying_gets_its_registration_and_a_second_session_is_still_refused() -> None:
    from fl_async.superlink.errors import AlreadyExistsError

    state = LinkState()
    first = state.create_node(1.0, node_id=77, public_key=b"key", registration_id=b"attempt")
    assert state.create_node(1.0, node_id=77, public_key=b"key", registration_id=b"attempt") == first
    with pytest.raises(AlreadyExistsError):  # same key, another registration: a second session
        state.create_node(1.0, node_id=77, public_key=b"key", registration_id=b"other")
    # another key cannot borrow the registration id's node: it registers as its own
    assert state.create_node(1.0, node_id=78, public_key=b"key2", registration_id=b"attempt")[0] == 78
