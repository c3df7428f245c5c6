"""Reading request bodies under a byte limit, with a specific 413."""

from __future__ import annotations

from aiohttp import web

from adapters.exceptions import PayloadTooLarge

__all__ = ["read_limited"]


async def read_limited(request: web.Request, max_body_bytes: int) -> bytes:
    """Return the body, or raise PayloadTooLarge before buffering more than the limit."""
    declared = request.content_length
    if declared is not None and declared > max_body_bytes:
        raise PayloadTooLarge(
            f"body is {declared} bytes; the limit is {max_body_bytes} (split the batch)"
        )
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.content.iter_chunked(65_536):
        size += len(chunk)
        if size > max_body_bytes:
            raise PayloadTooLarge(
                f"body exceeds the limit of {max_body_bytes} bytes (split the batch)"
            )
        chunks.append(chunk)
    return b"".join(chunks)
