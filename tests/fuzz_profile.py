"""The one hypothesis profile of the fuzz and property suites (run in CI with the rest).

Each suite has a fixed example budget (``max_examples``, no more in CI than on a
laptop) and a per-example deadline: an input that makes a parser hang or
backtrack fails its test, naming the input, instead of stalling the whole job
until pytest's timeout. The deadline is generous, because the integration suites
talk to the real broker and Redis on a shared machine: it is there to catch
hangs, not to measure speed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Final

from hypothesis import HealthCheck, settings

__all__ = ["FUZZ_DEADLINE", "fuzz_settings"]

#: Per example. A normal example takes milliseconds (tens with a broker round trip).
FUZZ_DEADLINE: Final = timedelta(seconds=10)


def fuzz_settings(max_examples: int) -> settings:
    """Settings for one fuzz test: ``max_examples`` examples, each within the deadline."""
    return settings(
        max_examples=max_examples,
        deadline=FUZZ_DEADLINE,
        # function-scoped fixtures (broker, Redis, app) are shared by the examples of
        # one test on purpose; hostile inputs are large and slow to draw by design
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                               HealthCheck.data_too_large],
    )
