"""The bundled real messages (router/data/messages.csv) and envelopes built from them."""

from __future__ import annotations

import csv
import random
from importlib import resources

from .router.models import Channel, Customer, Entry, EntryKind, Envelope, Order, message_id

__all__ = ["bundled_texts", "demo_envelope", "demo_message"]

_CHANNELS = (Channel.APP, Channel.APP, Channel.WECHAT, Channel.WECHAT, Channel.LIVESTREAM,
             Channel.EMAIL, Channel.PHONE)


def bundled_texts() -> list[str]:
    """The 800 bundled review texts, in file order."""
    data = resources.files(__package__ or "omniroute").joinpath("data/messages.csv")
    raw = data.read_text(encoding="utf-8")
    return [row["text"] for row in csv.DictReader(raw.splitlines()) if row["text"].strip()]


def demo_message(i: int, text: str, rng: random.Random) -> dict[str, object]:
    """A ``POST /v1/messages`` body for message ``i``: varied channel, customer and order."""
    channel = _CHANNELS[i % len(_CHANNELS)]
    customer = f"cust-{rng.randrange(300):04d}"
    msg: dict[str, object] = {
        "channel": channel.value,
        "account": "demo-live-room-1" if channel is Channel.LIVESTREAM else "demo",
        "channel_msg_id": f"demo-{i}",
        "customer": {"id": customer},
        "text": text,
    }
    if channel is Channel.LIVESTREAM:
        msg["entry"] = {"kind": "live_room", "id": "room-8848"}
    elif rng.random() < 0.5:
        msg["order"] = {"id": f"order-{i}", "amount": round(rng.uniform(10, 400), 2)}
        msg["entry"] = {"kind": "order", "id": f"order-{i}"}
    return msg


def demo_envelope(i: int, text: str, received_at_ms: int, customers: int = 5000) -> Envelope:
    """An envelope as an adapter would produce it (for the benchmark)."""
    channel = _CHANNELS[i % len(_CHANNELS)]
    customer = f"cust-{(i * 7919) % customers}"
    amount = float((i * 37) % 500) if i % 2 else None
    return Envelope(
        id=message_id(channel, "bench", str(i)),
        channel=channel,
        account="bench",
        channel_msg_id=str(i),
        conversation_id=f"{channel.value}:{customer}",
        customer=Customer(customer),
        text=text,
        received_at_ms=received_at_ms,
        order=Order(f"o{i}", amount) if amount is not None else None,
        entry=Entry(EntryKind.LIVE_ROOM, "room-1") if channel is Channel.LIVESTREAM else None,
    )
