"""Inbound SMTP (aiosmtpd): accept mail for our mailboxes, produce, then answer 250.

Recipients are accepted at RCPT only when they are listed in
``OMNI_EMAIL_MAILBOXES`` or, for any other address at our domains, when
``OMNI_EMAIL_CATCH_ALL`` names the one account such mail gets. So the accounts
(envelope ``account`` and metric label) are a configured, bounded set, whatever
addresses a sender makes up. One DATA gives one envelope, whatever the number of
recipients: its account is the first accepted recipient's, and ``meta.mailboxes``
lists every accepted account in RCPT order. The adapter dedupes on the Message-ID
alone, so the same message arriving again (an MTA retry, or the sender's MTA
splitting the recipients into several transactions) is produced once.

SMTP replies (enhanced status codes, RFC 3463):

===================  ==========================================================
``250 2.0.0``        produced to Kafka and acknowledged (or a known duplicate)
``451 4.3.0``        the broker did not acknowledge: the sending MTA retries
``452 4.5.3``        too many recipients in one transaction
``501 5.1.3``        recipient address without a domain
``550 5.1.1``        unlisted mailbox at one of our domains and no catch-all
``552 5.3.4``        message over ``OMNI_SMTP_MAX_MESSAGE_BYTES``
``554 5.6.0``        not a usable mail (no headers, no sender, nothing to read)
``554 5.7.1``        not our domain: we are no relay
===================  ==========================================================

The server runs on the caller's event loop (not aiosmtpd's ``Controller``
thread), so it shares the producer and Redis client with the HTTP adapters.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref
from collections.abc import Callable
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

from ...router.exceptions import BrokerUnavailable, ConfigError
from ...router.http import HttpContext
from ...router.lifecycle import Lifecycle
from ...router.settings import EmailSettings
from ..dedupe import Deduper
from .config import CHANNEL
from .parse import MalformedMail, parse_mail, to_envelope

__all__ = ["InboundMailHandler", "SmtpServer"]

log = logging.getLogger(__name__)
# aiosmtpd's own logger writes every envelope sender at INFO ("sender: <address>",
# ">> MAIL FROM:<address>"): personal data in the logs (tests/test_pii_audit.py).
_LIBRARY_LOG = "mail.log"
_NO_ACCOUNT = "-"  # metric label when no mailbox of ours is involved (bounded cardinality)


def dedupe_id(mailbox: str, message_id: str) -> str:
    """Dedupe key part of the IMAP poller: one key per polled mailbox and Message-ID."""
    return f"{mailbox}|{message_id}"


def message_dedupe_id(message_id: str) -> str:
    """Dedupe key part of inbound SMTP: one key per Message-ID, whatever the recipients
    (the empty mailbox part never clashes with an IMAP account, which is never empty)."""
    return dedupe_id("", message_id)


def accounts_of(config: EmailSettings, addresses: list[str]) -> list[str]:
    """The accounts of the accepted recipients, each once, in RCPT order."""
    accounts: list[str] = []
    for address in addresses:
        account = config.account_for(address)
        if account is not None and account not in accounts:
            accounts.append(account)
    return accounts


class InboundMailHandler:
    """aiosmtpd handler: recipient policy at RCPT, parse/mask/dedupe/produce at DATA."""

    def __init__(
        self, ctx: HttpContext, config: EmailSettings, deduper: Deduper | None = None
    ) -> None:
        self._ctx = ctx
        self._config = config
        self._deduper = deduper

    def _reject(self, account: str, reason: str, reply: str) -> str:
        self._ctx.metrics.rejected.labels(CHANNEL, account, reason).inc()
        return reply

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept listed mailboxes (others with a catch-all), at most ``max_recipients``."""
        cfg = self._config
        if len(envelope.rcpt_tos) >= cfg.max_recipients:
            return self._reject(
                _NO_ACCOUNT,
                "too_many_recipients",
                f"452 4.5.3 Too many recipients (at most {cfg.max_recipients} per message)",
            )
        local, at, domain = address.rpartition("@")
        if not at or not local or not domain:
            return self._reject(
                _NO_ACCOUNT, "bad_address", f"501 5.1.3 Bad recipient address syntax: <{address}>"
            )
        if not cfg.accepts_domain(domain):
            return self._reject(
                _NO_ACCOUNT, "relay_denied", f"554 5.7.1 <{address}>: Relay access denied"
            )
        mailbox = address.lower()
        if cfg.account_for(mailbox) is None:
            return self._reject(
                _NO_ACCOUNT,
                "unknown_recipient",
                f"550 5.1.1 <{address}>: Recipient address rejected: no such mailbox",
            )
        if mailbox not in envelope.rcpt_tos:
            envelope.rcpt_tos.append(mailbox)
            envelope.rcpt_options.extend(rcpt_options)
        return "250 2.1.5 OK"

    async def handle_DATA(
        self, server: SMTP, session: Session, envelope: Envelope
    ) -> str:
        """Parse, mask, dedupe, produce (acks=all); 250 only after the broker's ack."""
        try:
            return await self._deliver(envelope)
        except Exception:
            # A bug must not kill the session or lose mail: the MTA retries a 4xx.
            log.exception("smtp: unexpected error while delivering a message")
            return self._reject(
                _NO_ACCOUNT, "internal_error", "451 4.3.0 Local error in processing; try again"
            )

    async def _deliver(self, envelope: Envelope) -> str:
        started = time.perf_counter()
        ctx, cfg = self._ctx, self._config
        accounts = accounts_of(cfg, list(envelope.rcpt_tos))
        if not accounts:  # RCPT accepted none: aiosmtpd answers 503 before DATA
            return self._reject(_NO_ACCOUNT, "no_recipient", "554 5.5.1 No valid recipients")
        account = accounts[0]
        raw = envelope.original_content  # bytes: decode_data=False
        if raw is None:
            content = envelope.content or b""
            if isinstance(content, str):
                content = content.encode("utf-8", "surrogateescape")
            raw = content
        ctx.metrics.requests.labels(CHANNEL, account).inc()
        if len(raw) > cfg.max_message_bytes:
            return self._reject(
                account,
                "too_large",
                f"552 5.3.4 Message size {len(raw)} bytes exceeds the fixed limit of "
                f"{cfg.max_message_bytes} bytes",
            )
        try:
            mail = parse_mail(raw)
        except MalformedMail as exc:
            return self._reject(account, exc.reason, f"554 5.6.0 Malformed message: {exc}")
        sender = envelope.mail_from or ""
        if mail.auto_submitted or sender in ("", "<>"):
            # Out-of-office replies and bounces would loop with our own auto-acks.
            ctx.metrics.filtered.labels(CHANNEL, "auto_submitted").inc()
            return "250 2.0.0 OK: auto-submitted mail is not routed"
        try:
            env = to_envelope(
                mail,
                account,
                ctx.now_ms(),
                salt=ctx.settings.customer_id_salt.get_secret_value(),
                sender=sender,
            )
        except MalformedMail as exc:
            return self._reject(account, exc.reason, f"554 5.6.0 Malformed message: {exc}")
        env = dataclasses.replace(env, meta={**env.meta, "mailboxes": ",".join(accounts)})
        key = message_dedupe_id(mail.message_id)
        if self._deduper is not None and await self._deduper.seen(CHANNEL, key):
            ctx.metrics.duplicates.labels(CHANNEL, account).inc()
            return f"250 2.0.0 OK: <{mail.message_id}> already queued"
        try:
            await ctx.sink.send_envelopes([env])
        except BrokerUnavailable as exc:
            log.warning("smtp: %s", exc)
            return self._reject(
                account,
                "broker_unavailable",
                "451 4.3.0 Temporary failure: message broker unavailable, try again later",
            )
        if self._deduper is not None:
            await self._deduper.mark(CHANNEL, key)
        ctx.metrics.accepted.labels(CHANNEL, account).inc()
        ctx.metrics.ack_latency.labels(CHANNEL).observe(time.perf_counter() - started)
        return f"250 2.0.0 OK: queued as <{mail.message_id}>"


class _SMTP(SMTP):
    """aiosmtpd's protocol with RFC 3463 codes on its own size refusals."""

    def __init__(
        self, handler: InboundMailHandler, *, on_oversize: Callable[[], None], **kwargs: Any
    ) -> None:
        super().__init__(handler, **kwargs)
        self._on_oversize = on_oversize

    async def push(self, status: Any) -> None:
        """Rewrite aiosmtpd's ``552 Error: ...`` size replies to ``552 5.3.4``."""
        if isinstance(status, str) and status.startswith("552 Error"):
            self._on_oversize()
            status = (
                f"552 5.3.4 Message size exceeds the fixed limit of {self.data_size_limit} bytes"
            )
        await super().push(status)


class SmtpServer(Lifecycle):
    """Inbound SMTP listener; ``start``/``stop`` are idempotent, ``async with`` works.

    Args:
        ctx: The adapters' shared context (producer, metrics, Redis, clock).
        config: E-mail settings (domains, mailboxes, limits, port).
        deduper: Drops MTA retries of an already produced Message-ID; default:
            one on ``ctx.redis`` when there is a Redis client, else none.
    """

    def __init__(
        self,
        ctx: HttpContext,
        config: EmailSettings,
        *,
        deduper: Deduper | None = None,
    ) -> None:
        if deduper is None and ctx.redis is not None:
            deduper = Deduper(ctx.redis, ctx.keys, config.dedupe_ttl_s)
        self._ctx = ctx
        self._config = config
        self.handler = InboundMailHandler(ctx, config, deduper)
        self._server: asyncio.Server | None = None
        self._sessions: weakref.WeakSet[_SMTP] = weakref.WeakSet()

    def __repr__(self) -> str:
        state = f"listening on {self._config.smtp_host}:{self.port}" if self._server else "stopped"
        return f"SmtpServer({state}, domains={list(self._config.domains)})"

    @property
    def port(self) -> int:
        """The bound port (useful when configured as 0); 0 when stopped."""
        if self._server is None or not self._server.sockets:
            return 0
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def _oversize(self) -> None:
        self._ctx.metrics.rejected.labels(CHANNEL, _NO_ACCOUNT, "too_large").inc()

    def _protocol(self) -> _SMTP:
        cfg = self._config
        proto = _SMTP(
            self.handler,
            on_oversize=self._oversize,
            data_size_limit=cfg.max_message_bytes,
            enable_SMTPUTF8=True,
            decode_data=False,
            hostname=cfg.smtp_hostname,
            ident="omniroute ESMTP",
            timeout=cfg.smtp_timeout_s,
            loop=asyncio.get_running_loop(),
        )
        self._sessions.add(proto)
        return proto

    async def _start(self) -> None:
        """Listen on ``smtp_host:smtp_port``."""
        if not self._config.domains:
            raise ConfigError(
                "inbound SMTP has no mailbox domain: set OMNI_EMAIL_DOMAINS "
                "(e.g. 'kefu.example.com'), or mail for every domain would be refused"
            )
        if not self._config.mailboxes and self._config.catch_all is None:
            raise ConfigError(
                "inbound SMTP has no mailbox: set OMNI_EMAIL_MAILBOXES (e.g. "
                "'kefu@kefu.example.com,vip@kefu.example.com') and/or OMNI_EMAIL_CATCH_ALL "
                "(the one account for mail to any other address at OMNI_EMAIL_DOMAINS, "
                "e.g. 'support'), or every recipient would be refused"
            )
        library = logging.getLogger(_LIBRARY_LOG)
        if library.level == logging.NOTSET:  # unless the operator set it on purpose
            library.setLevel(logging.WARNING)
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self._protocol, host=self._config.smtp_host, port=self._config.smtp_port
        )
        log.info("smtp: %r", self)

    async def _stop(self) -> None:
        """Stop listening and close open sessions (an unfinished DATA is retried by the MTA)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.close()
        for proto in list(self._sessions):
            if proto.transport is not None:
                proto.transport.close()
        self._sessions.clear()
        await server.wait_closed()
