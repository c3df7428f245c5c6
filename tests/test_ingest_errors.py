"""Clear errors and quiet logs at the HTTP edge (issue 11, item 11).

Each refusal names the real problem in the project's JSON form ``{"error", "message"}``
with its status; WeChat and WeCom keep ``success`` for WeChat but answer errors in
that form; a client that goes away mid-body is counted and logged below ERROR,
without a traceback. Real broker, real Redis, real sockets.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import aiohttp
import orjson
import pytest
from redis.asyncio import Redis

from omniroute.adapters.generic import install as generic_installer
from omniroute.adapters.wechat import make_installer as wechat_installer
from omniroute.adapters.wechat.config import WeChatConfig
from omniroute.router.settings import Settings
from tests.conftest import TEST_TOKEN
from tests.helpers import eventually
from tests.test_slow_clients import running
from tests.test_wechat import TOKEN, Edge, accounts, edge, signed_query, text_xml
from tests.test_wecom import wecom_installer

pytestmark = pytest.mark.integration
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
JSON = {**AUTH, "Content-Type": "application/json"}


def message(n: str, **extra: object) -> dict[str, object]:
    return {"channel_msg_id": n, "customer": {"id": "c1"}, "text": "订单还没到", **extra}


@pytest.fixture
async def api(topics_ready: Settings, aredis: Redis) -> AsyncIterator[Edge]:
    async with edge(topics_ready, aredis, [generic_installer]) as e:
        yield e


async def error(resp: object, status: int, reason: str) -> str:
    """The answer is ``{"error": reason, "message": ...}`` with ``status``; the message."""
    from aiohttp import ClientResponse

    assert isinstance(resp, ClientResponse)
    text = await resp.text()
    assert (resp.status, resp.content_type) == (status, "application/json"), text
    body = orjson.loads(text)
    assert set(body) == {"error", "message"}, body
    assert body["error"] == reason, body
    return str(body["message"])


async def test_nan_amount_is_named_as_such(api: Edge) -> None:
    for bad in ("NaN", "nan", "Infinity", "-inf"):
        resp = await api.client.post(
            "/v1/messages", json=message("nan1", order={"id": "o1", "amount": bad}), headers=AUTH
        )
        text = await error(resp, 400, "invalid")
        assert "order.amount" in text, text
        assert "finite number" in text, text
        assert "less than" not in text, text
    # a real amount still passes, and so does the bound's own message for a real number
    ok = await api.client.post(
        "/v1/messages", json=message("nan2", order={"id": "o1", "amount": 268.0}), headers=AUTH
    )
    assert ok.status == 202, await ok.text()
    big = await api.client.post(
        "/v1/messages", json=message("nan3", order={"id": "o1", "amount": 1e13}), headers=AUTH
    )
    assert "less than" in await error(big, 400, "invalid")


async def test_gbk_body_is_reported_as_not_utf8(api: Edge) -> None:
    body = orjson.dumps(message("gbk1")).decode().encode("gbk")
    resp = await api.client.post("/v1/messages", data=body, headers=JSON)
    text = await error(resp, 400, "not_utf8")
    assert "not UTF-8" in text, text
    assert "surrogates" not in text, text
    assert api.value("omni_adapter_rejected_total", channel="api", account="-",
                     reason="not_utf8") == 1
    # broken JSON in UTF-8 is still bad JSON, not an encoding problem
    broken = await api.client.post("/v1/messages", data=b'{"text": "\xe9\x80\x80', headers=JSON)
    assert "not valid JSON" in await error(broken, 400, "bad_json")


async def test_wrong_content_type_is_refused_with_415(api: Edge) -> None:
    body = orjson.dumps(message("ct1"))
    for content_type in ("text/plain", "application/x-www-form-urlencoded",
                         "application/octet-stream", "application/json; charset=gbk"):
        resp = await api.client.post("/v1/messages", data=body,
                                     headers={**AUTH, "Content-Type": content_type})
        text = await error(resp, 415, "unsupported_media_type")
        assert "application/json" in text or "UTF-8" in text, text
    assert api.value("omni_adapter_rejected_total", channel="api", account="-",
                     reason="unsupported_media_type") == 4
    for n, content_type in enumerate(("application/json; charset=utf-8",
                                      "application/vnd.omni+json")):
        resp = await api.client.post("/v1/messages", data=orjson.dumps(message(f"ok{n}")),
                                     headers={**AUTH, "Content-Type": content_type})
        assert resp.status == 202, await resp.text()
    # no Content-Type at all is read as JSON
    resp = await api.client.post("/v1/messages", data=orjson.dumps(message("ok9")),
                                 headers=AUTH, skip_auto_headers=["Content-Type"])
    assert resp.status == 202, await resp.text()


async def test_wechat_errors_are_json_and_success_stays_plain(
    topics_ready: Settings, aredis: Redis
) -> None:
    async with edge(topics_ready, aredis,
                    [wechat_installer(WeChatConfig(), accounts())]) as e:
        now = int(e.clock.now())
        ok = await e.client.post("/wechat/shop", params=signed_query(TOKEN, now),
                                 data=text_xml("快递没到", msg_id="e1").encode())
        assert (ok.status, ok.content_type, await ok.text()) == (200, "text/plain", "success")
        echo = await e.client.get("/wechat/shop", params=signed_query(TOKEN, now, echostr="e7"))
        assert (echo.status, await echo.text()) == (200, "e7")

        bad_sig = await e.client.post("/wechat/shop", params=signed_query("wrong", now),
                                      data=text_xml("x", msg_id="e2").encode())
        assert "signature" in await error(bad_sig, 401, "bad_signature")
        unknown = await e.client.post("/wechat/nobody", params=signed_query(TOKEN, now),
                                      data=text_xml("x", msg_id="e3").encode())
        assert "nobody" in await error(unknown, 404, "unknown_account")
        hostile = await e.client.post("/wechat/shop", params=signed_query(TOKEN, now),
                                      data=b"<xml><Content>unclosed")
        assert hostile.status == 400
        await error(hostile, 400, (await hostile.json())["error"])
        bad_get = await e.client.get("/wechat/shop",
                                     params=signed_query("wrong", now, echostr="e8"))
        await error(bad_get, 401, "bad_signature")


async def test_wecom_errors_are_json(topics_ready: Settings, aredis: Redis) -> None:
    async with edge(topics_ready, aredis, [wecom_installer()]) as e:
        now = int(e.clock.now())
        resp = await e.client.post(
            "/wecom/sample", params={"msg_signature": "0" * 40, "timestamp": str(now),
                                     "nonce": "n"},
            data=b"<xml><Encrypt><![CDATA[AAAA]]></Encrypt></xml>",
        )
        await error(resp, 401, "bad_signature")
        missing = await e.client.get("/wecom/ghost", params={"timestamp": str(now)})
        await error(missing, 404, "unknown_account")


async def _half_body_then_close(port: int, path: str, headers: dict[str, str]) -> None:
    """Send a head announcing 1000 bytes, 10 of them, then go away."""
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 1000\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(head.encode() + b"\r\n" + b"{" * 10)
    await writer.drain()
    writer.close()
    await writer.wait_closed()


async def test_client_that_leaves_mid_body_is_counted_and_logged_quietly(
    topics_ready: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # served as in production: aiohttp's TestServer cancels the handler instead
    async with running(topics_ready, None, [generic_installer]) as app:
        for _ in range(3):
            await _half_body_then_close(app.port, "/v1/messages", JSON)

        def counted() -> bool:
            return app.value("omni_adapter_rejected_total", channel="api", account="-",
                             reason="client_disconnected") == 3

        await eventually(counted, 10)
        loud = [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
        assert not loud, [(r.name, r.levelname, r.getMessage()) for r in loud]
        quiet = [r for r in caplog.records if "went away" in r.getMessage()]
        assert len(quiet) == 3
        assert all(r.levelno == logging.INFO for r in quiet)
        async with aiohttp.ClientSession() as http, http.post(  # the app serves on
                f"{app.url}/v1/messages", json=message("after"), headers=AUTH) as resp:
            assert resp.status == 202, await resp.text()
