"""Attacks on a real ``fl-async superlink`` process on 127.0.0.1, each printing the figures its acceptance names.

Usage: ``python -m benchmarks.attack {bomb,partial,createrun,fuzz,blobput,blobslow,waiters,idle,silent,tls,freeze,
endrun,varint,all} [--seconds N]``.

Every subcommand starts its own link (``fl-async superlink --insecure`` on free loopback ports) as a child
process, measures its resident memory from ``/proc/<pid>/status`` (``VmRSS`` now, ``VmHWM`` peak), attacks it
as an anonymous or authenticated client, then checks that a fresh node and driver complete a round within
10 s, and ends the link by its PID. Each attack is bounded in time. Loopback only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from benchmarks._h2raw import RawH2
from benchmarks._proc import Proc, free_port, wait_for_port
from fl_async._credentials import node_metadata
from fl_async._fastwire import Encoded, auth_field
from fl_async.proto.fl_async import v1 as pb
from fl_async.testing.wire import RawDriver, RawNode, instruction

MB = 1e6
BOMB = b"\x12\x00"


# ------------------------------------------------------------------------------------------------ the link
class Link:
    """A ``fl-async superlink`` child process on free loopback ports."""

    def __init__(self, *extra: str, tls: bool = False) -> None:
        self.driver_port, self.fleet_port, self.blob_port = free_port(), free_port(), free_port()
        self.ssl: Any = None
        security = ["--insecure"]
        if tls:  # a throwaway CA and server certificate for 127.0.0.1
            from fl_async._net import client_ssl_context
            from fl_async.testing.certs import write_certs

            self._certs = tempfile.TemporaryDirectory(prefix="fl-async-attack-certs-")
            files = write_certs(self._certs.name)
            security = ["--ssl-ca-certfile", str(files.ca_cert), "--ssl-certfile", str(files.server_cert)]
            security += ["--ssl-keyfile", str(files.server_key)]
            self.ssl = client_ssl_context(files.ca_cert)
        log = Path(tempfile.gettempdir()) / f"fl-async-attack-link-{os.getpid()}.log"
        self.proc = Proc(
            "superlink",
            [
                sys.executable,
                "-m",
                "fl_async",
                "superlink",
                *security,
                "--driver-api-address",
                f"127.0.0.1:{self.driver_port}",
                "--fleet-api-address",
                f"127.0.0.1:{self.fleet_port}",
                "--blob-api-address",
                f"127.0.0.1:{self.blob_port}",
                *extra,
            ],
            log_path=log,
        )
        for port in (self.driver_port, self.fleet_port, self.blob_port):
            wait_for_port(port, 30, self.proc)

    def rss(self) -> float:
        """Current resident set size, MB."""
        return _status_field(self.proc.pid, "VmRSS") / MB

    def hwm(self) -> float:
        """Peak resident set size so far, MB."""
        return _status_field(self.proc.pid, "VmHWM") / MB

    def stop(self) -> None:
        self.proc.stop(grace=5)


def _status_field(pid: int, name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _b64(token: bytes) -> str:
    return base64.b64encode(token).decode().rstrip("=")


def _headers(node: RawNode) -> list[tuple[str, str]]:
    (id_header, node_id), (token_header, _) = node_metadata(node.node_id, node.token)
    return [(id_header, str(node_id)), (token_header, _b64(node.token))]


async def fresh_round(link: Link) -> float:
    """Seconds for a fresh node and driver to complete one round (raises after 10 s)."""
    start = time.monotonic()
    drv_ch = Channel("127.0.0.1", link.driver_port, ssl=link.ssl)
    fleet_ch = Channel("127.0.0.1", link.fleet_port, ssl=link.ssl)
    try:
        async with asyncio.timeout(10):
            drv = await RawDriver.create(pb.DriverStub(drv_ch))
            node = await RawNode.create(pb.FleetStub(fleet_ch))
            serve = asyncio.create_task(node.serve_echo())
            try:
                replies = await drv.send_and_receive([instruction(drv.run_id, node.node_id)])
                assert len(replies) == 1, "no reply"
            finally:
                serve.cancel()
                await asyncio.gather(serve, return_exceptions=True)
    finally:
        drv_ch.close()
        fleet_ch.close()
    return time.monotonic() - start


# ------------------------------------------------------------------------------------------------ probe
async def probe(driver_port: int, fleet_port: int, seconds: float) -> dict[str, Any]:
    """A legitimate node heartbeating every 2 s and a driver calling GetNodes every 20 ms for ``seconds``."""
    drv_ch, fleet_ch = Channel("127.0.0.1", driver_port), Channel("127.0.0.1", fleet_port)
    drv = await RawDriver.create(pb.DriverStub(drv_ch))
    node = await RawNode.create(pb.FleetStub(fleet_ch), interval=2.0)
    latencies: list[float] = []
    missing = 0
    stop = time.monotonic() + seconds

    async def heartbeats() -> None:
        while time.monotonic() < stop:
            await node.heartbeat()
            await asyncio.sleep(2.0)  # the node's promised cadence

    beat = asyncio.create_task(heartbeats())
    while time.monotonic() < stop:
        t0 = time.monotonic()
        ids = await drv.node_ids()
        latencies.append(time.monotonic() - t0)
        missing += node.node_id not in ids
        await asyncio.sleep(0.02)  # the probe's cadence
    beat.cancel()
    drv_ch.close()
    fleet_ch.close()
    latencies.sort()
    return {
        "calls": len(latencies),
        "p50_ms": 1000 * statistics.median(latencies),
        "max_ms": 1000 * latencies[-1],
        "node_missing": missing,
    }


def start_probe(link: Link, seconds: float) -> Proc:
    out = Path(tempfile.gettempdir()) / f"fl-async-attack-probe-{os.getpid()}.json"
    return Proc(
        "probe",
        [
            sys.executable,
            "-m",
            "benchmarks.attack",
            "_probe",
            str(link.driver_port),
            str(link.fleet_port),
            str(seconds),
            str(out),
        ],
        log_path=out.with_suffix(".log"),
    )


def probe_result(proc: Proc, seconds: float) -> dict[str, Any]:
    proc.wait(seconds + 30)
    out = Path(proc.argv[-1])
    return json.loads(out.read_text()) if out.exists() else {"error": proc.tail()}


# ------------------------------------------------------------------------------------------------ attacks
async def raw_call(port: int, path: str, body: bytes, metadata: Any = None, limit: float = 60) -> tuple[str, float]:
    """Send ``body`` as is to ``path``; ``(status name, seconds)``."""
    ch = Channel("127.0.0.1", port)
    start = time.monotonic()
    try:
        async with asyncio.timeout(limit):
            async with ch.request(
                path, Cardinality.UNARY_UNARY, Encoded, pb.PushRepliesResponse, metadata=metadata
            ) as stream:
                await stream.send_message(Encoded(body), end=True)
                await stream.recv_message()
        status = "OK"
    except GRPCError as exc:
        status = exc.status.name
    except (TimeoutError, OSError) as exc:
        status = type(exc).__name__
    finally:
        ch.close()
    return status, time.monotonic() - start


async def attack_bomb(args: argparse.Namespace) -> dict[str, Any]:
    """8 MiB unauthenticated decode bombs on PushReplies, PushMessages and PullMessages, repeated."""
    link = Link()
    try:
        base = link.rss()
        seconds = args.seconds
        prober = start_probe(link, seconds)
        await asyncio.sleep(2)  # let the probe register
        size = 8 << 20
        statuses: dict[str, int] = {}
        slowest = 0.0
        bodies = {
            (link.fleet_port, "/fl_async.v1.Fleet/PushReplies"): BOMB * (size // 2),
            (link.driver_port, "/fl_async.v1.Driver/PushMessages"): BOMB * (size // 2),
            (link.driver_port, "/fl_async.v1.Driver/PullMessages"): b"\x12\x00" * (size // 2),
        }
        end = time.monotonic() + seconds - 4
        sent = 0
        while time.monotonic() < end:
            for (port, path), body in bodies.items():
                status, took = await raw_call(port, path, body)
                statuses[status] = statuses.get(status, 0) + 1
                slowest = max(slowest, took)
                sent += 1
        probed = probe_result(prober, seconds)
        return {
            "bombs": sent,
            "bomb_bytes": size,
            "statuses": statuses,
            "slowest_refusal_s": round(slowest, 3),
            "probe": probed,
            "rss_base_mb": round(base, 1),
            "rss_peak_rise_mb": round(link.hwm() - base, 1),
            "fresh_round_s": round(await fresh_round(link), 3),
        }
    finally:
        link.stop()


def _ld(field: int, payload: bytes) -> bytes:
    """A length-delimited protobuf field."""

    def varint(n: int) -> bytes:
        out = bytearray()
        while n >= 0x80:
            out.append(n & 0x7F | 0x80)
            n >>= 7
        out.append(n)
        return bytes(out)

    return varint(field << 3 | 2) + varint(len(payload)) + payload


async def attack_varint(args: argparse.Namespace) -> dict[str, Any]:
    """An authenticated node's PushReplies whose one Array.shape is 48 MiB of packed 1-byte varints (under
    --max-request-bytes): decoded, that is 50 million Python ints (~1.8 GB). Repeated for ``--seconds`` while the
    probe runs; statuses, slowest refusal, probe latency, RSS peak."""
    link = Link()
    fleet = Channel("127.0.0.1", link.fleet_port)
    try:
        node = await RawNode.create(pb.FleetStub(fleet), interval=300.0)
        base = link.rss()
        seconds = args.seconds
        prober = start_probe(link, seconds)
        await asyncio.sleep(2)
        shape = _ld(2, b"\x01" * (48 << 20))  # Array.shape (packed int64)
        body = auth_field(node.auth) + _ld(2, _ld(2, _ld(1, _ld(3, shape))))  # messages/content/parameters/arrays
        statuses: dict[str, int] = {}
        slowest = 0.0
        message = ""
        end = time.monotonic() + seconds - 4
        while time.monotonic() < end:
            ch = Channel("127.0.0.1", link.fleet_port)
            start = time.monotonic()
            try:
                async with asyncio.timeout(120):
                    async with ch.request(
                        "/fl_async.v1.Fleet/PushReplies",
                        Cardinality.UNARY_UNARY,
                        Encoded,
                        pb.PushRepliesResponse,
                        metadata=node.metadata,
                    ) as stream:
                        await stream.send_message(Encoded(body), end=True)
                        await stream.recv_message()
                status = "OK"
            except GRPCError as exc:
                status, message = exc.status.name, exc.message or ""
            finally:
                ch.close()
            slowest = max(slowest, time.monotonic() - start)
            statuses[status] = statuses.get(status, 0) + 1
        return {
            "body_mb": round(len(body) / MB, 1),
            "statuses": statuses,
            "message": message,
            "slowest_refusal_s": round(slowest, 3),
            "probe": probe_result(prober, seconds),
            "rss_base_mb": round(base, 1),
            "rss_peak_rise_mb": round(link.hwm() - base, 1),
            "fresh_round_s": round(await fresh_round(link), 3),
        }
    finally:
        fleet.close()
        link.stop()


async def attack_partial(args: argparse.Namespace) -> dict[str, Any]:
    """4 x 200 MiB declared bodies sent in part then stalled (anonymous and authenticated), and 4 x 60 MiB
    authenticated bodies sent 50 MiB each then stalled: when are they dropped, and is the memory returned?"""
    link = Link()
    out: dict[str, Any] = {}
    conns: list[RawH2] = []
    fleet = Channel("127.0.0.1", link.fleet_port)
    try:
        base = link.rss()
        node = await RawNode.create(pb.FleetStub(fleet))
        for label, declared, prefix, headers in (
            ("4x200MiB_anonymous", 200 << 20, 8 << 20, []),
            ("4x200MiB_authenticated", 200 << 20, 8 << 20, _headers(node)),
            ("4x60MiB_authenticated_50MiB_sent", 60 << 20, 50 << 20, _headers(node)),
        ):
            streams = []
            for _ in range(4):
                raw = await RawH2.connect("127.0.0.1", link.fleet_port)
                conns.append(raw)
                body = auth_field(node.auth) + BOMB * (prefix // 2)
                sid, sent = await raw.call_prefix(
                    "/fl_async.v1.Fleet/PushReplies", declared, body[:prefix], headers, within=30
                )
                streams.append((raw, sid, sent))
            stalled = time.monotonic()
            held = link.rss()
            results = [await raw.wait_status(sid, 60) for raw, sid, _ in streams]
            dropped_after = time.monotonic() - stalled
            statuses = sorted({Status(int(s[0])).name if s and s[0].isdigit() else str(s) for s in results})
            await asyncio.sleep(10)  # the acceptance reads RSS 10 s after
            out[label] = {
                "sent_mb_each": round(streams[0][2] / MB, 1),
                "rss_while_held_mb": round(held - base, 1),
                "dropped_within_s": round(dropped_after, 2),
                "statuses": statuses,
                "rss_rise_10s_after_mb": round(link.rss() - base, 1),
            }
            for raw in conns:
                await raw.close()
            conns.clear()
        out["rss_base_mb"] = round(base, 1)
        out["fresh_round_s"] = round(await fresh_round(link), 3)
        return out
    finally:
        for raw in conns:
            await raw.close()
        fleet.close()
        link.stop()


async def attack_createrun(args: argparse.Namespace) -> dict[str, Any]:
    """CreateRun with a 100 MiB fab_id, three times; then 1,000 small runs."""
    link = Link()
    ch = Channel("127.0.0.1", link.driver_port)
    try:
        base = link.rss()
        statuses = []
        for _ in range(3):
            start = time.monotonic()
            try:
                await pb.DriverStub(ch).create_run(pb.CreateRunRequest(fab_id="x" * (100 << 20)), timeout=60)
                statuses.append(("OK", time.monotonic() - start, ""))
            except GRPCError as exc:
                statuses.append((exc.status.name, time.monotonic() - start, exc.message or ""))
        return {
            "statuses": [s[0] for s in statuses],
            "slowest_s": round(max(s[1] for s in statuses), 3),
            "message": statuses[0][2],
            "rss_rise_mb": round(link.rss() - base, 1),
            "fresh_round_s": round(await fresh_round(link), 3),
        }
    finally:
        ch.close()
        link.stop()


_RPCS = [
    ("driver", "/fl_async.v1.Driver/CreateRun", pb.CreateRunRequest),
    ("driver", "/fl_async.v1.Driver/GetRun", pb.GetRunRequest),
    ("driver", "/fl_async.v1.Driver/GetNodes", pb.GetNodesRequest),
    ("driver", "/fl_async.v1.Driver/WaitForNodes", pb.WaitForNodesRequest),
    ("driver", "/fl_async.v1.Driver/PushMessages", pb.PushMessagesRequest),
    ("driver", "/fl_async.v1.Driver/PullMessages", pb.PullMessagesRequest),
    ("driver", "/fl_async.v1.Driver/EndRun", pb.EndRunRequest),
    ("fleet", "/fl_async.v1.Fleet/CreateNode", pb.CreateNodeRequest),
    ("fleet", "/fl_async.v1.Fleet/DeleteNode", pb.DeleteNodeRequest),
    ("fleet", "/fl_async.v1.Fleet/Heartbeat", pb.HeartbeatRequest),
    ("fleet", "/fl_async.v1.Fleet/PullInstructions", pb.PullInstructionsRequest),
    ("fleet", "/fl_async.v1.Fleet/PushReplies", pb.PushRepliesRequest),
    ("fleet", "/fl_async.v1.Fleet/GetRun", pb.FleetGetRunRequest),
]


def fuzz_body(rng: random.Random, valid: list[bytes]) -> bytes:
    """A random body: a mutated valid request, random bytes, or a valid request with random fields appended."""
    kind = rng.random()
    if kind < 0.4 and valid:
        data = bytearray(rng.choice(valid))
        for _ in range(rng.randint(1, 8)):
            if data:
                data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind < 0.7:
        return rng.randbytes(rng.randint(0, 300))
    tail = b"".join(
        bytes([rng.randrange(1, 16) << 3 | rng.choice((0, 1, 2, 5))]) + rng.randbytes(rng.randint(0, 12))
        for _ in range(rng.randint(1, 6))
    )
    return (rng.choice(valid) if valid else b"") + tail


async def fuzz(link_ports: tuple[int, int], count: int, seed: int, metadata: Any = None) -> dict[str, int]:
    """``count`` seeded random requests spread over all 13 RPCs; counts of the statuses answered."""
    rng = random.Random(seed)
    driver_port, fleet_port = link_ports
    chans = {"driver": Channel("127.0.0.1", driver_port), "fleet": Channel("127.0.0.1", fleet_port)}
    valid = [
        bytes(pb.PushMessagesRequest(run_id=1, messages=[instruction(1, 2)])),
        bytes(pb.PullMessagesRequest(run_id=1, message_ids=["a", "b"], timeout=0.0)),
        bytes(pb.CreateRunRequest(fab_id="f", fab_version="1")),
        bytes(pb.EndRunRequest(run_id=1)),
        bytes(pb.HeartbeatRequest(auth=pb.NodeAuth(node_id=1, token=b"t"), heartbeat_interval=1.0)),
    ]
    counts: dict[str, int] = {}
    sem = asyncio.Semaphore(16)

    async def one(i: int) -> None:
        api, path, _ = _RPCS[i % len(_RPCS)]
        body = fuzz_body(rng, valid)
        async with sem:
            try:
                async with asyncio.timeout(10):
                    async with chans[api].request(
                        path, Cardinality.UNARY_UNARY, Encoded, pb.GetRunResponse, metadata=metadata
                    ) as stream:
                        await stream.send_message(Encoded(body), end=True)
                        await stream.recv_message()
                name = "OK"
            except GRPCError as exc:
                name = exc.status.name
            except Exception as exc:  # decode errors of our dummy response type are fine: the link answered
                name = "OK" if "decode" in type(exc).__name__.lower() or isinstance(exc, ValueError) else repr(exc)
        counts[name] = counts.get(name, 0) + 1

    try:
        await asyncio.gather(*(one(i) for i in range(count)))
    finally:
        for ch in chans.values():
            ch.close()
    return counts


async def attack_fuzz(args: argparse.Namespace) -> dict[str, Any]:
    """Seeded fuzz over all 13 RPCs: anonymous, then with a registered node's header credentials."""
    link = Link()
    fleet = Channel("127.0.0.1", link.fleet_port)
    try:
        node = await RawNode.create(pb.FleetStub(fleet))
        anonymous = await fuzz((link.driver_port, link.fleet_port), args.count, seed=1)
        authed = await fuzz((link.driver_port, link.fleet_port), args.count, seed=2, metadata=node.metadata)
        bad = sum(c.get("INTERNAL", 0) + c.get("UNKNOWN", 0) for c in (anonymous, authed))
        return {
            "requests": 2 * args.count,
            "anonymous": anonymous,
            "authenticated": authed,
            "internal_or_unknown": bad,
            "fresh_round_s": round(await fresh_round(link), 3),
        }
    finally:
        fleet.close()
        link.stop()


async def _blob_put(link: Link, token: bytes, total: int, digest: bytes) -> tuple[Any, str, Any]:
    from fl_async.blobs import protocol as bp

    reader, writer = await asyncio.open_connection("127.0.0.1", link.blob_port)
    writer.write(bp.encode_request(bp.Op.PUT, digest, total=total, token=token))
    reply = bp.decode_reply_header(await reader.readexactly(bp.REPLY_HEADER_SIZE))
    text = (await reader.readexactly(reply.message_len)).decode()
    return reply, text, (reader, writer)


async def attack_blobput(args: argparse.Namespace) -> dict[str, Any]:
    """PUT headers declaring 10 GiB (over the default --max-blob-bytes here) and 5 GiB (accepted): RSS over 5 s.
    Accepted uploads also send one chunk header declaring 64 MiB and 1 KiB of it."""
    out: dict[str, Any] = {}
    raised = [f"--{name}={12 << 30}" for name in ("max-blob-bytes", "blob-store-bytes", "blob-quota-bytes")]
    for flags, cases in (
        ((), (("10GiB", 10 << 30, b"\x01" * 32), ("5GiB", 5 << 30, b"\x02" * 32))),
        (raised, (("10GiB_limits_raised_to_12GiB", 10 << 30, b"\x04" * 32),)),
    ):
        out.update(await _blobput_cases(Link(*flags), cases))
    return out


async def _blobput_cases(link: Link, cases: Any) -> dict[str, Any]:
    from fl_async.blobs import protocol as bp
    from fl_async.blobs.protocol import node_blob_token

    fleet = Channel("127.0.0.1", link.fleet_port)
    out: dict[str, Any] = {}
    try:
        node = await RawNode.create(pb.FleetStub(fleet))
        token = node_blob_token(node.node_id, node.token)
        base = link.rss()
        for label, total, digest in cases:
            reply, text, (_reader, writer) = await _blob_put(link, token, total, digest)
            if reply.status is bp.Status.CONTINUE:
                writer.write(bp.encode_chunk_header(64 << 20) + b"x" * 1024)
                await writer.drain()
            peak = 0.0
            for _ in range(10):
                await asyncio.sleep(0.5)  # sample the link's RSS every 0.5 s for 5 s
                peak = max(peak, link.rss() - base)
            out[label] = {"status": reply.status.name, "message": text[:120], "rss_rise_max_5s_mb": round(peak, 1)}
            writer.close()
            out[label]["fresh_round_s"] = round(await fresh_round(link), 3)
        return out
    finally:
        fleet.close()
        link.stop()


async def attack_blobslow(args: argparse.Namespace) -> dict[str, Any]:
    """A 1 GiB PUT that sends a 64 MiB chunk header, then one byte every 3 s: how long does the link hold more
    than 64 MiB above its baseline, and when is the upload dropped?"""
    from fl_async.blobs import protocol as bp
    from fl_async.blobs.protocol import node_blob_token

    link = Link()
    fleet = Channel("127.0.0.1", link.fleet_port)
    try:
        node = await RawNode.create(pb.FleetStub(fleet))
        token = node_blob_token(node.node_id, node.token)
        base = link.rss()
        reply, _text, (reader, writer) = await _blob_put(link, token, 1 << 30, b"\x03" * 32)
        writer.write(bp.encode_chunk_header(64 << 20))
        start = time.monotonic()
        over_since: float | None = None
        longest_over = peak = 0.0
        dropped_at = None
        next_byte = start
        while time.monotonic() - start < args.seconds:
            now = time.monotonic()
            if dropped_at is None and now >= next_byte:
                try:
                    writer.write(b"x")
                    await writer.drain()
                except ConnectionError:
                    dropped_at = now - start
                next_byte = now + 3.0
            if dropped_at is None and reader.at_eof():
                dropped_at = now - start
            rise = link.rss() - base
            peak = max(peak, rise)
            if rise > 64 * 1.048576:
                over_since = now if over_since is None else over_since
                longest_over = max(longest_over, now - over_since)
            else:
                over_since = None
            try:
                async with asyncio.timeout(0.5):
                    await reader.read(1)  # wakes at EOF (the link dropped us) or after 0.5 s
            except TimeoutError:
                pass
        writer.close()
        return {
            "status": reply.status.name,
            "dropped_after_s": None if dropped_at is None else round(dropped_at, 1),
            "rss_rise_peak_mb": round(peak, 1),
            "longest_above_64MiB_s": round(longest_over, 1),
            "watched_s": args.seconds,
            "fresh_round_s": round(await fresh_round(link), 3),
        }
    finally:
        fleet.close()
        link.stop()


async def probe_getrun(driver_port: int, seconds: float) -> dict[str, Any]:
    """A driver calling GetRun every 20 ms for ``seconds``: latency percentiles."""
    ch = Channel("127.0.0.1", driver_port)
    drv = await RawDriver.create(pb.DriverStub(ch))
    latencies: list[float] = []
    stop = time.monotonic() + seconds
    while time.monotonic() < stop:
        t0 = time.monotonic()
        await pb.DriverStub(ch).get_run(pb.GetRunRequest(run_id=drv.run_id), metadata=drv.metadata)
        latencies.append(time.monotonic() - t0)
        await asyncio.sleep(0.02)  # the probe's cadence
    ch.close()
    latencies.sort()
    return {"calls": len(latencies), "p50_ms": 1000 * statistics.median(latencies), "max_ms": 1000 * latencies[-1]}


async def attack_waiters(args: argparse.Namespace) -> dict[str, Any]:
    """5,000 nodes, 1,000 held WaitForNodes (thresholds never reached), 10 node changes/s for ``--seconds``
    (default 15): GetRun latency seen by another driver."""
    link = Link()
    chans = [Channel("127.0.0.1", link.fleet_port) for _ in range(8)]
    dchans = [Channel("127.0.0.1", link.driver_port) for _ in range(20)]
    try:
        sem = asyncio.Semaphore(64)

        async def one(i: int) -> RawNode:
            async with sem:
                return await RawNode.create(pb.FleetStub(chans[i % len(chans)]), interval=300.0)

        start = time.monotonic()
        nodes = list(await asyncio.gather(*(one(i) for i in range(args.nodes))))
        created_s = time.monotonic() - start
        drv = await RawDriver.create(pb.DriverStub(dchans[0]))
        stop = time.monotonic() + args.seconds + 3

        async def waiter(i: int) -> None:
            stub = pb.DriverStub(dchans[i % len(dchans)])
            while time.monotonic() < stop:
                req = pb.WaitForNodesRequest(run_id=drv.run_id, min_nodes=10**6, timeout=30.0)
                await stub.wait_for_nodes(req, metadata=drv.metadata, timeout=60)

        held = [asyncio.create_task(waiter(i)) for i in range(args.waiters)]
        await asyncio.sleep(2)  # let the waiters be held
        prober = Proc(
            "probe",
            [sys.executable, "-m", "benchmarks.attack", "_probe_getrun", str(link.driver_port), str(args.seconds)],
            log_path=Path(tempfile.gettempdir()) / f"fl-async-attack-getrun-{os.getpid()}.log",
        )
        changes = [0]
        end = time.monotonic() + args.seconds
        stub = pb.FleetStub(chans[0])

        async def change(victim: RawNode) -> None:  # one node leaves, one joins: 2 changes
            await stub.delete_node(pb.DeleteNodeRequest(auth=victim.auth), metadata=victim.metadata)
            nodes.append(await RawNode.create(stub, interval=300.0))
            changes[0] += 2

        pending = []
        while time.monotonic() < end:
            pending.append(asyncio.create_task(change(nodes.pop(0))))
            await asyncio.sleep(0.2)  # 5 leave + 5 join: 10 node changes per second
        await asyncio.gather(*pending)
        await asyncio.to_thread(prober.wait, args.seconds + 30)
        text = await asyncio.to_thread(prober.log_path.read_text)
        result = json.loads(text.strip().splitlines()[-1])
        for task in held:
            task.cancel()
        await asyncio.gather(*held, return_exceptions=True)
        return {
            "nodes": len(nodes),
            "created_in_s": round(created_s, 1),
            "held_waiters": args.waiters,
            "node_changes": changes[0],
            "getrun": {k: round(v, 2) if isinstance(v, float) else v for k, v in result.items()},
            "rss_mb": round(link.rss(), 1),
            "fresh_round_s": round(await fresh_round(link), 3),
        }
    finally:
        for ch in chans + dchans:
            ch.close()
        link.stop()


async def attack_idle(args: argparse.Namespace) -> dict[str, Any]:
    """``--conns`` (default 2,000) idle TCP connections each to the blob and Fleet ports (and some that never
    speak, closed by the setup timeout): link RSS rise, and a fresh node + driver round while they are open."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # this process holds 4,000 sockets
    link = Link("--connection-setup-timeout", "300")  # idle, not silent: keep them open for the measure
    conns: list[asyncio.StreamWriter] = []
    try:
        base = link.rss()
        for port in (link.blob_port, link.fleet_port):
            for _ in range(args.conns):
                try:
                    _reader, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    break
                conns.append(writer)
        await asyncio.sleep(3)  # let the link accept them all
        held = link.rss() - base
        round_s = await fresh_round(link)
        return {
            "connections_opened": len(conns),
            "rss_base_mb": round(base, 1),
            "rss_rise_mb": round(held, 1),
            "fresh_round_s_while_open": round(round_s, 3),
        }
    finally:
        for writer in conns:
            writer.close()
        link.stop()
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


async def attack_silent(args: argparse.Namespace) -> dict[str, Any]:
    """200 connections to each port that never send a byte: when does the link close them (default setup
    timeout 10 s)?"""
    link = Link()
    try:
        start = time.monotonic()
        readers = []
        for port in (link.driver_port, link.fleet_port, link.blob_port):
            for _ in range(200):
                reader, writer = await asyncio.open_connection("127.0.0.1", port)
                readers.append((reader, writer))

        async def closed(reader: asyncio.StreamReader) -> float:
            await reader.read()
            return time.monotonic() - start

        async with asyncio.timeout(60):
            times = await asyncio.gather(*(closed(r) for r, _ in readers))
        for _, writer in readers:
            writer.close()
        return {
            "connections": len(readers),
            "all_closed_after_s": round(max(times), 1),
            "fresh_round_s": round(await fresh_round(link), 3),
        }
    finally:
        link.stop()


async def attack_tls(args: argparse.Namespace) -> dict[str, Any]:
    """A TLS link: 200 connections to each port that never start the TLS handshake (raw TCP), and 200 that
    complete it but never speak HTTP/2 or the blob protocol: when does the link close each kind (default
    --connection-setup-timeout 10 s; the handshaken ones counted from their own handshake)? Also 1,000
    never-handshaking connections per port at once: link RSS rise, and a fresh round over TLS meanwhile."""
    import ssl

    link = Link(tls=True)
    try:
        base = link.rss()
        start = time.monotonic()
        raw: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        tls: list[tuple[asyncio.StreamReader, float]] = []  # (reader, when its handshake completed)
        ports = (link.driver_port, link.fleet_port, link.blob_port)
        for port in ports:
            for _ in range(200):
                raw.append(await asyncio.open_connection("127.0.0.1", port))
        client = ssl.create_default_context(cafile=None)
        client.check_hostname = False
        client.verify_mode = ssl.CERT_NONE
        writers = [w for _, w in raw]
        for port in ports:
            for _ in range(200):
                reader, writer = await asyncio.open_connection("127.0.0.1", port, ssl=client)
                tls.append((reader, time.monotonic()))
                writers.append(writer)

        async def closed(reader: asyncio.StreamReader, since: float) -> float:
            with contextlib.suppress(ConnectionError, ssl.SSLError):
                await reader.read()
            return time.monotonic() - since

        async with asyncio.timeout(90):
            raw_times = await asyncio.gather(*(closed(r, start) for r, _ in raw))
            tls_times = await asyncio.gather(*(closed(r, since) for r, since in tls))
        for writer in writers:
            writer.close()
        many: list[asyncio.StreamWriter] = []
        for port in ports:
            for _ in range(1000):
                try:
                    many.append((await asyncio.open_connection("127.0.0.1", port))[1])
                except OSError:
                    break
        await asyncio.sleep(3)
        held = link.rss() - base
        round_s = await fresh_round(link)
        for writer in many:
            writer.close()
        return {
            "no_handshake_connections": len(raw),
            "no_handshake_all_closed_after_s": round(max(raw_times), 1),
            "handshaken_silent_connections": len(tls),
            "handshaken_silent_closed_after_s_max": round(max(tls_times), 1),
            "no_handshake_3000_rss_rise_mb": round(held, 1),
            "fresh_round_s_while_3000_open": round(round_s, 3),
        }
    finally:
        link.stop()


def _freeze(link: Link, seconds: float) -> dict[str, Any]:
    """Blocking body of :func:`attack_freeze` (the sync Driver runs in a worker thread)."""
    import signal

    from fl_async.common import RecordSet
    from fl_async.server import Driver

    node = Proc(
        "supernode",
        [
            sys.executable,
            "-m",
            "fl_async",
            "supernode",
            "examples.quickstart.client:app",
            "--insecure",
            "--superlink",
            f"127.0.0.1:{link.fleet_port}",
        ],
        log_path=Path(tempfile.gettempdir()) / f"fl-async-attack-freeze-node-{os.getpid()}.log",
    )
    try:
        with Driver(f"127.0.0.1:{link.driver_port}", insecure=True) as drv:
            (before,) = drv.wait_for_nodes(1, timeout=30)
            drv.send_and_receive([drv.create_message(RecordSet(), "train", before, "1")], timeout=30)
            os.kill(node.pid, signal.SIGSTOP)
            time.sleep(seconds)  # the freeze itself
            os.kill(node.pid, signal.SIGCONT)
            resumed = time.monotonic()
            after = before
            while after == before and time.monotonic() - resumed < 60:
                ids = drv.wait_for_nodes(1, timeout=5)
                after = ids[0] if ids and ids[0] != before else before
                if after == before and before in ids:
                    break  # resumed under the same id
            listed = time.monotonic() - resumed
            replies = drv.send_and_receive([drv.create_message(RecordSet(), "train", after, "2")], timeout=30)
            answered = time.monotonic() - resumed
        return {
            "frozen_s": seconds,
            "same_node_id": after == before,
            "listed_after_s": round(listed, 1),
            "answered_after_s": round(answered, 1) if replies else None,
            "node_exit_code": node.poll(),
        }
    finally:
        node.stop()


async def attack_freeze(args: argparse.Namespace) -> dict[str, Any]:
    """A SuperNode (heartbeat 30 s) that answered a message is stopped (SIGSTOP) for ``--seconds`` then continued:
    is it listed again, and does it answer, within 30 s?"""
    link = Link()
    try:
        result = await asyncio.to_thread(_freeze, link, args.seconds)
        result["fresh_round_s"] = round(await fresh_round(link), 3)
        return result
    finally:
        link.stop()


def _loaded_instruction(run_id: int, dst: int, nbytes: int) -> pb.Message:
    msg = instruction(run_id, dst)
    array = pb.Array(dtype="uint8", shape=[nbytes], stype="numpy.ndarray", data=os.urandom(nbytes), nbytes=nbytes)
    msg.content = pb.RecordSet(parameters=[pb.ParametersRecord(keys=["w"], arrays=[array])])
    return msg


async def _fill_run(link: Link, nodes: list[RawNode], per_node: int, nbytes: int) -> tuple[Channel, RawDriver, int]:
    """A new run with ``per_node`` queued instructions of ``nbytes`` for each node (the nodes never pull)."""
    ch = Channel("127.0.0.1", link.driver_port)
    drv = await RawDriver.create(pb.DriverStub(ch))
    batch: list[pb.Message] = []
    queued = 0
    for _ in range(per_node):
        for node in nodes:
            batch.append(_loaded_instruction(drv.run_id, node.node_id, nbytes))
            if len(batch) == 500:
                queued += sum(1 for i in (await drv.push(batch)).message_ids if i)
                batch = []
    if batch:
        queued += sum(1 for i in (await drv.push(batch)).message_ids if i)
    return ch, drv, queued


async def attack_endrun(args: argparse.Namespace) -> dict[str, Any]:
    """A run holding 100 nodes x 100 queued instructions of 10 KB (100 MB; the nodes never pull) ends: by its
    driver's EndRun, and by its driver disconnecting without one (``--driver-disconnect-grace 5``). How long until
    the run is gone, and how much of the link's memory comes back?"""
    link = Link("--driver-disconnect-grace", "5")
    fleet = Channel("127.0.0.1", link.fleet_port)
    out: dict[str, Any] = {}
    try:
        nodes = [await RawNode.create(pb.FleetStub(fleet), interval=300.0) for _ in range(100)]
        base = link.rss()
        out["rss_base_mb"] = round(base, 1)
        for case in ("endrun", "disconnect"):
            ch, drv, queued = await _fill_run(link, nodes, 100, 10_000)
            held = link.rss() - base
            start = time.monotonic()
            if case == "endrun":
                resp = await drv.stub.end_run(pb.EndRunRequest(run_id=drv.run_id), metadata=drv.metadata)
                out["endrun_cancelled_replies"] = len(resp.messages)
                ch.close()
            else:
                ch.close()  # the driver goes away without EndRun
                probe = Channel("127.0.0.1", link.driver_port)
                try:
                    async with asyncio.timeout(60):
                        while True:
                            try:
                                await pb.DriverStub(probe).get_run(pb.GetRunRequest(run_id=drv.run_id))
                            except GRPCError as exc:
                                if exc.status is Status.NOT_FOUND:
                                    out["disconnect_not_found_message"] = exc.message
                                    break
                                if exc.status is not Status.PERMISSION_DENIED:  # the run is still there (not
                                    raise  # ours: an anonymous probe, so that it is no call of its driver)
                            await asyncio.sleep(0.1)
                finally:
                    probe.close()
            gone = time.monotonic() - start
            await asyncio.sleep(2)
            out[f"{case}_queued"] = queued
            out[f"{case}_rss_held_mb"] = round(held, 1)
            out[f"{case}_run_gone_after_s"] = round(gone, 2)
            out[f"{case}_rss_2s_after_mb"] = round(link.rss() - base, 1)
        out["fresh_round_s"] = round(await fresh_round(link), 3)
        return out
    finally:
        fleet.close()
        link.stop()


ATTACKS: dict[str, Callable[[argparse.Namespace], Awaitable[dict[str, Any]]]] = {
    "bomb": attack_bomb,
    "partial": attack_partial,
    "createrun": attack_createrun,
    "fuzz": attack_fuzz,
    "blobput": attack_blobput,
    "blobslow": attack_blobslow,
    "waiters": attack_waiters,
    "idle": attack_idle,
    "silent": attack_silent,
    "tls": attack_tls,
    "freeze": attack_freeze,
    "endrun": attack_endrun,
    "varint": attack_varint,
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("attack", choices=[*ATTACKS, "all", "_probe", "_probe_getrun"])
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--seconds", type=float, default=20.0, help="duration of timed attacks (default 20)")
    parser.add_argument("--count", type=int, default=6000, help="fuzz requests per phase (default 6000)")
    parser.add_argument("--nodes", type=int, default=5000, help="waiters: registered nodes (default 5000)")
    parser.add_argument("--waiters", type=int, default=1000, help="waiters: held WaitForNodes (default 1000)")
    parser.add_argument("--conns", type=int, default=2000, help="idle: connections per port (default 2000)")
    args = parser.parse_args(argv)
    if args.attack == "_probe_getrun":
        driver, seconds = args.rest
        print(json.dumps(asyncio.run(probe_getrun(int(driver), float(seconds)))), flush=True)
        return
    if args.attack == "_probe":
        driver, fleet, seconds, out = args.rest
        result = asyncio.run(probe(int(driver), int(fleet), float(seconds)))
        Path(out).write_text(json.dumps(result))
        return
    names = list(ATTACKS) if args.attack == "all" else [args.attack]
    for name in names:
        start = time.monotonic()
        result = asyncio.run(ATTACKS[name](args))
        print(json.dumps({"attack": name, "took_s": round(time.monotonic() - start, 1), **result}), flush=True)


if __name__ == "__main__":
    main()
