"""``omniroute demo --keep-running`` as a test fixture: started as a user starts it, its
printed URLs and tokens parsed, stopped with Ctrl-C, and the Redis keys it keeps on
purpose deleted. Shared by the browser and the Prometheus tests."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis


class Demo:
    """``omniroute demo --keep-running`` in its own process group."""

    def __init__(self, workdir: Path, redis_url: str,
                 env: dict[str, str] | None = None) -> None:
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = workdir / "demo.out"
        self.redis_url = redis_url
        self.env = env or {}  # e.g. OMNI_CONFIG_DIR, channel secrets
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, str] = {}

    def start(self, messages: int = 60, timeout_s: float = 150.0) -> None:
        env = {**os.environ, "REDIS_URL": self.redis_url, "COLUMNS": "250",
               "NO_COLOR": "1", "TERM": "dumb", **self.env}
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "omniroute", "demo", "--messages", str(messages),
                 "--keep-running"],
                cwd=self.workdir, env=env, stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while "redis" not in self.info:
            text = self.log.read_text(errors="replace")
            self.info = parse_demo_output(text)
            if self.proc.poll() is not None:
                pytest.fail(f"the demo exited {self.proc.returncode}:\n{text[-3000:]}")
            if time.monotonic() > deadline:
                pytest.fail(f"the demo printed no console URL in {timeout_s:.0f} s:\n"
                            f"{text[-3000:]}")
            time.sleep(0.2)

    def stop(self) -> None:
        """Ctrl-C, as a user stops it; then its Redis keys (it keeps them on purpose)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        prefix = self.info.get("prefix")
        if prefix:
            client = redis.Redis.from_url(self.info["redis"])
            try:
                for key in client.scan_iter(match=f"{prefix}:*", count=1000):
                    client.delete(key)
            finally:
                client.close()


def parse_demo_output(text: str) -> dict[str, str]:
    """The URLs and tokens ``demo --keep-running`` prints."""
    out: dict[str, str] = {}
    m = re.search(r"console\s+(http://127\.0\.0\.1:\d+)/console\?token=(\S+)\s+"
                  r"\(viewer token (\S+)\)", text)
    if m:
        out.update(base=m.group(1), viewer=m.group(2))
        assert m.group(2) == m.group(3)
    m = re.search(r"agent API\s+\S+\s+\(token (\S+)\)", text)
    if m:
        out["agent"] = m.group(1)
    m = re.search(r"metrics\s+(\S+)/metrics and (\S+)/metrics", text)
    if m:
        out.update(metrics_http=m.group(1), metrics_worker=m.group(2))
    m = re.search(r"kafka\s+(\S+) \(embedded", text)
    if m:
        out["kafka"] = m.group(1)
    m = re.search(r"redis\s+(\S+) \(keys (\S+):\*", text)
    if m:
        out.update(redis=m.group(1), prefix=m.group(2))
    return out


@contextlib.contextmanager
def running_demo(tmp_path: Path, redis_url: str, messages: int = 60,
                 env: dict[str, str] | None = None) -> Iterator[Demo]:
    """A demo with its stack up (``env`` added to its environment); stopped (and its
    keys deleted) on exit."""
    demo = Demo(tmp_path, redis_url, env)
    try:
        demo.start(messages)
        yield demo
    finally:
        demo.stop()
