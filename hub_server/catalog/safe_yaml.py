"""The one YAML loader for YAML that users write: upload cards and every file of a Hub repository.

The safe loader alone is not enough for untrusted text. Anchors and aliases let a few hundred bytes
stand for gigabytes (each alias is a reference; anything that walks the result, such as json.dumps
or repr, expands it), so `StrictSafeLoader` refuses both while composing, before any object is
built. Nesting is capped too, and callers cap the bytes of a blob and of each string in it
(HUB_YAML_MAX_BYTES, HUB_CARD_FIELD_MAX_BYTES; docs/configuration.md).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml
from django.conf import settings
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.resolver import Resolver

try:  # libyaml parses several times faster; composing stays in Python, where events are checked.
    from yaml._yaml import CParser
except ImportError:  # pragma: no cover - wheels ship libyaml
    CParser = None

DEFAULT_MAX_BYTES = 256 * 1024
DEFAULT_FIELD_MAX_BYTES = 16 * 1024
# Hub cards nest four levels deep (files -> entry -> field); far deeper is an attack on recursion.
MAX_DEPTH = 20
ALIASES_REFUSED = "YAML aliases are not allowed"


class YAMLRefused(yaml.MarkedYAMLError):
    """Valid YAML this project does not accept from users (an alias, an anchor, deep nesting)."""

    def __init__(self, problem: str, mark) -> None:
        super().__init__(problem=problem, problem_mark=mark)


def clip(text: str, limit: int = 120) -> str:
    """`text` cut to `limit` characters, saying so: user data in a message never runs long."""
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


class _RefuseAliases(Composer):
    """Composer that raises on an anchor or alias event before any node is composed."""

    _depth = 0

    def compose_node(self, parent, index):
        event = self.peek_event()
        # An alias event carries the name it refers to, a node event the anchor it defines.
        if getattr(event, "anchor", None) is not None:
            found = "the alias *" if isinstance(event, yaml.AliasEvent) else "the anchor &"
            raise YAMLRefused(
                f"{ALIASES_REFUSED} (found {found}{clip(event.anchor, 40)})", event.start_mark
            )
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise YAMLRefused(
                    f"YAML nested deeper than {MAX_DEPTH} levels is not allowed", event.start_mark
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


if CParser is not None:

    class StrictSafeLoader(_RefuseAliases, CParser, SafeConstructor, Resolver):
        """yaml.CSafeLoader's parser and constructor with the checking composer."""

        def __init__(self, stream: str | bytes) -> None:
            CParser.__init__(self, stream)
            Composer.__init__(self)
            SafeConstructor.__init__(self)
            Resolver.__init__(self)

else:  # pragma: no cover

    class StrictSafeLoader(_RefuseAliases, yaml.SafeLoader):
        """yaml.SafeLoader with the checking composer."""


def load(text: str | bytes) -> Any:
    """Parse one YAML document written by a user. Raises yaml.YAMLError (YAMLRefused for an
    alias, an anchor or deep nesting); never builds a Python object from a tag."""
    return yaml.load(text, Loader=StrictSafeLoader)


def max_blob_bytes() -> int:
    return int(getattr(settings, "HUB_YAML_MAX_BYTES", DEFAULT_MAX_BYTES))


def max_field_bytes() -> int:
    return int(getattr(settings, "HUB_CARD_FIELD_MAX_BYTES", DEFAULT_FIELD_MAX_BYTES))


def blob_too_large(size: int) -> str | None:
    """The problem with a YAML blob of `size` bytes, or None when it is within the cap."""
    cap = max_blob_bytes()
    if size <= cap:
        return None
    return f"the YAML is {size} bytes; at most {cap} are allowed (HUB_YAML_MAX_BYTES)"


def long_strings(data: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, str]]:
    """(field path, problem) for every string (value or key) over HUB_CARD_FIELD_MAX_BYTES."""
    cap = max_field_bytes()
    if isinstance(data, str):
        size = len(data.encode("utf-8"))
        if size > cap:
            where = ".".join(path) or "(document)"
            yield (
                where,
                (f"is {size} bytes; a field may hold at most {cap} (HUB_CARD_FIELD_MAX_BYTES)"),
            )
    elif isinstance(data, dict):
        for key, value in data.items():
            name = clip(str(key), 60)
            if isinstance(key, str) and len(key.encode("utf-8")) > cap:
                yield ".".join((*path, name)), "is a field name over HUB_CARD_FIELD_MAX_BYTES"
            yield from long_strings(value, (*path, name))
    elif isinstance(data, list):
        for index, value in enumerate(data):
            yield from long_strings(value, (*path, str(index)))
