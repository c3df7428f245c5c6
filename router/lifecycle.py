"""Idempotent ``start()``/``stop()`` and ``async with``, written once.

Whatever owns a connection, a listener or a background task derives from
:class:`Lifecycle` and implements ``_start`` (acquire) and ``_stop`` (release).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Self

__all__ = ["Lifecycle"]


class Lifecycle:
    """``start``/``stop`` that may be called any number of times, from any task.

    ``start`` runs ``_start`` once until the next ``stop``; ``stop`` runs ``_stop``
    only after a successful start. The two never overlap. When ``_start`` raises,
    ``_stop`` releases whatever it had acquired (it must accept a half-started
    object) and the error propagates; a later ``start`` tries again.
    """

    _running: bool = False
    _lifecycle_lock: asyncio.Lock | None = None

    async def _start(self) -> None:
        """Acquire connections and start background work."""

    async def _stop(self) -> None:
        """Release everything ``_start`` acquired (also after a failed ``_start``)."""

    @property
    def running(self) -> bool:
        """True between a successful ``start`` and the next ``stop``."""
        return self._running

    def _lock(self) -> asyncio.Lock:
        if self._lifecycle_lock is None:
            self._lifecycle_lock = asyncio.Lock()
        return self._lifecycle_lock

    async def start(self) -> None:
        """Start, unless already started."""
        async with self._lock():
            if self._running:
                return
            try:
                await self._start()
            except BaseException:
                with contextlib.suppress(Exception):
                    await self._stop()
                raise
            self._running = True

    async def stop(self) -> None:
        """Stop, unless not started."""
        async with self._lock():
            if not self._running:
                return
            self._running = False
            await self._stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()
