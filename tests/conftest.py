"""Shared fixtures: a real Tansu broker and a real Redis for the whole session.

Each test gets its own topic prefix and Redis key prefix (uuid4), so tests never
see each other's data. Servers started here are stopped at session end.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator

import pytest
import redis
from pydantic import SecretStr
from redis.asyncio import Redis

from omniroute.admin import ensure_topics
from omniroute.embedded import redis_answers, start_broker, start_redis, start_redis_cluster
from omniroute.router.exceptions import InfrastructureError
from omniroute.router.redis_client import connect, connect_sync
from omniroute.router.settings import Settings

TEST_TOKEN = "test-ingest-token"


@pytest.fixture(scope="session")
def broker() -> Iterator[str]:
    """Bootstrap address of a Tansu broker started for this test session."""
    with start_broker() as server:
        yield server.url


@pytest.fixture(scope="session")
def standalone_redis_url() -> Iterator[str]:
    """A real Redis: the local server when one answers, else valkey-server from its wheel."""
    url = os.environ.get("OMNI_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
    if redis_answers(url):
        yield url
        return
    with start_redis() as server:
        yield server.url


@pytest.fixture(scope="session")
def redis_url(standalone_redis_url: str) -> str:
    """The Redis of ``settings``: standalone. A test module runs on both a standalone
    server and a cluster by overriding it with ``any_redis_url``."""
    return standalone_redis_url


@pytest.fixture(scope="session")
def redis_cluster_url() -> Iterator[str]:
    """A real three-primary Redis Cluster (valkey-server in cluster mode) for the session.

    Its six ports (clients and cluster bus) are picked free and then bound by the
    nodes, so another process of the suite can take one in between; a failed start
    (which cleans up after itself) is tried again on fresh ports, twice at most.
    """
    for attempt in range(1, 4):
        try:
            cluster = start_redis_cluster(primaries=3)
            break
        except (InfrastructureError, redis.RedisError, OSError):
            if attempt == 3:
                raise
    with cluster:
        yield cluster.url


@pytest.fixture(params=["standalone", "cluster"])
def any_redis_url(request: pytest.FixtureRequest) -> str:
    """Each test using it runs twice: on the standalone Redis and on a Redis Cluster
    (``redis+cluster://``). The cluster starts on first use only."""
    name = "standalone_redis_url" if request.param == "standalone" else "redis_cluster_url"
    url: str = request.getfixturevalue(name)
    return url


@pytest.fixture
def settings(broker: str, redis_url: str) -> Settings:
    """Settings isolated to this test: fresh topic and key prefixes."""
    tag = uuid.uuid4().hex[:10]
    return Settings.model_validate(
        {
            "KAFKA_BOOTSTRAP": broker,
            "REDIS_URL": redis_url,
            "OMNI_TOPIC_PREFIX": f"t{tag}.",
            "OMNI_REDIS_PREFIX": f"t{tag}",
            "OMNI_CONSUMER_GROUP": f"router-{tag}",
            "OMNI_TOPIC_PARTITIONS": 4,
            "OMNI_FAST_REBALANCE": True,
            "OMNI_INGEST_TOKENS": [SecretStr(TEST_TOKEN)],
            "OMNI_PRODUCE_TIMEOUT_S": 5.0,
        }
    )


@pytest.fixture
async def topics_ready(settings: Settings) -> Settings:
    """Settings whose topics exist on the broker."""
    await ensure_topics(settings)
    return settings


@pytest.fixture
async def aredis(settings: Settings) -> AsyncIterator[Redis]:
    """An asyncio Redis client; this test's keys are deleted afterwards."""
    client = connect(settings.redis_url)
    yield client
    async for key in client.scan_iter(match=f"{settings.redis_prefix}:*", count=1000):
        await client.delete(key)
    await client.aclose()


@pytest.fixture
def sync_redis(settings: Settings) -> Iterator[redis.Redis]:
    """A blocking Redis client for assertions from sync code."""
    client = connect_sync(settings.redis_url)
    yield client
    client.close()


_SKIPPED: list[str] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.skipped and report.when in ("setup", "call"):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        _SKIPPED.append(f"{report.nodeid}: {reason}")


def pytest_unconfigure(config: pytest.Config) -> None:
    """Under CI=true a skip must not pass quietly: name it on the very last line."""
    if not _SKIPPED or os.environ.get("CI", "").lower() not in ("1", "true", "yes"):
        return
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    reasons = sorted({s.split(": ", 1)[1] for s in _SKIPPED})
    line = f"CI: {len(_SKIPPED)} test(s) SKIPPED, not run: " + " | ".join(reasons)
    if reporter is not None:
        reporter.write_line(line, yellow=True, bold=True)
    else:
        print(line)
