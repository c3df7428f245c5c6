"""The asyncio Redis client every process uses.

redis-py packs commands in Python (several microseconds per argument); the router
sends one script call with thousands of arguments per batch, so the connection
packs with hiredis' C packer instead. Replies are parsed by hiredis too.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio import Redis
from redis.asyncio.connection import Connection

__all__ = ["FastPackConnection", "connect"]


class FastPackConnection(Connection):
    """A redis-py asyncio connection whose command packing runs in C."""

    def pack_command(self, *args: Any) -> list[bytes]:
        """RESP-encode one command with hiredis."""
        if isinstance(args[0], str) and " " in args[0]:
            args = (*args[0].split(), *args[1:])
        return [hiredis.pack_command(args)]


def connect(url: str, **kwargs: Any) -> Redis:
    """A client for ``url`` (redis:// only; rediss:// and unix:// keep redis-py's packer)."""
    if url.startswith("redis://"):
        kwargs.setdefault("connection_class", FastPackConnection)
    return Redis.from_url(url, **kwargs)
