"""Retry with exponential backoff, written once for every loop that must not give up.

:class:`Backoff` is the delay sequence (initial, doubled after each failure, capped,
reset on success, optionally jittered); :func:`retrying` awaits a call until it
succeeds (or, given ``attempts``, until it has failed that many times), logging each
failure it was told to expect and backing off in between.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Final, TypeVar, overload

__all__ = ["MAX_BACKOFF_S", "Backoff", "retrying"]

log = logging.getLogger(__name__)
T = TypeVar("T")
INITIAL_BACKOFF_S: Final = 0.1
MAX_BACKOFF_S: Final = 5.0


class Backoff:
    """Exponential backoff delays: ``initial_s``, doubled after each failure, at most ``max_s``.

    With ``jitter`` each wait is drawn uniformly from ``[0, delay]`` ("full jitter"), so
    writers that collided once do not collide again in step.
    """

    def __init__(self, initial_s: float = INITIAL_BACKOFF_S, max_s: float = MAX_BACKOFF_S,
                 *, jitter: bool = False) -> None:
        if initial_s <= 0 or max_s < initial_s:
            raise ValueError(f"backoff needs 0 < initial_s <= max_s, got {initial_s}, {max_s}")
        self.initial_s = initial_s
        self.max_s = max_s
        self.jitter = jitter
        self.delay_s = initial_s  # the next wait (its upper bound, with jitter)

    def __repr__(self) -> str:
        jitter = ", jitter" if self.jitter else ""
        return (f"Backoff(next={self.delay_s:g} s, initial={self.initial_s:g}, "
                f"max={self.max_s:g}{jitter})")

    def reset(self) -> None:
        """After a success: the next failure waits ``initial_s`` again."""
        self.delay_s = self.initial_s

    def next(self) -> float:
        """The delay to wait now; the one after it doubles."""
        delay = self.delay_s
        self.delay_s = min(self.max_s, delay * 2)
        if self.jitter:
            return random.uniform(0, delay)  # noqa: S311 - jitter, not crypto
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
    attempts: int | None = None,
    log_level: int = logging.WARNING,
    stop: None = None,
) -> T: ...


@overload
async def retrying(
    call: Callable[[], Awaitable[T]],
    retry_on: tuple[type[BaseException], ...],
    what: str,
    *,
    backoff: Backoff | None = None,
    attempts: int | None = None,
    log_level: int = logging.WARNING,
    stop: asyncio.Event,
) -> T | None: ...


async def retrying(
    call: Callable[[], Awaitable[T]],
    retry_on: tuple[type[BaseException], ...],
    what: str,
    *,
    backoff: Backoff | None = None,
    attempts: int | None = None,
    log_level: int = logging.WARNING,
    stop: asyncio.Event | None = None,
) -> T | None:
    """Await ``call()`` until it succeeds; back off after each failure in ``retry_on``.

    Any other exception propagates at once, and so does the failure of the last of
    ``attempts`` calls.

    Args:
        call: The step to run, e.g. ``lambda: worker.finish(batch)``.
        retry_on: Transient failures (Redis, Kafka, network).
        what: Names the step in the warning logged per failure.
        backoff: The delays (default: 0.1 s doubling to 5 s).
        attempts: At most this many calls (default: no limit); the last failure is raised.
        log_level: Of the per-failure log line (an expected conflict may log at DEBUG).
        stop: When set, give up and return None instead of trying again.
    """
    if attempts is not None and attempts < 1:
        raise ValueError(f"retrying needs attempts >= 1, got {attempts}")
    backoff = backoff or Backoff()
    failures = 0
    while True:
        try:
            return await call()
        except retry_on as exc:
            failures += 1
            if attempts is not None and failures >= attempts:
                raise
            if stop is not None and stop.is_set():
                return None
            log.log(log_level, "%s failed (%r); retrying in %.1f s", what, exc, backoff.delay_s)
            await backoff.wait(stop)
            if stop is not None and stop.is_set():
                return None
