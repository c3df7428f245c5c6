"""``omniroute sla``: the SLA worker as a process, with /metrics, /healthz and /readyz.

Parts start in dependency order (Redis -> SlaWorker -> HTTP) in one AsyncExitStack
and stop in reverse. SIGTERM/SIGINT drain: the batch in hand is committed, then a
one-line summary is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

from aiohttp import web
from prometheus_client import CollectorRegistry

from ..router.clock import Clock
from ..router.http import Readiness, add_probe_routes, serve_app
from ..router.producer import EnvelopeProducer
from ..router.redis_client import connect
from ..router.settings import Settings
from .worker import SlaWorker

__all__ = ["run_sla", "sla_service"]

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def sla_service(
    settings: Settings,
    registry: CollectorRegistry | None = None,
    clock: Clock | None = None,
) -> AsyncIterator[tuple[SlaWorker, int]]:
    """Run the SLA worker and its web endpoints (``settings.sla``); yields (worker,
    bound web port)."""
    service = settings.sla
    registry = registry or CollectorRegistry()
    async with contextlib.AsyncExitStack() as stack:
        redis = connect(settings.redis_url, socket_timeout=10)
        stack.push_async_callback(redis.aclose)
        worker = SlaWorker(settings, registry, clock, redis=redis)
        await worker.start()
        stack.push_async_callback(worker.stop)

        async def ping() -> None:
            await redis.ping()

        # readiness asks the broker through a client of its own (connected lazily, so
        # a broker that is down at start or goes away later shows as 503, not a crash)
        broker_probe = EnvelopeProducer(settings)
        stack.push_async_callback(broker_probe.stop)
        app = web.Application()
        add_probe_routes(app, registry, Readiness(
            {"redis": ping, "kafka": broker_probe.check},
            info=lambda: {"config_version": worker.holder.version}))
        _runner, port = await serve_app(stack, app, settings, service.web_port)
        log.info("SLA worker ready; metrics on http://%s:%d/metrics", settings.http_host, port)
        yield worker, port


async def run_sla(settings: Settings) -> None:
    """``omniroute sla``: until SIGTERM/SIGINT or a crashed loop."""
    loop = asyncio.get_running_loop()
    async with sla_service(settings) as (worker, _port):
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.request_stop)
        loop.add_signal_handler(signal.SIGHUP, worker.reload)  # like the router worker
        try:
            await worker.run()
        finally:
            log.info("SLA worker stopping after %d records", worker.processed)
