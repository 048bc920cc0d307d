"""Hostile YAML in a Hub repository: aliases, oversized files and fields, deep nesting, and error
messages that never echo what the user wrote at length."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from jsonschema import Draft7Validator

from hub_server.catalog import hubformat
from hub_server.catalog.models import Adapter
from hub_server.catalog.sync import sync_hub_repository
from tests.conftest import SNAPSHOT, commit_all

SST2 = "adapters/ukp/bert-base-uncased_sentiment_sst-2_pfeiffer.yaml"
CARD = "adapters/ukp/bad.yaml"


def laughs(levels: int, field: str = "citation") -> str:
    """A billion-laughs card: `levels` lists of nine aliases of the level below, under `field`."""
    lines = [f"{field}:", '- &l0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for level in range(1, levels + 1):
        refs = ",".join([f"*l{level - 1}"] * 9)
        lines.append(f"- &l{level} [{refs}]")
    return "\n".join(lines) + "\n"


def sst2_text() -> str:
    return (SNAPSHOT / SST2).read_text()


def parse(text: str) -> hubformat.ParsedFile:
    return hubformat.parse_file(CARD, text.encode())


@pytest.mark.django_db
def test_the_675_byte_bomb_is_refused_as_an_alias_not_expanded(snapshot_repo):
    """Eight levels fit in 675 bytes and made a schema message of hundreds of MB; four keep a
    failing run cheap (about 50 kB of message) while still showing the expansion."""
    assert len(laughs(8)) < 700
    data = yaml.safe_load(sst2_text())
    del data["citation"]
    bomb = yaml.safe_dump(data, sort_keys=False) + laughs(4)
    (snapshot_repo / CARD).write_text(bomb)
    # within every cap, and quoted by the sync's own check: the message still stays short
    data.update(task="t" * 10_000, citation="fine")
    (snapshot_repo / "adapters/ukp/long.yaml").write_text(yaml.safe_dump(data))
    commit_all(snapshot_repo, "hostile cards")

    run = sync_hub_repository(str(snapshot_repo))

    errors = [e for e in run.errors if e["file"] == CARD]
    assert len(errors) == 1, [e["message"][:200] for e in errors]
    assert "YAML aliases are not allowed" in errors[0]["message"]
    assert len(errors[0]["message"]) < 200
    assert errors[0]["line"] is not None
    (long,) = [e for e in run.errors if e["file"] == "adapters/ukp/long.yaml"]
    assert long["message"].startswith("unknown task 'tttt") and len(long["message"]) <= 500
    assert not Adapter.objects.filter(name__in=["bad", "long"]).exists()
    assert run.status == "succeeded"


def test_an_alias_anywhere_is_refused_before_construction():
    for text, found in (
        ("task: &t sentiment\nsubtask: *t\n", "the anchor &t"),
        ("a: *undefined\n", "the alias *undefined"),
        ("<<: &m {a: 1}\n", "the anchor &m"),
    ):
        parsed = parse(text)
        (error,) = parsed.errors
        assert error.message == f"YAML aliases are not allowed (found {found})"
        assert error.line == 1 and parsed.data == {}


def test_deep_nesting_is_refused():
    parsed = parse("description: " + "[" * 100 + "]" * 100 + "\n")
    (error,) = parsed.errors
    assert "nested deeper than" in error.message


def test_a_file_over_the_byte_cap_is_refused_unread(settings):
    settings.HUB_YAML_MAX_BYTES = 4096
    text = sst2_text() + "# " + "x" * 4096 + "\n"
    (error,) = parse(text).errors
    assert "HUB_YAML_MAX_BYTES" in error.message and str(len(text)) in error.message
    settings.HUB_YAML_MAX_BYTES = 1024 * 1024
    assert parse(text).errors == []


def test_a_field_over_the_byte_cap_names_the_field(settings):
    settings.HUB_CARD_FIELD_MAX_BYTES = 2000
    data = yaml.safe_load(sst2_text())
    data["description"] = "é" * 1001  # 2002 bytes, 1001 characters
    parsed = parse(yaml.safe_dump(data))
    (error,) = parsed.errors
    assert error.field == "description"
    assert "2002 bytes" in error.message and "HUB_CARD_FIELD_MAX_BYTES" in error.message
    assert "é" not in error.message


@pytest.mark.parametrize(
    ("change", "field", "words"),
    [
        ({"citation": ["lol"] * 5000}, "citation", "must be a string, not an array"),
        ({"files": "lol" * 5000}, "files", "must be an array, not a string"),
        ({"lol" * 5000: 1}, None, "unknown field(s): lollol"),
        ({"hidden_size": "lol" * 5000}, "hidden_size", "must be an integer, not a string"),
        ({"config": {"using": ""}}, "config.using", "must not be empty"),
        ({"email": "lol" * 5000}, "email", "is not a valid email"),
        ({"files": [{"version": "1", "url": "lol" * 5000}]}, "files.0", "needs version, url and"),
    ],
    ids=["type-array", "type-string", "unknown-field", "integer", "empty", "format", "any-of"],
)
def test_schema_messages_name_the_rule_and_never_echo_the_value(change, field, words):
    data = yaml.safe_load(sst2_text())
    data.update(change)
    parsed = parse(yaml.safe_dump(data, width=10**6))
    problems = parsed.errors + parsed.warnings
    assert problems, parsed
    (problem,) = [p for p in problems if words in p.message]
    assert problem.field == field
    assert all(len(p.message) < 300 for p in problems), [p.message[:300] for p in problems]


def test_the_missing_field_is_named():
    data = yaml.safe_load(sst2_text())
    del data["model_name"]
    (error,) = parse(yaml.safe_dump(data)).errors
    assert (error.field, error.message) == ("model_name", "is required")


def test_sync_of_the_snapshot_is_unaffected_by_the_strict_loader():
    for path in sorted(Path(SNAPSHOT).rglob("*.y*ml")):
        relative = str(path.relative_to(SNAPSHOT))
        parsed = hubformat.parse_file(relative, path.read_bytes())
        if parsed is not None:
            assert not [e for e in parsed.errors if "YAML" in e.message], relative


def test_every_schema_keyword_has_a_message_that_quotes_no_value():
    """A keyword added to the schemas must be restated in hubformat, or its jsonschema message
    (repr of the value) comes back."""

    def keywords(schema):
        if isinstance(schema, dict):
            for key, value in schema.items():
                yield key
                if key == "properties":
                    for sub in value.values():
                        yield from keywords(sub)
                elif isinstance(value, dict | list):
                    yield from keywords(value)
        elif isinstance(schema, list):
            for sub in schema:
                yield from keywords(sub)

    used = {k for schema in hubformat.SCHEMAS.values() for k in keywords(schema)}
    ours = hubformat.VALIDATORS["adapter"].VALIDATORS
    restated = {k for k, check in ours.items() if check is not Draft7Validator.VALIDATORS.get(k)}
    assert {"type", "required", "anyOf", "format"} <= restated
    assert used - hubformat.QUIET_KEYWORDS <= restated, used - hubformat.QUIET_KEYWORDS - restated
