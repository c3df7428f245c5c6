"""The canonical envelope (a normalised inbound message) and the routing decision.

Both are small frozen, slotted dataclasses, serialised with orjson (which encodes
dataclasses natively). ``from_dict`` is the hot-path decoder: it checks types by
hand instead of going through a validation library, and raises
:class:`~router.exceptions.InvalidEnvelope` naming the offending field.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ..skills.vocabulary import (
    SYNCHRONOUS_CHANNELS,
    Band,
    Channel,
    EntryKind,
    MessageFacts,
    Priority,
    TagHit,
)
from .exceptions import InvalidEnvelope

__all__ = [
    "DECISION_SCHEMA_VERSION",
    "ENVELOPE_SCHEMA_VERSION",
    "Attachment",
    "Band",
    "Channel",
    "Customer",
    "Decision",
    "Entry",
    "EntryKind",
    "Envelope",
    "MessageFacts",
    "Order",
    "Priority",
    "TagHit",
    "dumps",
    "message_id",
]

ENVELOPE_SCHEMA_VERSION: Final = 1
DECISION_SCHEMA_VERSION: Final = 1
MAX_TEXT_CHARS: Final = 20_000  # longer texts are truncated by adapters, refused by the router


def message_id(channel: str, account: str, channel_msg_id: str) -> str:
    """Stable envelope id: retries of the same channel message get the same id."""
    digest = hashlib.blake2b(
        f"{channel}\x1f{account}\x1f{channel_msg_id}".encode(), digest_size=12
    ).hexdigest()
    return f"{channel}-{digest}"


@dataclass(frozen=True, slots=True)
class Customer:
    """The customer as the channel identifies them (never a raw phone number)."""

    id: str
    handle: str | None = None  # masked display handle
    tier: str | None = None  # tier declared by the channel (the Redis tier wins when set)


@dataclass(frozen=True, slots=True)
class Attachment:
    """A reference to an attachment; bytes never travel on Kafka."""

    kind: str  # image, voice, video, file
    ref: str  # media id, URL or storage key
    name: str | None = None
    size_bytes: int | None = None


@dataclass(frozen=True, slots=True)
class Entry:
    """The customer's entry point (live room, order page, product page, IVR menu)."""

    kind: EntryKind
    id: str


@dataclass(frozen=True, slots=True)
class Order:
    """The order the message is about, if known."""

    id: str
    amount: float | None = None  # in yuan


@dataclass(frozen=True, slots=True)
class Envelope:
    """One normalised inbound customer message (schema version 1)."""

    id: str
    channel: Channel
    account: str
    channel_msg_id: str
    conversation_id: str
    customer: Customer
    text: str  # PII-masked
    received_at_ms: int
    sent_at_ms: int | None = None
    attachments: tuple[Attachment, ...] = ()
    entry: Entry | None = None
    order: Order | None = None
    hints: tuple[str, ...] = ()  # intent hints from the channel (IVR digits, menu keys)
    meta: Mapping[str, str | int] = field(default_factory=dict)
    raw_ref: str | None = None
    schema: int = ENVELOPE_SCHEMA_VERSION

    def __repr__(self) -> str:
        text = self.text if len(self.text) <= 40 else self.text[:39] + "…"
        return (
            f"Envelope({self.id} {self.channel}/{self.account} conv={self.conversation_id} "
            f"customer={self.customer.id} text={text!r})"
        )

    @property
    def synchronous(self) -> bool:
        """Phone and live-stream customers are waiting right now."""
        return self.channel in SYNCHRONOUS_CHANNELS

    def facts(self) -> MessageFacts:
        """What the decision logic reads of this message, in its own types."""
        return MessageFacts(
            channel=self.channel,
            entry=self.entry.kind if self.entry is not None else None,
            hints=self.hints,
            order_amount=self.order.amount if self.order is not None else None,
            declared_tier=self.customer.tier,
        )

    def to_json(self) -> bytes:
        """orjson bytes of this envelope."""
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Envelope:
        """Decode and validate; raises InvalidEnvelope with the reason."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidEnvelope(f"not JSON: {exc}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: Any) -> Envelope:
        """Build from decoded JSON, checking every field's type."""
        if not isinstance(data, dict):
            raise InvalidEnvelope(f"envelope must be a JSON object, got {type(data).__name__}")
        schema = data.get("schema", ENVELOPE_SCHEMA_VERSION)
        if schema != ENVELOPE_SCHEMA_VERSION:
            raise InvalidEnvelope(
                f"unsupported envelope schema {schema!r}; this router reads schema "
                f"{ENVELOPE_SCHEMA_VERSION}"
            )
        try:
            channel = Channel(data["channel"])
        except KeyError:
            raise InvalidEnvelope("missing field 'channel'") from None
        except ValueError:
            raise InvalidEnvelope(
                f"field 'channel' must be one of {[c.value for c in Channel]}, "
                f"got {data['channel']!r}"
            ) from None
        text = _str(data, "text")
        if len(text) > MAX_TEXT_CHARS:
            raise InvalidEnvelope(f"field 'text' is {len(text)} characters; limit {MAX_TEXT_CHARS}")
        cust = data.get("customer")
        if not isinstance(cust, dict):
            raise InvalidEnvelope("field 'customer' must be an object with an 'id'")
        entry_d = data.get("entry")
        order_d = data.get("order")
        meta = data.get("meta") or {}
        if not isinstance(meta, dict):
            raise InvalidEnvelope("field 'meta' must be an object")
        hints = data.get("hints") or ()
        if not isinstance(hints, list | tuple) or not all(isinstance(h, str) for h in hints):
            raise InvalidEnvelope("field 'hints' must be a list of strings")
        return cls(
            id=_str(data, "id"),
            channel=channel,
            account=_str(data, "account"),
            channel_msg_id=_str(data, "channel_msg_id"),
            conversation_id=_str(data, "conversation_id"),
            customer=Customer(
                id=_str(cust, "id", "customer.id"),
                handle=_opt_str(cust, "handle", "customer.handle"),
                tier=_opt_str(cust, "tier", "customer.tier"),
            ),
            text=text,
            received_at_ms=_int(data, "received_at_ms"),
            sent_at_ms=_opt_int(data, "sent_at_ms"),
            attachments=tuple(_attachment(a) for a in data.get("attachments") or ()),
            entry=_entry(entry_d) if entry_d is not None else None,
            order=_order(order_d) if order_d is not None else None,
            hints=tuple(hints),
            meta=meta,
            raw_ref=_opt_str(data, "raw_ref"),
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """Where one message was routed, and why (schema version 1)."""

    message_id: str
    conversation_id: str
    channel: Channel
    customer_id: str
    tags: tuple[TagHit, ...]
    priority: Priority
    skill_group: str
    queue: str
    rule_id: str
    config_version: str
    received_at_ms: int
    decided_at_ms: int
    overflow_from: str | None = None
    agent_id: str | None = None  # sticky routing: the agent who served this conversation
    explain: tuple[str, ...] = ()  # routing steps (rule matched, overflow, sticky ...)
    schema: int = DECISION_SCHEMA_VERSION

    def __repr__(self) -> str:
        tags = ",".join(t.id for t in self.tags) or "-"
        return (
            f"Decision({self.message_id} -> {self.skill_group} {self.priority.band} "
            f"score={self.priority.score:g} rule={self.rule_id} tags={tags})"
        )

    def to_json(self) -> bytes:
        """orjson bytes of this decision."""
        return orjson.dumps(self)

    @property
    def queue_score(self) -> float:
        """Sorted-set score: band first, then age (oldest first within a band)."""
        return self.priority.band.rank * 1e13 + self.received_at_ms


def dumps(obj: object) -> bytes:
    """orjson with the options every producer of the project uses."""
    return orjson.dumps(obj)


def _str(d: Mapping[str, Any], key: str, path: str | None = None) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidEnvelope(f"field '{path or key}' must be a non-empty string, got {value!r}")
    return value


def _opt_str(d: Mapping[str, Any], key: str, path: str | None = None) -> str | None:
    value = d.get(key)
    if value is None or isinstance(value, str):
        return value
    raise InvalidEnvelope(f"field '{path or key}' must be a string or null, got {value!r}")


def _int(d: Mapping[str, Any], key: str) -> int:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise InvalidEnvelope(f"field '{key}' must be a non-negative integer, got {value!r}")
    return value


def _opt_int(d: Mapping[str, Any], key: str) -> int | None:
    return None if d.get(key) is None else _int(d, key)


def _attachment(a: Any) -> Attachment:
    if not isinstance(a, dict):
        raise InvalidEnvelope("each of 'attachments' must be an object with 'kind' and 'ref'")
    size = a.get("size_bytes")
    if size is not None and (not isinstance(size, int) or isinstance(size, bool)):
        raise InvalidEnvelope(f"field 'attachments[].size_bytes' must be an integer, got {size!r}")
    return Attachment(
        kind=_str(a, "kind", "attachments[].kind"),
        ref=_str(a, "ref", "attachments[].ref"),
        name=_opt_str(a, "name", "attachments[].name"),
        size_bytes=size,
    )


def _entry(e: Any) -> Entry:
    if not isinstance(e, dict):
        raise InvalidEnvelope("field 'entry' must be an object with 'kind' and 'id'")
    try:
        kind = EntryKind(str(e.get("kind")))
    except ValueError:
        raise InvalidEnvelope(
            f"field 'entry.kind' must be one of {[k.value for k in EntryKind]}, "
            f"got {e.get('kind')!r}"
        ) from None
    return Entry(kind=kind, id=_str(e, "id", "entry.id"))


def _order(o: Any) -> Order:
    if not isinstance(o, dict):
        raise InvalidEnvelope("field 'order' must be an object with an 'id'")
    amount = o.get("amount")
    if amount is not None and (isinstance(amount, bool) or not isinstance(amount, int | float)):
        raise InvalidEnvelope(f"field 'order.amount' must be a number, got {amount!r}")
    if amount is not None and not 0 <= amount < 1e12:
        raise InvalidEnvelope(f"field 'order.amount' must be between 0 and 1e12, got {amount!r}")
    return Order(id=_str(o, "id", "order.id"), amount=None if amount is None else float(amount))
