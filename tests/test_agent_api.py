"""The agent API through aiohttp's TestClient, on the real Redis and broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from redis.asyncio import Redis

from omniroute.adapters.http import build_http_app
from omniroute.router import topics
from omniroute.router.http import HttpContext
from omniroute.router.keys import Keys
from omniroute.router.metrics import AdapterMetrics
from omniroute.router.models import Band, Decision
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.queues import RedisQueueStore
from omniroute.router.settings import AgentApiSettings, Settings
from omniroute.sla.agent_api import installer
from omniroute.sla.agents import AgentDesk
from tests.helpers import envelope
from tests.test_sla_support import T0_MS, FakeClock, consume_json, decision, enqueue

pytestmark = pytest.mark.integration


@pytest.fixture
def redis_url(any_redis_url: str) -> str:
    """Every test of this module runs on a standalone Redis and on a Redis Cluster."""
    return any_redis_url


TOKEN = "agent-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
Client = TestClient[web.Request, web.Application]


@pytest.fixture
async def client(
    topics_ready: Settings, aredis: Redis
) -> AsyncIterator[tuple[Client, FakeClock]]:
    clock = FakeClock()
    producer = EnvelopeProducer(topics_ready)
    ctx = HttpContext(topics_ready, producer, AdapterMetrics(CollectorRegistry()),
                         redis=aredis, clock=clock)
    api = installer(AgentApiSettings.model_validate({"OMNI_AGENT_TOKENS": [SecretStr(TOKEN)]}))
    app = build_http_app(ctx, installers=[api])
    async with producer, TestClient(TestServer(app)) as tc:
        yield tc, clock


async def register(tc: Client, agent: str, groups: list[str],
                   slots: int) -> None:
    resp = await tc.put(f"/v1/agents/{agent}", json={"groups": groups, "slots": slots},
                        headers=AUTH)
    assert resp.status == 200, await resp.text()


async def test_auth_and_input_errors(client: tuple[Client, FakeClock]) -> None:
    tc, _ = client
    assert (await tc.get("/v1/queues")).status == 401
    bad = await tc.get("/v1/queues", headers={"Authorization": "Bearer nope"})
    assert bad.status == 401
    assert (await bad.json())["error"] == "bad_token"
    resp = await tc.put("/v1/agents/a1", json={"groups": [], "slots": 2}, headers=AUTH)
    assert resp.status == 400
    assert "groups" in (await resp.json())["message"]
    resp = await tc.put("/v1/agents/a1", json={"groups": ["general"], "slots": 0}, headers=AUTH)
    assert resp.status == 400
    resp = await tc.put("/v1/agents/a1", data=b"{not json", headers=AUTH)
    assert resp.status == 400
    resp = await tc.post("/v1/agents/ghost/claim", headers=AUTH)
    assert resp.status == 404
    await register(tc, "a1", ["general"], 2)
    resp = await tc.post("/v1/agents/a1/claim", json={"group": "vip"}, headers=AUTH)
    assert resp.status == 400
    resp = await tc.post("/v1/agents/a1/conversations/c-x/accept", headers=AUTH)
    assert resp.status == 404
    resp = await tc.post("/v1/agents/a1/conversations/c-x/frobnicate", headers=AUTH)
    assert resp.status == 404


async def test_claim_respects_slots_and_priority(
    client: tuple[Client, FakeClock], aredis: Redis, settings: Settings
) -> None:
    tc, clock = client
    keys = Keys(settings.redis_prefix)
    t = clock.ms()
    await enqueue(aredis, keys, [
        decision(1, received_ms=t - 60_000),
        decision(2, received_ms=t - 50_000),
        decision(3, band=Band.P0, received_ms=t - 1_000),
        decision(4, group="vip", band=Band.P1, received_ms=t - 500),
    ])
    await register(tc, "a1", ["general", "vip"], 2)
    first = await (await tc.post("/v1/agents/a1/claim", headers=AUTH)).json()
    assert first["claimed"]["message_id"] == "m-3"  # P0 beats older P2 and the P1 in vip
    assert first["claimed"]["decision"]["conversation_id"] == "c-3"
    second = await (await tc.post("/v1/agents/a1/claim", headers=AUTH)).json()
    assert second["claimed"]["message_id"] == "m-4"
    full = await tc.post("/v1/agents/a1/claim", headers=AUTH)
    assert full.status == 409
    assert (await full.json())["error"] == "at_capacity"
    resolved = await tc.post("/v1/agents/a1/conversations/c-3/resolve", headers=AUTH)
    assert resolved.status == 200
    again = await tc.post("/v1/agents/a1/conversations/c-3/resolve", headers=AUTH)
    assert (await again.json())["status"] == "repeated"
    third = await (await tc.post("/v1/agents/a1/claim", headers=AUTH)).json()
    assert third["claimed"]["message_id"] == "m-1"  # then the oldest P2
    # heartbeat expiry: a silent agent gets nothing
    clock.advance(600)
    assert (await tc.post("/v1/agents/a1/claim", headers=AUTH)).status == 404
    assert (await tc.post("/v1/agents/a1/heartbeat", headers=AUTH)).status == 200


async def test_concurrent_claims_never_assign_twice(
    client: tuple[Client, FakeClock], aredis: Redis, settings: Settings
) -> None:
    tc, clock = client
    keys = Keys(settings.redis_prefix)
    await enqueue(aredis, keys, [decision(i, received_ms=clock.ms() - i) for i in range(30)])
    agents = [f"a{i}" for i in range(5)]
    for a in agents:
        await register(tc, a, ["general"], 4)

    async def claim(agent: str) -> tuple[str, str | None]:
        resp = await tc.post(f"/v1/agents/{agent}/claim", headers=AUTH)
        if resp.status == 409:
            return agent, None
        assert resp.status == 200, await resp.text()
        body = await resp.json()
        return agent, body["claimed"]["message_id"] if body["claimed"] else None

    results = await asyncio.gather(*(claim(a) for a in agents for _ in range(8)))
    claimed = [m for _, m in results if m is not None]
    assert len(claimed) == 20  # 5 agents x 4 slots
    assert len(set(claimed)) == len(claimed)  # never the same message twice
    per_agent = {a: sum(1 for x, m in results if x == a and m) for a in agents}
    assert all(n == 4 for n in per_agent.values())
    assert await aredis.zcard(keys.queue("general")) == 10
    for a in agents:
        assert await aredis.scard(keys.agent_active(a)) == 4


async def test_actions_ownership_transfer_and_events(
    client: tuple[Client, FakeClock], aredis: Redis, settings: Settings
) -> None:
    tc, clock = client
    keys = Keys(settings.redis_prefix)
    await enqueue(aredis, keys, [decision(1, received_ms=clock.ms())])
    await register(tc, "a1", ["general"], 3)
    await register(tc, "a2", ["general", "senior"], 3)
    assert (await (await tc.post("/v1/agents/a1/claim", headers=AUTH)).json())["claimed"]
    other = await tc.post("/v1/agents/a2/conversations/c-1/reply", headers=AUTH)
    assert other.status == 409
    for action in ("accept", "reply", "wait"):
        clock.advance(5)
        resp = await tc.post(f"/v1/agents/a1/conversations/c-1/{action}", headers=AUTH)
        assert resp.status == 200, await resp.text()
    bad = await tc.post("/v1/agents/a1/conversations/c-1/transfer", json={}, headers=AUTH)
    assert bad.status == 400
    moved = await tc.post("/v1/agents/a1/conversations/c-1/transfer",
                          json={"group": "senior", "reason": "needs refund approval"},
                          headers=AUTH)
    assert moved.status == 200
    assert await aredis.scard(keys.agent_active("a1")) == 0
    view = await (await tc.get("/v1/queues/senior", headers=AUTH)).json()
    assert view["depth"] == 1
    assert view["top"][0]["message_id"] == "m-1"
    assert view["top"][0]["band"] == "P2"
    assert (await tc.get("/v1/queues/nosuchgroup", headers=AUTH)).status == 404
    assert (await tc.get("/v1/queues/senior?top=x", headers=AUTH)).status == 400
    stale = await tc.post("/v1/agents/a1/conversations/c-1/reply", headers=AUTH)
    assert stale.status == 409
    got = await (await tc.post("/v1/agents/a2/claim", json={"group": "senior"},
                               headers=AUTH)).json()
    assert got["claimed"]["conversation_id"] == "c-1"
    listing = await (await tc.get("/v1/queues", headers=AUTH)).json()
    by_group = {q["group"]: q for q in listing["queues"]}
    assert by_group["general"]["agents"] == 2
    assert by_group["general"]["slots"] == 6
    events = await consume_json(
        settings.kafka_bootstrap, settings.topic(topics.AGENT_EVENTS), lambda r: len(r) >= 6
    )
    # one key (the conversation) -> one partition -> the order of the actions
    kinds = [(e["type"], e["agent_id"]) for e in events]
    assert kinds == [("claim", "a1"), ("accept", "a1"), ("reply", "a1"),
                     ("wait_customer", "a1"), ("transfer", "a1"), ("claim", "a2")]
    stamps = [int(str(e["at_ms"])) for e in events]
    assert stamps == sorted(stamps)
    transfer = next(e for e in events if e["type"] == "transfer")
    assert transfer["group"] == "general"
    assert transfer["to_group"] == "senior"
    assert transfer["reason"] == "needs refund approval"


async def test_follow_up_message_stays_with_owner(
    client: tuple[Client, FakeClock], aredis: Redis, settings: Settings
) -> None:
    tc, clock = client
    keys = Keys(settings.redis_prefix)
    t = clock.ms()
    await enqueue(aredis, keys, [decision(1, conv="c-9", received_ms=t - 10)])
    await register(tc, "a1", ["general"], 1)
    await register(tc, "a2", ["general"], 1)
    assert (await (await tc.post("/v1/agents/a1/claim", headers=AUTH)).json())["claimed"]
    await enqueue(aredis, keys, [decision(2, conv="c-9", received_ms=t),
                                 decision(3, received_ms=t + 1)])
    got = await (await tc.post("/v1/agents/a2/claim", headers=AUTH)).json()
    # m-2 belongs to a1's conversation: it is attached to a1, a2 gets the next one
    assert got["claimed"]["message_id"] == "m-3"
    assert await aredis.hget(keys.assignment("c-9"), "agent") == b"a1"
    assert await aredis.hget(keys.assignment("c-9"), "message_id") == b"m-2"


async def test_claimed_conversation_sticks_to_the_agent_for_the_router(
    client: tuple[Client, FakeClock], aredis: Redis, settings: Settings
) -> None:
    """The claim writes the conversation hash (its second step); the router reads it
    through Keys. A follow-up must find the group the router stored and the claiming agent."""
    tc, clock = client
    keys = Keys(settings.redis_prefix)
    t = clock.ms()
    await enqueue(aredis, keys, [decision(1, conv="conv-cust-5", received_ms=t)])
    assert await aredis.pttl(keys.conversation("conv-cust-5")) > 0  # the router's sticky TTL
    await register(tc, "a1", ["general"], 1)
    got = await (await tc.post("/v1/agents/a1/claim", headers=AUTH)).json()
    assert got["claimed"]["conversation_id"] == "conv-cust-5"
    store = RedisQueueStore(aredis, keys, decision_ttl_s=3600, repeat_window_s=60,
                            sticky_window_s=3600)
    follow_up = envelope(5, "还在吗", received_at_ms=t + 1_000)
    assert follow_up.conversation_id == "conv-cust-5"
    (facts,) = await store.facts([follow_up], t + 1_000)
    assert (facts.sticky_group, facts.sticky_agent) == ("general", "a1")


class _RacingDesk(AgentDesk):
    """After its first peek, the router queues a more urgent message (in the real Redis)
    before the claim's script runs: the script must not pop a head it was not told about."""

    def __init__(self, redis: Redis, keys: Keys, arrival: list[Decision]) -> None:
        super().__init__(redis, keys)
        self.arrival = arrival
        self.peeks = 0

    async def _peek(self, groups: Sequence[str]) -> dict[str, tuple[str, bytes]]:
        seen = await super()._peek(groups)
        self.peeks += 1
        if self.peeks == 1:
            await enqueue(self.redis, self.keys, self.arrival)
        return seen


async def test_a_head_that_arrives_between_the_peek_and_the_script_is_claimed_with_its_conversation(
    aredis: Redis, settings: Settings
) -> None:
    keys = Keys(settings.redis_prefix)
    await enqueue(aredis, keys, [decision(1, conv="c-old", received_ms=T0_MS)])
    desk = _RacingDesk(aredis, keys, [decision(2, conv="c-urgent", band=Band.P0,
                                               received_ms=T0_MS + 5)])
    await desk.register("a1", ["general"], 2, T0_MS)
    got = await desk.claim("a1", ["general"], T0_MS + 10)
    assert desk.peeks == 2  # the script said stale once, the claim looked again
    assert (got.status, got.message_id, got.conversation_id) == ("ok", "m-2", "c-urgent")
    assert got.decision is not None
    assert b'"conversation_id":"c-urgent"' in got.decision
    assert await aredis.hget(keys.assignment("c-urgent"), "agent") == b"a1"
    assert await aredis.smembers(keys.agent_active("a1")) == {b"c-urgent"}
    assert await aredis.zrange(keys.queue("general"), 0, -1) == [b"m-1"]
