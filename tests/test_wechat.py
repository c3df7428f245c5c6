"""WeChat Official Account callback, end to end: real broker, real Redis, wechatpy as the sender.

The helpers at the top (``FixedClock``, ``edge``, ``consume``) are shared by the
WeCom, Douyin and fuzz tests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer
from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry
from pydantic import SecretStr
from redis.asyncio import Redis
from wechatpy.crypto import WeChatCrypto
from wechatpy.utils import WeChatSigner

from omniroute.adapters.channel_config import load_section, read_channels_yaml
from omniroute.adapters.http import build_http_app
from omniroute.adapters.wechat import (
    MessageCipher,
    WeChatAccount,
    make_installer,
)
from omniroute.adapters.wechat.config import WeChatConfig
from omniroute.router import topics
from omniroute.router.exceptions import ConfigError
from omniroute.router.http import HttpContext, Installer
from omniroute.router.metrics import AdapterMetrics
from omniroute.router.models import Channel, EntryKind, Envelope
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import Settings

pytestmark = pytest.mark.integration

# Tencent's published sample (WXBizMsgCrypt SDK samples; the same key, token and
# id appear in the WeCom callback documentation).
SAMPLE_TOKEN = "QDG6eK"
SAMPLE_AES_KEY = "jWmYm7qr5nMoAUwZRjGtBxmz3KA1tkAj3ykkR6q2B2C"
SAMPLE_ID = "wx5823bf96d3bd56c7"
SAMPLE_MSG_SIGNATURE = "477715d11cdb4164915debcba66cb864d751f3e6"
SAMPLE_TIMESTAMP = 1409659813
SAMPLE_NONCE = "1372623149"
SAMPLE_BODY = (
    "<xml><ToUserName><![CDATA[wx5823bf96d3bd56c7]]></ToUserName><Encrypt><![CDATA["
    "RypEvHKD8QQKFhvQ6QleEB4J58tiPdvo+rtK1I9qca6aM/wvqnLSV5zEPeusUiX5L5X/0lWfrf0QADHHhGd3QczcdCUpj91"
    "1L3vg3W/sYYvuJTs3TUUkSUXxaccAS0qhxchrRYt66wiSpGLYL42aM6A8dTT+6k4aSknmPj48kzJs8qLjvd4Xgpue06DOd"
    "nLxAUHzM6+kDZ+HMZfJYuR+LtwGc2hgf5gsijff0ekUNXZiqATP7PF5mZxZ3Izoun1s4zG4LUMnvw2r+KqCKIw+3IQH0"
    "3v+BCA9nMELNqbSf6tiWSrXJB3LAVGUcallcrw8V2t9EL4EhzJWrQUax5wLVMNS0+rUPA3k22Ncx4XXZS9o0MBH27Bo6B"
    "pNelZpS+/uh9KsNlY6bHCmJU9p8g7m3fVKn28H3KDYA5Pl/T8Z1ptDAVe0lXdQ2YoyyH2uyPIGHBZZIs2pDBS8R07+qN"
    "+E7Q==]]></Encrypt></xml>"
)

TOKEN = "omni-test-token"
AES_KEY = "abcdefghijklmnopqrstuvwxyz0123456789ABCDEFG"
APP_ID = "wx0123456789abcdef"


class FixedClock:
    """A settable wall clock."""

    def __init__(self, now_s: float | None = None) -> None:
        self.now_s = time.time() if now_s is None else now_s

    def now(self) -> float:
        return self.now_s


@dataclass
class Edge:
    """A running adapters app and what it was built from."""

    client: TestClient[web.Request, web.Application]
    ctx: HttpContext
    metrics: AdapterMetrics
    clock: FixedClock

    def value(self, name: str, **labels: str) -> float:
        v = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v


@asynccontextmanager
async def edge(
    settings: Settings,
    redis: Redis | None,
    installers: Sequence[Installer],
    clock: FixedClock | None = None,
) -> AsyncIterator[Edge]:
    """Start the adapters' HTTP app with a real producer on the test broker."""
    metrics = AdapterMetrics(CollectorRegistry())
    clk = clock or FixedClock()
    producer = EnvelopeProducer(settings)
    ctx = HttpContext(settings=settings, sink=producer, metrics=metrics, redis=redis, clock=clk)
    app = build_http_app(ctx, list(installers))
    client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
    await client.start_server()
    try:
        yield Edge(client, ctx, metrics, clk)
    finally:
        await client.close()
        await producer.stop()


async def consume(
    settings: Settings, topic: str, *, until: int, timeout_s: float = 10.0,
    sentinel: bytes | None = None,
) -> list[bytes]:
    """Read ``topic`` from the start until ``until`` records (or ``sentinel``) arrived."""
    consumer = AIOKafkaConsumer(
        settings.topic(topic), bootstrap_servers=settings.kafka_bootstrap,
        auto_offset_reset="earliest", group_id=None,
    )
    await consumer.start()
    values: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            values += [r.value for recs in batch.values() for r in recs]
            if len(values) >= until or (sentinel and any(sentinel in v for v in values)):
                break
    finally:
        await consumer.stop()
    return values


def envelopes(values: Sequence[bytes]) -> list[Envelope]:
    return [Envelope.from_json(v) for v in values]


def signed_query(token: str, ts: int, nonce: str = "n0nce", **extra: str) -> dict[str, str]:
    signer = WeChatSigner()
    signer.add_data(token, str(ts), nonce)
    return {"signature": signer.signature, "timestamp": str(ts), "nonce": nonce, **extra}


def text_xml(content: str, msg_id: str = "1000001", openid: str = "oUser1",
             create_time: int | None = None) -> str:
    ct = int(time.time()) if create_time is None else create_time
    return (
        f"<xml><ToUserName><![CDATA[gh_test]]></ToUserName>"
        f"<FromUserName><![CDATA[{openid}]]></FromUserName><CreateTime>{ct}</CreateTime>"
        f"<MsgType><![CDATA[text]]></MsgType><Content><![CDATA[{content}]]></Content>"
        f"<MsgId>{msg_id}</MsgId></xml>"
    )


def accounts() -> dict[str, WeChatAccount]:
    return {
        "shop": WeChatAccount("shop", APP_ID, SecretStr(TOKEN), SecretStr(AES_KEY), "compatible"),
        "secure": WeChatAccount("secure", APP_ID, SecretStr(TOKEN), SecretStr(AES_KEY), "safe"),
        "sample": WeChatAccount(
            "sample", SAMPLE_ID, SecretStr(SAMPLE_TOKEN), SecretStr(SAMPLE_AES_KEY), "safe"
        ),
    }


@pytest.fixture
async def wechat(topics_ready: Settings, aredis: Redis) -> AsyncIterator[Edge]:
    async with edge(topics_ready, aredis, [make_installer(WeChatConfig(), accounts())]) as e:
        yield e


async def post_encrypted(e: Edge, account: str, xml: str, *, token: str = TOKEN,
                         aes_key: str = AES_KEY, app_id: str = APP_ID,
                         ts: int | None = None) -> tuple[int, str]:
    """Encrypt and sign with wechatpy (an independent implementation), then POST."""
    stamp = str(int(e.clock.now()) if ts is None else ts)
    crypto = WeChatCrypto(token, aes_key, app_id)
    encrypted = crypto.encrypt_message(xml, "nonce42", stamp)
    from xml.etree import ElementTree as ET

    msg_signature = ET.fromstring(encrypted).findtext("MsgSignature") or ""
    query = signed_query(token, int(stamp), "nonce42", encrypt_type="aes",
                         msg_signature=msg_signature)
    resp = await e.client.post(f"/wechat/{account}", params=query, data=encrypted.encode())
    return resp.status, await resp.text()


# --- tests -------------------------------------------------------------------------


async def test_get_verification(wechat: Edge) -> None:
    now = int(wechat.clock.now())
    ok = await wechat.client.get("/wechat/shop", params=signed_query(TOKEN, now, echostr="e42"))
    assert ok.status == 200
    assert await ok.text() == "e42"
    bad = await wechat.client.get(
        "/wechat/shop", params=signed_query("wrong", now, echostr="e42")
    )
    assert bad.status == 401
    assert wechat.value("omni_adapter_rejected_total", channel="wechat", account="shop",
                        reason="bad_signature") == 1


async def test_plain_text_end_to_end_with_pii_masked(wechat: Edge, topics_ready: Settings) -> None:
    now = int(wechat.clock.now())
    body = text_xml("快递三天没到，电话13812345678", msg_id="777", create_time=now)
    resp = await wechat.client.post(
        "/wechat/shop", params=signed_query(TOKEN, now), data=body.encode()
    )
    assert resp.status == 200
    assert await resp.text() == "success"
    [env] = envelopes(await consume(topics_ready, topics.INBOUND, until=1))
    assert env.channel is Channel.WECHAT
    assert env.account == "shop"
    assert env.channel_msg_id == "777"
    assert env.customer.id == "oUser1"
    assert env.conversation_id == "wechat:shop:oUser1"
    assert env.text == "快递三天没到，电话138****5678"
    assert env.meta["pii_masked_phone"] == 1
    assert env.sent_at_ms == now * 1000
    assert env.received_at_ms == int(wechat.clock.now() * 1000)
    assert wechat.value("omni_adapter_accepted_total", channel="wechat", account="shop") == 1
    assert wechat.value("omni_adapter_pii_masked_total", channel="wechat", kind="phone") == 1
    assert wechat.value("omni_adapter_ack_latency_seconds_count", channel="wechat") == 1


async def test_safe_mode_encrypted_by_wechatpy(wechat: Edge, topics_ready: Settings) -> None:
    status, text = await post_encrypted(wechat, "secure", text_xml("我要退款", msg_id="8001"))
    assert (status, text) == (200, "success")
    [env] = envelopes(await consume(topics_ready, topics.INBOUND, until=1))
    assert env.text == "我要退款"
    assert env.account == "secure"


async def test_published_vector_verifies(topics_ready: Settings, aredis: Redis) -> None:
    clock = FixedClock(SAMPLE_TIMESTAMP + 10)
    async with edge(topics_ready, aredis, [make_installer(WeChatConfig(), accounts())], clock) as e:
        query = {"timestamp": str(SAMPLE_TIMESTAMP), "nonce": SAMPLE_NONCE,
                 "encrypt_type": "aes", "msg_signature": SAMPLE_MSG_SIGNATURE}
        resp = await e.client.post("/wechat/sample", params=query, data=SAMPLE_BODY.encode())
        assert resp.status == 200, await resp.text()
        [env] = envelopes(await consume(topics_ready, topics.INBOUND, until=1))
        assert env.text == "hello"
        assert env.customer.id == "mycreate"
        assert env.channel_msg_id == "4561255354251345929"
        tampered = await e.client.post(
            "/wechat/sample", params={**query, "nonce": "1372623148"}, data=SAMPLE_BODY.encode()
        )
        assert tampered.status == 401


def test_cipher_matches_wechatpy_both_ways() -> None:
    ours = MessageCipher(AES_KEY, APP_ID)
    theirs = WeChatCrypto(TOKEN, AES_KEY, APP_ID)
    xml = text_xml("双向", msg_id="1")
    encrypted = ours.encrypt(xml.encode(), random16=b"0123456789abcdef")
    signer = WeChatSigner()
    signer.add_data(TOKEN, "1700000000", "n", encrypted)
    body = f"<xml><Encrypt><![CDATA[{encrypted}]]></Encrypt></xml>"
    assert theirs.decrypt_message(body, signer.signature, "1700000000", "n") == xml
    out = theirs.encrypt_message(xml, "n", "1700000000")
    from xml.etree import ElementTree as ET

    assert ours.decrypt(ET.fromstring(out).findtext("Encrypt") or "") == xml.encode()


async def test_retries_are_deduplicated(wechat: Edge, topics_ready: Settings) -> None:
    now = int(wechat.clock.now())
    body = text_xml("在吗", msg_id="555", create_time=now).encode()
    for _ in range(3):  # WeChat retries up to three times
        resp = await wechat.client.post("/wechat/shop", params=signed_query(TOKEN, now), data=body)
        assert resp.status == 200
    sentinel = text_xml("sentinel", msg_id="556", create_time=now).encode()
    await wechat.client.post("/wechat/shop", params=signed_query(TOKEN, now), data=sentinel)
    got = envelopes(await consume(topics_ready, topics.INBOUND, until=2))
    assert [e.channel_msg_id for e in got] == ["555", "556"]
    assert wechat.value("omni_adapter_duplicates_total", channel="wechat", account="shop") == 2


async def test_voice_image_events(wechat: Edge, topics_ready: Settings) -> None:
    now = int(wechat.clock.now())
    base = ("<ToUserName>gh</ToUserName><FromUserName>oU2</FromUserName>"
            f"<CreateTime>{now}</CreateTime>")
    bodies = [
        f"<xml>{base}<MsgType>voice</MsgType><MediaId>m1</MediaId><Format>amr</Format>"
        "<Recognition>订单什么时候发货</Recognition><MsgId>1</MsgId></xml>",
        f"<xml>{base}<MsgType>image</MsgType><PicUrl>http://x/p.jpg</PicUrl>"
        "<MediaId>img7</MediaId><MsgId>2</MsgId></xml>",
        f"<xml>{base}<MsgType>event</MsgType><Event>subscribe</Event>"
        "<EventKey>qrscene_live618</EventKey></xml>",
        f"<xml><ToUserName>gh</ToUserName><FromUserName>oU2</FromUserName>"
        f"<CreateTime>{now + 1}</CreateTime><MsgType>event</MsgType><Event>CLICK</Event>"
        "<EventKey>HUMAN_AGENT</EventKey></xml>",
        f"<xml><ToUserName>gh</ToUserName><FromUserName>oU2</FromUserName>"
        f"<CreateTime>{now + 2}</CreateTime><MsgType>event</MsgType>"
        "<Event>unsubscribe</Event></xml>",
    ]
    for b in bodies:
        resp = await wechat.client.post("/wechat/shop", params=signed_query(TOKEN, now),
                                        data=b.encode())
        assert (resp.status, await resp.text()) == (200, "success")
    got = envelopes(await consume(topics_ready, topics.INBOUND, until=4))
    by_type = {e.meta["msg_type"]: e for e in got if e.meta["msg_type"] != "event"}
    events = [e for e in got if e.meta["msg_type"] == "event"]
    assert by_type["voice"].text == "订单什么时候发货"
    assert by_type["voice"].attachments[0].kind == "voice"
    assert by_type["image"].attachments[0].ref == "img7"
    assert by_type["image"].meta["pic_url"] == "http://x/p.jpg"
    sub, click = sorted(events, key=lambda e: str(e.meta["event"]), reverse=True)
    assert sub.hints == ("event:subscribe", "scene:live618")
    assert sub.entry is not None
    assert sub.entry.kind is EntryKind.OTHER
    assert sub.channel_msg_id == f"oU2-{now}"  # events dedupe on FromUserName + CreateTime
    assert click.hints == ("menu:HUMAN_AGENT",)
    assert wechat.value("omni_adapter_filtered_total", channel="wechat",
                        rule="event_unsubscribe") == 1


async def test_refusals_and_nothing_unverified_reaches_kafka(
    wechat: Edge, topics_ready: Settings
) -> None:
    now = int(wechat.clock.now())
    good = text_xml("hello", create_time=now).encode()
    laughs = (b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
              b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]>'
              b"<xml><Content>&lol2;</Content></xml>")
    xxe = (b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
           b"<xml><FromUserName>&e;</FromUserName></xml>")
    cases: list[tuple[str, dict[str, str], bytes, int, str]] = [
        ("shop", signed_query("bad", now), good, 401, "bad_signature"),
        ("shop", {k: v for k, v in signed_query(TOKEN, now).items() if k != "signature"},
         good, 401, "missing_signature"),
        ("shop", signed_query(TOKEN, now - 3600), good, 401, "stale_timestamp"),
        ("shop", signed_query(TOKEN, now), laughs, 400, "hostile_xml"),
        ("shop", signed_query(TOKEN, now), xxe, 400, "hostile_xml"),
        ("shop", signed_query(TOKEN, now), b"<xml><a>", 400, "bad_xml"),
        ("shop", signed_query(TOKEN, now), b"x" * 70_000, 413, "too_large"),
        ("secure", signed_query(TOKEN, now), good, 401, "encryption_required"),
        ("nobody", signed_query(TOKEN, now), good, 404, "unknown_account"),
    ]
    for account, query, body, status, reason in cases:
        resp = await wechat.client.post(f"/wechat/{account}", params=query, data=body)
        assert resp.status == status, (reason, await resp.text())
        label = account if account != "nobody" else "-"
        assert wechat.value("omni_adapter_rejected_total", channel="wechat", account=label,
                            reason=reason) >= 1, reason
    # wrong app id: encrypted for another appid with the right key and token
    status, _ = await post_encrypted(wechat, "secure", text_xml("x"), app_id="wxOTHER")
    assert status == 401
    assert wechat.value("omni_adapter_rejected_total", channel="wechat", account="secure",
                        reason="wrong_app_id") == 1
    sentinel = text_xml("sentinel", msg_id="999", create_time=now).encode()
    resp = await wechat.client.post("/wechat/shop", params=signed_query(TOKEN, now),
                                    data=sentinel)
    assert resp.status == 200
    got = envelopes(await consume(topics_ready, topics.INBOUND, until=1))
    assert [e.text for e in got] == ["sentinel"]


async def test_broker_down_answers_503(settings: Settings, aredis: Redis) -> None:
    dead = settings.model_copy(
        update={"kafka_bootstrap": "127.0.0.1:1", "produce_timeout_s": 0.5}
    )
    cfg = WeChatConfig.model_validate({"produce_timeout_s": 1.0})
    async with edge(dead, aredis, [make_installer(cfg, accounts())]) as e:
        now = int(e.clock.now())
        started = time.monotonic()
        resp = await e.client.post("/wechat/shop", params=signed_query(TOKEN, now),
                                   data=text_xml("hi", create_time=now).encode())
        assert resp.status == 503
        assert resp.headers["Retry-After"]
        assert time.monotonic() - started < 4.5  # WeChat gives up after 5 s
        assert e.value("omni_adapter_rejected_total", channel="wechat", account="shop",
                       reason="broker_unavailable") == 1
        # nothing was marked: the retry is not mistaken for a duplicate
        assert await aredis.keys(f"{settings.redis_prefix}:seen:*") == []


async def test_secrets_never_logged(wechat: Edge, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    now = int(wechat.clock.now())
    await wechat.client.post("/wechat/shop", params=signed_query("bad", now), data=b"<xml/>")
    acc = accounts()["shop"]
    assert TOKEN not in repr(acc)
    assert AES_KEY not in repr(acc)
    assert TOKEN not in caplog.text
    assert AES_KEY not in caplog.text


def test_config_from_yaml_and_env(tmp_path: Path) -> None:
    path = tmp_path / "channels.yaml"
    path.write_text(
        "wechat:\n  timestamp_window_s: 120\n  accounts:\n"
        "    shop:\n      app_id: wx1\n      token_env: SHOP_TOKEN\n"
        "      encoding_aes_key_env: SHOP_KEY\n"
        "    missing:\n      app_id: wx2\n      token_env: NOT_SET\n",
        encoding="utf-8",
    )
    cfg = load_section(WeChatConfig, read_channels_yaml(path), str(path))
    accs = cfg.resolve({"SHOP_TOKEN": "t", "SHOP_KEY": AES_KEY}, str(path))
    assert cfg.timestamp_window_s == 120
    assert list(accs) == ["shop"]  # "missing" has no token: disabled, not fatal
    assert accs["shop"].token.get_secret_value() == "t"
    with pytest.raises(ConfigError, match="43 characters"):
        cfg.resolve({"SHOP_TOKEN": "t", "SHOP_KEY": "short"})
    bad = tmp_path / "bad.yaml"
    bad.write_text("wechat:\n  accounts:\n    x:\n      app_id: 1\n      tokn: y\n")
    with pytest.raises(ConfigError, match=r"wechat\.accounts\.x"):
        load_section(WeChatConfig, read_channels_yaml(bad), str(bad))
    assert read_channels_yaml(tmp_path / "absent.yaml") == {}


def test_shipped_channels_yaml_is_valid() -> None:
    path = Path(__file__).resolve().parent.parent / "config" / "channels.yaml"
    data = read_channels_yaml(path)
    cfg = load_section(WeChatConfig, data, str(path))
    assert cfg.accounts


async def test_install_from_shipped_config_and_env(topics_ready: Settings, aredis: Redis) -> None:
    """The real installers: config/channels.yaml names the env vars, which hold the secrets."""
    from omniroute.adapters.douyin import install as douyin_install
    from omniroute.adapters.wechat import install as wechat_install
    from omniroute.adapters.wecom import install as wecom_install

    # the process environment as read at start: only the WeChat account's secrets
    environ = {"OMNI_WECHAT_DEMO_TOKEN": SAMPLE_TOKEN, "OMNI_WECHAT_DEMO_AES_KEY": SAMPLE_AES_KEY}
    config_dir = Path(__file__).resolve().parent.parent / "config"
    shipped = topics_ready.model_copy(update={"config_dir": config_dir, "environ": environ})
    clock = FixedClock(SAMPLE_TIMESTAMP)
    async with edge(shipped, aredis, [wechat_install, wecom_install, douyin_install], clock) as e:
        query = {"timestamp": str(SAMPLE_TIMESTAMP), "nonce": SAMPLE_NONCE,
                 "encrypt_type": "aes", "msg_signature": SAMPLE_MSG_SIGNATURE}
        resp = await e.client.post("/wechat/demo", params=query, data=SAMPLE_BODY.encode())
        assert (resp.status, await resp.text()) == (200, "success")
        # the WeCom app's secrets are not set: disabled, 404, the rest keeps working
        resp = await e.client.post("/wecom/support", params=query, data=SAMPLE_BODY.encode())
        assert resp.status == 404
        resp = await e.client.post("/douyin/live", data=b"[]",
                                   headers={"x-msg-type": "live_comment"})
        assert resp.status == 401  # no secret configured for live_comment in this env
