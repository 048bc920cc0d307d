"""Small formatting filters of the pages."""

from __future__ import annotations

import re

from django import template
from django.template.defaultfilters import filesizeformat

from hub_server.weburl import link_target

register = template.Library()


@register.filter
def compact(value) -> str:
    """1234 -> 1.2K, 894528 -> 894.5K, 110000000 -> 110M."""
    if value is None or value == "":
        return "–"
    number = float(value)
    for limit, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(number) >= limit:
            text = f"{number / limit:.1f}".rstrip("0").rstrip(".")
            return f"{text}{suffix}"
    return f"{int(number)}"


@register.filter
def size(value) -> str:
    return filesizeformat(value) if value else "–"


@register.filter
def percent(value) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}%" if value < 10 else f"{value:.0f}%"


@register.filter
def config_value(value) -> str:
    """A config value as the card writes it (JSON-ish: true/false/null, lists)."""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if value is None:
        return "null"
    if isinstance(value, list):
        return "[" + ", ".join(config_value(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return f"{value:.1f}"
    return str(value)


@register.filter
def handle(url: str) -> str:
    """The profile name of a github/twitter URL, as @name."""
    match = re.search(r"([^/@]+)/?$", url or "")
    return f"@{match.group(1)}" if match else url


@register.filter
def web_url(value) -> str:
    """The value when it is an absolute http(s) URL, else "": what a card says becomes a link
    target only through this filter (a `javascript:` URL that reached the database is text)."""
    return link_target(value)


@register.filter
def get(mapping, key):
    try:
        return mapping.get(key)
    except AttributeError:
        return None


@register.filter
def score(value) -> str:
    if value is None:
        return "–"
    return f"{value:.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)


@register.filter
def bar(percent_value, width) -> str:
    """Bar length in SVG units for a percentage of `width`, never thinner than visible."""
    return f"{max(3.0, float(percent_value or 0) * float(width) / 100):.1f}"


@register.filter
def page_query(listing, step) -> str:
    from frontend.selectors import list_query

    return list_query(listing.filters, listing.sort, listing.page + int(step))
