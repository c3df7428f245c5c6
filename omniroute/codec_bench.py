"""``omniroute bench-codec``: the per-message CPU of the router's pure steps, one core.

Backs the per-message figures of the README's *Benchmarks*: decode and validate an
envelope, decide (tag, prioritise, route) and encode the decision, with the shipped
configuration and with the same configuration without its learned model; and the
codec candidates measured against each other on the same envelopes and decisions:

* decode: the router's path (orjson, then the inlined field checks of
  ``Envelope.from_json``) against a msgspec ``Struct`` decode with the same
  constraints (which builds no ``Envelope`` and names no field in our words);
* encode a decision: msgspec (what ``Decision.to_json`` uses) against
  ``orjson.dumps`` of the dataclass.

Every figure is the best of several rounds in this process (other processes on a
shared machine only ever make a round slower); nothing here runs at import.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
import orjson
from prometheus_client import CollectorRegistry

from .corpus import bundled_texts, demo_envelope
from .router.metrics import RouterMetrics
from .router.models import MAX_AMOUNT, MAX_TEXT_CHARS, Channel, EntryKind, Envelope
from .router.reload import PipelineHolder
from .skills.model import MODEL_FILE

__all__ = ["run_codec_bench"]

_NonEmpty = Annotated[str, msgspec.Meta(min_length=1)]
_Millis = Annotated[int, msgspec.Meta(ge=0, le=10**15)]


class _Customer(msgspec.Struct, frozen=True):
    id: _NonEmpty
    handle: str | None = None
    tier: str | None = None


class _Entry(msgspec.Struct, frozen=True):
    kind: EntryKind
    id: _NonEmpty


class _Order(msgspec.Struct, frozen=True):
    id: _NonEmpty
    amount: Annotated[float, msgspec.Meta(ge=0, lt=MAX_AMOUNT)] | None = None


class _Attachment(msgspec.Struct, frozen=True):
    kind: _NonEmpty
    ref: _NonEmpty
    name: str | None = None
    size_bytes: Annotated[int, msgspec.Meta(ge=0)] | None = None


class _EnvelopeStruct(msgspec.Struct, frozen=True):
    """The envelope's shape as a msgspec Struct (the candidate decoder)."""

    id: _NonEmpty
    channel: Channel
    account: _NonEmpty
    channel_msg_id: _NonEmpty
    conversation_id: _NonEmpty
    customer: _Customer
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_TEXT_CHARS)]
    received_at_ms: _Millis
    sent_at_ms: _Millis | None = None
    attachments: tuple[_Attachment, ...] | None = ()
    entry: _Entry | None = None
    order: _Order | None = None
    hints: tuple[str, ...] | None = ()
    meta: dict[str, str | int] | None = None
    raw_ref: str | None = None
    schema: Literal[1] = 1


def _us_per_item(fn: Callable[[], object], items: int, rounds: int = 7) -> float:
    """Microseconds per item of ``fn`` (one pass over ``items`` items), best round."""
    fn()  # warm up
    best = float("inf")
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best / items * 1e6


def run_codec_bench(config_dir: Path, messages: int = 2000) -> dict[str, float]:
    """Per-message microseconds of decode, decide and encode (see the module docs).

    Args:
        config_dir: The routing configuration (its ``tag_model.json``, if any, is the
            learned model; the keywords-only figures use a copy without it).
        messages: Envelopes built from the bundled messages.
    """
    texts: Sequence[str] = bundled_texts()
    now = int(time.time() * 1000)
    raws = [demo_envelope(i, texts[i % len(texts)], now).to_json() for i in range(messages)]
    envelopes = [Envelope.from_json(r) for r in raws]
    decoder = msgspec.json.Decoder(_EnvelopeStruct)
    encoder = msgspec.json.Encoder()

    def pipeline_of(directory: Path) -> Any:
        return PipelineHolder(directory, RouterMetrics(CollectorRegistry()))()

    shipped = pipeline_of(config_dir)
    with tempfile.TemporaryDirectory() as tmp:
        plain_dir = Path(tmp) / "config"
        shutil.copytree(config_dir, plain_dir)
        (plain_dir / MODEL_FILE).unlink(missing_ok=True)
        plain = pipeline_of(plain_dir)
    decisions = [shipped.decide(e, now) for e in envelopes]

    def whole(pipeline: Any) -> Callable[[], object]:
        return lambda: [pipeline.decide(Envelope.from_json(r), now).to_json() for r in raws]

    n = len(raws)
    out = {
        "messages": float(n),
        "decode_us": _us_per_item(lambda: [Envelope.from_json(r) for r in raws], n),
        "decode_msgspec_struct_us": _us_per_item(lambda: [decoder.decode(r) for r in raws], n),
        "encode_decision_us": _us_per_item(lambda: [d.to_json() for d in decisions], n),
        "encode_decision_msgspec_us": _us_per_item(
            lambda: [encoder.encode(d) for d in decisions], n),
        "encode_decision_orjson_us": _us_per_item(
            lambda: [orjson.dumps(d) for d in decisions], n),
        "decode_decide_encode_us": _us_per_item(whole(shipped), n),
        "decode_decide_encode_keywords_only_us": _us_per_item(whole(plain), n),
    }
    return {k: round(v, 2) for k, v in out.items()}
