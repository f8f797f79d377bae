"""Transport retries of the SDK: the backoff bounds and the one grpclib race mapped to a connection error."""

from __future__ import annotations

import pytest

from fl_async._grpc import from_grpc
from fl_async.errors import LinkConnectionError
from fl_async.server._transport import NOT_RETRIED, retry_pause


def test_retry_pause_is_jittered_and_capped() -> None:
    pauses = [retry_pause(n) for n in range(40)]
    assert all(0.025 <= p <= 2.0 for p in pauses)
    assert max(pauses[20:]) <= 2.0 and min(pauses[20:]) >= 1.0
    assert "PushMessages" not in NOT_RETRIED  # pushes carry a push id: a repeat is answered as the first


def test_grpclib_closed_connection_race_is_a_connection_error() -> None:
    try:
        exec(
            compile("raise AttributeError(\"'Connection' object has no attribute '_transport'\")", "grpclib/x", "exec")
        )
    except AttributeError as exc:
        assert isinstance(from_grpc(exc, what="Heartbeat to h:1"), LinkConnectionError)
    with pytest.raises(AttributeError, match="own bug"):  # any other AttributeError is not reworded
        try:
            raise AttributeError("own bug")
        except AttributeError as exc:
            from_grpc(exc, what="Heartbeat to h:1")
