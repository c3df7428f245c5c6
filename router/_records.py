"""Hand-written field checks shared by the topic-record decoders (router.models' Decision,
router.events' records).

Each check reads one key of a decoded JSON object and either returns the value with
its type narrowed or raises :class:`~router.exceptions.InvalidRecord` naming the record
and the field. No validation library: these run once per consumed record.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

from .exceptions import InvalidRecord
from .text import SHOWN_CHARS, clip


def show(value: Any) -> str:
    """The repr of a bad value for an error message, cut to ``SHOWN_CHARS``."""
    return clip(repr(value), SHOWN_CHARS)


def loads(raw: bytes | str, record: str) -> dict[str, Any]:
    """Decode ``raw`` into a JSON object, or raise InvalidRecord saying why not."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise InvalidRecord(f"{record} is not JSON: {exc}") from None
    return obj(data, record)


def obj(data: Any, record: str) -> dict[str, Any]:
    """``data`` if it is a JSON object."""
    if not isinstance(data, dict):
        raise InvalidRecord(f"{record} must be a JSON object, got {show(data)}")
    return data


def schema(d: Mapping[str, Any], record: str, version: int) -> None:
    """Refuse a record written for another schema version (absent means ``version``)."""
    value = d.get("schema", version)
    if value != version or type(value) is not int:
        raise InvalidRecord(
            f"unsupported {record} schema {show(value)}; this version reads schema {version}"
        )


def fail(record: str, path: str, wanted: str, value: Any) -> InvalidRecord:
    """The error for field ``path`` of ``record``: what it must be, what it was."""
    return InvalidRecord(f"{record} field '{path}' must be {wanted}, got {show(value)}")


def req_str(d: Mapping[str, Any], key: str, record: str, path: str | None = None) -> str:
    """A non-empty string."""
    value = d.get(key)
    if type(value) is not str or not value:
        raise fail(record, path or key, "a non-empty string", value)
    return value


def any_str(d: Mapping[str, Any], key: str, record: str, path: str | None = None) -> str:
    """A string, possibly empty."""
    value = d.get(key)
    if type(value) is not str:
        raise fail(record, path or key, "a string", value)
    return value


def opt_str(d: Mapping[str, Any], key: str, record: str, path: str | None = None) -> str | None:
    """A string, null or absent."""
    value = d.get(key)
    if value is None or type(value) is str:
        return value
    raise fail(record, path or key, "a string or null", value)


def count(d: Mapping[str, Any], key: str, record: str, path: str | None = None) -> int:
    """A non-negative integer (epoch milliseconds, counts, levels)."""
    value = d.get(key)
    if type(value) is not int or value < 0:
        raise fail(record, path or key, "a non-negative integer", value)
    return value


def opt_count(d: Mapping[str, Any], key: str, record: str) -> int | None:
    """A non-negative integer, null or absent."""
    return None if d.get(key) is None else count(d, key, record)


def number(d: Mapping[str, Any], key: str, record: str, path: str | None = None) -> float:
    """A number (kept as decoded: an integer stays an integer on the way back out)."""
    value = d.get(key)
    if type(value) is not float and type(value) is not int:
        raise fail(record, path or key, "a number", value)
    return value


def opt_number(
    d: Mapping[str, Any], key: str, record: str, path: str | None = None
) -> float | None:
    """A number, null or absent."""
    return None if d.get(key) is None else number(d, key, record, path)


def str_tuple(
    d: Mapping[str, Any], key: str, record: str, path: str | None = None
) -> tuple[str, ...]:
    """An array of strings; absent or null is empty."""
    value = d.get(key)
    if value is None:
        return ()
    if type(value) is not list or not all(type(v) is str for v in value):
        raise fail(record, path or key, "an array of strings", value)
    return tuple(value)


def choice(
    d: Mapping[str, Any], key: str, allowed: Mapping[Any, Any], record: str,
    path: str | None = None,
) -> Any:
    """One of ``allowed``'s keys, returned as the value it maps to (an enum member)."""
    value = d.get(key)
    found = allowed.get(value) if type(value) is str else None
    if found is None:
        raise fail(record, path or key, f"one of {sorted(allowed)}", value)
    return found
