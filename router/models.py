"""The canonical envelope (a normalised inbound message) and the routing decision.

Both are small frozen, slotted dataclasses, serialised with orjson (which encodes
dataclasses natively). ``from_dict`` is the hot-path decoder: it checks types by
hand instead of going through a validation library, and raises
:class:`~router.exceptions.InvalidEnvelope` naming the offending field.
"""

from __future__ import annotations

import contextlib
import hashlib
import reprlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar

import msgspec
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
from . import _records as _rec
from .exceptions import InvalidEnvelope
from .text import MAX_TEXT_CHARS as MAX_TEXT_CHARS  # the envelope's text limit, re-exported
from .text import SHOWN_CHARS, clip

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
# ms since the epoch; below 1e13 (year 2286), the span of one band in a queue score
MAX_TIMESTAMP_MS: Final = 10**13 - 1
MAX_AMOUNT: Final = 1e12  # order amounts (yuan) must be below this
MAX_SIZE_BYTES: Final = 2**53 - 1  # attachment sizes: integers every JSON reader keeps exact
INT64_MIN: Final = -(2**63)  # integers in meta must fit a signed 64-bit integer
INT64_MAX: Final = 2**63 - 1
E = TypeVar("E", Channel, EntryKind)


def message_id(channel: str, account: str, channel_msg_id: str, *, source: str = "") -> str:
    """Stable envelope id: retries of the same channel message get the same id.

    ``source`` is the namespace of ids that a channel does not vouch for itself: the
    generic API passes the identity of the credential that sent the message, so a
    caller posting ``channel: "wechat"`` can never produce (and so suppress as a
    replay) the id of a real WeChat message, nor of another caller's message.
    """
    name = f"{channel}\x1f{account}\x1f{channel_msg_id}"
    if source:
        name = f"{source}\x1e{name}"
    digest = hashlib.blake2b(name.encode(), digest_size=12).hexdigest()
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
        return (
            f"Envelope({self.id} {self.channel}/{self.account} conv={self.conversation_id} "
            f"customer={self.customer.id} text={clip(self.text, 40)!r})"
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
        """JSON bytes of this envelope (see :data:`_ENCODER`)."""
        return _ENCODER.encode(self)

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
        """Build from decoded JSON, checking every field's type.

        Any malformed shape raises InvalidEnvelope naming the field, never another
        exception: one bad record must not stop the router. The router decodes every
        inbound record: the checks of the common shape are inlined, and any record
        that does not pass them goes through the field-by-field pass that names the
        culprit (or accepts a rarer valid shape).
        """
        if type(data) is dict:
            env = _envelope_fast(data)
            if env is not None:
                return env
        return _envelope_checked(data)


def _envelope_fast(data: dict[str, Any]) -> Envelope | None:
    """The envelope when every field has its common valid shape, else None."""
    g = data.get
    mid, account, cmid, conv = g("id"), g("account"), g("channel_msg_id"), g("conversation_id")
    text, received, sent, cust = g("text"), g("received_at_ms"), g("sent_at_ms"), g("customer")
    schema, channel, raw_ref = g("schema", ENVELOPE_SCHEMA_VERSION), g("channel"), g("raw_ref")
    entry_d, order_d = g("entry"), g("order")
    if not (
        type(schema) is int and schema == ENVELOPE_SCHEMA_VERSION
        and type(channel) is str and channel in _CHANNELS
        and type(mid) is str and mid and type(account) is str and account
        and type(cmid) is str and cmid and type(conv) is str and conv
        and type(text) is str and text and len(text) <= MAX_TEXT_CHARS
        and type(received) is int and 0 <= received <= MAX_TIMESTAMP_MS
        and (sent is None or (type(sent) is int and 0 <= sent <= MAX_TIMESTAMP_MS))
        and type(cust) is dict and (raw_ref is None or type(raw_ref) is str)
        and _absent(g("attachments"), list) and _absent(g("hints"), list)
        and _absent(g("meta"), dict)
        and (entry_d is None or type(entry_d) is dict)
        and (order_d is None or type(order_d) is dict)
    ):
        return None
    cid, handle, tier = cust.get("id"), cust.get("handle"), cust.get("tier")
    if not (
        type(cid) is str and cid
        and (handle is None or type(handle) is str) and (tier is None or type(tier) is str)
    ):
        return None
    try:  # nested objects: their own checks, which name the field on failure
        entry = _entry(entry_d) if entry_d is not None else None
        order = _order(order_d) if order_d is not None else None
    except InvalidEnvelope:
        return None
    return Envelope(
        id=mid, channel=_CHANNELS[channel], account=account, channel_msg_id=cmid,
        conversation_id=conv, customer=Customer(cid, handle, tier), text=text,
        received_at_ms=received, sent_at_ms=sent, entry=entry, order=order, meta={},
        raw_ref=raw_ref,
    )


def _absent(value: Any, kind: type) -> bool:
    """An optional collection field that is null or empty (and of its JSON type)."""
    return value is None or (type(value) is kind and not value)


def _envelope_checked(data: Any) -> Envelope:
    """Field by field: the envelope, or InvalidEnvelope naming the first bad field."""
    if not isinstance(data, dict):
        raise InvalidEnvelope(f"envelope must be a JSON object, got {_kind(data)}")
    schema = data.get("schema", ENVELOPE_SCHEMA_VERSION)
    if type(schema) is not int or schema != ENVELOPE_SCHEMA_VERSION:
        raise InvalidEnvelope(
            f"unsupported envelope schema {_show(schema)}; this router reads schema "
            f"{ENVELOPE_SCHEMA_VERSION}"
        )
    if "channel" not in data:
        raise InvalidEnvelope("missing field 'channel'")
    channel = _enum(Channel, data["channel"], "channel")
    text = _str(data, "text")
    if len(text) > MAX_TEXT_CHARS:
        raise InvalidEnvelope(f"field 'text' is {len(text)} characters; limit {MAX_TEXT_CHARS}")
    cust = data.get("customer")
    if not isinstance(cust, dict):
        raise InvalidEnvelope(
            f"field 'customer' must be an object with an 'id', got {_kind(cust)}"
        )
    entry_d = data.get("entry")
    order_d = data.get("order")
    return Envelope(
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
        received_at_ms=_timestamp_ms(data, "received_at_ms"),
        sent_at_ms=(None if data.get("sent_at_ms") is None
                    else _timestamp_ms(data, "sent_at_ms")),
        attachments=tuple(_attachment(a, i) for i, a in enumerate(_list(data, "attachments"))),
        entry=_entry(entry_d) if entry_d is not None else None,
        order=_order(order_d) if order_d is not None else None,
        hints=_hints(data),
        meta=_meta(data),
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
    room: str | None = None  # the live room the question came from (forecast per room)
    schema: int = DECISION_SCHEMA_VERSION

    def __repr__(self) -> str:
        tags = ",".join(t.id for t in self.tags) or "-"
        return (
            f"Decision({self.message_id} -> {self.skill_group} {self.priority.band} "
            f"score={self.priority.score:g} rule={self.rule_id} tags={tags})"
        )

    def to_json(self) -> bytes:
        """JSON bytes of this decision (see :data:`_ENCODER`)."""
        return _ENCODER.encode(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Decision:
        """Decode an ``omni.routed`` record; raises InvalidRecord naming the field."""
        return cls.from_dict(_rec.loads(raw, "decision"))

    @classmethod
    def from_dict(cls, data: Any) -> Decision:
        """Build from decoded JSON, checking every field's type; raises InvalidRecord
        naming the field.

        The SLA worker decodes every routed message: the checks are inlined for the
        valid record, and only a record that fails them goes through the slower
        field-by-field pass that names the culprit.
        """
        if type(data) is dict:
            g: Any = data.get
            try:
                mid, conv, cust = g("message_id"), g("conversation_id"), g("customer_id")
                group, queue = g("skill_group"), g("queue")
                rule, version = g("rule_id"), g("config_version")
                received, decided = g("received_at_ms"), g("decided_at_ms")
                overflow, agent, room = g("overflow_from"), g("agent_id"), g("room")
                explain, prio = g("explain", []), g("priority")
                score, band, reasons = prio["score"], _BANDS[prio["band"]], prio["reasons"]
                tags = []
                for t in g("tags"):
                    tag_id, keywords = t["id"], t["keywords"]
                    tag_score, evidence = t.get("score"), t.get("evidence")
                    if (type(tag_id) is not str or not tag_id or type(keywords) is not list
                            or not (tag_score is None or type(tag_score) is float)):
                        raise TypeError
                    "".join(keywords)  # TypeError unless every keyword is a string
                    tags.append(TagHit(
                        tag_id, tuple(keywords), tag_score,
                        () if evidence is None or evidence == [] else _evidence(evidence),
                    ))
                "".join(reasons)
                "".join(explain)
                if (
                    type(mid) is str and mid and type(conv) is str and conv
                    and type(cust) is str and type(group) is str and group
                    and type(queue) is str and queue and type(rule) is str
                    and type(version) is str
                    and type(received) is int and received >= 0
                    and type(decided) is int and decided >= 0
                    and (overflow is None or type(overflow) is str)
                    and (agent is None or type(agent) is str)
                    and (room is None or type(room) is str)
                    and (type(score) is float or type(score) is int)
                    and type(reasons) is list and type(explain) is list
                    and (v := g("schema", DECISION_SCHEMA_VERSION)) == DECISION_SCHEMA_VERSION
                    and type(v) is int
                ):
                    return cls(
                        mid, conv, _CHANNELS[g("channel")], cust, tuple(tags),
                        Priority(float(score), band, tuple(reasons)), group, queue, rule,
                        version, received, decided, overflow, agent, tuple(explain), room,
                    )
            except (TypeError, KeyError):
                pass  # named by the slow pass below
        return _decision_slow(data)

    @property
    def queue_score(self) -> float:
        """Sorted-set score: band first, then age (oldest first within a band)."""
        return self.priority.band.rank * 1e13 + self.received_at_ms


_DECISION: Final = "decision"
_CHANNELS: Final[dict[str, Channel]] = {c.value: c for c in Channel}
#: Encodes envelopes and decisions: the same bytes as ``orjson.dumps`` of the
#: dataclasses (field order, enum values, tuples as arrays, shortest float repr; a test
#: holds the two equal), about 5x faster on a decision (1.5 against 7.3 us measured,
#: docs: README "Benchmarks"). Everything else stays on orjson.
_ENCODER: Final = msgspec.json.Encoder()
_BANDS: Final[dict[str, Band]] = {b.value: b for b in Band}


def _decision_slow(data: Any) -> Decision:
    """Field by field, naming the first bad one (a record the fast path refused)."""
    d = _rec.obj(data, _DECISION)
    _rec.schema(d, _DECISION, DECISION_SCHEMA_VERSION)
    prio = d.get("priority")
    if type(prio) is not dict:
        raise _rec.fail(_DECISION, "priority", "an object with 'score', 'band', 'reasons'", prio)
    raw_tags = d.get("tags")
    if type(raw_tags) is not list:
        raise _rec.fail(_DECISION, "tags", "an array of {id, keywords}", raw_tags)
    return Decision(
        message_id=_rec.req_str(d, "message_id", _DECISION),
        conversation_id=_rec.req_str(d, "conversation_id", _DECISION),
        channel=_rec.choice(d, "channel", _CHANNELS, _DECISION),
        customer_id=_rec.any_str(d, "customer_id", _DECISION),
        tags=tuple(_tag_hit(t, i) for i, t in enumerate(raw_tags)),
        priority=Priority(
            float(_rec.number(prio, "score", _DECISION, "priority.score")),
            _rec.choice(prio, "band", _BANDS, _DECISION, "priority.band"),
            _rec.str_tuple(prio, "reasons", _DECISION, "priority.reasons"),
        ),
        skill_group=_rec.req_str(d, "skill_group", _DECISION),
        queue=_rec.req_str(d, "queue", _DECISION),
        rule_id=_rec.any_str(d, "rule_id", _DECISION),
        config_version=_rec.any_str(d, "config_version", _DECISION),
        received_at_ms=_rec.count(d, "received_at_ms", _DECISION),
        decided_at_ms=_rec.count(d, "decided_at_ms", _DECISION),
        overflow_from=_rec.opt_str(d, "overflow_from", _DECISION),
        agent_id=_rec.opt_str(d, "agent_id", _DECISION),
        room=_rec.opt_str(d, "room", _DECISION),
        explain=_rec.str_tuple(d, "explain", _DECISION),
    )


def _evidence(value: Any) -> tuple[tuple[str, float], ...]:
    """``[[ngram, weight], ...]``; TypeError for any other shape."""
    if type(value) is not list:
        raise TypeError
    out = []
    for pair in value:
        if (type(pair) is not list or len(pair) != 2 or type(pair[0]) is not str
                or (type(pair[1]) is not float and type(pair[1]) is not int)):
            raise TypeError
        out.append((pair[0], float(pair[1])))
    return tuple(out)


def _tag_hit(t: Any, i: int) -> TagHit:
    path = f"tags[{i}]"
    if type(t) is not dict:
        raise _rec.fail(_DECISION, path, "an object with 'id' and 'keywords'", t)
    score = _rec.opt_number(t, "score", _DECISION, f"{path}.score")
    try:
        evidence = () if t.get("evidence") is None else _evidence(t["evidence"])
    except TypeError:
        raise _rec.fail(_DECISION, f"{path}.evidence", "an array of [n-gram, weight] pairs",
                        t["evidence"]) from None
    return TagHit(_rec.req_str(t, "id", _DECISION, f"{path}.id"),
                  _rec.str_tuple(t, "keywords", _DECISION, f"{path}.keywords"),
                  None if score is None else float(score), evidence)


def dumps(obj: object) -> bytes:
    """orjson with the options every producer of the project uses."""
    return orjson.dumps(obj)


def _shortener() -> reprlib.Repr:
    short = reprlib.Repr()
    short.maxlevel = 3
    short.maxstring = short.maxother = SHOWN_CHARS
    return short


# a full repr() fails on a deeply nested value (RecursionError) or a huge integer
_SHORT: Final = _shortener()


def _show(value: Any) -> str:
    """A bad value, for an error message: depth- and length-bounded, never raising."""
    try:
        shown = _SHORT.repr(value)
    except ValueError:  # an integer longer than Python's int-to-str limit
        shown = f"<{_kind(value)}>"
    return clip(shown, SHOWN_CHARS)


def _kind(value: Any) -> str:
    """The JSON name of a value's type, for "must be an object, got ..." messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list | tuple):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _str(d: Mapping[str, Any], key: str, path: str | None = None) -> str:
    value = d.get(key)
    if not isinstance(value, str) or not value:
        raise InvalidEnvelope(
            f"field '{path or key}' must be a non-empty string, got {_show(value)}"
        )
    return value


def _opt_str(d: Mapping[str, Any], key: str, path: str | None = None) -> str | None:
    value = d.get(key)
    if value is None or isinstance(value, str):
        return value
    raise InvalidEnvelope(f"field '{path or key}' must be a string or null, got {_show(value)}")


def _timestamp_ms(d: Mapping[str, Any], key: str) -> int:
    value = d.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or not (
        0 <= value <= MAX_TIMESTAMP_MS
    ):
        raise InvalidEnvelope(
            f"field '{key}' must be a non-negative integer of milliseconds since the epoch, "
            f"at most {MAX_TIMESTAMP_MS}, got {_show(value)}"
        )
    return value


def _enum(kind: type[E], value: Any, path: str) -> E:
    if isinstance(value, str):
        with contextlib.suppress(ValueError):
            return kind(value)
    raise InvalidEnvelope(
        f"field '{path}' must be one of {[k.value for k in kind]}, got {_show(value)}"
    )


def _list(d: Mapping[str, Any], key: str) -> list[Any] | tuple[Any, ...]:
    """An optional array field: absent and null are empty."""
    value = d.get(key)
    if value is None:
        return ()
    if not isinstance(value, list | tuple):
        raise InvalidEnvelope(f"field '{key}' must be an array or null, got {_show(value)}")
    return value


def _hints(d: Mapping[str, Any]) -> tuple[str, ...]:
    hints = _list(d, "hints")
    for i, hint in enumerate(hints):
        if not isinstance(hint, str):
            raise InvalidEnvelope(
                f"field 'hints' must be a list of strings; hints[{i}] is {_show(hint)}"
            )
    return tuple(hints)


def _meta(d: Mapping[str, Any]) -> dict[str, str | int]:
    meta = d.get("meta")
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise InvalidEnvelope(f"field 'meta' must be an object or null, got {_show(meta)}")
    for key, value in meta.items():
        if not isinstance(key, str):
            raise InvalidEnvelope(f"field 'meta' must have string keys, got {_show(key)}")
        if isinstance(value, str):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or not (
            INT64_MIN <= value <= INT64_MAX
        ):
            raise InvalidEnvelope(
                f"field 'meta.{key}' must be a string or a 64-bit integer, got {_show(value)}"
            )
    return meta


def _attachment(a: Any, i: int) -> Attachment:
    path = f"attachments[{i}]"
    if not isinstance(a, dict):
        raise InvalidEnvelope(
            f"field '{path}' must be an object with 'kind' and 'ref', got {_show(a)}"
        )
    size = a.get("size_bytes")
    if size is not None and (
        isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_SIZE_BYTES
    ):
        raise InvalidEnvelope(
            f"field '{path}.size_bytes' must be an integer between 0 and {MAX_SIZE_BYTES} "
            f"or null, got {_show(size)}"
        )
    return Attachment(
        kind=_str(a, "kind", f"{path}.kind"),
        ref=_str(a, "ref", f"{path}.ref"),
        name=_opt_str(a, "name", f"{path}.name"),
        size_bytes=size,
    )


def _entry(e: Any) -> Entry:
    if not isinstance(e, dict):
        raise InvalidEnvelope(
            f"field 'entry' must be an object with 'kind' and 'id' or null, got {_show(e)}"
        )
    return Entry(kind=_enum(EntryKind, e.get("kind"), "entry.kind"), id=_str(e, "id", "entry.id"))


def _order(o: Any) -> Order:
    if not isinstance(o, dict):
        raise InvalidEnvelope(
            f"field 'order' must be an object with an 'id' or null, got {_show(o)}"
        )
    amount = o.get("amount")
    if amount is not None:
        if isinstance(amount, bool) or not isinstance(amount, int | float):
            raise InvalidEnvelope(f"field 'order.amount' must be a number, got {_show(amount)}")
        # NaN fails every comparison, so this refuses NaN and both infinities too
        if not 0 <= amount < MAX_AMOUNT:
            raise InvalidEnvelope(
                f"field 'order.amount' must be a finite number from 0 to below {MAX_AMOUNT:g}, "
                f"got {_show(amount)}"
            )
    return Order(id=_str(o, "id", "order.id"), amount=None if amount is None else float(amount))
