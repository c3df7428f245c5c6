"""Topic records (router.events): the wire format each producer writes, decoding through
the models, errors that name the field, and the published schemas describing what is
actually produced."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiokafka import AIOKafkaProducer, ConsumerRecord
from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis
from typer.testing import CliRunner

from omniroute.adapters.douyin.parse import LiveItem, comment_envelope, signal_record
from omniroute.cli import app
from omniroute.router import topics
from omniroute.router.dead_letter import PREVIEW_CHARS, dead_letter_record
from omniroute.router.events import (
    AgentEvent,
    ChatterRecord,
    DeadLetterRecord,
    EscalationActions,
    SignalRecord,
    SlaAlert,
    SurgeSignal,
)
from omniroute.router.exceptions import InvalidEnvelope, InvalidRecord
from omniroute.router.keys import Keys
from omniroute.router.models import Band, Channel, Decision, Priority, TagHit
from omniroute.router.schema import RECORDS
from omniroute.router.settings import Settings, default_config_dir
from omniroute.sla.config import SlaConfig, SurgeConfig, load_sla_config
from omniroute.sla.console_data import ConsoleFeed
from omniroute.sla.surge import ScopeState, Staffing, SurgeDetector
from omniroute.sla.worker import SlaWorker
from tests.test_sla_support import T0_MS, FakeClock, consume_json, decision, poll

DOCS = Path(__file__).parent.parent / "docs" / "schema"
runner = CliRunner()


# --- a validator for the subset of JSON Schema the published schemas use ---------------
def conforms(value: Any, schema: dict[str, Any], root: dict[str, Any], path: str = "$") -> None:
    """Raise AssertionError where ``value`` breaks ``schema``.

    Stricter than JSON Schema on one point: an object may only carry the properties
    its schema lists (unless it declares ``additionalProperties``), so a field a
    producer writes but the schema does not describe is a failure.
    """
    if "$ref" in schema:
        name = schema["$ref"].removeprefix("#/$defs/")
        conforms(value, root["$defs"][name], root, path)
        return
    if "anyOf" in schema:
        errors = []
        for branch in schema["anyOf"]:
            try:
                conforms(value, branch, root, path)
                return
            except AssertionError as exc:
                errors.append(str(exc))
        raise AssertionError(f"{path}: {value!r} matches no branch: {errors}")
    if "enum" in schema:
        assert value in schema["enum"], f"{path}: {value!r} not in {schema['enum']}"
    kind = schema.get("type")
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, int | float) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
        "null": lambda v: v is None,
        "array": lambda v: isinstance(v, list),
        "object": lambda v: isinstance(v, dict),
    }
    if kind is not None:
        assert checks[kind](value), f"{path}: {value!r} is not of type {kind}"
    if kind == "object":
        props = schema.get("properties", {})
        for name in schema.get("required", ()):
            assert name in value, f"{path}: required {name!r} missing"
        extra = schema.get("additionalProperties")
        for name, item in value.items():
            if name in props:
                conforms(item, props[name], root, f"{path}.{name}")
            elif isinstance(extra, dict):
                conforms(item, extra, root, f"{path}.{name}")
            else:
                assert extra is True, f"{path}: {name!r} is not described by the schema"
    if kind == "array":
        prefix = schema.get("prefixItems")
        if prefix is not None:
            assert len(value) == len(prefix), f"{path}: expected {len(prefix)} items"
            for i, (item, sub) in enumerate(zip(value, prefix, strict=True)):
                conforms(item, sub, root, f"{path}[{i}]")
        elif "items" in schema:
            for i, item in enumerate(value):
                conforms(item, schema["items"], root, f"{path}[{i}]")


def published(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((DOCS / f"{name}.schema.json").read_text())
    return schema


def assert_published_schema_accepts(name: str, raw: bytes) -> None:
    schema = published(name)
    conforms(orjson.loads(raw), schema, schema)


def test_the_schema_check_itself_refuses_what_it_should() -> None:
    schema = published("signal")
    good = orjson.loads(signal_record("live_like", "r1", [like("l1", 3)], T0_MS).to_json())
    conforms(good, schema, schema)
    for bad in ({**good, "count": "3"}, {**good, "kind": "live_comment"},
                {**good, "surprise": 1}, {k: v for k, v in good.items() if k != "room"}):
        with pytest.raises(AssertionError):
            conforms(bad, schema, schema)


# --- samples --------------------------------------------------------------------------
def like(msg_id: str, n: int, viewer: str = "v1", ts: int | None = 1_700_000_000) -> LiveItem:
    return LiveItem.model_validate({"msg_id": msg_id, "sec_openid": viewer, "like_num": n,
                                    "timestamp": ts})


def gift(msg_id: str, n: int, value: float | None, viewer: str = "v1") -> LiveItem:
    return LiveItem.model_validate({"msg_id": msg_id, "sec_openid": viewer, "gift_num": n,
                                    "gift_value": value, "timestamp": 1_700_000_000_123})


def full_decision() -> Decision:
    return Decision(
        message_id="wechat-0a1b", conversation_id="wechat:oa1:u1", channel=Channel.WECHAT,
        customer_id="u1",
        tags=(TagHit("logistics.delay", ("还没到",), 0.91, (("没到", 1.5), ("快递", 0.25))),
              TagHit("payment.refund", ("退款",))),
        priority=Priority(63.5, Band.P1, ("vip", "amount >= 100")), skill_group="logistics",
        queue="logistics", rule_id="logistics-default", config_version="v1",
        received_at_ms=T0_MS, decided_at_ms=T0_MS + 4, overflow_from="general",
        agent_id="a7", explain=("rule logistics-default",),
    )


WARNING = SlaAlert(
    type="sla.warning", alert_id="c-1:first_response:warning:1", conversation_id="c-1",
    group="livestream", policy="livestream-question", timer="first_response",
    stage="warning", channel="livestream", band="P2", message_id="m-1", customer_id="cust-1",
    agent_id=None, target_s=30.0, warning_s=24.0, due_at_ms=T0_MS + 30_000,
    fired_at_ms=T0_MS + 24_000, overdue_s=-6.0, fire_lag_s=0.0,
)
ESCALATION = dataclasses.replace(
    WARNING, type="sla.escalation", stage="esc1", group="supervisor", level=1,
    notify=("duty-manager",), from_group="livestream",
    actions=EscalationActions(raise_bands=2, move_to="supervisor", queued_messages_touched=1),
)
def poison(key: bytes | None, value: bytes | None, offset: int = 7) -> ConsumerRecord[bytes, bytes]:
    """A consumed record some worker could not process."""
    return ConsumerRecord("omni.inbound", 2, offset, 0, 0, key, value, None, 1, 1, [])


EVENT = AgentEvent("transfer", "c-1", "system:relax", T0_MS, group="general",
                   to_group="vip", message_id="m-1", reason="waited 301 s")


def surge_signals() -> list[dict[str, Any]]:
    """Every kind of signal the detector emits, as the SLA worker completes them."""
    cfg = SurgeConfig(window_s=60, start_ratio=2.0, start_windows=2, clear_ratio=1.3,
                      clear_windows=1, min_rate_per_min=10, min_baseline_per_min=1,
                      ewma_alpha=0.5, aht_s=180, answer_target_s=20, service_level=0.8,
                      staffing_reserve=1.2, incident_tag_share=0.5, incident_ratio=3.0)
    detector = SurgeDetector(cfg)
    states: dict[str, ScopeState] = {}
    out: list[dict[str, Any]] = []
    windows = [{"all": 20, "group:g": 20, "tag:payment": 2, "heat:room:r1": 20}] * 2 + [
        {"all": 90, "group:g": 90, "tag:payment": 70, "heat:room:r1": 90}] * 2 + [
        {"all": 20, "group:g": 20, "tag:payment": 2, "heat:room:r1": 20}] * 2
    for i, counts in enumerate(windows):
        states, signals = detector.evaluate(counts, states, {"group:g": Staffing(2, 6)})
        for s in signals:
            s.update(window_s=cfg.window_s, window_end_ms=T0_MS + (i + 1) * 60_000,
                     at_ms=T0_MS + (i + 1) * 60_000 + 500)
        out += signals
    return out


# --- wire format: what each producer writes -------------------------------------------
def test_signal_records_keep_their_wire_format() -> None:
    gifts = signal_record("live_gift", "7300001",
                          [gift("g1", 2, 10), gift("g2", 1, None, viewer="v2")], T0_MS)
    assert orjson.loads(gifts.to_json()) == {
        "schema": 1, "channel": "livestream", "room": "7300001", "kind": "live_gift",
        "events": 2, "count": 3, "viewers": 2, "first_ms": 1_700_000_000_123,
        "last_ms": 1_700_000_000_123, "received_at_ms": T0_MS, "gift_value": 10.0,
    }
    likes = signal_record("live_like", "7300001", [like("l1", 15), like("l2", 0, ts=None)], T0_MS)
    assert orjson.loads(likes.to_json()) == {
        "schema": 1, "channel": "livestream", "room": "7300001", "kind": "live_like",
        "events": 2, "count": 16, "viewers": 1, "first_ms": 1_700_000_000_000,
        "last_ms": 1_700_000_000_000, "received_at_ms": T0_MS,
    }  # no gift_value key on likes; a like_num of 0 counts as one event
    assert (likes.gifts, likes.likes, gifts.gifts, gifts.likes) == (0, 16, 3, 0)
    with pytest.raises(KeyError):
        signal_record("live_comment", "7300001", [like("l1", 1)], T0_MS)


def test_chatter_record_is_the_envelope_with_its_rule_in_meta() -> None:
    item = LiveItem.model_validate({"msg_id": "c1", "sec_openid": "v1", "content": "666"})
    env = comment_envelope(item, "7300001", T0_MS)
    record = ChatterRecord(env, "cheer")
    before = dataclasses.replace(env, meta={**env.meta, "chatter_rule": "cheer"}).to_json()
    assert record.to_json() == before  # byte for byte what the adapter produced before
    assert ChatterRecord.from_json(record.to_json()) == record
    assert "chatter_rule" not in ChatterRecord.from_json(record.to_json()).envelope.meta
    with pytest.raises(InvalidRecord, match=r"'meta.chatter_rule' must be one of"):
        ChatterRecord.from_json(env.to_json())  # a plain envelope is not chatter
    with pytest.raises(InvalidEnvelope, match="field 'text'"):
        ChatterRecord.from_dict({**orjson.loads(record.to_json()), "text": ""})


def test_sla_alerts_carry_escalation_fields_only_when_escalating() -> None:
    assert set(orjson.loads(WARNING.to_json())) == {
        "type", "alert_id", "conversation_id", "group", "policy", "timer", "stage",
        "channel", "band", "message_id", "customer_id", "agent_id", "target_s", "warning_s",
        "due_at_ms", "fired_at_ms", "overdue_s", "fire_lag_s",
    }
    assert orjson.loads(WARNING.to_json())["agent_id"] is None  # present, null
    escalation = orjson.loads(ESCALATION.to_json())
    assert escalation["notify"] == ["duty-manager"]
    assert escalation["actions"] == {"raise_bands": 2, "move_to": "supervisor",
                                     "queued_messages_touched": 1}
    assert ESCALATION.to_dict() == escalation


def test_agent_event_json_carries_its_event_id() -> None:
    data = orjson.loads(EVENT.to_json())
    assert data["event_id"] == f"c-1:transfer:system:relax:{T0_MS}"
    assert AgentEvent.from_json(EVENT.to_json()) == EVENT


def test_the_detectors_signals_pass_through_the_model_unchanged() -> None:
    signals = surge_signals()
    kinds = {(s["type"], s["scope"].split(":")[0]) for s in signals}
    assert {("surge.start", "group"), ("surge.start", "heat"), ("surge.clear", "group"),
            ("incident", "tag"), ("incident.clear", "tag")} <= kinds
    assert any("extra_agents" in s for s in signals)
    assert any("agents_needed" in s for s in signals)
    for s in signals:
        model = SurgeSignal(**s)  # what the worker produces
        assert model.to_dict() == s
        assert orjson.loads(model.to_json()) == s
        assert SurgeSignal.from_json(model.to_json()) == model


def test_dead_letters_keep_their_wire_format() -> None:
    value = "退款".encode() * 400 + b"\xff"
    raw = dead_letter_record(poison(b"c-1", value), "invalid_envelope: bad", T0_MS, "router")
    assert orjson.loads(raw) == {
        "reason": "invalid_envelope: bad", "stage": "router",
        "source": {"topic": "omni.inbound", "partition": 2, "offset": 7},
        "key_b64": base64.b64encode(b"c-1").decode(),
        "value_b64": base64.b64encode(value).decode(),
        "value_preview": "退款" * (PREVIEW_CHARS // 2), "failed_at_ms": T0_MS,
    }
    assert list(orjson.loads(raw)) == ["reason", "stage", "source", "key_b64", "value_b64",
                                       "value_preview", "failed_at_ms"]
    keyless = orjson.loads(dead_letter_record(poison(None, None), "sla: x", T0_MS, "sla"))
    assert (keyless["key_b64"], keyless["value_b64"], keyless["value_preview"]) == (None, "", "")
    letter = DeadLetterRecord.from_json(raw)
    assert (letter.source.offset, base64.b64decode(letter.value_b64)) == (7, value)


# --- round trips and the published schemas --------------------------------------------
def produced() -> list[tuple[str, bytes]]:
    item = LiveItem.model_validate({"msg_id": "c1", "sec_openid": "v1", "content": "hi"})
    return [
        ("decision", full_decision().to_json()),
        ("decision", decision(1).to_json()),
        ("sla-alert", WARNING.to_json()),
        ("sla-alert", ESCALATION.to_json()),
        ("agent-event", EVENT.to_json()),
        ("agent-event", AgentEvent("reply", "c-2", "a1", T0_MS).to_json()),
        ("chatter", ChatterRecord(comment_envelope(item, "r1", T0_MS), "too_short").to_json()),
        ("signal", signal_record("live_gift", "r1", [gift("g1", 1, 5.5)], T0_MS).to_json()),
        ("signal", signal_record("live_fansclub", "r1", [like("f1", 0, ts=None)],
                                 T0_MS).to_json()),
        *(("surge-signal", SurgeSignal(**s).to_json()) for s in surge_signals()),
        ("dead-letter", dead_letter_record(poison(b"k", b"{oops"), "invalid_envelope: x",
                                           T0_MS, "router")),
        ("dead-letter", dead_letter_record(poison(None, b"\xff"), "sla: not JSON", T0_MS,
                                           "sla")),
    ]


@pytest.mark.parametrize(("name", "raw"), produced())
def test_what_producers_write_decodes_and_matches_the_published_schema(
    name: str, raw: bytes
) -> None:
    assert_published_schema_accepts(name, raw)
    model, _ = RECORDS[name]
    decoded = model.from_json(raw)  # type: ignore[attr-defined]  # every record has one
    assert decoded.to_json() == raw


def test_every_record_has_a_schema_on_the_command_line() -> None:
    for name in RECORDS:
        result = runner.invoke(app, ["schema", name])
        assert result.exit_code == 0, result.output
        assert orjson.loads(result.stdout) == published(name)
    bad = runner.invoke(app, ["schema", "alerts"])
    assert bad.exit_code == 2
    assert "sla-alert" in bad.stderr


# --- decoding errors name the field ---------------------------------------------------
@pytest.mark.parametrize(
    ("model", "sample", "mutate", "needle"),
    [
        (Decision, lambda: full_decision().to_json(), lambda d: d.pop("channel"),
         "decision field 'channel' must be one of"),
        (Decision, lambda: full_decision().to_json(),
         lambda d: d["priority"].update(band="P9"), "decision field 'priority.band'"),
        (Decision, lambda: full_decision().to_json(),
         lambda d: d["priority"].update(score="high"), "decision field 'priority.score'"),
        (Decision, lambda: full_decision().to_json(),
         lambda d: d["tags"][1].update(keywords="退款"), r"decision field 'tags\[1\].keywords'"),
        (Decision, lambda: full_decision().to_json(),
         lambda d: d["tags"][0].update(evidence=[["没到"]]), r"'tags\[0\].evidence'"),
        (Decision, lambda: full_decision().to_json(),
         lambda d: d.update(received_at_ms=True), "decision field 'received_at_ms'"),
        (Decision, lambda: full_decision().to_json(), lambda d: d.update(skill_group=""),
         "decision field 'skill_group' must be a non-empty string"),
        (Decision, lambda: full_decision().to_json(), lambda d: d.update(explain=[1]),
         "decision field 'explain'"),
        (Decision, lambda: full_decision().to_json(), lambda d: d.update(schema=2),
         "unsupported decision schema 2"),
        (AgentEvent, EVENT.to_json, lambda d: d.update(type="nap"), "'type' must be one of"),
        (AgentEvent, EVENT.to_json, lambda d: d.update(at_ms="now"), "'at_ms'"),
        (AgentEvent, EVENT.to_json, lambda d: d.update(reason=5), "'reason'"),
        (SlaAlert, WARNING.to_json, lambda d: d.update(type="sla.panic"), "'type'"),
        (SlaAlert, ESCALATION.to_json, lambda d: d["actions"].update(raise_bands=-1),
         "'actions.raise_bands'"),
        (SlaAlert, WARNING.to_json, lambda d: d.pop("due_at_ms"), "'due_at_ms'"),
        (SurgeSignal, lambda: SurgeSignal(**surge_signals()[0]).to_json(),
         lambda d: d.update(rate_per_min=None), "'rate_per_min' must be a number"),
        (SignalRecord, lambda: signal_record("live_like", "r", [like("l", 1)], T0_MS).to_json(),
         lambda d: d.pop("room"), "signal record field 'room'"),
        (SignalRecord, lambda: signal_record("live_like", "r", [like("l", 1)], T0_MS).to_json(),
         lambda d: d.update(kind="like"), "signal record field 'kind' must be one of"),
        (DeadLetterRecord, lambda: dead_letter_record(poison(b"k", b"v"), "r", 1, "sla"),
         lambda d: d.update(stage="adapter"), "dead letter field 'stage' must be one of"),
        (DeadLetterRecord, lambda: dead_letter_record(poison(b"k", b"v"), "r", 1, "sla"),
         lambda d: d["source"].update(offset=-1), "dead letter field 'source.offset'"),
        (DeadLetterRecord, lambda: dead_letter_record(poison(b"k", b"v"), "r", 1, "sla"),
         lambda d: d.update(source="omni.inbound"), "dead letter field 'source'"),
        (DeadLetterRecord, lambda: dead_letter_record(poison(b"k", b"v"), "r", 1, "sla"),
         lambda d: d.pop("value_b64"), "dead letter field 'value_b64'"),
    ],
)
def test_invalid_records_name_the_field(model: Any, sample: Any, mutate: Any,
                                        needle: str) -> None:
    data = orjson.loads(sample())
    assert model.from_dict(orjson.loads(sample())) is not None  # the sample itself is valid
    mutate(data)
    with pytest.raises(InvalidRecord, match=needle):
        model.from_json(orjson.dumps(data))


@pytest.mark.parametrize("model", [Decision, AgentEvent, SlaAlert, SurgeSignal, SignalRecord,
                                   ChatterRecord, DeadLetterRecord])
def test_non_json_and_non_objects_are_invalid_records(model: Any) -> None:
    with pytest.raises(InvalidRecord, match="not JSON"):
        model.from_json(b"not json")
    with pytest.raises(InvalidRecord, match="JSON object"):
        model.from_json(b"[1, 2]")
    assert issubclass(InvalidRecord, ValueError)  # the SLA worker dead-letters ValueErrors


JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3),
    max_leaves=10,
)
DECISION_KEYS = sorted(orjson.loads(full_decision().to_json()))


@given(st.sampled_from([*DECISION_KEYS, "priority.score", "priority.band", "priority.reasons",
                        "tags.0", "tags.0.id", "tags.0.score", "tags.0.evidence",
                        "tags.1.keywords"]),
       JSON)
def test_a_decision_with_any_field_replaced_decodes_exactly_or_is_refused(
    path: str, value: object
) -> None:
    data = orjson.loads(full_decision().to_json())
    *parents, last = path.split(".")
    target: Any = data
    for p in parents:
        target = target[int(p)] if p.isdigit() else target[p]
    target[int(last) if last.isdigit() else last] = value
    try:
        decoded = Decision.from_dict(data)
    except InvalidRecord:
        return
    # accepted: then it is a well-typed decision that survives its own round trip
    assert Decision.from_json(decoded.to_json()) == decoded
    assert isinstance(decoded.priority.score, float)
    assert all(isinstance(t.id, str) and t.id for t in decoded.tags)


@given(JSON)
def test_decoding_arbitrary_json_raises_nothing_but_invalid_record(data: object) -> None:
    for model in (Decision, AgentEvent, SlaAlert, SurgeSignal, SignalRecord, ChatterRecord,
                  DeadLetterRecord):
        with contextlib.suppress(InvalidRecord):
            model.from_dict(data)


# --- the console decodes inbound records through the envelope model -----------------
def test_the_console_counts_live_inbound_records_only_when_they_are_envelopes() -> None:
    feed = ConsoleFeed(Settings(), Settings().console, lambda: T0_MS)
    item = LiveItem.model_validate({"msg_id": "q1", "sec_openid": "v1", "content": "几时发货"})
    question = orjson.loads(comment_envelope(item, "7300001", T0_MS).to_json())
    feed.apply(topics.INBOUND, orjson.dumps(question))
    assert [(e.room, e.questions, e.at_ms) for e in feed.rooms] == [("7300001", 1, T0_MS)]
    for bad in ({**question, "text": ""}, {**question, "received_at_ms": "now"},
                {**question, "customer": None}):
        feed.apply(topics.INBOUND, orjson.dumps(bad))
    assert (len(feed.rooms), feed.invalid, feed.records) == (1, 3, 4)


# --- the SLA worker consumes and produces through the models --------------------------
HEAT_CONFIG = SlaConfig.model_validate({
    "policies": [{"id": "any", "first_response": 600}],
    "surge": {"window_s": 60, "heat_per_gift": 2.0, "heat_per_like": 0.5,
              "heat_per_viewer": 1.0},
})


@pytest.mark.integration
async def test_sla_worker_heats_a_room_from_signals_and_dead_letters_bad_records(
    topics_ready: Settings, aredis: Redis
) -> None:
    settings = topics_ready
    clock = FakeClock()
    worker = SlaWorker(settings, CollectorRegistry(), clock, config=HEAT_CONFIG, redis=aredis,
                       tick_s=3600)
    good = [
        signal_record("live_gift", "r1", [gift("g1", 3, 30), gift("g2", 1, 10)], clock.ms()),
        signal_record("live_like", "r1", [like("l1", 40)], clock.ms()),
        signal_record("live_fansclub", "r1", [like("f1", 0)], clock.ms()),  # no heat
    ]
    bad_signal = {**orjson.loads(good[1].to_json()), "count": "many"}
    bad_decision = {**orjson.loads(decision(9).to_json()), "queue": None}
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        async with worker:
            for s in good:
                await producer.send(settings.topic(topics.SIGNALS), s.to_json(),
                                    key=s.room.encode())
            await producer.send(settings.topic(topics.SIGNALS), orjson.dumps(bad_signal),
                                key=b"r1")
            await producer.send(settings.topic(topics.ROUTED), orjson.dumps(bad_decision),
                                key=b"c-9")
            await producer.flush()
            await poll(lambda: _processed(worker, 5), timeout_s=20)
    finally:
        await producer.stop()
    window = Keys(settings.redis_prefix).surge_window(clock.ms() // 60_000)
    # gifts 3 + 1, likes 40, distinct viewers g1, g2, l1; a fans-club push heats nothing
    assert float(await aredis.hget(window, "heat:room:r1") or 0) == 4 * 2.0 + 40 * 0.5 + 3 * 1.0
    dead = await consume_json(settings.kafka_bootstrap, settings.topic(topics.DEAD_LETTER),
                              lambda r: len(r) >= 2)
    reasons = sorted(str(d["reason"]) for d in dead)
    assert "decision field 'queue' must be a non-empty string" in reasons[0]
    assert "signal record field 'count' must be a non-negative integer" in reasons[1]


async def _processed(worker: SlaWorker, n: int) -> bool:
    return worker.processed >= n


@pytest.mark.integration
async def test_alerts_on_the_topic_decode_and_match_the_published_schema(
    topics_ready: Settings, aredis: Redis
) -> None:
    settings = topics_ready
    clock = FakeClock()
    config = load_sla_config(default_config_dir() / "sla.yaml")
    worker = SlaWorker(settings, CollectorRegistry(), clock, config=config, redis=aredis,
                       tick_s=3600)
    live = decision(1, channel=Channel.LIVESTREAM, group="livestream", band=Band.P2)
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap, acks="all")
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic(topics.ROUTED), live.to_json(), key=b"c-1")
    finally:
        await producer.stop()
    async with worker:
        await poll(lambda: _processed(worker, 1), timeout_s=20)
        clock.advance(24)
        await worker.fire_due()
        clock.advance(7)
        returned = await worker.fire_due()
    on_topic = await consume_json(settings.kafka_bootstrap, settings.topic(topics.SLA_ALERTS),
                                  lambda r: len(r) >= 3)
    assert [a["type"] for a in on_topic] == ["sla.warning", "sla.breach", "sla.escalation"]
    assert on_topic[1:] == returned  # fire_due returns exactly what it produced
    for alert in on_topic:
        raw = orjson.dumps(alert)
        assert_published_schema_accepts("sla-alert", raw)
        assert SlaAlert.from_json(raw).to_dict() == alert

