"""ServerApp registration and running server apps (sync and async main) against a real link."""

from __future__ import annotations

import functools
import threading

import anyio
import anyio.to_thread
import pytest

from fl_async.common import ConfigsRecord, Context, MessageType, RecordSet
from fl_async.errors import AppLoadError, NoMainFunctionError
from fl_async.server import AsyncDriver, Driver, ServerApp, async_run_server_app, run_server_app
from tests.driver_fixtures import cluster, cluster_in_thread


def _sync_app() -> ServerApp:
    app = ServerApp()

    @app.main()
    def main(driver: Driver, context: Context) -> dict:
        assert isinstance(driver, Driver)
        msgs = [driver.create_message(RecordSet(), MessageType.TRAIN, n, "1") for n in driver.get_node_ids()]
        replies = driver.send_and_receive(msgs, timeout=10)
        return {"replies": len(replies), "config": context.run_config, "thread": threading.current_thread().name}

    return app


def _async_app() -> ServerApp:
    app = ServerApp()

    @app.main()
    async def main(driver: AsyncDriver, context: Context) -> dict:
        assert isinstance(driver, AsyncDriver)
        nodes = await driver.wait_for_nodes(2, timeout=10)
        msgs = [driver.create_message(RecordSet(), MessageType.TRAIN, n, "1") for n in nodes]
        replies = await driver.send_and_receive(msgs, timeout=10)
        return {"replies": len(replies), "config": context.run_config, "node_id": context.node_id}

    return app


def test_registration_rules() -> None:
    app = ServerApp()
    with pytest.raises(ValueError, match="no main function"):
        _ = app.is_async
    with pytest.raises(TypeError, match="driver, context"):
        app.main()(lambda driver: None)
    with pytest.raises(TypeError, match="function"):
        app.main()(42)  # type: ignore[arg-type]

    @app.main()
    def main(driver: Driver, context: Context) -> None: ...

    assert app.main_function is main and not app.is_async
    with pytest.raises(ValueError, match="already has a main"):
        app.main()(main)
    with pytest.raises(TypeError, match="expected a ServerApp"):
        run_server_app(object(), insecure=True)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="no main function"):
        run_server_app(ServerApp(), insecure=True)
    with pytest.raises(NoMainFunctionError, match="no main function"):  # an AppLoadError, raised before connecting
        run_server_app(ServerApp(), "127.0.0.1:1", insecure=True)
    assert issubclass(NoMainFunctionError, AppLoadError)


def test_run_server_app_sync_and_async_main() -> None:
    with cluster_in_thread(num_nodes=2) as (c, _portal):
        out = run_server_app(_sync_app(), c.link.driver_address, insecure=True, run_config={"k": 1})
        assert out["replies"] == 2 and out["config"] == {"k": 1}
        out = run_server_app(_async_app(), c.link.driver_address, insecure=True, run_config={"k": "v"})
        assert out == {"replies": 2, "config": {"k": "v"}, "node_id": 0}


async def test_async_run_server_app_runs_sync_main_off_the_loop() -> None:
    async with cluster(num_nodes=2) as c:
        # A sync main runs in a worker thread: the link in this very loop keeps serving it.
        with anyio.fail_after(30):
            out = await async_run_server_app(_sync_app(), c.link.driver_address, insecure=True, run_config={"a": 2})
        assert out["replies"] == 2 and out["config"] == {"a": 2}
        assert out["thread"] != threading.current_thread().name
        with anyio.fail_after(30):
            out = await async_run_server_app(_async_app(), c.link.driver_address, insecure=True)
        assert out["replies"] == 2


async def test_run_server_app_refuses_async_main_inside_a_loop() -> None:
    with pytest.raises(RuntimeError, match="async_run_server_app"):
        run_server_app(_async_app(), "127.0.0.1:9091", insecure=True)


async def test_cancelling_a_sync_main_closes_its_driver() -> None:
    async with cluster(num_nodes=1) as c:
        started = threading.Event()
        finished = threading.Event()
        app = ServerApp()

        @app.main()
        def main(driver: Driver, context: Context) -> None:
            ids = driver.push_messages(
                [
                    driver.create_message(
                        RecordSet(configs_records={"wait": ConfigsRecord({"event": "never"})}),
                        MessageType.QUERY,
                        driver.get_node_ids()[0],
                        "1",
                    )
                ]
            )
            started.set()
            try:
                while True:  # a main that never ends on its own
                    driver.pull_messages(ids, timeout=0.2)
            finally:
                finished.set()

        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                tg.start_soon(functools.partial(async_run_server_app, app, c.link.driver_address, insecure=True))
                await anyio.to_thread.run_sync(started.wait, 10)
                tg.cancel_scope.cancel()
            # the main's next driver call fails and its thread ends on its own
            assert await anyio.to_thread.run_sync(finished.wait, 10)
