"""What the model can do: calendar, messages and call control, each tool declared once."""

from __future__ import annotations

from callassist.tools.calendar import register_calendar_tools
from callassist.tools.call_control import register_call_tools
from callassist.tools.identity import register_identity_tools
from callassist.tools.messages import register_message_tools
from callassist.tools.registry import ToolRegistry


def all_tools(default_timeout_s: float = 8.0) -> ToolRegistry:
    """Every tool callassist offers the model, as one registry (the server's, and the tests')."""
    tools = ToolRegistry(default_timeout_s=default_timeout_s)
    register_calendar_tools(tools)
    register_message_tools(tools)
    register_call_tools(tools)
    register_identity_tools(tools)
    return tools
