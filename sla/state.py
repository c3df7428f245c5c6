"""Per-conversation SLA state and its transitions: pure functions, no I/O.

One :class:`ConvState` per open conversation holds its running timers. Every
input (a routing decision, an agent event) is applied by :class:`SlaEngine`,
which returns the new state or ``None`` when the input changes nothing (a replay,
a stale event). ``schedule`` derives the deadline members to keep in Redis.

Idempotency and ordering: decisions are recognised by message id; agent events
act only on timers started at or before the event's ``at_ms``, so a replayed
reply cannot stop a timer started by a later customer message; a reply that is
processed before the decision it answered is remembered as ``last_reply_ms``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Final

import orjson

from ..router.events import AgentEvent
from ..router.models import Decision
from .calendar import Calendar, build_calendar
from .config import TIMER_KINDS, PolicyConfig, SlaConfig, TimerKind

__all__ = ["AgentEvent", "ConvState", "Fired", "SlaEngine", "Timer", "member", "parse_member"]

SEP: Final = "\x1f"
MAX_MESSAGE_IDS: Final = 50  # per conversation, for replay detection and escalation moves
RESPONSE_KINDS: Final = ("first_response", "next_response")


def member(kind: str, stage: str, gen: int, conversation_id: str) -> str:
    """A deadline member; the conversation id goes last so it may contain anything."""
    return f"{kind}{SEP}{stage}{SEP}{gen}{SEP}{conversation_id}"


def parse_member(value: str) -> tuple[str, str, int, str]:
    """(kind, stage, gen, conversation id) of a deadline member."""
    kind, stage, gen, conv = value.split(SEP, 3)
    return kind, stage, int(gen), conv


@dataclass(slots=True)
class Timer:
    """One running (or paused) timer; ``elapsed_s`` counts business seconds before
    ``seg_start_ms``, the start of the current running segment."""

    kind: str
    target_s: float
    warning_s: float
    started_ms: int
    seg_start_ms: int
    elapsed_s: float = 0.0
    paused: bool = False
    gen: int = 0


@dataclass(slots=True)
class ConvState:
    """SLA state of one conversation (stored as JSON in one Redis hash field)."""

    conversation_id: str
    channel: str
    band: str
    group: str
    policy: str
    customer_id: str = ""
    tags: list[str] = field(default_factory=list)
    message_ids: list[str] = field(default_factory=list)
    first_ms: int = 0
    last_customer_ms: int = 0
    last_reply_ms: int | None = None
    resolved_ms: int | None = None
    paused_at_ms: int | None = None
    agent_id: str | None = None
    escalation_level: int = 0
    timers: dict[str, Timer] = field(default_factory=dict)
    members: list[str] = field(default_factory=list)  # deadline members as last stored
    ver: int = 0  # optimistic-concurrency version (compare-and-set in Redis)
    gen_seq: int = 0

    def __repr__(self) -> str:
        timers = ",".join(
            f"{k}{'(paused)' if t.paused else ''}" for k, t in self.timers.items()
        ) or "-"
        return (
            f"ConvState({self.conversation_id} {self.group} {self.band} policy={self.policy} "
            f"timers={timers} ver={self.ver})"
        )

    def to_json(self) -> bytes:
        """orjson bytes."""
        return orjson.dumps(self)

    @classmethod
    def from_json(cls, raw: bytes | str) -> ConvState:
        """Decode what ``to_json`` wrote."""
        data: dict[str, Any] = orjson.loads(raw)
        data["timers"] = {k: Timer(**v) for k, v in data.get("timers", {}).items()}
        if data.keys() <= _STATE_FIELDS:
            return cls(**data)
        return cls(**{k: v for k, v in data.items() if k in _STATE_FIELDS})

    def next_gen(self) -> int:
        """A fresh timer generation (changes every deadline member of that timer)."""
        self.gen_seq += 1
        return self.gen_seq


_STATE_FIELDS: Final = frozenset(f.name for f in dataclasses.fields(ConvState))


@dataclass(frozen=True, slots=True)
class Fired:
    """A claimed deadline, decoded."""

    kind: str
    stage: str  # warning | breach | esc<N>
    gen: int
    conversation_id: str
    due_ms: int


class SlaEngine:
    """Applies decisions and agent events to conversation state under ``SlaConfig``."""

    def __init__(self, config: SlaConfig) -> None:
        self.config = config
        self.calendars: dict[str, Calendar] = {
            name: build_calendar(c) for name, c in config.calendars.items()
        }

    # --- lookups ----------------------------------------------------------------
    def policy_of(self, state: ConvState) -> PolicyConfig:
        """The state's policy (re-resolved if the config no longer has it)."""
        return self.config.policy(state.policy) or self.config.policy_for(
            state.channel, state.band, state.group, state.tags
        )

    def calendar_of(self, state: ConvState) -> Calendar:
        """The business calendar of the state's policy."""
        return self.calendars[self.policy_of(state).calendar]

    # --- inputs -----------------------------------------------------------------
    def on_decision(self, state: ConvState | None, d: Decision) -> ConvState | None:
        """A customer message was routed: start, resume or restart timers."""
        t = d.received_at_ms
        if state is not None and d.message_id in state.message_ids:
            return None  # replay of a decision already applied
        if state is not None and state.resolved_ms is not None and t <= state.resolved_ms:
            return None  # sent before the conversation was resolved: already handled
        tags = [h.id for h in d.tags]
        if state is None or state.resolved_ms is not None or not state.policy:
            # a new episode; a placeholder (agent event seen first) contributes its reply
            early_reply = state.last_reply_ms if state is not None and not state.policy else None
            policy = self.config.policy_for(d.channel, d.priority.band, d.skill_group, tags)
            new = ConvState(
                conversation_id=d.conversation_id, channel=str(d.channel),
                band=str(d.priority.band), group=d.skill_group, policy=policy.id,
                customer_id=d.customer_id, tags=tags, message_ids=[d.message_id],
                first_ms=t, last_customer_ms=t, last_reply_ms=early_reply,
                ver=state.ver if state else 0, gen_seq=state.gen_seq if state else 0,
                members=state.members if state else [],
            )
            if early_reply is None or early_reply < t:
                self._start(new, policy, "first_response", t)
            self._start(new, policy, "resolution", t)
            return new
        state.message_ids = [*state.message_ids, d.message_id][-MAX_MESSAGE_IDS:]
        state.last_customer_ms = max(state.last_customer_ms, t)
        state.tags = sorted({*state.tags, *tags})
        if state.paused_at_ms is not None and t > state.paused_at_ms:
            self._resume(state, t)
        band, group = str(d.priority.band), d.skill_group
        # a more urgent band or another group: re-evaluate the policy
        if band < state.band or group != state.group:
            state.band = min(band, state.band)
            state.group = group
            self._reevaluate(state, t)
        policy = self.policy_of(state)
        answered = state.last_reply_ms is not None and t > state.last_reply_ms
        if answered and not any(k in state.timers for k in RESPONSE_KINDS):
            self._start(state, policy, "next_response", t)
        return state

    def on_agent_event(self, state: ConvState | None, e: AgentEvent) -> ConvState | None:
        """An agent acted on the conversation."""
        if state is None or not state.policy:
            # no decision seen yet: remember a reply or resolve for when it arrives
            return self._placeholder(state, e)
        if state.resolved_ms is not None and e.at_ms <= state.resolved_ms:
            return None  # stale: the conversation was resolved after this event
        t = e.at_ms
        policy = self.policy_of(state)
        changed = False
        if e.type in ("claim", "accept") and state.agent_id != e.agent_id:
            state.agent_id = e.agent_id
            changed = True
        if e.type == "accept" and "progress" not in state.timers:
            changed |= self._start(state, policy, "progress", t)
        elif e.type == "reply":
            if state.last_reply_ms is None or t > state.last_reply_ms:
                state.last_reply_ms = t
                changed = True
            for kind in RESPONSE_KINDS:
                timer = state.timers.get(kind)
                if timer is not None and timer.started_ms <= t:
                    del state.timers[kind]
                    changed = True
            progress = state.timers.get("progress")
            if progress is None or progress.started_ms < t:
                state.timers.pop("progress", None)
                changed |= self._start(state, policy, "progress", t)
        elif e.type == "wait_customer":
            if state.paused_at_ms is None or t > state.paused_at_ms:
                self._pause(state, t)
                changed = True
        elif e.type == "resolve":
            state.resolved_ms = t
            state.paused_at_ms = None
            state.timers = {k: v for k, v in state.timers.items() if v.started_ms > t}
            changed = True
        elif e.type == "transfer" and e.to_group and e.to_group != state.group:
            state.group = e.to_group
            state.agent_id = None
            self._reevaluate(state, t)
            changed = True
        return state if changed else None

    # --- deadlines --------------------------------------------------------------
    def schedule(self, state: ConvState) -> list[tuple[str, int]]:
        """Deadline members (and due ms) of every running timer."""
        policy = self.policy_of(state)
        cal = self.calendars[policy.calendar]
        ladder = self.config.escalation.get(policy.escalation or "", ())
        out: list[tuple[str, int]] = []
        for kind, timer in state.timers.items():
            if timer.paused:
                continue
            conv = state.conversation_id
            stages: list[tuple[str, float]] = [
                ("warning", timer.warning_s), ("breach", timer.target_s)
            ]
            for stage, threshold in stages:
                if threshold > timer.elapsed_s:
                    due = cal.add(timer.seg_start_ms, threshold - timer.elapsed_s)
                    out.append((member(kind, stage, timer.gen, conv), due))
            if kind != "progress" and timer.target_s > timer.elapsed_s:
                breach = cal.add(timer.seg_start_ms, timer.target_s - timer.elapsed_s)
                for i, step in enumerate(ladder, start=1):
                    out.append((member(kind, f"esc{i}", timer.gen, conv),
                                breach + round(step.after_s * 1000)))
        return out

    def breach_due_ms(self, state: ConvState, timer: Timer) -> int:
        """Wall-clock instant at which ``timer`` breaches (if it keeps running)."""
        cal = self.calendar_of(state)
        return cal.add(timer.seg_start_ms, max(0.0, timer.target_s - timer.elapsed_s))

    # --- helpers ----------------------------------------------------------------
    @staticmethod
    def _placeholder(state: ConvState | None, e: AgentEvent) -> ConvState | None:
        if e.type not in ("reply", "resolve"):
            return None
        new = state or ConvState(
            conversation_id=e.conversation_id, channel="", band="", group=e.group, policy=""
        )
        if e.type == "reply" and (new.last_reply_ms is None or e.at_ms > new.last_reply_ms):
            new.last_reply_ms = e.at_ms
            return new
        if e.type == "resolve" and (new.resolved_ms is None or e.at_ms > new.resolved_ms):
            new.resolved_ms = e.at_ms
            return new
        return None

    def purge_after_ms(self, state: ConvState) -> int | None:
        """When a state becomes a tombstone to purge (resolved, or a placeholder)."""
        if state.resolved_ms is not None:
            return state.resolved_ms
        if not state.policy:
            return state.last_reply_ms or 0
        return None

    def _start(self, state: ConvState, policy: PolicyConfig, kind: TimerKind, t: int) -> bool:
        target = policy.target(kind)
        if target is None:
            return False
        state.timers[kind] = Timer(
            kind=kind, target_s=target.target_s,
            warning_s=target.warning_after_s(self.config.ratio(policy)),
            started_ms=t, seg_start_ms=t, gen=state.next_gen(),
            paused=state.paused_at_ms is not None and t <= state.paused_at_ms,
        )
        return True

    def _pause(self, state: ConvState, t: int) -> None:
        cal = self.calendar_of(state)
        state.paused_at_ms = t
        for timer in state.timers.values():
            if not timer.paused and timer.started_ms <= t:
                timer.elapsed_s += cal.elapsed(timer.seg_start_ms, t)
                timer.paused = True
                timer.gen = state.next_gen()

    def _resume(self, state: ConvState, t: int) -> None:
        state.paused_at_ms = None
        for timer in state.timers.values():
            if timer.paused:
                timer.paused = False
                timer.seg_start_ms = t
                timer.gen = state.next_gen()

    def _reevaluate(self, state: ConvState, t: int) -> None:
        """Apply the policy for the state's current (channel, band, group, tags) from ``t``.

        Time already spent is kept (folded into ``elapsed_s`` under the old calendar);
        stages whose threshold has already passed under the new targets are not
        re-fired (documented in docs/sla.md).
        """
        old_cal = self.calendar_of(state)
        policy = self.config.policy_for(state.channel, state.band, state.group, state.tags)
        state.policy = policy.id
        for kind in TIMER_KINDS:
            timer = state.timers.get(kind)
            if timer is None:
                continue
            if not timer.paused and t > timer.seg_start_ms:
                timer.elapsed_s += old_cal.elapsed(timer.seg_start_ms, t)
                timer.seg_start_ms = t
            target = policy.target(kind)
            if target is None:
                del state.timers[kind]
                continue
            timer.target_s = target.target_s
            timer.warning_s = target.warning_after_s(self.config.ratio(policy))
            timer.gen = state.next_gen()
