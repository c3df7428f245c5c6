"""Records on the topics besides the envelope and the decision: one model per record,
shared by whoever produces it and whoever consumes it.

| topic | record | produced by |
| --- | --- | --- |
| ``omni.sla-alerts`` | :class:`SlaAlert` | SLA worker (deadline loop) |
| ``omni.surge`` | :class:`SurgeSignal` | SLA worker (surge windows) |
| ``omni.agent-events`` | :class:`AgentEvent` | agent API, router relaxation |
| ``omni.chatter`` | :class:`ChatterRecord` | Douyin adapter |
| ``omni.signals`` | :class:`SignalRecord` | Douyin adapter |
| ``omni.dead-letter`` | :class:`DeadLetterRecord` | router and SLA workers (dead_letter.py) |

(``omni.inbound`` carries :class:`~router.models.Envelope`, ``omni.routed``
:class:`~router.models.Decision`.)

Each model is a frozen, slotted dataclass: producers build it and send ``to_json()``;
consumers call ``from_json``/``from_dict``, which check every field by hand and raise
:class:`~router.exceptions.InvalidRecord` naming the record and the field. Fields listed
in a model's ``OMITTED_WHEN_NONE`` are left out of the JSON when they are None (they
exist only on some kinds of the record). JSON schemas: :mod:`router.schema`, published
in ``docs/schema/``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Final, Literal, Self, get_args

import orjson

from . import _records as _rec
from .exceptions import InvalidRecord
from .models import Channel, Envelope

__all__ = [
    "AGENT_EVENT_TYPES",
    "CHATTER_RULES",
    "SIGNAL_KINDS",
    "SIGNAL_SCHEMA_VERSION",
    "AgentEvent",
    "AlertType",
    "ChatterRecord",
    "ChatterRule",
    "DeadLetterRecord",
    "DeadLetterSource",
    "DeadLetterStage",
    "EscalationActions",
    "InvalidRecord",
    "SignalKind",
    "SignalRecord",
    "SlaAlert",
    "SurgeSignal",
    "SurgeType",
]

SIGNAL_SCHEMA_VERSION: Final = 1

AGENT_EVENT_TYPES: Final = frozenset(
    {"claim", "accept", "reply", "wait_customer", "resolve", "transfer"}
)
AlertType = Literal["sla.warning", "sla.breach", "sla.escalation"]
SurgeType = Literal["surge.start", "surge.clear", "incident", "incident.clear", "surge.warning"]
ChatterRule = Literal["empty", "repeat", "emoji_only", "cheer", "too_short"]
SignalKind = Literal["live_gift", "live_like", "live_fansclub"]
DeadLetterStage = Literal["router", "sla"]

CHATTER_RULES: Final[tuple[ChatterRule, ...]] = get_args(ChatterRule)
SIGNAL_KINDS: Final[tuple[SignalKind, ...]] = get_args(SignalKind)
_ALERT_TYPES: Final = {t: t for t in get_args(AlertType)}
_SURGE_TYPES: Final = {t: t for t in get_args(SurgeType)}
_SIGNAL_KINDS: Final = {k: k for k in SIGNAL_KINDS}
_CHATTER_RULES: Final = {r: r for r in CHATTER_RULES}
_CHANNELS: Final = {c.value: c for c in Channel}
_DEAD_LETTER_STAGES: Final = {s: s for s in get_args(DeadLetterStage)}


def _wire(record: Any, omitted: frozenset[str]) -> dict[str, Any]:
    """A record's JSON object: its fields in order, without the None ones in ``omitted``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(record):
        value = getattr(record, f.name)
        if value is None and f.name in omitted:
            continue
        if isinstance(value, (EscalationActions, DeadLetterSource)):
            value = dataclasses.asdict(value)
        elif isinstance(value, tuple):
            value = list(value)
        out[f.name] = value
    return out


class _Record:
    """What every topic record shares: its JSON form and decoding from bytes."""

    __slots__ = ()
    RECORD: ClassVar[str]  # the record's name in error messages
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset()

    def to_dict(self) -> dict[str, Any]:
        """The JSON object as produced."""
        return _wire(self, self.OMITTED_WHEN_NONE)

    def to_json(self) -> bytes:
        """orjson bytes of this record."""
        return orjson.dumps(self.to_dict())

    @classmethod
    def from_dict(cls, data: Any) -> Self:
        """Build from decoded JSON, checking every field; raises InvalidRecord."""
        raise NotImplementedError

    @classmethod
    def from_json(cls, raw: bytes | str) -> Self:
        """Decode a record from the topic; raises InvalidRecord naming the field."""
        return cls.from_dict(_rec.loads(raw, cls.RECORD))


# --- omni.agent-events -----------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class AgentEvent(_Record):
    """What an agent did to a conversation (omni.agent-events; key = conversation id).

    ``type`` is one of claim, accept, reply, wait_customer, resolve, transfer; the JSON
    also carries ``event_id`` (conversation:type:agent:at_ms) for deduplication.
    """

    RECORD: ClassVar[str] = "agent event"

    type: str  # claim | accept | reply | wait_customer | resolve | transfer
    conversation_id: str
    agent_id: str  # an agent, or system:<what> (system:relax for a rule's relaxation)
    at_ms: int
    group: str = ""
    to_group: str | None = None
    message_id: str | None = None
    reason: str | None = None

    @property
    def event_id(self) -> str:
        """Stable id for deduplication by consumers."""
        return f"{self.conversation_id}:{self.type}:{self.agent_id}:{self.at_ms}"

    def to_json(self) -> bytes:
        """orjson bytes, with ``event_id`` included."""
        return orjson.dumps({**dataclasses.asdict(self), "event_id": self.event_id})

    @classmethod
    def from_dict(cls, data: Any) -> AgentEvent:
        """Build from decoded JSON; raises InvalidRecord naming the bad field."""
        r = "agent event"
        d = _rec.obj(data, r)
        kind = d.get("type")
        if kind not in AGENT_EVENT_TYPES:
            raise _rec.fail(r, "type", f"one of {sorted(AGENT_EVENT_TYPES)}", kind)
        to_group = _rec.opt_str(d, "to_group", r)
        if to_group == "":
            raise _rec.fail(r, "to_group", "a non-empty string or null", to_group)
        at = d.get("at_ms")
        if type(at) is not int:
            raise _rec.fail(r, "at_ms", "an integer (epoch ms)", at)
        return cls(
            type=kind,
            conversation_id=_rec.req_str(d, "conversation_id", r),
            agent_id=_rec.req_str(d, "agent_id", r),
            at_ms=at,
            group=_rec.opt_str(d, "group", r) or "",
            to_group=to_group,
            message_id=_rec.opt_str(d, "message_id", r),
            reason=_rec.opt_str(d, "reason", r),
        )


# --- omni.sla-alerts -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class EscalationActions:
    """What an escalation rung did to the conversation's queued messages."""

    raise_bands: int  # priority bands the queued messages were raised by
    move_to: str | None  # the group they were moved to, if the rung moves them
    queued_messages_touched: int  # queued messages re-scored or moved (claimed ones are not)


@dataclass(frozen=True, slots=True)
class SlaAlert(_Record):
    """An SLA warning, breach or escalation (omni.sla-alerts; key = conversation id).

    ``alert_id`` is stable across re-fires of the same deadline (a lease that expired),
    so consumers can drop the rare duplicate. ``level``, ``notify``, ``from_group`` and
    ``actions`` appear on ``sla.escalation`` alerts only.
    """

    RECORD: ClassVar[str] = "SLA alert"
    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset(
        {"level", "notify", "from_group", "actions"}
    )

    type: AlertType
    alert_id: str  # conversation:timer:stage:generation
    conversation_id: str
    group: str  # the group the conversation is in (after an escalation moved it)
    policy: str
    timer: str  # first_response | next_response | resolution | progress
    stage: str  # warning | breach | esc<N>
    channel: str
    band: str
    message_id: str | None  # the conversation's latest message
    customer_id: str
    agent_id: str | None
    target_s: float
    warning_s: float
    due_at_ms: int  # when the timer breaches (breached)
    fired_at_ms: int
    overdue_s: float  # fired_at - due_at: negative for a warning
    fire_lag_s: float  # how late the deadline loop fired this stage
    level: int | None = None
    notify: tuple[str, ...] | None = None
    from_group: str | None = None
    actions: EscalationActions | None = None

    def __repr__(self) -> str:
        return (
            f"SlaAlert({self.type} {self.conversation_id} {self.group} timer={self.timer} "
            f"stage={self.stage} overdue_s={self.overdue_s:g})"
        )

    @classmethod
    def from_dict(cls, data: Any) -> SlaAlert:
        """Build from decoded JSON, checking every field; raises InvalidRecord."""
        r = "SLA alert"
        d = _rec.obj(data, r)
        kind = _rec.choice(d, "type", _ALERT_TYPES, r)
        actions: EscalationActions | None = None
        raw_actions = d.get("actions")
        if raw_actions is not None:
            a = _rec.obj(raw_actions, f"{r} field 'actions'")
            actions = EscalationActions(
                raise_bands=_rec.count(a, "raise_bands", r, "actions.raise_bands"),
                move_to=_rec.opt_str(a, "move_to", r, "actions.move_to"),
                queued_messages_touched=_rec.count(
                    a, "queued_messages_touched", r, "actions.queued_messages_touched"),
            )
        return cls(
            type=kind,
            alert_id=_rec.req_str(d, "alert_id", r),
            conversation_id=_rec.req_str(d, "conversation_id", r),
            group=_rec.req_str(d, "group", r),
            policy=_rec.req_str(d, "policy", r),
            timer=_rec.req_str(d, "timer", r),
            stage=_rec.req_str(d, "stage", r),
            channel=_rec.req_str(d, "channel", r),
            band=_rec.req_str(d, "band", r),
            message_id=_rec.opt_str(d, "message_id", r),
            customer_id=_rec.any_str(d, "customer_id", r),
            agent_id=_rec.opt_str(d, "agent_id", r),
            target_s=_rec.number(d, "target_s", r),
            warning_s=_rec.number(d, "warning_s", r),
            due_at_ms=_rec.count(d, "due_at_ms", r),
            fired_at_ms=_rec.count(d, "fired_at_ms", r),
            overdue_s=_rec.number(d, "overdue_s", r),
            fire_lag_s=_rec.number(d, "fire_lag_s", r),
            level=_rec.opt_count(d, "level", r),
            notify=None if d.get("notify") is None else _rec.str_tuple(d, "notify", r),
            from_group=_rec.opt_str(d, "from_group", r),
            actions=actions,
        )


# --- omni.surge ------------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class SurgeSignal(_Record):
    """A surge or incident signal for one scope (omni.surge; key = scope).

    Scopes: ``all``, ``channel:<c>``, ``group:<g>``, ``tag:<t>``, ``heat:room:<id>``.
    A ``surge.start`` of a workload scope (not ``heat:``) carries the Erlang C staffing
    (``model`` ... ``answer_target_s``) and either the staffed agents and slots with
    ``extra_agents`` (where the logged-in capacity is known) or ``agents_needed``.
    ``incident`` and ``incident.clear`` name the ``tag``; ``incident`` its ``share``.
    ``surge.warning`` (the forecast, sla/forecast.py) comes before the breaches: it
    carries ``predicted_breach_in_s``, the staffing for the projected peak (with the
    reserve), its ``cause`` (load, backlog, scheduled) and the ``evidence``; an early
    ``incident`` from the forecast carries ``cause`` and ``evidence`` too.
    """

    RECORD: ClassVar[str] = "surge signal"

    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({
        "model", "offered_load_erlangs", "needed_slots", "required_slots",
        "staffing_reserve", "aht_s", "service_level", "answer_target_s",
        "staffed_agents", "staffed_slots", "extra_agents", "agents_needed", "tag", "share",
        "predicted_breach_in_s", "predicted_wait_s", "cause", "evidence",
    })

    type: SurgeType
    scope: str
    kind: str  # the scope's kind: all | channel | group | tag | heat
    rate_per_min: float
    baseline_per_min: float | None  # EWMA of ordinary windows; null before the first one
    ratio: float  # rate / max(baseline, min_baseline_per_min)
    model: str | None = None  # erlang-c
    offered_load_erlangs: float | None = None
    needed_slots: int | None = None  # slots for the service level at this rate
    required_slots: int | None = None  # needed_slots x staffing_reserve, rounded up
    staffing_reserve: float | None = None
    aht_s: float | None = None
    service_level: float | None = None
    answer_target_s: float | None = None
    staffed_agents: int | None = None
    staffed_slots: int | None = None
    extra_agents: int | None = None  # agents to add to the logged-in ones
    agents_needed: int | None = None  # when the logged-in capacity is unknown
    tag: str | None = None
    share: float | None = None  # the tag's share of all arrivals in the window
    predicted_breach_in_s: float | None = None  # surge.warning: first breach expected in
    predicted_wait_s: float | None = None  # surge.warning: wait of an arrival now
    cause: str | None = None  # forecast signals: load | backlog | scheduled | incident
    evidence: dict[str, Any] | None = None  # forecast signals: the figures behind it
    window_s: float
    window_end_ms: int
    at_ms: int

    def __repr__(self) -> str:
        return (
            f"SurgeSignal({self.type} {self.scope} rate={self.rate_per_min:g}/min "
            f"ratio={self.ratio:g})"
        )

    @classmethod
    def from_dict(cls, data: Any) -> SurgeSignal:
        """Build from decoded JSON (or from the detector's dict), checking every field."""
        r = "surge signal"
        d = _rec.obj(data, r)
        return cls(
            type=_rec.choice(d, "type", _SURGE_TYPES, r),
            scope=_rec.req_str(d, "scope", r),
            kind=_rec.req_str(d, "kind", r),
            rate_per_min=_rec.number(d, "rate_per_min", r),
            baseline_per_min=_rec.opt_number(d, "baseline_per_min", r),
            ratio=_rec.number(d, "ratio", r),
            model=_rec.opt_str(d, "model", r),
            offered_load_erlangs=_rec.opt_number(d, "offered_load_erlangs", r),
            needed_slots=_rec.opt_count(d, "needed_slots", r),
            required_slots=_rec.opt_count(d, "required_slots", r),
            staffing_reserve=_rec.opt_number(d, "staffing_reserve", r),
            aht_s=_rec.opt_number(d, "aht_s", r),
            service_level=_rec.opt_number(d, "service_level", r),
            answer_target_s=_rec.opt_number(d, "answer_target_s", r),
            staffed_agents=_rec.opt_count(d, "staffed_agents", r),
            staffed_slots=_rec.opt_count(d, "staffed_slots", r),
            extra_agents=_rec.opt_count(d, "extra_agents", r),
            agents_needed=_rec.opt_count(d, "agents_needed", r),
            tag=_rec.opt_str(d, "tag", r),
            share=_rec.opt_number(d, "share", r),
            predicted_breach_in_s=_rec.opt_number(d, "predicted_breach_in_s", r),
            predicted_wait_s=_rec.opt_number(d, "predicted_wait_s", r),
            cause=_rec.opt_str(d, "cause", r),
            evidence=None if d.get("evidence") is None
            else dict(_rec.obj(d["evidence"], f"{r} field 'evidence'")),
            window_s=_rec.number(d, "window_s", r),
            window_end_ms=_rec.count(d, "window_end_ms", r),
            at_ms=_rec.count(d, "at_ms", r),
        )


# --- omni.chatter ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ChatterRecord(_Record):
    """A live comment kept off agent queues (omni.chatter; key = room id).

    On the wire it is the comment's envelope with the chatter rule that matched in
    ``meta.chatter_rule``; here the envelope is kept without that key.
    """

    RECORD: ClassVar[str] = "chatter record"

    envelope: Envelope
    rule: ChatterRule

    def __repr__(self) -> str:
        return f"ChatterRecord({self.rule} {self.envelope!r})"

    def to_json(self) -> bytes:
        """The envelope's JSON with ``meta.chatter_rule``."""
        env = self.envelope
        return orjson.dumps(
            dataclasses.replace(env, meta={**env.meta, "chatter_rule": self.rule})
        )

    @classmethod
    def from_dict(cls, data: Any) -> ChatterRecord:
        """Build from decoded JSON: a valid envelope with a known ``meta.chatter_rule``."""
        env = Envelope.from_dict(data)
        rule: ChatterRule = _rec.choice(env.meta, "chatter_rule", _CHATTER_RULES,
                                        "chatter record", "meta.chatter_rule")
        meta = {k: v for k, v in env.meta.items() if k != "chatter_rule"}
        return cls(dataclasses.replace(env, meta=meta), rule)


# --- omni.signals ----------------------------------------------------------------------
@dataclass(frozen=True, slots=True, kw_only=True)
class SignalRecord(_Record):
    """One live-room push of gifts, likes or fans-club events, summarised
    (omni.signals; key = room id). Not routed: it feeds surge detection (room heat).

    ``count`` is the number of gifts sent (``gift_num``), likes (``like_num``) or
    fans-club events; ``events`` the number of push items; ``gift_value`` (gift pushes
    only) the sum of their values.
    """

    RECORD: ClassVar[str] = "signal record"

    OMITTED_WHEN_NONE: ClassVar[frozenset[str]] = frozenset({"gift_value"})

    schema: int = SIGNAL_SCHEMA_VERSION
    channel: Channel
    room: str
    kind: SignalKind
    events: int
    count: int
    viewers: int  # distinct viewers in the push
    first_ms: int | None  # earliest item timestamp (epoch ms), if any item had one
    last_ms: int | None
    received_at_ms: int
    gift_value: float | None = None

    def __repr__(self) -> str:
        return f"SignalRecord({self.kind} room={self.room} count={self.count})"

    @property
    def gifts(self) -> int:
        """Gifts sent in this push (0 unless a gift push)."""
        return self.count if self.kind == "live_gift" else 0

    @property
    def likes(self) -> int:
        """Likes in this push (0 unless a like push)."""
        return self.count if self.kind == "live_like" else 0

    @classmethod
    def from_dict(cls, data: Any) -> SignalRecord:
        """Build from decoded JSON, checking every field; raises InvalidRecord."""
        r = "signal record"
        d = _rec.obj(data, r)
        _rec.schema(d, r, SIGNAL_SCHEMA_VERSION)
        return cls(
            channel=_rec.choice(d, "channel", _CHANNELS, r),
            room=_rec.req_str(d, "room", r),
            kind=_rec.choice(d, "kind", _SIGNAL_KINDS, r),
            events=_rec.count(d, "events", r),
            count=_rec.count(d, "count", r),
            viewers=_rec.count(d, "viewers", r),
            first_ms=_rec.opt_count(d, "first_ms", r),
            last_ms=_rec.opt_count(d, "last_ms", r),
            received_at_ms=_rec.count(d, "received_at_ms", r),
            gift_value=_rec.opt_number(d, "gift_value", r),
        )


# --- omni.dead-letter ------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class DeadLetterSource:
    """Where the dead-lettered record sat: its topic, partition and offset."""

    topic: str
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class DeadLetterRecord(_Record):
    """A record a worker could not process (omni.dead-letter; key = the original key).

    ``reason`` names what failed (the router's start with the metric label, e.g.
    ``invalid_envelope: ...``); the original key and value are kept base64-encoded,
    with a readable, clipped start of the value for operators.
    """

    RECORD: ClassVar[str] = "dead letter"

    reason: str
    stage: DeadLetterStage  # the worker that gave up on the record
    source: DeadLetterSource
    key_b64: str | None  # null when the record had no key
    value_b64: str
    value_preview: str  # the value's start as UTF-8 (undecodable bytes replaced)
    failed_at_ms: int

    def __repr__(self) -> str:
        src = self.source
        return (f"DeadLetterRecord({self.stage} {src.topic}[{src.partition}]@{src.offset}: "
                f"{self.reason})")

    @classmethod
    def from_dict(cls, data: Any) -> DeadLetterRecord:
        """Build from decoded JSON, checking every field; raises InvalidRecord."""
        r = "dead letter"
        d = _rec.obj(data, r)
        src = _rec.obj(d.get("source"), f"{r} field 'source'")
        return cls(
            reason=_rec.req_str(d, "reason", r),
            stage=_rec.choice(d, "stage", _DEAD_LETTER_STAGES, r),
            source=DeadLetterSource(
                topic=_rec.req_str(src, "topic", r, "source.topic"),
                partition=_rec.count(src, "partition", r, "source.partition"),
                offset=_rec.count(src, "offset", r, "source.offset"),
            ),
            key_b64=_rec.opt_str(d, "key_b64", r),
            value_b64=_rec.any_str(d, "value_b64", r),
            value_preview=_rec.any_str(d, "value_preview", r),
            failed_at_ms=_rec.count(d, "failed_at_ms", r),
        )
