"""End to end: decisions on the real broker -> SlaWorker on a fake clock -> alerts."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator
from fractions import Fraction

import aiohttp
import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from omniroute.adapters.http import build_http_app
from omniroute.router import topics
from omniroute.router.events import AgentEvent
from omniroute.router.http import HttpContext
from omniroute.router.keys import Keys
from omniroute.router.metrics import AdapterMetrics
from omniroute.router.models import Band, Channel, Decision
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import (
    AgentApiSettings,
    Settings,
    SlaServiceSettings,
    default_config_dir,
)
from omniroute.sla.agent_api import installer
from omniroute.sla.agents import AgentDesk
from omniroute.sla.config import SlaConfig, load_sla_config
from omniroute.sla.escalation import BAND_SPAN
from omniroute.sla.service import sla_service
from omniroute.sla.worker import SlaWorker
from tests.test_sla_support import T0_MS, FakeClock, consume_json, decision, enqueue, poll

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_url(any_redis_url: str) -> str:
    """Every test of this module runs on a standalone Redis and on a Redis Cluster."""
    return any_redis_url


@pytest.fixture
async def producer(topics_ready: Settings) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(bootstrap_servers=topics_ready.kafka_bootstrap, acks="all")
    await p.start()
    yield p
    await p.stop()


async def send_decisions(producer: AIOKafkaProducer, settings: Settings,
                         decisions: list[Decision]) -> None:
    topic = settings.topic(topics.ROUTED)
    for d in decisions:
        await producer.send(topic, d.to_json(), key=d.conversation_id.encode())
    await producer.flush()


def _textbook_slots(rate_per_min: float, aht_s: float, target_s: float, level: float) -> int:
    """Fewest servers for ``level`` answered within ``target_s``: Erlang C in closed form.

    C(N, A) = (A^N / N! x N / (N - A)) / (sum_{k<N} A^k / k! + A^N / N! x N / (N - A)),
    service level = 1 - C exp(-(N - A) T / AHT); computed exactly with fractions,
    independently of the product's recurrence.
    """
    load = Fraction(rate_per_min) / 60 * Fraction(aht_s)
    n = math.floor(load) + 1
    while True:
        top = load**n / math.factorial(n) * n / (n - load)
        wait = top / (sum(load**k / math.factorial(k) for k in range(n)) + top)
        if 1 - float(wait) * math.exp(-float(n - load) * target_s / aht_s) >= level:
            return n
        n += 1


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_no_answer_gives_warning_then_breach_then_escalation(
    topics_ready: Settings, aredis: Redis, producer: AIOKafkaProducer
) -> None:
    settings = topics_ready
    keys = Keys(settings.redis_prefix)
    clock = FakeClock()
    registry = CollectorRegistry()
    config = load_sla_config(default_config_dir() / "sla.yaml")
    live = decision(1, channel=Channel.LIVESTREAM, group="livestream", band=Band.P2)
    answered = decision(2, channel=Channel.LIVESTREAM, group="livestream", band=Band.P2)
    await enqueue(aredis, keys, [live, answered])  # what the router leaves in Redis
    worker = SlaWorker(settings, registry, clock, config=config, redis=aredis, tick_s=3600)
    async with worker:
        await worker.start()  # idempotent
        await send_decisions(producer, settings, [live, answered])
        await poll(lambda: _has_states(worker, "c-1", "c-2"), timeout_s=20)
        # an agent answers c-2 after 10 s (through omni.agent-events)
        reply = AgentEvent("reply", "c-2", "agent-7", T0_MS + 10_000, group="livestream")
        await producer.send_and_wait(settings.topic(topics.AGENT_EVENTS), reply.to_json(),
                                     key=b"c-2")
        await poll(lambda: _first_response_stopped(worker, "c-2"), timeout_s=20)

        clock.advance(23)
        assert await worker.fire_due() == []
        clock.advance(1)  # 24 s = 80 % of the 30 s live-stream target
        warned = await worker.fire_due()
        assert [(a["type"], a["conversation_id"]) for a in warned] == [("sla.warning", "c-1")]
        await worker.refresh_gauges()
        assert sample(registry, "omni_sla_at_risk_conversations", skill_group="livestream") == 1
        clock.advance(6.5)
        fired = await worker.fire_due()
        assert [(a["type"], a["conversation_id"]) for a in fired] == [
            ("sla.breach", "c-1"), ("sla.escalation", "c-1"),
        ]
        assert await worker.fire_due() == []  # nothing fires twice
        await worker.refresh_gauges()

    alerts = await consume_json(settings.kafka_bootstrap, settings.topic(topics.SLA_ALERTS),
                                lambda r: len(r) >= 3)
    assert [a["type"] for a in alerts] == ["sla.warning", "sla.breach", "sla.escalation"]
    warning, breach, escalation = alerts
    assert warning["policy"] == "livestream-question"
    assert warning["group"] == "livestream"
    assert warning["timer"] == "first_response"
    assert warning["overdue_s"] == -6.0
    assert breach["overdue_s"] == 0.5
    assert breach["due_at_ms"] == T0_MS + 30_000
    assert escalation["level"] == 1
    assert escalation["from_group"] == "livestream"
    assert escalation["group"] == "supervisor"
    assert escalation["notify"] == ["duty-manager"]
    assert escalation["actions"]["queued_messages_touched"] == 1
    # the ladder moved the waiting message to the supervisors' queue, at band P0
    assert await aredis.zscore(keys.queue("livestream"), "m-1") is None
    assert await aredis.zscore(keys.queue("supervisor"), "m-1") == 0 * BAND_SPAN + T0_MS
    state = await worker.store.load("c-1") if worker.store else None
    assert state is not None
    assert state.group == "supervisor"
    assert sample(registry, "omni_sla_warnings_total", skill_group="livestream",
                  policy="livestream-question", timer="first_response") == 1
    assert sample(registry, "omni_sla_breaches_total", skill_group="livestream",
                  policy="livestream-question", timer="first_response") == 1
    assert sample(registry, "omni_sla_breached_open_conversations",
                  skill_group="supervisor") == 1


async def _has_states(worker: SlaWorker, *convs: str) -> bool:
    assert worker.store is not None
    return all([await worker.store.load(c) is not None for c in convs])


async def _first_response_stopped(worker: SlaWorker, conv: str) -> bool:
    assert worker.store is not None
    state = await worker.store.load(conv)
    return state is not None and "first_response" not in state.timers


SURGE_CONFIG = SlaConfig.model_validate({
    "policies": [{"id": "any", "first_response": 30}],  # surge staffs against it
    "surge": {"window_s": 60, "start_windows": 2, "clear_windows": 1, "ewma_alpha": 0.5,
              "min_rate_per_min": 10, "aht_s": 120, "answer_target_s": 30},
})


async def test_arrival_surge_raises_surge_start_with_extra_agents(
    topics_ready: Settings, aredis: Redis, producer: AIOKafkaProducer
) -> None:
    settings = topics_ready
    keys = Keys(settings.redis_prefix)
    clock = FakeClock()
    desk = AgentDesk(aredis, keys)
    await desk.register("a1", ["general"], 3, clock.ms())
    await desk.register("a2", ["general"], 3, clock.ms())
    registry = CollectorRegistry()
    worker = SlaWorker(settings, registry, clock, config=SURGE_CONFIG, redis=aredis,
                       tick_s=3600, surge_grace_s=1)
    per_window = [10, 10, 40, 40]
    gauges: list[tuple[float, float]] = []  # (rate, extra agents) of group:general per tick
    n = 0
    batch: list[Decision] = []
    for w, count in enumerate(per_window):
        for _ in range(count):
            batch.append(decision(n, received_ms=T0_MS + w * 60_000 + n))
            n += 1
    signals: list[dict[str, object]] = []
    async with worker:
        await producer.send_and_wait(settings.topic(topics.ROUTED), b"not json", key=b"x")
        await send_decisions(producer, settings, batch)
        await poll(lambda: _processed(worker, n + 1), timeout_s=20)
        for _ in range(len(per_window) + 1):  # a window closes once the clock has left it
            clock.advance(60)
            await desk.heartbeat("a1", clock.ms())
            await desk.heartbeat("a2", clock.ms())
            signals += await worker.surge_tick()
            gauges.append((sample(registry, "omni_surge_rate_per_minute", scope="group:general"),
                           sample(registry, "omni_surge_extra_agents_needed",
                                  scope="group:general")))
    # every closed window sets the rate of every scope, signal or not; the ask is 0 until
    # the surge starts (two hot windows), then the Erlang C shortfall below
    assert registry.get_sample_value("omni_surge_rate_per_minute", {"scope": "all"}) is not None
    assert [g[0] for g in gauges] == [0.0, 10.0, 10.0, 40.0, 40.0]  # the first tick: none closed
    assert [g[1] for g in gauges] == [0.0, 0.0, 0.0, 0.0, 32.0]
    starts = [s for s in signals if s["type"] == "surge.start"]
    assert {s["scope"] for s in starts} >= {"all", "channel:wechat", "group:general"}
    group = next(s for s in starts if s["scope"] == "group:general")
    assert group["rate_per_min"] == 40
    assert group["staffed_agents"] == 2
    assert group["staffed_slots"] == 6
    # 40/min x 120 s = 80 erlangs; the textbook Erlang C gives 85 slots for 80 % in 30 s,
    # x 1.2 reserve = 102 slots; (102 - 6) / 3 slots per agent = 32 more agents
    needed = _textbook_slots(rate_per_min=40, aht_s=120, target_s=30, level=0.8)
    assert needed == 85
    assert group["offered_load_erlangs"] == 80
    assert group["needed_slots"] == needed
    assert group["required_slots"] == math.ceil(needed * 1.2) == 102
    assert group["extra_agents"] == math.ceil((102 - 6) / 3) == 32
    on_topic = await consume_json(settings.kafka_bootstrap, settings.topic(topics.SURGE),
                                  lambda r: len(r) >= len(signals))
    assert {(s["type"], s["scope"]) for s in on_topic} == {
        (str(s["type"]), str(s["scope"])) for s in signals
    }
    produced = next(s for s in on_topic
                    if s["type"] == "surge.start" and s["scope"] == "group:general")
    assert produced == orjson.loads(orjson.dumps(group))  # the record carries the same figures
    dead = await consume_json(settings.kafka_bootstrap, settings.topic(topics.DEAD_LETTER),
                              lambda r: len(r) >= 1)
    assert dead[0]["stage"] == "sla"
    assert "not JSON" in str(dead[0]["reason"])


async def test_lifecycle_is_idempotent_and_run_returns_on_stop(
    topics_ready: Settings, aredis: Redis
) -> None:
    worker = SlaWorker(topics_ready, CollectorRegistry(), FakeClock(), config=SURGE_CONFIG,
                       redis=aredis, tick_s=0.05)
    await worker.stop()  # never started: a no-op
    await worker.start(consume=False)
    await worker.start(consume=False)
    runner = asyncio.create_task(worker.run())
    worker.request_stop()
    await asyncio.wait_for(runner, 5)
    await worker.stop()
    await worker.stop()
    assert await aredis.ping()  # an injected client is not closed by the worker


async def _processed(worker: SlaWorker, n: int) -> bool:
    return worker.processed >= n


async def test_agent_reply_through_the_api_stops_the_timer(
    topics_ready: Settings, aredis: Redis, producer: AIOKafkaProducer
) -> None:
    settings = topics_ready
    keys = Keys(settings.redis_prefix)
    clock = FakeClock()
    config = load_sla_config(default_config_dir() / "sla.yaml")
    chat = decision(1, channel=Channel.WECHAT, group="general")
    await enqueue(aredis, keys, [chat])
    sink = EnvelopeProducer(settings)
    ctx = HttpContext(settings, sink, AdapterMetrics(CollectorRegistry()), redis=aredis,
                         clock=clock)
    api = installer(AgentApiSettings.model_validate({"OMNI_AGENT_TOKENS": ["t0k"]}))
    auth = {"Authorization": "Bearer t0k"}
    worker = SlaWorker(settings, CollectorRegistry(), clock, config=config, redis=aredis,
                       tick_s=3600)
    async with worker, sink, TestClient(TestServer(build_http_app(ctx, [api]))) as tc:
        await send_decisions(producer, settings, [chat])
        await poll(lambda: _has_states(worker, "c-1"), timeout_s=20)
        assert (await tc.put("/v1/agents/a1", json={"groups": ["general"], "slots": 2},
                             headers=auth)).status == 200
        claimed = await (await tc.post("/v1/agents/a1/claim", headers=auth)).json()
        assert claimed["claimed"]["conversation_id"] == "c-1"
        clock.advance(50)
        assert (await tc.post("/v1/agents/a1/conversations/c-1/reply",
                              headers=auth)).status == 200
        await poll(lambda: _first_response_stopped(worker, "c-1"), timeout_s=20)
        clock.advance(600)
        assert await worker.fire_due() == []  # answered in time: no warning, no breach
        state = await worker.store.load("c-1") if worker.store else None
        assert state is not None
        assert state.agent_id == "a1"
        assert state.last_reply_ms == T0_MS + 50_000


async def test_sla_service_serves_metrics_and_stops(topics_ready: Settings) -> None:
    settings = topics_ready.model_copy(update={"sla": SlaServiceSettings.model_validate(
        {"OMNI_SLA_WEB_PORT": 0, "OMNI_SLA_TICK_S": 0.1})})
    async with sla_service(settings, clock=FakeClock()) as (worker, port):
        async with aiohttp.ClientSession() as http:
            base = f"http://127.0.0.1:{port}"
            async with http.get(f"{base}/readyz") as resp:
                assert resp.status == 200
            async with http.get(f"{base}/metrics") as resp:
                assert "omni_sla_fire_lag_seconds" in await resp.text()
        runner = asyncio.create_task(worker.run())
        worker.request_stop()
        await asyncio.wait_for(runner, 5)
