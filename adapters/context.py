"""What every channel adapter is handed: settings, the producer, metrics, Redis, a clock."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from aiohttp import web
from redis.asyncio import Redis

from adapters.producer import EnvelopeSink
from router.keys import Keys
from router.metrics import AdapterMetrics
from router.settings import Settings

__all__ = ["AdapterContext", "Clock", "Installer", "SystemClock"]


class Clock(Protocol):
    """Wall clock in seconds; tests hand in a fixed one."""

    def now(self) -> float:
        """Seconds since the epoch."""


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()


@dataclass(slots=True)
class AdapterContext:
    """Shared dependencies of the adapters' HTTP app."""

    settings: Settings
    sink: EnvelopeSink
    metrics: AdapterMetrics
    redis: Redis | None = None
    clock: Clock = field(default_factory=SystemClock)
    keys: Keys = field(init=False)

    def __post_init__(self) -> None:
        self.keys = Keys(self.settings.redis_prefix)

    def now_ms(self) -> int:
        """Current wall time in milliseconds."""
        return int(self.clock.now() * 1000)


#: A channel module's ``install(app, ctx)``: adds its routes (and startup hooks) to the app.
Installer = Callable[[web.Application, AdapterContext], None]
