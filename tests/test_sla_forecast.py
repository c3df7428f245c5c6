"""The surge forecast (sla/forecast.py): the model on hand-made buckets, and the live
path in the SLA worker with the real broker and Redis (sla/forecast_store.py)."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from omniroute.router import topics
from omniroute.router.events import AgentEvent, SignalRecord
from omniroute.router.keys import Keys
from omniroute.router.models import Channel, Decision
from omniroute.router.settings import Settings, default_config_dir
from omniroute.skills.config import load_config
from omniroute.sla.agents import AgentDesk
from omniroute.sla.config import SlaConfig, SurgeConfig, load_sla_config
from omniroute.sla.exceptions import ConfigError
from omniroute.sla.forecast import (
    ForecastState,
    GroupForecast,
    GroupLoad,
    SurgeForecaster,
)
from omniroute.sla.forecast_store import ForecastStore
from omniroute.sla.surge import erlang_c, poisson_z, slots_for_service_level
from omniroute.sla.worker import SlaWorker
from tests.helpers import consume
from tests.test_sla_support import T0_MS, FakeClock, consume_json, decision, enqueue, poll

G = "livestream"
BUCKET_MS = 5000


def config(**surge: object) -> SurgeConfig:
    base: dict[str, object] = {"aht_s": 60, "answer_target_s": 30, "min_baseline_per_min": 1}
    return SurgeConfig.model_validate({**base, **surge})


def bucket(rate_per_s: float, group: str = G) -> dict[str, float]:
    n = rate_per_s * 5
    return {"a:all": n, f"a:group:{group}": n, "a:channel:livestream": n,
            f"a:gc:{group}|livestream": n}


class Feed:
    """Feeds buckets to a forecaster one by one, as the worker evaluates them."""

    def __init__(self, fc: SurgeForecaster, start_ms: int = T0_MS) -> None:
        self.fc = fc
        self.state = ForecastState()
        self.history: list[dict[str, float]] = []
        self.index = start_ms // BUCKET_MS - 1
        self.signals: list[tuple[int, dict[str, object]]] = []
        self.last: dict[str, GroupForecast] = {}

    def step(self, b: dict[str, float], load: GroupLoad) -> list[dict[str, object]]:
        self.index += 1
        self.history.append(b)
        need = self.fc.buckets_needed
        window = ([{}] * need + self.history)[-need:]
        now = (self.index + 1) * BUCKET_MS
        self.state, out, self.last = self.fc.evaluate(now, self.index, window, {G: load},
                                                      self.state)
        self.signals += [(now, s) for s in out]
        return out

    def run(self, rates: Sequence[float], load: GroupLoad) -> None:
        for r in rates:
            self.step(bucket(r), load)


# --- the model ------------------------------------------------------------------------
def test_steady_load_waits_as_erlang_c_and_raises_nothing() -> None:
    fc = SurgeForecaster(config())
    feed = Feed(fc)
    load = GroupLoad(agents=24, slots=72)  # 1/s x 60 s = 60 erlangs on 72 slots
    feed.run([1.0] * 120, load)
    f = feed.last[G]
    assert f.rate_per_s == pytest.approx(1.0)
    assert f.trend_per_s2 == 0.0
    # the wait of an arrival now: C(N, A) x AHT / (N - A)
    assert f.predicted_wait_s == pytest.approx(erlang_c(72, 60.0) * 60 / 12)
    assert f.breach_in_s is None
    assert feed.signals == []


def test_poisson_noise_of_a_quiet_group_raises_no_warning() -> None:
    # 20/min at 70 % occupancy, for an hour of Poisson arrivals: bursts of a quiet group
    # (13 arrivals in 15 s happen) are not a new level
    rng = random.Random(13)
    fc = SurgeForecaster(config(aht_s=120, forecast={"groups": {G: {"answer_target_s": 180}}}))
    feed = Feed(fc)
    load = GroupLoad(agents=14, slots=56)

    def poisson(mean: float) -> int:
        n, t = 0, rng.expovariate(1.0)
        while t < mean:
            n, t = n + 1, t + rng.expovariate(1.0)
        return n

    for _ in range(720):
        feed.step(bucket(poisson(20 / 60 * 5) / 5), load)
    assert [s for _, s in feed.signals if s["type"] == "surge.warning"] == []


def test_step_test_weighs_the_thinness_of_the_baseline() -> None:
    # the double11-midnight case: 13 arrivals in 15 s over a baseline of 37 in 150 s is a
    # 3.5 sigma burst, not a 4 sigma step; the normal approximation said 4.8
    assert poisson_z(13, 15, 37, 150) == pytest.approx(3.48, abs=0.01)
    wald = (13 / 15 - 37 / 150) / math.sqrt(37 / 150 / 15)
    assert wald > 4.5
    assert poisson_z(150, 15, 150, 150) > 10  # a 10x step is one at once
    assert poisson_z(1, 15, 50, 150) < 0  # a lull is negative
    assert poisson_z(0, 15, 0, 150) == 0.0


def test_ramp_over_capacity_is_projected_as_a_backlog() -> None:
    # arrivals ramp past what 12 slots serve (0.2/s at 60 s): a queue of 40 whose
    # oldest has waited 20 s. FIFO: its oldest quarter (10 conversations) needs 50 s of
    # the slots to drain, so it reaches the 30 s target in 10 s: a breach in 10 s
    fc = SurgeForecaster(config())
    feed = Feed(fc)
    load = GroupLoad(agents=4, slots=12)
    feed.run([0.1] * 30, load)
    for i in range(1, 7):
        feed.step(bucket(0.1 + 0.1 * i), load)
    feed.step(bucket(0.8), GroupLoad(agents=4, slots=12, depth=40, oldest_wait_s=20.0))
    f = feed.last[G]
    assert f.cause == "backlog"
    assert f.breach_in_s == pytest.approx(10.0)
    warning = [s for _, s in feed.signals if s["type"] == "surge.warning"][-1]
    assert warning["predicted_breach_in_s"] is not None
    # the same queue with slots that drain it in time does not breach
    calm = Feed(fc)
    calm.run([0.1] * 30, GroupLoad(agents=40, slots=120))
    calm.step(bucket(0.1), GroupLoad(agents=40, slots=120, depth=40, oldest_wait_s=20.0))
    assert calm.last[G].breach_in_s is None


def test_backlog_projection_of_a_stalled_queue() -> None:
    # nobody serves (no slots): the head of the queue, 10 s old, breaches the 30 s
    # target in 20 s, whatever the arrivals do
    fc = SurgeForecaster(config())
    feed = Feed(fc)
    feed.run([0.2] * 30, GroupLoad(agents=0, slots=0))
    feed.step(bucket(0.2), GroupLoad(agents=0, slots=0, depth=10, oldest_wait_s=10.0))
    f = feed.last[G]
    assert f.cause == "backlog"
    assert f.breach_in_s == pytest.approx(20.0)
    assert math.isinf(f.predicted_wait_s)


def test_advice_carries_the_reserve() -> None:
    fc = SurgeForecaster(config())
    feed = Feed(fc)
    load = GroupLoad(agents=4, slots=12)
    feed.run([0.1] * 30, load)
    feed.run([1.0] * 4, load)  # a 10x step
    warnings = [s for _, s in feed.signals if s["type"] == "surge.warning"]
    assert warnings
    w = warnings[0]
    peak = float(w["evidence"]["projected_peak_per_min"]) / 60  # type: ignore[index]
    needed = slots_for_service_level(peak, 60, 30, 0.8)
    assert w["needed_slots"] == needed
    assert w["required_slots"] == math.ceil(needed * 1.2)
    assert w["staffing_reserve"] == 1.2
    assert w["extra_agents"] == math.ceil((math.ceil(needed * 1.2) - 12) / 3)
    assert w["staffed_slots"] == 12


def test_advice_is_renewed_when_the_staff_it_asked_for_no_longer_holds() -> None:
    # a 10x step is advised; the advised agents log in; the load doubles again. Today's
    # extra agents (over the staff now logged in) are no more than the first advice's,
    # but the staffing the forecast needs is far over what was advised: a new warning
    fc = SurgeForecaster(config())
    feed = Feed(fc)
    load = GroupLoad(agents=4, slots=12)
    feed.run([0.1] * 30, load)
    feed.run([1.0] * 4, load)
    first = [s for _, s in feed.signals if s["type"] == "surge.warning"]
    assert len(first) == 1
    advised = 4 + int(first[0]["extra_agents"])  # type: ignore[call-overload]
    staffed = GroupLoad(agents=advised, slots=3 * advised)
    feed.run([1.0] * 12, staffed)  # the advice holds: no new warning
    assert len([s for _, s in feed.signals if s["type"] == "surge.warning"]) == 1
    feed.run([2.0] * 12, staffed)
    second = [s for _, s in feed.signals if s["type"] == "surge.warning"][1:]
    assert second, "no new advice although the advised staff no longer holds the load"
    w = second[0]
    assert w["staffed_agents"] == advised
    extra = int(w["extra_agents"])  # type: ignore[call-overload]
    assert extra <= int(first[0]["extra_agents"]) * 1.2  # type: ignore[call-overload]
    assert advised + extra > advised * 1.2
    # and it is not repeated while that advice holds
    again = GroupLoad(agents=advised + extra, slots=3 * (advised + extra))
    before = len(feed.signals)
    feed.run([2.0] * 24, again)
    assert [s for _, s in feed.signals[before:] if s["type"] == "surge.warning"] == []


def test_heat_to_arrivals_scale_is_learned_in_quiet_times() -> None:
    # live-room heat leads the questions: the arrivals per heat unit are learned while
    # all is quiet (no warning, heat at its usual level), and not from a heating room
    # whose questions have not come yet (that would teach "heat brings no questions")
    fc = SurgeForecaster(config())
    feed = Feed(fc)
    load = GroupLoad(agents=24, slots=72)

    def hot(rate: float, heat: float) -> dict[str, float]:
        return {**bucket(rate), "heat:all": heat * 5, "heat:room:r1": heat * 5}

    for _ in range(60):
        feed.step(hot(0.5, 100.0), load)
    assert feed.signals == []
    assert feed.state.heat_k == pytest.approx(0.5 / 100.0)
    learned = feed.state.heat_k
    for _ in range(6):  # the room heats up 10x, the questions follow 30 s later
        feed.step(hot(0.5, 1000.0), load)
    assert feed.state.heat_k == learned
    # the heat is a driver of the projection: the group is warned before its arrivals rise
    warnings = [w for _, w in feed.signals if w["type"] == "surge.warning"]
    assert warnings
    assert "heat" in warnings[0]["evidence"]["drivers"]  # type: ignore[index]
    assert float(warnings[0]["evidence"]["rate_per_min"]) == pytest.approx(30)  # type: ignore[index, arg-type]


def test_scheduled_peak_is_advised_ahead_of_its_start() -> None:
    start_ms = T0_MS + 3005_000  # advised at T0 + 1205 s, the 241st bucket
    fc = SurgeForecaster(config(scheduled_peaks=[{
        "id": "promo", "start": start_ms / 1000, "end": (start_ms + 3600_000) / 1000,
        "multiplier": 8, "groups": [G]}]))
    feed = Feed(fc)
    load = GroupLoad(agents=10, slots=30)  # holds 0.2/s, not 8 x 0.2/s
    feed.run([0.2] * 240, load)  # 20 minutes: still more than 30 minutes before it
    assert feed.signals == []
    feed.run([0.2] * 1, load)
    for _ in range(200):
        if feed.signals:
            break
        feed.step(bucket(0.2), load)
    at, w = feed.signals[0]
    assert w["cause"] == "scheduled"
    assert start_ms - at == 1800_000  # advice_lead_s: 30 minutes ahead
    assert w["evidence"]["starts_in_s"] == 1800.0  # type: ignore[index]
    assert w["evidence"]["expected_rate_per_min"] == pytest.approx(8 * 12, rel=0.01)  # type: ignore[index]
    assert int(w["extra_agents"]) > 0  # type: ignore[call-overload]
    assert len(feed.signals) == 1  # advised once


def test_each_group_is_forecast_against_its_sla_first_response_target() -> None:
    # the shipped configuration: a group's forecast target is the first-response target
    # of the SLA policy its ordinary chat (P2, no tags) gets - 30 s on the live stream,
    # 180 s for the chat desks, 10 min for the emergency call-back
    directory = default_config_dir()
    sla = load_sla_config(directory / "sla.yaml")
    fc = SurgeForecaster(sla.surge)
    groups = load_config(directory).groups.groups
    assert len(groups) > 10
    for g in groups:
        channel = "livestream" if g == "livestream" else "app"
        policy = sla.policy_for(channel, "P2", g)
        assert policy.first_response is not None
        assert fc.target_of(g) == policy.first_response.target_s, (g, policy.id)
    assert fc.target_of("livestream") == 30
    assert fc.target_of("payment") == fc.target_of("general") == 180
    assert fc.target_of("emergency") == 600


def test_a_forecast_target_that_no_policy_holds_is_refused(tmp_path: Path) -> None:
    policies = [{"id": "live", "match": {"channels": ["livestream"]}, "first_response": 30},
                {"id": "chat", "first_response": 180}]
    ok = SlaConfig.model_validate({"policies": policies, "surge": {
        "forecast": {"groups": {"livestream": {"answer_target_s": 30}}}}})
    assert ok.surge.group_target_s("livestream") == 30
    assert ok.surge.group_target_s("payment") == 180  # the catch-all's
    with pytest.raises(ValueError, match=r"'payment' .*60 s.*have 30, 180 s"):
        SlaConfig.model_validate({"policies": policies, "surge": {
            "forecast": {"groups": {"payment": {"answer_target_s": 60}}}}})
    raw = (default_config_dir() / "sla.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "sla.yaml"
    bad.write_text(raw.replace("livestream: {aht_s: 60, answer_target_s: 30}",
                               "livestream: {aht_s: 60, answer_target_s: 45}"),
                   encoding="utf-8")
    with pytest.raises(ConfigError, match="livestream"):
        load_sla_config(bad)


# --- the live path -------------------------------------------------------------------
LIVE = SlaConfig.model_validate({
    "policies": [{"id": "live", "first_response": 30}],
    "surge": {"aht_s": 60, "answer_target_s": 30, "min_baseline_per_min": 1},
})


@pytest.fixture
async def producer(topics_ready: Settings) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=topics_ready.kafka_bootstrap, acks="all")
    await p.start()
    yield p
    await p.stop()


def arrivals() -> list[int]:
    """Arrival offsets (ms): 4/min for 2 minutes, a ramp to 60/min over 30 s, held."""
    out: list[int] = []
    t = 0.0
    while t < 240:
        out.append(int(t * 1000))
        if t < 120:
            rate = 4 / 60
        elif t < 150:
            rate = (4 + 56 * (t - 120) / 30) / 60
        else:
            rate = 1.0
        t += 1 / rate
    return out


@pytest.mark.integration
async def test_live_path_warns_before_the_first_breach(
    topics_ready: Settings, aredis: Redis, producer: AIOKafkaProducer
) -> None:
    settings = topics_ready
    keys = Keys(settings.redis_prefix)
    clock = FakeClock()
    desk = AgentDesk(aredis, keys)
    agents = [f"a{i}" for i in range(4)]  # 12 slots: 12/min at a 60 s handling time
    for a in agents:
        await desk.register(a, [G], 3, clock.ms())
    registry = CollectorRegistry()
    worker = SlaWorker(settings, registry, clock, config=LIVE, redis=aredis, tick_s=3600,
                       surge_grace_s=1)
    routed, events = settings.topic(topics.ROUTED), settings.topic(topics.AGENT_EVENTS)
    pending = [decision(n, group=G, channel=Channel.LIVESTREAM, received_ms=T0_MS + t)
               for n, t in enumerate(arrivals())]
    resolves: list[tuple[int, str, str]] = []  # (due ms, agent, conversation)
    sent = 0
    async with worker:
        while clock.ms() < T0_MS + 240_000:
            clock.advance(5)
            now = clock.ms()
            due = [d for d in pending if d.received_at_ms <= now]
            pending = pending[len(due):]
            await enqueue(aredis, keys, due)
            out: list[tuple[str, bytes, bytes]] = [
                (routed, d.conversation_id.encode(), d.to_json()) for d in due]
            for r in [r for r in resolves if r[0] <= now]:
                resolves.remove(r)
                await desk.act(r[1], r[2], "resolve", r[0])
                e = AgentEvent("resolve", r[2], r[1], r[0], group=G)
                out.append((events, r[2].encode(), e.to_json()))
            for a in agents:  # free slots claim the oldest, reply at once, resolve in 60 s
                await desk.heartbeat(a, now)
                while (c := await desk.claim(a, [G], now)).status == "ok":
                    assert c.conversation_id is not None
                    resolves.append((now + 60_000, a, c.conversation_id))
                    e = AgentEvent("reply", c.conversation_id, a, now, group=G)
                    out.append((events, c.conversation_id.encode(), e.to_json()))
            for topic, key, value in out:
                await producer.send(topic, value, key=key)
            await producer.flush()
            sent += len(out)
            await poll(lambda n=sent: _processed(worker, n), timeout_s=20)
            await worker.tick()
    warnings = await consume_json(settings.kafka_bootstrap, settings.topic(topics.SURGE),
                                  lambda r: any(s["type"] == "surge.warning" for s in r))
    alerts = await consume_json(settings.kafka_bootstrap, settings.topic(topics.SLA_ALERTS),
                                lambda r: any(a["type"] == "sla.breach" for a in r))
    first_warning = min(s["at_ms"] for s in warnings if s["type"] == "surge.warning")
    first_breach = min(a["fired_at_ms"] for a in alerts if a["type"] == "sla.breach")
    assert T0_MS + 120_000 <= first_warning < first_breach  # not before the ramp
    w = next(s for s in warnings if s["type"] == "surge.warning")
    assert w["scope"] == f"group:{G}"
    assert w["staffed_agents"] == 4
    assert w["staffed_slots"] == 12
    assert w["extra_agents"] > 0
    # every worker exports the stored forecast
    breach_in = registry.get_sample_value("omni_forecast_breach_in_seconds", {"skill_group": G})
    assert breach_in is not None
    assert breach_in < 300
    assert (registry.get_sample_value("omni_forecast_arrival_rate_per_minute",
                                      {"skill_group": G}) or 0) > 30


async def _processed(worker: SlaWorker, n: int) -> bool:
    return worker.processed >= n


@pytest.mark.integration
async def test_replayed_batch_is_counted_once(
    topics_ready: Settings, aredis: Redis, producer: AIOKafkaProducer
) -> None:
    settings = topics_ready
    keys = Keys(settings.redis_prefix)
    worker = SlaWorker(settings, CollectorRegistry(), FakeClock(), config=LIVE, redis=aredis,
                       tick_s=3600)
    batch: list[Decision] = [
        replace(decision(n, group=G, channel=Channel.LIVESTREAM, received_ms=T0_MS + 100 * n,
                         tags=["payment.failed"]), room="r9" if n < 4 else None)
        for n in range(6)]
    routed = settings.topic(topics.ROUTED)
    for d in batch:
        await producer.send(routed, d.to_json(), key=d.conversation_id.encode())
    resolve = AgentEvent("resolve", "c-0", "a1", T0_MS + 900, group=G)
    await producer.send(settings.topic(topics.AGENT_EVENTS), resolve.to_json(), key=b"c-0")
    push = SignalRecord(channel=Channel.LIVESTREAM, room="r9", kind="live_gift", events=2,
                        count=4, viewers=3, first_ms=None, last_ms=None,
                        received_at_ms=T0_MS + 500)
    await producer.send(settings.topic(topics.SIGNALS), push.to_json(), key=b"r9")
    await producer.flush()
    records = [*await consume(settings.kafka_bootstrap, routed, 6),
               *await consume(settings.kafka_bootstrap, settings.topic(topics.AGENT_EVENTS), 1),
               *await consume(settings.kafka_bootstrap, settings.topic(topics.SIGNALS), 1)]
    store = ForecastStore(aredis, keys, LIVE.surge)
    index = store.index(T0_MS)
    window = keys.surge_window(T0_MS // 60_000)
    async with worker:
        await worker.start(consume=False, loops=False)
        await worker.process(records)
        first = await store.bucket(index), await aredis.hgetall(window)
        await worker.process(records)  # the batch again: a crash before the commit
        await worker.process(records[2:5])  # and part of it once more
        again = await store.bucket(index), await aredis.hgetall(window)
        # the ids are remembered as long as the window they were counted in lives (a
        # replay after the seen set expired would count again in the window)
        seen_ttl = await aredis.pttl(keys.surge_seen(index))
        window_ttl = await aredis.pttl(window)
        bucket_ttl = await aredis.pttl(keys.surge_bucket(index))
    assert again == first
    assert seen_ttl >= window_ttl > 0
    assert seen_ttl >= bucket_ttl > 0
    counts, windows = first
    assert counts[f"a:group:{G}"] == 6
    assert counts["a:tag:payment"] == 6
    assert counts["a:tag:payment.failed"] == 6
    assert counts["a:room:r9"] == 4  # the questions asked in the live room
    assert counts[f"s:group:{G}"] == 1
    heat = 3 * 0.5 + 4 * 1.0  # viewers x heat_per_viewer + gifts x heat_per_gift
    assert counts["heat:room:r9"] == pytest.approx(heat)
    assert float(windows[f"group:{G}".encode()]) == 6
    assert float(windows[b"heat:room:r9"]) == pytest.approx(heat)


@pytest.mark.integration
async def test_one_worker_evaluates_a_bucket(aredis: Redis, settings: Settings,
                                             redis_url: str) -> None:
    keys = Keys(settings.redis_prefix)
    other = Redis.from_url(redis_url)
    try:
        a, b = ForecastStore(aredis, keys, LIVE.surge), ForecastStore(other, keys, LIVE.surge)

        async def loads() -> dict[str, GroupLoad]:
            return {G: GroupLoad(1, 3)}

        now = T0_MS + 12_000
        first = await a.evaluate(now, 1000, loads)
        assert first is not None
        assert first.buckets == [a.index(now - 1000) - 1]
        assert await b.evaluate(now, 1000, loads) is None  # a holds the lease
        assert await a.commit(first)
        assert await b.evaluate(now, 1000, loads) is None  # nothing new has closed
        later = await b.evaluate(now + 10_000, 1000, loads)
        assert later is not None
        assert later.buckets == [first.buckets[0] + 1,
                                                       first.buckets[0] + 2]
        assert later.state.buckets_seen == 3
        await b.release(later.token)
        assert (await a.state()).buckets_seen == 1  # released: nothing written
    finally:
        await other.aclose()


def test_each_live_room_gets_its_question_rate_and_heat() -> None:
    # two rooms feed the live-stream desk; the forecast names each with its questions
    # and heat per minute now (short buckets), busiest first, in the group's forecast
    # and in the evidence of its warning
    fc = SurgeForecaster(config())
    feed = Feed(fc)
    load = GroupLoad(agents=4, slots=12)

    def rooms(r1: float, r2: float, heat1: float) -> dict[str, float]:
        return {**bucket(r1 + r2), "a:room:r1": r1 * 5, "a:room:r2": r2 * 5,
                "heat:all": heat1 * 5, "heat:room:r1": heat1 * 5}

    for _ in range(30):
        feed.step(rooms(0.05, 0.05, 2.0), load)
    for _ in range(4):  # room r2 takes off
        feed.step(rooms(0.1, 1.0, 2.0), load)
    f = feed.last[G]
    assert f.rooms[0] == ("r2", 60.0, 0.0)
    assert f.rooms[1] == ("r1", 6.0, 120.0)
    warnings = [s for _, s in feed.signals if s["type"] == "surge.warning"]
    assert warnings
    evidence = warnings[0]["evidence"]
    assert evidence["rooms"][0]["room"] == "r2"  # type: ignore[index]
    # a group that takes no live-stream questions names no rooms
    other = fc.evaluate(T0_MS, 0, [{"a:group:mail": 5.0, "a:gc:mail|email": 5.0,
                                   "a:room:r1": 1.0}], {}, ForecastState())[2]
    assert other["mail"].rooms == ()
