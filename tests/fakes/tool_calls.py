"""How the fake "model" uses a declared function tool: it reads the JSON schema and builds arguments.

A model only sees the `tools` of the session (or of the response that overrides them) and fills in
the arguments the schema describes (the SDK's `RealtimeFunctionTool.parameters`: "Parameters of the
function in JSON Schema"), so a property missing from `properties` can't be produced and a schema that
no object satisfies can't be called correctly. This module checks a tool's schema, builds arguments
from a test's intent and validates them, all with `jsonschema` (Draft 2020-12). Nothing here runs per
audio frame.

Arguments are built like this (`build_arguments`):

* a value given by intent is used for that property; an intent for a property the schema lacks is
  a problem ("the model cannot produce it") and is left out;
* a required property without intent gets a plausible value from its schema: `const`, else the
  first `enum` value, else a valid `default`, else by type: integers/numbers inside min/max (1 if
  allowed), strings from the description's example ("e.g. 'Call with Alex Kim'"), a date/time
  for a date-like property (see below), booleans false, arrays of `minItems` elements, objects
  with their required properties; `anyOf`/`oneOf` take the first branch that isn't null;
* optional properties without intent are left out.

Dates and times, for a property whose `format` is date/date-time/time or whose description shows
an example such as "2026-11-25T14:00" or "YYYY-MM-DD": a string intent like "tomorrow 14:00",
"today 09:30", "2026-12-03 14:00", "next Tuesday 10:00", "Friday 2 pm" or "tomorrow" resolves
against the clock the model was given, the instructions' line "Right now it is Wednesday,
December 2, 2026, 3:04 pm in Dana's time zone (America/New_York)." (`Clock.from_instructions`),
and is written the way the description's example is (date only, minutes, seconds, offset). Rules:
a weekday ("Tuesday", "next Tuesday", "on Tuesday") is the first such day after today; a date
without a time is midnight for a date-time property; a property without an example of its own
(e.g. "end") is written like a sibling that has one (e.g. "start"); a required date-like property
without intent is "tomorrow 10:00". Any other intent (or a non-date property) is used verbatim.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

# ---------------------------------------------------------------------------------------------
# The clock the model was told about
# ---------------------------------------------------------------------------------------------

_MONTHS = {
    name: number
    for number, name in enumerate(
        (
            "january",
            "february",
            "march",
            "april",
            "may",
            "june",
            "july",
            "august",
            "september",
            "october",
            "november",
            "december",
        ),
        start=1,
    )
}
_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
# "Right now it is Wednesday, December 2, 2026, 3:04 pm in Dana's time zone (America/New_York)."
_NOW_LINE = re.compile(r"Right now it is (?P<when>[^\n]*?) in [^\n]*?time zone \((?P<zone>[^)\n]+)\)")
_NOW_WHEN = re.compile(
    r"(?:[A-Za-z]+,\s*)?(?P<month>[A-Za-z]+)\s+(?P<day>\d{1,2}),\s*(?P<year>\d{4})"
    r"(?:,?\s*(?P<hour>\d{1,2}):(?P<minute>\d{2})\s*(?P<ampm>[ap])\.?m\.?)?",
    re.IGNORECASE,
)


@dataclass(frozen=True)
class Clock:
    """What the model knows about "now": a local date (and time) and the zone's name."""

    today: date
    now: time | None = None
    zone: str | None = None
    source: str = "instructions"  # "instructions", "zone" (date from the zone) or "system"

    @classmethod
    def from_instructions(cls, instructions: str) -> Clock:
        """Parse the "Right now it is ..." line; fall back to today in the zone it names, else the
        machine's local date (a model that was given no date guesses one)."""
        line = _NOW_LINE.search(instructions or "")
        if line is None:
            return cls(datetime.now().astimezone().date(), source="system")
        zone_name = line.group("zone").strip()
        when = _NOW_WHEN.match(line.group("when").strip())
        month = _MONTHS.get(when.group("month").lower()) if when else None
        if when is not None and month is not None:
            try:
                today = date(int(when.group("year")), month, int(when.group("day")))
            except ValueError:
                today = None
            if today is not None:
                now = None
                if when.group("hour"):
                    hour = int(when.group("hour")) % 12 + (12 if when.group("ampm").lower() == "p" else 0)
                    now = time(hour, int(when.group("minute")))
                return cls(today, now, zone_name)
        try:
            return cls(datetime.now(ZoneInfo(zone_name)).date(), zone=zone_name, source="zone")
        except (ZoneInfoNotFoundError, ValueError):
            return cls(datetime.now().astimezone().date(), zone=zone_name, source="system")


# ---------------------------------------------------------------------------------------------
# Time intents
# ---------------------------------------------------------------------------------------------

_TIME = (
    r"(?P<hour>\d{1,2})(?::(?P<minute>\d{2}))?(?::(?P<second>\d{2}))?\s*(?P<ampm>[ap]\.?m\.?)?"
    r"|(?P<word>noon|midnight)"
)
_DAY = (
    r"(?P<iso>\d{4}-\d{2}-\d{2})"
    r"|(?P<rel>today|tomorrow|(?:the\s+)?day\s+after\s+tomorrow)"
    rf"|(?:(?:next|this|on)\s+)?(?P<weekday>{'|'.join(_WEEKDAYS)})"
)
# "tomorrow 14:00", "2026-12-03T14:00", "next Tuesday at 10 am" ... or "2 pm tomorrow".
_DAY_FIRST = re.compile(rf"\s*(?:{_DAY})(?:(?:\s*T|\s+(?:at\s+)?)(?:{_TIME}))?\s*", re.IGNORECASE)
_TIME_FIRST = re.compile(rf"\s*(?:at\s+)?(?:{_TIME})\s+(?:on\s+)?(?:{_DAY})\s*", re.IGNORECASE)


def resolve_time_intent(text: str, clock: Clock) -> tuple[date, time | None] | None:
    """The date (and time, if given) a model would take `text` to mean, or None if it isn't one."""
    match = _DAY_FIRST.fullmatch(text) or _TIME_FIRST.fullmatch(text)
    if match is None:
        return None
    groups = {name: value for name, value in match.groupdict().items() if value is not None}
    if "iso" in groups:
        try:
            day = date.fromisoformat(groups["iso"])
        except ValueError:
            return None
    elif "rel" in groups:
        rel = groups["rel"].lower()
        day = clock.today + timedelta(days={"today": 0, "tomorrow": 1}.get(rel, 2))
    else:
        wanted = _WEEKDAYS.index(groups["weekday"].lower())
        day = clock.today + timedelta(days=(wanted - clock.today.weekday() - 1) % 7 + 1)
    if "word" in groups:
        return day, time(12) if groups["word"].lower() == "noon" else time(0)
    if "hour" not in groups:
        return day, None
    if "minute" not in groups and "ampm" not in groups:
        return None  # "tomorrow 2": not a time anyone writes
    hour, minute, second = int(groups["hour"]), int(groups.get("minute", 0)), int(groups.get("second", 0))
    if "ampm" in groups:
        if not 1 <= hour <= 12:
            return None
        hour = hour % 12 + (12 if groups["ampm"].lower().startswith("p") else 0)
    if hour > 23 or minute > 59 or second > 59:
        return None
    return day, time(hour, minute, second)


# ---------------------------------------------------------------------------------------------
# How a date-like property wants its value written
# ---------------------------------------------------------------------------------------------

_ISO_EXAMPLE = re.compile(
    r"\b\d{4}-\d{2}-\d{2}(?P<time>T\d{2}:\d{2}(?P<seconds>:\d{2})?)?(?P<offset>Z|[+-]\d{2}:\d{2})?"
)
_PLACEHOLDER = re.compile(r"YYYY-MM-DD(?P<time>[T ]HH:MM(?P<seconds>:SS)?)?")
_QUOTED_EXAMPLE = re.compile(r"e\.g\.,?\s*(?:'(?P<single>[^']+)'|\"(?P<double>[^\"]+)\"|(?P<bare>[^\s,;)]+))")


@dataclass(frozen=True)
class TimeStyle:
    has_date: bool = True
    has_time: bool = True
    seconds: bool = False
    offset: bool = False

    def format(self, day: date, at: time | None, zone: str | None) -> str:
        at = at or time(0)
        if not self.has_date:
            return at.strftime("%H:%M:%S" if self.seconds else "%H:%M")
        if not self.has_time:
            return day.isoformat()
        moment = datetime.combine(day, at)
        text = moment.strftime("%Y-%m-%dT%H:%M:%S" if self.seconds else "%Y-%m-%dT%H:%M")
        if self.offset and zone:
            with contextlib.suppress(ZoneInfoNotFoundError, ValueError):
                local = moment.replace(tzinfo=ZoneInfo(zone))
                offset = local.strftime("%z")
                text += f"{offset[:3]}:{offset[3:]}"
        return text


def time_style(schema: dict[str, Any], description: str) -> TimeStyle | None:
    """How a property wants a date/time written, from its `format` or its description's example."""
    fmt = schema.get("format")
    if fmt == "date-time":
        return TimeStyle(seconds=True, offset=True)
    if fmt == "date":
        return TimeStyle(has_time=False)
    if fmt == "time":
        return TimeStyle(has_date=False, seconds=True)
    example = _ISO_EXAMPLE.search(description) or _PLACEHOLDER.search(description)
    if example is None:
        return None
    return TimeStyle(
        has_time=bool(example.group("time")),
        seconds=bool(example.group("seconds")),
        offset=bool(example.groupdict().get("offset")),
    )


# ---------------------------------------------------------------------------------------------
# Schema checks
# ---------------------------------------------------------------------------------------------


def schema_problems(tool_name: str, parameters: Any) -> tuple[str, ...]:
    """Why no model could call this tool correctly: an invalid or unsatisfiable schema."""
    try:
        key = json.dumps(parameters, sort_keys=True)
    except (TypeError, ValueError):
        return (f"tool {tool_name!r}: parameters are not JSON",)
    return _schema_problems_cached(tool_name, key)


@functools.lru_cache(maxsize=512)
def _schema_problems_cached(tool_name: str, key: str) -> tuple[str, ...]:
    # Cached: every call of a benchmark declares the same tools.
    parameters = json.loads(key)
    where = f"tool {tool_name!r}"
    problems: list[str] = []
    try:
        Draft202012Validator.check_schema(parameters)
    except SchemaError as exc:
        path = "/".join(str(part) for part in exc.path) or "(root)"
        problems.append(f"{where}: invalid JSON Schema at {path}: {exc.message}")
    if not isinstance(parameters, dict) or parameters.get("type") != "object":
        problems.append(f"{where}: parameters must be a JSON Schema object (type: object)")
    if isinstance(parameters, dict):
        problems += [f"{where}: {text}" for text in _unsatisfiable(parameters, "parameters")]
    return tuple(problems)


def _unsatisfiable(node: Any, path: str) -> list[str]:
    """Constraints that no value (or no value a schema-following model produces) can meet."""
    if not isinstance(node, dict):
        return []
    problems: list[str] = []
    properties = node.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = node.get("required")
    if isinstance(required, list):
        for name in required:
            if name not in properties:
                closed = node.get("additionalProperties") is False
                problems.append(
                    f"{path}: required property {name!r} is not in 'properties', so a model that follows "
                    "the schema cannot produce it"
                    + (
                        "; with additionalProperties false no argument object satisfies the schema"
                        if closed
                        else ""
                    )
                )
    if node.get("enum") == []:
        problems.append(f"{path}: 'enum' is empty")
    for low, high in (("minimum", "maximum"), ("minLength", "maxLength"), ("minItems", "maxItems")):
        lo, hi = node.get(low), node.get(high)
        if isinstance(lo, int | float) and isinstance(hi, int | float) and lo > hi:
            problems.append(f"{path}: {low} {lo} > {high} {hi}")
    for name, child in properties.items():
        problems += _unsatisfiable(child, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        problems += _unsatisfiable(node["items"], f"{path}[]")
    for keyword in ("anyOf", "oneOf", "allOf"):
        branches = node.get(keyword)
        if isinstance(branches, list):
            for index, branch in enumerate(branches):
                problems += _unsatisfiable(branch, f"{path}.{keyword}[{index}]")
    return problems


def argument_problems(tool_name: str, parameters: Any, arguments: Any) -> list[str]:
    """Where the built arguments fail the declared schema (Draft 2020-12), one line each."""
    try:
        validator = Draft202012Validator(parameters)
        errors = sorted(validator.iter_errors(arguments), key=lambda error: list(error.path))
        return [
            f"tool {tool_name!r}: arguments {json.dumps(arguments)} fail the schema at "
            f"{'/'.join(str(part) for part in error.path) or '(root)'}: {error.message}"
            for error in errors
        ]
    except Exception as exc:  # an invalid schema can make validation itself fail
        return [f"tool {tool_name!r}: the schema could not be used to validate the arguments: {exc}"]


# ---------------------------------------------------------------------------------------------
# Building arguments
# ---------------------------------------------------------------------------------------------


def build_arguments(
    tool_name: str, parameters: Any, intent: dict[str, Any], clock: Clock
) -> tuple[dict[str, Any], list[str]]:
    """Arguments a schema-following model produces for `intent`, and the problems on the way
    (schema problems, intents the schema can't carry, a failed validation of the result)."""
    problems = list(schema_problems(tool_name, parameters))
    schema = parameters if isinstance(parameters, dict) else {}
    arguments = _build_object(tool_name, schema, intent, clock, problems, "")
    problems += argument_problems(tool_name, parameters, arguments)
    return arguments, problems


def _build_object(
    tool_name: str,
    schema: dict[str, Any],
    intent: dict[str, Any],
    clock: Clock,
    problems: list[str],
    prefix: str,
) -> dict[str, Any]:
    properties = schema.get("properties")
    properties = properties if isinstance(properties, dict) else {}
    required = schema.get("required") if isinstance(schema.get("required"), list) else []
    for name in intent:
        if name not in properties:
            problems.append(
                f"tool {tool_name!r}: the model cannot produce {prefix + name!r}: the declared schema "
                "has no such property"
            )
    # A property without its own example (e.g. "end") is written like its siblings (e.g. "start").
    sibling_style = next(
        (style for child in properties.values() if (style := _style_of(child)) is not None), None
    )
    arguments: dict[str, Any] = {}
    for name, child in properties.items():
        child = child if isinstance(child, dict) else {}
        if name in intent:
            arguments[name] = _from_intent(
                tool_name, child, intent[name], clock, problems, f"{prefix}{name}.", sibling_style
            )
        elif name in required:
            arguments[name] = _plausible(tool_name, name, child, clock, problems, f"{prefix}{name}.")
    return arguments


def _branch(schema: dict[str, Any]) -> dict[str, Any]:
    """The part of a property's schema a model would fill: the first non-null anyOf/oneOf branch,
    with the property's own description kept."""
    for keyword in ("anyOf", "oneOf"):
        branches = schema.get(keyword)
        if isinstance(branches, list):
            for branch in branches:
                if isinstance(branch, dict) and branch.get("type") != "null":
                    merged = {**{k: v for k, v in schema.items() if k not in ("anyOf", "oneOf")}, **branch}
                    return _branch(merged)
    all_of = schema.get("allOf")
    if isinstance(all_of, list):
        merged = {k: v for k, v in schema.items() if k != "allOf"}
        for part in all_of:
            if isinstance(part, dict):
                merged.update(part)
        return _branch(merged)
    return schema


def _kind(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), None)
    if kind is None and "properties" in schema:
        return "object"
    return kind if isinstance(kind, str) else None


def _style_of(schema: Any) -> TimeStyle | None:
    if not isinstance(schema, dict):
        return None
    branch = _branch(schema)
    if _kind(branch) not in (None, "string"):
        return None
    return time_style(branch, str(branch.get("description") or ""))


def _from_intent(
    tool_name: str,
    schema: dict[str, Any],
    value: Any,
    clock: Clock,
    problems: list[str],
    prefix: str,
    sibling_style: TimeStyle | None = None,
) -> Any:
    branch = _branch(schema)
    if isinstance(value, dict) and _kind(branch) == "object":
        return _build_object(tool_name, branch, value, clock, problems, prefix)
    if isinstance(value, str) and _kind(branch) in (None, "string"):
        style = _style_of(schema) or sibling_style
        if style is not None:
            resolved = resolve_time_intent(value, clock)
            if resolved is not None:
                return style.format(resolved[0], resolved[1], clock.zone)
    return copy.deepcopy(value)


def _plausible(
    tool_name: str, name: str, schema: dict[str, Any], clock: Clock, problems: list[str], prefix: str
) -> Any:
    branch = _branch(schema)
    if "const" in branch:
        return copy.deepcopy(branch["const"])
    if isinstance(branch.get("enum"), list) and branch["enum"]:
        return copy.deepcopy(branch["enum"][0])
    if "default" in branch and branch["default"] is not None:
        return copy.deepcopy(branch["default"])
    kind = _kind(branch)
    description = str(branch.get("description") or "")
    if kind == "object":
        return _build_object(tool_name, branch, {}, clock, problems, prefix)
    if kind == "array":
        items = branch.get("items") if isinstance(branch.get("items"), dict) else {}
        count = branch.get("minItems") if isinstance(branch.get("minItems"), int) else 0
        return [_plausible(tool_name, name, items, clock, problems, prefix) for _ in range(count)]
    if kind in ("integer", "number"):
        return _number(branch, integer=kind == "integer")
    if kind == "boolean":
        return False
    if kind == "null":
        return None
    style = _style_of(branch)
    if style is not None:
        resolved = resolve_time_intent("tomorrow 10:00", clock)
        assert resolved is not None
        return style.format(resolved[0], resolved[1], clock.zone)
    return _string(name, branch, description)


def _number(schema: dict[str, Any], *, integer: bool) -> int | float:
    low = schema.get("minimum")
    if low is None and isinstance(schema.get("exclusiveMinimum"), int | float):
        low = schema["exclusiveMinimum"] + (1 if integer else 0.5)
    high = schema.get("maximum")
    if high is None and isinstance(schema.get("exclusiveMaximum"), int | float):
        high = schema["exclusiveMaximum"] - (1 if integer else 0.5)
    value: int | float = 1
    if low is not None and value < low:
        value = low
    if high is not None and value > high:
        value = high
    return int(value) if integer else value


_FORMAT_SAMPLES = {
    "email": "alex.kim@example.com",
    "uri": "https://example.com/",
    "uuid": "123e4567-e89b-12d3-a456-426614174000",
    "ipv4": "192.0.2.1",
    "hostname": "example.com",
}


def _string(name: str, schema: dict[str, Any], description: str) -> str:
    fmt = schema.get("format")
    if isinstance(fmt, str) and fmt in _FORMAT_SAMPLES:
        text = _FORMAT_SAMPLES[fmt]
    else:
        example = _QUOTED_EXAMPLE.search(description)
        if example is not None:
            text = example.group("single") or example.group("double") or example.group("bare").rstrip(".")
        elif "name" in name:
            text = "Alex Kim"
        elif "phone" in name or "number" in name:
            text = "+15551234567"
        else:
            text = name.replace("_", " ").capitalize()
    min_length = schema.get("minLength")
    if isinstance(min_length, int) and len(text) < min_length:
        text = (text + " ") * (min_length // (len(text) + 1) + 1)
    max_length = schema.get("maxLength")
    if isinstance(max_length, int):
        text = text[:max_length]
    return text
