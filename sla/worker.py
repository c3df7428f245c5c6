"""The SLA worker: timers, escalation and surge detection as one service.

``SlaWorker(settings, registry, clock)`` consumes ``omni.routed`` (decisions start,
resume and restart timers), ``omni.agent-events`` (replies stop them, ``wait_customer``
pauses, ``resolve`` ends, ``transfer`` re-evaluates) and ``omni.signals`` (live-room
heat) in its own consumer group, ``<OMNI_CONSUMER_GROUP>-sla``. Offsets are
committed after a batch's effects are in Redis (at-least-once; every effect is
idempotent, see :mod:`sla.state`).

A deadline loop ticks every ``tick_s``: it claims due deadlines (exactly once
across workers, :mod:`sla.timers`), applies escalation rungs, produces
``sla.warning`` / ``sla.breach`` / ``sla.escalation`` alerts to ``omni.sla-alerts``,
closes surge windows (``omni.surge``) and refreshes the gauges. Tests drive
``process``, ``fire_due`` and ``surge_tick`` directly on a fake clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import Any, Final

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from ..router import kafka, topics
from ..router.clock import Clock, SystemClock
from ..router.dead_letter import dead_letter_record
from ..router.events import (
    AgentEvent,
    EscalationActions,
    SignalRecord,
    SlaAlert,
    SurgeSignal,
)
from ..router.exceptions import BrokerUnavailable, NotStarted
from ..router.keys import Keys
from ..router.lifecycle import Lifecycle
from ..router.models import Decision
from ..router.redis_client import connect
from ..router.retry import Backoff, retrying
from ..router.settings import Settings
from ._redis import as_text
from .agents import AgentDesk
from .config import SlaConfig
from .escalation import Escalator
from .exceptions import StateConflict
from .forecast import GroupLoad, arrival_scopes, heat_of
from .forecast_store import Count, ForecastStore
from .metrics import SlaMetrics
from .reload import SlaConfigHolder
from .state import ConvState, Fired, SlaEngine, member
from .surge import Staffing, SurgeWindows
from .timers import Change, TimerStore

__all__ = ["SlaWorker"]

log = logging.getLogger(__name__)
CLAIM_LIMIT: Final = 500
#: What the loops retry on (with backoff) instead of dropping a batch or a tick.
TRANSIENT = (RedisError, OSError, KafkaError, BrokerUnavailable, StateConflict)


class SlaWorker(Lifecycle):
    """SLA timers + escalation + surge; ``start``/``stop`` are idempotent."""

    def __init__(
        self,
        settings: Settings,
        registry: CollectorRegistry,
        clock: Clock | None = None,
        *,
        config: SlaConfig | None = None,
        redis: Redis | None = None,
        tick_s: float | None = None,
        agent_live_ttl_s: float | None = None,
        surge_grace_s: float = 2.0,
        gauges_every_s: float = 15.0,
        tombstone_ttl_s: float = 86_400.0,
    ) -> None:
        self.settings = settings
        self.metrics = SlaMetrics(registry)
        self.clock: Clock = clock or SystemClock()
        # sla.yaml: re-read on reload() (SIGHUP) and when the file changes (checked each
        # tick); a fixed ``config`` is never reloaded
        self.holder = SlaConfigHolder(
            Path(settings.config_dir) / "sla.yaml" if config is None else None,
            self.metrics, config=config,
        )
        self.keys = Keys(settings.redis_prefix)
        # default: OMNI_SLA_TICK_S and OMNI_AGENT_LIVE_TTL_S (the agent API's liveness)
        self.tick_s = settings.sla.tick_s if tick_s is None else tick_s
        self.agent_live_ttl_s = (
            settings.agent_api.agent_live_ttl_s if agent_live_ttl_s is None else agent_live_ttl_s
        )
        self.surge_grace_ms = int(surge_grace_s * 1000)
        self.gauges_every_ms = int(gauges_every_s * 1000)
        self.tombstone_ttl_ms = int(tombstone_ttl_s * 1000)
        self.group_id = f"{settings.consumer_group}-sla"
        self.routed = settings.topic(topics.ROUTED)
        self.agent_events = settings.topic(topics.AGENT_EVENTS)
        self.signals = settings.topic(topics.SIGNALS)
        self.alerts_topic = settings.topic(topics.SLA_ALERTS)
        self.surge_topic = settings.topic(topics.SURGE)
        self.dead_letter = settings.topic(topics.DEAD_LETTER)
        self.engine = SlaEngine(self.config)
        self._redis = redis
        self._owns_redis = redis is None
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._consume = self._loops = True
        self._last_closed: int | None = None
        self._last_gauges_ms = 0
        self.processed = 0
        self.store: TimerStore | None = None

    # --- lifecycle --------------------------------------------------------------
    async def start(self, *, consume: bool = True, loops: bool = True) -> None:
        """Connect Redis and Kafka, join the consumer group, start the loops.

        Args:
            consume: Consume the input topics (tests drive ``process`` instead).
            loops: Run the deadline loop (tests drive ``tick`` instead).
        """
        if not self.running:
            self._consume, self._loops = consume, loops
        await super().start()

    async def _start(self) -> None:
        self._stopping.clear()
        if self._redis is None:
            self._redis = connect(self.settings.redis_url, socket_timeout=10)
        redis = self._redis
        self.store = TimerStore(redis, self.keys, self.engine)
        self.escalator = Escalator(redis, self.keys)
        self.desk = AgentDesk(redis, self.keys, live_ttl_s=self.agent_live_ttl_s)
        self.surge = SurgeWindows(redis, self.keys, self.config.surge)
        self.forecast = ForecastStore(redis, self.keys, self.config.surge)
        self._producer = kafka.producer(self.settings)
        await self._producer.start()
        if self._consume:
            self._consumer = kafka.consumer(
                self.settings, self.routed, self.agent_events, self.signals,
                group_id=self.group_id, max_poll_records=CLAIM_LIMIT,
            )
            await self._consumer.start()
            self._tasks.append(asyncio.create_task(self._consume_loop(), name="sla-consume"))
        if self._loops:
            self._tasks.append(asyncio.create_task(self._tick_loop(), name="sla-tick"))

    async def _stop(self) -> None:
        """Stop the loops (a batch in hand is replayed from Kafka), disconnect."""
        self._stopping.set()
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        consumer, producer = self._consumer, self._producer
        self._consumer = self._producer = None
        await kafka.stop_clients(consumer, producer)
        if self._owns_redis and self._redis is not None:
            redis, self._redis = self._redis, None
            await redis.aclose()

    def request_stop(self) -> None:
        """Ask the loops to return after the batch in hand (SIGTERM drain)."""
        self._stopping.set()

    async def run(self) -> None:
        """Wait until ``request_stop``/``stop``; re-raise if a loop crashed."""
        if not self._tasks:
            raise NotStarted("SlaWorker is not started: call start() first")
        stop = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait([stop, *self._tasks],
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        for task in done:
            if task is not stop and not task.cancelled():
                error = task.exception()
                if error is not None:
                    raise error

    # --- consuming --------------------------------------------------------------
    async def _consume_loop(self) -> None:
        consumer = self._consumer
        assert consumer is not None

        async def process_and_commit(records: list[ConsumerRecord[bytes, bytes]]) -> None:
            await self.process(records)
            await consumer.commit()

        while not self._stopping.is_set():
            batch = await consumer.getmany(timeout_ms=200, max_records=CLAIM_LIMIT)
            records = [r for recs in batch.values() for r in recs]
            if records:
                await retrying(partial(process_and_commit, records), TRANSIENT,
                               f"sla worker: batch of {len(records)}", stop=self._stopping)

    async def process(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Apply a batch of consumed records (idempotent; safe to replay)."""
        store = self._store()
        engine = self.engine
        counts: list[Count] = []
        dead: list[tuple[bytes, bytes]] = []
        changes: list[tuple[str, Change]] = []
        now_ms = self.now_ms()
        for rec in records:
            value = rec.value or b""
            try:
                if rec.topic == self.routed:
                    d = Decision.from_json(value)
                    changes.append((d.conversation_id, partial(engine.on_decision, d=d)))
                    tags = [t.id for t in d.tags]
                    # counted once per message id, however often the batch is replayed
                    counts.append(Count(
                        d.message_id, d.received_at_ms,
                        dict.fromkeys(
                            arrival_scopes(d.skill_group, str(d.channel), tags, d.room), 1.0),
                        dict.fromkeys(self._scopes(d.channel, d.skill_group, tags), 1.0),
                    ))
                    self.metrics.events.labels("routed", "ok").inc()
                elif rec.topic == self.agent_events:
                    e = AgentEvent.from_json(value)
                    changes.append((e.conversation_id, partial(engine.on_agent_event, e=e)))
                    if e.type in ("resolve", "transfer") and e.group:
                        # a completion: the group's service rate and handling time
                        counts.append(Count(f"ev:{e.event_id}", e.at_ms,
                                            {f"s:group:{e.group}": 1.0}))
                    self.metrics.events.labels("agent-events", "ok").inc()
                elif rec.topic == self.signals:
                    s = SignalRecord.from_json(value)
                    heat = heat_of(self.config.surge, s.viewers, s.gifts, s.likes)
                    if heat > 0:
                        room = f"heat:room:{s.room}"
                        counts.append(Count(
                            f"sig:{rec.topic}:{rec.partition}:{rec.offset}", s.received_at_ms,
                            {room: heat, "heat:all": heat}, {room: heat},
                        ))
                    self.metrics.events.labels("signals", "ok").inc()
            except (ValueError, TypeError, KeyError) as exc:
                self.metrics.events.labels(rec.topic.rsplit(".", 1)[-1], "invalid").inc()
                dead.append((rec.key or b"", dead_letter_record(rec, f"sla: {exc}", now_ms, "sla")))
        await store.apply_batch(changes)
        await self.forecast.record(counts)
        if dead:
            await self._send(self.dead_letter, dead)
        self.processed += len(records)

    @staticmethod
    def _scopes(channel: str, group: str, tags: Sequence[str]) -> list[str]:
        out = ["all", f"channel:{channel}", f"group:{group}"]
        for tag in dict.fromkeys([*tags, *(t.split(".", 1)[0] for t in tags)]):
            out.append(f"tag:{tag}")
        return out

    # --- the deadline loop --------------------------------------------------------
    async def _tick_loop(self) -> None:
        backoff = Backoff()
        while not self._stopping.is_set():
            wait_s = self.tick_s
            try:
                await self.tick()
                backoff.reset()
            except TRANSIENT as exc:
                log.warning("sla worker: tick failed (%r); retrying", exc)
                wait_s = max(wait_s, backoff.next())
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), wait_s)

    async def tick(self) -> None:
        """One pass: reload a changed sla.yaml, fire due deadlines, close surge windows,
        refresh gauges, purge."""
        self._apply(self.holder.reload_if_changed())
        await self.fire_due()
        await self.surge_tick()
        now = self.now_ms()
        if now - self._last_gauges_ms >= self.gauges_every_ms:
            self._last_gauges_ms = now
            await self.refresh_gauges()
            await self._store().purge_resolved(now - self.tombstone_ttl_ms)

    async def fire_due(self) -> list[dict[str, Any]]:
        """Claim every due deadline (exactly once across workers) and produce its alert.

        A claim is a lease: the deadline is acked once its alert is on the topic. A
        worker that dies in between leaves the lease to expire, and the next tick of
        any worker fires it again (the alert keeps its ``alert_id``, so consumers can
        drop the rare duplicate).
        """
        store = self._store()
        produced: list[dict[str, Any]] = []
        requeued = await store.requeue_expired(self.now_ms())
        if requeued:
            log.warning("sla: %d deadline(s) whose claimer died are due again", requeued)
        while True:
            now = self.now_ms()
            claimed = await store.claim_due(now, CLAIM_LIMIT)
            alerts: list[SlaAlert] = []
            for fired, state in claimed:
                alert = await self._alert(fired, state, now)
                if alert is not None:
                    alerts.append(alert)
            try:
                await self._send(self.alerts_topic, [
                    (a.conversation_id.encode(), a.to_json()) for a in alerts
                ])
            except (BrokerUnavailable, KafkaError):
                # we own these deadlines: put them back so a later tick fires them
                redis = self._redis_client()
                await redis.zadd(self.keys.sla_deadlines(), {
                    member(f.kind, f.stage, f.gen, f.conversation_id): f.due_ms
                    for f, _ in claimed
                }, nx=True)
                await store.ack([f for f, _ in claimed])
                raise
            await store.ack([f for f, _ in claimed])
            produced += [a.to_dict() for a in alerts]
            if len(claimed) < CLAIM_LIMIT:
                return produced

    async def _alert(self, f: Fired, state: ConvState | None, now: int) -> SlaAlert | None:
        timer = state.timers.get(f.kind) if state is not None else None
        if state is None or timer is None or timer.gen != f.gen or timer.paused:
            return None  # stale: stopped, paused or restarted since it was scheduled
        policy = self.engine.policy_of(state)
        breach_ms = self.engine.breach_due_ms(state, timer)
        alert = SlaAlert(
            type="sla.warning", alert_id=f"{f.conversation_id}:{f.kind}:{f.stage}:{f.gen}",
            conversation_id=state.conversation_id, group=state.group,
            policy=policy.id, timer=f.kind, stage=f.stage,
            channel=state.channel, band=state.band,
            message_id=state.message_ids[-1] if state.message_ids else None,
            customer_id=state.customer_id, agent_id=state.agent_id,
            target_s=timer.target_s, warning_s=timer.warning_s,
            due_at_ms=breach_ms, fired_at_ms=now,
            overdue_s=round((now - breach_ms) / 1000, 3),
            fire_lag_s=round((now - f.due_ms) / 1000, 3),
        )
        self.metrics.fire_lag.set(max(0.0, (now - f.due_ms) / 1000))
        labels = (state.group, policy.id, f.kind)
        if f.stage == "warning":
            self.metrics.warnings.labels(*labels).inc()
            return alert
        if f.stage == "breach":
            self.metrics.breaches.labels(*labels).inc()
            return dataclasses.replace(alert, type="sla.breach")
        ladder = self.config.escalation.get(policy.escalation or "", ())
        level = int(f.stage[3:]) if f.stage.startswith("esc") else 0
        if not 1 <= level <= len(ladder):
            return None  # the ladder changed since this rung was scheduled
        step = ladder[level - 1]
        result = await self.escalator.apply(step, state.group, state.message_ids)
        from_group = state.group
        if (result.touched and result.group != from_group) or level > state.escalation_level:
            await self._store().apply(
                state.conversation_id,
                lambda s: self._escalated(s, from_group, result.group, level),
            )
        self.metrics.escalations.labels(from_group, policy.id).inc()
        return dataclasses.replace(
            alert, type="sla.escalation", level=level, notify=tuple(step.notify),
            group=result.group, from_group=from_group,
            actions=EscalationActions(step.raise_bands, step.move_to, result.touched),
        )

    @staticmethod
    def _escalated(s: ConvState | None, from_group: str, to_group: str,
                   level: int) -> ConvState | None:
        if s is None:
            return None
        changed = False
        if s.group == from_group and to_group != from_group:
            s.group = to_group
            changed = True
        if level > s.escalation_level:
            s.escalation_level = level
            changed = True
        return s if changed else None

    # --- surge ------------------------------------------------------------------
    async def surge_tick(self) -> list[dict[str, Any]]:
        """Evaluate every surge window and forecast bucket that closed since the last
        call (each once across all workers); produce the signals to omni.surge."""
        out = await self.forecast_tick()
        return out + await self.window_tick()

    async def window_tick(self) -> list[dict[str, Any]]:
        """The window detector: every window closed since the last call."""
        now = self.now_ms()
        current = self.surge.index(now - self.surge_grace_ms)
        first = current - 1 if self._last_closed is None else self._last_closed + 1
        first = max(first, current - 5)
        out: list[dict[str, Any]] = []
        for index in range(first, current):
            staffing = await self._staffing(now)
            closed = await self.surge.close(index, now, staffing)
            self._last_closed = index
            if closed is None:
                continue
            if any(s["type"].startswith("incident") for s in closed):
                # the forecast flagged it first: its incident is the one that goes out
                active = list((await self.forecast.state()).incidents)
                closed = await self.forecast.suppress(closed, active)
            signals = [SurgeSignal(**s) for s in closed]
            await self._send(self.surge_topic, [(s.scope.encode(), s.to_json()) for s in signals])
            for s in signals:
                self.metrics.surge_signals.labels(s.type).inc()
            out += [s.to_dict() for s in signals]
            for scope, st in (await self.surge.states()).items():
                self.metrics.surge_active.labels(scope).set(1 if st.active else 0)
                self.metrics.surge_rate.labels(scope).set(st.rate_per_min)
                if st.baseline is not None:
                    self.metrics.surge_baseline.labels(scope).set(st.baseline)
                if scope.startswith("group:") and not st.active:
                    self.metrics.surge_extra_agents.labels(scope).set(0)  # no surge, no ask
            for s in signals:
                if s.extra_agents is not None:
                    self.metrics.surge_extra_agents.labels(s.scope).set(s.extra_agents)
        return out

    async def forecast_tick(self) -> list[dict[str, Any]]:
        """The forecast: every short bucket closed since the last evaluation (by any
        worker); ``surge.warning`` / ``incident`` to omni.surge; the gauges."""
        if not self.config.surge.forecast.enabled:
            return []
        now = self.now_ms()
        pending = await self.forecast.evaluate(now, self.surge_grace_ms,
                                               partial(self._loads, now))
        out: list[dict[str, Any]] = []
        if pending is not None:
            signals = [SurgeSignal.from_dict(s) for s in pending.signals]
            try:
                await self._send(self.surge_topic,
                                 [(s.scope.encode(), s.to_json()) for s in signals])
            except BaseException:
                await self.forecast.release(pending.token)
                raise
            if not await self.forecast.commit(pending):
                log.warning("sla: forecast lease lost while producing; buckets %s are "
                            "evaluated again", pending.buckets)
            for s in signals:
                self.metrics.surge_signals.labels(s.type).inc()
            out = [s.to_dict() for s in signals]
        self._forecast_gauges(await self.forecast.forecasts())
        return out

    def _forecast_gauges(self, forecasts: dict[str, dict[str, Any]]) -> None:
        """Every worker exports the latest forecast, whoever evaluated it."""
        m = self.metrics
        for gauge in (m.forecast_wait, m.forecast_breach_in, m.forecast_rate,
                      m.forecast_extra_agents):
            gauge.clear()
        inf = float("inf")
        for g, f in forecasts.items():
            wait = f.get("predicted_wait_s")
            breach = f.get("breach_in_s")
            m.forecast_wait.labels(g).set(inf if wait is None else float(wait))
            m.forecast_breach_in.labels(g).set(inf if breach is None else float(breach))
            m.forecast_rate.labels(g).set(float(f.get("rate_per_s", 0.0)) * 60)
            m.forecast_extra_agents.labels(g).set(float(f.get("extra_agents", 0)))

    async def _loads(self, now: int) -> dict[str, GroupLoad]:
        """Per group: live agents, their slots and slots in use (AgentDesk), and the
        queue's depth and oldest wait."""
        agents = await self.desk.live_agents(now)
        redis = self._redis_client()
        pipe = redis.pipeline(transaction=False)
        for a in agents:
            pipe.scard(self.keys.agent_active(a))
        active: list[int] = await pipe.execute() if agents else []
        per: dict[str, list[int]] = {}
        for info, busy in zip(agents.values(), active, strict=True):
            for g in info.groups:
                acc = per.setdefault(g, [0, 0, 0])
                acc[0] += 1
                acc[1] += info.slots
                acc[2] += min(int(busy), info.slots)
        groups = {as_text(g) for g in await redis.smembers(self.keys.groups())} | set(per)
        out: dict[str, GroupLoad] = {}
        for g in sorted(groups):
            view = await self.desk.queue_view(g, now, top=0)
            n_agents, slots, busy = per.get(g, [0, 0, 0])
            out[g] = GroupLoad(n_agents, slots, view.depth, view.oldest_age_s, busy=busy)
        return out

    async def _staffing(self, now: int) -> dict[str, Staffing]:
        agents = await self.desk.live_agents(now)
        out: dict[str, Staffing] = {
            "all": Staffing(len(agents), sum(a.slots for a in agents.values()))
        }
        per: dict[str, list[int]] = {}
        for a in agents.values():
            for g in a.groups:
                per.setdefault(g, []).append(a.slots)
        for g, slots in per.items():
            out[f"group:{g}"] = Staffing(len(slots), sum(slots))
        return out

    # --- gauges -----------------------------------------------------------------
    async def refresh_gauges(self) -> None:
        """Open, at-risk and breached conversations per group; staffed slots."""
        now = self.now_ms()
        open_: dict[str, int] = {}
        risk: dict[str, int] = {}
        breached: dict[str, int] = {}
        for state in await self._store().open_states():
            running = [t for t in state.timers.values() if not t.paused]
            if not running or state.resolved_ms is not None:
                continue
            g = state.group
            open_[g] = open_.get(g, 0) + 1
            risk.setdefault(g, 0)  # 0, not absent, for a group with open conversations
            breached.setdefault(g, 0)
            cal = self.engine.calendar_of(state)
            elapsed = [t.elapsed_s + cal.elapsed(t.seg_start_ms, now) for t in running]
            if any(e >= t.target_s for e, t in zip(elapsed, running, strict=True)):
                breached[g] = breached.get(g, 0) + 1
            elif any(e >= t.warning_s for e, t in zip(elapsed, running, strict=True)):
                risk[g] = risk.get(g, 0) + 1
        for gauge, values in ((self.metrics.open, open_), (self.metrics.at_risk, risk),
                              (self.metrics.breached_open, breached)):
            gauge.clear()
            for g, n in values.items():
                gauge.labels(g).set(n)
        staffing = await self.desk.staffing(now)
        self.metrics.staffed_slots.clear()
        for g, n in staffing.slots.items():
            self.metrics.staffed_slots.labels(g).set(n)

    # --- configuration ------------------------------------------------------------
    @property
    def config(self) -> SlaConfig:
        """The active SLA configuration (a reload swaps it)."""
        return self.holder()

    def reload(self) -> bool:
        """Re-read sla.yaml (SIGHUP): True if a new version became active. An invalid
        file is logged and counted, and the old version keeps running."""
        return self._apply(self.holder.reload())

    def _apply(self, changed: bool) -> bool:
        """Rebuild what derives from the configuration; the next batch and tick use it."""
        if not changed:
            return False
        config = self.holder()
        self.engine = SlaEngine(config)  # policies, calendars, warning ratios
        if self.store is not None:
            self.store.engine = self.engine
        surge: SurgeWindows | None = getattr(self, "surge", None)
        if surge is not None and surge.config != config.surge:
            self.surge = SurgeWindows(surge.redis, self.keys, config.surge)
            self.forecast = ForecastStore(surge.redis, self.keys, config.surge)
            if self.surge.window_ms != surge.window_ms:
                self._last_closed = None  # window indices changed meaning
        return True

    # --- helpers ----------------------------------------------------------------
    def now_ms(self) -> int:
        """The clock's time in ms."""
        return int(self.clock.now() * 1000)

    def _store(self) -> TimerStore:
        if self.store is None:
            raise NotStarted("SlaWorker is not started: call start() first")
        return self.store

    def _redis_client(self) -> Redis:
        if self._redis is None:
            raise NotStarted("SlaWorker is not started: call start() first")
        return self._redis

    async def _send(self, topic: str, records: Sequence[tuple[bytes, bytes]]) -> None:
        producer = self._producer
        if producer is None:
            raise BrokerUnavailable("SlaWorker is not started: call start() first")
        await kafka.send_acked(producer, topic, records, self.settings.produce_timeout_s)

