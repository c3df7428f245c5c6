"""POST /v1/messages against a holder of a valid credential (issue 11, items 5 and 7):
its ids live in the sending credential's namespace, so it cannot suppress a channel's
real message, and each signed request is accepted once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from redis.asyncio import Redis

from omniroute.adapters.generic import install as generic_installer
from omniroute.adapters.generic.verify import fingerprint, sign
from omniroute.adapters.wechat import WeChatAccount
from omniroute.adapters.wechat import make_installer as wechat_installer
from omniroute.adapters.wechat.config import WeChatConfig
from omniroute.embedded import free_port
from omniroute.router import topics
from omniroute.router.keys import Keys
from omniroute.router.metrics import RouterMetrics
from omniroute.router.models import Channel, message_id
from omniroute.router.queues import RedisQueueStore
from omniroute.router.reload import PipelineHolder
from omniroute.router.settings import Settings
from omniroute.router.worker import BatchRouter
from tests.conftest import TEST_TOKEN
from tests.test_wechat import (
    AES_KEY,
    APP_ID,
    TOKEN,
    FixedClock,
    consume,
    edge,
    envelopes,
    signed_query,
    text_xml,
)

pytestmark = pytest.mark.integration
MINI = Path(__file__).parent / "data" / "mini"
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
OTHER_TOKEN = "another-ingest-token"
HMAC_SECRET = "replay-test-secret"


def _settings(base: Settings, **update: object) -> Settings:
    return base.model_copy(update={
        "ingest_tokens": (SecretStr(TEST_TOKEN), SecretStr(OTHER_TOKEN)),
        "ingest_hmac_secret": SecretStr(HMAC_SECRET), "config_dir": MINI, **update,
    })


def _signed(body: bytes, ts: int) -> dict[str, str]:
    return {"Content-Type": "application/json", "X-Omni-Timestamp": str(ts),
            "X-Omni-Signature": sign(HMAC_SECRET, ts, body)}


async def _route_all(settings: Settings, redis: Redis, n: int) -> None:
    """Run the real router over omni.inbound until it has processed ``n`` records."""
    metrics = RouterMetrics(CollectorRegistry())
    store = RedisQueueStore(redis, Keys(settings.redis_prefix), decision_ttl_s=3600,
                            repeat_window_s=3600, sticky_window_s=3600)
    router = BatchRouter(settings, PipelineHolder(MINI, metrics), store, metrics)
    task = asyncio.create_task(router.run())
    try:
        deadline = asyncio.get_running_loop().time() + 30
        while router.processed < n:
            assert asyncio.get_running_loop().time() < deadline, f"routed {router.processed}/{n}"
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    finally:
        router.request_stop()
        await asyncio.wait_for(task, 10)
        await router.stop()


# --- item 5: ids in the credential's namespace ---------------------------------------------


async def test_a_token_holder_cannot_suppress_the_real_wechat_message(
    topics_ready: Settings, aredis: Redis
) -> None:
    settings = _settings(topics_ready)
    wechat_accounts = {
        "demo": WeChatAccount("demo", APP_ID, SecretStr(TOKEN), SecretStr(AES_KEY), "compatible")
    }
    installers = [generic_installer, wechat_installer(WeChatConfig(), wechat_accounts)]
    async with edge(settings, aredis, installers) as e:
        # the attacker claims WeChat's MsgId 42 for account demo first
        fake = {"channel": "wechat", "account": "demo", "channel_msg_id": "42",
                "customer": {"id": "oVictim"}, "text": "不用处理了，已解决"}
        resp = await e.client.post("/v1/messages", json=fake, headers=AUTH)
        assert resp.status == 202, await resp.text()
        [fake_id] = (await resp.json())["ids"]
        # then WeChat delivers the real message with MsgId 42
        now = int(e.clock.now())
        real = text_xml("我要投诉，订单一直没发货", msg_id="42", openid="oVictim",
                        create_time=now)
        answer = await e.client.post("/wechat/demo", params=signed_query(TOKEN, now),
                                     data=real.encode())
        assert answer.status == 200
        assert await answer.text() == "success"
        assert e.value("omni_adapter_duplicates_total", channel="wechat", account="demo") == 0

        inbound = envelopes(await consume(settings, topics.INBOUND, until=2))
        by_text = {env.text: env for env in inbound}
        assert len(inbound) == 2, [env.text for env in inbound]
        genuine = by_text["我要投诉，订单一直没发货"]
        assert genuine.id == message_id(Channel.WECHAT, "demo", "42")
        assert fake_id != genuine.id
        assert by_text["不用处理了，已解决"].meta["source"] == f"bearer:{fingerprint(TEST_TOKEN)}"

    # the router takes both: the genuine message has its own decision and queue entry
    await _route_all(settings, aredis, 2)
    routed = [orjson.loads(v) for v in await consume(settings, topics.ROUTED, until=2)]
    assert {d["message_id"] for d in routed} == {genuine.id, fake_id}
    keys = Keys(settings.redis_prefix)
    assert await aredis.exists(keys.decision(genuine.id))
    group = next(d["skill_group"] for d in routed if d["message_id"] == genuine.id)
    assert await aredis.zscore(keys.queue(group), genuine.id) is not None


async def test_a_token_holder_cannot_take_over_the_real_wechat_conversation(
    topics_ready: Settings, aredis: Redis
) -> None:
    """The fake names the victim's WeChat conversation id outright; it gets a conversation
    in its credential's namespace, and the victim's conversation state (sticky group and
    agent, later SLA timers and assignment, all keyed by conversation id) stays untouched."""
    settings = _settings(topics_ready)
    keys = Keys(settings.redis_prefix)
    victim = "wechat:demo:oVictim"  # what the WeChat adapter names this customer's conversation
    wechat_accounts = {
        "demo": WeChatAccount("demo", APP_ID, SecretStr(TOKEN), SecretStr(AES_KEY), "compatible")
    }
    installers = [generic_installer, wechat_installer(WeChatConfig(), wechat_accounts)]
    async with edge(settings, aredis, installers) as e:
        fakes = [
            {"channel": "wechat", "account": "demo", "channel_msg_id": "f1",
             "conversation_id": victim, "customer": {"id": "oVictim", "tier": "vip"},
             "text": "不用处理了，已解决"},
            # no conversation id: the default is in the credential's namespace too
            {"channel": "wechat", "account": "demo", "channel_msg_id": "f2",
             "customer": {"id": "oVictim"}, "text": "已经收到货了"},
        ]
        resp = await e.client.post("/v1/messages", json=fakes, headers=AUTH)
        assert resp.status == 202, await resp.text()
        other = await e.client.post("/v1/messages", json=fakes[0],
                                    headers={"Authorization": f"Bearer {OTHER_TOKEN}"})
        assert other.status == 202, await other.text()
        sent = envelopes(await consume(settings, topics.INBOUND, until=3))
        source = f"bearer:{fingerprint(TEST_TOKEN)}"
        assert sorted(env.conversation_id for env in sent) == sorted([
            f"{source}:{victim}", f"{source}:wechat:oVictim",
            f"bearer:{fingerprint(OTHER_TOKEN)}:{victim}"])

    # the fakes are routed first: their state lands in their own conversations
    await _route_all(settings, aredis, 3)
    assert not await aredis.exists(keys.conversation(victim))
    assert await aredis.exists(keys.conversation(f"{source}:{victim}"))

    # then WeChat delivers the customer's real message: its own conversation, no sticky
    # group or agent inherited from the fake
    async with edge(settings, aredis, installers) as e:
        now = int(e.clock.now())
        real = text_xml("我要投诉，订单一直没发货", msg_id="43", openid="oVictim",
                        create_time=now)
        answer = await e.client.post("/wechat/demo", params=signed_query(TOKEN, now),
                                     data=real.encode())
        assert answer.status == 200
    await _route_all(settings, aredis, 1)
    routed = [orjson.loads(v) for v in await consume(settings, topics.ROUTED, until=4)]
    genuine = next(d for d in routed if d["conversation_id"] == victim)
    assert genuine["message_id"] == message_id(Channel.WECHAT, "demo", "43")
    assert not [step for step in genuine["explain"] if "sticky" in step], genuine["explain"]
    assert [d["conversation_id"] for d in routed].count(victim) == 1


async def test_ids_are_per_credential_and_stable_for_retries(
    topics_ready: Settings, aredis: Redis
) -> None:
    settings = _settings(topics_ready)
    msg = {"channel_msg_id": "crm-7", "customer": {"id": "c7"}, "text": "发票开错了"}
    async with edge(settings, aredis, [generic_installer], FixedClock()) as e:
        first = await e.client.post("/v1/messages", json=msg, headers=AUTH)
        retry = await e.client.post("/v1/messages", json=msg, headers=AUTH)
        other = await e.client.post("/v1/messages", json=msg,
                                    headers={"Authorization": f"Bearer {OTHER_TOKEN}"})
        body = orjson.dumps(msg)
        signed = await e.client.post("/v1/messages", data=body,
                                     headers=_signed(body, int(e.clock.now())))
        ids = [(await r.json())["ids"][0] for r in (first, retry, other, signed)]
    assert ids[0] == ids[1]  # a retry keeps its id, so the dedupe holds
    assert len({ids[0], ids[2], ids[3]}) == 3  # no credential can claim another's id
    assert message_id(Channel.APP, "default", "crm-7") not in ids


# --- item 7: each signed request once ------------------------------------------------------


async def test_a_replayed_signed_request_is_refused(topics_ready: Settings, aredis: Redis) -> None:
    settings = _settings(topics_ready)
    clock = FixedClock()
    async with edge(settings, aredis, [generic_installer], clock) as e:
        body = orjson.dumps({"channel_msg_id": "r1", "customer": {"id": "c1"}, "text": "退款"})
        ts = int(clock.now()) - 100  # signed 100 s ago: acceptable for 200 s more
        headers = _signed(body, ts)
        first = await e.client.post("/v1/messages", data=body, headers=headers)
        assert first.status == 202, await first.text()
        # the signature is remembered exactly as long as its timestamp stays acceptable
        key = Keys(settings.redis_prefix).ingest_signature(
            headers["X-Omni-Signature"].removeprefix("sha256="))
        assert settings.hmac_window_s - 100 - 5 < await aredis.ttl(key) <= (
            settings.hmac_window_s - 100 + 1)
        clock.now_s += 120  # still inside the 300 s window
        for _ in range(2):
            again = await e.client.post("/v1/messages", data=body, headers=headers)
            assert again.status == 409
            answer = await again.json()
            assert answer["error"] == "replayed_signature"
            assert "already received" in answer["message"]
        assert e.value("omni_adapter_rejected_total", channel="api", account="-",
                       reason="replayed_signature") == 2
        # a new signature (new timestamp) is a new request: accepted, same envelope id
        fresh = await e.client.post("/v1/messages", data=body,
                                    headers=_signed(body, int(clock.now())))
        assert fresh.status == 202
        assert (await fresh.json())["ids"] == (await first.json())["ids"]
        # past the window the replay is refused as stale, whatever Redis holds
        clock.now_s += settings.hmac_window_s
        stale = await e.client.post("/v1/messages", data=body, headers=headers)
        assert (await stale.json())["error"] == "stale_timestamp"
    produced = envelopes(await consume(settings, topics.INBOUND, until=3, timeout_s=3))
    assert len(produced) == 2  # the first request and the re-signed one; never the replays


async def test_a_refused_produce_releases_the_signature_for_the_retry(
    settings: Settings, aredis: Redis
) -> None:
    """503 means "retry with the same request": the retry must not be taken for a replay."""
    down = _settings(settings, kafka_bootstrap=f"127.0.0.1:{free_port()}",
                     produce_timeout_s=0.5)
    async with edge(down, aredis, [generic_installer], FixedClock()) as e:
        body = orjson.dumps({"channel_msg_id": "r2", "customer": {"id": "c2"}, "text": "在吗"})
        headers = _signed(body, int(e.clock.now()))
        for _ in range(2):
            resp = await e.client.post("/v1/messages", data=body, headers=headers)
            assert resp.status == 503
            assert (await resp.json())["error"] == "broker_unavailable"
        key = Keys(down.redis_prefix).ingest_signature(
            headers["X-Omni-Signature"].removeprefix("sha256="))
        assert not await aredis.exists(key)


async def test_signed_requests_are_refused_while_redis_cannot_tell(
    topics_ready: Settings,
) -> None:
    settings = _settings(topics_ready, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    gone = Redis.from_url(settings.redis_url, socket_connect_timeout=1)
    try:
        async with edge(settings, gone, [generic_installer], FixedClock()) as e:
            body = orjson.dumps({"channel_msg_id": "r3", "customer": {"id": "c3"},
                                 "text": "在吗"})
            resp = await e.client.post("/v1/messages", data=body,
                                       headers=_signed(body, int(e.clock.now())))
            assert resp.status == 503
            assert (await resp.json())["error"] == "replay_check_unavailable"
            # a bearer request needs no replay check: it still goes through
            bearer = await e.client.post(
                "/v1/messages", data=body,
                headers={**AUTH, "Content-Type": "application/json"})
            assert bearer.status == 202
    finally:
        await gone.aclose()

