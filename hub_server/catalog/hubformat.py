"""Reading one file of a Hub repository: which kind it is, its YAML, its schema.

Pure functions over (path, bytes): no database, no git. Cross references between files are checked
by the sync (`sync.py`), which knows the whole catalogue. The format is described in
docs/hub-format.md; the rules here are the Hub's own schemas plus the checks its CI forgot.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

import yaml
from jsonschema import Draft7Validator, FormatChecker, ValidationError, validators

from hub_server.catalog import safe_yaml
from hub_server.catalog.safe_yaml import clip
from hub_server.weburl import is_hub_path, link_target, web_url_problem

KINDS = ("adapter_type", "task", "subtask", "architecture", "adapter")
YAML_SUFFIXES = {".yaml", ".yml"}
SHA_LENGTHS = {"sha1": 40, "sha256": 64}
HEX = re.compile(r"^[0-9a-f]+$")
# The format of every URL field: an absolute http(s) URL (hub_server/weburl.py), or empty; a
# version's file may also be a path on this hub (a card published here without HUB_PUBLIC_URL).
WEB_URL = "web-url"
WEB_URL_OR_PATH = "web-url-or-path"
LINK_FORMATS = {WEB_URL, WEB_URL_OR_PATH}


@dataclass
class FileProblem:
    file: str
    message: str
    line: int | None = None
    field: str | None = None

    def __post_init__(self) -> None:
        # Every message may quote user data; none may grow with it.
        self.message = clip(self.message, 500)

    def as_dict(self) -> dict[str, Any]:
        return {"file": self.file, "line": self.line, "field": self.field, "message": self.message}

    def __str__(self) -> str:
        where = self.file + (f":{self.line}" if self.line else "")
        return f"{where}: {self.field + ': ' if self.field else ''}{self.message}"


@dataclass
class ParsedFile:
    kind: str
    path: str
    data: dict[str, Any]
    # For files under tasks/<type>/, subtasks/<type>/ and adapters/<org>/: the folder name.
    folder: str = ""
    errors: list[FileProblem] = field(default_factory=list)
    warnings: list[FileProblem] = field(default_factory=list)

    @property
    def stem(self) -> str:
        return PurePosixPath(self.path).stem


def classify(path: str) -> tuple[str, str] | None:
    """(kind, folder) for a catalogue file of the repository, None for anything else."""
    p = PurePosixPath(path)
    if p.suffix not in YAML_SUFFIXES:
        return None
    parts = p.parts
    if len(parts) == 2 and parts[0] == "adapter_types":
        return "adapter_type", ""
    if len(parts) == 2 and parts[0] == "architectures":
        return "architecture", ""
    if len(parts) == 3 and parts[0] == "tasks":
        return "task", parts[1]
    if len(parts) == 3 and parts[0] == "subtasks":
        return "subtask", parts[1]
    if len(parts) == 3 and parts[0] == "adapters":
        return "adapter", parts[1]
    return None


def _str(max_length: int | None = None, min_length: int | None = 1, fmt: str | None = None):
    schema: dict[str, Any] = {"type": "string"}
    if min_length:
        schema["minLength"] = min_length
    if max_length:
        schema["maxLength"] = max_length
    if fmt:
        schema["format"] = fmt
    return schema


def _object(required: list[str], properties: dict[str, Any], extra: bool = False):
    return {
        "type": "object",
        "required": required,
        "properties": properties,
        "additionalProperties": extra,
    }


# The Hub format's schemas (scripts/schemas/*.schema.json in the Hub repository), restated.
SCHEMAS: dict[str, dict[str, Any]] = {
    "adapter_type": _object(
        ["id", "displayname"],
        {"id": _str(50), "displayname": _str(), "description": _str(min_length=None)},
    ),
    "task": _object(
        ["task", "displayname", "description"],
        {"task": _str(30), "displayname": _str(80), "description": _str(500, None)},
    ),
    "subtask": _object(
        ["task", "subtask", "description"],
        {
            "task": _str(30),
            "subtask": _str(30),
            "displayname": _str(80),
            "hf_datasets_id": _str(min_length=None),
            "description": _str(500, None),
            "url": _str(min_length=None, fmt=WEB_URL),
            "citation": _str(min_length=None),
            "language": _str(min_length=None),
            "metric": _object(
                ["name", "higher_is_better"],
                {"name": {"type": "string"}, "higher_is_better": {"type": "boolean"}},
            ),
        },
    ),
    "architecture": _object(
        ["name", "displayname", "description", "config"],
        {
            "name": _str(),
            "displayname": _str(),
            "description": _str(500, None),
            "citation": _str(min_length=None),
            "config": {"type": "object", "minProperties": 1},
            "config_v1": {"type": "object"},
        },
    ),
    "adapter": _object(
        [
            "type",
            "task",
            "subtask",
            "model_type",
            "model_name",
            "author",
            "config",
            "default_version",
            "files",
        ],
        {
            "type": _str(),
            "task": _str(),
            "subtask": _str(),
            "model_type": _str(),
            "model_name": _str(),
            "model_class": _str(),
            "prediction_head": {"type": "boolean"},
            "config": _object(
                ["using"],
                {
                    "using": _str(),
                    "non_linearity": _str(),
                    "reduction_factor": {"type": "integer", "minimum": 1},
                },
            ),
            "author": _str(),
            "email": _str(min_length=None, fmt="email"),
            "url": _str(min_length=None, fmt=WEB_URL),
            "github": _str(min_length=None),
            "twitter": _str(min_length=None),
            "citation": _str(min_length=None),
            "description": _str(min_length=None),
            "default_version": {"type": "string"},
            "hidden_size": {"type": "integer"},
            "name": _str(),
            "files": {
                "type": "array",
                "minItems": 1,
                "items": {
                    "type": "object",
                    "anyOf": [
                        {"required": ["version", "url", "sha1"]},
                        {"required": ["version", "url", "sha256"]},
                    ],
                    "additionalProperties": False,
                    "properties": {
                        "version": {"type": "string"},
                        "url": _str(min_length=None, fmt=WEB_URL_OR_PATH),
                        "sha1": {"type": "string"},
                        "sha256": {"type": "string"},
                        "description": {"type": "string"},
                        "score": {"type": "number"},
                    },
                },
            },
            "dependencies": {
                "type": "array",
                "items": _object(
                    ["key"], {"key": _str(), "description": _str(100, min_length=None)}
                ),
            },
        },
    ),
}

# The schema keywords whose jsonschema messages hold repr() of the instance (for a list, the whole
# list: a small card of nested lists made a message of hundreds of MB) are restated here with
# messages built from the rule alone; the field is named by the error's path.
JSON_TYPES = {
    bool: "a boolean",
    int: "an integer",
    float: "a number",
    str: "a string",
    list: "an array",
    dict: "an object",
    type(None): "null",
}
TYPE_NAMES = {
    "array": "an array",
    "object": "an object",
    "integer": "an integer",
    "number": "a number",
}


def _kind(instance: Any) -> str:
    return JSON_TYPES.get(type(instance), type(instance).__name__)


def _type(validator, types, instance, schema):
    types = [types] if isinstance(types, str) else types
    if not any(validator.is_type(instance, t) for t in types):
        wanted = " or ".join(TYPE_NAMES.get(t, f"a {t}") for t in types)
        yield ValidationError(f"must be {wanted}, not {_kind(instance)}")


def _required(validator, required, instance, schema):
    if validator.is_type(instance, "object"):
        for name in required:
            if name not in instance:
                yield ValidationError("is required", path=[name])


def _additional_properties(validator, allowed, instance, schema):
    if not validator.is_type(instance, "object") or allowed is not False:
        return
    extra = [str(k) for k in instance if k not in schema.get("properties", {})]
    if extra:
        names = clip(", ".join(clip(k, 40) for k in extra), 160)
        yield ValidationError(f"unknown field(s): {names}")


def _bound(kind: str, unit: str, measure: Callable[[Any], float], is_max: bool):
    def check(validator, limit, instance, schema):
        if not validator.is_type(instance, kind):
            return
        value = measure(instance)
        if is_max and value > limit:
            yield ValidationError(f"must have at most {limit} {unit} (has {value})")
        elif not is_max and value < limit:
            empty = limit == 1 and kind != "number"
            yield ValidationError(
                "must not be empty" if empty else f"must be at least {limit}{unit}"
            )

    return check


def _format(validator, fmt, instance, schema):
    if validator.format_checker is not None and not validator.format_checker.conforms(
        instance, fmt
    ):
        yield ValidationError(f"is not a valid {fmt}")


def _pattern(validator, pattern, instance, schema):
    if validator.is_type(instance, "string") and not re.search(pattern, instance):
        yield ValidationError(f"does not match the pattern {pattern}")


def _enum(validator, allowed, instance, schema):
    if instance not in allowed:
        yield ValidationError(f"must be one of {', '.join(map(str, allowed))}")


def _any_of(validator, alternatives, instance, schema):
    if any(validator.evolve(schema=s).is_valid(instance) for s in alternatives):
        return
    if all(set(s) == {"required"} for s in alternatives):
        yield ValidationError(f"needs {_forms(alternatives)}")
        return
    yield ValidationError("matches none of the allowed forms")


def _forms(alternatives: list[dict]) -> str:
    """'version, url and sha1 or sha256' from [{required: [version, url, sha1]}, {..., sha256}]."""
    lists = [s["required"] for s in alternatives]
    common = [k for k in lists[0] if all(k in other for other in lists)]
    rest = [" ".join(k for k in one if k not in common) for one in lists]
    return f"{', '.join(common)} and {' or '.join(rest)}"


_SafeValidator = validators.extend(
    Draft7Validator,
    {
        "type": _type,
        "required": _required,
        "additionalProperties": _additional_properties,
        "minLength": _bound("string", " characters", len, is_max=False),
        "maxLength": _bound("string", "characters", len, is_max=True),
        "minItems": _bound("array", " items", len, is_max=False),
        "minProperties": _bound("object", " fields", len, is_max=False),
        "minimum": _bound("number", "", lambda n: n, is_max=False),
        "format": _format,
        "pattern": _pattern,
        "enum": _enum,
        "anyOf": _any_of,
    },
)
# Keywords whose jsonschema messages quote nothing of the instance, kept as they are.
QUIET_KEYWORDS = {"properties", "items"}
_FORMATS = FormatChecker(formats=["email"])


@_FORMATS.checks(WEB_URL)
def _web_url(value: object) -> bool:
    return not isinstance(value, str) or value == "" or bool(link_target(value))


@_FORMATS.checks(WEB_URL_OR_PATH)
def _web_url_or_path(value: object) -> bool:
    return _web_url(value) or is_hub_path(value)


VALIDATORS = {
    kind: _SafeValidator(schema, format_checker=_FORMATS) for kind, schema in SCHEMAS.items()
}


def _field_path(error) -> str | None:
    return ".".join(str(p) for p in error.absolute_path) or None


def _line_of(text: str, key: str | None) -> int | None:
    """Best-effort line number of a top-level key, so an error points into the file."""
    if not key:
        return None
    top = key.split(".", 1)[0]
    match = re.search(rf"^{re.escape(top)}\s*:", text, flags=re.MULTILINE)
    return text.count("\n", 0, match.start()) + 1 if match else None


def parse_file(path: str, content: bytes) -> ParsedFile | None:
    """Parse and schema-check one file. None when the path is not a catalogue file."""
    kind_folder = classify(path)
    if kind_folder is None:
        return None
    kind, folder = kind_folder
    parsed = ParsedFile(kind=kind, path=path, data={}, folder=folder)
    too_large = safe_yaml.blob_too_large(len(content))
    if too_large:
        parsed.errors.append(FileProblem(path, too_large))
        return parsed
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError as exc:
        parsed.errors.append(
            FileProblem(path, f"not UTF-8 text ({exc.reason} at byte {exc.start})")
        )
        return parsed
    try:
        # No tags (a !!python/object tag is an error here, never executed), no aliases.
        data = safe_yaml.load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or "invalid YAML"
        if exc.context:
            problem = f"{exc.context}; {problem}"
        if not isinstance(exc, safe_yaml.YAMLRefused):
            problem = f"YAML syntax error: {problem}"
        parsed.errors.append(FileProblem(path, problem, line=line))
        return parsed
    except yaml.YAMLError as exc:
        parsed.errors.append(FileProblem(path, f"YAML error: {exc}"))
        return parsed
    if not isinstance(data, dict):
        parsed.errors.append(
            FileProblem(path, f"expected a mapping at the top level, found {type(data).__name__}")
        )
        return parsed
    for field_name, problem in safe_yaml.long_strings(data):
        parsed.errors.append(
            FileProblem(path, problem, line=_line_of(text, field_name), field=field_name)
        )
    if parsed.errors:
        return parsed
    parsed.data = data
    for error in sorted(VALIDATORS[kind].iter_errors(data), key=lambda e: list(e.absolute_path)):
        field_name = _field_path(error)
        link = error.validator == "format" and error.validator_value in LINK_FORMATS
        message = error.message
        if link:
            message = web_url_problem(field_name or "url", error.instance)
            if error.validator_value == WEB_URL_OR_PATH:
                message += " or a path on this hub"
        problem = FileProblem(path, message, line=_line_of(text, field_name), field=field_name)
        # The original CI forgot format checks: a bad email is reported, not fatal. A URL that is
        # not http(s) is: it would be a link target and a download location (javascript:...).
        (parsed.warnings if error.validator == "format" and not link else parsed.errors).append(
            problem
        )
    if kind == "adapter" and not parsed.errors:
        _check_adapter_files(parsed, text)
    return parsed


def _check_adapter_files(parsed: ParsedFile, text: str) -> None:
    data = parsed.data
    versions = [f["version"] for f in data["files"]]
    seen: set[str] = set()
    for index, entry in enumerate(data["files"]):
        if entry["version"] in seen:
            parsed.errors.append(
                FileProblem(
                    parsed.path,
                    f"version {clip(entry['version'], 60)!r} is listed twice",
                    line=_line_of(text, "files"),
                    field=f"files.{index}.version",
                )
            )
        seen.add(entry["version"])
        for algo, length in SHA_LENGTHS.items():
            value = entry.get(algo)
            if value is not None and (len(value) != length or not HEX.match(value)):
                parsed.errors.append(
                    FileProblem(
                        parsed.path,
                        f"{algo} must be {length} lowercase hex characters, got {clip(value, 80)!r}",
                        line=_line_of(text, "files"),
                        field=f"files.{index}.{algo}",
                    )
                )
    if data["default_version"] not in versions:
        parsed.errors.append(
            FileProblem(
                parsed.path,
                f"default_version {clip(data['default_version'], 60)!r} is not one of the "
                f"versions {clip(str(versions), 200)}",
                line=_line_of(text, "default_version"),
                field="default_version",
            )
        )


def minimize(value: Any) -> Any:
    """Drop falsy values recursively, as the original Hub did before hashing."""
    if isinstance(value, Mapping):
        return {k: minimize(v) for k, v in value.items() if v}
    return value


def config_hash(config: Mapping[str, Any]) -> str:
    """The Hub's 16-hex-character id of a full adapter config."""
    blob = json.dumps(minimize(config), sort_keys=True).encode("utf-8")
    return hashlib.sha1(blob).hexdigest()[:16]


def full_config(architecture_config: Mapping[str, Any], card_config: Mapping[str, Any]) -> dict:
    """The architecture's config with every key of the card's `config` except `using` applied."""
    merged = dict(architecture_config)
    merged.update({k: v for k, v in card_config.items() if k != "using"})
    return merged
