"""``POST /v1/messages``: authenticate, validate, produce (acks=all), then answer."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from ...router.exceptions import BrokerUnavailable, RequestRejected, UnsupportedMediaType
from ...router.http import HttpContext, read_limited
from .config import PATH
from .parse import parse_body
from .verify import ReplayGuard, verify_request

__all__ = ["install"]

log = logging.getLogger(__name__)
CHANNEL_LABEL = "api"


def _check_content_type(request: web.Request) -> None:
    """JSON in UTF-8, or no Content-Type at all; anything else is refused with 415."""
    if not request.headers.get("Content-Type", "").strip():
        return
    media = request.content_type
    json_like = media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )
    if not json_like:
        raise UnsupportedMediaType(
            f"Content-Type {media[:64]!r} is not JSON; send 'Content-Type: application/json'"
        )
    charset = request.charset
    if charset is not None and charset.lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise UnsupportedMediaType(
            f"charset {charset[:32]!r} is not accepted; send the JSON encoded as UTF-8 "
            "('Content-Type: application/json; charset=utf-8')"
        )


def install(app: web.Application, ctx: HttpContext) -> None:
    """Add ``POST /v1/messages`` to the adapters' app."""
    replays = ReplayGuard(ctx.redis, ctx.keys, ctx.settings.hmac_window_s)

    async def ingest(request: web.Request) -> web.Response:
        started = time.perf_counter()
        m = ctx.metrics
        m.requests.labels(CHANNEL_LABEL, "-").inc()
        try:
            _check_content_type(request)
            body = await read_limited(request, ctx.settings.max_body_bytes)
            cred = verify_request(request.headers, body, ctx.settings, ctx.clock.now())
            envelopes = parse_body(body, ctx.now_ms(), ctx.settings.max_batch_messages,
                                   cred.source)
            await replays.claim(cred, ctx.clock.now())  # a signature is accepted once
        except RequestRejected as exc:
            m.rejected.labels(CHANNEL_LABEL, "-", exc.reason).inc()
            return web.json_response(
                {"error": exc.reason, "message": str(exc)}, status=exc.status
            )
        try:
            await ctx.sink.send_envelopes(envelopes)
        except BrokerUnavailable as exc:
            await replays.release(cred)  # not accepted: the same signed retry may come
            m.rejected.labels(CHANNEL_LABEL, "-", "broker_unavailable").inc()
            log.warning("ingest: %s", exc)
            return web.json_response(
                {"error": "broker_unavailable", "message": "Kafka did not acknowledge; retry"},
                status=503,
                headers={"Retry-After": "5"},
            )
        for env in envelopes:
            m.accepted.labels(env.channel.value, env.account).inc()
        m.ack_latency.labels(CHANNEL_LABEL).observe(time.perf_counter() - started)
        return web.json_response(
            {"accepted": len(envelopes), "ids": [e.id for e in envelopes]}, status=202
        )

    app.router.add_post(PATH, ingest)
