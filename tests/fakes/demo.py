"""The fake model's demo conversation for local trials (`python -m tests.fakes.realtime_server`).

The fake does not understand speech: whatever the caller says, it plays this fixed conversation,
through the tools callassist declares, with arguments built from their JSON schemas (UseTool):

1. greeting: "Hello, you've reached the assistant. How can I help you today?"
2. after the caller's first turn: "Sure, let me check tomorrow." + check_availability(date: tomorrow)
3. after that result: says tomorrow's free times from the tool's answer, then create_event for
   "Alex Kim" ("Call with Alex Kim") tomorrow at the first free time the tool suggested (14:00 if it
   suggested none for tomorrow), one hour (the tool's default);
4. after that result: says the tool's answer (its "say" field, or its error), then take_message
   from Alex Kim: "Please call me back about the project before our meeting.";
5. after that result: says the tool's answer ("I've taken your message; ...") and goodbye, and
   calls end_call: the line closes once the goodbye has been heard;
6. any later turn (a caller who talks over the goodbye): "Thanks, I've noted that. Is there
   anything else I can help you with?"

Each step is driven by the previous function output in the conversation, so a refused booking is
read out and the demo goes on. A tool the session doesn't declare is skipped. The post-call
summary says what was done. `callassist calendar list` and `callassist messages list` then show
the booking and the message.
"""

from __future__ import annotations

import json
from typing import Any

from tests.fakes.script import Reply, ResponseContext, Say, Script, UseTool

GREETING = "Hello, you've reached the assistant. How can I help you today?"
CANNED_REPLY = "Thanks, I've noted that. Is there anything else I can help you with?"
DEMO_CALLER = "Alex Kim"
DEMO_MESSAGE = "Please call me back about the project before our meeting."
FALLBACK_TIME = "tomorrow 14:00"


def _calls(items: list[dict[str, Any]]) -> dict[str, str]:
    return {
        str(item.get("call_id")): str(item.get("name"))
        for item in items
        if item.get("type") == "function_call"
    }


def _last_turn(items: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The newest caller message or function output: what this response answers."""
    for item in reversed(items):
        if item.get("type") == "function_call_output":
            return item
        if item.get("type") == "message" and item.get("role") == "user":
            return item
    return None


def _parsed(output: Any) -> dict[str, Any]:
    try:
        value = json.loads(str(output))
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _first_free_start(availability: dict[str, Any]) -> str:
    """'YYYY-MM-DD HH:MM' of the first suggested time on the first day checked, else 14:00."""
    days = availability.get("days") or []
    day = days[0].get("date") if days and isinstance(days[0], dict) else None
    for slot in availability.get("suggested_times") or []:
        start = str(slot.get("start", "")) if isinstance(slot, dict) else ""
        if day and start.startswith(str(day)) and len(start) >= 16:
            return f"{start[:10]} {start[11:16]}"  # the owner's wall time, as the tool wrote it
    return FALLBACK_TIME


def _free_times_line(availability: dict[str, Any]) -> str:
    if not availability.get("ok", True):
        return str(availability.get("error") or "I couldn't check the calendar.")
    days = availability.get("days") or []
    if not days:
        return "I couldn't find free times."
    first = days[0]
    free = first.get("free") or "not free"
    return f"{str(first.get('day') or 'That day').capitalize()}, the free times are: {free}."


def demo_reply(ctx: ResponseContext) -> Reply:
    """One step of the demo conversation, chosen from what this response answers."""
    tools = set(ctx.tool_names)
    last = _last_turn(ctx.items)
    if last is None:
        return Reply([Say(GREETING)])
    if last.get("type") == "function_call_output":
        name = _calls(ctx.items).get(str(last.get("call_id")))
        output = _parsed(last.get("output"))
        said = str(output.get("say") or output.get("error") or "Done.")
        if name == "check_availability":
            line = _free_times_line(output)
            if "create_event" not in tools:
                return Reply([Say(line)])
            intent = {
                "title": f"Call with {DEMO_CALLER}",
                "start": _first_free_start(output),
                "caller_name": DEMO_CALLER,
            }
            return Reply(
                [Say(f"{line} I'll book the first one for you."), UseTool("create_event", intent=intent)]
            )
        if name == "create_event":
            if "take_message" not in tools:
                return Reply([Say(said)])
            intent = {"caller_name": DEMO_CALLER, "message": DEMO_MESSAGE}
            return Reply(
                [Say(f"{said} I'll also pass on your message."), UseTool("take_message", intent=intent)]
            )
        if name == "take_message":
            if "end_call" not in tools:
                return Reply([Say(said)])
            # The goodbye and the hang-up in one turn, as the end_call tool asks.
            goodbye = f"{said} Thank you for calling, goodbye!"
            return Reply([Say(goodbye), UseTool("end_call", intent={"reason": "the caller was helped"})])
        return Reply([Say(CANNED_REPLY)])
    if "check_availability" in tools and "check_availability" not in _calls(ctx.items).values():
        return Reply(
            [Say("Sure, let me check tomorrow."), UseTool("check_availability", intent={"date": "tomorrow"})]
        )
    return Reply([Say(CANNED_REPLY)])


def demo_summary(ctx: ResponseContext) -> str:
    """The post-call summary: what the demo did, as JSON like callassist asks for."""
    done = set(_calls(ctx.items).values())
    parts = []
    if "create_event" in done:
        parts.append("booked a call for tomorrow")
    if "take_message" in done:
        parts.append("left a message asking for a call back")
    summary = (
        f"{DEMO_CALLER} " + " and ".join(parts) + "." if parts else "The caller spoke with the assistant."
    )
    return json.dumps(
        {
            "summary": summary + " (fake model demo)",
            "caller_name": DEMO_CALLER if parts else None,
            "reason": "book a meeting" if parts else "general enquiry",
            "follow_up_needed": "take_message" in done,
            "urgency": "normal",
        }
    )


def demo_script() -> Script:
    """A fresh demo conversation for each connection."""
    return Script(default_reply=demo_reply, summary=demo_summary)
