"""What the model can do: calendar, messages and call control, each tool declared once."""

from __future__ import annotations

from callassist.tools.calendar import CALENDAR_TOOLS
from callassist.tools.call_control import CALL_TOOLS
from callassist.tools.identity import IDENTITY_TOOLS
from callassist.tools.keypad import KEYPAD_TOOLS
from callassist.tools.messages import MESSAGE_TOOLS
from callassist.tools.registry import Tool, ToolRegistry
from callassist.tools.transfer import transfer_tool

# In the order they are declared to the model (and their rules come in the instructions).
STANDARD_TOOLS: tuple[Tool, ...] = (
    *CALENDAR_TOOLS,
    *MESSAGE_TOOLS,
    *CALL_TOOLS,
    *IDENTITY_TOOLS,
    *KEYPAD_TOOLS,
)


def all_tools(default_timeout_s: float = 8.0, *, transfer: str = "never") -> ToolRegistry:
    """Every tool callassist offers the model, as one registry (the server's, and the tests').

    `transfer`: the owner's transfer policy (`always`, `urgent`) when a call can be put through
    (settings.transfer_possible); `never` leaves transfer_to_owner out.
    """
    tools = STANDARD_TOOLS if transfer == "never" else (*STANDARD_TOOLS, transfer_tool(transfer))
    return ToolRegistry(default_timeout_s=default_timeout_s, tools=tools)
