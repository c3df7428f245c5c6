"""``GET/POST /wechat/{account}``: verify, decrypt, parse, mask, dedupe, produce, answer.

The same :class:`CallbackHandler` serves WeCom (``adapters.wecom``), which is
the safe mode with ``msg_signature`` on every request and an encrypted
``echostr``.

Answers: ``success`` (text/plain, what WeChat expects) once the broker
acknowledged, or when the message is a duplicate / not routed; the URL check
echoes ``echostr`` as text. Every error is the project's JSON form
``{"error": <reason>, "message": <what to do>}`` with its status: 401 bad
signature, stale timestamp or wrong app id; 400 malformed or hostile XML; 404
unknown account; 408 body not in within the deadline; 413 body over the limit;
503 (``Retry-After``) when Kafka did not acknowledge in time, so WeChat
re-delivers (the retry is deduplicated).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web

from ...router.exceptions import BadRequest, BrokerUnavailable, RequestRejected, Unauthorized
from ...router.http import HttpContext, Installer, read_limited
from ...router.models import Channel
from ..channel_config import channel_installer
from ..dedupe import Deduper, produce_once
from .config import CallbackSection, WeChatAccount, WeChatConfig, account_label
from .crypto import MessageCipher
from .parse import parse_xml, to_envelope
from .verify import check_timestamp, verify_signature

__all__ = ["CallbackHandler", "install", "make_installer"]

log = logging.getLogger(__name__)

MAX_QUERY_VALUE_CHARS = 512  # nonce, signatures and echostr are far shorter
SUCCESS = "success"


@dataclass(slots=True)
class CallbackHandler:
    """GET and POST handlers of one WeChat-family channel.

    Args:
        ctx: The adapters' shared context.
        section: The channel's section: which channel, window, body limit, produce
            timeout, dedupe TTL, whether every callback is encrypted (WeCom).
        accounts: Configured accounts by path name.
    """

    ctx: HttpContext
    section: CallbackSection
    accounts: Mapping[str, WeChatAccount]
    channel: Channel = field(init=False)
    always_encrypted: bool = field(init=False)
    _ciphers: dict[str, MessageCipher] = field(default_factory=dict, init=False)
    _deduper: Deduper | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.channel = self.section.CHANNEL
        self.always_encrypted = self.section.ALWAYS_ENCRYPTED
        for name, acc in self.accounts.items():
            if acc.encoding_aes_key is not None:
                self._ciphers[name] = MessageCipher(
                    acc.encoding_aes_key.get_secret_value(), acc.app_id
                )
        if self.ctx.redis is not None:
            self._deduper = Deduper(self.ctx.redis, self.ctx.keys, self.section.dedupe_ttl_s)

    # --- helpers ---------------------------------------------------------------

    def _account(self, request: web.Request) -> WeChatAccount:
        name = request.match_info.get("account", "")
        acc = self.accounts.get(name)
        if acc is None:
            raise _NotFound(f"no {self.channel} account {name[:64]!r} is configured",
                            reason="unknown_account")
        return acc

    @staticmethod
    def _query(request: web.Request, name: str) -> str | None:
        value = request.query.get(name)
        if value is not None and len(value) > MAX_QUERY_VALUE_CHARS:
            raise BadRequest(f"query parameter {name!r} is too long", reason="invalid")
        return value

    def _reject(self, label: str, exc: RequestRejected) -> web.Response:
        self.ctx.metrics.rejected.labels(self.channel.value, label, exc.reason).inc()
        log.info("%s/%s: %s %s", self.channel, label, exc.status, exc.reason)
        return web.json_response({"error": exc.reason, "message": str(exc)}, status=exc.status)

    # --- GET: URL verification ---------------------------------------------------

    async def get(self, request: web.Request) -> web.Response:
        """URL check: echo ``echostr`` (OA) or its decryption (WeCom / safe mode)."""
        label = account_label(request.match_info.get("account", ""), self.accounts)
        self.ctx.metrics.requests.labels(self.channel.value, label).inc()
        try:
            acc = self._account(request)
            token = acc.token.get_secret_value()
            ts = check_timestamp(
                self._query(request, "timestamp"), self.ctx.clock.now(),
                self.section.timestamp_window_s,
            )
            nonce = self._query(request, "nonce") or ""
            echostr = self._query(request, "echostr") or ""
            if not echostr:
                raise BadRequest("missing query parameter 'echostr'", reason="invalid")
            if self.always_encrypted:
                verify_signature(self._query(request, "msg_signature"), token, ts, nonce,
                                 echostr, name="msg_signature")
                plain = self._ciphers[acc.name].decrypt(echostr)
                return web.Response(text=plain.decode("utf-8", "replace"))
            verify_signature(self._query(request, "signature"), token, ts, nonce)
            return web.Response(text=echostr)
        except RequestRejected as exc:
            return self._reject(label, exc)

    # --- POST: messages and events -----------------------------------------------

    def _decrypt_body(self, request: web.Request, acc: WeChatAccount, body: bytes,
                      ts: str, nonce: str) -> bytes:
        token = acc.token.get_secret_value()
        encrypted = self.always_encrypted or request.query.get("encrypt_type", "raw") == "aes"
        signature = self._query(request, "signature")
        if not self.always_encrypted and (signature or not encrypted):
            verify_signature(signature, token, ts, nonce)
        if not encrypted:
            if acc.mode == "safe":
                raise Unauthorized("this account accepts encrypted (safe mode) messages only",
                                   reason="encryption_required")
            return body
        cipher = self._ciphers.get(acc.name)
        if cipher is None or acc.mode == "plain":
            raise BadRequest("encrypted message for an account without an EncodingAESKey",
                             reason="encryption_not_configured")
        outer = parse_xml(body)
        encrypt = outer.get("Encrypt", "")
        if not encrypt:
            raise BadRequest("encrypted body has no <Encrypt>", reason="invalid")
        verify_signature(self._query(request, "msg_signature"), token, ts, nonce, encrypt,
                         name="msg_signature")
        return cipher.decrypt(encrypt)

    async def post(self, request: web.Request) -> web.Response:
        """Verify, decrypt, normalise, mask, dedupe, produce; then ``success``."""
        started = time.perf_counter()
        m = self.ctx.metrics
        ch = self.channel.value
        label = account_label(request.match_info.get("account", ""), self.accounts)
        m.requests.labels(ch, label).inc()
        try:
            acc = self._account(request)
            ts = check_timestamp(
                self._query(request, "timestamp"), self.ctx.clock.now(),
                self.section.timestamp_window_s,
            )
            nonce = self._query(request, "nonce") or ""
            body = await read_limited(
                request, min(self.section.max_body_bytes, self.ctx.settings.max_body_bytes)
            )
            inner = self._decrypt_body(request, acc, body, ts, nonce)
            inbound = to_envelope(parse_xml(inner), self.channel, acc.name, self.ctx.now_ms())
        except RequestRejected as exc:
            return self._reject(label, exc)
        if inbound.envelope is None:
            m.filtered.labels(ch, inbound.skipped or "skipped").inc()
            return web.Response(text=SUCCESS)
        envelope = inbound.envelope  # PII is masked by the producer, on every path
        try:
            result = await produce_once(
                self.ctx.sink, self._deduper, [envelope], timeout_s=self.section.produce_timeout_s
            )
        except BrokerUnavailable as exc:
            m.rejected.labels(ch, label, "broker_unavailable").inc()
            log.warning("%s/%s: %s", ch, label, exc)
            return web.json_response(
                {"error": "broker_unavailable",
                 "message": "Kafka did not acknowledge; retry (the retry is deduplicated)"},
                status=503, headers={"Retry-After": "1"},
            )
        if result.duplicates:
            m.duplicates.labels(ch, label).inc(len(result.duplicates))
        if result.produced:
            m.accepted.labels(ch, label).inc(len(result.produced))
            m.ack_latency.labels(ch).observe(time.perf_counter() - started)
        return web.Response(text=SUCCESS)


class _NotFound(RequestRejected, LookupError):
    status = 404
    reason = "unknown_account"


def make_installer(config: CallbackSection, accounts: Mapping[str, WeChatAccount]) -> Installer:
    """``GET/POST`` at ``config.PATH`` for the given accounts (WeChat or WeCom, by ``config``)."""

    def install_accounts(app: web.Application, ctx: HttpContext) -> None:
        handler = CallbackHandler(ctx, config, accounts)
        app.router.add_get(config.PATH, handler.get)
        app.router.add_post(config.PATH, handler.post)

    return install_accounts


#: ``GET/POST /wechat/{account}`` with the accounts of ``channels.yaml``.
install = channel_installer(WeChatConfig, make_installer)
