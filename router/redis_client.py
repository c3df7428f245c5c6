"""The asyncio Redis client every process uses: a standalone server or a Redis Cluster.

``REDIS_URL`` chooses:

* ``redis://host:port/db`` (``rediss://``, ``unix://``): one server (standalone, or
  the primary a Sentinel names). redis-py packs commands in Python (several
  microseconds per argument); the router sends one script call with thousands of
  arguments per batch, so the connection packs with hiredis' C packer instead.
* ``redis+cluster://host:port[,host:port...]`` (``rediss+cluster://`` for TLS): a
  Redis Cluster, through redis-py's ``redis.asyncio.cluster.RedisCluster``; the
  hosts are seed nodes, the client discovers the rest. Query options:
  ``wait_replicas=N`` makes the router's queue store wait (``WAIT N``) until N
  replicas of every primary it wrote to hold a batch's writes before the batch's
  offsets are committed (see README, "Redis Cluster"); ``wait_timeout_ms`` bounds
  that wait (default 2000; a shortfall fails the batch step, which is retried).
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import hiredis
import redis as redis_sync
from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection

from .exceptions import ConfigError

__all__ = [
    "CLUSTER_SCHEMES",
    "ClusterClient",
    "FastPackConnection",
    "connect",
    "connect_sync",
    "is_cluster",
    "is_cluster_client",
]

CLUSTER_SCHEMES: Final = ("redis+cluster", "rediss+cluster")


class FastPackConnection(Connection):
    """A redis-py asyncio connection whose command packing runs in C."""

    def pack_command(self, *args: Any) -> list[bytes]:
        """RESP-encode one command with hiredis."""
        if isinstance(args[0], str) and " " in args[0]:
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


class ClusterClient(RedisCluster):
    """``RedisCluster`` plus the replication wait the router asks of it."""

    def __init__(self, *args: Any, wait_replicas: int = 0, wait_timeout_ms: int = 2000,
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if wait_replicas < 0 or wait_timeout_ms < 0:
            raise ConfigError(
                f"wait_replicas and wait_timeout_ms must be >= 0 (got {wait_replicas}, "
                f"{wait_timeout_ms})"
            )
        self.wait_replicas = wait_replicas
        self.wait_timeout_ms = wait_timeout_ms

    async def execute_command(self, *args: Any, **kwargs: Any) -> Any:
        """Learn the slot map before the first command. redis-py resolves a command's
        routing policy on the seed node before its own lazy initialisation, which then
        closes that node's connections: concurrent first calls on a new client broke
        with ``'NoneType' object has no attribute 'writelines'``."""
        if self._initialize:
            await self.initialize()
        return await super().execute_command(*args, **kwargs)


def is_cluster(url: str) -> bool:
    """True when ``url`` names a Redis Cluster (``redis+cluster://``)."""
    return url.split("://", 1)[0].lower() in CLUSTER_SCHEMES


def _cluster_parts(url: str) -> tuple[str, list[ClusterNode], int, int]:
    """A ``redis+cluster://`` URL as (a ``redis://`` URL of its first seed, every seed,
    wait_replicas, wait_timeout_ms)."""
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    wait_replicas = int(query.pop("wait_replicas", "0"))
    wait_timeout_ms = int(query.pop("wait_timeout_ms", "2000"))
    scheme = "rediss" if parts.scheme.lower().startswith("rediss") else "redis"
    userinfo, _, hosts = parts.netloc.rpartition("@")
    seeds = [h for h in hosts.split(",") if h]
    if not seeds:
        raise ConfigError(f"REDIS_URL {scheme}+cluster:// names no host")
    first = f"{userinfo}@{seeds[0]}" if userinfo else seeds[0]
    single = urlunsplit((scheme, first, parts.path, urlencode(query), ""))
    nodes = []
    for seed in seeds:
        host, _, port = seed.rpartition(":")
        nodes.append(ClusterNode(host or seed, int(port) if host else 6379))
    return single, nodes, wait_replicas, wait_timeout_ms


def _cluster(url: str, **kwargs: Any) -> ClusterClient:
    single, nodes, wait_replicas, wait_timeout_ms = _cluster_parts(url)
    if len(nodes) > 1:
        kwargs.setdefault("startup_nodes", nodes)
    client: ClusterClient = ClusterClient.from_url(  # type: ignore[assignment]
        single, wait_replicas=wait_replicas, wait_timeout_ms=wait_timeout_ms, **kwargs
    )
    return client


def connect(url: str, **kwargs: Any) -> Redis:
    """A client for ``url``: a :class:`ClusterClient` for ``redis+cluster://``, else a
    ``Redis`` (redis:// packs with hiredis; rediss:// and unix:// keep redis-py's packer).

    The cluster client is typed as ``Redis``: it answers the same commands, scripts and
    non-transactional pipelines; code that must split work per hash slot checks
    :func:`is_cluster_client`.
    """
    if is_cluster(url):
        return _cluster(url, **kwargs)  # type: ignore[return-value]
    if url.startswith("redis://"):
        kwargs.setdefault("connection_class", FastPackConnection)
    return Redis.from_url(url, **kwargs)


def is_cluster_client(client: object) -> bool:
    """True when ``client`` talks to a Redis Cluster."""
    return isinstance(client, RedisCluster)


def connect_sync(url: str, **kwargs: Any) -> redis_sync.Redis:
    """A blocking client for ``url`` (scripts and tools that are not asyncio): a
    ``redis.RedisCluster`` for ``redis+cluster://`` (typed as ``redis.Redis``, as in
    :func:`connect`; ``wait_replicas`` does not apply), else ``redis.Redis``."""
    if not is_cluster(url):
        return redis_sync.Redis.from_url(url, **kwargs)
    single, nodes, _wait, _timeout = _cluster_parts(url)
    if len(nodes) > 1:
        kwargs.setdefault("startup_nodes", [
            redis_sync.cluster.ClusterNode(n.host, n.port)  # type: ignore[no-untyped-call]
            for n in nodes])
    return redis_sync.RedisCluster.from_url(single, **kwargs)  # type: ignore[return-value]
