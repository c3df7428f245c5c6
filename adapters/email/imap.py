"""IMAP IDLE poller (aioimaplib): fetch UNSEEN mail, produce it, then flag it \\Seen.

A message is flagged ``\\Seen`` only after the broker acknowledged its envelope
(or it was a known duplicate, filtered, or unusable), so a crash or a broker
outage never loses mail: it is still UNSEEN at the next connect. Between
batches the poller IDLEs (RFC 2177) and re-issues IDLE every ``imap_idle_s``.
Disconnects and errors reconnect with exponential backoff.

Mail that lands after the ``UNSEEN`` search is announced by the server, once, with
an untagged ``EXISTS``: either with the answer to one of the drain's own commands
(the search, a ``FETCH``, a ``STORE``), and then the poller searches again before
it IDLEs; or, when no command follows, right after IDLE starts, which wakes it.
So no mail waits for the end of the IDLE period.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import ssl
import time
from collections.abc import Callable
from typing import Any

import aioimaplib

from ...router.exceptions import BrokerUnavailable, ConfigError, OmniError
from ...router.http import HttpContext
from ...router.lifecycle import Lifecycle
from ...router.retry import Backoff
from ...router.settings import EmailSettings
from ..dedupe import Deduper
from .config import CHANNEL
from .parse import MalformedMail, parse_mail, to_envelope
from .smtp import dedupe_id

__all__ = ["ImapError", "ImapPoller"]

log = logging.getLogger(__name__)
_LITERAL = re.compile(rb"\{(\d+)\}$")
_SIZE_CHANGE = re.compile(rb"^(?:\* )?(\d+) (EXISTS|EXPUNGE)\s*$", re.IGNORECASE)


class ImapError(OmniError, ConnectionError):
    """The IMAP server refused a command or went away; the poller reconnects."""


async def _bounded(aw: Any, timeout_s: float, what: str) -> Any:
    """Await ``aw`` for at most ``timeout_s``, then give up on it without waiting.

    ``asyncio.wait_for`` waits for the cancelled awaitable to finish; aioimaplib's
    command futures on a dead connection may never do so, which would hang the
    poller instead of reconnecting.
    """
    task = asyncio.ensure_future(aw)
    done, _ = await asyncio.wait({task}, timeout=timeout_s)
    if not done:
        task.cancel()
        raise ImapError(f"{what} did not complete within {timeout_s:g} s")
    return task.result()


def _check(response: Any, what: str) -> Any:
    if response.result != "OK":
        detail = b" ".join(bytes(x) for x in response.lines[-1:]).decode(errors="replace")
        raise ImapError(f"IMAP {what} failed: {response.result} {detail[:200]}")
    return response


def _watch_size(client: Any, on_change: Callable[[bytes, int], None]) -> None:
    """Call ``on_change(kind, n)`` for every ``* n EXISTS`` / ``* n EXPUNGE``.

    aioimaplib hands an untagged response to the pending command it belongs to and
    drops the others: an ``EXISTS`` that comes with the answer to ``UID STORE`` or
    ``UID SEARCH`` is only logged. The server announces each new message once, so
    the poller must see that line, whichever command it comes with.
    """
    protocol = client.protocol
    dispatch = protocol._untagged_response  # every untagged line passes here

    def observe(line: bytes) -> Any:
        change = _SIZE_CHANGE.match(line)
        if change is not None:
            on_change(change.group(2).upper(), int(change.group(1)))
        return dispatch(line)

    protocol._untagged_response = observe


def _literal(lines: list[Any]) -> bytes | None:
    """The message bytes of a ``UID FETCH (BODY.PEEK[])`` response."""
    for i, line in enumerate(lines[:-1]):
        if isinstance(line, bytes | bytearray) and _LITERAL.search(bytes(line)):
            nxt = lines[i + 1]
            if isinstance(nxt, bytearray):
                return bytes(nxt)
    return None


class ImapPoller(Lifecycle):
    """Polls one IMAP folder; ``start``/``stop`` are idempotent, ``async with`` works.

    Args:
        ctx: The adapters' shared context (producer, metrics, Redis, clock).
        config: E-mail settings (``OMNI_IMAP_*``).
        deduper: Drops mail already produced (same mailbox + Message-ID); default
            one on ``ctx.redis`` when there is a Redis client.
        ssl_context: For ``imap_ssl``; default: the system trust store.
    """

    def __init__(
        self,
        ctx: HttpContext,
        config: EmailSettings,
        *,
        deduper: Deduper | None = None,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        if deduper is None and ctx.redis is not None:
            deduper = Deduper(ctx.redis, ctx.keys, config.dedupe_ttl_s)
        self._ctx = ctx
        self._config = config
        self._deduper = deduper
        self._ssl = ssl_context
        self._task: asyncio.Task[None] | None = None
        self._client: Any = None
        self._lost = False
        self._lost_event = asyncio.Event()  # set with _lost: wakes a waiting IDLE
        self._stopping = False
        self._announced = False  # the folder grew since the last UNSEEN search began
        self._size = 0  # messages in the folder, as the server last told us
        self._done_sent = False  # DONE already written for the pending IDLE
        self.account = (config.imap_account or config.imap_user).lower()
        self.connects = 0  # successful logins (1 + reconnects)
        self.produced = 0  # envelopes produced since start
        self.connected = asyncio.Event()  # set while logged in and selected

    def __repr__(self) -> str:
        cfg = self._config
        state = "running" if self._task is not None else "stopped"
        where = f"{cfg.imap_user}@{cfg.imap_host}:{cfg.imap_port}/{cfg.imap_folder}"
        return f"ImapPoller({state}, {where})"

    async def _start(self) -> None:
        """Start polling in the background (connect errors are retried, not raised)."""
        cfg = self._config
        if not cfg.imap_host or not cfg.imap_user:
            raise ConfigError("IMAP poller needs OMNI_IMAP_HOST and OMNI_IMAP_USER")
        self._task = asyncio.create_task(self._run(), name="omni-imap-poller")
        log.info("imap: %r", self)

    async def _stop(self) -> None:
        """Stop polling and log out."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stopping = True
        # Python 3.11's wait_for can swallow a cancel that races a completing
        # command (aioimaplib wraps every command in one): cancel until done.
        while not task.done():
            task.cancel()
            await asyncio.wait({task}, timeout=0.5)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await self._close()
        self._stopping = False

    # --- connection -----------------------------------------------------------------------

    def _on_lost(self, exc: Exception | None) -> None:
        self._lost = True
        self._lost_event.set()
        self.connected.clear()
        client = self._client
        if client is not None:
            # Wake an IDLE wait: the connection is gone, nothing more will arrive.
            client.protocol.idle_queue.put_nowait(aioimaplib.STOP_WAIT_SERVER_PUSH)

    def _on_size(self, kind: bytes, n: int) -> None:
        if kind == b"EXPUNGE":
            self._size = max(0, self._size - 1)
        elif n > self._size:  # some servers repeat an unchanged count: not new mail
            self._size = n
            self._announced = True
        else:
            self._size = n

    async def _connect(self) -> Any:
        cfg = self._config
        ssl_context = None
        if cfg.imap_ssl:
            ssl_context = self._ssl or ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self._lost = False
        self._lost_event.clear()
        client = aioimaplib.IMAP4(
            host=cfg.imap_host,
            port=cfg.imap_port,
            timeout=cfg.imap_timeout_s,
            conn_lost_cb=self._on_lost,
            ssl_context=ssl_context,
        )
        self._client = client
        self._size = 0  # SELECT tells
        _watch_size(client, self._on_size)
        await client.wait_hello_from_server()
        _check(await client.login(cfg.imap_user, cfg.imap_password.get_secret_value()), "LOGIN")
        _check(await client.select(cfg.imap_folder), f"SELECT {cfg.imap_folder}")
        self.connects += 1
        self.connected.set()
        return client

    async def _close(self) -> None:
        client, self._client = self._client, None
        self.connected.clear()
        if client is None:
            return
        with contextlib.suppress(Exception):
            if client.has_pending_idle() and not self._done_sent:
                client.idle_done()
            await _bounded(client.logout(), 2.0, "LOGOUT")
        with contextlib.suppress(Exception):
            if client.protocol.transport is not None:
                client.protocol.transport.close()

    async def _run(self) -> None:
        cfg = self._config
        backoff = Backoff(cfg.imap_backoff_initial_s, cfg.imap_backoff_max_s)
        while not self._stopping:
            try:
                client = await self._connect()
                backoff.reset()
                while not self._stopping:
                    await self.drain(client)
                    if self._announced:
                        continue  # new mail was announced while draining: search again
                    await self._idle(client)
            except asyncio.CancelledError:
                raise
            except (aioimaplib.AioImapException, OSError, TimeoutError, ImapError,
                    BrokerUnavailable) as exc:
                log.warning("imap: %s; reconnecting in %.1f s", exc or type(exc).__name__,
                            backoff.delay_s)
            except Exception:
                log.exception("imap: unexpected error; reconnecting in %.1f s", backoff.delay_s)
            await self._close()
            await backoff.wait()

    async def _idle(self, client: Any) -> None:
        """IDLE until the server pushes something, the IDLE period ends or the line drops."""
        if self._lost:
            raise ImapError("IMAP connection lost")
        cfg = self._config
        self._done_sent = False
        idle = await _bounded(client.idle_start(timeout=cfg.imap_idle_s), cfg.imap_timeout_s,
                              "IDLE start")
        push = asyncio.ensure_future(client.wait_server_push(timeout=cfg.imap_idle_s + 5))
        lost = asyncio.ensure_future(self._lost_event.wait())
        try:
            # whichever comes first: a push, the end of the IDLE period, a dropped line
            await asyncio.wait({push, lost}, timeout=cfg.imap_idle_s + 5,
                               return_when=asyncio.FIRST_COMPLETED)
        finally:
            lost.cancel()
            if not push.done():
                push.cancel()
            elif not push.cancelled():
                push.exception()  # a TimeoutError just ends the IDLE period: re-issue it
            if client.has_pending_idle() and not self._done_sent:
                self._done_sent = True
                client.idle_done()
        if self._lost:
            raise ImapError("IMAP connection lost while idling")
        await _bounded(idle, cfg.imap_timeout_s, "IDLE")

    # --- mail -------------------------------------------------------------------------

    async def drain(self, client: Any) -> int:
        """Produce every UNSEEN message, oldest first; return how many were produced.

        Afterwards ``_announced`` tells whether the server announced new mail since the
        search began (with the answer to the search, a FETCH or a STORE): that mail may
        not be in the search's result, and the server will not announce it again at
        IDLE, so the caller drains again before it IDLEs.
        """
        self._announced = False
        response = _check(await client.uid_search("UNSEEN", charset=None), "UID SEARCH UNSEEN")
        uids = [u for line in response.lines[:-1] for u in bytes(line).split() if u.isdigit()]
        produced = 0
        for uid in sorted(uids, key=int):
            fetched = _check(await client.uid("fetch", uid.decode(), "(BODY.PEEK[])"),
                             f"UID FETCH {uid.decode()}")
            raw = _literal(fetched.lines)
            if raw is None:
                continue  # expunged meanwhile
            produced += await self._deliver(raw)
            # Only now: the envelope is on Kafka (or the mail needs no routing).
            _check(await client.uid("store", uid.decode(), "+FLAGS.SILENT", "(\\Seen)"),
                   f"UID STORE {uid.decode()}")
        return produced

    async def _deliver(self, raw: bytes) -> int:
        """Parse, mask, dedupe and produce one mail; raises BrokerUnavailable."""
        started = time.perf_counter()
        m, account = self._ctx.metrics, self.account
        m.requests.labels(CHANNEL, account).inc()
        if len(raw) > self._config.max_message_bytes:
            m.rejected.labels(CHANNEL, account, "too_large").inc()
            return 0
        try:
            mail = parse_mail(raw)
            if mail.auto_submitted:
                m.filtered.labels(CHANNEL, "auto_submitted").inc()
                return 0
            env = to_envelope(mail, account, self._ctx.now_ms(),
                              salt=self._ctx.settings.customer_id_salt.get_secret_value())
        except MalformedMail as exc:
            log.warning("imap: unusable mail flagged seen without routing: %s", exc)
            m.rejected.labels(CHANNEL, account, exc.reason).inc()
            return 0
        key = dedupe_id(account, mail.message_id)
        if self._deduper is not None and await self._deduper.seen(CHANNEL, key):
            m.duplicates.labels(CHANNEL, account).inc()
            return 0
        await self._ctx.sink.send_envelopes([env])
        if self._deduper is not None:
            await self._deduper.mark(CHANNEL, key)
        m.accepted.labels(CHANNEL, account).inc()
        m.ack_latency.labels(CHANNEL).observe(time.perf_counter() - started)
        self.produced += 1
        return 1
