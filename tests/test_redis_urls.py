"""Every Redis client of the tools goes through ``router.redis_client``: the same commands
work with a ``redis://`` and a ``redis+cluster://`` URL (a three-primary cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from typer.testing import CliRunner

from omniroute.cli import app
from omniroute.demo import _cleanup_redis
from omniroute.embedded import redis_answers
from omniroute.router.keys import Keys, bucket_of
from omniroute.router.settings import Settings

pytestmark = pytest.mark.integration
runner = CliRunner()


@pytest.fixture
def redis_url(any_redis_url: str) -> str:
    """Every test of this module runs on a standalone Redis and on a Redis Cluster."""
    return any_redis_url


def test_customers_import_writes_tiers(
    tmp_path: Path, settings: Settings, sync_redis: redis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_URL", settings.redis_url)
    monkeypatch.setenv("OMNI_REDIS_PREFIX", settings.redis_prefix)
    src = tmp_path / "tiers.csv"
    src.write_text("customer_id,tier\nc1,VIP\nc2,gold\n", encoding="utf-8")
    result = runner.invoke(app, ["customers", "import", str(src)])
    assert result.exit_code == 0, result.output
    key = Keys(settings.redis_prefix).customer_tiers()
    try:
        assert sync_redis.hgetall(key) == {b"c1": b"vip", b"c2": b"gold"}
    finally:
        sync_redis.delete(key)


def test_the_demo_finds_the_redis_and_cleans_keys_in_every_slot(
    settings: Settings, sync_redis: redis.Redis
) -> None:
    assert redis_answers(settings.redis_url)
    keys = Keys(settings.redis_prefix)
    ids = [f"m-{i}" for i in range(64)]
    assert len({bucket_of(i) for i in ids}) > 8  # spread over many slots on a cluster
    for i in ids:
        sync_redis.hset(keys.decision(i), "group", "general")
    sync_redis.zadd(keys.queue("general"), {i: 1 for i in ids})
    _cleanup_redis(settings.redis_url, settings.redis_prefix, keep=True)
    assert sync_redis.exists(keys.queue("general")) == 1  # --keep-running keeps them
    _cleanup_redis(settings.redis_url, settings.redis_prefix, keep=False)
    left = [k for k in sync_redis.scan_iter(match=f"{keys.prefix}:*", count=1000)]
    assert left == []
