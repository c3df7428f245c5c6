"""Phone webhooks: ``POST /phone/twilio/{voice,gather,status}`` and ``POST /phone/tccc``.

Every request is authenticated first (Twilio signature, TCCC basicAuth), then
parsed, PII-masked, deduplicated and produced with acks=all; the channel gets
its success answer only after the broker acknowledged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import orjson
from aiohttp import web

from ...router.exceptions import BadRequest, BrokerUnavailable, RequestRejected
from ...router.http import HttpContext, read_limited
from ...router.models import Envelope
from ...router.settings import PhoneSettings
from ..dedupe import Deduper
from .config import (
    CHANNEL,
    TCCC_PATH,
    TCCC_PUSH_UUID_HEADER,
    TWILIO_PATH,
    PhoneConfig,
    load_phone_config,
)
from .parse import (
    cdr_to_envelope,
    first_values,
    form_pairs,
    gather_to_envelope,
    status_to_envelope,
    twilio_call,
)
from .verify import verify_tccc, verify_twilio

__all__ = ["PhoneAdapter", "install", "make_installer"]

log = logging.getLogger(__name__)
_NO_ACCOUNT = "-"
TWIML = "application/xml"


def _say(text: str, language: str) -> str:
    return f"<Say language={quoteattr(language)}>{escape(text)}</Say>"


def twiml_menu(config: PhoneConfig, action_url: str) -> str:
    """The answer to ``voice``: a <Gather> for key presses or speech, then a fallback."""
    digits = max((len(key) for key in config.menu), default=1)
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f"<Gather input=\"dtmf speech\" action={quoteattr(action_url)} method=\"POST\" "
        f"timeout=\"{config.gather_timeout_s}\" numDigits=\"{digits}\" "
        f"language={quoteattr(config.language)} actionOnEmptyResult=\"true\">"
        f"{_say(config.prompt, config.language)}</Gather>"
        f"{_say(config.no_input, config.language)}{_enqueue(config)}</Response>"
    )


def _enqueue(config: PhoneConfig) -> str:
    return f"<Enqueue>{escape(config.queue)}</Enqueue>" if config.queue else ""


def twiml_after_gather(config: PhoneConfig) -> str:
    """The answer to ``gather``: tell the caller, then wait in the queue."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?><Response>'
        f"{_say(config.after_gather, config.language)}{_enqueue(config)}</Response>"
    )


EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response/>'


class PhoneAdapter:
    """The phone channel's request handlers (one per app)."""

    def __init__(self, ctx: HttpContext, settings: PhoneSettings, config: PhoneConfig) -> None:
        self.ctx = ctx
        self.settings = settings
        self.config = config
        self.deduper = (
            Deduper(ctx.redis, ctx.keys, settings.dedupe_ttl_s) if ctx.redis is not None else None
        )
        self._salt = ctx.settings.customer_id_salt.get_secret_value()

    def public_url(self, request: web.Request) -> str:
        """The URL the caller used, as it signed it (public base URL behind a proxy)."""
        base = self.settings.public_base_url
        return f"{base}{request.path_qs}" if base else str(request.url)

    async def _produce(self, env: Envelope, dedupe_id: str) -> bool:
        """Dedupe, produce (the producer masks PII), mark; False for a duplicate.

        Raises:
            BrokerUnavailable: the broker did not acknowledge.
        """
        m = self.ctx.metrics
        if self.deduper is not None and await self.deduper.seen(CHANNEL, dedupe_id):
            m.duplicates.labels(CHANNEL, env.account).inc()
            return False
        await self.ctx.sink.send_envelopes([env])
        if self.deduper is not None:
            await self.deduper.mark(CHANNEL, dedupe_id)
        m.accepted.labels(CHANNEL, env.account).inc()
        return True

    # --- Twilio ---------------------------------------------------------------------

    async def twilio(self, request: web.Request) -> web.Response:
        """``POST /phone/twilio/{event}``."""
        started = time.perf_counter()
        m = self.ctx.metrics
        event = request.match_info["event"]
        m.requests.labels(CHANNEL, _NO_ACCOUNT).inc()
        handlers: dict[str, Callable[[dict[str, str]], Awaitable[web.Response]]] = {
            "voice": self._voice,
            "gather": self._gather,
            "status": self._status,
        }
        handler = handlers.get(event)
        if handler is None:
            m.rejected.labels(CHANNEL, _NO_ACCOUNT, "unknown_event").inc()
            return web.json_response(
                {"error": "unknown_event",
                 "message": f"unknown Twilio event {event[:32]!r}; use voice, gather or status"},
                status=404,
            )
        try:
            if not request.content_type.startswith("application/x-www-form-urlencoded"):
                raise BadRequest(
                    f"Content-Type must be application/x-www-form-urlencoded, "
                    f"got {request.content_type!r}", reason="bad_content_type"
                )
            body = await read_limited(request, self.settings.max_body_bytes)
            pairs = form_pairs(body)
            verify_twilio(request.headers, self.public_url(request), pairs, self.settings)
            form = first_values(pairs)
            twilio_call(form)
            response = await handler(form)
        except RequestRejected as exc:
            m.rejected.labels(CHANNEL, _NO_ACCOUNT, exc.reason).inc()
            return web.json_response({"error": exc.reason, "message": str(exc)},
                                     status=exc.status)
        except BrokerUnavailable as exc:
            return self._unavailable(exc, {"error": "broker_unavailable",
                                           "message": "Kafka did not acknowledge; retry"})
        m.ack_latency.labels(CHANNEL).observe(time.perf_counter() - started)
        return response

    async def _voice(self, form: dict[str, str]) -> web.Response:
        action = f"{self.settings.public_base_url or ''}{TWILIO_PATH.format(event='gather')}"
        return web.Response(text=twiml_menu(self.config, action), content_type=TWIML)

    async def _gather(self, form: dict[str, str]) -> web.Response:
        env = gather_to_envelope(form, self.config, self.ctx.now_ms(), self._salt)
        await self._produce(env, env.channel_msg_id)
        return web.Response(text=twiml_after_gather(self.config), content_type=TWIML)

    async def _status(self, form: dict[str, str]) -> web.Response:
        env = status_to_envelope(form, self.config, self.ctx.now_ms(), self._salt)
        if env is None:
            self.ctx.metrics.filtered.labels(CHANNEL, "call_status").inc()
        else:
            await self._produce(env, env.channel_msg_id)
        return web.Response(text=EMPTY_TWIML, content_type=TWIML)

    # --- Tencent Cloud Contact Center ---------------------------------------------------

    async def tccc(self, request: web.Request) -> web.Response:
        """``POST /phone/tccc?action=cdr&version=1``: answer ``{"ErrCode": 0}`` once produced."""
        started = time.perf_counter()
        m = self.ctx.metrics
        m.requests.labels(CHANNEL, _NO_ACCOUNT).inc()
        try:
            verify_tccc(request.headers, self.settings)
            body = await read_limited(request, self.settings.max_body_bytes)
            action = request.query.get("action", "cdr")
            if action != "cdr":
                # Recordings and voicemail pushes: acknowledged, nothing to route.
                m.filtered.labels(CHANNEL, "tccc_not_cdr").inc()
                return web.json_response({"ErrCode": 0, "ErrMsg": "ignored"})
            try:
                data: Any = orjson.loads(body)
            except orjson.JSONDecodeError as exc:
                raise BadRequest(f"body is not valid JSON: {exc}", reason="bad_json") from None
            env = cdr_to_envelope(data, self.config, self.ctx.now_ms(), self._salt)
            if env is None:
                m.filtered.labels(CHANNEL, "call_completed").inc()
                return web.json_response({"ErrCode": 0, "ErrMsg": "ok"})
            push_id = request.headers.get(TCCC_PUSH_UUID_HEADER, "").strip()[:128]
            await self._produce(env, f"tccc-push:{push_id}" if push_id else env.channel_msg_id)
        except RequestRejected as exc:
            m.rejected.labels(CHANNEL, _NO_ACCOUNT, exc.reason).inc()
            return web.json_response(
                {"ErrCode": exc.status, "ErrMsg": f"{exc.reason}: {exc}"}, status=exc.status
            )
        except BrokerUnavailable as exc:
            return self._unavailable(exc, {"ErrCode": 503, "ErrMsg": "broker unavailable; retry"})
        m.ack_latency.labels(CHANNEL).observe(time.perf_counter() - started)
        return web.json_response({"ErrCode": 0, "ErrMsg": "ok"})

    def _unavailable(self, exc: BrokerUnavailable, body: dict[str, Any]) -> web.Response:
        log.warning("phone: %s", exc)
        self.ctx.metrics.rejected.labels(CHANNEL, _NO_ACCOUNT, "broker_unavailable").inc()
        return web.json_response(body, status=503, headers={"Retry-After": "5"})


def make_installer(
    settings: PhoneSettings | None = None, config: PhoneConfig | None = None
) -> Callable[[web.Application, HttpContext], None]:
    """An installer with explicit settings (tests, embedding); None = the process's
    ``phone`` settings and ``phone.yaml`` in the configuration directory."""

    def install_phone(app: web.Application, ctx: HttpContext) -> None:
        phone_settings = settings if settings is not None else ctx.settings.phone
        phone_config = config
        if phone_config is None:
            path = phone_settings.config_file or Path(ctx.settings.config_dir) / "phone.yaml"
            phone_config = load_phone_config(path) if path.is_file() else PhoneConfig()
        adapter = PhoneAdapter(ctx, phone_settings, phone_config)
        app.router.add_post(TWILIO_PATH, adapter.twilio)
        app.router.add_post(TCCC_PATH, adapter.tccc)

    return install_phone


def install(app: web.Application, ctx: HttpContext) -> None:
    """Add the phone routes; the process's ``phone`` settings, menu from ``phone.yaml``."""
    make_installer()(app, ctx)
