"""Settings the generic ingest reads (all from ``router.settings.Settings``)."""

from __future__ import annotations

from typing import Final

__all__ = ["HMAC_SIGNATURE_HEADER", "HMAC_TIMESTAMP_HEADER", "PATH"]

PATH: Final = "/v1/messages"
HMAC_SIGNATURE_HEADER: Final = "X-Omni-Signature"  # "sha256=" + hex HMAC of "<ts>.<body>"
HMAC_TIMESTAMP_HEADER: Final = "X-Omni-Timestamp"  # unix seconds; must be within the window
