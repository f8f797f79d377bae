"""Messages: ``Metadata``, ``Error``, ``Message``, ``MessageType``, ``ErrorCode`` and ``DEFAULT_TTL``.

Semantics follow Flower 1.9's ``flwr.common.message`` except that creating a reply whose time to live
would be <= 0 raises :class:`~fl_async.errors.TTLExpiredError` at once (Flower builds it and
the SuperLink silently drops it later).
"""

from __future__ import annotations

import time
from typing import Any

from fl_async.common.records import RecordSet
from fl_async.errors import TTLExpiredError

__all__ = ["DEFAULT_TTL", "Error", "ErrorCode", "Message", "MessageType", "Metadata"]

DEFAULT_TTL = 3600
"""Default time to live of an instruction, in seconds (Flower 1.9's value)."""


class _Namespace:
    def __new__(cls, *args: object, **kwargs: object) -> Any:
        raise TypeError(f"{cls.__name__} is a namespace and cannot be instantiated.")


class MessageType(_Namespace):
    """Message types a ClientApp dispatches on (as Flower 1.9)."""

    TRAIN = "train"
    EVALUATE = "evaluate"
    QUERY = "query"


class ErrorCode(_Namespace):
    """Codes of :class:`Error` (0-3 as Flower 1.9; 4-7 are fl-async's)."""

    UNKNOWN = 0
    LOAD_CLIENT_APP_EXCEPTION = 1
    CLIENT_APP_RAISED_EXCEPTION = 2
    NODE_UNAVAILABLE = 3
    MESSAGE_EXPIRED = 4
    """The instruction's TTL ran out before a reply arrived (set by the SuperLink)."""
    INVALID_REPLY = 5
    """The ClientApp returned something that is not a reply to the instruction."""
    PAYLOAD_UNAVAILABLE = 6
    """A large payload could not be transferred or failed its integrity check."""
    CANCELLED = 7
    """The driver cancelled the instruction, or an operator stopped its run, before a reply arrived (set by the
    SuperLink; the node is told to stop handling it)."""

    @staticmethod
    def name(code: int) -> str:
        """Name of a code, e.g. ``"NODE_UNAVAILABLE"`` (``"UNKNOWN(<code>)"`` if not known)."""
        for key, value in vars(ErrorCode).items():
            if key.isupper() and value == code:
                return key
        return f"UNKNOWN({code})"


class Metadata:
    """Routing and bookkeeping of a :class:`Message` (Flower 1.9's constructor order).

    Args:
        run_id: the run this message belongs to.
        message_id: assigned by the SuperLink; ``""`` before pushing.
        src_node_id: sender node id (0 = the server app).
        dst_node_id: receiver node id (0 = the server app).
        reply_to_message: for a reply, the id of the instruction it answers; ``""`` otherwise.
        group_id: free label grouping messages, e.g. the round number.
        ttl: time to live in seconds, counted from :attr:`created_at`.
        message_type: ``"train"``, ``"evaluate"``, ``"query"`` or a custom type.
        partition_id: simulation only; never sent over the wire.

    ``created_at`` (Unix seconds) is set when the :class:`Message` is built.
    """

    __slots__ = (
        "_created_at",
        "_dst_node_id",
        "_group_id",
        "_message_id",
        "_message_type",
        "_partition_id",
        "_reply_to_message",
        "_run_id",
        "_src_node_id",
        "_ttl",
    )

    def __init__(
        self,
        run_id: int,
        message_id: str,
        src_node_id: int,
        dst_node_id: int,
        reply_to_message: str,
        group_id: str,
        ttl: float,
        message_type: str,
        partition_id: int | None = None,
    ) -> None:
        self._run_id = run_id
        self._message_id = message_id
        self._src_node_id = src_node_id
        self._dst_node_id = dst_node_id
        self._reply_to_message = reply_to_message
        self._group_id = group_id
        self._ttl = ttl
        self._message_type = message_type
        self._partition_id = partition_id
        self._created_at = 0.0

    @property
    def run_id(self) -> int:
        """Run id (read-only)."""
        return self._run_id

    @property
    def message_id(self) -> str:
        """Message id assigned by the SuperLink (read-only)."""
        return self._message_id

    @property
    def src_node_id(self) -> int:
        """Sender node id (read-only)."""
        return self._src_node_id

    @property
    def reply_to_message(self) -> str:
        """Id of the instruction this message answers (read-only)."""
        return self._reply_to_message

    @property
    def reply_to_message_id(self) -> str:
        """Same as :attr:`reply_to_message` (newest Flower's name; read-only)."""
        return self._reply_to_message

    @property
    def dst_node_id(self) -> int:
        """Receiver node id."""
        return self._dst_node_id

    @dst_node_id.setter
    def dst_node_id(self, value: int) -> None:
        self._dst_node_id = value

    @property
    def group_id(self) -> str:
        """Group label."""
        return self._group_id

    @group_id.setter
    def group_id(self, value: str) -> None:
        self._group_id = value

    @property
    def ttl(self) -> float:
        """Time to live in seconds."""
        return self._ttl

    @ttl.setter
    def ttl(self, value: float) -> None:
        self._ttl = value

    @property
    def message_type(self) -> str:
        """Message type."""
        return self._message_type

    @message_type.setter
    def message_type(self, value: str) -> None:
        self._message_type = value

    @property
    def partition_id(self) -> int | None:
        """Simulation partition id (never on the wire)."""
        return self._partition_id

    @partition_id.setter
    def partition_id(self, value: int | None) -> None:
        self._partition_id = value

    @property
    def created_at(self) -> float:
        """Creation time, Unix seconds."""
        return self._created_at

    @created_at.setter
    def created_at(self, value: float) -> None:
        self._created_at = value

    def _fields(self) -> tuple[Any, ...]:
        return tuple(getattr(self, s) for s in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Metadata):
            return NotImplemented
        return self._fields() == other._fields()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        inner = ", ".join(f"{s[1:]}={getattr(self, s)!r}" for s in self.__slots__)
        return f"Metadata({inner})"


class Error:
    """An error carried by a :class:`Message` instead of content.

    Args:
        code: an :class:`ErrorCode` value.
        reason: human-readable explanation, or ``None``.
    """

    __slots__ = ("_code", "_reason")

    def __init__(self, code: int, reason: str | None = None) -> None:
        self._code = int(code)
        self._reason = reason

    @property
    def code(self) -> int:
        """Error code (read-only)."""
        return self._code

    @property
    def reason(self) -> str | None:
        """Explanation (read-only)."""
        return self._reason

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Error):
            return NotImplemented
        return (self._code, self._reason) == (other._code, other._reason)

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"Error(code={self._code!r} [{ErrorCode.name(self._code)}], reason={self._reason!r})"


_FORMS = (
    "Message takes one of: Message(metadata, content=... | error=...); "
    "Message(content, dst_node_id, message_type, *, ttl=None, group_id=None); "
    "Message(content | error, *, reply_to=message, ttl=None)"
)


class Message:
    """A message between the server app and a node: metadata plus content *or* error.

    Three ways to build one (the first is Flower 1.9's, the others newest Flower's)::

        Message(metadata, content=rs)                        # explicit metadata (or error=...)
        Message(rs, dst_node_id, message_type, ttl=..., group_id=...)   # an instruction for a node
        Message(rs, reply_to=msg, ttl=...)                   # a reply (or Message(error, reply_to=msg))

    An instruction built without metadata has ``run_id`` 0, which the driver replaces with its run's id
    when pushing it, and ``ttl`` :data:`DEFAULT_TTL` unless given. A reply gets its metadata from
    ``reply_to`` exactly as :meth:`create_reply` (whose TTL rule it follows).

    Args:
        metadata: the message's :class:`Metadata`; its ``created_at`` is set to now.
        content: a :class:`RecordSet`, or ``None`` when ``error`` is given.
        error: an :class:`Error`, or ``None`` when ``content`` is given.
        dst_node_id, message_type, ttl, group_id: an instruction's routing (newest Flower's form).
        reply_to: the instruction this message answers (newest Flower's form).

    Raises:
        ValueError: both or neither of ``content`` and ``error`` are given.
        TypeError: the arguments match none of the three forms (the message lists them), or a value
            has the wrong type.
        TTLExpiredError: a reply's TTL would be <= 0 (as :meth:`create_reply`).
    """

    __slots__ = ("_content", "_error", "_metadata")
    _metadata: Metadata
    _content: RecordSet | None
    _error: Error | None

    def __init__(
        self,
        *args: Any,
        content: RecordSet | None = None,
        error: Error | None = None,
        dst_node_id: int | None = None,
        message_type: str | None = None,
        ttl: float | None = None,
        group_id: str | None = None,
        reply_to: Message | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        if (args and isinstance(args[0], Metadata)) or metadata is not None:  # Flower 1.9's form
            if len(args) > 3 or any(v is not None for v in (dst_node_id, message_type, ttl, group_id, reply_to)):
                raise TypeError(_FORMS)
            given = dict(zip(("metadata", "content", "error"), args, strict=False))
            for name, value in (("metadata", metadata), ("content", content), ("error", error)):
                if value is not None:
                    if name in given:
                        raise TypeError(f"Message got multiple values for {name!r}")
                    given[name] = value
            self._init(given["metadata"], given.get("content"), given.get("error"))
            return
        if len(args) > 3 or (len(args) > 1 and reply_to is not None):
            raise TypeError(_FORMS)
        if args:
            first = args[0]
            if isinstance(first, Error) and error is None:
                error = first
            elif content is None and error is None:
                content = first
            else:
                raise TypeError(_FORMS)
        if len(args) > 1:
            if dst_node_id is not None:
                raise TypeError("Message got multiple values for 'dst_node_id'")
            dst_node_id = args[1]
        if len(args) > 2:
            if message_type is not None:
                raise TypeError("Message got multiple values for 'message_type'")
            message_type = args[2]
        if reply_to is not None:
            if not isinstance(reply_to, Message):
                raise TypeError(f"reply_to must be a Message, got {type(reply_to).__name__}")
            if any(v is not None for v in (dst_node_id, message_type, group_id)):
                raise TypeError("a reply takes its dst_node_id, message_type and group_id from reply_to; " + _FORMS)
            if (content is None) == (error is None):
                raise ValueError("Either `content` or `error` must be set, but not both.")
            reply = (
                reply_to.create_reply(content, ttl) if content is not None else reply_to.create_error_reply(error, ttl)  # type: ignore[arg-type]
            )
            self._metadata, self._content, self._error = reply._metadata, reply._content, reply._error
            return
        if content is None or error is not None or dst_node_id is None or message_type is None:
            raise TypeError(_FORMS)
        if isinstance(dst_node_id, bool) or not isinstance(dst_node_id, int):
            raise TypeError(f"dst_node_id must be an int, got {type(dst_node_id).__name__}")
        if not isinstance(message_type, str):
            raise TypeError(f"message_type must be a str, got {type(message_type).__name__}")
        if group_id is not None and not isinstance(group_id, str):
            raise TypeError(f"group_id must be a str, got {type(group_id).__name__}")
        md = Metadata(
            run_id=0,  # set by the driver when pushing
            message_id="",
            src_node_id=0,
            dst_node_id=dst_node_id,
            reply_to_message="",
            group_id=group_id or "",
            ttl=DEFAULT_TTL if ttl is None else ttl,
            message_type=message_type,
        )
        self._init(md, content, None)

    def _init(self, metadata: Metadata, content: RecordSet | None, error: Error | None) -> None:
        if not isinstance(metadata, Metadata):
            raise TypeError(f"metadata must be a Metadata, got {type(metadata).__name__}")
        if (content is None) == (error is None):
            raise ValueError("Either `content` or `error` must be set, but not both.")
        if content is not None and not isinstance(content, RecordSet):
            raise TypeError(f"content must be a RecordSet, got {type(content).__name__}")
        if error is not None and not isinstance(error, Error):
            raise TypeError(f"error must be an Error, got {type(error).__name__}")
        metadata.created_at = time.time()
        self._metadata = metadata
        self._content = content
        self._error = error

    @property
    def metadata(self) -> Metadata:
        """The message's metadata."""
        return self._metadata

    @property
    def content(self) -> RecordSet:
        """The content.

        Raises:
            ValueError: this message carries an error instead (check :meth:`has_content` first).
        """
        if self._content is None:
            raise ValueError(
                f"Message has no content: it carries an error ({self._error!r}). "
                "Check message.has_content() or message.has_error() before reading content."
            )
        return self._content

    @content.setter
    def content(self, value: RecordSet) -> None:
        if self._error is not None:
            raise ValueError("A message with an error cannot get content.")
        if not isinstance(value, RecordSet):
            raise TypeError(f"content must be a RecordSet, got {type(value).__name__}")
        self._content = value

    @property
    def error(self) -> Error:
        """The error.

        Raises:
            ValueError: this message carries content instead.
        """
        if self._error is None:
            raise ValueError("Message has no error: it carries content. Check message.has_error() first.")
        return self._error

    @error.setter
    def error(self, value: Error) -> None:
        if self._content is not None:
            raise ValueError("A message with content cannot get an error.")
        if not isinstance(value, Error):
            raise TypeError(f"error must be an Error, got {type(value).__name__}")
        self._error = value

    def has_content(self) -> bool:
        """Whether the message carries content."""
        return self._content is not None

    def has_error(self) -> bool:
        """Whether the message carries an error."""
        return self._error is not None

    def _reply_metadata(self, ttl: float | None) -> Metadata:
        md = self._metadata
        if ttl is not None and not ttl > 0:  # also refuses NaN
            raise TTLExpiredError(f"reply ttl must be > 0 seconds, got {ttl}")
        return Metadata(
            run_id=md.run_id,
            message_id="",
            src_node_id=md.dst_node_id,
            dst_node_id=md.src_node_id,
            reply_to_message=md.message_id,
            group_id=md.group_id,
            ttl=ttl if ttl is not None else md.ttl,
            message_type=md.message_type,
            partition_id=md.partition_id,
        )

    def _finish_reply(self, reply: Message, ttl: float | None) -> Message:
        if ttl is None:
            md = self._metadata
            left = md.ttl - (reply.metadata.created_at - md.created_at)
            if left <= 0:
                raise TTLExpiredError(
                    f"cannot reply to message {md.message_id!r}: its ttl of {md.ttl} s ran out {-left:.3f} s ago"
                )
            reply.metadata.ttl = left
        return reply

    def create_reply(self, content: RecordSet, ttl: float | None = None) -> Message:
        """Build the reply to this message (as Flower 1.9's ``Message.create_reply``).

        Args:
            content: the reply's content.
            ttl: the reply's TTL in seconds; ``None`` = the time left on this message.

        Raises:
            TTLExpiredError: the resulting TTL would be <= 0 (this message has expired).
        """
        return self._finish_reply(Message(self._reply_metadata(ttl), content=content), ttl)

    def create_error_reply(self, error: Error, ttl: float | None = None) -> Message:
        """Build an error reply to this message; TTL rule as :meth:`create_reply`.

        Raises:
            TTLExpiredError: the resulting TTL would be <= 0.
        """
        return self._finish_reply(Message(self._reply_metadata(ttl), error=error), ttl)

    def __repr__(self) -> str:
        body = f"content={self._content!r}" if self._content is not None else f"error={self._error!r}"
        return f"Message(metadata={self._metadata!r}, {body})"
