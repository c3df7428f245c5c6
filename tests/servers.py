"""Private servers for outage tests: a Redis that survives a restart on the same port,
worker processes, and what the kernel knows about pending requests.

The session's shared Redis and broker (tests/conftest.py) must never be stopped or
paused; a test that takes a server away starts its own here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest
import redis

from omniroute.embedded import free_port, redis_answers, valkey_binary
from omniroute.router.keys import Keys
from omniroute.router.settings import Settings

MINI = Path(__file__).parent / "data" / "mini"


class PrivateRedis:
    """``valkey-server`` on a port of its own, with an fsync-always append-only file, so a
    restart on the same port finds every write it acknowledged before it went away."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> None:
        """Start (or restart) the server on the same port and data directory."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [valkey_binary(), "--bind", "127.0.0.1", "--port", str(self.port), "--save", "",
             "--appendonly", "yes", "--appendfsync", "always", "--dir", str(self.workdir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while not redis_answers(self.url):
            assert self.proc.poll() is None, f"valkey-server exited {self.proc.returncode}"
            assert time.monotonic() < deadline, f"valkey-server not up on {self.port}"
            time.sleep(0.05)

    def kill(self) -> None:
        """Take the server away at once (SIGKILL), as a crash would."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def pause(self) -> None:
        """Freeze the server (SIGSTOP): connections stay open, requests get no answer."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        """Idempotent clean-up: resume if paused, then terminate and wait."""
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)


def unread_request_bytes(port: int) -> int:
    """Bytes waiting in the receive queues of the server side of ``port``'s connections:
    requests a (paused) server has not read yet. Linux only (/proc/net/tcp)."""
    total = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table, encoding="ascii") as fh:
            for line in fh.readlines()[1:]:
                fields = line.split()
                local_port = int(fields[1].rsplit(":", 1)[1], 16)
                established = fields[3] == "01"
                if local_port == port and established:
                    total += int(fields[4].split(":")[1], 16)
    return total


#: Backlog texts that reach several groups of the mini config.
TEXTS = ["外卖还没到", "饭菜变质了", "退款没到账", "尺码怎么选", "骑手态度太差", "你好"]


def queued(r: redis.Redis, keys: Keys) -> list[bytes]:
    """Every member of every skill group's queue (a message twice counts twice).

    The groups come from the router's own set of groups that ever had a queue, so a
    group added to the configuration cannot be missed.
    """
    members: list[bytes] = []
    for g in sorted(cast(set[bytes], r.smembers(keys.groups()))):
        members += cast(list[bytes], r.zrange(keys.queue(g.decode()), 0, -1))
    return members


def worker_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a router worker process for ``settings`` on the mini config."""
    return {
        **os.environ,
        "KAFKA_BOOTSTRAP": settings.kafka_bootstrap,
        "REDIS_URL": settings.redis_url,
        "OMNI_TOPIC_PREFIX": settings.topic_prefix,
        "OMNI_REDIS_PREFIX": settings.redis_prefix,
        "OMNI_CONSUMER_GROUP": settings.consumer_group,
        "OMNI_CONFIG_DIR": str(MINI),
        "OMNI_FAST_REBALANCE": "1",
        "OMNI_WORKER_WEB_PORT": str(free_port()),
        **extra,
    }


def start_worker(env: dict[str, str], log: Path, loglevel: str = "warning"
                 ) -> subprocess.Popen[bytes]:
    """``python -m omniroute worker`` in its own process group, output appended to ``log``."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "omniroute", "worker", "--loglevel", loglevel],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )


def wait_for(pred: Callable[[], object], timeout_s: float, proc: subprocess.Popen[bytes],
             log: Path, what: str) -> None:
    """Poll ``pred`` until true; fail with the worker's log if it exits or time runs out."""
    deadline = time.monotonic() + timeout_s
    while not pred():
        if proc.poll() is not None:
            pytest.fail(f"worker exited {proc.returncode} waiting for {what}:\n"
                        f"{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}; worker log:\n{log.read_text()[-3000:]}")
        time.sleep(0.02)


def stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = 30.0) -> int:
    """SIGTERM the worker's process group and return its exit code (SIGKILL on timeout)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
    try:
        return proc.wait(timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        raise
