"""A relaxation and its ``transfer`` event never part ways (issue 11, item 15).

The move's script records the event in an outbox; an event the broker did not
acknowledge stays there and goes out on a later tick.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from omniroute.admin import ensure_topics
from omniroute.embedded import EmbeddedProcess, start_broker
from omniroute.router import topics
from omniroute.router.app import WorkerRuntime
from omniroute.router.exceptions import BrokerUnavailable
from omniroute.router.keys import Keys
from omniroute.router.relax import Relaxer
from omniroute.router.settings import Settings
from tests.helpers import consume, envelope
from tests.test_routing_logic import MINI

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture
def redis_url(any_redis_url: str) -> str:
    """Every test of this module runs on a standalone Redis and on a Redis Cluster."""
    return any_redis_url


T0 = 1_700_000_000_000


@pytest.fixture
def private_broker() -> Iterator[EmbeddedProcess]:
    with start_broker() as server:
        try:
            yield server
        finally:
            if server.proc is not None and server.proc.poll() is None:
                os.kill(server.proc.pid, signal.SIGCONT)  # never leave it frozen


def _relaxing_config(tmp_path: Path) -> Path:
    cfg = tmp_path / "cfg"
    shutil.copytree(MINI, cfg)
    routing = cfg / "routing.yaml"
    routing.write_text(routing.read_text(encoding="utf-8").replace(
        "target: logistics, fallbacks: [general]}",
        "target: logistics, fallbacks: [general], relax_after_s: 30}"), encoding="utf-8")
    return cfg


async def test_the_move_records_its_event_in_the_same_script(
    settings: Settings, aredis: Redis, tmp_path: Path
) -> None:
    runtime = WorkerRuntime(settings.model_copy(update={"config_dir": _relaxing_config(tmp_path)}),
                            CollectorRegistry())
    try:
        waiting = envelope(1, "外卖还没到", received_at_ms=T0)
        decision = runtime.holder().decide(waiting, T0)
        await runtime.store.enqueue([decision], [decision.to_json()])
        relaxer = Relaxer(aredis, Keys(settings.redis_prefix))
        moves = await relaxer.run_once(runtime.holder().config.routing.rules, T0 + 31_000)
        assert [(m.message_id, m.to_group) for m in moves] == [(waiting.id, "general")]
        assert await relaxer.pending() == 1

        sent: list[tuple[bytes, bytes]] = []

        async def refuse(records: object) -> None:
            raise BrokerUnavailable("the broker is down")

        async def accept(records: list[tuple[bytes, bytes]]) -> None:
            sent.extend(records)

        with pytest.raises(BrokerUnavailable):
            await relaxer.flush(refuse)
        assert await relaxer.pending() == 1  # kept for the next tick
        assert await relaxer.flush(accept) == 1
        assert await relaxer.pending() == 0
        assert await relaxer.flush(accept) == 0
        key, value = sent[0]
        event = orjson.loads(value)
        assert key == waiting.conversation_id.encode()
        assert (event["type"], event["group"], event["to_group"], event["message_id"]) == (
            "transfer", "logistics", "general", waiting.id)
    finally:
        await runtime.redis.aclose()


async def test_a_relaxation_during_a_broker_pause_publishes_its_event_on_a_later_tick(
    settings: Settings, aredis: Redis, tmp_path: Path, private_broker: EmbeddedProcess
) -> None:
    assert private_broker.proc is not None
    s = settings.model_copy(update={
        "kafka_bootstrap": private_broker.url, "config_dir": _relaxing_config(tmp_path),
        "produce_timeout_s": 1.0,
    })
    await ensure_topics(s)
    runtime = WorkerRuntime(s, CollectorRegistry())
    keys = Keys(s.redis_prefix)
    waiting = envelope(2, "外卖还没到", received_at_ms=T0)
    decision = runtime.holder().decide(waiting, T0)
    await runtime.store.enqueue([decision], [decision.to_json()])
    await runtime.router.start()
    try:
        os.kill(private_broker.proc.pid, signal.SIGSTOP)
        with pytest.raises(BrokerUnavailable):
            await runtime.relax(T0 + 31_000)
        # the move is made and its event waits beside it
        assert await aredis.zscore(keys.queue("general"), waiting.id) is not None
        assert await runtime.relaxer.pending() == 1

        os.kill(private_broker.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 60
        while True:  # later ticks: no new move, the pending event goes out
            try:
                assert await runtime.relax(T0 + 32_000) == []
                break
            except BrokerUnavailable:
                if time.monotonic() > deadline:
                    raise
        assert await runtime.relaxer.pending() == 0
    finally:
        await runtime.router.stop()
        await runtime.redis.aclose()
    records = await consume(s.kafka_bootstrap, s.topic(topics.AGENT_EVENTS), 1)
    event = orjson.loads(records[0].value)
    assert (event["type"], event["conversation_id"], event["group"], event["to_group"]) == (
        "transfer", waiting.conversation_id, "logistics", "general")
