"""Priority, rules, overflow and sticky routing on a small fixed configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from omniroute.router.models import (
    Band,
    Channel,
    Customer,
    Decision,
    Entry,
    EntryKind,
    Envelope,
    Order,
    message_id,
)
from omniroute.router.pipeline import Pipeline, RedisFacts
from omniroute.skills.config import load_config

MINI = Path(__file__).parent / "data" / "mini"


@pytest.fixture(scope="module")
def pipeline() -> Pipeline:
    return Pipeline(load_config(MINI))


def env(
    text: str,
    *,
    channel: Channel = Channel.APP,
    tier: str | None = None,
    amount: float | None = None,
    hints: tuple[str, ...] = (),
    entry: Entry | None = None,
) -> Envelope:
    return Envelope(
        id=message_id(channel, "t", text), channel=channel, account="t", channel_msg_id=text,
        conversation_id="conv", customer=Customer("c1", tier=tier), text=text,
        received_at_ms=1, order=Order("o", amount) if amount is not None else None,
        hints=hints, entry=entry,
    )


@pytest.mark.parametrize(
    ("message", "facts", "group", "band", "reason"),
    [
        (env("尺码怎么选"), RedisFacts(), "general", Band.P4, "below every band"),
        (env("外卖还没到"), RedisFacts(), "logistics", Band.P3,
         "urgency 2 x importance 2 -> +20"),
        (env("外卖还没到，气死了，赶紧"), RedisFacts(), "logistics", Band.P3,
         "emotion urgent (赶紧) -> +8"),
        (env("饭菜变质了"), RedisFacts(), "food_safety", Band.P2,
         "urgency 3 x importance 3 -> +45"),
        (env("有人威胁，我被打了"), RedisFacts(), "emergency", Band.P0,
         "personal-safety emergency (safety.personal) -> P0"),
        (env("被打了", tier="vip"), RedisFacts(), "emergency", Band.P0, "-> P0"),
        (env("再不处理我就打12315"), RedisFacts(), "legal_pr", Band.P2,
         "compliance risk (legal.regulator) -> +25"),
        (env("退款没到账"), RedisFacts(redis_tier="vip"), "vip", Band.P2,
         "customer tier vip -> +20"),
        (env("退款没到账", tier="vip"), RedisFacts(redis_tier="normal"), "payment", Band.P3,
         "urgency 2 x importance 3"),
        (env("外卖还没到", amount=150), RedisFacts(), "logistics", Band.P3,
         "order amount 150 >= 100 yuan -> +10"),
        (env("退款没到账"), RedisFacts(prior_contacts=2), "payment", Band.P2,
         "repeat contact: contact #3"),
        (env("退款没到账"), RedisFacts(prior_contacts=1), "payment", Band.P3, "score 30"),
        (env("这个多少钱", channel=Channel.LIVESTREAM,
             entry=Entry(EntryKind.LIVE_ROOM, "r1")), RedisFacts(), "livestream", Band.P4,
         "synchronous channel livestream -> +10"),
        (env("未接来电", channel=Channel.PHONE, hints=("callback",)), RedisFacts(),
         "callback", Band.P3, "channel hint callback -> +10"),
        (env("骑手态度差"), RedisFacts(), "complaints_qa", Band.P4, "urgency 1 x importance 2"),
        (env("买了个大件", amount=5000), RedisFacts(), "general", Band.P4,
         "group closed full (no capacity)"),
    ],
)
def test_decisions_table(
    pipeline: Pipeline, message: Envelope, facts: RedisFacts, group: str, band: Band,
    reason: str,
) -> None:
    d = pipeline.decide(message, 10, facts, {})
    assert (d.skill_group, d.priority.band) == (group, band), d
    assert any(reason in r for r in (*d.priority.reasons, *d.explain)), (
        d.priority.reasons, d.explain
    )


def test_overflow_walks_fallbacks_then_overflow_targets(pipeline: Pipeline) -> None:
    msg = env("外卖还没到")
    assert pipeline.decide(msg, 1, RedisFacts(), {"logistics": 2}).skill_group == "logistics"
    full = pipeline.decide(msg, 1, RedisFacts(), {"logistics": 3})
    assert (full.skill_group, full.overflow_from) == ("general", "logistics")
    assert "group logistics full (queue 3 >= 3)" in full.explain
    both = pipeline.decide(msg, 1, RedisFacts(), {"logistics": 3, "general": 100})
    assert (both.skill_group, both.overflow_from) == ("senior", "logistics")


def test_sticky_conversation_returns_to_its_group_and_agent(pipeline: Pipeline) -> None:
    d = pipeline.decide(env("你好"), 1, RedisFacts(sticky_group="payment", sticky_agent="a7"))
    assert (d.skill_group, d.agent_id, d.rule_id) == ("payment", "a7", "default")
    assert "sticky: conversation was served by payment" in d.explain
    emergency = pipeline.decide(env("我被打了"), 1, RedisFacts(sticky_group="payment"))
    assert emergency.skill_group == "emergency", "safety is never held back by stickiness"


def test_a_live_room_question_names_its_room(pipeline: Pipeline) -> None:
    """The SLA forecast counts questions per live room from the decision."""
    live = env("多少钱", channel=Channel.LIVESTREAM, entry=Entry(EntryKind.LIVE_ROOM, "r9"))
    assert pipeline.decide(live, 1).room == "r9"
    assert Decision.from_json(pipeline.decide(live, 1).to_json()).room == "r9"
    order = env("多少钱", entry=Entry(EntryKind.ORDER, "o1"))
    assert pipeline.decide(order, 1).room is None
    assert pipeline.decide(env("多少钱"), 1).room is None


def test_every_decision_explains_itself(pipeline: Pipeline) -> None:
    d = pipeline.decide(env("外卖还没到，气死了"), 5, RedisFacts())
    assert d.config_version.startswith("mini-1+")
    assert d.rule_id == "logistics"
    assert d.tags[0].id == "logistics.delay"
    assert d.tags[0].keywords == ("还没到",)
    assert d.explain[0] == "rule logistics -> logistics"
    assert d.priority.reasons[-1].startswith("score 30")


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    text=st.text(min_size=1, max_size=200),
    channel=st.sampled_from(list(Channel)),
    tier=st.none() | st.sampled_from(["vip", "gold", "normal", "svip", "unknown"]),
    amount=st.none() | st.floats(min_value=0, max_value=1e9),
    prior=st.integers(min_value=0, max_value=50),
    depth=st.integers(min_value=0, max_value=10_000),
)
def test_every_message_gets_exactly_one_decision(
    pipeline: Pipeline, text: str, channel: Channel, tier: str | None, amount: float | None,
    prior: int, depth: int,
) -> None:
    groups = pipeline.config.groups.groups
    d = pipeline.decide(
        env(text, channel=channel, tier=tier, amount=amount), 1,
        RedisFacts(prior_contacts=prior), dict.fromkeys(groups, depth),
    )
    assert d.skill_group in groups
    assert d.priority.band in Band
    assert d.priority.reasons
