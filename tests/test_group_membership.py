"""Consumer-group membership (issue 11, item 12): the timeouts and static membership
come from the settings, and a restarted worker resumes routing within a bound that
follows from them. The figures themselves: ``python -m omniroute.membership``
(README, "Operations")."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from pydantic import ValidationError

from omniroute.router import kafka
from omniroute.router.app import create_worker_app
from omniroute.router.keys import Keys
from omniroute.router.producer import EnvelopeProducer
from omniroute.router.settings import Settings
from tests.helpers import envelope
from tests.servers import start_worker, stop_worker, wait_for, worker_env

SESSION_S = 6.0  # the broker's minimum; the test's own setting, not the default
REBALANCE_S = 6.0
STARTUP_S = 20.0  # a Python process importing faust and our packages on a busy machine


def test_defaults_are_short_but_leave_room_for_late_heartbeats() -> None:
    s = Settings.model_validate({})
    assert kafka.group_membership(s) == {
        "session_timeout_ms": 10_000, "rebalance_timeout_ms": 10_000,
        "heartbeat_interval_ms": 1000, "group_instance_id": None,
    }
    # ten heartbeats per session: one slow one does not evict a live worker
    assert s.kafka_session_timeout_s / s.kafka_heartbeat_interval_s >= 3


async def test_static_membership_reaches_both_groups_of_the_worker(settings: Settings) -> None:
    s = settings.model_copy(update={"group_instance_id": "router-0", "fast_rebalance": False,
                                    "kafka_session_timeout_s": 12.0})
    assert kafka.group_membership(s)["group_instance_id"] == "router-0"
    assert kafka.group_membership(s)["session_timeout_ms"] == 12_000
    app, runtime = create_worker_app(s)
    await runtime.redis.aclose()
    # the faust runtime's own consumer joins its group with the same settings
    assert app.conf.consumer_group_instance_id == "router-0"
    assert app.conf.broker_session_timeout == 12.0


def test_heartbeats_that_do_not_fit_the_session_are_refused() -> None:
    with pytest.raises(ValidationError, match="OMNI_KAFKA_HEARTBEAT_INTERVAL_S"):
        Settings.model_validate({"OMNI_KAFKA_SESSION_TIMEOUT_S": 6,
                                 "OMNI_KAFKA_HEARTBEAT_INTERVAL_S": 3})


@pytest.mark.integration
@pytest.mark.e2e
@pytest.mark.timeout(180)
async def test_a_restarted_static_member_resumes_routing_within_its_timeouts(
    topics_ready: Settings, tmp_path: Path
) -> None:
    env = worker_env(
        topics_ready, OMNI_FAST_REBALANCE="0",
        OMNI_KAFKA_SESSION_TIMEOUT_S=str(SESSION_S),
        OMNI_KAFKA_REBALANCE_TIMEOUT_S=str(REBALANCE_S),
        OMNI_GROUP_INSTANCE_ID="router-0", OMNI_WORKER_DATA_DIR=str(tmp_path / "data"),
    )
    keys = Keys(topics_ready.redis_prefix)
    r = redis.Redis.from_url(topics_ready.redis_url)
    log = tmp_path / "worker.log"
    try:
        async with EnvelopeProducer(topics_ready) as producer:
            first = envelope(1, "外卖还没到", received_at_ms=int(time.time() * 1000))
            await producer.send_envelopes([first])
            worker = start_worker(env, log)
            try:
                wait_for(lambda: r.exists(keys.decision(first.id)), 120, worker, log,
                         "the first start to route")
            finally:
                assert stop_worker(worker) == 0, log.read_text()[-3000:]

            stopped = time.monotonic()
            worker = start_worker(env, log)
            try:
                second = envelope(2, "外卖还没到", received_at_ms=int(time.time() * 1000))
                await producer.send_envelopes([second])
                # Kafka's old 45 s session made this take over two minutes; a static member
                # takes its partitions back within a session and a rebalance per group
                bound_s = 2 * (SESSION_S + REBALANCE_S) + STARTUP_S
                wait_for(lambda: r.exists(keys.decision(second.id)), bound_s, worker, log,
                         f"routing within {bound_s:.0f} s of the restart")
                assert time.monotonic() - stopped <= bound_s + 1
            finally:
                assert stop_worker(worker) == 0, log.read_text()[-3000:]
    finally:
        r.close()


def test_the_measurement_settings_keep_list_variables_of_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """``python -m omniroute.membership`` derives its workers' settings from the
    environment; a JSON list variable there (the ingest tokens) used to fail it."""
    from omniroute.membership import PARTITIONS, run_settings

    monkeypatch.setenv("OMNI_INGEST_TOKENS", '["tok-a", "tok-b"]')
    s = run_settings(Settings(), "127.0.0.1:1", "redis://127.0.0.1:1/0", "t1", tmp_path)
    assert [t.get_secret_value() for t in s.ingest_tokens] == ["tok-a", "tok-b"]
    assert (s.kafka_bootstrap, s.topic_prefix, s.consumer_group, s.topic_partitions) == (
        "127.0.0.1:1", "mt1.", "membership-t1", PARTITIONS)
    env = s.child_environ()  # what its worker processes read
    assert env["OMNI_TOPIC_PREFIX"] == "mt1."
    assert env["OMNI_WORKER_DATA_DIR"] == str(tmp_path)
