"""HTTP pieces every process shares: the request context, body limits, and the probes.

The adapters' app, the agent API (``sla``) and the SLA and router workers all serve
``/metrics``, ``/healthz`` and ``/readyz``; they are written here once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from redis.asyncio import Redis

from .clock import Clock, SystemClock
from .exceptions import BadRequest, ClientDisconnected, PayloadTooLarge, RequestTimeout
from .keys import Keys
from .metrics import AdapterMetrics
from .producer import EnvelopeProducer, EnvelopeSink
from .settings import Settings

__all__ = [
    "ADMIT_KEY",
    "CONTEXT_KEY",
    "HttpContext",
    "Installer",
    "Readiness",
    "ReadyCheck",
    "add_probe_routes",
    "metrics_body",
    "read_limited",
]

log = logging.getLogger(__name__)


@dataclass(slots=True)
class HttpContext:
    """Shared dependencies of the HTTP app: channel adapters and the agent API."""

    settings: Settings
    sink: EnvelopeSink
    metrics: AdapterMetrics
    redis: Redis | None = None
    clock: Clock = field(default_factory=SystemClock)
    keys: Keys = field(init=False)

    def __post_init__(self) -> None:
        self.keys = Keys(self.settings.redis_prefix)
        if isinstance(self.sink, EnvelopeProducer) and self.sink.metrics is None:
            self.sink.metrics = self.metrics  # values masked at the producer are counted here

    def now_ms(self) -> int:
        """Current wall time in milliseconds."""
        return int(self.clock.now() * 1000)


#: A route module's ``install(app, ctx)``: adds its routes (and startup hooks) to the app.
Installer = Callable[[web.Application, HttpContext], None]
CONTEXT_KEY: web.AppKey[HttpContext] = web.AppKey("omni_context", HttpContext)


#: Set per request by the app's in-flight limit (``adapters.http``): ``read_limited``
#: calls it once the body is in, so a request still arriving holds no slot. It raises
#: an HTTP 429 when the limit is reached.
ADMIT_KEY: web.RequestKey[Callable[[], None]] = web.RequestKey("omni_admit")


def _body_timeout_s(request: web.Request) -> float:
    ctx = request.config_dict.get(CONTEXT_KEY)
    if ctx is not None:
        return ctx.settings.http_body_timeout_s
    default: float = Settings.model_fields["http_body_timeout_s"].default
    return default


async def read_limited(
    request: web.Request, max_body_bytes: int, *, timeout_s: float | None = None
) -> bytes:
    """Return the body, read within a size limit and a deadline.

    The deadline (``timeout_s``, else the app's ``OMNI_HTTP_BODY_TIMEOUT_S``) covers
    the whole body: a client that trickles it is cut off instead of holding a slot.
    Once the body is in, the request is admitted to the app's in-flight limit.

    Raises:
        PayloadTooLarge: the declared or actual size is over ``max_body_bytes``.
        RequestTimeout: the body did not arrive in full within the deadline (408).
        ClientDisconnected: the client went away before the body was in.
        BadRequest: the body's framing (chunked encoding) is malformed.
    """
    declared = request.content_length
    if declared is not None and declared > max_body_bytes:
        raise PayloadTooLarge(
            f"body is {declared} bytes; the limit is {max_body_bytes} (split the batch)"
        )
    deadline_s = _body_timeout_s(request) if timeout_s is None else timeout_s
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(deadline_s):
            async for chunk in request.content.iter_chunked(65_536):
                size += len(chunk)
                if size > max_body_bytes:
                    raise PayloadTooLarge(
                        f"body exceeds the limit of {max_body_bytes} bytes (split the batch)"
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise RequestTimeout(
            f"the body did not arrive in full within {deadline_s:g} s ({size} bytes came); "
            "send the whole request at once"
        ) from None
    except ConnectionError:
        # the client's problem, not ours: counted by the caller (reason client_disconnected)
        log.info("%s %s: client went away after %d body bytes", request.method,
                 request.path, size)
        raise ClientDisconnected(f"client went away after {size} body bytes") from None
    except HttpProcessingError as exc:
        raise BadRequest(f"malformed body: {exc.message}", reason="invalid") from None
    admit = request.get(ADMIT_KEY)
    if admit is not None:
        admit()
    return b"".join(chunks)


#: One dependency check for /readyz: returns normally when the dependency answers,
#: raises (any exception, its text is shown) when it does not.
ReadyCheck = Callable[[], Awaitable[None]]


class Readiness:
    """The dependencies' state now, checked concurrently and cached for ``cache_s``.

    A load balancer polls /readyz often; the short cache keeps that from turning
    into a ping storm while still reporting an outage within about a second.
    """

    def __init__(
        self,
        checks: Mapping[str, ReadyCheck],
        *,
        cache_s: float = 1.0,
        timeout_s: float = 2.0,
        info: Callable[[], Mapping[str, Any]] | None = None,
    ) -> None:
        self._checks = dict(checks)
        self._cache_s = cache_s
        self._timeout_s = timeout_s
        self._info = info
        self._cached: tuple[float, int, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def _one(self, name: str, check: ReadyCheck) -> str | None:
        try:
            await asyncio.wait_for(check(), self._timeout_s)
        except TimeoutError:
            return f"{name}: no answer within {self._timeout_s:g} s"
        except Exception as exc:  # any failure means not ready; the text says which
            return f"{name}: {exc or type(exc).__name__}"
        return None

    async def status(self) -> tuple[int, dict[str, Any]]:
        """(HTTP status, JSON body): 200 ready, 503 with the problems."""
        async with self._lock:
            now = time.monotonic()
            if self._cached is not None and now - self._cached[0] < self._cache_s:
                return self._cached[1], self._cached[2]
            results = await asyncio.gather(*(self._one(n, c) for n, c in self._checks.items()))
            problems = [r for r in results if r is not None]
            body: dict[str, Any] = dict(self._info()) if self._info is not None else {}
            if problems:
                code, body["status"], body["problems"] = 503, "unavailable", problems
            else:
                code, body["status"] = 200, "ready"
            self._cached = (time.monotonic(), code, body)
            return code, body


def metrics_body(registry: CollectorRegistry) -> tuple[bytes, str]:
    """The Prometheus exposition of ``registry`` and its content type."""
    return generate_latest(registry), CONTENT_TYPE_LATEST


def add_probe_routes(
    app: web.Application, registry: CollectorRegistry, readiness: Readiness
) -> None:
    """``GET /metrics``, ``/healthz`` (the process runs) and ``/readyz`` (it can serve)."""

    async def metrics(_: web.Request) -> web.Response:
        body, content_type = metrics_body(registry)
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        code, body = await readiness.status()
        return web.json_response(body, status=code)

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)


def http_server_options(settings: Settings) -> dict[str, Any]:
    """aiohttp server options of every HTTP surface: no access log, slow headers cut off.

    aiohttp arms its keep-alive timer when a connection opens and again after each
    answer, and closes the connection if a complete request head has not arrived by
    then: the keep-alive timeout is the header deadline (its default is an hour).
    A load balancer in front should close idle connections sooner than this.
    """
    return {"access_log": None, "keepalive_timeout": settings.http_header_timeout_s}


async def serve_app(
    stack: contextlib.AsyncExitStack, app: web.Application, settings: Settings, port: int
) -> tuple[web.AppRunner, int]:
    """Serve ``app`` on ``settings.http_host:port`` until ``stack`` closes.

    Returns:
        The runner and the bound port (``port`` 0 lets the system pick one).
    """
    runner = web.AppRunner(app, **http_server_options(settings))
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, settings.http_host, port)
    await site.start()
    server = getattr(site, "_server", None)
    if server is not None and server.sockets:
        port = server.sockets[0].getsockname()[1]
    return runner, port
