"""The shared helpers of issue 9, item 2, each used in place of the copies that were
removed: one text clipper (envelope repr, dead-letter reasons, bad values in errors)."""

from __future__ import annotations

from omniroute.adapters import text as adapter_text
from omniroute.router import _records, models
from omniroute.router import text as router_text
from omniroute.router.worker import MAX_REASON_CHARS, _reason
from tests.helpers import envelope


def test_one_clip_serves_the_router_and_the_channel_parsers() -> None:
    assert adapter_text.clip is router_text.clip
    assert models.MAX_TEXT_CHARS == router_text.MAX_TEXT_CHARS == 20_000
    assert router_text.clip("123456", 5) == "1234…"
    assert router_text.clip("12345", 5) == "12345"


def test_dead_letter_reasons_are_clipped_with_an_ellipsis() -> None:
    reason = _reason("handler_error", RuntimeError("x" * 5000))
    detail = reason.removeprefix("handler_error: ")
    assert len(detail) == MAX_REASON_CHARS
    assert detail.endswith("x…")
    assert _reason("handler_error", RuntimeError("short")) == "handler_error: RuntimeError: short"


def test_bad_values_in_record_errors_are_clipped_to_the_shown_width() -> None:
    shown = _records.show("y" * 500)
    assert len(shown) == router_text.SHOWN_CHARS
    assert shown.endswith("…")
    nested = models._show([["a" * 70] * 3] * 3)  # longer than SHOWN_CHARS once reprlib is done
    assert len(nested) == router_text.SHOWN_CHARS
    assert nested.endswith("…")


def test_envelope_repr_clips_the_text_to_forty_characters() -> None:
    assert repr(envelope(1, "长" * 100)).endswith(f"text={'长' * 39 + '…'!r})")
    assert repr(envelope(2, "长" * 40)).endswith(f"text={'长' * 40!r})")
