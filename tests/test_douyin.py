"""Douyin live push, end to end on the real broker and Redis; chatter rules; back-pressure."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import orjson
import pytest
import yaml
from pydantic import SecretStr
from redis.asyncio import Redis

from omniroute.adapters.channel_config import load_section
from omniroute.adapters.douyin import ChatterConfig, ChatterRules, DouyinConfig
from omniroute.adapters.douyin import make_installer as douyin_installer
from omniroute.router import topics
from omniroute.router.models import Channel, EntryKind, Envelope
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import Settings, default_config_dir
from tests.test_wechat import Edge, consume, edge, envelopes

pytestmark = pytest.mark.integration

SECRETS = {
    "live_comment": "comment-secret",
    "live_gift": "gift-secret",
    "live_like": "like-secret",
}


def douyin_sign(headers: dict[str, str], body: bytes, secret: str) -> str:
    """Written from Douyin's documentation, independently of adapters.douyin.verify."""
    keys = ["x-nonce-str", "x-timestamp", "x-roomid", "x-msg-type"]
    params = "&".join(f"{k}={headers[k]}" for k in sorted(keys))
    return base64.b64encode(hashlib.md5(params.encode() + body + secret.encode()).digest()).decode()


def push_headers(body: bytes, msg_type: str = "live_comment", room: str = "7300001",
                 secret: str | None = None, ts_ms: int | None = None) -> dict[str, str]:
    headers = {
        "x-roomid": room,
        "x-msg-type": msg_type,
        "x-nonce-str": "abc123",
        "x-timestamp": str(int(time.time() * 1000) if ts_ms is None else ts_ms),
    }
    headers["x-signature"] = douyin_sign(headers, body, secret or SECRETS[msg_type])
    headers["Content-Type"] = "application/json"
    return headers


def comment(msg_id: str, content: str, viewer: str = "sec_v1", **extra: Any) -> dict[str, Any]:
    return {"msg_id": msg_id, "sec_openid": viewer, "content": content, "nickname": "小王",
            "avatar_url": "https://p3.douyinpic.com/a.jpg",
            "timestamp": int(time.time() * 1000), **extra}


def config(**overrides: Any) -> DouyinConfig:
    return DouyinConfig.model_validate(overrides)


def secrets() -> dict[str, SecretStr]:
    return {k: SecretStr(v) for k, v in SECRETS.items()}


class CountingSink:
    """The real producer, counting produce calls (a spy, not a fake)."""

    def __init__(self, inner: EnvelopeProducer) -> None:
        self.inner = inner
        self.envelope_calls: list[int] = []
        self.gate: asyncio.Event | None = None
        self.waiting = 0

    async def _wait_gate(self) -> None:
        if self.gate is not None:
            self.waiting += 1
            await self.gate.wait()

    async def send_envelopes(self, envs: Sequence[Envelope], *,
                             timeout_s: float | None = None) -> None:
        self.envelope_calls.append(len(envs))
        await self._wait_gate()
        await self.inner.send_envelopes(envs, timeout_s=timeout_s)

    async def send_records(self, topic: str, records: Sequence[tuple[bytes, bytes]], *,
                           timeout_s: float | None = None) -> None:
        await self._wait_gate()
        await self.inner.send_records(topic, records, timeout_s=timeout_s)


@pytest.fixture
async def douyin(topics_ready: Settings, aredis: Redis) -> AsyncIterator[Edge]:
    async with edge(topics_ready, aredis, [douyin_installer(config(), secrets())]) as e:
        yield e


async def push(e: Edge, items: list[dict[str, Any]], **kw: Any) -> tuple[int, dict[str, Any]]:
    body = orjson.dumps(items)
    resp = await e.client.post("/douyin/live", data=body, headers=push_headers(body, **kw))
    return resp.status, await resp.json()


async def test_comments_routed_and_chatter_kept(douyin: Edge, topics_ready: Settings) -> None:
    items = [
        comment("c1", "这个多少钱？"),
        comment("c2", "666", viewer="sec_v2"),
        comment("c3", "👍👍[比心]", viewer="sec_v3"),
        comment("c4", "我要退款，电话13812345678", viewer="sec_v4"),
        comment("c5", "主播穿的这件外套是什么面料的", viewer="sec_v5"),
        comment("c6", "主播穿的这件外套是什么面料的", viewer="sec_v5"),  # repeat, new msg_id
        comment("c7", "好的", viewer="sec_v6"),
        comment("c8", "主播好美", viewer="sec_v7"),  # issue 11, item 13: was routed
    ]
    status, body = await push(douyin, items)
    assert status == 200
    assert body == {"err_no": 0, "err_msg": "success", "accepted": 3, "chatter": 5,
                    "signals": 0, "duplicates": 0}
    routed = envelopes(await consume(topics_ready, topics.INBOUND, until=3))
    assert sorted(e.channel_msg_id for e in routed) == ["c1", "c4", "c5"]
    c4 = next(e for e in routed if e.channel_msg_id == "c4")
    assert c4.channel is Channel.LIVESTREAM
    assert c4.account == "7300001"
    assert c4.entry is not None
    assert c4.entry.kind is EntryKind.LIVE_ROOM
    assert c4.entry.id == "7300001"
    assert c4.conversation_id == "livestream:7300001:sec_v4"
    assert c4.text == "我要退款，电话138****5678"
    assert c4.meta["pii_masked_phone"] == 1
    chatter = envelopes(await consume(topics_ready, topics.CHATTER, until=5))
    assert {e.channel_msg_id: e.meta["chatter_rule"] for e in chatter} == {
        "c2": "cheer", "c3": "emoji_only", "c6": "repeat", "c7": "too_short", "c8": "cheer"}
    for rule in ("emoji_only", "repeat", "too_short"):
        assert douyin.value("omni_adapter_filtered_total", channel="livestream", rule=rule) == 1
    assert douyin.value("omni_adapter_filtered_total", channel="livestream", rule="cheer") == 2
    assert douyin.value("omni_adapter_accepted_total", channel="livestream",
                        account="7300001") == 3


async def test_duplicates_dropped(douyin: Edge, topics_ready: Settings) -> None:
    items = [comment("d1", "发货了吗"), comment("d1", "发货了吗"), comment("d2", "链接在哪")]
    assert (await push(douyin, items))[1]["duplicates"] == 1
    status, body = await push(douyin, items)  # Douyin re-pushes
    assert status == 200
    assert (body["accepted"], body["duplicates"]) == (0, 3)
    got = envelopes(await consume(topics_ready, topics.INBOUND, until=2))
    assert sorted(e.channel_msg_id for e in got) == ["d1", "d2"]
    assert douyin.value("omni_adapter_duplicates_total", channel="livestream",
                        account="7300001") == 4


async def test_gifts_and_likes_become_signals(douyin: Edge, topics_ready: Settings) -> None:
    gifts = [{"msg_id": f"g{i}", "sec_openid": f"v{i % 2}", "sec_gift_id": "rose",
              "gift_num": 2, "gift_value": 10, "timestamp": 1_700_000_000_000 + i}
             for i in range(3)]
    likes = [{"msg_id": "l1", "sec_openid": "v9", "like_num": 15, "timestamp": 1_700_000_000}]
    assert (await push(douyin, gifts, msg_type="live_gift"))[0] == 200
    assert (await push(douyin, likes, msg_type="live_like"))[0] == 200
    records = [orjson.loads(v) for v in await consume(topics_ready, topics.SIGNALS, until=2)]
    by_kind = {r["kind"]: r for r in records}
    assert by_kind["live_gift"]["events"] == 3
    assert by_kind["live_gift"]["count"] == 6
    assert by_kind["live_gift"]["gift_value"] == 30
    assert by_kind["live_gift"]["viewers"] == 2
    assert by_kind["live_like"]["count"] == 15
    assert by_kind["live_like"]["first_ms"] == 1_700_000_000_000  # seconds normalised
    assert douyin.value("omni_adapter_signals_total", channel="livestream",
                        kind="live_gift") == 3
    sentinel = [comment("s1", "尺码怎么选")]
    await push(douyin, sentinel)
    inbound = envelopes(await consume(topics_ready, topics.INBOUND, until=1))
    assert [e.channel_msg_id for e in inbound] == ["s1"]  # gifts never routed


async def test_hundreds_of_comments_one_batched_produce(
    topics_ready: Settings, aredis: Redis
) -> None:
    producer = EnvelopeProducer(topics_ready)
    sink = CountingSink(producer)
    async with edge(topics_ready, aredis, [douyin_installer(config(), secrets())]) as e:
        e.ctx.sink = sink
        items = [comment(f"b{i}", f"第{i}号宝贝还有货吗", viewer=f"v{i}") for i in range(400)]
        started = time.monotonic()
        status, body = await push(e, items)
        assert status == 200
        assert body["accepted"] == 400
        assert sink.envelope_calls == [400]
        assert time.monotonic() - started < 5
        got = await consume(topics_ready, topics.INBOUND, until=400)
        assert len(got) == 400
    await producer.stop()


async def test_back_pressure_429(topics_ready: Settings, aredis: Redis) -> None:
    producer = EnvelopeProducer(topics_ready)
    sink = CountingSink(producer)
    sink.gate = asyncio.Event()
    cfg = config(max_in_flight=2, retry_after_s=3)
    async with edge(topics_ready, aredis, [douyin_installer(cfg, secrets())]) as e:
        e.ctx.sink = sink
        blocked = [asyncio.create_task(push(e, [comment(f"p{i}", "还有货吗")]))
                   for i in range(2)]
        deadline = time.monotonic() + 5
        while sink.waiting < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert sink.waiting == 2
        body = orjson.dumps([comment("p9", "还有货吗")])
        resp = await e.client.post("/douyin/live", data=body, headers=push_headers(body))
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "3"
        # refused after its signature was checked: counted under its room
        assert e.value("omni_adapter_rejected_total", channel="livestream", account="7300001",
                       reason="overloaded") == 1
        sink.gate.set()
        results = await asyncio.gather(*blocked)
        assert [s for s, _ in results] == [200, 200]
        assert (await push(e, [comment("p9", "还有货吗")]))[0] == 200  # serving again
    await producer.stop()


async def test_refusals_and_nothing_unverified_reaches_kafka(
    topics_ready: Settings, aredis: Redis
) -> None:
    cfg = config(max_body_bytes=4096)
    async with edge(topics_ready, aredis, [douyin_installer(cfg, secrets())]) as e:
        good = orjson.dumps([comment("x1", "怎么退款")])
        now_ms = int(time.time() * 1000)
        cases: list[tuple[bytes, dict[str, str], int, str]] = [
            (good, {**push_headers(good), "x-signature": "AAAA"}, 401, "bad_signature"),
            (good, {k: v for k, v in push_headers(good).items() if k != "x-signature"},
             401, "missing_signature"),
            (good, push_headers(good, ts_ms=now_ms - 3_600_000), 401, "stale_timestamp"),
            (good, push_headers(good, msg_type="live_gift", secret=SECRETS["live_comment"]),
             401, "bad_signature"),
            (good, push_headers(good, msg_type="live_fansclub", secret="x"),
             401, "auth_not_configured"),
            (good, {**push_headers(good), "x-msg-type": "live_other"}, 400, "unknown_msg_type"),
            (good + b"x", push_headers(good), 401, "bad_signature"),  # body tampered
            (b"[{", push_headers(b"[{"), 400, "bad_json"),
            (b'{"a":1}', push_headers(b'{"a":1}'), 400, "invalid"),
            (b'[{"msg_id":1.5}]', push_headers(b'[{"msg_id":1.5}]'), 400, "invalid"),
            (b"[" + b"1," * 3000 + b"1]", push_headers(b"[]"), 413, "too_large"),
        ]
        for body, headers, status, reason in cases:
            resp = await e.client.post("/douyin/live", data=body, headers=headers)
            assert resp.status == status, (reason, await resp.text())
            assert (await resp.json())["err_msg"] == reason
        # a proxy's X-Forwarded-For does not break the signature
        headers = {**push_headers(good), "X-Forwarded-For": "10.0.0.1"}
        resp = await e.client.post("/douyin/live", data=good, headers=headers)
        assert resp.status == 200
        got = envelopes(await consume(topics_ready, topics.INBOUND, until=1))
        assert [env.channel_msg_id for env in got] == ["x1"]


async def test_broker_down_503_and_retry_not_deduplicated(
    settings: Settings, aredis: Redis
) -> None:
    dead = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1",
                                       "produce_timeout_s": 0.5})
    async with edge(dead, aredis, [douyin_installer(config(produce_timeout_s=1.0),
                                                    secrets())]) as e:
        status, body = await push(e, [comment("z1", "怎么还没发货")])
        assert status == 503
        assert body["err_msg"] == "broker_unavailable"
    assert await aredis.keys(f"{settings.redis_prefix}:seen:*") == []


def test_chatter_rules() -> None:
    rules = ChatterRules(ChatterConfig.model_validate({}))
    now = 1000.0
    cases = {
        "666": "cheer", "66666666": "cheer", "哈哈哈哈": "cheer", "hhhh": "cheer",
        "111": "cheer", "来了来了": "cheer", "加油加油加油": "cheer",
        "[赞][赞]": "emoji_only", "🔥🔥🔥": "emoji_only",
        "！！！": "emoji_only", "   ": "empty", "好的": "too_short", "ok": "too_short",
        "多少钱": None, "有吗?": None, "退款": None, "投诉": None,
        "这个颜色和图片上一样吗": None, "主播今天的衣服真好看": None,
    }
    for i, (text, expected) in enumerate(cases.items()):
        assert rules.classify(f"viewer{i}", text, f"m{i}", now) == expected, text
    assert rules.classify("v", "尺码偏大还是偏小呢", "a", now) is None
    assert rules.classify("v", "尺码偏大还是偏小呢", "a", now + 1) is None  # same msg: retry
    assert rules.classify("v", "尺码偏大还是偏小呢", "b", now + 2) == "repeat"
    assert rules.classify("v", "尺码偏大还是偏小呢", "c", now + 100) is None  # window over
    assert rules.classify("w", "尺码偏大还是偏小呢", "d", now + 100) is None  # other viewer


# Issue 11, item 13: compliments to the host and cheering are chatter (rule "cheer") ...
HOST_PRAISE_AND_CHEERS = (
    "主播好美", "主播好美！！！", "好美啊主播", "主播今天好漂亮", "主播声音真好听",
    "小姐姐太可爱了吧", "主播你真的好美啊啊啊", "美女主播好漂亮", "主播的皮肤真好", "主播人真好",
    "主播讲得很专业", "主播好帅", "哈哈主播好可爱", "主播这么美", "主播越来越漂亮了", "姐姐好温柔",
    "太好看了吧", "主播辛苦了", "主播辛苦啦！", "加油主播", "主播加油💪", "支持主播",
    "好喜欢主播", "主播我爱你", "爱了爱了", "主播晚上好", "大家晚上好", "来了来了 主播好美",
    "宝子们冲", "么么哒", "比心[比心]", "666主播", "主播yyds", "主播好美，加油！",
    "so beautiful", "Amazing!!",
)
# ... while questions, complaints, purchase intent and praise of a product reach agents.
QUESTIONS_AND_COMPLAINTS = (
    "主播好美，但是发货太慢了", "主播今天的衣服真好看", "衣服好看想买", "主播不专业",
    "一点都不专业", "主播太不专业了", "主播好凶", "主播好敷衍啊", "主播骗人", "太贵了吧这个",
    "主播你好，我的快递到了吗", "我要退货", "这个口红是什么色号", "主播好美，链接在哪",
    "主播好美求链接", "主播这么美用的什么护肤品", "主播怎么不回复我", "能便宜点吗主播",
    "主播好美，能不能发个优惠券", "收到的衣服有破洞", "主播说的赠品没有收到", "上次买的用了过敏",
    "主播好美 but the parcel never came",
)


def shipped_chatter_config() -> ChatterConfig:
    data = yaml.safe_load((default_config_dir() / "channels.yaml").read_text(encoding="utf-8"))
    return load_section(DouyinConfig, data).chatter


@pytest.mark.parametrize("source", ["defaults", "channels.yaml"])
def test_compliments_to_the_host_and_cheers_are_chatter(source: str) -> None:
    config = ChatterConfig.model_validate({}) if source == "defaults" else shipped_chatter_config()
    rules = ChatterRules(config)
    wrong = {
        text: rules.classify(f"viewer{i}", text, f"m{i}", 0.0)
        for i, text in enumerate(HOST_PRAISE_AND_CHEERS)
    }
    assert {t: r for t, r in wrong.items() if r != "cheer"} == {}
    routed = {
        text: rules.classify(f"asker{i}", text, f"q{i}", 0.0)
        for i, text in enumerate(QUESTIONS_AND_COMPLAINTS)
    }
    assert {t: r for t, r in routed.items() if r is not None} == {}


def test_the_host_s_nickname_makes_a_compliment() -> None:
    default = ChatterRules(ChatterConfig.model_validate({}))
    assert default.classify("v", "琦琦今天好美", "m1", 0.0) is None
    named = ChatterRules(ChatterConfig.model_validate({"hosts": ["主播", "琦琦"]}))
    assert named.classify("v", "琦琦今天好美", "m1", 0.0) == "cheer"
    assert named.classify("v", "琦琦，发货太慢了", "m2", 0.0) is None


def test_repeat_memory_is_bounded() -> None:
    rules = ChatterRules(ChatterConfig.model_validate({"repeat_cache_size": 10}))
    for i in range(100):
        rules.classify(f"v{i}", "请问有没有优惠券", f"m{i}", 0.0)
    assert "remembered=10" in repr(rules)


def test_config_secrets_from_env() -> None:
    data = {"douyin": {"message_types": {"live_comment": {"secret_env": "S1"},
                                         "live_gift": {"secret_env": "S2"}}}}
    cfg = load_section(DouyinConfig, data)
    found = cfg.resolve({"S1": "x"})
    assert list(found) == ["live_comment"]
    assert cfg.max_in_flight == 32
