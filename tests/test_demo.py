"""``omniroute demo`` end to end: it routes every message, prints the summary, cleans up."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(240)]


def _processes(needle: str) -> int:
    out = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True)
    return sum(needle in line for line in out.stdout.splitlines())


def test_demo_routes_everything_and_leaves_nothing_running() -> None:
    brokers_before = _processes("tansu")
    proc = subprocess.run(
        [sys.executable, "-m", "omniroute", "demo", "--messages", "60"],
        capture_output=True, text=True, timeout=200, env={**os.environ, "COLUMNS": "200"},
        check=False,
    )
    out = proc.stdout
    assert proc.returncode == 0, out + proc.stderr
    assert "60 messages ingested and routed" in out
    for heading in ("Messages per skill group", "Messages per priority band",
                    "Messages per tag", "ingest-to-decision latency: p50",
                    "Why did they go there?"):
        assert heading in out, out
    assert _processes("tansu") == brokers_before, "the demo left its broker running"
    assert _processes("router run --loglevel") == 0, "the demo left 'omniroute run' running"
