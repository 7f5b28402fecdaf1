"""Every tool the server declares has a schema a model can satisfy.

The model follows the declared JSON schema: a property missing from `properties` can't be produced,
so a `required` name without its property (as `title` once was for create_event) makes the tool
impossible to call. Checked here for every tool, as declared to callers and to the owner.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from callassist.tools import all_tools
from callassist.tools.registry import Tool, ToolRegistry

# Values a caller would give, for fields whose text must parse; anything else is built from the schema.
SAMPLES = {
    "date": "2026-11-25",
    "end_date": "2026-11-26",
    "from_date": "2026-11-25",
    "to_date": "2026-12-25",
    "start": "2026-11-25T14:00",
    "end": "2026-11-25T15:00",
    "callback_number": "+15551234567",
}


def registry() -> ToolRegistry:
    return all_tools()


def declared() -> Iterator[tuple[str, bool, dict[str, Any]]]:
    for owner in (False, True):
        for declaration in registry().declarations(owner=owner, owner_name="Dana"):
            yield declaration["name"], owner, declaration


DECLARED = list(declared())
IDS = [f"{name}-{'owner' if owner else 'caller'}" for name, owner, _ in DECLARED]


def tool(name: str) -> Tool:
    return registry()._tools[name]


def schema_nodes(schema: Any) -> Iterator[dict[str, Any]]:
    """Every (sub)schema object, not the property maps or values such as `default`."""
    if not isinstance(schema, dict):
        return
    yield schema
    for name in ("properties", "patternProperties", "$defs"):
        for child in schema.get(name, {}).values():
            yield from schema_nodes(child)
    for name in ("anyOf", "allOf", "oneOf", "prefixItems"):
        for child in schema.get(name, []):
            yield from schema_nodes(child)
    for name in ("items", "additionalProperties", "not", "if", "then", "else", "contains"):
        yield from schema_nodes(schema.get(name))


def sample(schema: dict[str, Any], name: str = "", *, everything: bool) -> Any:
    """A value a model following `schema` could send (every optional property too, or none)."""
    if name in SAMPLES:
        return SAMPLES[name]
    if "enum" in schema:
        return schema["enum"][-1]
    if "anyOf" in schema:
        return sample(schema["anyOf"][0], name, everything=everything)
    kind = schema.get("type")
    if kind == "object":
        wanted = schema.get("properties", {}) if everything else schema.get("required", [])
        return {key: sample(schema["properties"][key], key, everything=everything) for key in wanted}
    if kind == "integer":
        return max(schema.get("minimum", 0), min(30, schema.get("maximum", 30)))
    if kind == "number":
        return float(schema.get("minimum", 1))
    if kind == "boolean":
        return True
    if kind == "array":
        return []
    if kind == "string":
        return "Call with Alex Kim"[: schema.get("maxLength", 100)].ljust(schema.get("minLength", 0), "x")
    raise AssertionError(f"no sample for {schema}")


def test_every_tool_is_declared() -> None:
    names = {name for name, _, _ in DECLARED}
    assert names == {
        "check_availability",
        "create_event",
        "find_my_events",
        "cancel_event",
        "reschedule_event",
        "get_my_agenda",
        "take_message",
        "end_call",
        "send_verification_code",
        "check_verification_code",
        "ask_for_keypad_entry",
    }
    assert "get_my_agenda" not in {name for name, owner, _ in DECLARED if not owner}


@pytest.mark.parametrize(("name", "owner", "declaration"), DECLARED, ids=IDS)
def test_schema_is_valid_json_schema_and_satisfiable(name: str, owner: bool, declaration: dict) -> None:
    schema = declaration["parameters"]
    Draft202012Validator.check_schema(schema)
    assert schema["type"] == "object" and schema["additionalProperties"] is False
    for node in schema_nodes(schema):
        assert "title" not in node, f"{name}: pydantic's title annotation left in {node}"
        assert "$ref" not in node
        properties = node.get("properties", {})
        assert set(node.get("required", [])) <= set(properties), f"{name}: required names a missing property"
    for prop, child in schema["properties"].items():
        assert child.get("description"), f"{name}.{prop} has no description"
        assert {"type": "null"} not in child.get("anyOf", []) or prop in schema.get("required", []), (
            f"{name}.{prop}: an optional field should be plain, not anyOf [..., null]"
        )
    assert "the owner" not in str(declaration) and "{owner}" not in str(declaration)


@pytest.mark.parametrize(("name", "owner", "declaration"), DECLARED, ids=IDS)
@pytest.mark.parametrize("everything", [False, True], ids=["required-only", "all-properties"])
def test_a_sample_that_follows_the_schema_is_accepted(
    name: str, owner: bool, declaration: dict, everything: bool
) -> None:
    schema = declaration["parameters"]
    arguments = sample(schema, everything=everything)
    Draft202012Validator(schema).validate(arguments)
    tool(name).parameters.model_validate(arguments)


def test_closed_sets_are_enums() -> None:
    urgency = tool("take_message").declaration()["parameters"]["properties"]["urgency"]
    assert urgency["enum"] == ["low", "normal", "high", "urgent"]
    create = tool("create_event").declaration()["parameters"]
    assert "title" in create["properties"] and "title" in create["required"]


def test_each_call_gets_its_own_declarations_made_once_per_owner_name() -> None:
    registry = all_tools(transfer="urgent")
    first = registry.declarations(owner=False, owner_name="Dana")
    expected = copy.deepcopy(first)
    for declaration in first:  # what one call might do with its copy
        declaration["parameters"]["properties"].clear()
        declaration["parameters"].setdefault("required", []).append("nonsense")
    assert registry.declarations(owner=False, owner_name="Dana") == expected
    other = {d["name"]: d for d in registry.declarations(owner=False, owner_name="Sam")}
    assert "Sam" in other["take_message"]["description"] + str(other["take_message"]["parameters"])
