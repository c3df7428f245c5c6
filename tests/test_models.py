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



_ODD_VALUES: list[object] = [
    None, True, False, 0, 1, -1, 1.5, 2**70, "", "x", "wechat", [], [1], ["a"], {}, {"id": "c"},
    {"kind": "live_room", "id": "r"}, {"id": "o", "amount": 5}, {"a": 1}, {"a": "b"},
]
_FIELDS = ["schema", "id", "channel", "account", "channel_msg_id", "conversation_id",
           "customer", "text", "received_at_ms", "sent_at_ms", "attachments", "entry",
           "order", "hints", "meta", "raw_ref"]


def _decode_both_ways(data: dict[str, object]) -> None:
    from omniroute.router.models import _envelope_checked

    try:
        expected: Envelope | None = _envelope_checked(data)
    except InvalidEnvelope:
        expected = None
    if expected is None:
        with pytest.raises(InvalidEnvelope):
            Envelope.from_dict(data)
    else:
        assert Envelope.from_dict(data) == expected, data


def _full_envelope() -> dict[str, object]:
    data: dict[str, object] = orjson.loads(envelope(1, text="快递三天没到").to_json())
    data["entry"] = {"kind": "live_room", "id": "room-1"}
    data["order"] = {"id": "o-1", "amount": 12.5}
    return data


def test_the_inlined_decode_agrees_with_the_field_by_field_one() -> None:
    """The router's fast decode path accepts exactly what the checked path accepts,
    with the same result; everything else gets the checked path's named error. Every
    field takes every odd value in turn, or is left out."""
    for field in _FIELDS:
        for value in [*_ODD_VALUES, ...]:
            data = _full_envelope()
            if value is ...:
                data.pop(field, None)
            else:
                data[field] = value
            _decode_both_ways(data)
        for inner in ("id", "handle", "tier"):
            for value in _ODD_VALUES:
                data = _full_envelope()
                data["customer"] = {"id": "c-1", inner: value}
                _decode_both_ways(data)


@given(st.dictionaries(st.sampled_from(_FIELDS), st.sampled_from(_ODD_VALUES), max_size=4))
def test_the_inlined_decode_agrees_on_combined_changes(changes: dict[str, object]) -> None:
    data = _full_envelope()
    data.update(changes)
    _decode_both_ways(data)


def test_envelopes_and_decisions_encode_to_the_bytes_orjson_gives() -> None:
    """to_json encodes with msgspec for speed; the wire format stays what orjson makes of
    the dataclasses, byte for byte, over the bundled messages and every optional field."""
    import time
    from dataclasses import replace

    from prometheus_client import CollectorRegistry

    from omniroute.corpus import bundled_texts, demo_envelope
    from omniroute.router.metrics import RouterMetrics
    from omniroute.router.models import Attachment, Customer, Entry, EntryKind, Order
    from omniroute.router.reload import PipelineHolder
    from omniroute.router.settings import default_config_dir

    now = int(time.time() * 1000)
    texts = bundled_texts()
    envs = [demo_envelope(i, texts[i % len(texts)], now) for i in range(len(texts))]
    full = replace(
        envs[0], sent_at_ms=now - 5, customer=Customer("c😀", "昵称\u200b", "vip"),
        attachments=(Attachment("image", "ref-1", "照片.jpg", 12345),
                     Attachment("file", "ref-2")),
        entry=Entry(EntryKind.LIVE_ROOM, "room-1"), order=Order("o-1", 0.1 + 0.2),
        hints=("1", "退款"), meta={"source": "bearer:x", "n": -(2**63)}, raw_ref="s3://b/k",
    )
    # the largest amount a valid envelope can carry; (only floats from 1e16 up would be
    # written differently, 1e16 against orjson's 1e+16: the same JSON number)
    envs += [full, replace(full, order=Order("o-2", 999_999_999_999.99)),
             replace(full, text='"\\\n\t')]
    for env in envs:
        assert env.to_json() == orjson.dumps(env)
    pipeline = PipelineHolder(default_config_dir(), RouterMetrics(CollectorRegistry()))()
    decisions = [pipeline.decide(env, now) for env in envs]
    assert any(t.evidence for d in decisions for t in d.tags)  # scores and evidence too
    for d in decisions:
        assert d.to_json() == orjson.dumps(d)
