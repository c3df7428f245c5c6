"""The adapters' HTTP app: every channel's routes plus /metrics, /healthz, /readyz."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web
from aiohttp.typedefs import Handler
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError

from adapters.context import AdapterContext, Installer
from adapters.producer import EnvelopeProducer

__all__ = ["CONTEXT_KEY", "build_http_app", "default_installers"]

CONTEXT_KEY: web.AppKey[AdapterContext] = web.AppKey("omni_context", AdapterContext)
_PROBES = frozenset({"/metrics", "/healthz", "/readyz"})


def default_installers() -> list[Installer]:
    """Every channel adapter that ships with omniroute."""
    from adapters.douyin import install as douyin
    from adapters.generic import install as generic
    from adapters.phone import install as phone
    from adapters.wechat import install as wechat
    from adapters.wecom import install as wecom
    from router.agent_api import install as agent_api

    installers: list[Installer] = [generic, wechat, wecom, douyin, phone, agent_api]
    return installers


def build_http_app(
    ctx: AdapterContext, installers: Sequence[Installer] | None = None
) -> web.Application:
    """Build the aiohttp application (not started)."""
    # The body limit is enforced per route with a specific 413; aiohttp's own
    # limit is a backstop set a little higher.
    limit = ctx.settings.max_in_flight
    in_flight = 0

    @web.middleware
    async def back_pressure(request: web.Request, handler: Handler) -> web.StreamResponse:
        # Bounded work in progress: past the limit a request is refused at once
        # (the channel retries) instead of queueing bodies in memory.
        nonlocal in_flight
        if request.path in _PROBES:
            return await handler(request)
        if in_flight >= limit:
            ctx.metrics.rejected.labels("http", "-", "overloaded").inc()
            return web.json_response(
                {"error": "overloaded", "message": f"{limit} requests in progress; retry"},
                status=429, headers={"Retry-After": "1"},
            )
        in_flight += 1
        try:
            return await handler(request)
        finally:
            in_flight -= 1

    app = web.Application(
        client_max_size=ctx.settings.max_body_bytes + 1024, middlewares=[back_pressure]
    )
    app[CONTEXT_KEY] = ctx

    async def metrics(_: web.Request) -> web.Response:
        body = generate_latest(ctx.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def readyz(_: web.Request) -> web.Response:
        problems: list[str] = []
        sink = ctx.sink
        if isinstance(sink, EnvelopeProducer) and not sink.connected:
            try:
                await sink.start()
            except Exception as exc:
                problems.append(f"kafka: {exc}")
        if ctx.redis is not None:
            try:
                await ctx.redis.ping()
            except (RedisError, OSError) as exc:
                problems.append(f"redis: {exc}")
        if problems:
            return web.json_response({"status": "unavailable", "problems": problems}, status=503)
        return web.json_response({"status": "ready"})

    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    for install in installers if installers is not None else default_installers():
        install(app, ctx)
    return app
