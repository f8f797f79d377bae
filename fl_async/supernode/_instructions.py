"""Instruction handling of the node runtime (composed into :class:`~fl_async.supernode.SuperNode`): decode an
instruction, run the ClientApp on it, push the reply -- pulling the next instructions in the same call when no
other pull is in flight -- and run what that call brought in the same task.

The slot bookkeeping (``_take_slot``, ``_release_slot``, ``_wake_puller``), the session (``_session``,
``_current_session``) and the connection live in :mod:`fl_async.supernode.supernode`; error replies are built
by :mod:`fl_async.supernode.replies`.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import anyio

from fl_async._fastwire import message_bytes, push_request
from fl_async.blobs import transfer as _blobs
from fl_async.codec import config_from_proto, inline_limit_for, message_from_proto, message_to_proto
from fl_async.common.cancel import CancelToken, reset_current, set_current
from fl_async.common.context import Context
from fl_async.common.message import ErrorCode, Message
from fl_async.common.records import RecordSet
from fl_async.errors import (
    FlAsyncError,
    IntegrityError,
    LinkConnectionError,
    LinkTimeoutError,
    NotAuthorizedError,
    ResourceExhaustedError,
)
from fl_async.proto.fl_async import v1 as pb
from fl_async.supernode._dispatch import run_client_app
from fl_async.supernode._session import _PayloadRefused, _Session
from fl_async.supernode.replies import error_reply, payload_error_reply, wire_error_reply

if TYPE_CHECKING:
    from fl_async.supernode.supernode import SuperNode

__all__ = ["InstructionHandler"]

logger = logging.getLogger("fl_async.supernode")

_MAYBE_DELIVERED = (
    " (sent again after the connection broke during an earlier attempt, which the link most "
    "likely received: a push that also pulls stays open until an instruction comes)"
)
_TTL_MARGIN = 5.0
"""A push pulls only for as long as its reply's TTL leaves at least this many seconds (so the TTL never cuts
the call short while it waits for instructions)."""


class InstructionHandler:
    """Per-instruction work of one :class:`~fl_async.supernode.SuperNode` (see the module docstring).

    The node owns one and calls :meth:`handle` for each instruction it pulled (holding a slot for it); the
    handler reads the node's connection state (session, slots, blob client) through ``node``. It also tracks
    the instructions being handled so that the link can cancel them (:meth:`cancelled_by_link`).

    Args:
        node: the SuperNode this handler works for.
    """

    def __init__(self, node: SuperNode) -> None:
        self._node = node
        self._running: dict[str, tuple[anyio.CancelScope, CancelToken]] = {}  # message id -> its handling
        self._cancelled_early: collections.OrderedDict[str, None] = collections.OrderedDict()

    def _decode(self, wire: pb.Message, blobs: Mapping[bytes, Any] | None = None) -> Message:
        """The one place the node decodes instructions; ``blobs`` holds fetched, verified payloads."""
        return message_from_proto(wire, blobs=blobs, verify=not blobs)

    def _encode(self, message: Message, blobs: dict[bytes, Any] | None = None) -> pb.Message:
        """The one place the node encodes replies; large arrays go to ``blobs`` when given."""
        if blobs is None:
            return message_to_proto(message)
        return message_to_proto(message, blobs=blobs, inline_limit=inline_limit_for([message]))

    async def handle(self, wire: pb.Message, sess: _Session) -> None:
        """Handle one instruction (its slot is taken); then, if the reply's push pulled more, the first of
        them in this same task (no new task per instruction) and the others in new tasks.

        Every instruction ends in exactly one pushed reply (or error reply), or in a logged reason why none
        can be sent (TTL over, registration forgotten by the link): an unexpected failure of the node itself
        while handling one becomes an error reply ``UNKNOWN`` naming it, so the server app never waits for
        the TTL because of it.
        """
        holding = True
        try:
            while True:
                try:
                    reply = await self._reply_for(wire, sess)
                except Exception as exc:
                    reply = self._failure_reply(wire, sess, "handling", exc)
                if reply is None:
                    return
                try:
                    holding, wires, pulled_on = await self._push(reply)
                except Exception as exc:
                    holding, wires, pulled_on = True, [], None
                    fallback = (
                        None if reply.has_error() else self._failure_reply(wire, sess, "pushing the reply to", exc)
                    )
                    if fallback is None:
                        logger.error(
                            "node %s: no reply to instruction %s will be sent (the link reports it "
                            "expired at its TTL): %s: %s",
                            sess.node_id,
                            reply.metadata.reply_to_message,
                            type(exc).__name__,
                            exc,
                        )
                    else:
                        holding, wires, pulled_on = await self._push(fallback)
                if not wires or pulled_on is None:
                    return
                for _ in wires:
                    self._node._take_slot()
                holding, wire, sess = True, wires[0], pulled_on
                for other in wires[1:]:
                    self._node._tg.start_soon(self.handle, other, sess)
        except Exception:  # last resort (the fallback push failed): keep serving the others
            logger.exception(
                "node %s: unexpected error while handling an instruction; no reply sent for it", sess.node_id
            )
        finally:
            if holding:
                self._node._release_slot()

    def _failure_reply(self, wire: pb.Message, sess: _Session, doing: str, exc: Exception) -> Message | None:
        """The error reply ``UNKNOWN`` to ``wire`` after the node itself failed while ``doing`` it (logged with
        its traceback: a bug in fl-async), or ``None`` if none can be built (logged)."""
        mid = wire.metadata.message_id if wire.metadata is not None else "?"
        logger.error(
            "node %s: unexpected error while %s instruction %s; sending an error reply",
            sess.node_id,
            doing,
            mid,
            exc_info=exc,
        )
        return wire_error_reply(
            wire, ErrorCode.UNKNOWN, f"node failed while {doing} the instruction: {type(exc).__name__}: {exc}"
        )

    async def _reply_for(self, wire: pb.Message, sess: _Session) -> Message | None:
        """Decode the instruction and run the ClientApp on it: the reply (or error reply) to push, or ``None``."""
        client = self._node._blob_client
        blobs = (await _blobs.fetch_blobs(client, [wire]))[0] if client is not None else {}
        try:
            message = self._decode(wire, blobs)
        except (ValueError, TypeError, IntegrityError) as exc:
            return self._undecodable_reply(wire, exc)
        return await self._process(message, sess)

    def _undecodable_reply(self, wire: pb.Message, exc: Exception) -> Message | None:
        mid = wire.metadata.message_id if wire.metadata is not None else "?"
        logger.error("node: cannot decode instruction %s: %s", mid, exc)
        code = ErrorCode.PAYLOAD_UNAVAILABLE if isinstance(exc, IntegrityError) else ErrorCode.UNKNOWN
        return wire_error_reply(wire, code, f"node could not decode the instruction: {exc}")

    async def _process(self, message: Message, sess: _Session) -> Message | None:
        md = message.metadata
        if md.dst_node_id != sess.node_id:
            logger.warning(
                "node %s: dropping message %s addressed to node %s", sess.node_id, md.message_id, md.dst_node_id
            )
            return None
        if message.has_error():
            logger.warning(
                "node %s: dropping instruction %s that carries an error (%r)",
                sess.node_id,
                md.message_id,
                message.error,
            )
            return None
        try:
            context = await self._context_for(md.run_id, sess)
        except FlAsyncError as exc:
            if isinstance(exc, (LinkConnectionError, LinkTimeoutError, NotAuthorizedError)):
                sess.fail(exc)
            return error_reply(message, ErrorCode.UNKNOWN, f"node could not fetch run {md.run_id}: {exc}")
        return await self._run_cancellable(message, context)

    async def _run_cancellable(self, message: Message, context: Context) -> Message | None:
        """Run the ClientApp on ``message`` so that the link can cancel it (see :meth:`cancelled_by_link`):
        an ``async def`` handler is cancelled, a sync one sees ``context.cancelled``; either way no reply is sent
        (the driver already has a CANCELLED error reply)."""
        mid = message.metadata.message_id
        token = CancelToken()
        scope = anyio.CancelScope()
        if self._cancelled_early.pop(mid, None) is not None:
            token.cancel()
            scope.cancel()
        self._running[mid] = (scope, token)
        reset = set_current(token)
        reply: Message | None = None
        try:
            with scope:
                reply = await run_client_app(self._node._app, message, context, limiter=self._node._limiter)
        finally:
            self._running.pop(mid, None)
            reset_current(reset)
        if token.cancelled:
            logger.info("message %s (%s): cancelled by the driver; no reply sent", mid, message.metadata.message_type)
            return None
        return reply

    def cancelled_by_link(self, message_ids: list[str]) -> None:
        """The link reports these in-flight instructions cancelled (``message_ids``): stop their handling (or, if
        it has not started yet, refuse it when it does; the last 1,024 such ids are remembered). Called by the
        node's :class:`~fl_async.supernode._fleet.FleetClient` with the ids of any response's ``cancelled``."""
        for mid in message_ids:
            running = self._running.get(mid)
            if running is None:
                self._cancelled_early[mid] = None
                while len(self._cancelled_early) > 1024:
                    self._cancelled_early.popitem(last=False)
                continue
            scope, token = running
            token.cancel()
            scope.cancel()
            logger.debug("message %s: cancel requested by the link", mid)

    async def _context_for(self, run_id: int, sess: _Session) -> Context:
        ctx = self._node._contexts.get(run_id)
        if ctx is not None:
            return ctx
        lock = self._node._context_locks.setdefault(run_id, anyio.Lock())
        async with lock:
            ctx = self._node._contexts.get(run_id)
            if ctx is None:
                run = await sess.conn.get_run(sess.auth, run_id)
                ctx = Context(
                    node_id=sess.node_id,
                    node_config=dict(self._node._node_config),
                    state=RecordSet(),
                    run_config=config_from_proto(list(run.run_config)),
                    run_id=run_id,
                )
                self._node._contexts[run_id] = ctx
        return ctx

    def _pull_window(self, sess: _Session, ttl_deadline: float) -> float:
        """Seconds a reply's push may wait for instructions (0: push without pulling).

        A push pulls when nothing else pulls (the separate long-poll is parked because all slots were
        busy), the node is not stopping, its session is current, and the reply's TTL leaves room.
        """
        if self._node._puller or self._node._stopping or sess is not self._node._session:
            return 0.0
        return max(0.0, min(self._node._poll_timeout, ttl_deadline - anyio.current_time() - _TTL_MARGIN))

    async def _push(self, reply: Message) -> tuple[bool, list[pb.Message], _Session | None]:
        """Push one reply, waiting for a session if the link is unreachable, within the reply's TTL.

        Called holding the reply's slot. When no other pull is in flight, the push also pulls up to the
        free slots' worth of instructions (one ``PushReplies`` with ``pull_max_messages``); the slot is then
        given back for the duration of the call and the pulled instructions are returned for the caller
        to run (it takes their slots).

        A reply whose payload cannot be transferred (blob upload refused, or the link refuses the push
        as too large) is replaced, once, by an error reply ``PAYLOAD_UNAVAILABLE`` so that the server
        app learns at once instead of waiting for the TTL. A reply the codec cannot encode (e.g. an
        ``Array`` whose payload does not match its dtype and shape, or a metrics list mutated to mix
        types) is replaced by an error reply ``INVALID_REPLY`` with the codec's message (naming the
        record and key).

        Returns:
            ``(holding, instructions, session)``: whether the caller still holds its slot, the
            instructions pulled in the same call, and the session they came from (``None`` if none).
        """
        md = reply.metadata
        blobs: dict[bytes, Any] | None = {} if self._node._blob_port else None  # large arrays as blobs
        substituted = False
        try:
            data = message_bytes(await _blobs.encode_beside_loop(self._encode, [reply], blobs, reply, blobs))
        except (ValueError, TypeError) as exc:  # the codec names the record and key
            reason = f"the ClientApp's reply cannot be encoded: {exc}"
            error_reply = payload_error_reply(reply, reason, ErrorCode.INVALID_REPLY)
            logger.error(
                "node %s: the reply to %s: %s%s",
                md.src_node_id,
                md.reply_to_message,
                reason,
                "; sending an error reply instead"
                if error_reply is not None
                else " (and its TTL is over: no error reply)",
            )
            if error_reply is None:
                return True, [], None
            substituted, blobs, reply, data = True, None, error_reply, message_bytes(self._encode(error_reply))
        maybe_delivered = False  # an earlier attempt broke off after sending: the link may have the reply
        ttl = max(md.ttl, 0.0)
        ttl_deadline = anyio.current_time() + ttl
        with anyio.move_on_after(ttl) as scope:
            while True:
                sess = await self._node._current_session()
                if sess.node_id != md.src_node_id:
                    logger.log(
                        logging.INFO if maybe_delivered else logging.WARNING,
                        "node %s: dropping the reply to %s: it was received as node %s, and the link has "
                        "forgotten that registration%s",
                        sess.node_id,
                        md.reply_to_message,
                        md.src_node_id,
                        _MAYBE_DELIVERED if maybe_delivered else "",
                    )
                    return True, [], None
                sending = False
                try:
                    try:
                        await _blobs.upload_blobs(self._node._blob_client, blobs or {})  # before the push
                    except (LinkConnectionError, LinkTimeoutError):
                        raise
                    except FlAsyncError as exc:
                        raise _PayloadRefused(f"uploading the reply's payloads failed: {exc}") from exc
                    window = self._pull_window(sess, ttl_deadline)
                    sending = True
                    if window > 0:
                        resp = await self._push_and_pull(sess, data, window)
                    else:
                        self._node._calls["PushReplies"] += 1
                        resp = await sess.conn.push(push_request(sess.wire_auth, [data]))
                except (LinkConnectionError, LinkTimeoutError) as exc:
                    sess.fail(exc)
                    maybe_delivered = maybe_delivered or sending
                    continue
                except NotAuthorizedError as exc:
                    sess.fail(exc)
                    logger.log(
                        logging.INFO if maybe_delivered else logging.WARNING,
                        "node %s: dropping the reply to %s: %s%s",
                        sess.node_id,
                        md.reply_to_message,
                        exc,
                        _MAYBE_DELIVERED if maybe_delivered else "",
                    )
                    return True, [], None
                except (_PayloadRefused, ResourceExhaustedError) as exc:
                    error_reply = None if substituted else payload_error_reply(reply, str(exc))
                    logger.error(
                        "node %s: the reply to %s could not be delivered (%s)%s",
                        sess.node_id,
                        md.reply_to_message,
                        exc,
                        "; sending an error reply instead" if error_reply is not None else "",
                    )
                    if error_reply is None:
                        return True, [], None
                    substituted, blobs, data = True, None, message_bytes(self._encode(error_reply))
                    continue
                except FlAsyncError as exc:
                    logger.error(
                        "node %s: the link refused the reply to %s: %s", sess.node_id, md.reply_to_message, exc
                    )
                    return True, [], None
                self._node._last_ok = time.monotonic()
                ids = resp.message_ids
                if not ids or not ids[0]:
                    reason = resp.reasons[0] if resp.reasons else "no reason given"
                    logger.log(
                        logging.INFO if maybe_delivered else logging.WARNING,
                        "node %s: the link did not accept the reply to %s: %s%s",
                        sess.node_id,
                        md.reply_to_message,
                        reason,
                        _MAYBE_DELIVERED if maybe_delivered else "",
                    )
                if window > 0:
                    return False, resp.instructions, sess
                return True, [], None
        if scope.cancelled_caught:
            logger.warning(
                "node: dropping the reply to %s: its TTL ran out before the link was reachable", md.reply_to_message
            )
        return True, [], None

    async def _push_and_pull(self, sess: _Session, data: bytes, window: float) -> pb.PushRepliesResponse:
        """One ``PushReplies`` that also pulls up to the free slots' worth of instructions for ``window`` s.

        The caller's slot is free during the call (it counts toward the pull); if the call fails, the
        slot is taken back (the reply is still to be delivered) and the error propagates.
        """
        self._node._puller = "push"
        self._node._calls["PushReplies+pull"] += 1
        self._node._release_slot()
        try:
            return await sess.conn.push(push_request(sess.wire_auth, [data], max(1, self._node._free), window), window)
        except BaseException:
            self._node._take_slot()
            raise
        finally:
            self._node._puller = ""
            self._node._wake_puller()
