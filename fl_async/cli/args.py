"""Sans-IO checks and parsers behind the ``fl-async`` command line (no typer, no I/O but reading files).

Every function raises :class:`CliArgumentError` with a one-line, user-facing reason; the CLI prints it
and exits with status 2 before anything listens or connects.

``KEY=VALUE`` config pairs (``--run-config`` / ``--node-config``) follow the TOML-ish rule of Flower's
``--run-config``, made forgiving about unquoted strings. Each value is, in this order:

- ``true`` / ``false`` (any case) -> ``bool``;
- an integer literal (``42``, ``-7``, ``1_000``, ``0x1f``) -> ``int`` (must fit signed 64-bit);
  leading zeros (``007``) keep the text as ``str``;
- a decimal float literal (``0.5``, ``1e-3``, ``-.25``; ``inf``/``nan`` and literals overflowing to infinity,
  e.g. ``1e999``, are *not* floats) -> ``float``;
- a string in single or double quotes (``"42"``, ``'a b'``) -> that ``str`` without the quotes;
- anything else -> the text itself as ``str`` (``plot=acc.png`` gives ``"acc.png"``).

One option value may hold several pairs separated by spaces (``--run-config "a=1 b=2"``, split like a
shell would but keeping the quotes, so ``msg='hello world'`` keeps its space); the option may also be repeated.
A key given
twice is an error, so is a pair without ``=`` or with an empty key.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from fl_async._net import ServerTLS, parse_address, read_pem
from fl_async.errors import FlAsyncError

__all__ = [
    "CliArgumentError",
    "check_address",
    "parse_config_pairs",
    "parse_config_value",
    "parse_ray_options",
    "resolve_client_tls",
    "resolve_link_tls",
    "split_app_ref",
]

_INT_RE = re.compile(r"[+-]?(0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+|[0-9][0-9_]*)")
_FLOAT_RE = re.compile(r"[+-]?([0-9][0-9_]*\.[0-9_]*|\.[0-9][0-9_]*|[0-9][0-9_]*)([eE][+-]?[0-9]+)?")
_KEY_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*")
_INT64 = (-(2**63), 2**64 - 1)  # the record integer range: signed or unsigned 64-bit


class CliArgumentError(FlAsyncError, ValueError):
    """A command-line value was refused; ``str(exc)`` is the one-line reason shown to the user."""


def parse_config_value(text: str) -> bool | int | float | str:
    """Turn the text after ``=`` into ``bool``, ``int``, ``float`` or ``str`` (rule in the module docstring).

    Raises:
        CliArgumentError: an integer literal outside ``[-2**63, 2**64 - 1]`` (the record integer range).
    """
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if _INT_RE.fullmatch(text):
        try:
            value = int(text, 0)
        except ValueError:  # e.g. "007" (leading zeros) or misplaced underscores: keep the text
            return text
        if not _INT64[0] <= value <= _INT64[1]:
            raise CliArgumentError(f"integer {text} is outside the 64-bit range [-2**63, 2**64 - 1]")
        return value
    if _FLOAT_RE.fullmatch(text) and any(c.isdigit() for c in text):
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(number):  # an overflowing literal (1e999) would be inf: it stays text, as "inf" does
                return number
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text


def parse_config_pairs(values: Iterable[str] | None, *, option: str) -> dict[str, bool | int | float | str]:
    """Parse the values of a repeated ``KEY=VALUE`` option into a dict.

    Args:
        values: the raw option values, each holding one or more space-separated pairs.
        option: the option's name for messages, e.g. ``"--run-config"``.

    Raises:
        CliArgumentError: unbalanced quotes, a pair without ``=``, a bad or repeated key, or a bad value.
    """
    out: dict[str, bool | int | float | str] = {}
    for raw in values or ():
        tokens = _split_pairs(raw, option=option)
        if not tokens:
            raise CliArgumentError(f"{option} got an empty value; expected KEY=VALUE")
        for token in tokens:
            key, sep, value = token.partition("=")
            if not sep:
                raise CliArgumentError(f"{option} {token!r}: expected KEY=VALUE")
            if not _KEY_RE.fullmatch(key):
                raise CliArgumentError(f"{option} {token!r}: key must be letters, digits, '_', '-' or '.', not {key!r}")
            if key in out:
                raise CliArgumentError(f"{option}: key {key!r} is given twice")
            try:
                out[key] = parse_config_value(value)
            except CliArgumentError as exc:
                raise CliArgumentError(f"{option} {token!r}: {exc}") from None
    return out


def _split_pairs(raw: str, *, option: str) -> list[str]:
    """Split on whitespace outside quotes, keeping the quotes (``'a="x y" b=2'`` -> two tokens)."""
    tokens: list[str] = []
    current: list[str] = []
    quote = ""
    started = False
    for ch in raw:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = ""
        elif ch in "\"'":
            quote, started = ch, True
            current.append(ch)
        elif ch.isspace():
            if started:
                tokens.append("".join(current))
                current, started = [], False
        else:
            current.append(ch)
            started = True
    if quote:
        raise CliArgumentError(f"{option} {raw!r}: unbalanced {quote} quote")
    if started:
        tokens.append("".join(current))
    return tokens


def check_address(address: str, *, option: str) -> str:
    """Validate ``HOST:PORT`` (IPv6 as ``[::1]:PORT``) and return it unchanged.

    Raises:
        CliArgumentError: the address is malformed (reason from :func:`fl_async._net.parse_address`).
    """
    try:
        parse_address(address)
    except ValueError as exc:
        raise CliArgumentError(f"{option}: {exc}") from None
    return address


def _readable(path: Path | str | None, *, option: str, what: str) -> bytes:
    assert path is not None
    try:
        return read_pem(Path(path), what=what)
    except ValueError as exc:
        raise CliArgumentError(f"{option}: {exc}") from None


def resolve_link_tls(
    *,
    insecure: bool,
    ssl_ca_certfile: Path | str | None,
    ssl_certfile: Path | str | None,
    ssl_keyfile: Path | str | None,
) -> ServerTLS | None:
    """Decide the SuperLink's transport security from its flags (``None`` means plaintext).

    Unlike Flower 1.9 (where ``--insecure`` silently wins), ``--insecure`` together with any certificate
    flag is refused, as is an incomplete trio. The three files are read and checked to be PEM, and the
    key is checked against the certificate, so nothing starts listening with a broken setup.

    Raises:
        CliArgumentError: conflicting, incomplete or missing flags, or an unreadable or mismatched file.
    """
    flags = {
        "--ssl-ca-certfile": ssl_ca_certfile,
        "--ssl-certfile": ssl_certfile,
        "--ssl-keyfile": ssl_keyfile,
    }
    given = [name for name, value in flags.items() if value is not None]
    if insecure:
        if given:
            raise CliArgumentError(f"--insecure cannot be combined with {', '.join(given)}; choose one")
        return None
    if not given:
        raise CliArgumentError(
            "TLS certificates are required unless --insecure is given: pass --ssl-ca-certfile, "
            "--ssl-certfile and --ssl-keyfile (or --insecure for plaintext)"
        )
    missing = [name for name in flags if name not in given]
    if missing:
        raise CliArgumentError(
            f"incomplete TLS flags: {', '.join(missing)} missing (give all three of "
            "--ssl-ca-certfile, --ssl-certfile, --ssl-keyfile)"
        )
    ca = _readable(ssl_ca_certfile, option="--ssl-ca-certfile", what="CA certificate")
    cert = _readable(ssl_certfile, option="--ssl-certfile", what="certificate")
    key = _readable(ssl_keyfile, option="--ssl-keyfile", what="private key")
    tls = ServerTLS(ca_certfile=ca, certfile=cert, keyfile=key)
    from fl_async._net import server_ssl_context

    try:
        server_ssl_context(tls)
    except ValueError as exc:
        raise CliArgumentError(f"--ssl-certfile/--ssl-keyfile: {exc}") from None
    return tls


def resolve_client_tls(*, insecure: bool, root_certificates: Path | str | None) -> bytes | None:
    """Decide a node's or server app's transport security (``None`` means plaintext).

    Exactly one of ``--insecure`` and ``--root-certificates`` must be given (Flower 1.9 refuses both too;
    giving neither is refused here rather than silently picking plaintext or the system trust store).

    Returns:
        The root certificates as PEM bytes, or ``None`` for plaintext.

    Raises:
        CliArgumentError: both or neither flag, or the file is unreadable / not PEM / not certificates.
    """
    if insecure and root_certificates is not None:
        raise CliArgumentError("--insecure cannot be combined with --root-certificates; choose one")
    if insecure:
        return None
    if root_certificates is None:
        raise CliArgumentError(
            "choose transport security: --root-certificates FILE (TLS, the link's CA certificate) "
            "or --insecure (plaintext)"
        )
    pem = _readable(root_certificates, option="--root-certificates", what="root certificates")
    from fl_async._net import client_ssl_context

    try:
        client_ssl_context(pem)
    except ValueError as exc:
        raise CliArgumentError(f"--root-certificates: {exc}") from None
    return pem


def split_app_ref(ref: str, *, what: str) -> str:
    """Check the shape of a ``MODULE:ATTR`` reference (``pkg.mod:obj.attr``) and return it.

    Raises:
        CliArgumentError: no ``:``, an empty side, or names that are not dotted identifiers.
    """
    module, sep, attr = ref.partition(":")
    ok = (
        bool(sep)
        and all(p.isidentifier() for p in module.split("."))
        and all(p.isidentifier() for p in attr.split("."))
    )
    if not ok:
        raise CliArgumentError(f"{what} {ref!r} is not MODULE:ATTR (e.g. 'server:app' or 'pkg.server:app')")
    return ref


def read_token_file(path: Path) -> str:
    """The driver token in ``path`` (its first non-blank line; ``--auth-token-file``).

    Raises:
        CliArgumentError: unreadable, or no token in it.
    """
    try:
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except (OSError, UnicodeDecodeError) as exc:
        raise CliArgumentError(f"--auth-token-file {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not lines:
        raise CliArgumentError(f"--auth-token-file {path} holds no token")
    return lines[0]


def check_identity_files(
    *,
    insecure: bool,
    driver_auth_token_file: Path | None,
    auth_list_public_keys: Path | None,
    auth_superlink_keys: tuple[Path | None, Path | None],
) -> None:
    """Check the link's credential files before it binds anything: the token file and the allow-list parse,
    the allow-list comes with TLS, and the link's key files load and match.

    Raises:
        CliArgumentError: naming the option and the problem.
    """
    from fl_async._keys import load_private_key, load_public_key, ssh_wire
    from fl_async.superlink.identity import AllowList, DriverTokens

    if auth_list_public_keys is not None and insecure:
        raise CliArgumentError(
            "--auth-list-public-keys needs TLS (node authentication requires it): pass --ssl-ca-certfile, "
            "--ssl-certfile and --ssl-keyfile instead of --insecure"
        )
    try:
        if driver_auth_token_file is not None:
            DriverTokens(driver_auth_token_file)
        if auth_list_public_keys is not None:
            AllowList(auth_list_public_keys)
        private, public = auth_superlink_keys
        key = load_private_key(private) if private is not None else None
        if public is not None:
            listed = load_public_key(public)
            if key is not None and ssh_wire(listed) != ssh_wire(key.public_key()):
                raise ValueError(f"--auth-superlink-public-key {public} is not the public key of {private}")
    except ValueError as exc:
        raise CliArgumentError(str(exc)) from None


def parse_ray_options(backend: str, address: str | None, resources: str | None, per_actor: int | None) -> Any:
    """The Ray backend's options (``None`` for the in-process backend); refuses misplaced or bad flags.

    Raises:
        CliArgumentError: an unknown backend, Ray flags without ``--backend ray``, bad ``--node-resources``,
            or Ray not installed (its message says what to install).
    """
    if backend not in ("in-process", "ray"):
        raise CliArgumentError(f"--backend must be 'in-process' or 'ray', got {backend!r}")
    if backend != "ray":
        given = [f for f, v in (("--ray-address", address), ("--node-resources", resources)) if v is not None]
        given += ["--nodes-per-actor"] if per_actor is not None else []
        if given:
            raise CliArgumentError(f"{' and '.join(given)} {'needs' if len(given) == 1 else 'need'} --backend ray")
        return None
    from fl_async._ray_backend import RayNotInstalledError, RayOptions, parse_node_resources, require_ray

    try:
        parsed = parse_node_resources(resources or "")
        require_ray()
    except (ValueError, RayNotInstalledError) as exc:
        raise CliArgumentError(str(exc)) from None
    return RayOptions(address=address or None, node_resources=parsed, nodes_per_actor=per_actor)
