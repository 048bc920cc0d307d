"""Config strings: ``"seq_bn[reduction_factor=8, leave_out=[0]]"``; ``|`` joins a union."""

from __future__ import annotations

import ast
from typing import Any

from ..errors import AdapterConfigError


def _split_top_level(text: str, sep: str) -> list[str]:
    """Split at ``sep`` characters that are outside brackets and quotes."""
    parts: list[str] = []
    depth = 0
    quote: str | None = None
    current: list[str] = []
    for ch in text:
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"":
            quote = ch
        elif ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
            if depth < 0:
                raise AdapterConfigError(f"Unbalanced brackets in config string {text!r}.")
        elif ch == sep and depth == 0:
            parts.append("".join(current))
            current = []
            continue
        current.append(ch)
    if depth != 0 or quote:
        raise AdapterConfigError(f"Unbalanced brackets or quotes in config string {text!r}.")
    parts.append("".join(current))
    return parts


def _parse_value(raw: str) -> Any:
    raw = raw.strip()
    try:
        return ast.literal_eval(raw)
    except (ValueError, SyntaxError):
        lowered = raw.lower()
        if lowered in ("true", "false"):
            return lowered == "true"
        if lowered in ("none", "null"):
            return None
        return raw  # a bare word such as gelu


def parse_config_string(text: str) -> list[tuple[str, dict[str, Any]]]:
    """Parse into ``[(identifier, overrides), ...]``, one entry per ``|``-joined part."""
    if not isinstance(text, str) or not text.strip():
        raise AdapterConfigError("An adapter config string must not be empty.")
    parsed: list[tuple[str, dict[str, Any]]] = []
    for part in _split_top_level(text.strip(), "|"):
        part = part.strip()
        if "[" in part:
            if not part.endswith("]"):
                raise AdapterConfigError(f"Malformed config string part {part!r}.")
            name, _, body = part.partition("[")
            body = body[:-1]
            overrides: dict[str, Any] = {}
            for item in _split_top_level(body, ","):
                if not item.strip():
                    continue
                if "=" not in item:
                    raise AdapterConfigError(f"Expected key=value in config string, got {item!r}.")
                key, _, value = item.partition("=")
                overrides[key.strip()] = _parse_value(value)
        else:
            name, overrides = part, {}
        name = name.strip()
        if not name:
            raise AdapterConfigError(f"Missing config identifier in {text!r}.")
        parsed.append((name, overrides))
    return parsed
