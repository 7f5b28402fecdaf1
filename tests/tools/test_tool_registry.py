"""The tool registry: one declaration -> schema, validation, dispatch; every failure a spoken answer."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

import pytest
from jsonschema import Draft202012Validator
from openai.types.realtime import RealtimeClientEvent
from pydantic import BaseModel, Field, TypeAdapter

from callassist.calendar.booking import BookingService
from callassist.tools.calendar import CALENDAR_TOOLS
from callassist.tools.registry import ToolContext, ToolError, ToolRegistry, json_schema

CLIENT_EVENTS = TypeAdapter(Annotated[RealtimeClientEvent, Field(discriminator="type")])


class Point(BaseModel):
    x: int = Field(ge=0, description="Across")
    label: str | None = None


def make_registry() -> ToolRegistry:
    registry = ToolRegistry(default_timeout_s=0.2)

    @registry.tool()
    async def place(ctx: ToolContext, args: Point) -> dict[str, Any]:
        """Place a point."""
        if args.label == "taken":
            raise ToolError("That spot is taken.", alternatives=[1, 2])
        if args.label == "boom":
            raise RuntimeError("database exploded")
        if args.label == "slow":
            await asyncio.sleep(5)
        return {"placed": args.x}

    @registry.tool(owner_only=True)
    async def secret(ctx: ToolContext, args: Point) -> dict[str, Any]:
        """Only for the owner."""
        return {"x": args.x}

    return registry


def context(owner: bool = False) -> ToolContext:
    return ToolContext(call_sid="CA1", caller_number="+15551230000", is_owner=owner, services=None)


def test_declarations_are_clean_json_schema_and_owner_only_tools_are_hidden() -> None:
    registry = make_registry()
    [place] = registry.declarations(owner=False)
    assert place == {
        "type": "function",
        "name": "place",
        "description": "Place a point.",
        "parameters": {
            "type": "object",
            "properties": {
                "x": {"type": "integer", "minimum": 0, "description": "Across"},
                "label": {"type": "string"},  # optional: a plain string left out of `required`
            },
            "required": ["x"],
            "additionalProperties": False,
        },
    }
    assert [d["name"] for d in registry.declarations(owner=True)] == ["place", "secret"]


class Slot(BaseModel):
    day: str = Field(description="YYYY-MM-DD")
    title: str | None = Field(default=None, description="A property called title")


class Nested(BaseModel):
    title: str = Field(description="Kept: a property, not an annotation")
    slot: Slot = Field(description="A nested model")
    extra: dict[str, str] = Field(default={"title": "a default value"}, description="Left alone")
    maybe: int | None = Field(description="Required but may be null")


def test_only_title_annotations_go_never_a_property_or_a_value_named_title() -> None:
    schema = json_schema(Nested)
    assert schema["required"] == ["title", "slot", "maybe"]
    assert schema["properties"]["title"] == {
        "type": "string",
        "description": "Kept: a property, not an annotation",
    }
    assert schema["properties"]["slot"] == {
        "type": "object",
        "description": "A nested model",
        "properties": {
            "day": {"type": "string", "description": "YYYY-MM-DD"},
            "title": {"type": "string", "description": "A property called title"},
        },
        "required": ["day"],
    }
    assert schema["properties"]["extra"]["default"] == {"title": "a default value"}
    # A required field that may be null keeps its null: leaving it out would not mean the same.
    assert schema["properties"]["maybe"]["anyOf"] == [{"type": "integer"}, {"type": "null"}]
    assert "$defs" not in json.dumps(schema) and "$ref" not in json.dumps(schema)
    Draft202012Validator.check_schema(schema)


class Ask(BaseModel):
    question: str = Field(description="What to ask {owner}")


def test_owner_name_replaces_the_placeholder_in_descriptions() -> None:
    registry = ToolRegistry(owner_name="Dana")

    @registry.tool()
    async def ask(ctx: ToolContext, args: Ask) -> dict[str, Any]:
        """Ask {owner} something; {owner}'s answer comes
        later."""
        return {}

    [dana] = registry.declarations(owner=False)
    assert dana["description"] == "Ask Dana something; Dana's answer comes later."
    assert dana["parameters"]["properties"]["question"]["description"] == "What to ask Dana"
    [sam] = registry.declarations(owner=False, owner_name="Sam Lee")
    assert sam["description"] == "Ask Sam Lee something; Sam Lee's answer comes later."
    nobody = ask.declaration()
    assert nobody["description"] == "Ask the owner something; the owner's answer comes later."


def test_calendar_tool_declarations_validate_in_a_session_update() -> None:
    registry = ToolRegistry(tools=CALENDAR_TOOLS)
    tools = registry.declarations(owner=True)
    assert {t["name"] for t in tools} == {
        "check_availability",
        "create_event",
        "find_my_events",
        "cancel_event",
        "reschedule_event",
        "get_my_agenda",
    }
    CLIENT_EVENTS.validate_python({"type": "session.update", "session": {"type": "realtime", "tools": tools}})
    assert "get_my_agenda" not in {t["name"] for t in registry.declarations(owner=False)}
    assert BookingService  # the tools are written against it


@pytest.mark.parametrize(
    ("arguments", "expected_ok", "needle"),
    [
        ('{"x": 3}', True, None),
        ('{"x": 3, "label": "taken"}', False, "That spot is taken."),
        ('{"x": -1}', False, "Invalid arguments (x: Input should be greater than or equal to 0)"),
        ('{"x": "three"}', False, "Invalid arguments"),
        ("{not json", False, "not valid JSON"),
        ("", False, "Invalid arguments (x: Field required)"),
        ('{"x": 1, "label": "boom"}', False, "Something went wrong"),
        ('{"x": 1, "label": "slow"}', False, "took too long"),
        ("[" * 10_000, False, "not valid JSON"),
    ],
)
async def test_every_failure_becomes_an_answer(arguments: str, expected_ok: bool, needle: str | None) -> None:
    outcome = await make_registry().call("place", "call_1", arguments, context())
    assert outcome.ok is expected_ok
    if needle:
        assert needle in outcome.output["error"]
    json.loads(outcome.output_json)
    assert outcome.duration_s < 1


async def test_refusal_details_reach_the_model_and_unknown_or_owner_only_tools_are_refused() -> None:
    registry = make_registry()
    refused = await registry.call("place", "c", '{"x": 1, "label": "taken"}', context())
    assert refused.output == {"ok": False, "error": "That spot is taken.", "alternatives": [1, 2]}
    assert (
        "no tool called 'teleport'" in (await registry.call("teleport", "c", "{}", context())).output["error"]
    )
    assert not (await registry.call("secret", "c", '{"x": 1}', context(owner=False))).ok
    assert (await registry.call("secret", "c", '{"x": 1}', context(owner=True))).output == {
        "ok": True,
        "x": 1,
    }


def test_declaring_a_tool_needs_a_docstring_and_a_model() -> None:
    registry = ToolRegistry()
    with pytest.raises(TypeError):

        @registry.tool()
        async def undocumented(ctx: ToolContext, args: Point) -> dict[str, Any]:
            return {}

    with pytest.raises(TypeError):

        @registry.tool()
        async def untyped(ctx: ToolContext, args: dict) -> dict[str, Any]:  # type: ignore[type-arg]
            """Doc."""
            return {}
