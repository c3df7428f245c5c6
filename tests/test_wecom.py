"""WeCom callback, end to end: published vectors, wechatpy's enterprise crypto as the sender."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from xml.etree import ElementTree as ET

import pytest
from pydantic import SecretStr
from redis.asyncio import Redis
from wechatpy.enterprise.crypto import WeChatCrypto as WeComCrypto

from omniroute.adapters.channel_config import load_section
from omniroute.adapters.wechat import WeChatAccount, make_installer, sha1_signature
from omniroute.adapters.wecom import WeComConfig
from omniroute.router import topics
from omniroute.router.exceptions import ConfigError
from omniroute.router.http import Installer
from omniroute.router.models import Channel
from omniroute.router.settings import Settings
from tests.test_wechat import (
    SAMPLE_AES_KEY,
    SAMPLE_BODY,
    SAMPLE_ID,
    SAMPLE_MSG_SIGNATURE,
    SAMPLE_NONCE,
    SAMPLE_TIMESTAMP,
    SAMPLE_TOKEN,
    Edge,
    FixedClock,
    consume,
    edge,
    envelopes,
    text_xml,
)

pytestmark = pytest.mark.integration

# Tencent's published URL-verification sample (same token / key / corp id as SAMPLE_*).
SAMPLE_GET = {
    "msg_signature": "5c45ff5e21c57e6ad56bac8758b79b1d9ac89fd3",
    "timestamp": "1409659589",
    "nonce": "263014780",
    "echostr": "P9nAzCzyDtyTWESHep1vC5X9xho/qYX3Zpb4yKa9SKld1DsH3Iyt3tP3zNdtp+4RPcs8TgAE7OaBO"
               "+FZXvnaqQ==",
}
SAMPLE_GET_PLAIN = "1616140317555161061"

# wechatpy's own test vectors (tests/test_crypto.py of wechatpy/wechatpy).
WP_TOKEN = "123456"
WP_KEY = "kWxPEV2UEDyxWpmPdKC3F4dgPDmOvfKX1HGnEUDS1aR"
WP_CORP = "wx49f0ab532d5d035a"
WP_GET = {
    "msg_signature": "dd6b9c95b495b3f7e2901bfbc76c664930ffdb96",
    "timestamp": "1411443780",
    "nonce": "437374425",
    "echostr": "4ByGGj+sVCYcvGeQYhaKIk1o0pQRNbRjxybjTGblXrBaXlTXeOo1+bXFXDQQb1o6co6Yh9Bv41n7hO"
               "chLF6p+Q==",
}
WP_POST_QUERY = {
    "msg_signature": "74d92dfeb87ba7c714f89d98870ae5eb62dff26d",
    "timestamp": "1411525903",
    "nonce": "461056294",
}
WP_POST_BODY = (
    "<xml><ToUserName><![CDATA[wx49f0ab532d5d035a]]></ToUserName>\n<Encrypt><![CDATA["
    "RgqEoJj5A4EMYlLvWO1F86ioRjZfaex/gePD0gOXTxpsq5Yj4GNglrBb8I2BAJVODGajiFnXBu7mCPatfjsu6IHCrsTyeDX"
    "zF6Bv283dGymzxh6ydJRvZsryDyZbLTE7rhnus50qGPMfp2wASFlzEgMW9z1ef/RD8XzaFYgm7iTdaXpXaG4+BiYyolBug/"
    "gYNx410cvkKR2/nPwBiT+P4hIiOAQqGp/TywZBtDh1yCF2KOd0gpiMZ5jSw3e29mTvmUHzkVQiMS6td7vXUaWOMZnYZlF3S"
    "o2SjHnwh4jYFxdgpkHHqIrH/54SNdshoQgWYEvccTKe7FS709/5t6NMxuGhcUGAPOQipvWTT4dShyqio7mlsl5noTrb++x6"
    "En749zCpQVhDpbV6GDnTbcX2e8K9QaNWHp91eBdCRxthuL0=]]></Encrypt>\n"
    "<AgentID><![CDATA[1]]></AgentID>\n</xml>"
)

TOKEN = "wecom-test-token"
KEY = "ZYXWVUTSRQPONMLKJIHGFEDCBAzyxwvutsrqponmlkj"
CORP = "ww0123456789abcdef"


def wecom_accounts() -> dict[str, WeChatAccount]:
    return {
        "support": WeChatAccount("support", CORP, SecretStr(TOKEN), SecretStr(KEY), "safe"),
        "sample": WeChatAccount("sample", SAMPLE_ID, SecretStr(SAMPLE_TOKEN),
                                SecretStr(SAMPLE_AES_KEY), "safe"),
        "wp": WeChatAccount("wp", WP_CORP, SecretStr(WP_TOKEN), SecretStr(WP_KEY), "safe"),
    }


def wecom_installer() -> Installer:
    return make_installer(WeComConfig(), wecom_accounts())


@pytest.fixture
async def wecom(topics_ready: Settings, aredis: Redis) -> AsyncIterator[Edge]:
    async with edge(topics_ready, aredis, [wecom_installer()]) as e:
        yield e


async def test_published_get_vectors(topics_ready: Settings, aredis: Redis) -> None:
    clock = FixedClock(int(SAMPLE_GET["timestamp"]))
    async with edge(topics_ready, aredis, [wecom_installer()], clock) as e:
        resp = await e.client.get("/wecom/sample", params=SAMPLE_GET)
        assert (resp.status, await resp.text()) == (200, SAMPLE_GET_PLAIN)
        clock.now_s = int(WP_GET["timestamp"])
        resp = await e.client.get("/wecom/wp", params=WP_GET)
        assert (resp.status, await resp.text()) == (200, "5927782489442352469")
        resp = await e.client.get("/wecom/wp", params={**WP_GET, "nonce": "437374424"})
        assert resp.status == 401  # wechatpy's "should fail" vector


async def test_published_post_vectors(topics_ready: Settings, aredis: Redis) -> None:
    clock = FixedClock(SAMPLE_TIMESTAMP)
    async with edge(topics_ready, aredis, [wecom_installer()], clock) as e:
        query = {"msg_signature": SAMPLE_MSG_SIGNATURE, "timestamp": str(SAMPLE_TIMESTAMP),
                 "nonce": SAMPLE_NONCE}
        resp = await e.client.post("/wecom/sample", params=query, data=SAMPLE_BODY.encode())
        assert (resp.status, await resp.text()) == (200, "success")
        clock.now_s = int(WP_POST_QUERY["timestamp"])
        resp = await e.client.post("/wecom/wp", params=WP_POST_QUERY, data=WP_POST_BODY.encode())
        assert (resp.status, await resp.text()) == (200, "success")
        got = {env.account: env for env in envelopes(
            await consume(topics_ready, topics.INBOUND, until=2))}
    assert got["sample"].channel is Channel.WECOM
    assert got["sample"].text == "hello"
    assert got["sample"].meta["agent_id"] == 218
    assert got["wp"].text == "test"
    assert got["wp"].customer.id == "messense"
    assert got["wp"].meta["agent_id"] == 1
    assert got["wp"].conversation_id == "wecom:wp:messense"


async def test_encrypted_by_wechatpy_end_to_end(wecom: Edge, topics_ready: Settings) -> None:
    now = int(wecom.clock.now())
    xml = text_xml("发票开错了，邮箱 li.lei@example.com", msg_id="42", openid="LiLei",
                   create_time=now).replace("</xml>", "<AgentID>1000002</AgentID></xml>")
    out = WeComCrypto(TOKEN, KEY, CORP).encrypt_message(xml, "abc", str(now))
    root = ET.fromstring(out)
    query = {"msg_signature": root.findtext("MsgSignature") or "", "timestamp": str(now),
             "nonce": "abc"}
    resp = await wecom.client.post("/wecom/support", params=query, data=out.encode())
    assert (resp.status, await resp.text()) == (200, "success")
    resp = await wecom.client.post("/wecom/support", params=query, data=out.encode())
    assert resp.status == 200  # retry: acknowledged, not produced again
    [env] = envelopes(await consume(topics_ready, topics.INBOUND, until=1))
    assert env.text == "发票开错了，邮箱 l***@example.com"
    assert env.meta["agent_id"] == 1000002
    assert env.meta["pii_masked_email"] == 1
    assert wecom.value("omni_adapter_duplicates_total", channel="wecom", account="support") == 1


async def test_refusals(wecom: Edge) -> None:
    now = int(wecom.clock.now())
    plain = text_xml("hi", create_time=now).encode()
    sig = sha1_signature(TOKEN, str(now), "n", "x")
    cases = [
        # plain XML, no Encrypt: WeCom is always encrypted
        ({"msg_signature": sig, "timestamp": str(now), "nonce": "n"}, plain, 400, "invalid"),
        ({"timestamp": str(now), "nonce": "n"},
         b"<xml><Encrypt>x</Encrypt></xml>", 401, "missing_signature"),
        ({"msg_signature": "0" * 40, "timestamp": str(now), "nonce": "n"},
         b"<xml><Encrypt>x</Encrypt></xml>", 401, "bad_signature"),
        ({"msg_signature": sha1_signature(TOKEN, str(now), "n", "!!notbase64"),
          "timestamp": str(now), "nonce": "n"},
         b"<xml><Encrypt>!!notbase64</Encrypt></xml>", 400, "bad_ciphertext"),
        ({"msg_signature": sig, "timestamp": str(now - 10_000), "nonce": "n"},
         b"<xml><Encrypt>x</Encrypt></xml>", 401, "stale_timestamp"),
    ]
    for query, body, status, reason in cases:
        resp = await wecom.client.post("/wecom/support", params=query, data=body)
        assert resp.status == status, (reason, await resp.text())
        assert wecom.value("omni_adapter_rejected_total", channel="wecom", account="support",
                           reason=reason) >= 1
    # a different corp's message, right token and key: wrong receive id
    out = WeComCrypto(TOKEN, KEY, "wwOTHER").encrypt_message(text_xml("x"), "n", str(now))
    root = ET.fromstring(out)
    resp = await wecom.client.post(
        "/wecom/support",
        params={"msg_signature": root.findtext("MsgSignature") or "", "timestamp": str(now),
                "nonce": "n"},
        data=out.encode(),
    )
    assert resp.status == 401
    started = time.monotonic()
    resp = await wecom.client.get("/wecom/support", params={"timestamp": str(now), "nonce": "n",
                                                            "echostr": "abc"})
    assert resp.status == 401
    assert time.monotonic() - started < 5


def test_config_requires_both_secrets() -> None:
    data = {"wecom": {"accounts": {
        "a": {"corp_id": "ww1", "token_env": "T", "encoding_aes_key_env": "K"},
        "b": {"corp_id": "ww2", "token_env": "T"},
    }}}
    accs = load_section(WeComConfig, data).resolve({"T": "tok", "K": KEY})
    assert list(accs) == ["a"]
    assert accs["a"].app_id == "ww1"
    assert accs["a"].mode == "safe"


def test_section_errors_name_file_and_key_and_never_show_a_secret() -> None:
    data = {"wecom": {"accounts": {"a": {"corp_id": "", "token": 31415926}}}}
    with pytest.raises(ConfigError) as info:
        load_section(WeComConfig, data, "config/channels.yaml")
    text = str(info.value)
    assert "config/channels.yaml: wecom.accounts.a.corp_id: String should have at least 1" in text
    assert "wecom.accounts.a.token: Input should be a valid string (got <secret>)" in text
    assert "31415926" not in text
