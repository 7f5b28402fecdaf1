"""What the fake GPT-Live model says and delegates: a script consumed in order.

A Live session is full duplex and server-driven (no client event creates a model response), so the
model "decides" to speak on three occasions only, each taking the next `LiveReply`:

* a `session.commentary.append` ("Provide context the Live model can communicate to the user":
  the SDK docstring; callassist uses it to have the greeting and its notes said);
* the end of a caller turn (the fake's energy VAD);
* never on `session.instructions.append` or `session.thinking.append` (context only: "does not
  directly request speech", ThinkingAppendEvent.content).

A reply may delegate a task to the Responses backend (`Delegate`): the backend calls the tools
named by `UseTool`, with arguments built from the function schemas declared in
`session.delegation.responses.tools` (tool_calls.py), and once the client answered every call and
sent `response.create`, writes its final text, which the Live model then says.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeAlias

from tests.fakes.script import DEFAULT_SUMMARY, Say, UseTool

# The backend's final text, from the (call name, output) pairs its tool calls were answered with.
ResultText: TypeAlias = str | Callable[[list[tuple[str, str]]], str]


@dataclass
class Delegate:
    """The Live model hands a task to the Responses backend (SessionConfig.delegation `responses`)."""

    calls: list[UseTool] = field(default_factory=list)
    result: ResultText = "Done."
    spoken: Say | None = None  # how the Live model says the result; None: Say(result text)
    fail: bool = False  # the backend response fails (response.failed) instead of calling tools

    def result_text(self, outputs: list[tuple[str, str]]) -> str:
        return self.result(outputs) if callable(self.result) else self.result


@dataclass
class LiveReply:
    """What the Live model says now (an acknowledgement if it also delegates), and the task it
    delegates, if any."""

    say: list[Say] = field(default_factory=list)
    delegate: Delegate | None = None


def _default_reply() -> LiveReply:
    return LiveReply([Say("Okay.")])


@dataclass
class LiveScript:
    replies: list[LiveReply] = field(default_factory=list)
    default_reply: LiveReply = field(default_factory=_default_reply)
    transcripts: list[str] = field(default_factory=list)
    default_transcript: str = "(caller speech)"
    # The text of a backend response the client asked for with no delegation waiting (callassist's
    # end-of-call summary).
    summary: str = DEFAULT_SUMMARY
    # The model stops its audio when the caller talks over it (full duplex: "the model handles
    # interruptions itself"); False: it talks on (a backchannel it chose to ignore).
    yields_to_caller: bool = True
    _reply_cursor: int = field(default=0, init=False, repr=False)
    _transcript_cursor: int = field(default=0, init=False, repr=False)

    def next_reply(self) -> LiveReply:
        if self._reply_cursor < len(self.replies):
            self._reply_cursor += 1
            return self.replies[self._reply_cursor - 1]
        return self.default_reply

    def next_transcript(self) -> str:
        if self._transcript_cursor < len(self.transcripts):
            self._transcript_cursor += 1
            return self.transcripts[self._transcript_cursor - 1]
        return self.default_transcript

    @property
    def replies_used(self) -> int:
        return self._reply_cursor


def output_of(outputs: list[tuple[str, str]], name: str) -> dict[str, object]:
    """The parsed output of the newest call of `name` (for a `result` callable)."""
    for call_name, output in reversed(outputs):
        if call_name == name:
            try:
                parsed = json.loads(output)
            except ValueError:
                return {"raw": output}
            return parsed if isinstance(parsed, dict) else {"value": parsed}
    return {}
