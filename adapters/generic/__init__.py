"""Generic JSON ingest: ``POST /v1/messages`` (app chat, CRM, anything else)."""

from .adapter import install
from .parse import IngestMessage, parse_body

__all__ = ["IngestMessage", "install", "parse_body"]
