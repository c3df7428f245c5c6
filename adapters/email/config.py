"""The e-mail channel's constants. Its settings (``OMNI_EMAIL_*``, ``OMNI_SMTP_*``,
``OMNI_IMAP_*``) are the ``email`` section of :class:`router.settings.Settings`."""

from __future__ import annotations

from typing import Final

__all__ = ["CHANNEL"]

CHANNEL: Final = "email"  # metric label and dedupe namespace
