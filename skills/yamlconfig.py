"""YAML loading that remembers line numbers, so config errors can name file:line."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from .exceptions import ConfigError

__all__ = ["LocatedYaml", "format_validation_error", "load_model", "load_yaml"]

M = TypeVar("M", bound=BaseModel)


class LocatedYaml:
    """Parsed YAML data plus the line of every mapping key / sequence item (1-based)."""

    def __init__(self, path: Path, data: Any, lines: dict[tuple[str | int, ...], int]) -> None:
        self.path = path
        self.data = data
        self.lines = lines

    def line_of(self, loc: Sequence[str | int]) -> int | None:
        """The line of the deepest known prefix of ``loc``."""
        key = tuple(loc)
        while key:
            if key in self.lines:
                return self.lines[key]
            key = key[:-1]
        return None

    def where(self, loc: Sequence[str | int]) -> str:
        """``file:line`` for a key path."""
        line = self.line_of(loc)
        return f"{self.path}:{line}" if line else str(self.path)


def _walk(
    node: yaml.Node, path: tuple[str | int, ...], out: dict[tuple[str | int, ...], int]
) -> Any:
    if isinstance(node, yaml.MappingNode):
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = yaml.safe_load(yaml.serialize(key_node))
            child = (*path, key)
            out[child] = key_node.start_mark.line + 1
            result[key] = _walk(value_node, child, out)
        return result
    if isinstance(node, yaml.SequenceNode):
        items = []
        for i, item in enumerate(node.value):
            child = (*path, i)
            out[child] = item.start_mark.line + 1
            items.append(_walk(item, child, out))
        return items
    return yaml.safe_load(yaml.serialize(node))


def load_yaml(path: Path) -> LocatedYaml:
    """Parse ``path`` safely; raise ConfigError naming the file and line on bad YAML."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read ({exc.strerror}); check the path") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not UTF-8 text; save the file as UTF-8") from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
        raise ConfigError(f"{where}: invalid YAML ({getattr(exc, 'problem', exc)})") from None
    lines: dict[tuple[str | int, ...], int] = {}
    data = _walk(node, (), lines) if node is not None else None
    return LocatedYaml(path, data, lines)


def load_model(path: Path, model: type[M], fix_hint: str = "") -> tuple[M, LocatedYaml]:
    """Load ``path`` and validate it into ``model``; errors name file:line, key path, value."""
    doc = load_yaml(path)
    try:
        return model.model_validate(doc.data if doc.data is not None else {}), doc
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, doc=doc, fix_hint=fix_hint)) from None


def format_validation_error(
    exc: ValidationError,
    *,
    doc: LocatedYaml | None = None,
    prefix: str = "",
    show_input: bool = True,
    hide: Collection[str] = (),
    limit: int = 10,
    sep: str = "\n",
    fix_hint: str = "",
) -> str:
    """The one way a pydantic error is told to a person: one part per problem.

    Each part reads ``[file:line: ]<prefix><key.path>: <message>[ (got <value>)]``;
    past ``limit`` problems a last part says how many more there are.

    Args:
        exc: The validation error.
        doc: The YAML document validated: each part starts with its ``file:line``.
        prefix: Put before every key path (``"messages[2]."``, ``"channels.yaml: wechat."``).
        show_input: Show the offending value (cut to 80 characters; mappings and
            lists by type name).
        hide: Key-path fragments (case-insensitive) whose values are never shown,
            e.g. ``("token", "secret")``.
        limit: At most this many problems.
        sep: Between parts.
        fix_hint: A last line ``fix: ...``.
    """
    errors = exc.errors()
    hidden = tuple(h.lower() for h in hide)
    parts = []
    for err in errors[:limit]:
        loc = [p for p in err["loc"] if not isinstance(p, str) or not p.startswith("function-")]
        key_path = ".".join(str(p) for p in loc) or "(top level)"
        part = f"{prefix}{key_path}: {err['msg']}"
        if doc is not None:
            part = f"{doc.where(loc)}: {part}"
        if show_input:
            value = err.get("input")
            if any(h in key_path.lower() for h in hidden):
                shown = "<secret>"
            else:
                shown = repr(value) if not isinstance(value, dict | list) else type(value).__name__
            part += f" (got {shown[:80]})"
        parts.append(part)
    if len(errors) > limit:
        parts.append(f"and {len(errors) - limit} more")
    hint = f"\nfix: {fix_hint}" if fix_hint else ""
    return sep.join(parts) + hint
