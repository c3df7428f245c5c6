"""/readyz tells the truth (issue 11, item 3): the ingest, the SLA worker and the router
worker answer 503 while Redis or the broker is gone, and 200 again once it is back.

Every test takes servers away, so each runs on a private Redis (tests/servers.py) and a
private Tansu broker, never on the session's shared ones.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from omniroute.adapters.http import build_http_app
from omniroute.admin import ensure_topics
from omniroute.embedded import EmbeddedProcess, free_port, start_broker
from omniroute.router.http import HttpContext
from omniroute.router.metrics import AdapterMetrics
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import Settings, SlaServiceSettings
from omniroute.sla.service import sla_service
from tests.conftest import TEST_TOKEN
from tests.servers import PrivateRedis, start_worker, stop_worker, wait_for, worker_env

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


class PrivateBroker:
    """A Tansu broker of this test's own, on a port that survives a restart."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: EmbeddedProcess | None = None

    @property
    def url(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self.server = start_broker(self.port)

    def _pid(self) -> int:
        assert self.server is not None
        assert self.server.proc is not None
        return self.server.proc.pid

    def pause(self) -> None:
        """SIGSTOP: connections stay open, requests get no answer."""
        os.kill(self._pid(), signal.SIGSTOP)

    def resume(self) -> None:
        os.kill(self._pid(), signal.SIGCONT)

    def stop(self) -> None:
        if self.server is not None:
            with contextlib.suppress(ProcessLookupError):
                self.resume()
            self.server.stop()
            self.server = None


@pytest.fixture
def private(settings: Settings, tmp_path: Path) -> Iterator[tuple[Settings, PrivateRedis,
                                                                PrivateBroker]]:
    redis = PrivateRedis(tmp_path / "redis")
    broker = PrivateBroker()
    redis.start()
    broker.start()
    try:
        yield (settings.model_copy(update={"redis_url": redis.url,
                                           "kafka_bootstrap": broker.url}), redis, broker)
    finally:
        broker.stop()
        redis.stop()


async def _until_status(get: Callable[[], Any], want: int, timeout_s: float = 30.0
                        ) -> dict[str, Any]:
    """Poll /readyz until it answers ``want``; return its body."""
    deadline = time.monotonic() + timeout_s
    last: tuple[int, dict[str, Any]] = (0, {})
    while True:
        last = await get()
        if last[0] == want:
            return last[1]
        assert time.monotonic() < deadline, f"/readyz stayed {last}, wanted {want}"
        await asyncio.sleep(0.1)


def _problems(body: dict[str, Any]) -> str:
    return " | ".join(body.get("problems", []))


async def _outages(get: Callable[[], Any], redis: PrivateRedis, broker: PrivateBroker,
                   *, restart_broker: bool) -> None:
    """Ready; Redis killed -> 503 naming redis -> back; Redis shut down cleanly -> the same;
    broker paused -> 503 naming kafka -> back; optionally the broker stopped and started
    again on the same port."""
    await _until_status(get, 200)
    for take_away in (redis.kill, redis.stop):  # a crash (SIGKILL), then a clean SIGTERM
        take_away()
        body = await _until_status(get, 503)
        assert "redis" in _problems(body)
        redis.start()
        await _until_status(get, 200)

    broker.pause()
    try:
        body = await _until_status(get, 503)
        assert "kafka" in _problems(body)
    finally:
        broker.resume()
    await _until_status(get, 200)

    if restart_broker:
        broker.stop()
        body = await _until_status(get, 503)
        assert "kafka" in _problems(body)
        broker.start()
        await _until_status(get, 200)


@contextlib.asynccontextmanager
async def _ingest(settings: Settings) -> AsyncIterator[TestClient[Any, Any]]:
    redis = Redis.from_url(settings.redis_url, socket_timeout=5)
    producer = EnvelopeProducer(settings)
    ctx = HttpContext(settings, producer, AdapterMetrics(CollectorRegistry()), redis)
    client: TestClient[Any, Any] = TestClient(TestServer(build_http_app(ctx)))
    await client.start_server()
    try:
        yield client
    finally:
        await client.close()
        await producer.stop()
        await redis.aclose()


async def test_ingest_readiness_follows_redis_and_the_broker_after_the_first_connection(
    private: tuple[Settings, PrivateRedis, PrivateBroker],
) -> None:
    settings, redis, broker = private
    await ensure_topics(settings)
    async with _ingest(settings) as client:

        async def get() -> tuple[int, dict[str, Any]]:
            resp = await client.get("/readyz")
            return resp.status, await resp.json()

        # connected and producing first: the outage comes after the first connection
        msg = {"channel_msg_id": "m1", "customer": {"id": "c1"}, "text": "在吗"}
        assert (await client.post("/v1/messages", json=msg, headers=AUTH)).status == 202
        await _outages(get, redis, broker, restart_broker=True)
        # the broker restarted with empty (memory) storage: topics again, then it takes traffic
        await ensure_topics(settings)
        msg["channel_msg_id"] = "m2"
        assert (await client.post("/v1/messages", json=msg, headers=AUTH)).status == 202


async def test_ingest_is_not_ready_when_the_broker_was_never_there(settings: Settings) -> None:
    down = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{free_port()}",
                                       "produce_timeout_s": 1.0})
    async with _ingest(down) as client:
        resp = await client.get("/readyz")
        assert resp.status == 503
        assert "kafka" in _problems(await resp.json())


async def test_sla_worker_readiness_sees_redis_and_the_broker(
    private: tuple[Settings, PrivateRedis, PrivateBroker],
) -> None:
    settings, redis, broker = private
    await ensure_topics(settings)
    settings = settings.model_copy(update={"sla": SlaServiceSettings.model_validate(
        {"OMNI_SLA_WEB_PORT": 0, "OMNI_SLA_TICK_S": 60})})
    async with sla_service(settings) as (_worker, port), aiohttp.ClientSession() as http:

        async def get() -> tuple[int, dict[str, Any]]:
            async with http.get(f"http://127.0.0.1:{port}/readyz") as resp:
                return resp.status, await resp.json()

        await _outages(get, redis, broker, restart_broker=False)


def _http_get(url: str) -> tuple[int, dict[str, Any]]:
    import json

    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"{}")
    except OSError:
        return 0, {}


@pytest.mark.e2e
async def test_router_worker_readiness_sees_redis_and_the_broker(
    private: tuple[Settings, PrivateRedis, PrivateBroker], tmp_path: Path,
) -> None:
    settings, redis, broker = private
    await ensure_topics(settings)
    env = worker_env(settings)
    url = f"http://127.0.0.1:{env['OMNI_WORKER_WEB_PORT']}/readyz"
    log = tmp_path / "worker.log"
    proc = start_worker(env, log)
    try:
        await asyncio.to_thread(wait_for, lambda: _http_get(url)[0] == 200, 90, proc, log,
                                "the worker's first 200 on /readyz")

        async def get() -> tuple[int, dict[str, Any]]:
            assert proc.poll() is None, f"worker exited:\n{log.read_text()[-3000:]}"
            return await asyncio.to_thread(_http_get, url)

        await _outages(get, redis, broker, restart_broker=False)
        # the broker gone for good (stopped, not paused): the worker must say so too
        broker.stop()
        body = await _until_status(get, 503)
        assert "kafka" in _problems(body)
        # SIGTERM with the broker gone still stops the worker cleanly well inside a
        # supervisor's usual 30 s grace: faust's own consumer (which routing does not
        # read through) gets FAUST_CONSUMER_STOP_S to stop instead of mode's 60 s.
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            code = await asyncio.to_thread(proc.wait, 30)
        except subprocess.TimeoutExpired:
            pytest.fail(f"no exit 30 s after SIGTERM with the broker down:\n"
                        f"{log.read_text()[-3000:]}")
        assert code == 0, log.read_text()[-3000:]
    finally:
        stop_worker(proc)
