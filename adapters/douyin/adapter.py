"""``POST /douyin/live``: verify, parse, dedupe, split chatter, produce in one batch, answer.

* ``live_comment``: one envelope per new comment to ``omni.inbound``; chatter
  (``adapters.douyin.chatter``) to ``omni.chatter``; both produced concurrently,
  each as one batch, and awaited (acks=all) before the answer.
* ``live_gift`` / ``live_like`` / ``live_fansclub``: not routed; one compact
  record per push to ``omni.signals`` for surge detection, and
  ``omni_adapter_signals_total{kind}`` += number of new events.
* Duplicated ``msg_id`` (within the push or already produced) are dropped.
* Back-pressure: at most ``max_in_flight`` verified pushes are processed at once;
  beyond that the answer is 429 with ``Retry-After`` (nothing is queued in memory).
  A push takes a slot only once its body is in (within the body deadline, else
  408) and its signature checked, so slow or unsigned requests never hold one.
* 503 with ``Retry-After`` when Kafka did not acknowledge: nothing was marked
  as seen, so Douyin's re-push goes through.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from aiohttp import web
from pydantic import SecretStr

from ...router import topics
from ...router.events import ChatterRecord, ChatterRule, SignalRecord
from ...router.exceptions import BrokerUnavailable, RequestRejected
from ...router.http import HttpContext, Installer, read_limited
from ...router.models import Channel, Envelope, message_id
from ...router.pii import mask_envelope
from ..channel_config import channel_installer
from ..dedupe import Deduper
from .chatter import ChatterRules
from .config import PATH, DouyinConfig
from .parse import LiveItem, comment_envelope, parse_items, signal_record
from .verify import PushHeaders, verify_push

__all__ = ["LivePushHandler", "install", "make_installer"]

log = logging.getLogger(__name__)
CHANNEL = Channel.LIVESTREAM.value
UNVERIFIED = "-"  # account label before the signature is verified


@dataclass(slots=True)
class LivePushHandler:
    """The ``POST /douyin/live`` handler and its per-process state."""

    ctx: HttpContext
    config: DouyinConfig
    secrets: Mapping[str, SecretStr]
    in_flight: int = field(default=0, init=False)
    _rules: ChatterRules = field(init=False)
    _deduper: Deduper | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self._rules = ChatterRules(self.config.chatter)
        if self.ctx.redis is not None:
            self._deduper = Deduper(self.ctx.redis, self.ctx.keys, self.config.dedupe_ttl_s)

    async def post(self, request: web.Request) -> web.Response:
        """Read and verify; then refuse with 429 when ``max_in_flight`` verified pushes
        are already being handled, else handle this one in a slot."""
        started = time.perf_counter()
        m = self.ctx.metrics
        cfg = self.config
        label = UNVERIFIED
        try:
            body = await read_limited(request, min(cfg.max_body_bytes,
                                                   self.ctx.settings.max_body_bytes))
            push = verify_push(request.headers, body, self.secrets, self.ctx.clock.now(),
                               cfg.timestamp_window_s)
            label = push.room_id
            items = parse_items(body, cfg.max_items)
        except RequestRejected as exc:
            m.requests.labels(CHANNEL, label).inc()
            m.rejected.labels(CHANNEL, label, exc.reason).inc()
            return web.json_response(
                {"err_no": exc.status, "err_msg": exc.reason, "message": str(exc)},
                status=exc.status,
            )
        m.requests.labels(CHANNEL, label).inc()
        if self.in_flight >= cfg.max_in_flight:
            m.rejected.labels(CHANNEL, label, "overloaded").inc()
            return web.json_response(
                {"err_no": 429, "err_msg": "overloaded", "message": "too many pushes in flight"},
                status=429, headers={"Retry-After": str(cfg.retry_after_s)},
            )
        self.in_flight += 1
        try:
            return await self._handle(push, items, started)
        finally:
            self.in_flight -= 1

    async def _fresh(self, room: str, items: list[LiveItem]) -> tuple[list[LiveItem], list[str]]:
        """Items not seen before (in this push or in Redis), and their dedupe ids."""
        unique: dict[str, LiveItem] = {}
        for item in items:
            unique.setdefault(message_id(Channel.LIVESTREAM, room, item.msg_id), item)
        ids = list(unique)
        if self._deduper is None or not ids:
            return list(unique.values()), ids
        flags = await self._deduper.seen_many(CHANNEL, ids)
        kept = [(i, unique[i]) for i, seen in zip(ids, flags, strict=True) if not seen]
        return [item for _, item in kept], [i for i, _ in kept]

    async def _handle(self, push: PushHeaders, items: list[LiveItem],
                      started: float) -> web.Response:
        m = self.ctx.metrics
        cfg = self.config
        label = room = push.room_id
        now_ms = self.ctx.now_ms()
        fresh, fresh_ids = await self._fresh(room, items)
        duplicates = len(items) - len(fresh)

        routed: list[Envelope] = []
        chatter: list[ChatterRecord] = []
        rules: dict[ChatterRule, int] = {}
        pii: dict[str, int] = {}
        signals: list[SignalRecord] = []
        if push.msg_type == "live_comment":
            for item in fresh:
                env, masked = mask_envelope(comment_envelope(item, room, now_ms))
                for kind, n in masked.counts.items():
                    pii[kind] = pii.get(kind, 0) + n
                rule = self._rules.classify(item.sec_openid, item.content, item.msg_id,
                                            now_ms / 1000)
                if rule is None:
                    routed.append(env)
                else:
                    rules[rule] = rules.get(rule, 0) + 1
                    chatter.append(ChatterRecord(env, rule))
        elif fresh:
            signals.append(signal_record(push.msg_type, room, fresh, now_ms))

        try:
            await self._produce(room, routed, chatter, signals, cfg.produce_timeout_s)
        except BrokerUnavailable as exc:
            m.rejected.labels(CHANNEL, label, "broker_unavailable").inc()
            log.warning("douyin/%s: Kafka did not acknowledge %d item(s): %r", room,
                        len(fresh), exc)
            return web.json_response(
                {"err_no": 503, "err_msg": "broker_unavailable", "message": "retry later"},
                status=503, headers={"Retry-After": str(cfg.retry_after_s)},
            )
        if self._deduper is not None:
            await self._deduper.mark_many(CHANNEL, fresh_ids)

        if duplicates:
            m.duplicates.labels(CHANNEL, label).inc(duplicates)
        if routed:
            m.accepted.labels(CHANNEL, label).inc(len(routed))
        for rule, n in rules.items():
            m.filtered.labels(CHANNEL, rule).inc(n)
        for kind, n in pii.items():
            m.pii_masked.labels(CHANNEL, kind).inc(n)
        if push.msg_type != "live_comment" and fresh:
            m.signals.labels(CHANNEL, push.msg_type).inc(len(fresh))
        m.ack_latency.labels(CHANNEL).observe(time.perf_counter() - started)
        return web.json_response({
            "err_no": 0, "err_msg": "success", "accepted": len(routed), "chatter": len(chatter),
            "signals": len(fresh) if signals else 0, "duplicates": duplicates,
        })

    async def _produce(self, room: str, routed: list[Envelope], chatter: list[ChatterRecord],
                       signals: list[SignalRecord], timeout_s: float) -> None:
        """The three sends at once, each within ``timeout_s`` (so the push is too)."""
        settings = self.ctx.settings
        sends = []
        if routed:
            sends.append(self.ctx.sink.send_envelopes(routed, timeout_s=timeout_s))
        if chatter:
            sends.append(self.ctx.sink.send_records(
                settings.topic(topics.CHATTER), [(room.encode(), c.to_json()) for c in chatter],
                timeout_s=timeout_s,
            ))
        if signals:
            sends.append(self.ctx.sink.send_records(
                settings.topic(topics.SIGNALS), [(s.room.encode(), s.to_json()) for s in signals],
                timeout_s=timeout_s,
            ))
        await asyncio.gather(*sends)


def make_installer(config: DouyinConfig, secrets: Mapping[str, SecretStr]) -> Installer:
    """An installer with the given settings and per-type secrets."""

    def install_push(app: web.Application, ctx: HttpContext) -> None:
        app.router.add_post(PATH, LivePushHandler(ctx, config, secrets).post)

    return install_push


#: ``POST /douyin/live`` configured from ``channels.yaml``.
install = channel_installer(DouyinConfig, make_installer)
