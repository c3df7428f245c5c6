"""E-mail channel: inbound SMTP (aiosmtpd) and an IMAP IDLE poller (aioimaplib).

Neither listens on its own: the process that runs the adapters starts
``SmtpServer`` and/or ``ImapPoller`` (both have idempotent ``start``/``stop``
and ``async with``) with an ``HttpContext`` and the ``email`` section of the settings.
"""

from .imap import ImapPoller
from .parse import MalformedMail, ParsedMail, parse_mail, thread_root
from .smtp import SmtpServer
from .text import html_to_text, strip_quoted

__all__ = [
    "ImapPoller",
    "MalformedMail",
    "ParsedMail",
    "SmtpServer",
    "html_to_text",
    "parse_mail",
    "strip_quoted",
    "thread_root",
]
