"""What the operations console shows, gathered once per push for every viewer.

Two sources, both read-only:

* Redis, read at each push: the queues and agents (:class:`~sla.agents.AgentDesk`,
  the figures of ``GET /v1/queues``), the SLA states (:class:`~sla.timers.TimerStore`,
  scanned at most every ``sla_refresh_s``), the surge detector's state
  (:meth:`~sla.surge.SurgeWindows.states`, which scopes are in a surge now) and the
  SLA workers' latest forecast per group (:meth:`~sla.forecast_store.ForecastStore.forecasts`);
* Kafka, tailed by :class:`ConsoleFeed` without a consumer group (every console
  process sees every partition, and commits nothing): the latest decisions on
  ``omni.routed``, the signals on ``omni.surge`` (staffing advice, incidents and the
  forecast's ``surge.warning``), and for the live-room panel the live-stream
  envelopes on ``omni.inbound``, ``omni.chatter`` and ``omni.signals``. On start it
  reads back a little history per partition, so a console opened mid-peak is not
  blank.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaError
from redis.asyncio import Redis

from ..router import kafka, topics
from ..router.events import ChatterRecord, SignalRecord, SurgeSignal
from ..router.exceptions import InvalidRecord
from ..router.keys import Keys
from ..router.lifecycle import Lifecycle
from ..router.models import Channel, Decision, Envelope
from ..router.retry import Backoff
from ..router.settings import ConsoleSettings, Settings
from .agents import AgentDesk
from .config import SlaConfig
from .forecast_store import ForecastStore
from .state import ConvState, SlaEngine
from .surge import SurgeWindows
from .timers import TimerStore

__all__ = ["ConsoleFeed", "RoomEvent", "SnapshotBuilder", "forecast_banner", "sla_counts"]

log = logging.getLogger(__name__)

#: Records read back per partition when the feed starts.
BACKFILL: Final = {topics.ROUTED: 50, topics.SURGE: 200, topics.INBOUND: 2000,
                   topics.CHATTER: 2000, topics.SIGNALS: 500}
FORECAST_TTL_S: Final = 300.0  # a surge.warning is shown this long unless a newer one comes
FORECAST_FRESH_S: Final = 60.0  # a stored forecast older than this is no forecast (worker down)
MAX_ROOM_EVENTS: Final = 200_000  # per kind: bounds memory at any arrival rate
_LIVE: Final = b'"livestream"'


@dataclass(frozen=True, slots=True)
class RoomEvent:
    """One live-room happening: a question, a chatter comment or a gift/like push."""

    at_ms: int
    room: str
    questions: int = 0
    chatter: int = 0
    gifts: int = 0
    likes: int = 0
    viewers: int = 0


@dataclass(slots=True)
class _SurgeBoard:
    """The latest signal per scope and what is on now."""

    surges: dict[str, SurgeSignal] = field(default_factory=dict)  # active surge.start
    incidents: dict[str, SurgeSignal] = field(default_factory=dict)  # tag -> incident
    warnings: dict[str, SurgeSignal] = field(default_factory=dict)  # scope -> surge.warning

    def apply(self, s: SurgeSignal) -> None:
        if s.type == "surge.start":
            self.surges[s.scope] = s
        elif s.type == "surge.clear":
            self.surges.pop(s.scope, None)
        elif s.type == "incident":
            self.incidents[s.tag or s.scope] = s
        elif s.type == "incident.clear":
            self.incidents.pop(s.tag or s.scope, None)
        elif s.type == "surge.warning":
            old = self.warnings.get(s.scope)
            if old is None or old.at_ms <= s.at_ms:
                self.warnings[s.scope] = s


class ConsoleFeed(Lifecycle):
    """Tails the topics the console shows; never blocks the HTTP app (it reconnects)."""

    def __init__(self, settings: Settings, console: ConsoleSettings,
                 now_ms: Callable[[], int]) -> None:
        self.settings = settings
        self.console = console
        self.now_ms = now_ms
        self.names = {settings.topic(t): t for t in BACKFILL}
        self.decisions: deque[Decision] = deque(maxlen=console.decisions * 4)
        self.rooms: deque[RoomEvent] = deque(maxlen=MAX_ROOM_EVENTS)
        self.board = _SurgeBoard()
        self.connected = False
        self.records = 0
        self.invalid = 0
        self._task: asyncio.Task[None] | None = None

    async def _start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="console-feed")

    async def _stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.connected = False

    async def _run(self) -> None:
        backoff = Backoff()
        while True:
            consumer = kafka.consumer(self.settings, group_id=None,
                                      auto_offset_reset="latest", max_poll_records=2000)
            try:
                await consumer.start()
                await self._assign(consumer)
                self.connected = True
                backoff.reset()
                while True:
                    batch = await consumer.getmany(timeout_ms=500)
                    for tp, recs in batch.items():
                        name = self.names.get(tp.topic)
                        if name is not None:
                            for rec in recs:
                                self.apply(name, rec.value or b"")
            except (KafkaError, OSError) as exc:
                self.connected = False
                log.warning("console feed: %r; reconnecting", exc)
            finally:
                with contextlib.suppress(Exception):
                    await consumer.stop()
            await backoff.wait()

    async def _assign(self, consumer: AIOKafkaConsumer) -> None:
        """Every partition of the topics, from a little before the end."""
        await consumer.topics()  # loads the cluster metadata
        parts = [TopicPartition(t, p) for t in self.names
                 for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not parts:
            raise KafkaError(f"none of {sorted(self.names)} exists yet")
        consumer.assign(parts)
        ends = await consumer.end_offsets(parts)
        starts = await consumer.beginning_offsets(parts)
        for tp in parts:
            back = BACKFILL[self.names[tp.topic]]
            consumer.seek(tp, max(starts[tp], ends[tp] - back))

    def apply(self, name: str, value: bytes) -> None:
        """One record of topic ``name`` (its unprefixed name); bad records are counted."""
        self.records += 1
        try:
            if name == topics.ROUTED:
                self.decisions.append(Decision.from_json(value))
            elif name == topics.SURGE:
                self.board.apply(SurgeSignal.from_json(value))
            elif name == topics.INBOUND:
                if _LIVE in value:  # most inbound traffic is not live stream: skip decoding it
                    env = Envelope.from_json(value)
                    if env.channel is Channel.LIVESTREAM:
                        self.rooms.append(RoomEvent(env.received_at_ms, env.account,
                                                    questions=1))
            elif name == topics.CHATTER:
                env = ChatterRecord.from_json(value).envelope
                self.rooms.append(RoomEvent(env.received_at_ms, env.account, chatter=1))
            elif name == topics.SIGNALS:
                s = SignalRecord.from_json(value)
                self.rooms.append(RoomEvent(s.received_at_ms, s.room, gifts=s.gifts,
                                            likes=s.likes, viewers=s.viewers))
        except (InvalidRecord, ValueError, TypeError, KeyError):
            self.invalid += 1

    def latest_decisions(self) -> list[Decision]:
        """The newest ``console.decisions`` decisions, newest first."""
        ordered = sorted(self.decisions, key=lambda d: (d.decided_at_ms, d.message_id),
                         reverse=True)
        return ordered[: self.console.decisions]

    def room_events(self, since_ms: int) -> list[RoomEvent]:
        """Room events at or after ``since_ms`` (older ones are dropped for good)."""
        while self.rooms and self.rooms[0].at_ms < since_ms:
            self.rooms.popleft()
        return [e for e in self.rooms if e.at_ms >= since_ms]


def sla_counts(
    states: Iterable[ConvState], engine: SlaEngine, now_ms: int
) -> dict[str, dict[str, int]]:
    """Per group: ``open`` conversations with running timers, ``at_risk`` (past a warning,
    none breached) and ``breached`` (a running timer past its target), as the SLA
    worker's gauges count them."""
    out: dict[str, dict[str, int]] = {}
    for state in states:
        running = [t for t in state.timers.values() if not t.paused]
        if not running or state.resolved_ms is not None:
            continue
        row = out.setdefault(state.group, {"open": 0, "at_risk": 0, "breached": 0})
        row["open"] += 1
        cal = engine.calendar_of(state)
        elapsed = [t.elapsed_s + cal.elapsed(t.seg_start_ms, now_ms) for t in running]
        if any(e >= t.target_s for e, t in zip(elapsed, running, strict=True)):
            row["breached"] += 1
        elif any(e >= t.warning_s for e, t in zip(elapsed, running, strict=True)):
            row["at_risk"] += 1
    return out


class SnapshotBuilder:
    """Builds the console's JSON snapshot; one build per push interval for all viewers."""

    def __init__(self, redis: Redis, keys: Keys, feed: ConsoleFeed, sla: SlaConfig,
                 console: ConsoleSettings, group_names: dict[str, str], *,
                 live_ttl_s: float) -> None:
        self.redis = redis
        self.feed = feed
        self.console = console
        self.sla = sla
        self.names = group_names
        self.desk = AgentDesk(redis, keys, live_ttl_s=live_ttl_s)
        self.timers = TimerStore(redis, keys, SlaEngine(sla))
        self.surge = SurgeWindows(redis, keys, sla.surge)
        self.forecast = ForecastStore(redis, keys, sla.surge)
        self._sla: tuple[float, dict[str, dict[str, int]]] | None = None
        self._cached: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def snapshot(self, now_ms: int) -> dict[str, Any]:
        """The snapshot, rebuilt when the last one is older than most of a push."""
        async with self._lock:
            mono = time.monotonic()
            if self._cached is not None and mono - self._cached[0] < self.console.push_s * 0.8:
                return self._cached[1]
            snap = await self.build(now_ms)
            self._cached = (time.monotonic(), snap)
            return snap

    async def build(self, now_ms: int) -> dict[str, Any]:
        """Read everything now (uncached)."""
        sla = await self._sla_counts(now_ms)
        active = {scope for scope, st in (await self.surge.states()).items() if st.active}
        groups = await self._groups(now_ms, sla)
        banner = self._banner(now_ms, active)
        return {
            "at_ms": now_ms,
            "groups": groups,
            "rooms": self._rooms(now_ms),
            "banner": banner + forecast_banner(groups, banner),
            "decisions": [_decision(d) for d in self.feed.latest_decisions()],
            "feed": {"connected": self.feed.connected, "records": self.feed.records,
                     "invalid": self.feed.invalid},
            "room_window_s": self.console.room_window_s,
        }

    async def _sla_counts(self, now_ms: int) -> dict[str, dict[str, int]]:
        mono = time.monotonic()
        if self._sla is None or mono - self._sla[0] >= self.console.sla_refresh_s:
            states = await self.timers.open_states()
            self._sla = (mono, sla_counts(states, self.timers.engine, now_ms))
        return self._sla[1]

    async def _groups(self, now_ms: int, sla: dict[str, dict[str, int]]) -> list[dict[str, Any]]:
        agents = await self.desk.live_agents(now_ms)
        pipe = self.redis.pipeline(transaction=False)
        for agent in agents:
            pipe.scard(self.desk.keys.agent_active(agent))
        held = dict(zip(agents, await pipe.execute(), strict=True))
        staff: dict[str, list[int]] = {}  # group -> [agents, slots, free slots]
        for agent, info in agents.items():
            for g in info.groups:
                row = staff.setdefault(g, [0, 0, 0])
                row[0] += 1
                row[1] += info.slots
                row[2] += max(0, info.slots - int(held[agent]))
        forecasts = {**self._warnings(now_ms), **await self._forecasts(now_ms)}
        groups = sorted({*await self.desk.known_groups(), *staff, *sla, *forecasts})
        out: list[dict[str, Any]] = []
        for g in groups:
            view = await self.desk.queue_view(g, now_ms, top=0)
            n_agents, slots, free = staff.get(g, [0, 0, 0])
            counts = sla.get(g, {})
            out.append({
                "group": g, "name": self.names.get(g, g),
                "depth": view.depth, "oldest_age_s": round(view.oldest_age_s, 1),
                "agents": n_agents, "slots": slots, "free_slots": free,
                "open": counts.get("open", 0), "at_risk": counts.get("at_risk", 0),
                "breached": counts.get("breached", 0),
                "forecast": forecasts.get(g),
            })
        return out

    async def _forecasts(self, now_ms: int) -> dict[str, dict[str, Any]]:
        """Per group, the SLA workers' latest forecast (sla/forecast_store.py), unless it
        is stale: the forecast's last bucket ended over ``FORECAST_FRESH_S`` ago."""
        state = await self.forecast.state()
        if state.last_bucket is None:
            return {}
        at_ms = (state.last_bucket + 1) * self.forecast.bucket_ms
        if now_ms - at_ms > FORECAST_FRESH_S * 1000:
            return {}
        out: dict[str, dict[str, Any]] = {}
        for g, f in (await self.forecast.forecasts()).items():
            wait = f.get("predicted_wait_s")
            out[g] = {
                # null in the store is an infinite wait: the queue never drains
                "predicted_wait_s": wait, "unbounded": wait is None,
                "predicted_breach_in_s": f.get("breach_in_s"),
                "extra_agents": f.get("extra_agents"), "cause": f.get("cause"),
                "at_ms": at_ms, "source": "forecast",
            }
        return out

    def _warnings(self, now_ms: int) -> dict[str, dict[str, Any]]:
        """Per group, the latest ``surge.warning`` still current (None elsewhere)."""
        out: dict[str, dict[str, Any]] = {}
        for scope, s in list(self.feed.board.warnings.items()):
            age_s = (now_ms - s.at_ms) / 1000
            if age_s > FORECAST_TTL_S:
                del self.feed.board.warnings[scope]
                continue
            if not scope.startswith("group:"):
                continue
            breach = s.predicted_breach_in_s
            out[scope.split(":", 1)[1]] = {
                "predicted_wait_s": s.predicted_wait_s,
                "predicted_breach_in_s": None if breach is None else max(0.0, breach - age_s),
                "extra_agents": s.extra_agents, "cause": s.cause, "at_ms": s.at_ms,
                "unbounded": False, "source": "surge.warning",
            }
        return out

    def _rooms(self, now_ms: int) -> list[dict[str, Any]]:
        window_s = self.console.room_window_s
        c = self.sla.surge  # the SLA worker's heat weights
        totals: dict[str, list[int]] = {}
        for e in self.feed.room_events(now_ms - int(window_s * 1000)):
            t = totals.setdefault(e.room, [0, 0, 0, 0, 0])
            t[0] += e.questions
            t[1] += e.chatter
            t[2] += e.gifts
            t[3] += e.likes
            t[4] += e.viewers
        per_min = 60 / window_s
        out: list[dict[str, Any]] = []
        for room, (q, chat, gifts, likes, viewers) in totals.items():
            heat = gifts * c.heat_per_gift + likes * c.heat_per_like + viewers * c.heat_per_viewer
            out.append({
                "room": room,
                "questions_per_min": round(q * per_min, 1),
                "chatter_per_min": round(chat * per_min, 1),
                "chatter_share": round(chat / (q + chat), 3) if q + chat else 0.0,
                "gifts_per_min": round(gifts * per_min, 1),
                "likes_per_min": round(likes * per_min, 1),
                "heat_per_min": round(heat * per_min, 1),
            })
        out.sort(key=lambda r: (-float(r["questions_per_min"]) - float(r["chatter_per_min"]),
                                str(r["room"])))
        return out

    def _banner(self, now_ms: int, active: set[str]) -> list[dict[str, Any]]:
        """Surges on now (as the detector's state in Redis says), incidents, and forecast
        warnings, each with its staffing advice."""
        board = self.feed.board
        out: list[dict[str, Any]] = []
        for scope in sorted(active | set(board.surges)):
            s = board.surges.get(scope)
            if scope not in active and s is not None and now_ms - s.at_ms > 60_000:
                board.surges.pop(scope, None)  # the detector cleared it; we missed the clear
                continue
            if scope.startswith("heat:"):
                out.append({"kind": "heat", "scope": scope, **_advice(s)})
            else:
                out.append({"kind": "surge", "scope": scope, **_advice(s)})
        for tag, s in sorted(board.incidents.items()):
            out.append({"kind": "incident", "scope": f"tag:{tag}", "tag": tag,
                        "share": s.share, **_advice(s)})
        for scope, s in sorted(board.warnings.items()):
            if now_ms - s.at_ms <= FORECAST_TTL_S * 1000:
                out.append({"kind": "forecast", "scope": scope, **_advice(s),
                            "predicted_breach_in_s": s.predicted_breach_in_s,
                            "predicted_wait_s": s.predicted_wait_s, "cause": s.cause})
        return out


def forecast_banner(groups: list[dict[str, Any]],
                    banner: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One banner row for the groups whose latest forecast predicts a breach (or a
    queue that never drains) with no ``surge.warning`` on the board: the forecast warns
    only once warmed up and with enough traffic, but the floor must not read "all
    normal" while a desk with a queue has nobody to take it. The row names the groups,
    soonest breach first, the soonest breach, and the agents to add over all of them
    (the table has each group's figures)."""
    warned = {b["scope"] for b in banner if b["kind"] == "forecast"}
    due: list[tuple[float, str, dict[str, Any], dict[str, Any]]] = []
    for g in groups:
        f = g.get("forecast")
        if f is None or f.get("source") != "forecast" or f"group:{g['group']}" in warned:
            continue
        breach = f.get("predicted_breach_in_s")
        if breach is None and not (f.get("unbounded") and g["depth"] > 0):
            continue
        due.append((math.inf if breach is None else breach, g["group"], g, f))
    if not due:
        return []
    due.sort(key=lambda x: (x[0], x[1]))
    names = [name for _, name, _, _ in due]
    shown = ", ".join(names[:3]) + (f" +{len(names) - 3}" if len(names) > 3 else "")
    _, _, _, first = due[0]
    return [{
        "kind": "forecast", "scope": f"group:{shown}", "groups": names, "source": "forecast",
        **_advice(None), "at_ms": first.get("at_ms"),
        "extra_agents": sum(int(f.get("extra_agents") or 0) for *_, f in due),
        "staffed_agents": sum(int(g["agents"]) for _, _, g, _ in due),
        "staffed_slots": sum(int(g["slots"]) for _, _, g, _ in due),
        "required_slots": None, "staffing_reserve": None, "agents_needed": None,
        "predicted_breach_in_s": first.get("predicted_breach_in_s"),
        "predicted_wait_s": first.get("predicted_wait_s"), "cause": first.get("cause"),
    }]


def _advice(s: SurgeSignal | None) -> dict[str, Any]:
    if s is None:
        return {"rate_per_min": None, "baseline_per_min": None, "ratio": None, "at_ms": None}
    return {
        "rate_per_min": s.rate_per_min, "baseline_per_min": s.baseline_per_min,
        "ratio": s.ratio, "at_ms": s.at_ms,
        "required_slots": s.required_slots, "staffed_agents": s.staffed_agents,
        "staffed_slots": s.staffed_slots, "extra_agents": s.extra_agents,
        "agents_needed": s.agents_needed, "staffing_reserve": s.staffing_reserve,
    }


def _decision(d: Decision) -> dict[str, Any]:
    return {
        "message_id": d.message_id, "conversation_id": d.conversation_id,
        "channel": str(d.channel), "skill_group": d.skill_group,
        "band": str(d.priority.band), "score": d.priority.score, "rule_id": d.rule_id,
        "tags": [{"id": t.id, "keywords": list(t.keywords)} for t in d.tags],
        "reasons": list(d.priority.reasons), "explain": list(d.explain),
        "overflow_from": d.overflow_from, "decided_at_ms": d.decided_at_ms,
        "latency_ms": d.decided_at_ms - d.received_at_ms,
    }
