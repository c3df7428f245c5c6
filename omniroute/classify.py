"""Offline dry-run of a routing configuration: text lines, CSV or JSONL in, decisions out.

No broker and no Redis: the same :class:`~router.pipeline.Pipeline` the worker runs,
with every message treated as a first contact of a customer without a stored tier
(a ``tier`` column or field supplies one).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, Any

import orjson

from .router.exceptions import OmniError
from .router.models import Channel, Customer, Entry, EntryKind, Envelope, Order, message_id
from .router.pipeline import Pipeline, RedisFacts

__all__ = ["InputFormat", "InputRow", "classify_rows", "read_rows"]


class InputFormat(StrEnum):
    """Input file formats ``omniroute classify`` reads."""

    AUTO = "auto"
    TEXT = "text"
    CSV = "csv"
    JSONL = "jsonl"


@dataclass(frozen=True, slots=True)
class InputRow:
    """One message to classify, with its line number for error messages."""

    line: int
    text: str
    fields: dict[str, Any]


class InputError(OmniError, ValueError):
    """A row that cannot be read; the message names the line."""


def _sniff(first: str) -> InputFormat:
    stripped = first.lstrip("\ufeff").strip()
    if stripped.startswith("{"):
        return InputFormat.JSONL
    header = [h.strip().lower() for h in next(csv.reader([stripped]), [])]
    if "text" in header and len(header) > 1:
        return InputFormat.CSV
    return InputFormat.TEXT


def read_rows(stream: IO[str], fmt: InputFormat = InputFormat.AUTO) -> Iterator[InputRow]:
    """Yield rows; blank lines are skipped; a bad JSONL line raises InputError."""
    first = stream.readline()
    if not first:
        return
    if fmt is InputFormat.AUTO:
        fmt = _sniff(first)
    rest: Iterable[str] = stream
    if fmt is InputFormat.CSV:
        reader = csv.DictReader(io.StringIO(first.lstrip("\ufeff")), skipinitialspace=True)
        fieldnames = [f.strip().lower() for f in (reader.fieldnames or [])]
        if "text" not in fieldnames:
            raise InputError(f"line 1: CSV header {fieldnames} has no 'text' column")
        for n, row in enumerate(csv.reader(rest), start=2):
            if not row:
                continue
            fields = dict(zip(fieldnames, row, strict=False))
            yield InputRow(n, fields.get("text", ""), fields)
        return
    lines = [first]
    for n, line in enumerate(_chain(lines, rest), start=1):
        if not line.strip():
            continue
        if fmt is InputFormat.JSONL:
            try:
                obj = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                raise InputError(f"line {n}: not JSON ({exc})") from None
            if not isinstance(obj, dict) or not isinstance(obj.get("text"), str):
                raise InputError(f"line {n}: expected an object with a string 'text' field")
            yield InputRow(n, obj["text"], obj)
        else:
            yield InputRow(n, line.rstrip("\r\n"), {})


def _chain(first: list[str], rest: Iterable[str]) -> Iterator[str]:
    yield from first
    yield from rest


def _envelope(row: InputRow, now_ms: int) -> Envelope:
    f = row.fields
    channel = Channel(str(f.get("channel") or "app"))
    customer = str(f.get("customer_id") or f.get("customer") or f"line-{row.line}")
    amount = f.get("amount")
    order = None
    if amount not in (None, ""):
        order = Order(id=str(f.get("order_id") or f"order-{row.line}"), amount=float(amount))
    entry = None
    if f.get("entry"):
        entry = Entry(EntryKind(str(f["entry"])), str(f.get("entry_id") or "-"))
    hints = f.get("hints") or ()
    if isinstance(hints, str):
        hints = tuple(h for h in hints.split("|") if h)
    return Envelope(
        id=message_id(channel, "classify", str(row.line)),
        channel=channel,
        account="classify",
        channel_msg_id=str(row.line),
        conversation_id=f"classify:{row.line}",
        customer=Customer(customer, tier=str(f["tier"]) if f.get("tier") else None),
        text=row.text,
        received_at_ms=now_ms,
        order=order,
        entry=entry,
        hints=tuple(hints),
    )


def classify_rows(
    pipeline: Pipeline, rows: Iterable[InputRow], with_text: bool = False
) -> Iterator[bytes]:
    """One JSON line (bytes, no newline) per row: the decision, or an error object."""
    now_ms = int(time.time() * 1000)
    facts = RedisFacts()
    for row in rows:
        try:
            env = _envelope(row, now_ms)
        except (ValueError, KeyError) as exc:
            yield orjson.dumps({"line": row.line, "error": f"{type(exc).__name__}: {exc}"})
            continue
        decision = pipeline.decide(env, now_ms, facts)
        if with_text:
            yield orjson.dumps({"line": row.line, "text": row.text, "decision": decision})
        else:
            yield decision.to_json()
