"""Tools the model can call, each declared once: a docstring and a pydantic model of its arguments.

From that one declaration come the JSON schema sent in `session.update`, argument validation and
dispatch. A tool returns a dict for the model, or raises ToolError with a sentence the assistant can
say out loud. Bad arguments, exceptions and timeouts all become such answers: a tool never raises
into the bridge.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar, get_type_hints

from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

Args = TypeVar("Args", bound=BaseModel)


class ToolError(Exception):
    """A refusal the model should relay: `message` is said (paraphrased) to the caller."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


@dataclass
class ToolContext:
    """What a tool knows about the call it runs in. `services` holds the backends (calendar, store)."""

    call_sid: str | None
    caller_number: str | None
    is_owner: bool
    services: Any
    caller_name: str | None = None
    recorder: Any = None  # this call's CallRecorder (messages are stored through it)
    hang_up: Callable[[str], None] | None = None  # ends the call once the goodbye has been heard
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log


@dataclass
class ToolOutcome:
    """One tool call as it happened: what the model asked, what it got back, how long it took."""

    name: str
    call_id: str
    arguments: str
    output: dict[str, Any]
    duration_s: float
    started_at: float = field(default_factory=time.time)  # wall clock, when the call began

    @property
    def ok(self) -> bool:
        return bool(self.output.get("ok"))

    @property
    def output_json(self) -> str:
        return json.dumps(self.output, ensure_ascii=False, default=str)


Handler = Callable[[ToolContext, Any], Awaitable[dict[str, Any]]]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: type[BaseModel]
    handler: Handler
    owner_only: bool = False
    timeout_s: float | None = None

    def declaration(self) -> dict[str, Any]:
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "parameters": json_schema(self.parameters),
        }


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The model's JSON schema, inlined and without pydantic's noise (titles, $defs)."""
    schema = model.model_json_schema()
    definitions = schema.pop("$defs", {})

    def clean(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return clean(definitions[node["$ref"].rsplit("/", 1)[-1]])
            return {key: clean(value) for key, value in node.items() if key != "title"}
        if isinstance(node, list):
            return [clean(value) for value in node]
        return node

    cleaned = clean(schema)
    cleaned.setdefault("properties", {})
    cleaned["additionalProperties"] = False
    return cleaned


def _readable(error: ValidationError) -> str:
    parts = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "arguments"
        parts.append(f"{where}: {problem['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


class ToolRegistry:
    def __init__(self, default_timeout_s: float = 8.0) -> None:
        self.default_timeout_s = default_timeout_s
        self._tools: dict[str, Tool] = {}

    def tool(
        self, *, owner_only: bool = False, timeout_s: float | None = None
    ) -> Callable[[Callable[[ToolContext, Args], Awaitable[dict[str, Any]]]], Tool]:
        """Declare a tool: `async def name(ctx: ToolContext, args: SomeArgs) -> dict` with a docstring."""

        def register(function: Callable[[ToolContext, Args], Awaitable[dict[str, Any]]]) -> Tool:
            hints = get_type_hints(function)
            parameters = [name for name in inspect.signature(function).parameters]
            if len(parameters) != 2 or not issubclass(hints.get(parameters[1], object), BaseModel):
                raise TypeError(f"{function.__name__}: expected (ctx: ToolContext, args: <pydantic model>)")
            description = inspect.cleandoc(function.__doc__ or "")
            if not description:
                raise TypeError(f"{function.__name__}: a tool needs a docstring (the model reads it)")
            declared = Tool(
                name=function.__name__,
                description=description,
                parameters=hints[parameters[1]],
                handler=function,
                owner_only=owner_only,
                timeout_s=timeout_s,
            )
            if declared.name in self._tools:
                raise ValueError(f"tool {declared.name!r} declared twice")
            self._tools[declared.name] = declared
            return declared

        return register

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def names(self) -> list[str]:
        return list(self._tools)

    def declarations(self, *, owner: bool) -> list[dict[str, Any]]:
        """The `tools` list for session.update; owner-only tools only on the owner's own calls."""
        return [tool.declaration() for tool in self._tools.values() if owner or not tool.owner_only]

    async def call(self, name: str, call_id: str, arguments: str, ctx: ToolContext) -> ToolOutcome:
        """Run one tool call. Always returns an outcome; never raises (except cancellation)."""
        started, started_wall = time.monotonic(), time.time()
        output = await self._run(name, arguments, ctx)
        outcome = ToolOutcome(name, call_id, arguments, output, time.monotonic() - started, started_wall)
        ctx.logger.info(
            "tool %s %s in %.0f ms", name, "ok" if outcome.ok else f"refused: {output.get('error')}",
            outcome.duration_s * 1000,
        )  # fmt: skip
        return outcome

    async def _run(self, name: str, arguments: str, ctx: ToolContext) -> dict[str, Any]:
        tool = self._tools.get(name)
        if tool is None or (tool.owner_only and not ctx.is_owner):
            return {"ok": False, "error": f"There is no tool called {name!r}. Don't call it again."}
        try:
            raw = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            return {"ok": False, "error": "The arguments were not valid JSON. Call the tool again correctly."}
        try:
            args = tool.parameters.model_validate(raw)
        except ValidationError as exc:
            return {
                "ok": False,
                "error": f"Invalid arguments ({_readable(exc)}). Ask the caller if something is unclear, "
                "then call the tool again.",
            }
        timeout = tool.timeout_s or self.default_timeout_s
        try:
            async with asyncio.timeout(timeout):
                result = await tool.handler(ctx, args)
        except ToolError as refusal:
            return {"ok": False, "error": refusal.message, **refusal.details}
        except TimeoutError:
            ctx.logger.warning("tool %s timed out after %.1fs", name, timeout)
            return {
                "ok": False,
                "error": "That took too long and was stopped. Apologise, say it didn't go through, and "
                "offer to take a message instead.",
            }
        except Exception:
            ctx.logger.exception("tool %s failed", name)
            return {
                "ok": False,
                "error": "Something went wrong on our side and it didn't go through. Apologise and offer "
                "to take a message instead.",
            }
        return {"ok": True, **result}
