"""Property tests: hostile bodies, headers and query strings never cause a 5xx.

Every endpoint of the WeChat, WeCom and Douyin adapters is fed random and
hostile input, both unsigned and correctly signed (so that parsing and
decryption are reached). With the broker up there is no 5xx at all (no 503
either); every refusal is a specific 4xx in the project's JSON error form. After
the storm the app still serves a valid request. Each test has a fixed example budget
and a per-example deadline (tests/fuzz_profile.py); inputs of issue 11 that
concern parsing are pinned with ``@example``.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from typing import Any

import orjson
import pytest
from aiohttp import ClientResponse
from hypothesis import example, given
from hypothesis import strategies as st
from redis.asyncio import Redis

from omniroute.adapters.douyin import DouyinConfig
from omniroute.adapters.douyin import make_installer as douyin_installer
from omniroute.adapters.wechat import MessageCipher, WeChatConfig, sha1_signature
from omniroute.adapters.wechat import make_installer as callback_installer
from omniroute.adapters.wecom import WeComConfig
from omniroute.router.settings import Settings
from tests.fuzz_profile import fuzz_settings
from tests.helpers import json_error
from tests.test_douyin import SECRETS, douyin_sign, secrets
from tests.test_wechat import AES_KEY, APP_ID, TOKEN, Edge, accounts, edge, text_xml
from tests.test_wecom import CORP, KEY, wecom_accounts
from tests.test_wecom import TOKEN as WECOM_TOKEN

pytestmark = pytest.mark.integration

FUZZ = fuzz_settings(max_examples=120)
# Issue 11, item 11: GBK bytes where UTF-8 is expected
GBK_XML = ("<xml><ToUserName>gh</ToUserName><FromUserName>u</FromUserName><CreateTime>1"
           "</CreateTime><MsgType>text</MsgType><Content>主播好美，退款呢</Content>"
           "<MsgId>1</MsgId></xml>").encode("gbk")
GBK_JSON = '[{"msg_id": "g1", "sec_openid": "v", "content": "主播好美"}]'.encode("gbk")
# Issue 11, item 1: JSON types where another is expected (true / 5 / 1.5 for a list)
WRONG_TYPES = (b'[{"msg_id": true, "sec_openid": 5, "content": 1.5, "timestamp": "x",'
               b' "gift_num": [1], "like_num": 1e400}]')

HOSTILE_XML = [
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol1 '
    b'"&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;"><!ENTITY lol2 '
    b'"&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;&lol1;">]><xml><Content>&lol2;'
    b"</Content></xml>",
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b"<xml><Content>&e;</Content></xml>",
    b'<?xml version="1.0"?><!DOCTYPE x SYSTEM "http://127.0.0.1:1/evil.dtd"><xml/>',
    b'<xml xmlns:xi="http://www.w3.org/2001/XInclude"><xi:include href="/etc/passwd"/></xml>',
    b'<?xml version="1.0" encoding="klingon"?><xml/>',
    b"<xml>" + b"<a>" * 5000 + b"</a>" * 5000 + b"</xml>",
    b"<xml>" + b"<F>x</F>" * 200 + b"</xml>",
    b"<xml><FromUserName>u</FromUserName><CreateTime>-1</CreateTime><MsgType>text</MsgType>"
    b"<Content>x</Content></xml>",
    b"<xml><FromUserName>u</FromUserName><CreateTime>99999999999999999999</CreateTime>"
    b"<MsgType>text</MsgType><Content>x</Content></xml>",
    b"<xml><FromUserName>u</FromUserName><CreateTime>1</CreateTime><MsgType>event</MsgType>"
    b"</xml>",
    b"\xef\xbb\xbf<xml><Encrypt>\x00\xff</Encrypt></xml>",
    b"",
]

xml_field = st.sampled_from(
    ["ToUserName", "FromUserName", "CreateTime", "MsgType", "Content", "MsgId", "Event",
     "EventKey", "Recognition", "MediaId", "PicUrl", "AgentID", "Encrypt", "x"]
)
xml_value = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["text", "voice", "image", "event", "subscribe", "CLICK", "1", "0", "-5"]),
)


@st.composite
def xml_bodies(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.sampled_from(HOSTILE_XML))
    if kind == 1:
        return draw(st.binary(max_size=600))
    fields = draw(st.lists(st.tuples(xml_field, xml_value), max_size=10))
    inner = "".join(
        f"<{k}><![CDATA[{v.replace(']]>', '')}]]></{k}>" for k, v in fields
    )
    return f"<xml>{inner}</xml>".encode("utf-8", "surrogatepass")


query_value = st.one_of(st.text(max_size=30), st.sampled_from(["aes", "raw", "", "0" * 40]))
queries = st.dictionaries(
    st.sampled_from(["signature", "timestamp", "nonce", "echostr", "encrypt_type",
                     "msg_signature", "openid", "zzz"]),
    query_value,
    max_size=7,
)


def _clean(q: dict[str, str]) -> dict[str, str]:
    # Surrogates cannot be sent in a URL at all; the server never sees them.
    return {k: v.encode("utf-8", "ignore").decode() for k, v in q.items()}


@pytest.fixture
async def app(topics_ready: Settings, aredis: Redis) -> AsyncIterator[Edge]:
    installers = [
        callback_installer(WeChatConfig(), accounts()),
        callback_installer(WeComConfig(), wecom_accounts()),
        douyin_installer(DouyinConfig.model_validate({"max_body_bytes": 16_384}), secrets()),
    ]
    async with edge(topics_ready, aredis, installers) as e:
        yield e


# what each route may answer for bad input (reason -> status), nothing else
CALLBACK_REASONS = {  # WeChat and WeCom
    "empty": 400, "bad_xml": 400, "hostile_xml": 400, "invalid": 400, "bad_ciphertext": 400,
    "encryption_not_configured": 400, "missing_signature": 401, "bad_signature": 401,
    "bad_timestamp": 401, "stale_timestamp": 401, "wrong_app_id": 401,
    "encryption_required": 401, "unknown_account": 404, "too_large": 413,
}
DOUYIN_REASONS = {
    "bad_json": 400, "invalid": 400, "unknown_msg_type": 400, "missing_signature": 401,
    "bad_signature": 401, "bad_timestamp": 401, "stale_timestamp": 401,
    "auth_not_configured": 401, "batch_too_large": 413, "too_large": 413,
}


async def _check(resp: ClientResponse, reasons: dict[str, int]) -> None:
    """A 2xx, or a known 4xx in the JSON error form; never a 5xx (the broker is up).

    Douyin's form is its own (docs/channels-wechat-douyin.md): ``{"err_no": <status>,
    "err_msg": <reason>, "message"}``; WeChat and WeCom answer ``{"error", "message"}``.
    """
    if 200 <= resp.status < 300:
        return
    assert 400 <= resp.status < 500, (resp.status, await resp.text())
    if reasons is not DOUYIN_REASONS:
        await json_error(resp, reasons)
        return
    assert resp.content_type == "application/json", (resp.status, await resp.text())
    body = await resp.json()
    assert set(body) == {"err_no", "err_msg", "message"}, body
    assert body["err_no"] == resp.status == reasons.get(body["err_msg"]), (resp.status, body)
    assert isinstance(body["message"], str)
    assert body["message"]


@FUZZ
@given(body=xml_bodies(), query=queries, signed=st.booleans(), account=st.sampled_from(
    ["shop", "shop", "shop", "secure", "nobody", "%00", "a" * 300]))
@example(body=GBK_XML, query={}, signed=True, account="shop")
async def test_wechat_post_fuzz(app: Edge, body: bytes, query: dict[str, str], signed: bool,
                                account: str) -> None:
    q = _clean(query)
    if signed:
        ts, nonce = str(int(app.clock.now())), q.get("nonce", "n")
        q.update(timestamp=ts, nonce=nonce, signature=sha1_signature(TOKEN, ts, nonce))
    resp = await app.client.post(f"/wechat/{account}", params=q, data=body)
    await _check(resp, CALLBACK_REASONS)


@FUZZ
@given(query=queries, account=st.sampled_from(["shop", "support", "x"]),
       path=st.sampled_from(["wechat", "wecom"]))
async def test_get_verification_fuzz(app: Edge, query: dict[str, str], account: str,
                                     path: str) -> None:
    resp = await app.client.get(f"/{path}/{account}", params=_clean(query))
    await _check(resp, CALLBACK_REASONS)


@FUZZ
@given(encrypt=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.hex())),
       inner=xml_bodies(), use_cipher=st.booleans(), path=st.sampled_from(["wecom", "wechat"]))
async def test_encrypted_fuzz(app: Edge, encrypt: str, inner: bytes, use_cipher: bool,
                              path: str) -> None:
    """Correctly signed ciphertext: garbage, or garbage XML encrypted with the right key."""
    token, key, rid, account = ((WECOM_TOKEN, KEY, CORP, "support") if path == "wecom"
                                else (TOKEN, AES_KEY, APP_ID, "secure"))
    if use_cipher:
        encrypt = MessageCipher(key, rid).encrypt(inner)
    encrypt = encrypt.replace("]]>", "").encode("utf-8", "ignore").decode()
    ts, nonce = str(int(app.clock.now())), "n1"
    q = {"timestamp": ts, "nonce": nonce, "encrypt_type": "aes",
         "msg_signature": sha1_signature(token, ts, nonce, encrypt.strip())}
    body = f"<xml><Encrypt><![CDATA[{encrypt}]]></Encrypt></xml>".encode()
    resp = await app.client.post(f"/{path}/{account}", params=q, data=body)
    await _check(resp, CALLBACK_REASONS)


json_item = st.dictionaries(
    st.sampled_from(["msg_id", "sec_openid", "content", "nickname", "avatar_url", "timestamp",
                     "gift_num", "like_num", "gift_value", "x"]),
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
              st.text(max_size=30), st.lists(st.integers(), max_size=2)),
    max_size=8,
)


def _dumps(value: object) -> bytes:
    # stdlib json: also writes integers beyond 64 bits and Infinity, which orjson refuses
    return json.dumps(value).encode("utf-8", "surrogatepass")


valid_item = st.fixed_dictionaries(
    {"msg_id": st.text(min_size=1, max_size=20), "sec_openid": st.text(min_size=1, max_size=20),
     "content": st.text(max_size=80)},
    optional={"nickname": st.text(max_size=20), "timestamp": st.integers(0, 10**14),
              "gift_num": st.integers(0, 1000), "like_num": st.integers(0, 1000),
              "gift_value": st.floats(0, 1e6)},
)
json_bodies = st.one_of(
    st.lists(valid_item, max_size=30).map(_dumps),
    st.binary(max_size=300),
    st.lists(json_item, max_size=20).map(_dumps),
    st.lists(st.one_of(st.integers(), st.text(max_size=5)), max_size=5).map(_dumps),
    st.dictionaries(st.text(max_size=5), st.integers(), max_size=3).map(_dumps),
)
header_value = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)


@FUZZ
@given(body=json_bodies, msg_type=st.sampled_from(
    ["live_comment", "live_comment", "live_gift", "live_like", "live_fansclub", "", "x"]),
    headers=st.dictionaries(st.sampled_from(["x-roomid", "x-nonce-str", "x-timestamp",
                                             "x-signature", "x-other"]), header_value,
                            max_size=5),
    signed=st.sampled_from([True, True, True, False]))
@example(body=GBK_JSON, msg_type="live_comment", headers={}, signed=True)
@example(body=WRONG_TYPES, msg_type="live_comment", headers={}, signed=True)
@example(body=WRONG_TYPES, msg_type="live_gift", headers={}, signed=True)
async def test_douyin_fuzz(app: Edge, body: bytes, msg_type: str, headers: dict[str, str],
                           signed: bool) -> None:
    h: dict[str, Any] = {"x-msg-type": msg_type, **headers}
    if signed:
        h["x-roomid"] = "r1"
        h.setdefault("x-nonce-str", "n")
        h["x-timestamp"] = str(int(time.time() * 1000))
        h["x-signature"] = douyin_sign(h, body, SECRETS.get(msg_type, "nope"))
    resp = await app.client.post("/douyin/live", data=body, headers=h)
    await _check(resp, DOUYIN_REASONS)


async def test_still_serving_after_hostile_input(app: Edge) -> None:
    for body in HOSTILE_XML:
        resp = await app.client.post("/wechat/shop", params={"x": "1"}, data=body)
        await _check(resp, CALLBACK_REASONS)
    now = int(app.clock.now())
    ok = await app.client.post(
        "/wechat/shop",
        params={"timestamp": str(now), "nonce": "n",
                "signature": sha1_signature(TOKEN, str(now), "n")},
        data=text_xml("还在服务吗", create_time=now).encode(),
    )
    assert (ok.status, await ok.text()) == (200, "success")
    body = orjson.dumps([{"msg_id": "alive", "sec_openid": "v", "content": "还有货吗"}])
    h = {"x-roomid": "r1", "x-msg-type": "live_comment", "x-nonce-str": "n",
         "x-timestamp": str(int(time.time() * 1000))}
    h["x-signature"] = douyin_sign(h, body, SECRETS["live_comment"])
    resp = await app.client.post("/douyin/live", data=body, headers=h)
    assert resp.status == 200
