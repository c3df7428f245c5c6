"""One bad record costs one dead letter, never the partition (issue 11, item 1).

The decoder names the field of any malformed shape; the router worker, on a real
broker and a real Redis, routes valid envelopes and sends every other record to
omni.dead-letter with its reason, whatever the failure raised, and keeps going.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import math
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from omniroute.router import topics
from omniroute.router.exceptions import InvalidEnvelope
from omniroute.router.keys import Keys
from omniroute.router.metrics import RouterMetrics
from omniroute.router.models import (
    MAX_SIZE_BYTES,
    MAX_TEXT_CHARS,
    MAX_TIMESTAMP_MS,
    Channel,
    Decision,
    Entry,
    EntryKind,
    Envelope,
)
from omniroute.router.pipeline import Pipeline
from omniroute.router.queues import RedisQueueStore
from omniroute.router.reload import PipelineHolder
from omniroute.router.settings import Settings
from omniroute.router.worker import BatchRouter
from tests.helpers import consume, envelope
from tests.test_router_worker import MINI, _router, _run_until

pytestmark = pytest.mark.integration

# --- the decoder: every malformed shape is an InvalidEnvelope naming the field ---------

DEEP = orjson.loads(b"[" * 1000 + b"]" * 1000)  # valid JSON; a plain repr() of it recurses


def _valid() -> dict[str, Any]:
    """A valid envelope as decoded JSON, with every optional part present."""
    data: dict[str, Any] = orjson.loads(envelope(1, "外卖还没到", amount=12.5).to_json())
    data["attachments"] = [{"kind": "image", "ref": "m1", "name": None, "size_bytes": 10}]
    data["entry"] = {"kind": "order", "id": "o1"}
    data["hints"] = ["1"]
    data["meta"] = {"msg_type": "text", "agent_id": 1000002}
    return data


def _set(path: str, value: Any) -> dict[str, Any]:
    """``_valid()`` with the field at the dotted ``path`` set to ``value``."""
    data = _valid()
    *parents, last = path.split(".")
    node: Any = data
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    node[last] = value
    return data


def _short_id(value: Any) -> str | None:
    """A readable test id for huge or deep values (the default would print them whole)."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 64:
        return f"int{value.bit_length()}bits"
    if isinstance(value, str) and len(value) > 30:
        return f"str{len(value)}"
    if value is DEEP:
        return "deep"
    return None


@pytest.mark.parametrize(
    ("path", "value", "field"),
    [
        ("attachments", True, "'attachments'"),
        ("attachments", 5, "'attachments'"),
        ("attachments", 1.5, "'attachments'"),
        ("attachments", "ab", "'attachments'"),
        ("attachments", {"kind": "image"}, "'attachments'"),
        ("attachments", [5], "'attachments[0]'"),
        ("attachments.0.size_bytes", True, "'attachments[0].size_bytes'"),
        ("attachments.0.size_bytes", -1, "'attachments[0].size_bytes'"),
        ("attachments.0.size_bytes", MAX_SIZE_BYTES + 1, "'attachments[0].size_bytes'"),
        ("attachments.0.kind", None, "'attachments[0].kind'"),
        ("attachments.0.name", 7, "'attachments[0].name'"),
        ("hints", 0, "'hints'"),
        ("hints", False, "'hints'"),
        ("hints", "", "'hints'"),
        ("hints", "12", "'hints'"),
        ("hints", {"a": "b"}, "'hints'"),
        ("hints", ["1", None], "'hints'"),
        ("meta", "x", "'meta'"),
        ("meta", 0, "'meta'"),
        ("meta", [], "'meta'"),
        ("meta", {"k": 1.5}, "'meta.k'"),
        ("meta", {"k": None}, "'meta.k'"),
        ("meta", {"k": True}, "'meta.k'"),
        ("meta", {"k": ["v"]}, "'meta.k'"),
        ("meta", {"k": 2**64}, "'meta.k'"),
        ("meta", {1: "v"}, "'meta'"),
        ("customer", ["c1"], "'customer'"),
        ("customer", None, "'customer'"),
        ("customer.id", 5, "'customer.id'"),
        ("customer.tier", ["vip"], "'customer.tier'"),
        ("entry", "order", "'entry'"),
        ("entry", 5, "'entry'"),
        ("entry.kind", 5, "'entry.kind'"),
        ("entry.kind", None, "'entry.kind'"),
        ("entry.kind", ["order"], "'entry.kind'"),
        ("entry.id", 1, "'entry.id'"),
        ("order", [], "'order'"),
        ("order", True, "'order'"),
        ("order.amount", math.nan, "'order.amount'"),
        ("order.amount", math.inf, "'order.amount'"),
        ("order.amount", -math.inf, "'order.amount'"),
        ("order.amount", True, "'order.amount'"),
        ("order.amount", 10**30, "'order.amount'"),
        ("order.amount", 10**5000, "'order.amount'"),
        ("order.amount", -0.01, "'order.amount'"),
        ("order.id", None, "'order.id'"),
        ("received_at_ms", 1.5, "'received_at_ms'"),
        ("received_at_ms", True, "'received_at_ms'"),
        ("received_at_ms", MAX_TIMESTAMP_MS + 1, "'received_at_ms'"),
        ("received_at_ms", 10**30, "'received_at_ms'"),
        ("received_at_ms", 10**5000, "'received_at_ms'"),
        ("received_at_ms", "1700000000000", "'received_at_ms'"),
        ("sent_at_ms", False, "'sent_at_ms'"),
        ("sent_at_ms", -5, "'sent_at_ms'"),
        ("channel", DEEP, "'channel'"),
        ("channel", ["app"], "'channel'"),
        ("channel", "x" * 1_000_000, "'channel'"),
        ("text", DEEP, "'text'"),
        ("text", "x" * (MAX_TEXT_CHARS + 1), "'text'"),
        ("id", {"a": DEEP}, "'id'"),
        ("raw_ref", 10**5000, "'raw_ref'"),
        ("schema", True, "schema"),
        ("schema", 1.0, "schema"),
        ("schema", "1", "schema"),
    ],
    ids=_short_id,
)
def test_every_malformed_field_is_an_invalid_envelope_naming_it(
    path: str, value: Any, field: str
) -> None:
    with pytest.raises(InvalidEnvelope) as err:
        Envelope.from_dict(_set(path, value))
    message = str(err.value)
    assert field in message, message
    assert len(message) < 300, "a bad value is shown cut short, not whole"


def test_the_valid_base_and_its_optional_nulls_decode() -> None:
    env = Envelope.from_dict(_valid())
    assert env.entry == Entry(EntryKind.ORDER, "o1")
    assert env.attachments[0].size_bytes == 10
    assert env.meta == {"msg_type": "text", "agent_id": 1000002}
    for key in ("attachments", "hints", "meta", "entry", "order", "sent_at_ms", "raw_ref"):
        Envelope.from_dict(_set(key, None))
    top = Envelope.from_dict(_set("received_at_ms", MAX_TIMESTAMP_MS))
    assert top.received_at_ms == MAX_TIMESTAMP_MS


# --- the running worker: a poison record between good ones --------------------------


@pytest.mark.parametrize("poison", [True, 5, 1.5])
async def test_attachments_not_a_list_is_dead_lettered_between_routed_records(
    topics_ready: Settings, aredis: Redis, poison: object
) -> None:
    settings = topics_ready.model_copy(update={"config_dir": MINI})
    inbound = settings.topic(topics.INBOUND)
    good = [envelope(i, "外卖还没到") for i in range(6)]
    bad = orjson.loads(envelope(99, "外卖还没到").to_json())
    bad["attachments"] = poison
    bad_value = orjson.dumps(bad)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        # one key, so one partition: the poison sits between good records
        for env in good[:3]:
            await producer.send_and_wait(inbound, env.to_json(), key=b"same")
        sent = await producer.send_and_wait(inbound, bad_value, key=b"same")
        for env in good[3:]:
            await producer.send_and_wait(inbound, env.to_json(), key=b"same")
    finally:
        await producer.stop()
    registry = CollectorRegistry()
    router = _router(settings, aredis, registry)
    await _run_until(router, len(good) + 1)

    [dead] = await consume(settings.kafka_bootstrap, settings.topic(topics.DEAD_LETTER), 1)
    letter = orjson.loads(dead.value)
    assert letter["reason"] == (
        f"invalid_envelope: field 'attachments' must be an array or null, got {poison!r}"
    )
    assert letter["source"] == {"topic": inbound, "partition": sent.partition,
                                "offset": sent.offset}
    assert base64.b64decode(letter["value_b64"]) == bad_value
    routed = await consume(settings.kafka_bootstrap, settings.topic(topics.ROUTED), len(good))
    assert {orjson.loads(r.value)["message_id"] for r in routed} == {e.id for e in good}
    keys = Keys(settings.redis_prefix)
    queued = [m for g in ("logistics", "general", "senior")
              for m in await aredis.zrange(keys.queue(g), 0, -1)]
    assert sorted(queued) == sorted(e.id.encode() for e in good)
    assert registry.get_sample_value(
        "omni_dead_letters_total", {"reason": "invalid_envelope"}) == 1


# --- unexpected exceptions: still one dead letter, naming the type ------------------


class _FaultyPipeline(Pipeline):
    """The real pipeline with a bug that fires on one text: stands for any decide bug."""

    def decide(self, env: Envelope, *args: Any, **kwargs: Any) -> Decision:
        if env.text == "boom":
            raise ZeroDivisionError("division by zero")
        return super().decide(env, *args, **kwargs)


async def test_unexpected_exceptions_in_decode_and_decide_are_dead_letters_naming_the_type(
    topics_ready: Settings, aredis: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = topics_ready.model_copy(update={"config_dir": MINI})
    registry = CollectorRegistry()
    metrics = RouterMetrics(registry)
    pipeline = _FaultyPipeline(PipelineHolder(MINI, metrics)().config)
    store = RedisQueueStore(aredis, Keys(settings.redis_prefix), decision_ttl_s=3600,
                            repeat_window_s=3600, sticky_window_s=3600)
    router = BatchRouter(settings, lambda: pipeline, store, metrics)
    decode = Envelope.from_json

    def buggy_decode(raw: bytes | str) -> Envelope:  # a decoder bug that hits one record
        if "decoder-bug" in (raw.decode() if isinstance(raw, bytes) else raw):
            raise KeyError("decoder-bug")
        return decode(raw)

    monkeypatch.setattr(Envelope, "from_json", staticmethod(buggy_decode))
    inbound = settings.topic(topics.INBOUND)
    envs = [envelope(1, "你好"), envelope(2, "decoder-bug"), envelope(3, "boom"),
            envelope(4, "外卖还没到")]
    records = [ConsumerRecord(inbound, 0, i, 0, 0, b"k", e.to_json(), None, 1, 1, [])
               for i, e in enumerate(envs)]
    async with router:
        prepared = await router.prepare(records)
        await router.finish(prepared)
    assert [d.message_id for d in prepared.decisions] == [envs[0].id, envs[3].id]
    reasons = {rec.offset: reason for rec, reason in prepared.dead}
    assert reasons == {1: "decode_failed: KeyError: 'decoder-bug'",
                       2: "decide_failed: ZeroDivisionError: division by zero"}
    dead = [orjson.loads(r.value) for r in await consume(
        settings.kafka_bootstrap, settings.topic(topics.DEAD_LETTER), 2)]
    assert {d["source"]["offset"]: d["reason"] for d in dead} == reasons
    for label in ("decode_failed", "decide_failed"):
        assert registry.get_sample_value("omni_dead_letters_total", {"reason": label}) == 1


# --- property: arbitrary records through prepare -> finish ---------------------------

ID_SLOT = "<fresh id>"  # replaced per record, so examples never deduplicate each other
JSON_INTS = st.integers(-(2**63), 2**64 - 1)  # what orjson writes (beyond: TypeError)
json_leaves = (st.none() | st.booleans() | JSON_INTS | st.text(max_size=8)
               | st.floats(allow_nan=False, allow_infinity=False))
json_values = st.recursive(
    json_leaves,
    lambda inner: st.lists(inner, max_size=3)
    | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
words = st.text(min_size=1, max_size=12)
opt_words = st.none() | st.text(max_size=12)
timestamps = st.integers(0, MAX_TIMESTAMP_MS)
attachments = st.fixed_dictionaries(
    {"kind": words, "ref": words},
    optional={"name": opt_words, "size_bytes": st.none() | st.integers(0, MAX_SIZE_BYTES)},
)
valid_envelopes = st.fixed_dictionaries(
    {
        "id": st.just(ID_SLOT),
        "channel": st.sampled_from([c.value for c in Channel]),
        "account": words,
        "channel_msg_id": words,
        "conversation_id": words,
        "customer": st.fixed_dictionaries({"id": words},
                                          optional={"handle": opt_words, "tier": opt_words}),
        "text": words | st.text(min_size=1, max_size=300) | st.just("退" * MAX_TEXT_CHARS),
        "received_at_ms": timestamps,
    },
    optional={
        "schema": st.just(1),
        "sent_at_ms": st.none() | timestamps,
        "attachments": st.none() | st.lists(attachments, max_size=3),
        "entry": st.none() | st.fixed_dictionaries(
            {"kind": st.sampled_from([k.value for k in EntryKind]), "id": words}),
        "order": st.none() | st.fixed_dictionaries(
            {"id": words},
            optional={"amount": st.none() | st.integers(0, 10**12 - 1)
                      | st.floats(0, 1e12, exclude_max=True)}),
        "hints": st.none() | st.lists(st.text(max_size=4), max_size=3),
        "meta": st.none() | st.dictionaries(
            st.text(max_size=8), st.text(max_size=8) | st.integers(-(2**63), 2**63 - 1),
            max_size=3),
        "raw_ref": opt_words,
        "unknown_future_field": json_values,  # readers ignore fields they do not know
    },
)


def _is_word(v: Any) -> bool:
    return isinstance(v, str) and v != ""


def _is_timestamp(v: Any) -> bool:
    return type(v) is int and 0 <= v <= MAX_TIMESTAMP_MS


not_word = json_values.filter(lambda v: not _is_word(v)) | st.just("")
not_opt_str = json_values.filter(lambda v: v is not None and not isinstance(v, str))
not_timestamp = (json_values.filter(lambda v: v is not None and not _is_timestamp(v))
                 | st.integers(-(2**63), -1) | st.integers(MAX_TIMESTAMP_MS + 1, 2**64 - 1)
                 | st.just(1.7e12))
not_opt_list = (json_values.filter(lambda v: v is not None and not isinstance(v, list))
                | st.sampled_from([True, 5, 1.5, "x", 0, False, ""]))
not_opt_dict = json_values.filter(lambda v: v is not None and not isinstance(v, dict))
not_amount = (json_values.filter(lambda v: v is not None and type(v) not in (int, float))
              | st.integers(-(2**63), -1)
              | st.floats(max_value=-0.001, allow_infinity=False)  # orjson writes inf as null
              | st.integers(10**12, 2**64 - 1) | st.floats(1e12, 1e300) | st.just(True))
DELETE = object()  # a mutation that removes the field

# field path -> values that make a valid envelope invalid ("[]": an item of the list / map)
MUTATIONS: dict[str, st.SearchStrategy[Any]] = {
    "id": not_word | st.just(DELETE),
    "channel": (json_values.filter(lambda v: v not in [c.value for c in Channel])
                | st.just(DELETE)),
    "account": not_word | st.just(DELETE),
    "channel_msg_id": not_word,
    "conversation_id": not_word,
    "text": not_word | st.just("x" * (MAX_TEXT_CHARS + 1)),
    "received_at_ms": not_timestamp | st.just(None) | st.just(DELETE),
    "sent_at_ms": not_timestamp,
    "schema": json_values.filter(lambda v: not (type(v) is int and v == 1)),
    "customer": json_values.filter(lambda v: not isinstance(v, dict)) | st.just({}),
    "customer.id": not_word,
    "customer.handle": not_opt_str,
    "customer.tier": not_opt_str,
    "raw_ref": not_opt_str,
    "attachments": not_opt_list,
    "attachments[]": json_values.filter(lambda v: not isinstance(v, dict)),
    "attachments[].kind": not_word,
    "attachments[].ref": not_word,
    "attachments[].name": not_opt_str,
    "attachments[].size_bytes": (
        json_values.filter(lambda v: v is not None and type(v) is not int)
        | st.integers(-(2**63), -1) | st.integers(MAX_SIZE_BYTES + 1, 2**64 - 1)),
    "hints": not_opt_list,
    "hints[]": json_values.filter(lambda v: not isinstance(v, str)),
    "meta": not_opt_dict,
    "meta[]": json_values.filter(lambda v: not isinstance(v, str) and type(v) is not int),
    "entry": not_opt_dict,
    "entry.kind": json_values.filter(lambda v: v not in [k.value for k in EntryKind]),
    "entry.id": not_word,
    "order": not_opt_dict,
    "order.id": not_word,
    "order.amount": not_amount,
}


@st.composite
def mutated_envelopes(draw: st.DrawFn) -> dict[str, Any]:
    """A valid envelope with one field removed or set to a value of a wrong type or range."""
    data: dict[str, Any] = draw(valid_envelopes)
    path = draw(st.sampled_from(sorted(MUTATIONS)))
    value = draw(MUTATIONS[path])
    head, _, leaf = path.partition(".")
    if head.endswith("[]"):
        name = head[:-2]
        if name == "attachments":
            item: dict[str, Any] = draw(attachments)
            if leaf:
                item[leaf] = value
                data[name] = [item]
            else:
                data[name] = [item, value]
        elif name == "hints":
            data[name] = ["1", value]
        else:
            data[name] = {"ok": "v", "bad": value}
    elif leaf:
        parent = dict(data.get(head) or {})
        parent.setdefault("id", "x")
        if head == "entry":
            parent.setdefault("kind", "order")
        parent[leaf] = value
        data[head] = parent
    elif value is DELETE:
        data.pop(head, None)
    else:
        data[head] = value
    return data


@dataclass(frozen=True, slots=True)
class Case:
    """One record value and whether it must be routed (else dead-lettered)."""

    value: bytes | None
    good: bool


def _case(data: Any, good: bool) -> Case:
    if isinstance(data, dict) and data.get("id") == ID_SLOT:
        data = {**data, "id": f"p-{uuid.uuid4().hex}"}
    return Case(orjson.dumps(data), good)


cases = st.one_of(
    valid_envelopes.map(lambda d: _case(d, True)),
    mutated_envelopes().map(lambda d: _case(d, False)),
    # arbitrary JSON: object keys of at most 5 characters never make the field 'channel'
    json_values.map(lambda d: _case(d, False)),
    st.binary(max_size=64).filter(lambda b: b"channel" not in b).map(lambda b: Case(b, False)),
    st.just(Case(None, False)),  # a tombstone
)
# 1000 levels of arrays as the channel: orjson reads them, a plain repr() recurses too deep
DEEP_CHANNEL = Case(orjson.dumps(_set("channel", "<deep>")).replace(
    b'"<deep>"', b"[" * 1000 + b"]" * 1000), False)


@dataclass
class Rig:
    """A started BatchRouter and a reader of its output topics."""

    settings: Settings
    router: BatchRouter
    registry: CollectorRegistry
    reader: AIOKafkaConsumer
    offsets: itertools.count[int]
    routed: dict[str, dict[str, Any]]  # message_id -> decision, as read so far
    dead: dict[int, dict[str, Any]]  # source offset -> dead letter, as read so far

    async def read_until(self, ids: set[str], offsets: set[int]) -> None:
        """Read omni.routed and omni.dead-letter until these ids and offsets are there."""
        routed_topic = self.settings.topic(topics.ROUTED)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20.0
        while not (ids <= self.routed.keys() and offsets <= self.dead.keys()):
            assert loop.time() < deadline, (
                f"missing routed {ids - self.routed.keys()}, dead {offsets - self.dead.keys()}"
            )
            batch = await self.reader.getmany(timeout_ms=100)
            for tp, recs in batch.items():
                for rec in recs:
                    doc = orjson.loads(rec.value)
                    if tp.topic == routed_topic:
                        self.routed[doc["message_id"]] = doc
                    else:
                        self.dead[doc["source"]["offset"]] = doc


@pytest.fixture
async def rig(topics_ready: Settings, aredis: Redis) -> AsyncIterator[Rig]:
    settings = topics_ready.model_copy(update={"config_dir": MINI})
    registry = CollectorRegistry()
    router = _router(settings, aredis, registry)
    reader = AIOKafkaConsumer(
        settings.topic(topics.ROUTED), settings.topic(topics.DEAD_LETTER),
        bootstrap_servers=settings.kafka_bootstrap, auto_offset_reset="earliest",
        group_id=None, fetch_max_wait_ms=50,
    )
    await reader.start()
    try:
        async with router:
            yield Rig(settings, router, registry, reader, itertools.count(), {}, {})
    finally:
        await reader.stop()


PROPERTY = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                           HealthCheck.data_too_large],
)


@PROPERTY
@given(batch=st.lists(cases, min_size=1, max_size=8))
@example(batch=[_case(_set("attachments", True), False)])
@example(batch=[_case({**_valid(), "id": ID_SLOT}, True), DEEP_CHANNEL,
                _case({**_valid(), "id": ID_SLOT}, True)])
async def test_arbitrary_records_route_when_valid_and_dead_letter_otherwise(
    rig: Rig, batch: list[Case]
) -> None:
    inbound = rig.settings.topic(topics.INBOUND)
    records = [
        ConsumerRecord(inbound, 0, next(rig.offsets), 0, 0, b"k", case.value, None, 1,
                       len(case.value or b""), [])
        for case in batch
    ]
    prepared = await rig.router.prepare(records)
    result = await rig.router.finish(prepared)

    good_ids = {orjson.loads(c.value)["id"] for c in batch if c.good and c.value is not None}
    bad_offsets = {r.offset for r, c in zip(records, batch, strict=True) if not c.good}
    assert {d.message_id for d in prepared.decisions} == good_ids
    assert {r.offset for r, _reason in prepared.dead} == bad_offsets
    for _rec, reason in prepared.dead:  # the decoder names the problem: nothing unexpected
        assert reason.startswith("invalid_envelope: "), reason
    # (hypothesis replaying an explicit example meets its decisions again: duplicates)
    assert result.routed + result.duplicates == len(good_ids)
    assert result.dead_letters == len(bad_offsets)
    # what prepare decided is what reached the topics
    await rig.read_until(good_ids, bad_offsets)
    for rec, case in zip(records, batch, strict=True):
        if not case.good:
            letter = rig.dead[rec.offset]
            assert letter["reason"].startswith("invalid_envelope: ")
            assert base64.b64decode(letter["value_b64"]) == (case.value or b"")
    assert (rig.registry.get_sample_value(
        "omni_dead_letters_total", {"reason": "invalid_envelope"}) or 0) == len(rig.dead)
