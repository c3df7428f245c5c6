"""The shared helpers of issue 9, item 2, each used in place of the copies that were
removed: one text clipper (envelope repr, dead-letter reasons, bad values in errors) and
one retry helper (also for the SLA state's compare-and-set loop), one acknowledged send
whose deadline a channel may shorten, one teardown of a worker's Kafka clients and one
formatter of validation errors."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from omniroute.adapters import text as adapter_text
from omniroute.adapters.dedupe import Deduper, produce_once
from omniroute.adapters.douyin.parse import parse_items
from omniroute.rehearse import SCENARIOS, _sla_config, load_scenario
from omniroute.router import _records, kafka, models, topics
from omniroute.router import text as router_text
from omniroute.router.exceptions import BadRequest, BrokerUnavailable, ConfigError
from omniroute.router.keys import Keys
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.retry import Backoff, retrying
from omniroute.router.settings import Settings
from omniroute.router.worker import MAX_REASON_CHARS, _reason
from omniroute.sla.exceptions import StateConflict
from omniroute.sla.state import ConvState, SlaEngine
from omniroute.sla.timers import CAS_ATTEMPTS, TimerStore
from tests.helpers import envelope
from tests.test_sla_support import decision
from tests.test_sla_timers import CONFIG


def test_one_clip_serves_the_router_and_the_channel_parsers() -> None:
    assert adapter_text.clip is router_text.clip
    assert models.MAX_TEXT_CHARS == router_text.MAX_TEXT_CHARS == 20_000
    assert router_text.clip("123456", 5) == "1234…"
    assert router_text.clip("12345", 5) == "12345"


def test_dead_letter_reasons_are_clipped_with_an_ellipsis() -> None:
    reason = _reason("handler_error", RuntimeError("x" * 5000))
    detail = reason.removeprefix("handler_error: ")
    assert len(detail) == MAX_REASON_CHARS
    assert detail.endswith("x…")
    assert _reason("handler_error", RuntimeError("short")) == "handler_error: RuntimeError: short"


def test_bad_values_in_record_errors_are_clipped_to_the_shown_width() -> None:
    shown = _records.show("y" * 500)
    assert len(shown) == router_text.SHOWN_CHARS
    assert shown.endswith("…")
    nested = models._show([["a" * 70] * 3] * 3)  # longer than SHOWN_CHARS once reprlib is done
    assert len(nested) == router_text.SHOWN_CHARS
    assert nested.endswith("…")


def test_envelope_repr_clips_the_text_to_forty_characters() -> None:
    assert repr(envelope(1, "长" * 100)).endswith(f"text={'长' * 39 + '…'!r})")
    assert repr(envelope(2, "长" * 40)).endswith(f"text={'长' * 40!r})")


# --- retry ----------------------------------------------------------------------------
def test_jittered_backoff_draws_below_the_doubling_bound() -> None:
    random.seed(7)
    b = Backoff(0.002, 0.064, jitter=True)
    waits = [b.next() for _ in range(8)]
    bounds = [0.002, 0.004, 0.008, 0.016, 0.032, 0.064, 0.064, 0.064]
    assert all(0 <= w <= hi for w, hi in zip(waits, bounds, strict=True))
    assert waits != bounds  # drawn, not the bound itself
    assert [Backoff(0.002, 0.064).next() for _ in range(2)] == [0.002, 0.002]  # no jitter


async def test_retrying_gives_up_after_its_attempts_with_the_last_failure() -> None:
    calls: list[int] = []

    async def conflicting() -> None:
        calls.append(len(calls))
        raise StateConflict(f"conflict {len(calls)}")

    with pytest.raises(StateConflict, match="conflict 3"):
        await retrying(conflicting, (StateConflict,), "cas", backoff=Backoff(0.001, 0.001),
                       attempts=3)
    assert len(calls) == 3
    with pytest.raises(ValueError, match="attempts >= 1"):
        await retrying(conflicting, (StateConflict,), "cas", attempts=0)


@pytest.mark.integration
async def test_the_sla_state_update_retries_conflicts_then_gives_up(
    aredis: Redis, settings: Settings, sync_redis: redis.Redis
) -> None:
    store = TimerStore(aredis, Keys(settings.redis_prefix), SlaEngine(CONFIG))
    await store.on_decision(decision(0, conv="c-x"))
    reads: list[int] = []

    def always_raced(state: ConvState | None) -> ConvState | None:
        """Another writer commits between every read and its compare-and-set."""
        assert state is not None
        reads.append(state.ver)
        other = ConvState.from_json(state.to_json())
        other.ver += 1
        sync_redis.hset(store.keys.sla_states(), "c-x", other.to_json())
        return state

    with pytest.raises(StateConflict, match=f"changed {CAS_ATTEMPTS} times"):
        await store.apply("c-x", always_raced)
    assert reads == list(range(1, CAS_ATTEMPTS + 1))  # reloaded before each attempt

    raced = False

    def raced_once(state: ConvState | None) -> ConvState | None:
        nonlocal raced
        if not raced:
            raced = True
            always_raced(state)
        return state

    stored = await store.apply("c-x", raced_once)
    assert stored is not None
    assert stored.ver == CAS_ATTEMPTS + 3  # 16 + 1 racing writes, then ours
    assert reads[CAS_ATTEMPTS:] == [CAS_ATTEMPTS + 1]


# --- the acknowledged send ---------------------------------------------------------------
async def _seconds_to_fail(call: Coroutine[Any, Any, object]) -> float:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(BrokerUnavailable):
        await call
    return loop.time() - started


@pytest.mark.integration
async def test_a_channel_deadline_shortens_the_acknowledged_send(
    settings: Settings, aredis: Redis
) -> None:
    held: list[asyncio.StreamWriter] = []

    async def silent(_r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        held.append(w)  # accepts the connection and never answers: a hung broker

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    hung = settings.model_copy(update={"kafka_bootstrap": f"127.0.0.1:{port}",
                                       "produce_timeout_s": 5.0})
    deduper = Deduper(aredis, Keys(settings.redis_prefix), ttl_s=60)
    producer = EnvelopeProducer(hung)
    try:
        env = envelope(1, "怎么还没发货")
        assert await _seconds_to_fail(produce_once(producer, deduper, [env], timeout_s=0.3)) < 1
        assert not await deduper.seen(env.channel.value, env.id)
        assert await _seconds_to_fail(
            producer.send_records("omni.x", [(b"k", b"v")], timeout_s=0.3)) < 1
    finally:
        await producer.stop()
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


# --- teardown -----------------------------------------------------------------------------
class _StopFails(Exception):
    pass


@pytest.mark.integration
async def test_stop_clients_stops_the_consumer_then_the_producer(topics_ready: Settings) -> None:
    await kafka.stop_clients(None, None)  # never started: nothing to do
    order: list[str] = []
    producer = kafka.producer(topics_ready)
    consumer = kafka.consumer(topics_ready, topics_ready.topic(topics.INBOUND), group_id=None)
    await producer.start()
    await consumer.start()
    for name, client in (("consumer", consumer), ("producer", producer)):
        stop = client.stop

        async def record(name: str = name, stop: Any = stop) -> None:
            order.append(name)
            await stop()
            if name == "consumer":
                raise _StopFails
        client.stop = record  # type: ignore[method-assign]
    with pytest.raises(_StopFails):
        await kafka.stop_clients(consumer, producer)
    assert order == ["consumer", "producer"]  # the producer too, though the consumer failed
    assert producer._closed
    assert consumer._closed


# --- validation errors ------------------------------------------------------------------
def test_douyin_items_name_the_item_and_field_of_each_problem() -> None:
    body = b'[{"msg_id": "m1", "sec_openid": "v1"}, {"sec_openid": []}]'
    with pytest.raises(BadRequest) as caught:
        parse_items(body, 10)
    assert str(caught.value) == ("item 1.msg_id: Field required; "
                                 "item 1.sec_openid: Input should be a valid string")


def test_a_scenario_error_names_the_file_line_and_key(tmp_path: Path) -> None:
    shipped = sorted(SCENARIOS.glob("*.yaml"))[0]
    text = shipped.read_text(encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("duration_s:", "duration_s: -1\nold_duration_s:", 1),
                   encoding="utf-8")
    line = text.splitlines().index(
        next(x for x in text.splitlines() if x.startswith("duration_s:"))) + 1
    with pytest.raises(ConfigError,
                       match=rf"^{bad}:{line}: duration_s: Input should be greater than 0 "
                             r"\(got -1\)"):
        load_scenario(bad)
    scenario = load_scenario(shipped)
    broken = scenario.model_copy(update={"sla": {"policies": "none"}})
    with pytest.raises(ConfigError,
                       match=rf"^scenario {scenario.name}: sla\.policies: Input should be"):
        _sla_config(broken, Path(__file__).parents[1] / "config")
