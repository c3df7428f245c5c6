"""The worker process (faust App): /readyz, /metrics, SIGHUP reload, clean SIGTERM exit.

SIGTERM with a batch in hand (the drain) is tested in tests/test_worker_drain.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from omniroute.embedded import free_port
from omniroute.router.settings import Settings

pytestmark = [pytest.mark.integration, pytest.mark.e2e, pytest.mark.timeout(120)]
MINI = Path(__file__).parent / "data" / "mini"


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def _until(pred: object, proc: subprocess.Popen[bytes], log: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():  # type: ignore[operator]  # a zero-argument callable
        if proc.poll() is not None:
            pytest.fail(f"worker exited {proc.returncode}:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def test_changed_config_reloads_without_restart_and_sigterm_exits_cleanly(
    topics_ready: Settings, tmp_path: Path
) -> None:
    cfg = tmp_path / "cfg"
    shutil.copytree(MINI, cfg)
    port = free_port()
    env = {
        **os.environ,
        "KAFKA_BOOTSTRAP": topics_ready.kafka_bootstrap,
        "REDIS_URL": topics_ready.redis_url,
        "OMNI_TOPIC_PREFIX": topics_ready.topic_prefix,
        "OMNI_REDIS_PREFIX": topics_ready.redis_prefix,
        "OMNI_CONSUMER_GROUP": topics_ready.consumer_group,
        "OMNI_CONFIG_DIR": str(cfg),
        "OMNI_FAST_REBALANCE": "1",
        "OMNI_WORKER_WEB_PORT": str(port),
    }
    log = tmp_path / "worker.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "omniroute", "worker", "--loglevel", "info"],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        _until(lambda: _get(f"{base}/readyz")[0] == 200, proc, log, 60)
        assert _get(f"{base}/healthz")[0] == 200
        assert 'omni_config_info{version="mini-1+' in _get(f"{base}/metrics")[1]

        routing = cfg / "routing.yaml"
        routing.write_text(routing.read_text(encoding="utf-8").replace(
            "version: mini-1", "version: mini-2"), encoding="utf-8")
        os.kill(proc.pid, signal.SIGHUP)
        _until(lambda: 'omni_config_info{version="mini-2+' in _get(f"{base}/metrics")[1],
               proc, log, 20)
        assert 'omni_config_info{version="mini-1+' not in _get(f"{base}/metrics")[1]
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, log.read_text()[-3000:]
    assert "router worker stopped after" in log.read_text()
