"""A crashed worker process exits non-zero and says why (issue 11, item 2).

Supervisors (systemd, Kubernetes) restart a process and page on its exit status:
a worker whose routing task crashed must not exit 0. A clean SIGTERM stop still
exits 0; tests/test_worker_process.py checks that on a healthy worker.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from omniroute.embedded import free_port
from omniroute.router.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(120)]
MINI = Path(__file__).parent / "data" / "mini"
EXIT_DEADLINE_S = 60.0  # generous: the crash itself comes within seconds of the start


@pytest.fixture
def closed_port() -> Iterator[int]:
    """A loopback port that refuses connections: bound by this test, never listening."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        yield sock.getsockname()[1]


@pytest.mark.parametrize("command", ["worker", "run"])
def test_worker_whose_redis_is_unreachable_exits_non_zero_and_logs_why(
    topics_ready: Settings, tmp_path: Path, closed_port: int, command: str
) -> None:
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": topics_ready.kafka_bootstrap,
        "REDIS_URL": f"redis://127.0.0.1:{closed_port}/0",
        "OMNI_TOPIC_PREFIX": topics_ready.topic_prefix,
        "OMNI_REDIS_PREFIX": topics_ready.redis_prefix,
        "OMNI_CONSUMER_GROUP": topics_ready.consumer_group,
        "OMNI_FAST_REBALANCE": "1",
        "OMNI_WORKER_WEB_PORT": str(free_port()),
        "OMNI_HTTP_PORT": str(free_port()),
    }
    if command == "worker":  # `run` also starts the SLA worker: it needs the full config
        env["OMNI_CONFIG_DIR"] = str(MINI)
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "omniroute", command, "--loglevel", "info"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            cwd=tmp_path,  # faust writes its data folder into the working directory
        )
    try:
        code = proc.wait(EXIT_DEADLINE_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, 9)
        proc.wait(10)
        pytest.fail(f"worker still running after {EXIT_DEADLINE_S} s:\n{log.read_text()[-3000:]}")
    text = log.read_text()
    assert code != 0, f"a crashed worker exited 0:\n{text[-3000:]}"
    assert code == 1, text[-3000:]
    # the last word names the cause, the address that refused, and the status
    crash_lines = [line for line in text.splitlines() if "worker crashed (" in line]
    assert crash_lines, text[-3000:]
    assert "ConnectionError" in crash_lines[-1]
    assert f"127.0.0.1:{closed_port}" in crash_lines[-1]
    assert "exiting with status 1" in crash_lines[-1]
    assert "worker exited;" not in text  # the clean-exit line is not logged on a crash
