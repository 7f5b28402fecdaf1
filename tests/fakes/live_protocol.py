"""Wire-level rules of OpenAI GPT-Live (`/v1/live/sessions`), as the fake Live server enforces them.

Validation uses the SDK's own types (openai 3.57.0, `openai.types.live`): a client frame must be a
member of the `ClientEvent` union in strict mode with no key the SDK's models don't declare; a
server frame must be a member of `ServerEvent`; the Responses streaming events nested in
`response.event` must be members of the Responses API's `ResponseStreamEvent` union. Error wording
and the unknown-key walk are shared with the Realtime fake (protocol.py).
"""

from __future__ import annotations

from typing import Annotated, Any

from openai.types.live import ClientEvent, ServerEvent
from openai.types.responses import ResponseStreamEvent
from pydantic import Field, TypeAdapter, ValidationError

from tests.fakes.protocol import (
    ClientEventProblem,
    first_unknown_key,
    problem_from_validation_error,
    quote_list,
)

# A real discriminator gives one precise error instead of one per union member (see protocol.py).
LIVE_CLIENT_EVENTS: TypeAdapter[Any] = TypeAdapter(Annotated[ClientEvent, Field(discriminator="type")])
LIVE_SERVER_EVENTS: TypeAdapter[Any] = TypeAdapter(Annotated[ServerEvent, Field(discriminator="type")])
RESPONSES_STREAM_EVENTS: TypeAdapter[Any] = TypeAdapter(
    Annotated[ResponseStreamEvent, Field(discriminator="type")]
)

# The members of `openai.types.live.client_event.ClientEvent`, in its order.
LIVE_CLIENT_EVENT_TYPES: tuple[str, ...] = (
    "session.start",
    "session.update",
    "session.input_audio.append",
    "session.input_audio.mute",
    "session.input_audio.unmute",
    "session.output_audio.fixture.play",
    "session.instructions.append",
    "session.thinking.append",
    "session.commentary.append",
    "decision.create",
    "decision.item.create",
    "decision.item.delete",
    "response.item.create",
    "response.create",
    "session.close",
)
LIVE_MODELS = ("gpt-live-1", "gpt-live-1.1")  # SessionConfig.model's literals


def validate_live_client_event(data: dict[str, Any]) -> ClientEventProblem | None:
    """Check one parsed client frame against the SDK's Live client events, unknown keys included
    (the SDK's models accept extras; the service answers `unknown_parameter`, Error.code's example)."""
    event_type = data.get("type")
    if event_type is None:
        return ClientEventProblem("missing_required_parameter", "Missing required parameter: 'type'.", "type")
    if event_type not in LIVE_CLIENT_EVENT_TYPES:
        supported = quote_list(list(LIVE_CLIENT_EVENT_TYPES))
        message = f"Invalid value: '{event_type}'. Supported values are: {supported}."
        return ClientEventProblem("invalid_value", message, "type")
    try:
        # strict: the service does not coerce "12" into 12 the way lax pydantic would
        model = LIVE_CLIENT_EVENTS.validate_python(data, strict=True)
    except ValidationError as exc:
        return problem_from_validation_error(exc)
    extra = first_unknown_key(model)
    if extra is not None:
        return ClientEventProblem("unknown_parameter", f"Unknown parameter: '{extra}'.", extra)
    return None


def _first_error(exc: ValidationError) -> str:
    first = exc.errors(include_url=False)[0]
    return f"{first['type']} at {'.'.join(map(str, first['loc']))}: {first['msg']}"


def validate_live_server_event(event: dict[str, Any]) -> str | None:
    """None if the event is a valid Live `ServerEvent` (and, for `response.event`, its nested event a
    valid Responses streaming event), else a short reason."""
    try:
        LIVE_SERVER_EVENTS.validate_python(event, strict=True)
    except ValidationError as exc:
        return _first_error(exc)
    if event.get("type") == "response.event":
        try:
            RESPONSES_STREAM_EVENTS.validate_python(event["event"])
        except ValidationError as exc:
            return f"nested {event['event'].get('type')}: {_first_error(exc)}"
    return None


def live_error(
    code: str, message: str, *, param: str | None = None, client_event_id: str | None = None
) -> dict[str, Any]:
    """The `error` object of a Live `error` event (`openai.types.live.error.Error`)."""
    error: dict[str, Any] = {"code": code, "message": message, "type": "invalid_request_error"}
    if param is not None:
        error["param"] = param
    if client_event_id is not None:
        error["client_event_id"] = client_event_id
    return error
