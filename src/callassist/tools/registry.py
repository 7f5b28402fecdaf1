"""Tools the model can call, each declared once: a docstring and a pydantic model of its arguments.

From that one declaration come the JSON schema sent in `session.update`, argument validation and
dispatch. A tool returns a dict for the model, or raises ToolError with a sentence the assistant can
say out loud. Bad arguments, exceptions and timeouts all become such answers: a tool never raises
into the bridge.

A tool declared with `effects=True` changes the world outside the call (a booking, a message): its
outcome is committed to the call's record before the model hears it, so the assistant never tells
a caller "done" about something a crash could then make the owner never hear of.

A tool is a complete plugin: besides its handler it declares what it does to the call itself
(`on_call`: a CallEffect, which the call core acts on once the tool succeeded), the lines it adds
to the assistant's rules (`prompt`: PromptLines for a PromptContext) and how the owner's notice
names what it did (`notice_label`). Tools reach the call only through `ToolContext.call`, a
CallControl the call core implements.

Logs name the tool and how it ended (ok, refused, invalid arguments, timeout, failed), never its
arguments or anything that may echo them (refusals and validation errors quote what was said, and
callers say card numbers and PINs).

One reason this module is over 400 lines: it is the one place a tool is declared and run. The
declaration (Tool, ToolContext, CallEffect, PromptLines), the JSON schema derived from it and the
registry that validates, dispatches, times out and commits a call all read that same declaration,
and the tools themselves live in their own modules. If it grows, the schema shaping (`json_schema`
and its helpers, about 100 lines) is the part to move out first.
"""

from __future__ import annotations

import asyncio
import functools
import inspect
import json
import logging
import re
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, TypeVar, get_type_hints

import orjson
from pydantic import BaseModel, ValidationError

log = logging.getLogger(__name__)

Args = TypeVar("Args", bound=BaseModel)

# How a tool call ended, as logged and kept on the outcome.
OK, REFUSED, INVALID, UNKNOWN, TIMEOUT, FAILED = (
    "ok", "refused", "invalid arguments", "unknown tool", "timeout", "failed",
)  # fmt: skip
_TOOL_NAME = re.compile(r"[A-Za-z_]{1,64}")
# How long a tool with effects waits for its record to be committed before answering anyway (the
# record stays queued and is written as soon as the database allows).
RECORD_WAIT_S = 5.0
# How long a tool with effects may take before the model is answered anyway (it is never cancelled).
EFFECT_TIMEOUT_S = 30.0
_UNFINISHED: set[asyncio.Future[Any]] = set()  # tools with effects still running past their answer


class ToolError(Exception):
    """A refusal the model should relay: `message` is said (paraphrased) to the caller."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class CallEffect(StrEnum):
    """What a tool does to the call itself, declared with the tool (`on_call`)."""

    END_CALL = "end-call"  # the call ends once the assistant's goodbye is heard
    TRANSFER = "transfer"  # the caller is put on hold while the owner is rung (warm transfer)


class CallControl(Protocol):
    """What a tool may do to the call it runs in (ToolContext.call); the call core implements it."""

    def end_call(self, reason: str) -> None:
        """End the call once the assistant's goodbye has been heard."""
        ...

    def transfer_to_owner(self, summary: str) -> str | None:
        """Ring the owner with `summary` as the whisper, the caller on hold once the assistant's
        line is heard; None once started, else why it can't be (said to the caller)."""
        ...


def _no_transfer(summary: str) -> str | None:
    return "The call can't be put through from here."


@dataclass(frozen=True)
class CallHooks:
    """A CallControl made of plain functions, for a call core that has no such object of its own."""

    on_end_call: Callable[[str], None]
    on_transfer: Callable[[str], str | None] = _no_transfer

    def end_call(self, reason: str) -> None:
        self.on_end_call(reason)

    def transfer_to_owner(self, summary: str) -> str | None:
        return self.on_transfer(summary)


@dataclass
class ToolContext:
    """What a tool knows about the call it runs in. `services` holds the backends (calendar, store)."""

    call_sid: str | None
    caller_number: str | None
    is_owner: bool
    services: Any
    caller_name: str | None = None
    # This call's CallRecorder: messages are stored through it, and the outcome of a tool with
    # effects is committed through it (`commit_tool_call`) before the model is answered.
    recorder: Any = None
    call: CallControl | None = None  # the call itself (ending it); None where there is no call to act on
    logger: logging.Logger | logging.LoggerAdapter[logging.Logger] = log
    # Caller ID can be faked: reading or changing a caller's own bookings and history needs the
    # carrier's attestation (SHAKEN/STIR A) or a one-time code sent to the number (tools/identity.py).
    caller_verified: bool = False
    called_number: str | None = None  # the owner's Twilio number the caller dialled (codes come from it)
    keypad: str = ""  # keys pressed since the last entry (a code typed in is never shown to the model)
    verification: Any = None  # a code sent during this call (identity.PendingCode)
    keypad_request: str | None = None  # what the model asked the caller to type (tools/keypad.py)


@dataclass
class ToolOutcome:
    """One tool call as it happened: what the model asked, what it got back, how long it took.

    `arguments` are the validated ones, as JSON (what the caller said, normalised); the text the
    model sent only when it was not valid. `recorded` is set once the outcome went to the call's
    record, so it is written once.
    """

    name: str
    call_id: str
    arguments: str
    output: dict[str, Any]
    duration_s: float
    started_at: float = field(default_factory=time.time)  # wall clock, when the call began
    status: str = OK  # OK, REFUSED, INVALID, UNKNOWN, TIMEOUT or FAILED
    recorded: bool = False
    # What the call core is to do to the call: the tool's declared effect, only when it succeeded.
    call_effect: CallEffect | None = None

    @property
    def ok(self) -> bool:
        return bool(self.output.get("ok"))

    @property
    def output_json(self) -> str:
        return json.dumps(self.output, ensure_ascii=False, default=str)


Handler = Callable[[ToolContext, Any], Awaitable[dict[str, Any]]]


OWNER = "{owner}"  # in a tool's docstring or field descriptions: replaced by the owner's name
DEFAULT_OWNER_NAME = "the owner"


@dataclass(frozen=True)
class PromptContext:
    """What a tool's prompt lines may depend on: who the owner is and who is calling."""

    owner: str  # the owner's name as the instructions say it ("the owner" when there is none)
    is_owner: bool = False  # the owner's own call
    caller_verified: bool = False  # the caller's number is known to be theirs


@dataclass(frozen=True)
class PromptLines:
    """What one tool adds to the assistant's instructions on one call (all optional).

    The instructions keep their own rules, in their own order; a tool only fills in its part:
    """

    # A rule of its own, under this heading ("Calendar"): the `lines` of every tool with the same
    # topic form one rule, in the order the tools are declared, placed where the first one is.
    topic: str = ""
    lines: tuple[str, ...] = ()
    # What the assistant can offer a caller instead when asked for something it can't do ("book a time").
    offer: str = ""
    # What the assistant says is done only once the tool says it worked ("a meeting is booked").
    claim: str = ""
    # On the owner's calls: what it shows them about their own calendar ("get_my_agenda gives titles...").
    discloses: str = ""


PromptFunction = Callable[[PromptContext], PromptLines]


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: type[BaseModel]
    handler: Handler
    owner_only: bool = False
    timeout_s: float | None = None
    effects: bool = False  # changes the world outside the call: recorded before the model is told
    # What it does to the call itself once it succeeded (at most one effect: see ToolOutcome.call_effect).
    effects_on_call: frozenset[CallEffect] = frozenset()
    prompt: PromptFunction | None = None  # its part of the assistant's instructions
    # How the owner's notice names what it did ("Booked", "Message"); None: not in notices.
    notice_label: str | None = None

    def prompt_lines(self, context: PromptContext) -> PromptLines:
        """What this tool adds to the instructions for a call like `context`."""
        return self.prompt(context) if self.prompt is not None else PromptLines()

    def declaration(self, owner_name: str | None = None) -> dict[str, Any]:
        """The tool as session.update declares it, with `{owner}` replaced by the owner's name."""
        return {
            "type": "function",
            "name": self.name,
            "description": personalise(_unwrap(self.description), owner_name),
            "parameters": json_schema(self.parameters, owner_name=owner_name),
        }


def personalise(text: str, owner_name: str | None) -> str:
    """`text` with `{owner}` replaced by the owner's name ("the owner" when there is none)."""
    return text.replace(OWNER, (owner_name or "").strip() or DEFAULT_OWNER_NAME)


def _unwrap(text: str) -> str:
    """A docstring's lines joined into paragraphs: the line breaks were only for the source."""
    return "\n\n".join(" ".join(part.split()) for part in re.split(r"\n\s*\n", text.strip()))


# Where JSON Schema keeps subschemas. Everything else is a value (enum, const, default, examples,
# required) and is left alone: a property or a default value may well be called "title".
_SCHEMA_KEYWORDS = frozenset(
    {
        "items", "additionalItems", "unevaluatedItems", "contains",
        "additionalProperties", "unevaluatedProperties", "propertyNames",
        "not", "if", "then", "else",
    }
)  # fmt: skip
_SCHEMA_MAPS = frozenset({"properties", "patternProperties", "dependentSchemas", "$defs", "definitions"})
_SCHEMA_LISTS = frozenset({"anyOf", "allOf", "oneOf", "prefixItems"})
# Annotations pydantic adds that tell a model nothing (the property's name already says it).
_NOISE = frozenset({"title"})


def json_schema(model: type[BaseModel], owner_name: str | None = None) -> dict[str, Any]:
    """The model's JSON schema as a model reads it best: inlined (no $defs), without pydantic's
    `title` annotations, and with optional fields (`X | None = None`) as plain `X` left out of
    `required` (omitting one means the same as null, and models handle the plain shape better).
    `{owner}` in descriptions becomes the owner's name.

    Made once per model and owner's name (pydantic takes ~0.4 ms per model, ~5 ms for every call's
    tools); each caller gets its own copy."""
    return orjson.loads(_json_schema_text(model, owner_name))  # type: ignore[no-any-return]


@functools.lru_cache(maxsize=256)
def _json_schema_text(model: type[BaseModel], owner_name: str | None) -> bytes:
    return orjson.dumps(_make_json_schema(model, owner_name))


def _make_json_schema(model: type[BaseModel], owner_name: str | None) -> dict[str, Any]:
    schema = model.model_json_schema()
    definitions: dict[str, Any] = schema.pop("$defs", {})

    def subschema(node: Any, seen: tuple[str, ...]) -> Any:
        if not isinstance(node, dict):
            return node  # `true` / `false` schemas
        if "$ref" in node:
            name = node["$ref"].rsplit("/", 1)[-1]
            if name in seen:
                raise TypeError(f"{model.__name__}: recursive models can't be declared to the model")
            siblings = {key: value for key, value in node.items() if key != "$ref"}
            return subschema({**definitions[name], **siblings}, (*seen, name))
        cleaned: dict[str, Any] = {}
        for key, value in node.items():
            if key in _NOISE:
                continue
            if key == "description" and isinstance(value, str):
                cleaned[key] = personalise(value, owner_name)
            elif key in _SCHEMA_MAPS:
                cleaned[key] = {name: subschema(child, seen) for name, child in value.items()}
            elif key in _SCHEMA_LISTS:
                cleaned[key] = [subschema(child, seen) for child in value]
            elif key in _SCHEMA_KEYWORDS:
                cleaned[key] = subschema(value, seen)
            else:
                cleaned[key] = value
        if isinstance(cleaned.get("properties"), dict):
            required = set(cleaned.get("required", ()))
            cleaned["properties"] = {
                name: child if name in required else _plain_optional(child)
                for name, child in cleaned["properties"].items()
            }
        return cleaned

    cleaned = subschema(schema, ())
    cleaned.setdefault("properties", {})
    cleaned["additionalProperties"] = False
    return cleaned  # type: ignore[no-any-return]


def _plain_optional(node: Any) -> Any:
    """`{anyOf: [X, {type: null}], default: null, ...}` -> `{...X, ...}` for a field that may be left out."""
    if not isinstance(node, dict) or node.get("default", None) is not None:
        return node
    options = node.get("anyOf")
    if not isinstance(options, list):
        return node
    kept = [option for option in options if option != {"type": "null"}]
    if len(kept) != 1 or len(kept) == len(options) or not isinstance(kept[0], dict):
        return node
    merged = {key: value for key, value in node.items() if key not in ("anyOf", "default")}
    return {**kept[0], **merged}


def failure_note(exc: BaseException) -> str:
    """An exception for the log: its type and where it was raised, never its message (which may
    quote what a caller said: a card number, a PIN, a name)."""
    frames = traceback.extract_tb(exc.__traceback__)[-4:]
    where = " <- ".join(
        f"{frame.filename.rsplit('/', 1)[-1]}:{frame.lineno} in {frame.name}" for frame in reversed(frames)
    )
    return f"{type(exc).__name__}" + (f" at {where}" if where else "")


def _readable(error: ValidationError) -> str:
    parts = []
    for problem in error.errors(include_url=False):
        where = ".".join(str(part) for part in problem["loc"]) or "arguments"
        parts.append(f"{where}: {problem['msg'].removeprefix('Value error, ')}")
    return "; ".join(parts)


HandlerFunction = Callable[[ToolContext, Args], Awaitable[dict[str, Any]]]


def tool(
    *,
    owner_only: bool = False,
    timeout_s: float | None = None,
    effects: bool = False,
    on_call: Iterable[CallEffect] = (),
    prompt: PromptFunction | None = None,
    notice_label: str | None = None,
) -> Callable[[HandlerFunction[Args]], Tool]:
    """Declare a tool: `async def name(ctx: ToolContext, args: SomeArgs) -> dict` with a docstring
    (the model reads it); the decorated name becomes the Tool, for a registry to `add`.

    `effects=True` for a tool that changes the world outside the call (books, cancels, takes a
    message): its outcome is committed to the call's record before the model is answered.
    `on_call`: what it does to the call itself once it succeeded (CallEffect.END_CALL).
    `prompt`: its lines in the assistant's instructions. `notice_label`: how the owner's notice
    names what it did.
    """
    effects_on_call = frozenset(on_call)

    def declare(function: HandlerFunction[Args]) -> Tool:
        hints = get_type_hints(function)
        parameters = [name for name in inspect.signature(function).parameters]
        if len(parameters) != 2 or not issubclass(hints.get(parameters[1], object), BaseModel):
            raise TypeError(f"{function.__name__}: expected (ctx: ToolContext, args: <pydantic model>)")
        description = inspect.cleandoc(function.__doc__ or "")
        if not description:
            raise TypeError(f"{function.__name__}: a tool needs a docstring (the model reads it)")
        if len(effects_on_call) > 1:
            # An outcome names the one effect the call core is to act on.
            raise TypeError(f"{function.__name__}: a tool has at most one effect on the call")
        return Tool(
            name=function.__name__,
            description=description,
            parameters=hints[parameters[1]],
            handler=function,
            owner_only=owner_only,
            timeout_s=timeout_s,
            effects=effects,
            effects_on_call=effects_on_call,
            prompt=prompt,
            notice_label=notice_label,
        )

    return declare


class ToolRegistry:
    def __init__(
        self, default_timeout_s: float = 8.0, owner_name: str | None = None, tools: Iterable[Tool] = ()
    ) -> None:
        self.default_timeout_s = default_timeout_s
        self.owner_name = owner_name  # put in the declarations unless they are asked for another
        self._tools: dict[str, Tool] = {}
        self.add(*tools)

    def add(self, *tools: Tool) -> None:
        """Offer these tools (declared with `tool`), after those already here."""
        for declared in tools:
            if declared.name in self._tools:
                raise ValueError(f"tool {declared.name!r} declared twice")
            self._tools[declared.name] = declared

    def tool(
        self,
        *,
        owner_only: bool = False,
        timeout_s: float | None = None,
        effects: bool = False,
        on_call: Iterable[CallEffect] = (),
        prompt: PromptFunction | None = None,
        notice_label: str | None = None,
    ) -> Callable[[HandlerFunction[Args]], Tool]:
        """Declare a tool (see `tool`) straight into this registry."""
        declare = tool(
            owner_only=owner_only,
            timeout_s=timeout_s,
            effects=effects,
            on_call=on_call,
            prompt=prompt,
            notice_label=notice_label,
        )

        def register(function: HandlerFunction[Args]) -> Tool:
            declared = declare(function)
            self.add(declared)
            return declared

        return register

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> Tool | None:
        return self._tools.get(name)

    def for_call(self, *, owner: bool) -> list[Tool]:
        """The tools a call offers, in declaration order: owner-only ones on the owner's own calls only."""
        return [declared for declared in self._tools.values() if owner or not declared.owner_only]

    def call_effects(self, name: str) -> frozenset[CallEffect]:
        """What the tool called `name` does to the call once it succeeded (nothing for an unknown name)."""
        declared = self._tools.get(name)
        return declared.effects_on_call if declared is not None else frozenset()

    def notice_label(self, name: str) -> str | None:
        """How the owner's notice names what the tool called `name` did, or None (not in notices)."""
        declared = self._tools.get(name)
        return declared.notice_label if declared is not None else None

    def declarations(self, *, owner: bool, owner_name: str | None = None) -> list[dict[str, Any]]:
        """The `tools` list for session.update; owner-only tools only on the owner's own calls.

        `owner_name` (default: the registry's, else "the owner") replaces `{owner}` in the
        descriptions, so the model reads "when Dana is free", not "when the owner is free".
        """
        name = owner_name or self.owner_name
        return [declared.declaration(name) for declared in self.for_call(owner=owner)]

    async def call(self, name: str, call_id: str, arguments: str, ctx: ToolContext) -> ToolOutcome:
        """Run one tool call. Always returns an outcome; never raises (except cancellation).

        For a tool with effects the outcome is committed to the call's record first (waiting at most
        RECORD_WAIT_S), so what the caller is told is done is in the record even if the process dies.
        """
        started, started_wall = time.monotonic(), time.time()
        declared = self._tools.get(name)
        if declared is not None and declared.owner_only and not ctx.is_owner:
            declared = None
        output, kept, status = await self._run(declared, name, arguments, ctx)
        outcome = ToolOutcome(
            name, call_id, kept, output, time.monotonic() - started, started_wall, status=status
        )
        if declared is not None and status == OK and outcome.ok:
            # At most one (see `tool`): what the call core is to do now that the tool succeeded.
            outcome.call_effect = next(iter(declared.effects_on_call), None)
        # The outcome only: a refusal or a validation error may quote the arguments. (An undeclared
        # name is the model's own text: shown only when it looks like a tool's name.)
        shown = name if declared is not None or _TOOL_NAME.fullmatch(name) else "(an undeclared name)"
        ctx.logger.info("tool %s %s in %.0f ms", shown, status, outcome.duration_s * 1000)
        if declared is not None and declared.effects and ctx.recorder is not None:
            await self._commit(outcome, ctx)
        return outcome

    async def _commit(self, outcome: ToolOutcome, ctx: ToolContext) -> None:
        try:
            async with asyncio.timeout(RECORD_WAIT_S):
                # Shielded: a call ending meanwhile must not cancel the write itself.
                await asyncio.shield(ctx.recorder.commit_tool_call(outcome))
        except TimeoutError:
            ctx.logger.error(
                "tool %s: its record was not committed within %.0f s (still queued)",
                outcome.name,
                RECORD_WAIT_S,
            )
        except Exception as exc:
            ctx.logger.error(
                "tool %s: its record could not be committed: %s", outcome.name, failure_note(exc)
            )

    async def _run(
        self, declared: Tool | None, name: str, arguments: str, ctx: ToolContext
    ) -> tuple[dict[str, Any], str, str]:
        """(output for the model, arguments to keep, status)."""
        if declared is None:
            return (
                {"ok": False, "error": f"There is no tool called {name!r}. Don't call it again."},
                arguments,
                UNKNOWN,
            )
        try:
            raw = json.loads(arguments) if arguments.strip() else {}
        except (ValueError, RecursionError):
            error = "The arguments were not valid JSON. Call the tool again correctly."
            return {"ok": False, "error": error}, arguments, INVALID
        try:
            args = declared.parameters.model_validate(raw)
        except ValidationError as exc:
            error = (
                f"Invalid arguments ({_readable(exc)}). Ask the caller if something is unclear, then call "
                "the tool again."
            )
            return {"ok": False, "error": error}, arguments, INVALID
        # What is kept is what the tool was given: validated and normalised (see caller_text).
        kept = args.model_dump_json(exclude_unset=True)
        timeout = declared.timeout_s or self.default_timeout_s
        try:
            if declared.effects:
                # A booking, a move, a cancellation or a message is never cut off mid-write (the
                # calendar may have it already while its answer is on the way): it gets longer, and
                # past that it carries on unawaited while the caller is told it may still go through.
                running = asyncio.ensure_future(declared.handler(ctx, args))
                _UNFINISHED.add(running)
                running.add_done_callback(_UNFINISHED.discard)
                result = await asyncio.wait_for(asyncio.shield(running), max(timeout, EFFECT_TIMEOUT_S))
            else:
                async with asyncio.timeout(timeout):
                    result = await declared.handler(ctx, args)
        except ToolError as refusal:
            return {"ok": False, "error": refusal.message, **refusal.details}, kept, REFUSED
        except TimeoutError:
            ctx.logger.warning("tool %s timed out after %.1fs", name, timeout)
            error = (
                "It is taking much longer than it should and may still go through. Don't try it again: "
                "apologise, and say it will be confirmed."
                if declared.effects
                else "That took too long and was stopped. Apologise, say it didn't go through, and offer to "
                "take a message instead."
            )
            return {"ok": False, "error": error}, kept, TIMEOUT
        except Exception as exc:
            ctx.logger.error("tool %s failed: %s", name, failure_note(exc))
            return (
                {
                    "ok": False,
                    "error": "Something went wrong on our side and it didn't go through. Apologise and offer "
                    "to take a message instead.",
                },
                kept,
                FAILED,
            )
        return {"ok": True, **result}, kept, OK
