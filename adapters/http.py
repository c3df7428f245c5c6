"""The adapters' HTTP app: every channel's routes plus /metrics, /healthz, /readyz."""

from __future__ import annotations

from collections.abc import Sequence

import orjson
from aiohttp import web
from aiohttp.typedefs import Handler

from ..router.http import (
    ADMIT_KEY,
    CONTEXT_KEY,
    HttpContext,
    Installer,
    Readiness,
    ReadyCheck,
    add_probe_routes,
)
from ..router.producer import EnvelopeProducer

__all__ = ["build_http_app", "channel_installers", "ingest_readiness"]

_PROBES = frozenset({"/metrics", "/healthz", "/readyz"})


def channel_installers() -> list[Installer]:
    """Every channel adapter that ships with omniroute (the agent API is added by the caller)."""
    from .douyin import install as douyin
    from .generic import install as generic
    from .phone import install as phone
    from .wechat import install as wechat
    from .wecom import install as wecom

    return [generic, wechat, wecom, douyin, phone]


def ingest_readiness(ctx: HttpContext) -> Readiness:
    """Ready when the broker and Redis answer now (cached for a second)."""
    checks: dict[str, ReadyCheck] = {}
    sink = ctx.sink
    if isinstance(sink, EnvelopeProducer):
        checks["kafka"] = sink.check
    redis = ctx.redis
    if redis is not None:

        async def ping() -> None:
            await redis.ping()

        checks["redis"] = ping
    return Readiness(checks)


def build_http_app(
    ctx: HttpContext, installers: Sequence[Installer] | None = None
) -> web.Application:
    """Build the aiohttp application (not started)."""
    # The body limit is enforced per route with a specific 413; aiohttp's own
    # limit is a backstop set a little higher.
    limit = ctx.settings.max_in_flight
    in_flight = 0

    @web.middleware
    async def back_pressure(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Bounded work in progress: past the limit a request is refused at once
        # (the channel retries) instead of queueing work in memory. A request with a
        # body counts only once its body is in (read_limited admits it, within the
        # body deadline), so slow or stalled uploads from anyone cannot take the
        # slots of requests that are ready to be verified and produced.
        nonlocal in_flight
        admitted = False

        def admit() -> None:
            nonlocal in_flight, admitted
            if admitted:
                return
            if in_flight >= limit:
                ctx.metrics.rejected.labels("http", "-", "overloaded").inc()
                raise web.HTTPTooManyRequests(
                    text=orjson.dumps({"error": "overloaded",
                                       "message": f"{limit} requests in progress; retry"}
                                      ).decode(),
                    content_type="application/json", headers={"Retry-After": "1"},
                )
            in_flight += 1
            admitted = True

        if request.path in _PROBES:
            return await handler(request)
        if request.body_exists:
            request[ADMIT_KEY] = admit
        else:
            admit()
        try:
            return await handler(request)
        finally:
            if admitted:
                in_flight -= 1

    app = web.Application(
        client_max_size=ctx.settings.max_body_bytes + 1024, middlewares=[back_pressure]
    )
    app[CONTEXT_KEY] = ctx

    add_probe_routes(app, ctx.metrics.registry, ingest_readiness(ctx))
    for install in installers if installers is not None else channel_installers():
        install(app, ctx)
    return app
