"""Links a card may carry: absolute http(s) URLs only.

A card's `url` (and a subtask's, a version file's) is shown as a link target and handed to
clients as a download location, so `javascript:`, `data:` and friends are refused when a card is
read (upload, API, sync) and never rendered as a link (the `web_url` filter of the pages).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

WEB_SCHEMES = frozenset({"http", "https"})
# Control characters and whitespace: browsers strip some of them from a scheme
# ("java\tscript:"), so a URL holding any is never a link.
_UNSAFE_CHARS = re.compile(r"[\x00-\x20\x7f]")


def link_target(value: object) -> str:
    """The URL a link to `value` may point at: `value` without surrounding whitespace (a browser
    drops it too; a Hub card has `url: " https://..."`) when that is an absolute http(s) URL with
    a host, else ""."""
    if not isinstance(value, str):
        return ""
    value = value.strip()
    return value if is_web_url(value) else ""


def is_web_url(value: object) -> bool:
    """True for an absolute http:// or https:// URL with a host, nothing else (no whitespace or
    control character anywhere: see link_target for a value with surrounding spaces)."""
    if not isinstance(value, str) or not value or _UNSAFE_CHARS.search(value):
        return False
    try:
        parts = urlsplit(value)
    except ValueError:  # e.g. an unbalanced "[" in the host
        return False
    return parts.scheme.lower() in WEB_SCHEMES and bool(parts.hostname)


def is_hub_path(value: object) -> bool:
    """True for an absolute path on this hub (`/api/v1/...`): what a card published here without
    HUB_PUBLIC_URL names its files by. Not `//host` (another host) nor a backslash (which
    browsers read as a slash)."""
    return (
        isinstance(value, str)
        and value.startswith("/")
        and not value.startswith("//")
        and "\\" not in value
        and not _UNSAFE_CHARS.search(value)
    )


def web_url_problem(field: str, value: object) -> str | None:
    """The message refusing `value` as the card field `field`, or None when it is a web URL."""
    if is_web_url(value):
        return None
    return f"{field} must be an absolute http:// or https:// URL"
