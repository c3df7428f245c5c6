"""The router worker process: a faust-streaming App built by a factory.

faust supplies the worker runtime: lifecycle and signal handling, supervision of
the routing task, timers and the web server (/metrics, /healthz, /readyz). The
hot path itself (:class:`~router.worker.BatchRouter`) consumes in batches with
aiokafka, because faust's per-event stream path costs about ten times the budget
of a message (see README, "Benchmarks").
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Sequence
from typing import Any

import faust
from aiokafka.errors import KafkaError
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from redis.exceptions import RedisError

from . import kafka, topics
from .exceptions import BrokerUnavailable
from .http import Readiness, metrics_body
from .keys import Keys
from .metrics import RouterMetrics
from .queues import RedisQueueStore
from .redis_client import connect
from .relax import Move, Relaxer
from .reload import PipelineHolder
from .settings import Settings
from .worker import BatchRouter

__all__ = ["WorkerRuntime", "create_worker_app"]

log = logging.getLogger(__name__)
STATS_INTERVAL_S = 2.0
#: How long faust's own consumer may take to stop. Routing does not read through it (the
#: hot path has its own consumer, drained and committed first); with the broker gone,
#: its stop would wait out mode's default of 60 s, longer than a supervisor's usual
#: grace period between SIGTERM and SIGKILL.
FAUST_CONSUMER_STOP_S = 5.0


class WorkerRuntime:
    """Everything the worker owns, composed in dependency order: Redis -> store -> router."""

    def __init__(self, settings: Settings, registry: CollectorRegistry) -> None:
        self.settings = settings
        self.metrics = RouterMetrics(registry)
        self.holder = PipelineHolder(settings.config_dir, self.metrics)
        self.redis: Redis = connect(settings.redis_url, socket_timeout=10)
        routing = self.holder().config.routing
        self.store = RedisQueueStore(
            self.redis,
            Keys(settings.redis_prefix),
            decision_ttl_s=settings.decision_ttl_s,
            repeat_window_s=routing.priority.repeat.window_s,
            sticky_window_s=routing.sticky.window_s,
            tier_cache_ttl_s=settings.tier_cache_ttl_s,
            tier_cache_size=settings.tier_cache_size,
        )
        self.router = BatchRouter(settings, self.holder, self.store, self.metrics)
        self.relaxer = Relaxer(self.redis, Keys(settings.redis_prefix))
        self.ready = False
        self.readiness = Readiness(
            {"worker": self._started, "redis": self._ping_redis, "kafka": self.router.check_broker},
            info=lambda: {"config_version": self.holder.version},
        )

    async def _started(self) -> None:
        if not self.ready:
            raise RuntimeError("starting: not yet consuming")

    async def _ping_redis(self) -> None:
        await self.redis.ping()

    def reload(self) -> None:
        """Re-read the configuration; the next batch uses it."""
        if self.holder.reload():
            routing = self.holder().config.routing
            self.store.configure(
                repeat_window_s=routing.priority.repeat.window_s,
                sticky_window_s=routing.sticky.window_s,
            )

    async def run(self) -> None:
        """Route until cancelled; then close everything, newest first."""
        loop = asyncio.get_running_loop()
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self.redis.ping()
            await self.router.start()
            self.ready = True
            log.info("router worker ready (config %s)", self.holder.version)
            await self.router.run()
        finally:
            self.ready = False
            await self.router.stop()
            await self.redis.aclose()
            log.info("router worker stopped after %d records", self.router.processed)

    async def tick(self) -> None:
        """Periodic: queue gauges + overflow view, skill relaxation, reload on file change."""
        if self.holder.reload_if_changed():
            self.reload()
        if self.ready:
            try:
                await self.router.refresh_stats()
                await self.relax(int(time.time() * 1000))
            except (RedisError, KafkaError, OSError, BrokerUnavailable) as exc:
                log.warning("queue stats / relaxation (retried next tick): %r", exc)

    async def relax(self, now_ms: int) -> list[Move]:
        """Move messages waiting past their rule's ``relax_after_s``; tell the SLA worker.

        Each move is published on omni.agent-events as a system ``transfer``, so the
        SLA state follows the message to its new group (policy re-evaluated). The move's
        script puts the event in an outbox; the outbox is published here, this tick's
        events and any an earlier tick could not publish (broker down).

        Raises:
            BrokerUnavailable: the events stay in the outbox for the next tick.
        """
        moves = await self.relaxer.run_once(self.holder().config.routing.rules, now_ms)
        for move in moves:
            self.metrics.relaxations.labels(move.from_group, move.to_group).inc()
        topic = self.settings.topic(topics.AGENT_EVENTS)

        async def publish(records: Sequence[tuple[bytes, bytes]]) -> None:
            await self.router.publish(topic, records)

        await self.relaxer.flush(publish)
        return moves


def _bound_consumer_stop(app: faust.App, seconds: float) -> None:
    """Cap the stop of faust's consumer thread (started by now: tasks run after it)."""
    thread = getattr(app.consumer, "_thread", None)
    if thread is not None:
        thread.shutdown_timeout = seconds


def create_worker_app(
    settings: Settings, registry: CollectorRegistry | None = None
) -> tuple[faust.App, WorkerRuntime]:
    """Build (not start) the faust App of the router worker and its runtime."""
    registry = registry or CollectorRegistry()
    runtime = WorkerRuntime(settings, registry)
    app_id = f"{settings.consumer_group}-worker"
    # faust creates its data directory (empty: the store is in memory) but not its parent
    settings.worker_data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        app_id,
        broker=f"kafka://{settings.kafka_bootstrap}",
        # faust binds 0.0.0.0 unless told otherwise; web_host only names the URL
        web_bind=settings.http_host,
        web_host=settings.http_host,
        web_port=settings.worker_web_port,
        web_in_thread=False,
        # our pages only: faust's own expose its tables, the cluster's URLs and stats
        web_tables_enabled=False,
        web_router_enabled=False,
        web_stats_enabled=False,
        web_graph_enabled=False,
        web_metrics_enabled=False,
        datadir=settings.worker_data_dir / f"{app_id}-data",
        topic_partitions=settings.topic_partitions,
        topic_allow_declare=True,
        store="memory://",
        producer_acks=-1,
        **kafka.faust_group_membership(settings),
    )

    async def route() -> None:
        _bound_consumer_stop(app, FAUST_CONSUMER_STOP_S)
        await runtime.run()

    async def stats() -> None:
        await runtime.tick()

    # registered by call, not as decorators: faust is untyped
    app.task(route)
    app.timer(interval=STATS_INTERVAL_S)(stats)

    # faust serves its own web app; the handlers share the probes' logic in router.http
    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        body, content_type = metrics_body(registry)
        return web.bytes(body, content_type=content_type.split(";")[0])

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        return web.json({"status": "ok"})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        code, body = await runtime.readiness.status()
        return web.json(body, status=code)

    return app, runtime
