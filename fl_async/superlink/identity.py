"""Who may use the link: driver tokens, the allow-list of node keys, and the caller check that applies both.

* **Driver tokens** (``--driver-auth-token-file``, :class:`DriverTokens`): with a token file, every Driver API
  call must carry one of its tokens (header ``fl-async-auth-token-bin``; compared in constant time) or is refused
  UNAUTHENTICATED from the headers, before its body is read. The token a run was created with is its owner
  (``RunRecord.owner``, a digest of the token, never the token itself).
* **Node keys** (``--auth-list-public-keys``, :class:`AllowList`): a node registering with a key pair proves
  possession of its key in the CreateNode headers (:mod:`fl_async._keys`); with an allow-list, only listed keys
  may register and CreateNode without a key is refused. Without an allow-list any key (or none) is accepted, as
  before (development). The node id is bound to the key (:func:`fl_async._keys.node_id_for`). The list is
  re-read when its file changes (polled) or on SIGHUP; nodes whose key was removed are disconnected.
* :class:`IdentityCallers` is the link's :class:`~fl_async.superlink.admission.CallerCheck`: the two rules above
  around the session credentials of :class:`~fl_async.superlink.admission.SessionCallers`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric import ec

from fl_async._credentials import (
    AUTH_TOKEN_HEADER,
    NODE_PROOF_HEADER,
    NODE_PUBLIC_KEY_HEADER,
    NODE_SIGNATURE_HEADER,
    NODE_TIMESTAMP_HEADER,
    NODE_TOKEN_HEADER,
)
from fl_async._keys import (
    call_key,
    call_mac,
    node_id_for,
    parse_public_key,
    public_key_text,
    ssh_wire,
    verify_registration,
)
from fl_async.superlink.admission import Caller, CallerCheck
from fl_async.superlink.errors import UnauthenticatedError
from fl_async.superlink.store import RunRecord

__all__ = [
    "REGISTRATION_WINDOW",
    "REPLAY_WINDOW",
    "AllowList",
    "DriverTokens",
    "IdentityCallers",
    "presented_token",
    "public_key_from_wire",
    "run_access_problem",
    "token_owner",
]

log = logging.getLogger("fl_async.superlink")

REGISTRATION_WINDOW = 300.0
"""Seconds a signed CreateNode timestamp may differ from the link's clock (either way)."""
_MAX_SEEN = 100_000
"""Most registration signatures remembered for replay detection (the oldest are forgotten first)."""
MISSING_TOKEN = (
    "this SuperLink requires a driver token (--driver-auth-token-file): pass it with auth_token=... "
    "(Driver/AsyncDriver), the FL_ASYNC_AUTH_TOKEN environment variable, or fl-async server-app --auth-token-file"
)
NODE_KEY_REQUIRED = (
    "this SuperLink requires node authentication (--auth-list-public-keys): start the node with "
    "--auth-supernode-private-key and --auth-supernode-public-key, over TLS"
)


def token_owner(token: bytes) -> str:
    """The owner name of runs created with ``token``: ``"token:"`` and 16 hex digits of its SHA-256."""
    return "token:" + hashlib.sha256(token).hexdigest()[:16]


def _read_lines(path: Path, what: str) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return [line.strip() for line in text.splitlines() if line.strip() and not line.strip().startswith("#")]


class DriverTokens:
    """The driver tokens of ``--driver-auth-token-file``: one per line (blank lines and ``#`` comments ignored).

    Raises:
        ValueError: the file cannot be read or lists no token.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.tokens = [line.encode() for line in _read_lines(self.path, "driver token file")]
        if not self.tokens:
            raise ValueError(f"driver token file {self.path} lists no token")

    def owner(self, token: object) -> str:
        """The owner name of a presented token (:func:`token_owner`).

        Raises:
            UnauthenticatedError: no token, or not one of the file's (every token is compared, in constant time).
        """
        if not isinstance(token, bytes) or not token:
            raise UnauthenticatedError(MISSING_TOKEN)
        found = False
        for known in self.tokens:
            found |= hmac.compare_digest(known, token)
        if not found:
            raise UnauthenticatedError("the driver token is not one of the link's (--driver-auth-token-file)")
        return token_owner(token)


class AllowList:
    """The node public keys of ``--auth-list-public-keys``: a CSV of OpenSSH ECDSA public keys (one or more per
    line, comma-separated; blank lines and ``#`` comments ignored), as Flower 1.9.

    Attributes:
        keys: SSH wire encoding of each listed key -> its node id.

    Raises:
        ValueError: the file cannot be read, or an entry is not an OpenSSH ECDSA public key (line named).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.keys: dict[bytes, int] = {}
        self.mtime = 0.0
        self.load()

    def load(self) -> set[bytes]:
        """(Re-)read the file; return the keys no longer listed. On error the previous list stays (ValueError)."""
        try:
            mtime = os.stat(self.path).st_mtime
        except OSError as exc:
            raise ValueError(f"cannot read allow-list {self.path}: {exc.strerror or exc}") from None
        keys: dict[bytes, int] = {}
        for number, line in enumerate(_read_lines(self.path, "allow-list"), 1):
            for entry in line.split(","):
                if not entry.strip():
                    continue
                try:
                    key = parse_public_key(entry)
                except ValueError as exc:
                    raise ValueError(f"allow-list {self.path} line {number}: {exc}") from None
                keys[ssh_wire(key)] = node_id_for(key)
        removed = set(self.keys) - set(keys)
        self.keys, self.mtime = keys, mtime
        return removed

    def changed(self) -> bool:
        """Whether the file's modification time differs from the one last loaded."""
        try:
            return os.stat(self.path).st_mtime != self.mtime
        except OSError:
            return False


def presented_token(metadata: Mapping[str, Any]) -> bytes | None:
    """The driver token in a call's headers: ``fl-async-auth-token-bin`` (the SDK), or ``authorization: Bearer
    TOKEN`` (``fl-async ls``/``stop``); ``None`` without one."""
    token = metadata.get(AUTH_TOKEN_HEADER)
    if isinstance(token, bytes):
        return token
    bearer = metadata.get("authorization")
    if isinstance(bearer, str) and bearer.startswith("Bearer "):
        return bearer[len("Bearer ") :].strip().encode()
    return None


REPLAY_WINDOW = 1024
"""A keyed session's call counters are accepted once each, and at most this many behind the highest seen (calls
of one node run concurrently, so they may arrive out of order)."""


class _Window:
    """Which call counters of one session were accepted (the highest, and a bitmap of the ones below it)."""

    __slots__ = ("bits", "top")

    def __init__(self) -> None:
        self.top = 0
        self.bits = 0

    def fresh(self, counter: int) -> bool:
        if counter > self.top:
            return True
        behind = self.top - counter
        return behind < REPLAY_WINDOW and not (self.bits >> behind) & 1

    def mark(self, counter: int) -> None:
        if counter > self.top:
            self.bits = ((self.bits << (counter - self.top)) | 1) & ((1 << REPLAY_WINDOW) - 1)
            self.top = counter
        else:
            self.bits |= 1 << (self.top - counter)


class _KeyedSession:
    __slots__ = ("key", "token", "window")

    def __init__(self, token: bytes, key: bytes) -> None:
        self.token = token
        self.key = key
        self.window = _Window()


def public_key_from_wire(wire: bytes) -> ec.EllipticCurvePublicKey:
    """The public key of an SSH wire encoding (:func:`fl_async._keys.ssh_wire`)."""
    name_len = int.from_bytes(wire[:4], "big")
    name = wire[4 : 4 + name_len].decode()
    return parse_public_key(f"{name} {base64.b64encode(wire).decode()}")


class IdentityCallers:
    """The link's :class:`~fl_async.superlink.admission.CallerCheck`: driver tokens and node key registrations
    around the session credentials check ``inner``.

    Args:
        inner: the session credentials check (:class:`~fl_async.superlink.admission.SessionCallers`).
        tokens: the driver tokens, or ``None`` (Driver API open to whoever reaches it).
        allow_list: the node keys allowed to register, or ``None`` (any key, or none).
        clock: Unix time in seconds (registration timestamps).

    A CreateNode with key headers makes a caller of kind ``"node"`` with the key's node id and
    ``public_key`` set (the signature, timestamp window, replay and allow-list checked first).
    """

    def __init__(
        self,
        inner: CallerCheck,
        *,
        tokens: DriverTokens | None = None,
        allow_list: AllowList | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.inner = inner
        self.tokens = tokens
        self.allow_list = allow_list
        self.clock = clock
        self._seen: OrderedDict[bytes, float] = OrderedDict()  # signature digest -> when it leaves the window
        self.link_key: ec.EllipticCurvePrivateKey | None = None
        """The link's own key (``--auth-superlink-private-key``) for nodes on its curve; others get an ephemeral key."""
        self._link_keys: dict[str, ec.EllipticCurvePrivateKey] = {}
        self._sessions: dict[int, _KeyedSession] = {}
        self.node_lookup: Callable[[int], tuple[bytes, bytes] | None] = lambda node_id: None
        """``node_id -> (session token, public key wire)`` of a registered node, else ``None`` (set by the link):
        prunes sessions of nodes gone, and rebuilds a keyed session the link does not hold (e.g. a registration
        restored from a database after a restart) when the link's key is configured (:attr:`link_key`)."""

    @property
    def keys_required(self) -> bool:
        """Whether nodes must register with a listed key."""
        return self.allow_list is not None

    def __call__(self, api: str, metadata: Mapping[str, Any]) -> Caller:
        """See :class:`~fl_async.superlink.admission.CallerCheck`."""
        if api in ("Driver", "Admin"):  # the Admin API shares the Driver API's port and its tokens
            owner = self.tokens.owner(presented_token(metadata)) if self.tokens is not None else ""
            caller = self.inner(api, metadata)
            return replace(caller, owner=owner) if owner else caller
        if NODE_PUBLIC_KEY_HEADER in metadata:
            return self._registration(metadata)
        caller = self.inner(api, metadata)
        if caller.kind == "node" and (self._sessions or self.link_key is not None):
            token = metadata.get(NODE_TOKEN_HEADER)
            session = self._sessions.get(caller.node_id)
            if session is None or not isinstance(token, bytes) or not hmac.compare_digest(session.token, token):
                session = self._restore(caller.node_id)
            if session is not None and isinstance(token, bytes) and hmac.compare_digest(session.token, token):
                return replace(caller, verify_body=self._proof(session, caller.node_id, metadata))
        return caller

    def _restore(self, node_id: int) -> _KeyedSession | None:
        """The keyed session of a registered node this link holds no session for, rebuilt with the configured link
        key (``None``: not keyed, no link key, or another curve; its calls then rest on the session credentials)."""
        if self.link_key is None:
            return None
        found = self.node_lookup(node_id)
        if found is None or not found[1]:
            return None
        token, wire = found
        node_key = public_key_from_wire(wire)
        if node_key.curve.name != self.link_key.curve.name:
            return None
        session = _KeyedSession(token, call_key(self.link_key, node_key, token, wire))
        self._sessions[node_id] = session
        return session

    def _proof(self, session: _KeyedSession, node_id: int, metadata: Mapping[str, Any]) -> Callable[[str, bytes], bool]:
        """The body check of a keyed session's call: its counter must be fresh (replay window) and its HMAC match."""
        proof = metadata.get(NODE_PROOF_HEADER)
        if not isinstance(proof, bytes) or len(proof) != 40:
            raise UnauthenticatedError(
                f"node {node_id} registered with a key: every call must carry its proof ({NODE_PROOF_HEADER})"
            )
        counter, mac = int.from_bytes(proof[:8], "big"), proof[8:]
        if not session.window.fresh(counter):
            raise UnauthenticatedError(f"node {node_id}: call {counter} was replayed or is too old")

        def verify(method: str, body: bytes) -> bool:
            if not hmac.compare_digest(call_mac(session.key, method, counter, body), mac):
                return False
            if not session.window.fresh(counter):  # a concurrent call with the same counter won
                return False
            session.window.mark(counter)
            return True

        return verify

    def _alive(self, node_id: int, token: bytes) -> bool:
        found = self.node_lookup(node_id)
        return found is not None and hmac.compare_digest(found[0], token)

    def open_session(self, node_id: int, public_key: bytes, token: bytes) -> str:
        """A keyed node registered as ``node_id`` with session ``token``: derive the key its calls are
        authenticated with (ECDH of its key and the link's, :func:`fl_async._keys.call_key`) and return the link's
        public key (OpenSSH text) for the node to derive the same key."""
        node_key = public_key_from_wire(public_key)
        curve = node_key.curve.name
        link = self._link_keys.get(curve)
        if link is None:
            if self.link_key is not None and self.link_key.curve.name == curve:
                link = self.link_key
            else:
                link = ec.generate_private_key(type(node_key.curve)())
            self._link_keys[curve] = link
        if len(self._sessions) >= 64 and len(self._sessions) % 64 == 0:  # drop sessions of nodes gone meanwhile
            self._sessions = {n: s for n, s in self._sessions.items() if self._alive(n, s.token)}
        self._sessions[node_id] = _KeyedSession(token, call_key(link, node_key, token, public_key))
        return public_key_text(link.public_key())

    def _registration(self, metadata: Mapping[str, Any]) -> Caller:
        text, stamp, signature = (
            metadata.get(NODE_PUBLIC_KEY_HEADER),
            metadata.get(NODE_TIMESTAMP_HEADER),
            metadata.get(NODE_SIGNATURE_HEADER),
        )
        if not isinstance(text, str) or not isinstance(stamp, str) or not isinstance(signature, bytes):
            raise UnauthenticatedError(
                f"node key registration needs the headers {NODE_PUBLIC_KEY_HEADER}, {NODE_TIMESTAMP_HEADER} "
                f"and {NODE_SIGNATURE_HEADER}"
            )
        try:
            key = parse_public_key(text[:4096])
            signed_at = float(stamp)
        except ValueError as exc:
            raise UnauthenticatedError(f"node key registration: {exc}") from None
        wire = ssh_wire(key)
        node_id = node_id_for(key)
        if self.allow_list is not None and wire not in self.allow_list.keys:
            raise UnauthenticatedError(
                f"the node's public key (node {node_id}) is not on the link's allow-list (--auth-list-public-keys)"
            )
        now = self.clock()
        if not abs(now - signed_at) <= REGISTRATION_WINDOW:
            raise UnauthenticatedError(
                f"node key registration: the signed timestamp is {now - signed_at:+.0f} s off the link's clock "
                f"(at most {REGISTRATION_WINDOW:g} s either way): check the node's clock"
            )
        if not verify_registration(key, stamp, signature):
            raise UnauthenticatedError(f"node key registration: bad signature for the key of node {node_id}")
        self._remember(hashlib.sha256(signature).digest(), signed_at + REGISTRATION_WINDOW, now)
        return Caller("node", node_id=node_id, public_key=wire)

    def _remember(self, digest: bytes, until: float, now: float) -> None:
        seen = self._seen
        if digest in seen:
            raise UnauthenticatedError("node key registration: this signed request was used already (replay)")
        while seen and (next(iter(seen.values())) < now or len(seen) >= _MAX_SEEN):
            seen.popitem(last=False)
        seen[digest] = until


def run_access_problem(run: RunRecord | None, caller: Caller, run_id: int) -> str:
    """Why ``caller`` may not act on run ``run_id`` (``""``: it may, or the run is unknown and the call itself
    answers NOT_FOUND). A run belongs to the driver that created it: the caller must present the run's
    credentials of ``CreateRunResponse`` (the SDK sends them in every call's headers) and, when the link has
    driver tokens, the token the run was created with."""
    if run is None:
        return ""
    if caller.kind == "driver" and caller.run_id == run_id and (not run.owner or caller.owner == run.owner):
        return ""
    how = "its run credentials" + (" and the token it was created with" if run.owner else "")
    return (
        f"run {run_id} belongs to another driver: only the driver that created it may use it ({how}, which the "
        "SDK sends in every call's headers)"
    )
