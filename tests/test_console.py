"""The operations console (/console) through aiohttp's TestClient, on the real Redis and
broker: who is let in, the figures of each panel against the agent API and the records
on the topics, and the server-sent events."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaProducer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from redis.asyncio import Redis

from omniroute.adapters.http import build_http_app
from omniroute.router import topics
from omniroute.router.events import ChatterRecord, SignalRecord, SurgeSignal
from omniroute.router.http import HttpContext
from omniroute.router.keys import Keys
from omniroute.router.metrics import AdapterMetrics
from omniroute.router.models import Band, Channel, Customer, Envelope, message_id
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import AgentApiSettings, ConsoleSettings, Settings
from omniroute.sla import SlaEngine, TimerStore, load_sla_config
from omniroute.sla.agent_api import installer as agent_api
from omniroute.sla.console import COOKIE, console_digest
from omniroute.sla.console import installer as console_installer
from omniroute.sla.forecast import GroupLoad
from omniroute.sla.forecast_store import ForecastStore
from tests.test_sla_support import FakeClock, decision, enqueue

pytestmark = [pytest.mark.integration, pytest.mark.timeout(90)]

AGENT = "agent-token"
VIEWER = "wall-screen-token"
Client = TestClient[web.Request, web.Application]


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
async def console(
    topics_ready: Settings, aredis: Redis
) -> AsyncIterator[tuple[Client, FakeClock]]:
    clock = FakeClock()
    producer = EnvelopeProducer(topics_ready)
    ctx = HttpContext(topics_ready, producer, AdapterMetrics(CollectorRegistry()),
                      redis=aredis, clock=clock)
    settings = ConsoleSettings.model_validate({
        "OMNI_CONSOLE_TOKENS": [SecretStr(VIEWER)], "OMNI_CONSOLE_PUSH_S": 0.2,
        "OMNI_CONSOLE_DECISIONS": 3,
    })
    app = build_http_app(ctx, installers=[
        agent_api(AgentApiSettings.model_validate({"OMNI_AGENT_TOKENS": [SecretStr(AGENT)]})),
        console_installer(settings, agent_tokens=(AGENT,)),
    ])
    async with producer, TestClient(TestServer(app)) as tc:
        yield tc, clock


async def _snapshot(tc: Client) -> dict[str, Any]:
    resp = await tc.get("/console/api/snapshot", headers=_bearer(VIEWER))
    assert resp.status == 200, await resp.text()
    data: dict[str, Any] = await resp.json()
    return data


async def _until(tc: Client, check: Any, timeout_s: float = 20.0) -> dict[str, Any]:
    """Poll the snapshot until ``check(snapshot)`` holds (the feed tails Kafka)."""
    deadline = time.monotonic() + timeout_s
    while True:
        snap = await _snapshot(tc)
        if check(snap):
            return snap
        assert time.monotonic() < deadline, f"snapshot never satisfied the check: {snap}"
        await asyncio.sleep(0.1)


async def test_who_is_let_in(console: tuple[Client, FakeClock]) -> None:
    tc, _ = console
    assert (await tc.get("/console/api/snapshot")).status == 401
    assert (await tc.get("/console/events")).status == 401
    assert (await tc.get("/console/api/snapshot", headers=_bearer("nope"))).status == 401
    for token in (VIEWER, AGENT):
        assert (await tc.get("/console/api/snapshot", headers=_bearer(token))).status == 200
    # a viewer token opens the console, never the agent API
    assert (await tc.get("/v1/queues", headers=_bearer(VIEWER))).status == 401
    # without a session the page is the sign-in form, not the console
    login = await tc.get("/console")
    assert login.status == 401
    assert 'action="/console/login"' in await login.text()
    # ?token= signs in and sends the browser to a URL without the token
    resp = await tc.get(f"/console?token={VIEWER}", allow_redirects=False)
    assert resp.status == 303
    assert resp.headers["Location"] == "/console"
    cookie = resp.cookies[COOKIE]
    assert cookie.value == console_digest(VIEWER)
    assert VIEWER not in cookie.value
    assert cookie["httponly"]
    assert cookie["path"] == "/console"
    assert cookie["samesite"] == "Strict"
    page = await tc.get("/console", headers={"Cookie": f"{COOKIE}={cookie.value}"})
    assert page.status == 200
    html = await page.text()
    assert "运营看板" in html
    assert "Operations console" in html
    nonce = page.headers["Content-Security-Policy"].split("'nonce-", 1)[1].split("'", 1)[0]
    assert f'<script nonce="{nonce}">' in html
    assert "{{nonce}}" not in html
    # the cookie is no bearer token for the agent API
    assert (await tc.get("/v1/queues", headers=_bearer(cookie.value))).status == 401
    # the sign-in form
    bad = await tc.post("/console/login", data={"token": "nope"}, allow_redirects=False)
    assert bad.status == 401
    good = await tc.post("/console/login", data={"token": AGENT}, allow_redirects=False)
    assert good.status == 303
    assert good.cookies[COOKIE].value == console_digest(AGENT)
    assert (await tc.get("/console?token=nope", allow_redirects=False)).status == 401


async def test_no_tokens_configured_means_nobody_gets_in(
    topics_ready: Settings, aredis: Redis
) -> None:
    ctx = HttpContext(topics_ready, EnvelopeProducer(topics_ready),
                      AdapterMetrics(CollectorRegistry()), redis=aredis)
    app = build_http_app(ctx, installers=[console_installer(ConsoleSettings())])
    async with TestClient(TestServer(app)) as tc:
        resp = await tc.get("/console/api/snapshot", headers=_bearer(""))
        assert resp.status == 401
        assert (await resp.json())["error"] == "auth_not_configured"
        assert (await tc.get("/console?token=", allow_redirects=False)).status == 401


async def test_group_figures_match_the_agent_api_and_the_sla_states(
    console: tuple[Client, FakeClock], aredis: Redis, settings: Settings
) -> None:
    tc, clock = console
    keys = Keys(settings.redis_prefix)
    t = clock.ms()
    await enqueue(aredis, keys, [
        decision(1, received_ms=t - 90_000),
        decision(2, received_ms=t - 5_000, band=Band.P1),
        decision(3, group="livestream", channel=Channel.LIVESTREAM, received_ms=t - 2_000),
    ])
    for agent, groups, slots in (("a1", ["general"], 3), ("a2", ["general", "livestream"], 2)):
        resp = await tc.put(f"/v1/agents/{agent}", json={"groups": groups, "slots": slots},
                            headers=_bearer(AGENT))
        assert resp.status == 200
    claimed = await tc.post("/v1/agents/a2/claim", json={"group": "livestream"},
                            headers=_bearer(AGENT))
    assert (await claimed.json())["claimed"]["message_id"] == "m-3"
    # SLA states of three live-stream questions (30 s target, warning at 24 s)
    store = TimerStore(aredis, keys, SlaEngine(load_sla_config(settings.config_dir / "sla.yaml")))
    for n, age_s in ((10, 10), (11, 26), (12, 40)):
        await store.on_decision(decision(n, group="livestream", channel=Channel.LIVESTREAM,
                                         received_ms=t - age_s * 1000))

    snap = await _snapshot(tc)
    api = {q["group"]: q for q in
           (await (await tc.get("/v1/queues", headers=_bearer(AGENT))).json())["queues"]}
    rows = {g["group"]: g for g in snap["groups"]}
    assert set(api) <= set(rows)
    for group, q in api.items():
        row = rows[group]
        assert (row["depth"], row["agents"], row["slots"]) == (q["depth"], q["agents"], q["slots"])
        assert row["oldest_age_s"] == pytest.approx(q["oldest_age_s"], abs=0.1)
    general, live = rows["general"], rows["livestream"]
    assert (general["depth"], general["oldest_age_s"]) == (2, 90.0)
    assert (general["agents"], general["slots"], general["free_slots"]) == (2, 5, 4)
    assert (live["depth"], live["agents"], live["slots"], live["free_slots"]) == (0, 1, 2, 1)
    assert (live["open"], live["at_risk"], live["breached"]) == (3, 1, 1)
    assert general["name"].startswith("综合客服")  # the configured display name
    assert general["forecast"] is None  # no forecast warning: nothing is invented


async def test_forecast_wait_is_the_sla_workers_latest_forecast(
    console: tuple[Client, FakeClock], aredis: Redis, settings: Settings
) -> None:
    tc, clock = console
    keys = Keys(settings.redis_prefix)
    store = ForecastStore(aredis, keys, load_sla_config(settings.config_dir / "sla.yaml").surge)

    async def loads() -> dict[str, GroupLoad]:
        # a queue that nobody serves never drains; a staffed idle group waits nothing
        return {"payment": GroupLoad(agents=0, slots=0, depth=4, oldest_wait_s=50.0),
                "general": GroupLoad(agents=2, slots=6)}

    pending = await store.evaluate(clock.ms(), 0, loads)
    assert pending is not None
    assert await store.commit(pending)
    rows = {g["group"]: g for g in (await _snapshot(tc))["groups"]}
    payment, general = rows["payment"]["forecast"], rows["general"]["forecast"]
    assert (payment["unbounded"], payment["predicted_wait_s"]) == (True, None)
    assert payment["source"] == "forecast"
    assert (general["unbounded"], general["predicted_wait_s"]) == (False, 0.0)
    # a forecast nobody refreshed for minutes (SLA workers down) is no forecast
    clock.advance(120)
    await _until(tc, lambda snap: all(g["forecast"] is None for g in snap["groups"]))


async def test_feed_panels_show_the_records_on_the_topics(
    console: tuple[Client, FakeClock], settings: Settings
) -> None:
    tc, clock = console
    now = clock.ms()
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        for n in range(5):  # five decisions; the console keeps the newest three
            d = decision(n, received_ms=now - 1000 + n, band=Band.P1 if n == 4 else Band.P2)
            await producer.send_and_wait(settings.topic(topics.ROUTED), d.to_json(),
                                         key=d.conversation_id.encode())
        room = "room-8848"
        for n in range(3):  # three questions and one chatter comment in the room
            env = Envelope(
                id=message_id(Channel.LIVESTREAM, room, f"q{n}"), channel=Channel.LIVESTREAM,
                account=room, channel_msg_id=f"q{n}",
                conversation_id=f"livestream:{room}:v{n}", customer=Customer(f"v{n}"),
                text="这个什么时候发货", received_at_ms=now - 5_000,
            )
            await producer.send_and_wait(settings.topic(topics.INBOUND), orjson.dumps(env))
        chatter = ChatterRecord(Envelope(
            id=message_id(Channel.LIVESTREAM, room, "c1"), channel=Channel.LIVESTREAM,
            account=room, channel_msg_id="c1", conversation_id=f"livestream:{room}:v9",
            customer=Customer("v9"), text="666", received_at_ms=now - 4_000), "cheer")
        await producer.send_and_wait(settings.topic(topics.CHATTER), chatter.to_json())
        gifts = SignalRecord(channel=Channel.LIVESTREAM, room=room, kind="live_gift", events=2,
                             count=6, viewers=2, first_ms=None, last_ms=None,
                             received_at_ms=now - 3_000)
        await producer.send_and_wait(settings.topic(topics.SIGNALS), gifts.to_json())
        surge = SurgeSignal(
            type="surge.start", scope="group:general", kind="group", rate_per_min=120.0,
            baseline_per_min=30.0, ratio=4.0, model="erlang-c", required_slots=24,
            staffing_reserve=1.2, staffed_agents=2, staffed_slots=5, extra_agents=7,
            window_s=60.0, window_end_ms=now - 2_000, at_ms=now - 1_000,
        )
        warning = SurgeSignal(
            type="surge.warning", scope="group:livestream", kind="group", rate_per_min=40.0,
            baseline_per_min=10.0, ratio=4.0, required_slots=9, staffed_agents=1,
            staffed_slots=2, extra_agents=3, predicted_breach_in_s=95.0,
            predicted_wait_s=42.5, cause="load", window_s=60.0, window_end_ms=now,
            at_ms=now,
        )
        for s in (surge, warning):
            await producer.send_and_wait(settings.topic(topics.SURGE), s.to_json(),
                                         key=s.scope.encode())
        await producer.send_and_wait(settings.topic(topics.ROUTED), b"{not a decision")
    finally:
        await producer.stop()

    snap = await _until(tc, lambda s: len(s["decisions"]) == 3 and s["rooms"]
                        and len(s["banner"]) == 2 and s["feed"]["invalid"] == 1)
    assert snap["feed"]["connected"] is True
    assert [d["message_id"] for d in snap["decisions"]] == ["m-4", "m-3", "m-2"]  # newest first
    newest = snap["decisions"][0]
    assert (newest["skill_group"], newest["band"], newest["reasons"]) == ("general", "P1",
                                                                          ["test"])
    assert newest["latency_ms"] == 5
    [r] = snap["rooms"]
    window = snap["room_window_s"]
    assert r["room"] == room
    assert r["questions_per_min"] == round(3 * 60 / window, 1)
    assert r["chatter_per_min"] == round(1 * 60 / window, 1)
    assert r["chatter_share"] == 0.25
    assert r["gifts_per_min"] == round(6 * 60 / window, 1)
    assert r["heat_per_min"] > 0
    surge_row, forecast_row = snap["banner"]
    # the detector's state in Redis has no such surge, but the signal is fresh: shown
    assert (surge_row["kind"], surge_row["scope"], surge_row["extra_agents"]) == (
        "surge", "group:general", 7)
    assert (forecast_row["kind"], forecast_row["predicted_breach_in_s"]) == ("forecast", 95.0)
    live = next(g for g in snap["groups"] if g["group"] == "livestream")
    assert live["forecast"]["predicted_wait_s"] == 42.5
    assert live["forecast"]["extra_agents"] == 3

    # once the surge has cleared, the banner says so
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap)
    await producer.start()
    try:
        clear = SurgeSignal(type="surge.clear", scope="group:general", kind="group",
                            rate_per_min=20.0, baseline_per_min=30.0, ratio=0.6, window_s=60.0,
                            window_end_ms=now, at_ms=now)
        await producer.send_and_wait(settings.topic(topics.SURGE), clear.to_json(),
                                     key=b"group:general")
    finally:
        await producer.stop()
    await _until(tc, lambda s: [b["kind"] for b in s["banner"]] == ["forecast"])


async def test_events_push_a_snapshot_every_interval(console: tuple[Client, FakeClock]) -> None:
    tc, clock = console
    resp = await tc.get("/console/events", headers=_bearer(VIEWER))
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    events: list[dict[str, str]] = []
    current: dict[str, str] = {}
    async for raw in resp.content:
        line = raw.decode().rstrip("\n")
        if not line:
            if "data" in current:
                events.append(current)
                clock.advance(1)
            current = {}
            if len(events) == 3:
                break
            continue
        field, _, value = line.partition(": ")
        current[field] = value
    resp.close()
    assert [e["event"] for e in events] == ["snapshot"] * 3
    assert [int(e["id"]) for e in events] == [1, 2, 3]
    snaps = [orjson.loads(e["data"]) for e in events]
    assert {"groups", "rooms", "banner", "decisions", "feed"} <= set(snaps[0])
    assert snaps[0]["at_ms"] < snaps[2]["at_ms"]  # each event is a fresh snapshot


def test_console_settings_come_from_the_one_settings_tree(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OMNI_CONSOLE_TOKENS", '["wall-1", "wall-2"]')
    monkeypatch.setenv("OMNI_CONSOLE_PUSH_S", "2")
    s = Settings()
    assert [t.get_secret_value() for t in s.console.viewer_tokens] == ["wall-1", "wall-2"]
    assert s.console.push_s == 2.0
    assert "wall-1" not in repr(s)
    monkeypatch.setenv("OMNI_CONSOLE_PUSH_S", "0.01")  # a push storm is refused
    with pytest.raises(ValueError, match="OMNI_CONSOLE_PUSH_S"):
        Settings()


async def test_without_sla_config_the_console_stays_out_of_the_way(
    topics_ready: Settings, aredis: Redis, tmp_path: Path
) -> None:
    bare = topics_ready.model_copy(update={"config_dir": tmp_path})  # no sla.yaml here
    ctx = HttpContext(bare, EnvelopeProducer(bare), AdapterMetrics(CollectorRegistry()),
                      redis=aredis)
    app = build_http_app(ctx, installers=[console_installer(ConsoleSettings.model_validate(
        {"OMNI_CONSOLE_TOKENS": [SecretStr(VIEWER)]}))])
    async with TestClient(TestServer(app)) as tc:
        assert (await tc.get("/console/api/snapshot", headers=_bearer(VIEWER))).status == 404
        assert (await tc.get("/healthz")).status == 200  # the rest of the app serves


def test_the_banner_names_a_forecast_breach_that_no_warning_has_announced() -> None:
    """The forecast warns only once warmed up and with enough traffic; a desk whose
    latest forecast says breach (or a queue that never drains) is still on the banner,
    so the floor never reads "all normal" next to an unbounded wait."""
    from omniroute.sla.console_data import forecast_banner

    def row(group: str, depth: int, forecast: dict[str, object] | None) -> dict[str, object]:
        return {"group": group, "depth": depth, "agents": 1, "slots": 3, "forecast": forecast}

    def fc(breach: float | None, wait: float | None, source: str = "forecast"
           ) -> dict[str, object]:
        return {"predicted_breach_in_s": breach, "predicted_wait_s": wait,
                "unbounded": wait is None, "extra_agents": 4, "cause": "backlog",
                "at_ms": 1, "source": source}

    groups = [
        row("a", 3, fc(40.0, 90.0)),  # breach in 40 s
        row("b", 5, fc(None, None)),  # nobody to take a queue: never drains
        row("c", 0, fc(None, None)),  # no queue, no arrivals: nothing to say
        row("d", 2, fc(None, 12.0)),  # holds
        row("e", 2, fc(30.0, 80.0, "surge.warning")),  # announced: its own banner row
        row("f", 2, fc(30.0, 80.0)),  # already warned (below)
        row("g", 2, None),
    ]
    [shown] = forecast_banner(groups, [{"kind": "forecast", "scope": "group:f"}])
    # one row: the groups soonest breach first, the soonest breach, the agents to add
    assert (shown["kind"], shown["scope"], shown["groups"]) == (
        "forecast", "group:a, b", ["a", "b"])
    assert (shown["predicted_breach_in_s"], shown["extra_agents"], shown["staffed_slots"]) == (
        40.0, 8, 6)
    assert forecast_banner([groups[2], groups[3], groups[6]], []) == []
    many = [row(f"g{i}", 1, fc(float(10 - i), 50.0)) for i in range(5)]
    assert forecast_banner(many, [])[0]["scope"] == "group:g4, g3, g2 +2"
