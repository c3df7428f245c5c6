"""The clock seam: workers and HTTP handlers ask it for the time; tests hand in one
they advance (the rehearsal, a virtual one)."""

from __future__ import annotations

import time
from typing import Protocol

__all__ = ["Clock", "SystemClock"]


class Clock(Protocol):
    """Wall clock in seconds since the epoch."""

    def now(self) -> float:
        """Seconds since the epoch."""


class SystemClock:
    """The real wall clock."""

    def now(self) -> float:
        """Seconds since the epoch."""
        return time.time()
