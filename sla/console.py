"""The live operations console: ``/console`` on the adapters' HTTP app, beside the agent API.

| method + path | what |
| --- | --- |
| ``GET /console`` | the page (``?token=`` signs in and redirects to a clean URL) |
| ``POST /console/login`` | form field ``token``: signs in (cookie), redirects to the page |
| ``GET /console/logout`` | forgets the cookie |
| ``GET /console/api/snapshot`` | the figures the page shows, as JSON |
| ``GET /console/events`` | the same snapshot pushed every ``OMNI_CONSOLE_PUSH_S`` (SSE) |

Admission: an agent token (``OMNI_AGENT_TOKENS``) or a viewer token
(``OMNI_CONSOLE_TOKENS``), as ``Authorization: Bearer`` or, for a browser, a cookie set
by signing in. The cookie holds a keyed digest of the token, not the token, and is
valid under ``/console`` only: a leaked cookie opens the console, never the agent API.
The figures are gathered by :mod:`sla.console_data` once per push for all viewers;
its Kafka feed starts with the first viewer (reading a little history back).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from importlib import resources
from pathlib import Path
from typing import Final

import orjson
from aiohttp import web

from ..router.http import HttpContext, Installer
from ..router.settings import ConsoleSettings, Settings
from ..skills.exceptions import OmniError
from ..skills.groups import SkillGroups
from ..skills.yamlconfig import load_model
from .config import SlaConfig, load_sla_config
from .console_data import ConsoleFeed, SnapshotBuilder

__all__ = ["COOKIE", "console_digest", "install", "installer"]

log = logging.getLogger(__name__)
COOKIE: Final = "omni_console"
COOKIE_MAX_AGE_S: Final = 12 * 3600  # one shift
_DIGEST_KEY: Final = b"omniroute-console-v1"
MAX_FORM_BYTES: Final = 4096


def console_digest(token: str) -> str:
    """The cookie value for ``token`` (a keyed SHA-256 digest, hex)."""
    return hmac.new(_DIGEST_KEY, token.encode(), hashlib.sha256).hexdigest()


def _page() -> str:
    return resources.files(__package__ or "omniroute.sla").joinpath(
        "console_page.html").read_text(encoding="utf-8")


_LOGIN = """<!doctype html><html lang="zh-CN"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width,initial-scale=1">
<title>运营看板 Operations console</title>
<style nonce="{nonce}">body{{font:18px system-ui,sans-serif;background:#0f1419;color:#e6e6e6;
display:grid;place-items:center;height:100vh;margin:0}}form{{display:grid;gap:12px;min-width:320px}}
input,button{{font:inherit;padding:8px}}p{{color:#f28b82}}</style></head><body>
<form method="post" action="/console/login"><h1>运营看板 Operations console</h1>
<label for="token">访问令牌 Access token</label>
<input id="token" name="token" type="password" autocomplete="current-password" autofocus>
<button type="submit">登录 Sign in</button><p>{message}</p></form></body></html>"""


def installer(console: ConsoleSettings, agent_tokens: tuple[str, ...] = ()) -> Installer:
    """An ``install(app, ctx)`` bound to explicit settings (tests, embedding)."""

    def _install(app: web.Application, ctx: HttpContext) -> None:
        tokens = (*agent_tokens, *(t.get_secret_value() for t in console.viewer_tokens))
        _install_routes(app, ctx, console, tokens)

    return _install


def install(app: web.Application, ctx: HttpContext) -> None:
    """Add the console to the adapters' app (the process's ``console`` and agent tokens)."""
    s = ctx.settings
    tokens = (*(t.get_secret_value() for t in s.agent_api.agent_tokens),
              *(t.get_secret_value() for t in s.console.viewer_tokens))
    _install_routes(app, ctx, s.console, tokens)


def _group_names(settings: Settings) -> dict[str, str]:
    path = Path(settings.config_dir) / "skill_groups.yaml"
    try:
        groups, _ = load_model(path, SkillGroups)
    except OmniError as exc:  # names are decoration: the console works without them
        log.warning("console: no group names (%s)", exc)
        return {}
    return {g: s.name for g, s in groups.groups.items()}


def _sla_config(settings: Settings) -> SlaConfig:
    return load_sla_config(Path(settings.config_dir) / "sla.yaml")


def _install_routes(
    app: web.Application, ctx: HttpContext, console: ConsoleSettings, tokens: tuple[str, ...]
) -> None:
    redis = ctx.redis
    if redis is None:
        log.warning("console not installed: the HttpContext has no Redis client")
        return
    try:
        sla = _sla_config(ctx.settings)
    except OmniError as exc:  # an ingest-only node may run without sla.yaml
        log.warning("console not installed: %s", exc)
        return
    digests = [console_digest(t) for t in tokens if t]
    feed = ConsoleFeed(ctx.settings, console, ctx.now_ms)
    builder = SnapshotBuilder(
        redis, ctx.keys, feed, sla, console,
        _group_names(ctx.settings), live_ttl_s=ctx.settings.agent_api.agent_live_ttl_s,
    )
    closing = asyncio.Event()

    async def run_feed(_: web.Application) -> AsyncIterator[None]:
        yield  # the feed starts with the first viewer: an ingest node nobody watches
        await feed.stop()  # tails no topics

    async def end_streams(_: web.Application) -> None:
        closing.set()  # open event streams end, so shutdown does not wait for them

    app.cleanup_ctx.append(run_feed)
    app.on_shutdown.append(end_streams)

    def admitted(request: web.Request) -> bool:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer" and token:
            return _known(console_digest(token))
        cookie = request.cookies.get(COOKIE, "")
        return bool(cookie) and _known(cookie)

    def _known(digest: str) -> bool:
        found = False
        for d in digests:  # no early exit: the time taken does not tell which one matched
            found |= hmac.compare_digest(digest, d)
        return found

    def signed_in(location: str, token: str, request: web.Request) -> web.Response:
        resp = web.Response(status=303, headers={"Location": location, "Cache-Control": "no-store"})
        resp.set_cookie(COOKIE, console_digest(token), max_age=COOKIE_MAX_AGE_S,
                        path="/console", httponly=True, samesite="Strict",
                        secure=request.secure)
        return resp

    def login_page(message: str, status: int) -> web.Response:
        nonce = secrets.token_urlsafe(16)
        return web.Response(
            text=_LOGIN.format(nonce=nonce, message=message), status=status,
            content_type="text/html", headers=_headers(nonce),
        )

    def refuse() -> web.Response:
        if not digests:
            return web.json_response(
                {"error": "auth_not_configured",
                 "message": "console authentication is not configured: set "
                            "OMNI_CONSOLE_TOKENS (viewers) or OMNI_AGENT_TOKENS"}, status=401)
        return web.json_response(
            {"error": "unauthorized",
             "message": "send 'Authorization: Bearer <viewer or agent token>' or sign in "
                        "at /console"}, status=401)

    def guarded(
        fn: Callable[[web.Request], Awaitable[web.StreamResponse]],
    ) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
        async def wrapped(request: web.Request) -> web.StreamResponse:
            if not admitted(request):
                return refuse()
            return await fn(request)
        return wrapped

    async def page(request: web.Request) -> web.StreamResponse:
        token = request.query.get("token")
        if token is not None:
            if _known(console_digest(token)):
                return signed_in("/console", token, request)  # the token leaves the URL
            return login_page("令牌无效 Unknown token", 401)
        if not admitted(request):
            if not digests:
                return login_page("未配置令牌 No token configured: set OMNI_CONSOLE_TOKENS", 401)
            return login_page("", 401)
        nonce = secrets.token_urlsafe(16)
        return web.Response(text=_page().replace("{{nonce}}", nonce),
                            content_type="text/html", headers=_headers(nonce))

    async def login(request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > MAX_FORM_BYTES:
            return login_page("", 413)
        form = await request.post()
        token = form.get("token")
        if isinstance(token, str) and token and _known(console_digest(token)):
            return signed_in("/console", token, request)
        return login_page("令牌无效 Unknown token", 401)

    async def logout(_: web.Request) -> web.StreamResponse:
        resp = web.Response(status=303, headers={"Location": "/console"})
        resp.del_cookie(COOKIE, path="/console")
        return resp

    async def snapshot(_: web.Request) -> web.StreamResponse:
        await feed.start()
        return web.Response(body=orjson.dumps(await builder.snapshot(ctx.now_ms())),
                            content_type="application/json",
                            headers={"Cache-Control": "no-store"})

    async def events(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={
            "Content-Type": "text/event-stream", "Cache-Control": "no-store",
            "X-Accel-Buffering": "no",  # nginx: pass each event on at once
        })
        await feed.start()
        await resp.prepare(request)
        await resp.write(b"retry: 2000\n\n")
        seq = 0
        with contextlib.suppress(ConnectionResetError):  # the viewer went away
            while not closing.is_set():
                seq += 1
                try:
                    snap = await builder.snapshot(ctx.now_ms())
                    body = b"event: snapshot\nid: %d\ndata: %s\n\n" % (seq, orjson.dumps(snap))
                except Exception as exc:  # Redis away: tell the page, keep the stream
                    log.warning("console: snapshot failed: %r", exc)
                    body = b"event: problem\ndata: %s\n\n" % orjson.dumps(
                        {"message": f"{type(exc).__name__}: {exc}"})
                await resp.write(body)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(closing.wait(), console.push_s)
        return resp

    r = app.router
    r.add_get("/console", page)
    r.add_post("/console/login", login)
    r.add_get("/console/logout", logout)
    r.add_get("/console/api/snapshot", guarded(snapshot))
    r.add_get("/console/events", guarded(events))


def _headers(nonce: str) -> dict[str, str]:
    return {
        "Cache-Control": "no-store",
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
            "connect-src 'self'; img-src 'self' data:; form-action 'self'; "
            "frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
    }
