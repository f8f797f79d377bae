"""ClientApp: registration, dispatch, mods (sync/async mixes), threads, and the reply rules of run_client_app."""

from __future__ import annotations

import threading
import time

import anyio
import pytest

from fl_async.client import ClientApp
from fl_async.common import ConfigsRecord, Context, ErrorCode, Message, Metadata, MetricsRecord, RecordSet
from fl_async.supernode import check_reply, exception_reason, run_client_app


def instruction(message_type: str = "train", *, ttl: float = 60.0, message_id: str = "m1") -> Message:
    md = Metadata(
        run_id=5,
        message_id=message_id,
        src_node_id=0,
        dst_node_id=7,
        reply_to_message="",
        group_id="round-1",
        ttl=ttl,
        message_type=message_type,
    )
    return Message(md, content=RecordSet(configs_records={"cfg": ConfigsRecord({"x": 1})}))


def reply_with(msg: Message, value: float) -> Message:
    return msg.create_reply(RecordSet(metrics_records={"m": MetricsRecord({"v": value})}))


async def test_sync_and_async_handlers_dispatch_on_type() -> None:
    app = ClientApp()
    loop_thread = threading.get_ident()
    seen: dict[str, int] = {}

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        seen["train"] = threading.get_ident()
        return reply_with(msg, 1.0)

    @app.evaluate()
    async def evaluate(msg: Message, ctx: Context) -> Message:
        seen["evaluate"] = threading.get_ident()
        return reply_with(msg, 2.0)

    @app.query
    def query(msg: Message, ctx: Context) -> Message:  # decorator without parentheses works too
        return reply_with(msg, 3.0)

    ctx = Context()
    for mtype, value in (("train", 1.0), ("evaluate", 2.0), ("query", 3.0)):
        out = await app.acall(instruction(mtype), ctx)
        assert out.content.metrics_records["m"]["v"] == value
        assert out.metadata.reply_to_message == "m1"
    assert seen["train"] != loop_thread  # sync handler ran in a worker thread
    assert seen["evaluate"] == loop_thread  # async handler awaited on the loop
    assert set(app.message_types) == {"train", "evaluate", "query"}


async def test_handler_kinds_without_mods_run_where_they_belong_every_time() -> None:
    """Callable objects, partials and sync callables returning coroutines, called repeatedly (the kind of
    each callable is looked up once and remembered)."""
    import functools

    loop_thread = threading.get_ident()
    where: list[tuple[str, int]] = []

    class AsyncCallable:
        async def __call__(self, msg: Message, ctx: Context) -> Message:
            where.append(("object", threading.get_ident()))
            return reply_with(msg, 1.0)

    async def scaled(factor: float, msg: Message, ctx: Context) -> Message:
        where.append(("partial", threading.get_ident()))
        return reply_with(msg, factor)

    def returns_coroutine(msg: Message, ctx: Context):  # type: ignore[no-untyped-def]
        where.append(("sync", threading.get_ident()))
        return scaled(3.0, msg, ctx)

    app = ClientApp()
    app.train()(AsyncCallable())
    app.evaluate()(functools.partial(scaled, 2.0))
    app.query()(returns_coroutine)
    for _ in range(2):
        for mtype, value in (("train", 1.0), ("evaluate", 2.0), ("query", 3.0)):
            out = await app.acall(instruction(mtype), Context())
            assert out.content.metrics_records["m"]["v"] == value
    kinds = {(kind, tid == loop_thread) for kind, tid in where}
    assert kinds == {("object", True), ("partial", True), ("sync", False)}


async def test_missing_handler_and_unknown_type_raise_like_flower() -> None:
    app = ClientApp()
    with pytest.raises(ValueError, match="No `evaluate` function registered"):
        await app.acall(instruction("evaluate"), Context())
    with pytest.raises(ValueError, match="Unknown message_type: reconnect"):
        await app.acall(instruction("reconnect"), Context())


def test_bad_registration_arguments() -> None:
    app = ClientApp()
    with pytest.raises(TypeError, match="must decorate a callable"):
        app.train()(42)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="mods must be a list"):
        ClientApp(mods=lambda m, c, n: n(m, c))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=r"mods\[1\] is not callable"):
        ClientApp(mods=[lambda m, c, n: n(m, c), "x"])  # type: ignore[list-item]


def _sync_mod(tag: str, log: list[str]):
    def mod(msg: Message, ctx: Context, call_next):
        log.append(f"{tag}>")
        out = call_next(msg, ctx)
        assert isinstance(out, Message)
        log.append(f"<{tag}")
        return out

    return mod


def _async_mod(tag: str, log: list[str]):
    async def mod(msg: Message, ctx: Context, call_next):
        log.append(f"{tag}>")
        out = await call_next(msg, ctx)
        assert isinstance(out, Message)
        log.append(f"<{tag}")
        return out

    return mod


@pytest.mark.parametrize("kinds", ["ss", "aa", "sa", "as", "sas", "asa"])
@pytest.mark.parametrize("handler_async", [False, True])
async def test_mods_first_is_outermost_for_any_sync_async_mix(kinds: str, handler_async: bool) -> None:
    log: list[str] = []
    mods = [(_sync_mod if k == "s" else _async_mod)(f"{k}{i}", log) for i, k in enumerate(kinds)]
    app = ClientApp(mods=mods)
    if handler_async:

        @app.train()
        async def train(msg: Message, ctx: Context) -> Message:
            log.append("handler")
            return reply_with(msg, 1.0)

    else:

        @app.train()
        def train(msg: Message, ctx: Context) -> Message:
            log.append("handler")
            return reply_with(msg, 1.0)

    out = await app.acall(instruction(), Context())
    assert out.content.metrics_records["m"]["v"] == 1.0
    tags = [f"{k}{i}" for i, k in enumerate(kinds)]
    assert log == [f"{t}>" for t in tags] + ["handler"] + [f"<{t}" for t in reversed(tags)]


async def test_mod_can_short_circuit_and_rewrite() -> None:
    def deny(msg: Message, ctx: Context, call_next):
        if msg.metadata.message_type == "query":
            return reply_with(msg, -1.0)
        return call_next(msg, ctx)

    app = ClientApp(mods=[deny])

    @app.query()
    def query(msg: Message, ctx: Context) -> Message:
        raise AssertionError("not reached")

    out = await app.acall(instruction("query"), Context())
    assert out.content.metrics_records["m"]["v"] == -1.0


async def test_context_state_is_the_callers_object() -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        count = ctx.state.metrics_records.setdefault("c", MetricsRecord({"n": 0}))
        count["n"] += 1
        return reply_with(msg, float(count["n"]))

    ctx = Context(node_id=7)
    for expected in (1.0, 2.0, 3.0):
        out = await app.acall(instruction(), ctx)
        assert out.content.metrics_records["m"]["v"] == expected


async def test_cancelling_a_blocked_sync_handler_abandons_its_thread() -> None:
    app = ClientApp()
    started, release = threading.Event(), threading.Event()

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        started.set()
        release.wait(10)
        return reply_with(msg, 1.0)

    try:
        with anyio.fail_after(5):
            with anyio.move_on_after(0.2) as scope:
                await app.acall(instruction(), Context())
        assert scope.cancelled_caught and started.is_set()
    finally:
        release.set()


def test_sync_call_outside_an_event_loop() -> None:
    app = ClientApp()

    @app.train()
    async def train(msg: Message, ctx: Context) -> Message:
        return reply_with(msg, 4.0)

    assert app(instruction(), Context()).content.metrics_records["m"]["v"] == 4.0


async def test_sync_call_inside_an_event_loop_is_refused() -> None:
    with pytest.raises(RuntimeError, match="await app.acall"):
        ClientApp()(instruction(), Context())


# ------------------------------------------------------------------ run_client_app: reply rules


async def test_raising_handler_gives_flower_style_error_reply() -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        ctx.state.configs_records["touched"] = ConfigsRecord({"yes": True})
        raise RuntimeError("boom!")

    ctx = Context()
    out = await run_client_app(app, instruction(), ctx)
    assert out is not None and out.has_error()
    assert out.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert out.error.reason.startswith("<class 'RuntimeError'>:<'boom!'> (raised at ")  # Flower's, then where
    assert "test_client_app.py:" in out.error.reason
    assert out.metadata.reply_to_message == "m1" and out.metadata.dst_node_id == 0
    assert "touched" in ctx.state.configs_records  # changes before the exception persist (as Flower)


async def test_missing_handler_gives_error_reply() -> None:
    out = await run_client_app(ClientApp(), instruction("evaluate"), Context())
    assert out is not None and out.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert out.error.reason.startswith("<class 'ValueError'>:<'No `evaluate` function registered'> (raised at ")


@pytest.mark.parametrize(
    ("make", "fragment"),
    [
        (lambda m: None, "returned NoneType, expected a Message"),
        (lambda m: m, "message_id is 'm1', expected ''"),
        (lambda m: reply_with(instruction(message_id="other"), 1.0), "reply_to_message is 'other', expected 'm1'"),
        (
            lambda m: m.create_reply(RecordSet(), ttl=5.0).__class__(
                Metadata(5, "", 7, 0, "m1", "round-2", 5.0, "train"), content=RecordSet()
            ),
            "group_id is 'round-2'",
        ),
    ],
)
async def test_invalid_return_gives_invalid_reply_error(make, fragment: str) -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, ctx: Context):
        return make(msg)

    out = await run_client_app(app, instruction(), Context())
    assert out is not None and out.has_error()
    assert out.error.code == ErrorCode.INVALID_REPLY
    assert fragment in out.error.reason


def test_check_reply_accepts_a_proper_reply() -> None:
    msg = instruction()
    assert check_reply(msg, reply_with(msg, 1.0)) == []
    assert exception_reason(KeyError("k")) == "<class 'KeyError'>:<''k''>"


async def test_reply_to_an_expired_instruction_is_dropped() -> None:
    app = ClientApp()

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        return reply_with(msg, 1.0)

    msg = instruction(ttl=1.0)
    msg.metadata.created_at = time.time() - 2.0  # as if it had been created 2 s ago
    assert await run_client_app(app, msg, Context()) is None


async def test_sys_exit_in_a_handler_is_an_error_reply_not_a_node_exit() -> None:
    import sys

    app = ClientApp()

    @app.train()
    def train(msg: Message, ctx: Context) -> Message:
        sys.exit(3)

    out = await run_client_app(app, instruction(), Context())
    assert out is not None and out.error.code == ErrorCode.CLIENT_APP_RAISED_EXCEPTION
    assert out.error.reason.startswith("<class 'SystemExit'>:<'3'> (raised at ")
