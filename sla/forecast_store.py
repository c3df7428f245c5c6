"""The surge forecast's buckets and state in Redis, shared by every SLA worker.

Every key is under the ``{surge}`` hash tag (one slot, with the detector's windows),
so each script below touches one slot on Redis Cluster:

* ``Keys.surge_bucket(i)``: hash, scope -> count of short bucket ``i``; the record
  script adds each record once: it first adds the record's id (message id, agent
  event id, signal record offset) to ``Keys.surge_seen(i)`` (kept as long as the
  bucket and the window) and counts only when the id is new, so a batch replayed
  after a crash is not counted twice. The same
  script adds to the detector's window (``Keys.surge_window``), under the same test;
* ``Keys.forecast_state()``: the :class:`~sla.forecast.ForecastState` JSON;
* ``Keys.forecast_lease()``: one worker at a time evaluates (``SET NX PX`` of a
  token); it evaluates every bucket closed since the state's ``last_bucket``, the
  caller produces the signals, then ``commit`` writes the state only while the
  token still holds the lease (a worker that lost it writes nothing). A crash
  between producing and committing re-evaluates those buckets: at least once;
* ``Keys.forecast_groups()``: group -> the latest :class:`~sla.forecast.GroupForecast`,
  which every worker exports as gauges.
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson
from redis.asyncio import Redis

from ..router.keys import Keys
from ._redis import as_text
from .config import SurgeConfig
from .forecast import (
    ForecastState,
    GroupForecast,
    GroupLoad,
    SurgeForecaster,
    merge_window_signals,
)

__all__ = ["Count", "ForecastStore", "PendingForecast"]

LEASE_MS: Final = 15_000
MAX_CATCH_UP: Final = 24  # buckets evaluated in one go after a pause (older: skipped)

_RECORD = """
-- KEYS: the buckets, seen sets and windows of this batch (all {surge})
-- ARGV[1] = #KEYS ttls (ms), one per key; then the number of records; per record:
-- id ('' = no dedupe), seen key index, n, then n triples (key index, field, amount)
local nk = #KEYS
local i = nk + 1
local counted = 0
local touched = {}
for _ = 1, tonumber(ARGV[i]) do
  local id, seen, n = ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  local first = i + 4
  i = first + 3 * n - 1
  if id == '' or redis.call('SADD', KEYS[seen], id) == 1 then
    counted = counted + 1
    touched[seen] = true
    for j = first, first + 3 * n - 1, 3 do
      local k = tonumber(ARGV[j])
      redis.call('HINCRBYFLOAT', KEYS[k], ARGV[j + 1], ARGV[j + 2])
      touched[k] = true
    end
  end
end
for k, _ in pairs(touched) do redis.call('PEXPIRE', KEYS[k], ARGV[k]) end
return counted
"""

_COMMIT = """
-- KEYS: lease, state, groups; ARGV: token, state json, then field/value pairs
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[2], ARGV[2])
if #ARGV > 2 then
  redis.call('DEL', KEYS[3])
  redis.call('HSET', KEYS[3], unpack(ARGV, 3))
end
redis.call('DEL', KEYS[1])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


@dataclass(frozen=True, slots=True)
class Count:
    """One record's contribution: to its short bucket (forecast scopes) and to the
    detector's window (window scopes), counted once per ``record_id``."""

    record_id: str
    at_ms: int
    bucket: Mapping[str, float]
    window: Mapping[str, float] = dataclasses.field(default_factory=dict)


@dataclass(slots=True)
class PendingForecast:
    """An evaluation that holds the lease: produce ``signals``, then ``commit``."""

    token: str
    state: ForecastState
    signals: list[dict[str, Any]]
    forecasts: dict[str, GroupForecast]
    buckets: list[int]


def forecast_json(f: GroupForecast) -> bytes:
    """A forecast as JSON (infinite waits as null)."""
    d = dataclasses.asdict(f)
    for k, v in d.items():
        if isinstance(v, float) and math.isinf(v):
            d[k] = None
    return orjson.dumps(d)


class ForecastStore:
    """Short buckets, forecast state and latest forecasts in Redis."""

    def __init__(self, redis: Redis, keys: Keys, config: SurgeConfig) -> None:
        self.redis = redis
        self.keys = keys
        self.config = config
        self.forecaster = SurgeForecaster(config)
        self.bucket_ms = self.forecaster.bucket_ms
        self.window_ms = int(config.window_s * 1000)
        # buckets live while they can still be read (the trend window) and then some;
        # windows as long as the detector keeps them
        self.bucket_ttl_ms = self.forecaster.buckets_needed * self.bucket_ms * 3 + 60_000
        self.window_ttl_ms = int(max(config.long_window_s, config.window_s) * 3000)
        # a record's id is remembered as long as anything it was counted in lives: a
        # batch replayed after the seen set expired would count again in the window
        self.seen_ttl_ms = max(self.bucket_ttl_ms, self.window_ttl_ms)
        self._record = redis.register_script(_RECORD)
        self._commit = redis.register_script(_COMMIT)
        self._release = redis.register_script(_RELEASE)

    def index(self, at_ms: int) -> int:
        """The short bucket ``at_ms`` falls in."""
        return at_ms // self.bucket_ms

    async def record(self, counts: Sequence[Count]) -> int:
        """Add records to their buckets and windows; returns how many were new."""
        if not counts:
            return 0
        keys: list[str] = []
        ttls: list[int] = []
        where: dict[str, int] = {}

        def key(name: str, ttl: int) -> int:
            if name not in where:
                keys.append(name)
                ttls.append(ttl)
                where[name] = len(keys)
            return where[name]

        items: list[str | int | float] = []
        for c in counts:
            b = self.index(c.at_ms)
            seen = key(self.keys.surge_seen(b), self.seen_ttl_ms)
            bucket = key(self.keys.surge_bucket(b), self.bucket_ttl_ms)
            triples: list[str | int | float] = []
            for scope, n in c.bucket.items():
                triples += [bucket, scope, n]
            if c.window:
                window = key(self.keys.surge_window(c.at_ms // self.window_ms),
                             self.window_ttl_ms)
                for scope, n in c.window.items():
                    triples += [window, scope, n]
            items += [c.record_id, seen, len(triples) // 3, *triples]
        n = await self._record(keys=keys, args=[*ttls, len(counts), *items])
        return int(n)

    async def bucket(self, index: int) -> dict[str, float]:
        """One bucket's counts (tests and the console)."""
        raw = await self.redis.hgetall(self.keys.surge_bucket(index))
        return {as_text(k): float(v) for k, v in raw.items()}

    async def state(self) -> ForecastState:
        """The stored forecast state (a fresh one before the first evaluation)."""
        raw = await self.redis.get(self.keys.forecast_state())
        return ForecastState.from_dict(orjson.loads(raw)) if raw else ForecastState()

    async def evaluate(
        self, now_ms: int, grace_ms: int,
        loads: Callable[[], Awaitable[Mapping[str, GroupLoad]]],
    ) -> PendingForecast | None:
        """Take the lease and evaluate every bucket closed (``grace_ms`` after its end)
        since the last evaluation; None when another worker holds the lease or no
        bucket closed. The caller produces the signals, then calls :meth:`commit`
        (or :meth:`release` when producing failed)."""
        current = self.index(now_ms - grace_ms) - 1
        token = secrets.token_hex(8)
        if not await self.redis.set(self.keys.forecast_lease(), token, nx=True, px=LEASE_MS):
            return None
        try:
            state = await self.state()
            last = state.last_bucket
            if last is not None and last >= current:
                await self.release(token)
                return None
            first = current if last is None else max(last + 1, current - MAX_CATCH_UP + 1)
            need = self.forecaster.buckets_needed
            pipe = self.redis.pipeline(transaction=False)
            span = range(first - need + 1, current + 1)
            for i in span:
                pipe.hgetall(self.keys.surge_bucket(i))
            raw: list[dict[bytes, bytes]] = await pipe.execute()
            buckets = {i: {as_text(k): float(v) for k, v in r.items()}
                       for i, r in zip(span, raw, strict=True)}
            load = await loads()
            signals: list[dict[str, Any]] = []
            forecasts: dict[str, GroupForecast] = {}
            for b in range(first, current + 1):
                window = [buckets.get(i, {}) for i in range(b - need + 1, b + 1)]
                state, out, forecasts = self.forecaster.evaluate(now_ms, b, window, load, state)
                signals += out
            return PendingForecast(token, state, signals, forecasts,
                                   list(range(first, current + 1)))
        except BaseException:
            await self.release(token)
            raise

    async def commit(self, pending: PendingForecast) -> bool:
        """Store the state and the latest forecasts, and end the lease; False when the
        lease was lost meanwhile (another worker evaluates those buckets again)."""
        pairs: list[str | bytes] = []
        for g, f in pending.forecasts.items():
            pairs += [g, forecast_json(f)]
        done = await self._commit(
            keys=[self.keys.forecast_lease(), self.keys.forecast_state(),
                  self.keys.forecast_groups()],
            args=[pending.token, orjson.dumps(pending.state.to_dict()), *pairs],
        )
        return bool(done)

    async def release(self, token: str) -> None:
        """Give the lease back without writing (producing the signals failed)."""
        await self._release(keys=[self.keys.forecast_lease()], args=[token])

    async def forecasts(self) -> dict[str, dict[str, Any]]:
        """The latest forecast of every group (as stored by whichever worker evaluated)."""
        raw = await self.redis.hgetall(self.keys.forecast_groups())
        return {as_text(k): orjson.loads(v) for k, v in raw.items()}

    async def suppress(self, signals: Sequence[dict[str, Any]],
                       active: Sequence[str]) -> list[dict[str, Any]]:
        """:func:`~sla.forecast.merge_window_signals` with the suppressed tags in Redis."""
        key = self.keys.surge_suppressed()
        suppressed = {as_text(t) for t in await self.redis.smembers(key)}
        before = set(suppressed)
        out = merge_window_signals(signals, active, suppressed)
        added, removed = suppressed - before, before - suppressed
        if added:
            await self.redis.sadd(key, *added)
        if removed:
            await self.redis.srem(key, *removed)
        return out
