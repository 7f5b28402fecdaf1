"""Tools are complete plugins: each declares what it does to the call, its prompt lines and how the
owner's notice names it; the call core acts on an outcome's `call_effect`, never on output keys."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import BaseModel

from callassist.tools import STANDARD_TOOLS, all_tools
from callassist.tools.calendar import register_calendar_tools
from callassist.tools.call_control import register_call_tools
from callassist.tools.identity import register_identity_tools
from callassist.tools.keypad import KEYPAD_TOOLS
from callassist.tools.messages import register_message_tools
from callassist.tools.registry import (
    INVALID,
    OK,
    REFUSED,
    CallControl,
    CallEffect,
    CallHooks,
    PromptContext,
    PromptLines,
    ToolContext,
    ToolError,
    ToolRegistry,
    tool,
)


class Ending:
    """A call core's CallControl, as the tools see it."""

    def __init__(self) -> None:
        self.reasons: list[str] = []

    def end_call(self, reason: str) -> None:
        self.reasons.append(reason)


def context(call: CallControl | None = None) -> ToolContext:
    return ToolContext(call_sid="CA1", caller_number="+15551230000", is_owner=False, services=None, call=call)


def test_the_standard_tools_declare_what_they_do_to_the_call_and_how_notices_name_them() -> None:
    tools = all_tools()
    assert tools.call_effects("end_call") == frozenset({CallEffect.END_CALL})
    assert {name for name in tools.names() if tools.call_effects(name)} == {"end_call"}
    assert tools.call_effects("no_such_tool") == frozenset()
    labels = {name: tools.notice_label(name) for name in tools.names() if tools.notice_label(name)}
    assert labels == {
        "create_event": "Booked",
        "reschedule_event": "Moved",
        "cancel_event": "Cancelled",
        "take_message": "Message",
    }
    assert tools.notice_label("no_such_tool") is None


def test_handlers_are_module_level_and_the_registry_is_built_from_declared_tools() -> None:
    for declared in STANDARD_TOOLS:
        assert "<locals>" not in declared.handler.__qualname__, declared.name
        assert declared.handler.__qualname__ == declared.name
    # Registries built tool by tool (as older callers do) hold the same tools, in the same order.
    piecemeal = ToolRegistry()
    for register in (
        register_calendar_tools,
        register_message_tools,
        register_call_tools,
        register_identity_tools,
    ):
        register(piecemeal)
    piecemeal.add(*KEYPAD_TOOLS)
    assert piecemeal.names() == all_tools().names() == [declared.name for declared in STANDARD_TOOLS]
    with pytest.raises(ValueError, match="declared twice"):
        register_call_tools(piecemeal)


async def test_end_call_asks_the_call_to_end_and_its_outcome_says_so() -> None:
    ending = Ending()
    outcome = await all_tools().call(
        "end_call", "call_1", json.dumps({"reason": "said goodbye"}), context(ending)
    )
    assert ending.reasons == ["said goodbye"]
    assert outcome.ok and outcome.status == OK
    assert outcome.call_effect is CallEffect.END_CALL
    assert outcome.output == {"ok": True, "ending": True}  # no output key for the call core to read


async def test_end_call_without_a_call_to_end_refuses_politely() -> None:
    outcome = await all_tools().call("end_call", "call_1", "{}", context())
    assert not outcome.ok and outcome.status == REFUSED
    assert outcome.call_effect is None
    assert outcome.output == {"ok": False, "error": "The call can't be ended from here; just say goodbye."}


async def test_end_call_through_plain_functions() -> None:
    reasons: list[str] = []
    outcome = await all_tools().call(
        "end_call", "call_1", "{}", context(CallHooks(on_end_call=reasons.append))
    )
    assert reasons == ["done"] and outcome.call_effect is CallEffect.END_CALL


class How(BaseModel):
    how: str


def transfer_registry() -> ToolRegistry:
    registry = ToolRegistry()

    @registry.tool(on_call={CallEffect.TRANSFER})
    async def transfer(ctx: ToolContext, args: How) -> dict[str, Any]:
        """Put the caller through."""
        if args.how == "refuse":
            raise ToolError("No one to put them through to.")
        if args.how == "crash":
            raise RuntimeError("boom")
        if args.how == "not ok":
            return {"ok": False, "error": "The line is busy."}
        return {"transferring": True}

    @registry.tool()
    async def look(ctx: ToolContext, args: How) -> dict[str, Any]:
        """Look something up."""
        return {"seen": args.how}

    return registry


@pytest.mark.parametrize(
    ("arguments", "status", "effect"),
    [
        ({"how": "now"}, OK, CallEffect.TRANSFER),
        ({"how": "refuse"}, REFUSED, None),
        ({"how": "crash"}, "failed", None),
        ({"how": "not ok"}, OK, None),  # the tool said it did not work
        ({}, INVALID, None),
    ],
)
async def test_a_call_effect_is_set_only_when_the_tool_succeeded(
    arguments: dict[str, str], status: str, effect: CallEffect | None
) -> None:
    outcome = await transfer_registry().call("transfer", "call_1", json.dumps(arguments), context())
    assert (outcome.status, outcome.call_effect) == (status, effect)
    assert outcome.call_effect is None or outcome.ok


async def test_tools_without_an_effect_on_the_call_never_carry_one() -> None:
    registry = transfer_registry()
    assert registry.call_effects("look") == frozenset()
    assert (await registry.call("look", "call_1", '{"how": "x"}', context())).call_effect is None
    assert (await registry.call("nothing", "call_2", "{}", context())).call_effect is None


def test_a_tool_has_at_most_one_effect_on_the_call() -> None:
    with pytest.raises(TypeError, match="at most one effect"):

        @tool(on_call={CallEffect.END_CALL, CallEffect.TRANSFER})
        async def both(ctx: ToolContext, args: How) -> dict[str, Any]:
            """Both."""
            return {}


def test_each_tool_gives_its_own_prompt_lines_for_the_call() -> None:
    tools = {declared.name: declared for declared in STANDARD_TOOLS}
    caller = PromptContext(owner="Dana")
    verified = PromptContext(owner="Dana", caller_verified=True)
    owner = PromptContext(owner="Dana", is_owner=True)
    message = tools["take_message"].prompt_lines(caller)
    assert message.topic == "Messages" and "save it with take_message" in message.lines[0]
    assert (message.offer, message.claim) == ("take a message for Dana", "a message is saved")
    assert tools["take_message"].prompt_lines(owner) == PromptLines(claim="a message is saved")
    for name in ("send_verification_code", "check_verification_code"):
        assert tools[name].prompt_lines(caller).lines
        assert tools[name].prompt_lines(verified) == tools[name].prompt_lines(owner) == PromptLines()
    assert "Caller ID can be faked" in " ".join(tools["find_my_events"].prompt_lines(caller).lines)
    assert "Caller ID can be faked" not in " ".join(tools["find_my_events"].prompt_lines(verified).lines)
    assert tools["get_my_agenda"].prompt_lines(caller) == PromptLines()
    assert tools["get_my_agenda"].prompt_lines(owner).discloses
    assert tools["cancel_event"].prompt_lines(caller) == PromptLines()  # no lines of its own
