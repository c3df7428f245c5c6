"""Envelope and decision models: round trips, strict decoding; every record's published schema."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from omniroute.router.exceptions import InvalidEnvelope
from omniroute.router.models import Band, Channel, Envelope, message_id
from omniroute.router.schema import RECORDS, json_schema
from tests.helpers import envelope

DOCS = Path(__file__).parent.parent / "docs" / "schema"


def test_envelope_round_trips_through_orjson() -> None:
    env = envelope(1, "订单还没到", amount=120.5, tier="vip")
    assert Envelope.from_json(env.to_json()) == env
    assert orjson.loads(env.to_json())["schema"] == 1


def test_message_id_is_stable_per_channel_message() -> None:
    assert message_id("wechat", "oa1", "123") == message_id("wechat", "oa1", "123")
    assert message_id("wechat", "oa1", "123") != message_id("wechat", "oa2", "123")
    assert message_id("wechat", "oa1", "123").startswith("wechat-")


@pytest.mark.parametrize(
    ("mutate", "needle"),
    [
        (lambda d: d.pop("channel"), "missing field 'channel'"),
        (lambda d: d.update(channel="fax"), "field 'channel' must be one of"),
        (lambda d: d.update(text=5), "field 'text' must be a non-empty string"),
        (lambda d: d.update(customer="x"), "field 'customer' must be an object"),
        (lambda d: d.update(received_at_ms=-1), "field 'received_at_ms' must be a non-negative"),
        (lambda d: d.update(received_at_ms=True), "field 'received_at_ms' must be a non-negative"),
        (lambda d: d.update(order={"id": "o", "amount": "many"}), "field 'order.amount'"),
        (lambda d: d.update(entry={"kind": "moon", "id": "x"}), "field 'entry.kind'"),
        (lambda d: d.update(schema=2), "unsupported envelope schema 2"),
        (lambda d: d.update(hints=[1]), "field 'hints' must be a list of strings"),
        (lambda d: d.update(text="x" * 20_001), "limit 20000"),
    ],
)
def test_invalid_envelopes_name_the_field(mutate: object, needle: str) -> None:
    data = orjson.loads(envelope(1, "hi").to_json())
    mutate(data)  # type: ignore[operator]  # the parametrised lambdas
    with pytest.raises(InvalidEnvelope, match=needle.replace("(", r"\(")):
        Envelope.from_dict(data)


def test_non_object_and_non_json_are_refused() -> None:
    with pytest.raises(InvalidEnvelope, match="not JSON"):
        Envelope.from_json(b"\xff")
    with pytest.raises(InvalidEnvelope, match="must be a JSON object"):
        Envelope.from_json(b"[1]")


@given(st.recursive(st.none() | st.booleans() | st.integers() | st.text(),
                    lambda c: st.lists(c) | st.dictionaries(st.text(), c), max_leaves=20))
def test_decoding_arbitrary_json_never_raises_anything_but_invalid_envelope(data: object) -> None:
    with contextlib.suppress(InvalidEnvelope):
        Envelope.from_dict(data)


def test_band_rank_orders_the_queue_score() -> None:
    assert [b.rank for b in Band] == [0, 1, 2, 3, 4]
    assert Channel("livestream") is Channel.LIVESTREAM


@pytest.mark.parametrize("which", sorted(RECORDS))
def test_published_schema_matches_the_code(which: str) -> None:
    published = json.loads((DOCS / f"{which}.schema.json").read_text())
    assert published == json_schema(which), (
        f"docs/schema/{which}.schema.json is stale: regenerate with "
        f"`omniroute schema {which} > docs/schema/{which}.schema.json`"
    )


def test_every_published_schema_is_a_known_record() -> None:
    published = {p.name.removesuffix(".schema.json") for p in DOCS.glob("*.schema.json")}
    assert published == set(RECORDS), "docs/schema/ and router.schema.RECORDS disagree"
