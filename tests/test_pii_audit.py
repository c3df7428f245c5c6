"""PII audit (issue 11, item 4): known personal numbers pushed through every ingest path
(generic API, WeChat, WeCom, Douyin, Twilio, TCCC, SMTP), on the generic API also in
attachment names and hints, routed by the real router, then searched for in every
topic, every Redis key and value of the test, and the captured logs.

Masking runs once, at the envelope producer (router.pii via EnvelopeProducer), so no
path can skip it; this test is what proves it for each path.
"""

from __future__ import annotations

import asyncio
import logging
import smtplib
import time
from email.mime.text import MIMEText
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import orjson
import pytest
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from redis.asyncio import Redis
from twilio.request_validator import RequestValidator
from wechatpy.enterprise.crypto import WeChatCrypto as WeComCrypto

from omniroute.adapters.douyin import make_installer as douyin_installer
from omniroute.adapters.email import SmtpServer
from omniroute.adapters.generic import install as generic_installer
from omniroute.adapters.phone import make_installer as phone_installer
from omniroute.adapters.wechat import WeChatAccount
from omniroute.adapters.wechat import make_installer as wechat_installer
from omniroute.adapters.wechat.config import WeChatConfig
from omniroute.adapters.wecom import WeComConfig
from omniroute.router import topics
from omniroute.router.http import HttpContext
from omniroute.router.keys import Keys
from omniroute.router.metrics import RouterMetrics
from omniroute.router.models import Envelope
from omniroute.router.pii import mask_pii
from omniroute.router.queues import RedisQueueStore
from omniroute.router.reload import PipelineHolder
from omniroute.router.settings import Settings
from omniroute.router.worker import BatchRouter
from tests.conftest import TEST_TOKEN
from tests.test_douyin import comment, push_headers
from tests.test_douyin import config as douyin_config
from tests.test_douyin import secrets as douyin_secrets
from tests.test_phone import CONFIG as PHONE_CONFIG
from tests.test_phone import PUBLIC, TCCC_AUTH, cdr, phone_settings
from tests.test_phone import TOKEN as TWILIO_TOKEN
from tests.test_smtp import email_settings
from tests.test_wechat import AES_KEY, APP_ID, edge, signed_query, text_xml
from tests.test_wechat import TOKEN as WECHAT_TOKEN

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
MINI = Path(__file__).parent / "data" / "mini"
SMTP_LIBRARY_LOG = "mail.log"  # aiosmtpd's logger

# The numbers that must never leave an adapter. Each is what a customer types.
ID_CARD = "11010519491231002X"  # 18 characters, valid check character
ID_CARD_BAD_CHECK = "110105198003070011"  # ID-shaped, wrong check digit (a typo)
ID_CARD_OLD = "110105800307123"  # 15-digit first-generation card
MOBILE = "13912345678"
LANDLINE = "010-88886666"
BANK_CARD = "6222021234567890128"
EMAIL = "wang.secret@example.com"
CALLER = "+8613812345678"  # the caller's own number (Twilio From, TCCC Caller)
TEXT = (f"身份证{ID_CARD}，老证{ID_CARD_OLD}，也可能是{ID_CARD_BAD_CHECK}；手机{MOBILE}，"
        f"座机{LANDLINE}，卡号{BANK_CARD}，邮箱{EMAIL}，订单一直没到")
# searched as digit runs and in the forms a number may be written back
NEEDLES = [ID_CARD, ID_CARD.lower(), ID_CARD_BAD_CHECK, ID_CARD_OLD, MOBILE, "88886666",
           "01088886666", BANK_CARD, "6222 0212 3456 7890", EMAIL, "wang.secret", "13812345678"]


def test_the_text_is_fully_masked_by_the_one_masker() -> None:
    """The premise: every needle is something mask_pii recognises."""
    masked = mask_pii(TEXT)
    assert masked.counts == {"id_card": 3, "phone": 1, "landline": 1, "bank_card": 1,
                             "email": 1}
    for needle in NEEDLES:
        assert needle not in masked.text


async def _all_records(settings: Settings) -> list[tuple[str, bytes | None, bytes | None]]:
    """Every record of every topic of this test, from the start."""
    names = [settings.topic(t) for t in topics.ALL_TOPICS]
    consumer = AIOKafkaConsumer(*names, bootstrap_servers=settings.kafka_bootstrap,
                                auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    out: list[tuple[str, bytes | None, bytes | None]] = []
    try:
        idle = 0
        while idle < 3:  # three empty fetches in a row after the end offsets
            batch = await consumer.getmany(timeout_ms=500)
            idle = 0 if batch else idle + 1
            out += [(tp.topic, r.key, r.value) for tp, recs in batch.items() for r in recs]
    finally:
        await consumer.stop()
    return out


async def _all_redis(redis: Redis, prefix: str) -> list[str]:
    """Every key of this test and everything stored under it, as text."""
    found: list[Any] = []
    async for key in redis.scan_iter(match=f"{prefix}:*", count=1000):
        found.append(key)
        kind = _text(await redis.type(key))
        if kind == "string":
            found.append(await redis.get(key))
        elif kind == "hash":
            for field, value in (await redis.hgetall(key)).items():
                found += [field, value]
        elif kind == "zset":
            found += await redis.zrange(key, 0, -1)
        elif kind == "set":
            found += list(await redis.smembers(key))
        elif kind == "list":
            found += await redis.lrange(key, 0, -1)
    return [_text(item) for item in found]


def _text(item: object) -> str:
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)


def _leaks(haystacks: list[tuple[str, str]]) -> list[str]:
    return [f"{needle!r} in {where}: {text[:200]!r}"
            for where, text in haystacks for needle in NEEDLES if needle in text]


async def _route_all(settings: Settings, redis: Redis, n: int) -> None:
    metrics = RouterMetrics(CollectorRegistry())
    store = RedisQueueStore(redis, Keys(settings.redis_prefix), decision_ttl_s=3600,
                            repeat_window_s=3600, sticky_window_s=3600)
    router = BatchRouter(settings, PipelineHolder(MINI, metrics), store, metrics)
    task = asyncio.create_task(router.run())
    try:
        deadline = time.monotonic() + 30
        while router.processed < n:
            assert time.monotonic() < deadline, f"routed {router.processed}/{n}"
            if task.done():
                task.result()
            await asyncio.sleep(0.05)
    finally:
        router.request_stop()
        await asyncio.wait_for(task, 10)
        await router.stop()


async def _send_mail(ctx: HttpContext) -> int:
    """One mail full of personal data through the SMTP adapter; 250 when accepted."""
    async with SmtpServer(ctx, email_settings()) as smtp:
        mail = MIMEText(TEXT, "plain", "utf-8")
        mail["Subject"] = f"投诉 {MOBILE}"
        mail["From"] = f"王{MOBILE} <{EMAIL}>"
        mail["To"] = "kefu@shop.example"
        mail["Message-ID"] = "<audit-1@example.com>"

        def send() -> dict[str, Any]:
            with smtplib.SMTP("127.0.0.1", smtp.port, timeout=15) as client:
                return client.sendmail(EMAIL, ["kefu@shop.example"], mail.as_bytes())

        return 250 if not await asyncio.to_thread(send) else 550


async def test_no_known_number_survives_any_ingest_path(
    topics_ready: Settings, aredis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)  # what a production process logs
    settings = topics_ready.model_copy(update={"config_dir": MINI})
    wechat = {"demo": WeChatAccount("demo", APP_ID, SecretStr(WECHAT_TOKEN),
                                    SecretStr(AES_KEY), "compatible")}
    wecom_token, wecom_key, corp = "wecom-audit", "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj", \
        "ww0123456789abcdef"
    wecom = {"support": WeChatAccount("support", corp, SecretStr(wecom_token),
                                      SecretStr(wecom_key), "safe")}
    installers = [
        generic_installer,
        wechat_installer(WeChatConfig(), wechat),
        wechat_installer(WeComConfig(), wecom),
        douyin_installer(douyin_config(), douyin_secrets()),
        phone_installer(phone_settings(), PHONE_CONFIG),
    ]
    async with edge(settings, aredis, installers) as e:
        client, now = e.client, int(e.clock.now())
        answers: dict[str, int] = {}

        # generic API: text, the customer's handle, attachment names and hints (each a
        # free-text field a caller fills with what the customer typed or uploaded)
        attachments = [
            {"kind": "image", "ref": "media-1", "name": f"身份证{ID_CARD}.jpg"},
            {"kind": "file", "ref": "media-2",
             "name": f"老证{ID_CARD_OLD}卡{BANK_CARD}邮箱{EMAIL}.pdf"},
        ]
        resp = await client.post("/v1/messages", headers={"Authorization": f"Bearer {TEST_TOKEN}"},
                                 json={"channel_msg_id": "api-1", "text": TEXT,
                                       "customer": {"id": "crm-1", "handle": f"王先生{MOBILE}"},
                                       "attachments": attachments,
                                       "hints": [f"回电{LANDLINE}", f"card {BANK_CARD}",
                                                 ID_CARD_BAD_CHECK]})
        answers["api"] = resp.status

        # WeChat Official Account (plain mode)
        resp = await client.post("/wechat/demo", params=signed_query(WECHAT_TOKEN, now),
                                 data=text_xml(TEXT, msg_id="9001", create_time=now).encode())
        answers["wechat"] = resp.status

        # WeCom (always encrypted)
        xml = text_xml(TEXT, msg_id="9002", openid="LiLei", create_time=now).replace(
            "</xml>", "<AgentID>1000002</AgentID></xml>")
        out = WeComCrypto(wecom_token, wecom_key, corp).encrypt_message(xml, "abc", str(now))
        query = {"msg_signature": ET.fromstring(out).findtext("MsgSignature") or "",
                 "timestamp": str(now), "nonce": "abc"}
        resp = await client.post("/wecom/support", params=query, data=out.encode())
        answers["wecom"] = resp.status

        # Douyin live comment, the number also in the viewer's nickname
        body = orjson.dumps([comment("dy-1", TEXT, nickname=f"小王{MOBILE}")])
        resp = await client.post("/douyin/live", data=body, headers=push_headers(body))
        answers["douyin"] = resp.status

        # Twilio gather: the caller's number and the recognised speech
        form = {"CallSid": "CA" + "7" * 32, "AccountSid": "AC" + "0" * 32, "From": CALLER,
                "To": "+864000000000", "CallStatus": "in-progress", "Direction": "inbound",
                "Digits": "1", "SpeechResult": TEXT}
        signature = RequestValidator(TWILIO_TOKEN).compute_signature(
            f"{PUBLIC}/phone/twilio/gather", form)
        resp = await client.post("/phone/twilio/gather", data=form, headers={
            "X-Twilio-Signature": signature,
            "Content-Type": "application/x-www-form-urlencoded"})
        answers["twilio"] = resp.status

        # TCCC CDR push: the caller's number
        resp = await client.post(
            "/phone/tccc?action=cdr&version=1", data=orjson.dumps(cdr("sess-audit")),
            headers={"Authorization": TCCC_AUTH, "Content-Type": "application/json",
                     "X-TCCC-PUSH-UUID": "uuid-audit"})
        answers["tccc"] = resp.status

        # inbound SMTP: the sender's address and name, the subject and the body
        answers["smtp"] = await _send_mail(e.ctx)

    assert answers == {"api": 202, "wechat": 200, "wecom": 200, "douyin": 200, "twilio": 200,
                       "tccc": 200, "smtp": 250}
    records = await _all_records(settings)
    inbound = [Envelope.from_json(v) for t, _, v in records
               if t == settings.topic(topics.INBOUND) and v is not None]
    channels = sorted({env.channel.value for env in inbound})
    assert channels == ["app", "email", "livestream", "phone", "wechat", "wecom"], channels
    assert len(inbound) == 7, [(env.channel.value, env.account) for env in inbound]

    await _route_all(settings, aredis, len(inbound))
    records = await _all_records(settings)
    assert {t for t, _, _ in records} >= {settings.topic(topics.INBOUND),
                                          settings.topic(topics.ROUTED)}

    haystacks: list[tuple[str, str]] = []
    for topic, key, value in records:
        for part in (key, value):
            if part:
                haystacks.append((topic, part.decode("utf-8", "replace")))
    stored = await _all_redis(aredis, settings.redis_prefix)
    assert any(":msg:" in item for item in stored)  # the router's records are searched too
    assert any(":seen:" in item for item in stored)  # and the adapters' dedupe marks
    haystacks += [("redis", item) for item in stored]
    for rec in caplog.records:
        if rec.name == SMTP_LIBRARY_LOG:  # checked by the test below, on its own
            continue
        haystacks.append((f"log {rec.name}", rec.getMessage()))
        if rec.exc_text:
            haystacks.append((f"log {rec.name} traceback", rec.exc_text))
    assert not _leaks(haystacks), "\n".join(_leaks(haystacks))
    # and the masked forms are what the agents read
    texts = " ".join(env.text for env in inbound)
    assert "110***********002X" in texts
    assert "010-****6666" in texts
    [api] = [env for env in inbound if env.channel.value == "app"]
    assert [a.name for a in api.attachments] == [
        "身份证110***********002X.jpg",
        "老证110********7123卡6222 **** **** 0128邮箱w***@example.com.pdf",
    ]
    assert api.hints == ("回电010-****6666", "card 6222 **** **** 0128", "110***********0011")


async def test_the_smtp_library_log_keeps_the_sender_address_out(
    topics_ready: Settings, aredis: Redis, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with edge(topics_ready, aredis, []) as e:
        assert await _send_mail(e.ctx) == 250
    logged = [r.getMessage() for r in caplog.records if r.name == SMTP_LIBRARY_LOG]
    assert not [line for line in logged if "wang.secret" in line], logged
