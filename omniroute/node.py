"""Process composition for ``omniroute serve``, ``worker`` and ``run``.

Parts start in dependency order (Redis -> producer -> HTTP) inside one
AsyncExitStack and stop in reverse; SIGTERM/SIGINT drain and log a summary.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

import faust
from aiohttp import web
from prometheus_client import CollectorRegistry

from .adapters import build_http_app, channel_installers
from .adapters.email import ImapPoller, SmtpServer
from .router.app import create_worker_app
from .router.http import HttpContext, http_server_options, serve_app
from .router.metrics import AdapterMetrics
from .router.producer import EnvelopeProducer
from .router.redis_client import connect
from .router.settings import Settings
from .sla import SlaWorker
from .sla.agent_api import install as install_agent_api
from .sla.console import install as install_console

__all__ = ["http_ingest", "http_server_options", "run_worker", "serve"]

log = logging.getLogger(__name__)


@contextlib.asynccontextmanager
async def http_ingest(
    settings: Settings, registry: CollectorRegistry
) -> AsyncIterator[tuple[web.AppRunner, HttpContext]]:
    """Start the adapters' HTTP app (and its producer and Redis client); stop on exit."""
    async with contextlib.AsyncExitStack() as stack:
        redis = connect(settings.redis_url, socket_timeout=5)
        stack.push_async_callback(redis.aclose)
        producer = EnvelopeProducer(settings)
        stack.push_async_callback(producer.stop)
        with contextlib.suppress(Exception):
            await producer.start()  # a broker that is down now is retried per request (503)
        ctx = HttpContext(settings, producer, AdapterMetrics(registry), redis)
        app = build_http_app(ctx, [*channel_installers(), install_agent_api, install_console])
        runner, _port = await serve_app(stack, app, settings, settings.http_port)
        log.info("HTTP ingest on http://%s:%d", settings.http_host, settings.http_port)
        await _start_mail(stack, ctx)
        yield runner, ctx


async def _start_mail(stack: contextlib.AsyncExitStack, ctx: HttpContext) -> None:
    """Inbound SMTP when OMNI_EMAIL_DOMAINS is set; the IMAP poller when OMNI_IMAP_HOST is."""
    mail = ctx.settings.email
    if mail.domains:
        smtp = await stack.enter_async_context(SmtpServer(ctx, mail))
        log.info("%r", smtp)
    if mail.imap_host:
        imap = await stack.enter_async_context(ImapPoller(ctx, mail))
        log.info("%r", imap)


async def serve(settings: Settings) -> None:
    """``omniroute serve``: the HTTP ingest until SIGTERM/SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    registry = CollectorRegistry()
    async with http_ingest(settings, registry) as (_runner, ctx):
        await stop.wait()
        log.info("draining HTTP ingest")
    accepted = sum(
        s.value for metric in ctx.metrics.accepted.collect() for s in metric.samples
        if s.name.endswith("_total")
    )
    log.info("HTTP ingest stopped; %d envelopes accepted", int(accepted))


def run_worker(settings: Settings, with_http: bool, loglevel: str = "info") -> None:
    """``omniroute worker`` (router only) or ``omniroute run`` (router + HTTP ingest + SLA)."""
    registry = CollectorRegistry()
    app, runtime = create_worker_app(settings, registry)
    if with_http:
        sla_worker = SlaWorker(settings, registry)

        async def sla_task() -> None:
            async with sla_worker:
                await sla_worker.run()

        app.task(sla_task)

        async def ingest() -> None:
            async with http_ingest(settings, registry):
                await asyncio.Event().wait()  # until faust cancels the task on shutdown

        app.task(ingest)

    worker = faust.Worker(app, loglevel=loglevel, quiet=True, redirect_stdouts=False)
    code: object = 0
    try:
        worker.execute_from_commandline()
    except SystemExit as exc:  # faust always leaves this way; 0 after a clean stop
        code = exc.code
    crash: BaseException | None = worker.crash_reason
    if crash is None and code in (0, None):
        log.info("worker exited; %d records routed", runtime.router.processed)
        return
    # Supervisors restart on a non-zero status only: a crashed task must not look clean.
    status = code if isinstance(code, int) and code != 0 else 1
    why = f"{type(crash).__name__}: {crash}" if crash is not None else f"exit status {code!r}"
    log.error("worker crashed (%s) after %d records routed; exiting with status %d",
              why, runtime.router.processed, status)
    raise SystemExit(status)
