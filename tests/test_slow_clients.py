"""Slow clients and a stalled broker, over real sockets (issue 11, items 6 and 10).

- Connections that trickle a body hold no in-flight slot: genuine signed pushes and
  authenticated ingest requests are served while they last, and each trickler gets a
  408 in the JSON error form once the body deadline passes.
- Connections that trickle their headers are closed by the header deadline.
- With the broker frozen (SIGSTOP of a private Tansu), every request answers 503
  within the produce deadline plus a small margin, also while the producer is still
  connecting and several requests wait for it.

The server is built as ``omniroute serve`` builds it (``http_server_options``); aiohttp's
TestServer is not used because it cancels handlers on disconnect, which production
does not.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import aiohttp
import orjson
import pytest
from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from omniroute.adapters.douyin import make_installer as douyin_installer
from omniroute.adapters.generic import install as generic_installer
from omniroute.adapters.http import build_http_app
from omniroute.admin import ensure_topics
from omniroute.embedded import EmbeddedProcess, start_broker
from omniroute.router.http import HttpContext, Installer, http_server_options
from omniroute.router.metrics import AdapterMetrics
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import Settings
from tests.conftest import TEST_TOKEN
from tests.helpers import eventually
from tests.test_douyin import comment, config, push_headers, secrets

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}", "Content-Type": "application/json"}
TRICKLERS = 40  # more than Douyin's 32 slots and the app's limit below
TRICKLE_EVERY_S = 0.2  # pace of the slow client's bytes, not a synchronisation


@dataclass
class Served:
    """The adapters' app on a real socket, as ``omniroute serve`` runs it."""

    port: int
    metrics: AdapterMetrics
    entered: int = 0  # requests whose handler started (head parsed)
    url: str = field(init=False)

    def __post_init__(self) -> None:
        self.url = f"http://127.0.0.1:{self.port}"

    def value(self, name: str, **labels: str) -> float:
        v = self.metrics.registry.get_sample_value(name, labels)
        return 0.0 if v is None else v


@asynccontextmanager
async def running(settings: Settings, redis: Redis | None,
                  installers: Sequence[Installer]) -> AsyncIterator[Served]:
    metrics = AdapterMetrics(CollectorRegistry())
    producer = EnvelopeProducer(settings)
    app = build_http_app(HttpContext(settings, producer, metrics, redis), list(installers))
    served: Served | None = None

    @web.middleware
    async def seen(request: web.Request, handler: Handler) -> web.StreamResponse:
        assert served is not None
        served.entered += 1  # observation only: lets the test wait for the tricklers
        return await handler(request)

    app.middlewares.append(seen)
    runner = web.AppRunner(app, **http_server_options(settings))
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        served = Served(runner.addresses[0][1], metrics)
        yield served
    finally:
        await runner.cleanup()
        await producer.stop()


async def trickle_body(port: int, path: str, headers: dict[str, str]) -> bytes:
    """Announce a 4 KiB body and send it a byte at a time; return the status line."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 4096\r\n"
    head += "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    writer.write(head.encode() + b"\r\n[")
    status = asyncio.ensure_future(reader.readline())
    try:
        while not status.done():
            with contextlib.suppress(ConnectionError):
                writer.write(b" ")
                await writer.drain()
            await asyncio.wait([status], timeout=TRICKLE_EVERY_S)
        return status.result()
    finally:
        status.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def trickle_head(port: int) -> float:
    """Send a request head a byte at a time; seconds until the server closed on us."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    closed = asyncio.ensure_future(reader.read())  # b"" at EOF
    head = b"POST /v1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: " + b"a" * 10_000
    try:
        for byte in head:
            if closed.done():
                break
            with contextlib.suppress(ConnectionError):
                writer.write(bytes([byte]))
                await writer.drain()
            await asyncio.wait([closed], timeout=TRICKLE_EVERY_S)
        assert closed.done(), "the server never closed a connection whose head never ended"
        with contextlib.suppress(ConnectionError):
            assert closed.result() == b""  # closed, not answered
        return time.monotonic() - started
    finally:
        closed.cancel()
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def test_trickled_bodies_do_not_lock_out_signed_pushes(
    topics_ready: Settings, aredis: Redis
) -> None:
    settings = topics_ready.model_copy(update={"max_in_flight": 8, "http_body_timeout_s": 6.0})
    douyin = douyin_installer(config(), secrets())  # 32 slots
    async with running(settings, aredis, [douyin, generic_installer]) as app:
        unsigned = {"x-roomid": "7300001", "x-msg-type": "live_comment",
                    "x-timestamp": str(int(time.time() * 1000)), "x-nonce-str": "n",
                    "x-signature": "forged", "Content-Type": "application/json"}
        tricklers = [asyncio.ensure_future(trickle_body(app.port, "/douyin/live", unsigned))
                     for _ in range(TRICKLERS)]
        await eventually(lambda: app.entered >= TRICKLERS, 20)

        async with aiohttp.ClientSession() as http:
            async def push(n: int) -> int:
                body = orjson.dumps([comment(f"slow{n}", "退款怎么还没到")])
                async with http.post(f"{app.url}/douyin/live", data=body,
                                     headers=push_headers(body)) as resp:
                    return resp.status

            statuses = await asyncio.gather(*(push(n) for n in range(6)))  # < the limit, 8
            async with http.post(f"{app.url}/v1/messages", headers=AUTH, data=orjson.dumps(
                    {"channel_msg_id": "slow-api", "customer": {"id": "c"},
                     "text": "订单没到"})) as resp:
                api_status = resp.status
        assert not any(t.done() for t in tricklers), "the tricklers ended before the check"
        assert statuses == [200] * 6
        assert api_status == 202
        assert app.value("omni_adapter_rejected_total", channel="livestream", account="7300001",
                         reason="overloaded") == 0

        # the body deadline ends every trickler with a 408 (Douyin's error form)
        lines = await asyncio.gather(*tricklers)
        assert all(line.startswith(b"HTTP/1.1 408") for line in lines), set(lines)
        assert app.value("omni_adapter_rejected_total", channel="livestream", account="-",
                         reason="body_timeout") == TRICKLERS


async def test_body_deadline_answers_408_in_the_json_error_form(topics_ready: Settings) -> None:
    settings = topics_ready.model_copy(update={"http_body_timeout_s": 1.0})
    async with running(settings, None, [generic_installer]) as app:
        reader, writer = await asyncio.open_connection("127.0.0.1", app.port)
        writer.write(b"POST /v1/messages HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                     b"Content-Type: application/json\r\nAuthorization: Bearer "
                     + TEST_TOKEN.encode() + b"\r\n\r\n{")
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert head.startswith(b"HTTP/1.1 408"), head
        length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                          if line.lower().startswith(b"content-length")))
        body = orjson.loads(await reader.readexactly(length))
        writer.close()
        assert body["error"] == "body_timeout"
        assert "1 s" in body["message"]
        assert app.value("omni_adapter_rejected_total", channel="api", account="-",
                         reason="body_timeout") == 1


async def test_slow_headers_are_closed_by_the_header_deadline(topics_ready: Settings) -> None:
    timeout_s = 1.0
    settings = topics_ready.model_copy(update={"http_header_timeout_s": timeout_s})
    async with running(settings, None, [generic_installer]) as app:
        held = await asyncio.gather(*(trickle_head(app.port) for _ in range(50)))
        # aiohttp checks its timer once a second at most; the head was never complete
        assert max(held) < timeout_s + 3.0, max(held)
        assert app.entered == 0
        async with aiohttp.ClientSession() as http:  # a normal client is served as before
            for n in range(2):  # the second one on the kept-alive connection
                async with http.post(f"{app.url}/v1/messages", headers=AUTH, data=orjson.dumps(
                        {"channel_msg_id": f"h{n}", "customer": {"id": "c"},
                         "text": "订单没到"})) as resp:
                    assert resp.status == 202, await resp.text()


async def test_the_sla_service_cuts_slow_headers_too(topics_ready: Settings) -> None:
    """``omniroute sla`` serves /metrics and /readyz with the same server options."""
    from omniroute.router.settings import SlaServiceSettings
    from omniroute.sla.service import sla_service

    timeout_s = 1.0
    settings = topics_ready.model_copy(update={
        "http_header_timeout_s": timeout_s,
        "sla": SlaServiceSettings.model_validate({"OMNI_SLA_WEB_PORT": 0})})
    async with sla_service(settings) as (_worker, port):
        held = await asyncio.gather(*(trickle_head(port) for _ in range(10)))
        assert max(held) < timeout_s + 3.0, max(held)
        async with aiohttp.ClientSession() as http, \
                http.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200


@pytest.fixture
def frozen_broker() -> Iterator[EmbeddedProcess]:
    """A private Tansu that the test may freeze; never left frozen."""
    with start_broker() as server:
        try:
            yield server
        finally:
            if server.proc is not None and server.proc.poll() is None:
                os.kill(server.proc.pid, signal.SIGCONT)


async def test_a_503_comes_within_the_produce_deadline(
    settings: Settings, frozen_broker: EmbeddedProcess
) -> None:
    deadline_s, margin_s = 2.0, 1.0
    settings = settings.model_copy(update={"kafka_bootstrap": frozen_broker.url,
                                           "produce_timeout_s": deadline_s})
    await ensure_topics(settings)
    assert frozen_broker.proc is not None

    async def post(http: aiohttp.ClientSession, url: str, n: str) -> tuple[int, float]:
        started = time.monotonic()
        async with http.post(f"{url}/v1/messages", headers=AUTH, data=orjson.dumps(
                {"channel_msg_id": n, "customer": {"id": "c"}, "text": "订单没到"})) as resp:
            return resp.status, time.monotonic() - started

    # 1. connected producer, broker frozen mid-life
    async with running(settings, None, [generic_installer]) as app, \
            aiohttp.ClientSession() as http:
        assert (await post(http, app.url, "d0"))[0] == 202
        os.kill(frozen_broker.proc.pid, signal.SIGSTOP)
        try:
            answers = await asyncio.gather(*(post(http, app.url, f"d{i}") for i in (1, 2, 3)))
        finally:
            os.kill(frozen_broker.proc.pid, signal.SIGCONT)
        assert [s for s, _ in answers] == [503] * 3
        assert max(t for _, t in answers) < deadline_s + margin_s, answers

    # 2. the producer has not connected yet; several requests wait for the one connect
    os.kill(frozen_broker.proc.pid, signal.SIGSTOP)
    try:
        async with running(settings, None, [generic_installer]) as app, \
                aiohttp.ClientSession() as http:
            answers = await asyncio.gather(*(post(http, app.url, f"e{i}") for i in range(4)))
            again = await post(http, app.url, "e9")  # while the first connect still runs
            os.kill(frozen_broker.proc.pid, signal.SIGCONT)
            assert [s for s, _ in answers] == [503] * 4
            assert max(t for _, t in [*answers, again]) < deadline_s + margin_s, answers
            # a 503 means "retry with the same channel_msg_id": once the broker is back
            # the retry goes through
            retry = await post(http, app.url, "e0")
            assert retry[0] == 202, retry
    finally:
        os.kill(frozen_broker.proc.pid, signal.SIGCONT)
