"""Measure how long router workers wait on consumer-group membership (README, "Operations").

``python -m omniroute.membership`` starts an embedded broker (and Redis, unless one
answers at ``REDIS_URL``), creates the topics with 4 partitions, and runs router
workers as subprocesses (``python -m omniroute worker``) with the group settings of
the environment (``OMNI_KAFKA_SESSION_TIMEOUT_S`` ...). A probe writes one envelope
to every partition of ``omni.inbound`` every 0.25 s, stamped with its send time; a
probe's routing delay is ``decided_at - sent``. It reports, in seconds:

- ``first_start``: first worker spawned -> every partition routed;
- ``restart``: SIGTERM of the only worker -> every partition routed by its restart
  (spawned as soon as the old process exited);
- ``dead_wait``: one of two workers is SIGKILLed -> its partitions routed again;
- ``survivor_pause``: the longest delay of a probe on the survivor's own partitions
  during that takeover.

Each figure is the worst probe delay of its phase, so it includes up to 0.25 s of
probe spacing and the routing itself (milliseconds).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from aiokafka import AIOKafkaProducer
from redis.asyncio import Redis

from .admin import ensure_topics
from .embedded import free_port, redis_answers, start_broker, start_redis
from .router import topics
from .router.keys import Keys
from .router.models import Channel, Customer, Decision, Envelope, message_id
from .router.settings import Settings

PARTITIONS = 4
PROBE_EVERY_S = 0.25
# aiokafka's line; under faust the set is printed as a table ("| topic | {0-1, 3} |")
_ASSIGNED = re.compile(r"Setting newly assigned partitions(.*?)for group (\S+)", re.S)


class Probe:
    """Writes one envelope per partition every ``PROBE_EVERY_S``; reads their decisions."""

    def __init__(self, settings: Settings, producer: AIOKafkaProducer, redis: Redis) -> None:
        self.settings = settings
        self.producer = producer
        self.redis = redis
        self.keys = Keys(settings.redis_prefix)
        self.sent: dict[str, tuple[int, float]] = {}  # message id -> (partition, sent s)
        self._n = 0

    async def run(self) -> None:
        topic = self.settings.topic(topics.INBOUND)
        while True:
            now = time.time()
            for partition in range(PARTITIONS):
                self._n += 1
                mid = message_id(Channel.APP, "probe", str(self._n))
                env = Envelope(
                    id=mid, channel=Channel.APP, account="probe", channel_msg_id=str(self._n),
                    conversation_id=f"probe-{self._n}", customer=Customer(f"probe-{self._n}"),
                    text="where is my parcel", received_at_ms=int(now * 1000),
                )
                await self.producer.send(topic, env.to_json(), key=env.conversation_id.encode(),
                                         partition=partition)
                self.sent[mid] = (partition, now)
            await asyncio.sleep(PROBE_EVERY_S)

    async def delays(self, since: float, until: float) -> dict[int, float]:
        """Worst routing delay per partition of the probes sent in [since, until)."""
        worst: dict[int, float] = {}
        for mid, (partition, sent) in list(self.sent.items()):
            if not since <= sent < until:
                continue
            raw = await self.redis.hget(self.keys.decision(mid), "decision")
            if raw is None:
                worst[partition] = float("inf")
                continue
            delay = Decision.from_json(raw).decided_at_ms / 1000 - sent
            worst[partition] = max(worst.get(partition, 0.0), delay)
        return worst

    async def routed_after(self, since: float, timeout_s: float) -> float:
        """Wait until a probe sent after ``since`` is routed on every partition; its time."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            done: set[int] = set()
            for mid, (partition, sent) in list(self.sent.items()):
                if sent >= since and partition not in done and await self.redis.exists(
                    self.keys.decision(mid)
                ):
                    done.add(partition)
            if len(done) == PARTITIONS:
                return time.time()
            await asyncio.sleep(0.25)
        raise TimeoutError(f"routing did not cover every partition within {timeout_s} s")


class Worker:
    """One ``omniroute worker`` subprocess with its log."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "omniroute", "worker", "--loglevel", "info"],
                env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)

    async def wait(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while self.proc.poll() is None:
            if time.monotonic() > deadline:
                self.signal(signal.SIGKILL)
            await asyncio.sleep(0.05)

    def partitions(self, group: str) -> set[int]:
        """The router group's partitions this worker was last assigned (from its log)."""
        last: set[int] = set()
        for found, grp in _ASSIGNED.findall(self.log.read_text(errors="replace")):
            if grp != group:
                continue
            last = {int(p) for p in re.findall(r"partition=(\d+)", found)}
            for spec in re.findall(r"\|\s*\S+\s*\|\s*\{([^}]*)\}", found):
                for item in filter(None, (i.strip() for i in spec.split(","))):
                    first, _, end = item.partition("-")
                    last.update(range(int(first), int(end or first) + 1))
        return last


async def measure(settings: Settings, env: dict[str, str], workdir: Path,
                  static: bool = False) -> dict[str, float]:
    """The four figures (seconds) for one broker, Redis and group settings.

    With ``static``, worker "a" (and its restart) and worker "b" are static members
    named ``a`` and ``b`` (``OMNI_GROUP_INSTANCE_ID``).
    """
    await ensure_topics(settings)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, linger_ms=5)
    redis = Redis.from_url(settings.redis_url)
    await producer.start()
    probe = Probe(settings, producer, redis)
    probing = asyncio.create_task(probe.run())
    workers: list[Worker] = []

    def spawn(name: str) -> Worker:
        extra = {"OMNI_WORKER_WEB_PORT": str(free_port())}
        if static:
            extra["OMNI_GROUP_INSTANCE_ID"] = name[0]
        w = Worker({**env, **extra}, workdir / f"{name}.log")
        workers.append(w)
        return w

    out: dict[str, float] = {}
    try:
        t0 = time.time()
        a = spawn("a")
        out["first_start"] = await probe.routed_after(t0, 300) - t0

        t1 = time.time()
        a.signal(signal.SIGTERM)
        await a.wait()
        a = spawn("a-restarted")
        resumed = await probe.routed_after(t1, 300)
        out["restart"] = max((await probe.delays(t1, resumed)).values())

        b = spawn("b")
        # B has its share once both logs agree on a split of the partitions
        deadline = time.time() + 300
        while not (b.partitions(settings.consumer_group)
                   and a.partitions(settings.consumer_group)
                   | b.partitions(settings.consumer_group) == set(range(PARTITIONS))
                   and not a.partitions(settings.consumer_group)
                   & b.partitions(settings.consumer_group)):
            if time.time() > deadline:
                raise TimeoutError("the second worker never got partitions")
            await asyncio.sleep(0.25)
        settled = time.time()
        await probe.routed_after(settled, 120)
        mine = b.partitions(settings.consumer_group)
        t2 = time.time()
        a.signal(signal.SIGKILL)
        await a.wait()
        resumed = await probe.routed_after(t2, 300)
        await asyncio.sleep(2)  # the survivor's pause may come after the takeover
        delays = await probe.delays(t2, resumed)
        out["dead_wait"] = max(d for p, d in delays.items() if p not in mine)
        out["survivor_pause"] = max(d for p, d in delays.items() if p in mine)
    finally:
        probing.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await probing
        for w in workers:
            w.signal(signal.SIGTERM)
        for w in workers:
            await w.wait(30)
        await producer.stop()
        async for key in redis.scan_iter(match=f"{settings.redis_prefix}:*", count=1000):
            await redis.delete(key)
        await redis.aclose()
    return {k: round(v, 1) for k, v in out.items()}


@contextlib.contextmanager
def _redis(url: str) -> Iterator[str]:
    if redis_answers(url):
        yield url
        return
    with start_redis() as server:
        yield server.url


def run_settings(base: Settings, bootstrap: str, redis_url: str, tag: str,
                 workdir: Path) -> Settings:
    """The measurement's settings: ``base`` on its own broker, Redis, names and folder.

    Typed fields, not the environment re-read: a JSON list variable in it
    (``OMNI_INGEST_TOKENS``) would not be decoded as the environment's reader does.
    """
    return base.model_copy(update={
        "kafka_bootstrap": bootstrap, "redis_url": redis_url,
        "topic_prefix": f"m{tag}.", "redis_prefix": f"m{tag}",
        "consumer_group": f"membership-{tag}", "topic_partitions": PARTITIONS,
        "worker_data_dir": workdir,
    })


def main(argv: list[str] | None = None) -> None:
    """Run the measurement and print the figures as JSON."""
    parser = argparse.ArgumentParser(prog="python -m omniroute.membership",
                                     description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--static", action="store_true",
                        help="static membership: OMNI_GROUP_INSTANCE_ID per worker")
    parser.add_argument("--keep-logs", action="store_true", help="print the log directory")
    args = parser.parse_args(argv)
    base = Settings()
    tag = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix="omni-membership-"))
    with start_broker(log=base.tansu_log) as broker, _redis(base.redis_url) as redis_url:
        settings = run_settings(base, broker.url, redis_url, tag, workdir)
        env = settings.child_environ()
        figures = asyncio.run(measure(settings, env, workdir, static=args.static))
    group = {k: v for k, v in settings.model_dump().items()
             if k.startswith(("kafka_session", "kafka_heartbeat", "kafka_rebalance"))
             or k == "fast_rebalance"}
    group["static"] = args.static
    print(json.dumps({"settings": group, "seconds": figures}, default=str))
    if args.keep_logs:
        print(f"worker logs: {workdir}")


if __name__ == "__main__":
    main()
