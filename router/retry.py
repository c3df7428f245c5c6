"""Retry with exponential backoff, written once for every loop that must not give up.

:class:`Backoff` is the delay sequence (initial, doubled after each failure, capped,
reset on success); :func:`retrying` awaits a call until it succeeds, logging each
failure it was told to expect and backing off in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar, overload

__all__ = ["MAX_BACKOFF_S", "Backoff", "retrying"]

log = logging.getLogger(__name__)
T = TypeVar("T")
INITIAL_BACKOFF_S: Final = 0.1
MAX_BACKOFF_S: Final = 5.0


class Backoff:
    """Exponential backoff delays: ``initial_s``, doubled after each failure, at most ``max_s``."""

    def __init__(self, initial_s: float = INITIAL_BACKOFF_S, max_s: float = MAX_BACKOFF_S) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError(f"backoff needs 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.delay_s = initial_s  # the next wait

    def __repr__(self) -> str:
        return f"Backoff(next={self.delay_s:g} s, initial={self.initial_s:g}, max={self.max_s:g})"

    def reset(self) -> None:
        """After a success: the next failure waits ``initial_s`` again."""
        self.delay_s = self.initial_s

    def next(self) -> float:
        """The delay to wait now; the one after it doubles."""
        delay = self.delay_s
        self.delay_s = min(self.max_s, delay * 2)
        return delay

    async def wait(self, stop: asyncio.Event | None = None) -> None:
        """Sleep the next delay, or less when ``stop`` is set meanwhile."""
        delay = self.next()
        if stop is None:
            await asyncio.sleep(delay)  # backoff between attempts, not a synchronisation
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)


@overload
async def retrying(
    call: Callable[[], Awaitable[T]],
    retry_on: tuple[type[BaseException], ...],
    what: str,
    *,
    backoff: Backoff | None = None,
    stop: None = None,
) -> T: ...


@overload
async def retrying(
    call: Callable[[], Awaitable[T]],
    retry_on: tuple[type[BaseException], ...],
    what: str,
    *,
    backoff: Backoff | None = None,
    stop: asyncio.Event,
) -> T | None: ...


async def retrying(
    call: Callable[[], Awaitable[T]],
    retry_on: tuple[type[BaseException], ...],
    what: str,
    *,
    backoff: Backoff | None = None,
    stop: asyncio.Event | None = None,
) -> T | None:
    """Await ``call()`` until it succeeds; back off after each failure in ``retry_on``.

    Any other exception propagates at once.

    Args:
        call: The step to run, e.g. ``lambda: worker.finish(batch)``.
        retry_on: Transient failures (Redis, Kafka, network).
        what: Names the step in the warning logged per failure.
        backoff: The delays (default: 0.1 s doubling to 5 s).
        stop: When set, give up and return None instead of trying again.
    """
    backoff = backoff or Backoff()
    while True:
        try:
            return await call()
        except retry_on as exc:
            if stop is not None and stop.is_set():
                return None
            log.warning("%s failed (%r); retrying in %.1f s", what, exc, backoff.delay_s)
            await backoff.wait(stop)
            if stop is not None and stop.is_set():
                return None
