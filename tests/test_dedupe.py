"""Adapter dedupe against a real Redis: SET NX with TTL, batch forms, fail-open."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from omniroute.adapters.dedupe import Deduper, produce_once
from omniroute.router.exceptions import BrokerUnavailable
from omniroute.router.keys import Keys
from omniroute.router.models import Channel, Customer, Envelope, message_id
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import Settings

pytestmark = pytest.mark.integration


async def test_seen_after_mark_only(aredis: Redis, settings: Settings) -> None:
    keys = Keys(settings.redis_prefix)
    d = Deduper(aredis, keys, ttl_s=60)
    assert not await d.seen("wechat", "m1")
    await d.mark("wechat", "m1")
    assert await d.seen("wechat", "m1")
    assert not await d.seen("wecom", "m1")  # channels do not collide
    ttl = await aredis.ttl(keys.adapter_dedupe("wechat", "m1"))
    assert 0 < ttl <= 60


async def test_mark_is_nx_and_keeps_first_ttl(aredis: Redis, settings: Settings) -> None:
    keys = Keys(settings.redis_prefix)
    await Deduper(aredis, keys, ttl_s=30).mark("wechat", "m")
    await Deduper(aredis, keys, ttl_s=3000).mark("wechat", "m")
    assert await aredis.ttl(keys.adapter_dedupe("wechat", "m")) <= 30


async def test_batch_forms(aredis: Redis, settings: Settings) -> None:
    d = Deduper(aredis, Keys(settings.redis_prefix), ttl_s=60)
    assert await d.seen_many("livestream", []) == []
    await d.mark_many("livestream", ["a", "c"])
    await d.mark_many("livestream", [])
    assert await d.seen_many("livestream", ["a", "b", "c"]) == [True, False, True]


async def test_redis_down_fails_open(settings: Settings) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1/0", socket_connect_timeout=0.2)
    try:
        d = Deduper(dead, Keys(settings.redis_prefix))
        assert not await d.seen("wechat", "x")
        assert await d.seen_many("wechat", ["x", "y"]) == [False, False]
        await d.mark("wechat", "x")
        await d.mark_many("wechat", ["x"])
    finally:
        await dead.aclose()


def test_ttl_must_be_positive(settings: Settings) -> None:
    with pytest.raises(ValueError, match="ttl_s"):
        Deduper(Redis(), Keys(settings.redis_prefix), ttl_s=0)


def _env(mid: str) -> Envelope:
    return Envelope(
        id=message_id(Channel.WECHAT, "acc", mid), channel=Channel.WECHAT, account="acc",
        channel_msg_id=mid, conversation_id="wechat:acc:u", customer=Customer("u"),
        text="hi", received_at_ms=1,
    )


async def test_produce_once_marks_only_after_ack(topics_ready: Settings, aredis: Redis) -> None:
    keys = Keys(topics_ready.redis_prefix)
    d = Deduper(aredis, keys, ttl_s=60)
    async with EnvelopeProducer(topics_ready) as producer:
        first = await produce_once(producer, d, [_env("a"), _env("a"), _env("b")])
        assert [e.channel_msg_id for e in first.produced] == ["a", "b"]
        assert [e.channel_msg_id for e in first.duplicates] == ["a"]
        again = await produce_once(producer, d, [_env("b"), _env("c")], timeout_s=5)
        assert [e.channel_msg_id for e in again.produced] == ["c"]
    assert await d.seen("wechat", _env("c").id)


async def test_produce_once_broker_down_marks_nothing(settings: Settings, aredis: Redis) -> None:
    dead = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1",
                                       "produce_timeout_s": 0.3})
    d = Deduper(aredis, Keys(settings.redis_prefix), ttl_s=60)
    producer = EnvelopeProducer(dead)
    try:
        with pytest.raises(BrokerUnavailable):
            await produce_once(producer, d, [_env("x")], timeout_s=1)
    finally:
        await producer.stop()
    assert not await d.seen("wechat", _env("x").id)
