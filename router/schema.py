"""JSON schemas of the envelope and the decision (published in docs/schema/)."""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter

from .models import Decision, Envelope

__all__ = ["json_schema"]

_TYPES: dict[str, type] = {"envelope": Envelope, "decision": Decision}


def json_schema(which: str) -> dict[str, Any]:
    """The JSON schema of ``envelope`` or ``decision``; KeyError for anything else."""
    schema: dict[str, Any] = TypeAdapter(_TYPES[which]).json_schema(mode="serialization")
    schema["$id"] = f"https://omniroute.invalid/schema/{which}.v1.json"
    return schema
