"""SLA timers: transitions on a fake clock, Redis deadlines, exactly-once firing."""

from __future__ import annotations

import asyncio
from functools import partial

import pytest
import redis
from redis.asyncio import Redis

from omniroute.router.events import AgentEvent
from omniroute.router.keys import Keys
from omniroute.router.models import Band, Channel
from omniroute.router.redis_client import connect
from omniroute.router.settings import Settings
from omniroute.sla.config import SlaConfig
from omniroute.sla.escalation import BAND_SPAN, Escalator
from omniroute.sla.state import ConvState, SlaEngine
from omniroute.sla.timers import Change, TimerStore
from tests.test_sla_support import T0_MS, decision, enqueue


@pytest.fixture
def redis_url(any_redis_url: str) -> str:
    """Every test of this module runs on a standalone Redis and on a Redis Cluster."""
    return any_redis_url


CONFIG = SlaConfig.model_validate({
    "calendars": {
        "always": {"always_open": True},
        "office": {"hours": ["09:00-12:00", "13:30-21:00"]},
    },
    "escalation": {
        "std": [
            {"after_s": 0, "raise_bands": 1, "notify": ["team-lead"]},
            {"after_s": 60, "move_to": "senior", "notify": ["senior"]},
        ],
    },
    "policies": [
        {"id": "live", "match": {"channels": ["livestream"]}, "calendar": "always",
         "first_response": 30, "next_response": 30, "escalation": "std"},
        {"id": "vip", "match": {"groups": ["vip"]}, "calendar": "always",
         "first_response": 60, "next_response": 60},
        {"id": "chat", "calendar": "office",
         "first_response": {"target_s": 180, "warning_s": 100},
         "next_response": 180, "resolution": 3600, "progress": 150, "escalation": "std"},
    ],
})
S = 1000  # ms per second


def ev(kind: str, at_ms: int, conv: str = "c-1", agent: str = "a1",
       to_group: str | None = None) -> AgentEvent:
    return AgentEvent(kind, conv, agent, at_ms, group="general", to_group=to_group)


def due(engine: SlaEngine, state: ConvState) -> dict[tuple[str, str], int]:
    out = {}
    for m, at in engine.schedule(state):
        kind, stage, _gen, _conv = m.split("\x1f", 3)
        out[(kind, stage)] = at
    return out


# --- pure transitions ---------------------------------------------------------------
def test_first_reply_stops_first_response_and_starts_progress() -> None:
    engine = SlaEngine(CONFIG)
    s = engine.on_decision(None, decision(1))
    assert s is not None
    assert set(s.timers) == {"first_response", "resolution"}
    d = due(engine, s)
    assert d[("first_response", "warning")] == T0_MS + 100 * S
    assert d[("first_response", "breach")] == T0_MS + 180 * S
    assert d[("first_response", "esc1")] == T0_MS + 180 * S
    assert d[("first_response", "esc2")] == T0_MS + 240 * S
    assert d[("resolution", "warning")] == T0_MS + 2880 * S  # 80 % of 3600
    s = engine.on_agent_event(s, ev("reply", T0_MS + 50 * S))
    assert s is not None
    assert set(s.timers) == {"resolution", "progress"}
    assert due(engine, s)[("progress", "breach")] == T0_MS + 200 * S
    assert ("progress", "esc1") not in due(engine, s)  # no ladder on progress updates


def test_next_response_restarts_only_on_a_new_customer_message() -> None:
    engine = SlaEngine(CONFIG)
    s = engine.on_decision(None, decision(1))
    assert s is not None
    s = engine.on_agent_event(s, ev("reply", T0_MS + 10 * S))
    assert s is not None
    s = engine.on_decision(s, decision(2, conv="c-1", received_ms=T0_MS + 40 * S))
    assert s is not None
    assert s.timers["next_response"].started_ms == T0_MS + 40 * S
    # a second unanswered message does not restart it: the customer waits since the first
    s = engine.on_decision(s, decision(3, conv="c-1", received_ms=T0_MS + 70 * S))
    assert s is not None
    assert s.timers["next_response"].started_ms == T0_MS + 40 * S
    assert engine.on_decision(s, decision(3, conv="c-1", received_ms=T0_MS + 70 * S)) is None
    # a replayed old reply cannot stop the timer started after it
    assert engine.on_agent_event(s, ev("reply", T0_MS + 10 * S)) is None
    s = engine.on_agent_event(s, ev("reply", T0_MS + 90 * S))
    assert s is not None
    assert "next_response" not in s.timers


def test_reply_seen_before_its_decision() -> None:
    engine = SlaEngine(CONFIG)
    placeholder = engine.on_agent_event(None, ev("reply", T0_MS + 5 * S))
    assert placeholder is not None
    assert engine.schedule(placeholder) == []
    s = engine.on_decision(placeholder, decision(1))
    assert s is not None
    assert "first_response" not in s.timers  # already answered
    assert "resolution" in s.timers


def test_pause_while_waiting_on_customer_and_resume() -> None:
    engine = SlaEngine(CONFIG)
    s = engine.on_decision(None, decision(1))
    assert s is not None
    s = engine.on_agent_event(s, ev("wait_customer", T0_MS + 60 * S))
    assert s is not None
    assert all(t.paused for t in s.timers.values())
    assert engine.schedule(s) == []
    # the customer answers an hour later: 120 s of the 180 s target are left
    s = engine.on_decision(s, decision(2, conv="c-1", received_ms=T0_MS + 3600 * S))
    assert s is not None
    d = due(engine, s)
    assert d[("first_response", "breach")] == T0_MS + 3720 * S
    assert d[("first_response", "warning")] == T0_MS + 3640 * S


def test_resume_near_closing_time_carries_over_to_the_next_working_day() -> None:
    engine = SlaEngine(CONFIG)
    s = engine.on_decision(None, decision(1))  # Wednesday 10:00
    assert s is not None
    s = engine.on_agent_event(s, ev("wait_customer", T0_MS + 60 * S))
    assert s is not None
    evening = T0_MS + (10 * 3600 + 59 * 60) * S  # customer writes back at 20:59
    s = engine.on_decision(s, decision(2, conv="c-1", received_ms=evening))
    assert s is not None
    # 60 s left in today's shift, the other 60 s on Thursday from 09:00
    thursday_9 = T0_MS + (23 * 3600) * S
    assert due(engine, s)[("first_response", "breach")] == thursday_9 + 60 * S


def test_pause_counts_business_time_only() -> None:
    engine = SlaEngine(CONFIG)
    noon = T0_MS + 2 * 3600 * S - 60 * S  # 11:59 Shanghai
    s = engine.on_decision(None, decision(1, received_ms=noon))
    assert s is not None
    assert due(engine, s)[("first_response", "breach")] == noon + 60 * S + 90 * 60 * S + 120 * S


def test_resolve_stops_everything_and_a_later_message_opens_a_new_episode() -> None:
    engine = SlaEngine(CONFIG)
    s = engine.on_decision(None, decision(1))
    assert s is not None
    s = engine.on_agent_event(s, ev("resolve", T0_MS + 20 * S))
    assert s is not None
    assert s.timers == {}
    assert engine.on_agent_event(s, ev("reply", T0_MS + 10 * S)) is None  # stale
    s = engine.on_decision(s, decision(2, conv="c-1", received_ms=T0_MS + 900 * S))
    assert s is not None
    assert s.resolved_ms is None
    assert s.timers["first_response"].started_ms == T0_MS + 900 * S


def test_transfer_re_evaluates_the_policy() -> None:
    engine = SlaEngine(CONFIG)
    s = engine.on_decision(None, decision(1))
    assert s is not None
    s = engine.on_agent_event(s, ev("transfer", T0_MS + 30 * S, to_group="vip"))
    assert s is not None
    assert (s.policy, s.group) == ("vip", "vip")
    assert "resolution" not in s.timers  # the vip policy has none
    # 30 s used under the chat policy; vip warns at 80 % of 60 s = 48 s, breaches at 60 s,
    # and has no escalation ladder
    assert due(engine, s) == {
        ("first_response", "warning"): T0_MS + 48 * S,
        ("first_response", "breach"): T0_MS + 60 * S,
    }


def test_a_more_urgent_message_re_evaluates() -> None:
    engine = SlaEngine(CONFIG)
    s = engine.on_decision(None, decision(1, channel=Channel.LIVESTREAM))
    assert s is not None
    assert s.policy == "live"
    s = engine.on_decision(s, decision(2, conv="c-1", band=Band.P0,
                                       channel=Channel.LIVESTREAM, received_ms=T0_MS + 1))
    assert s is not None
    assert s.band == "P0"


# --- Redis --------------------------------------------------------------------------
@pytest.fixture
def store(aredis: Redis, settings: Settings) -> TimerStore:
    return TimerStore(aredis, Keys(settings.redis_prefix), SlaEngine(CONFIG))


@pytest.mark.integration
async def test_deadlines_fire_in_order_and_never_twice(store: TimerStore) -> None:
    await store.on_decision(decision(1, channel=Channel.LIVESTREAM))
    assert await store.claim_due(T0_MS + 23 * S) == []
    fired = await store.claim_due(T0_MS + 24 * S)
    assert [(f.kind, f.stage) for f, _ in fired] == [("first_response", "warning")]
    assert fired[0][1] is not None
    assert fired[0][1].group == "general"
    # an unrelated update must not re-add the warning that already fired
    await store.on_agent_event(ev("accept", T0_MS + 25 * S))
    assert await store.claim_due(T0_MS + 29 * S) == []
    fired = await store.claim_due(T0_MS + 30 * S)
    assert sorted((f.kind, f.stage) for f, _ in fired) == [
        ("first_response", "breach"), ("first_response", "esc1"),
    ]
    fired = await store.claim_due(T0_MS + 90 * S)
    assert [(f.kind, f.stage) for f, _ in fired] == [("first_response", "esc2")]
    assert await store.claim_due(T0_MS + 10_000 * S) == []


@pytest.mark.integration
async def test_a_claim_whose_alert_was_never_produced_fires_again(store: TimerStore) -> None:
    await store.on_decision(decision(1, channel=Channel.LIVESTREAM))
    claimed = await store.claim_due(T0_MS + 24 * S, lease_ms=60_000)
    assert [(f.kind, f.stage) for f, _ in claimed] == [("first_response", "warning")]
    # the claimer dies before producing: nothing fires until the lease runs out ...
    assert await store.requeue_expired(T0_MS + 60 * S) == 0
    assert [f.stage for f, _ in await store.claim_due(T0_MS + 60 * S)] == ["breach", "esc1"]
    # ... then any worker fires it again, exactly once
    assert await store.requeue_expired(T0_MS + 85 * S) == 1
    again = await store.claim_due(T0_MS + 85 * S)
    assert [(f.kind, f.stage) for f, _ in again] == [("first_response", "warning")]
    await store.ack([f for f, _ in again])
    assert await store.requeue_expired(T0_MS + 10_000 * S) == 2  # breach/esc1 never acked
    assert await store.requeue_expired(T0_MS + 10_000 * S) == 0


@pytest.mark.integration
async def test_reply_removes_pending_deadlines(store: TimerStore, aredis: Redis) -> None:
    await store.on_decision(decision(1, channel=Channel.LIVESTREAM))
    assert await aredis.zcard(store.keys.sla_deadlines()) == 4  # warning, breach, 2 rungs
    await store.on_agent_event(ev("reply", T0_MS + 5 * S))
    assert await aredis.zcard(store.keys.sla_deadlines()) == 0
    assert await store.claim_due(T0_MS + 10_000 * S) == []


@pytest.mark.integration
async def test_two_claimers_race_and_each_deadline_fires_once(
    store: TimerStore, settings: Settings, redis_url: str
) -> None:
    n = 300
    for i in range(n):
        await store.on_decision(decision(i, channel=Channel.LIVESTREAM,
                                         received_ms=T0_MS + i * 10))
    expected = n * 4  # warning, breach, esc1, esc2 per conversation
    other = connect(redis_url)
    stores = [store, TimerStore(other, Keys(settings.redis_prefix), SlaEngine(CONFIG))]
    seen: list[list[str]] = [[], []]

    async def claimer(i: int) -> None:
        now = T0_MS
        while now <= T0_MS + 200 * S:
            for f, _ in await stores[i].claim_due(now, limit=7):
                seen[i].append(f"{f.conversation_id}/{f.stage}")
            now += 250
            await asyncio.sleep(0)

    try:
        await asyncio.gather(claimer(0), claimer(1))
    finally:
        await other.aclose()
    both = seen[0] + seen[1]
    assert len(both) == expected
    assert len(set(both)) == expected  # no deadline fired twice
    assert seen[0]
    assert seen[1]  # both really competed


@pytest.mark.integration
async def test_concurrent_writers_on_one_conversation_lose_nothing(store: TimerStore) -> None:
    await asyncio.gather(*(
        store.on_decision(decision(i, conv="c-1", received_ms=T0_MS + i)) for i in range(20)
    ))
    state = await store.load("c-1")
    assert state is not None
    assert sorted(state.message_ids) == sorted(f"m-{i}" for i in range(20))


@pytest.mark.integration
async def test_resolved_tombstones_are_purged(store: TimerStore) -> None:
    await store.on_decision(decision(1))
    await store.on_agent_event(ev("resolve", T0_MS + 5 * S))
    assert await store.purge_resolved(T0_MS) == 0
    assert await store.purge_resolved(T0_MS + 6 * S) == 1
    assert await store.load("c-1") is None


@pytest.mark.integration
async def test_escalation_raises_priority_and_moves_queued_messages(
    aredis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.redis_prefix)
    d = decision(1, band=Band.P3, received_ms=T0_MS)
    await enqueue(aredis, keys, [d])
    esc = Escalator(aredis, keys)
    raise_step, move_step = CONFIG.escalation["std"]
    r = await esc.apply(raise_step, "general", ["m-1", "m-missing"])
    assert (r.touched, r.group) == (1, "general")
    assert await aredis.zscore(keys.queue("general"), "m-1") == 2 * BAND_SPAN + T0_MS
    r = await esc.apply(move_step, "general", ["m-1"])
    assert (r.touched, r.group) == (1, "senior")
    assert await aredis.zscore(keys.queue("general"), "m-1") is None
    assert await aredis.zscore(keys.queue("senior"), "m-1") == 2 * BAND_SPAN + T0_MS
    assert await aredis.sismember(keys.groups(), "senior")
    # already claimed (not queued): nothing to move
    r = await esc.apply(move_step, "general", ["m-1"])
    assert (r.touched, r.group) == (0, "general")


@pytest.mark.integration
async def test_batch_apply_retries_a_conversation_written_concurrently(
    store: TimerStore, sync_redis: redis.Redis
) -> None:
    engine = store.engine
    await store.on_decision(decision(0, conv="c-a"))
    raced = False

    def racing_change(state: ConvState | None) -> ConvState | None:
        nonlocal raced
        if not raced:  # another writer commits between our read and our script
            raced = True
            assert state is not None
            other = ConvState.from_json(state.to_json())
            other.message_ids.append("m-other")
            other.ver += 1
            sync_redis.hset(store.keys.sla_states(), "c-a", other.to_json())
        return engine.on_decision(state, decision(1, conv="c-a", received_ms=T0_MS + 1))

    changes: list[tuple[str, Change]] = [
        ("c-a", racing_change),
        ("c-b", partial(engine.on_decision, d=decision(2, conv="c-b"))),
        ("c-b", partial(engine.on_decision, d=decision(3, conv="c-b", received_ms=T0_MS + 5))),
        ("c-b", partial(engine.on_decision, d=decision(3, conv="c-b", received_ms=T0_MS + 5))),
    ]
    assert await store.apply_batch(changes) == 2
    a = await store.load("c-a")
    b = await store.load("c-b")
    assert a is not None
    assert b is not None
    assert a.message_ids == ["m-0", "m-other", "m-1"]  # nothing lost on either side
    assert b.message_ids == ["m-2", "m-3"]  # the replayed decision changed nothing
