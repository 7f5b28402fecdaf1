"""Parse the TwiML a voice webhook returns into the verbs the simulated Twilio follows.

Only the voice verbs callassist can emit are modelled in detail (`<Dial>` with `<Number>` or
`<Conference>`, `<Connect><Stream>`, `<Say>`, `<Pause>`, `<Gather>`, `<Hangup>`, `<Reject>`,
`<Redirect>`); anything else becomes `Unsupported` so the caller can record it instead of failing.
Reference: https://www.twilio.com/docs/voice/twiml/connect, https://www.twilio.com/docs/voice/twiml/stream,
https://www.twilio.com/docs/voice/twiml/dial and https://www.twilio.com/docs/voice/twiml/conference.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field

from callassist.simulator.voicemail import Record, parse_record


class TwimlError(ValueError):
    """The webhook answer is not a TwiML `<Response>` document (Twilio error 12100)."""


@dataclass(frozen=True, slots=True)
class Say:
    text: str
    voice: str | None = None

    def describe(self) -> str:
        return f"Say {self.text!r}"


@dataclass(frozen=True, slots=True)
class Pause:
    length: float = 1.0

    def describe(self) -> str:
        return f"Pause {self.length:g}s"


@dataclass(frozen=True, slots=True)
class Hangup:
    def describe(self) -> str:
        return "Hangup"


@dataclass(frozen=True, slots=True)
class Reject:
    reason: str = "rejected"

    def describe(self) -> str:
        return f"Reject ({self.reason})"


@dataclass(frozen=True, slots=True)
class Redirect:
    url: str
    method: str = "POST"

    def describe(self) -> str:
        return f"Redirect {self.url}"


@dataclass(frozen=True, slots=True)
class Number:
    """A `<Number>` of a `<Dial>`; `url` is the screening TwiML run on that leg once it answers
    (https://www.twilio.com/docs/voice/twiml/number#url)."""

    number: str
    url: str | None = None
    method: str = "POST"


@dataclass(frozen=True, slots=True)
class Conference:
    """A `<Conference>` of a `<Dial>`: a named room on the account
    (https://www.twilio.com/docs/voice/twiml/conference). Defaults as that page gives them:
    startConferenceOnEnter true, endConferenceOnExit false, beep true."""

    name: str
    start_conference_on_enter: bool = True
    end_conference_on_exit: bool = False
    beep: str = "true"
    wait_url: str | None = None
    problems: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Dial:
    targets: tuple[str, ...]
    timeout: int = 30
    action: str | None = None
    method: str = "POST"
    answer_on_bridge: bool = False
    numbers: tuple[Number, ...] = ()
    conference: Conference | None = None

    def describe(self) -> str:
        return f"Dial {', '.join(self.targets) or '(nobody)'} timeout={self.timeout}s"


@dataclass(frozen=True, slots=True)
class Stream:
    url: str
    name: str | None = None
    parameters: dict[str, str] = field(default_factory=dict)
    # Where Twilio reports stream-started / stream-stopped / stream-error (TwiML <Stream> page).
    status_callback: str | None = None
    status_callback_method: str = "POST"


@dataclass(frozen=True, slots=True)
class Connect:
    stream: Stream | None
    action: str | None = None
    method: str = "POST"

    def describe(self) -> str:
        if self.stream is None:
            return "Connect (no <Stream>)"
        return f"Connect/Stream {self.stream.url}"


@dataclass(frozen=True, slots=True)
class Gather:
    """`<Gather>` (DTMF only is simulated): https://www.twilio.com/docs/voice/twiml/gather."""

    num_digits: int | None = None
    timeout: int = 5
    action: str | None = None
    method: str = "POST"
    action_on_empty_result: bool = False
    finish_on_key: str = "#"
    prompts: tuple[Say | Pause, ...] = ()

    def describe(self) -> str:
        return f"Gather numDigits={self.num_digits} timeout={self.timeout}s"


@dataclass(frozen=True, slots=True)
class Unsupported:
    tag: str

    def describe(self) -> str:
        return f"<{self.tag}> (not simulated)"


Verb = Say | Pause | Hangup | Reject | Redirect | Dial | Connect | Gather | Record | Unsupported


def _bool(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value is not None else default
    except ValueError:
        return default


def _float(value: str | None, default: float) -> float:
    try:
        return float(value) if value is not None else default
    except ValueError:
        return default


def _method(value: str | None) -> str:
    return (value or "POST").strip().upper()


def _flag(element: ET.Element, name: str, default: bool, code: int, problems: list[str]) -> bool:
    value = element.get(name)
    if value is None:
        return default
    if value not in ("true", "false"):
        # Twilio: "<name> must be either "true" or "false"" (errors 13231 / 13232,
        # https://www.twilio.com/docs/api/errors/13231); the default then applies.
        problems.append(f'<Conference {name}={value!r}>: must be "true" or "false" (Twilio {code})')
        return default
    return value == "true"


def _conference(element: ET.Element) -> Conference:
    problems: list[str] = []
    name = (element.text or "").strip()
    if not name:
        problems.append("<Conference> without a room name")
    return Conference(
        name=name,
        start_conference_on_enter=_flag(element, "startConferenceOnEnter", True, 13232, problems),
        end_conference_on_exit=_flag(element, "endConferenceOnExit", False, 13231, problems),
        beep=element.get("beep", "true"),
        wait_url=element.get("waitUrl"),
        problems=tuple(problems),
    )


def _dial(element: ET.Element) -> Dial:
    targets: list[str] = []
    numbers: list[Number] = []
    conference: Conference | None = None
    # <Dial>+1555...</Dial> is shorthand for a single <Number>.
    if element.text and element.text.strip():
        targets.append(element.text.strip())
        numbers.append(Number(element.text.strip()))
    for child in element:
        text = (child.text or "").strip()
        targets.append(text if child.tag == "Number" else f"{child.tag}:{text}")
        if child.tag == "Number":
            numbers.append(Number(text, child.get("url") or None, _method(child.get("method"))))
        elif child.tag == "Conference" and conference is None:
            conference = _conference(child)
    return Dial(
        targets=tuple(targets),
        timeout=_int(element.get("timeout"), 30),
        action=element.get("action"),
        method=_method(element.get("method")),
        answer_on_bridge=_bool(element.get("answerOnBridge")),
        numbers=tuple(numbers),
        conference=conference,
    )


def _gather(element: ET.Element) -> Gather:
    prompts: list[Say | Pause] = []
    for child in element:
        if child.tag == "Say":
            prompts.append(Say(text=(child.text or "").strip(), voice=child.get("voice")))
        elif child.tag == "Pause":
            prompts.append(Pause(length=_float(child.get("length"), 1.0)))
        elif child.tag == "Play":
            continue  # audio the simulated owner doesn't need to hear
        else:
            # Only <Say>, <Play> and <Pause> may nest in <Gather> (Twilio's <Gather> page).
            raise TwimlError(f"<{child.tag}> inside <Gather>: only <Say>, <Play> and <Pause> may nest")
    digits = element.get("numDigits")
    return Gather(
        num_digits=_int(digits, 0) or None if digits is not None else None,
        timeout=_int(element.get("timeout"), 5),
        action=element.get("action"),
        method=_method(element.get("method")),
        action_on_empty_result=_bool(element.get("actionOnEmptyResult")),
        finish_on_key=element.get("finishOnKey", "#"),
        prompts=tuple(prompts),
    )


def _connect(element: ET.Element) -> Connect:
    stream: Stream | None = None
    for child in element:
        if child.tag == "Stream" and stream is None:
            parameters = {
                param.get("name", ""): param.get("value", "")
                for param in child
                if param.tag == "Parameter" and param.get("name")
            }
            stream = Stream(
                url=child.get("url", ""),
                name=child.get("name"),
                parameters=parameters,
                status_callback=child.get("statusCallback") or None,
                status_callback_method=_method(child.get("statusCallbackMethod")),
            )
    return Connect(stream=stream, action=element.get("action"), method=_method(element.get("method")))


def parse_twiml(text: str) -> list[Verb]:
    """Parse a TwiML document into its verbs, in order."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise TwimlError(f"not XML ({exc}): {text[:200]!r}") from None
    if root.tag != "Response":
        raise TwimlError(f"root element is <{root.tag}>, expected <Response>")
    verbs: list[Verb] = []
    for element in root:
        tag = element.tag
        if tag == "Dial":
            verbs.append(_dial(element))
        elif tag == "Connect":
            verbs.append(_connect(element))
        elif tag == "Say":
            verbs.append(Say(text=(element.text or "").strip(), voice=element.get("voice")))
        elif tag == "Pause":
            verbs.append(Pause(length=_float(element.get("length"), 1.0)))
        elif tag == "Gather":
            verbs.append(_gather(element))
        elif tag == "Hangup":
            verbs.append(Hangup())
        elif tag == "Reject":
            verbs.append(Reject(reason=element.get("reason", "rejected")))
        elif tag == "Record":  # callassist.simulator.voicemail
            verbs.append(parse_record(element))
        elif tag == "Redirect":
            verbs.append(Redirect(url=(element.text or "").strip(), method=_method(element.get("method"))))
        else:
            verbs.append(Unsupported(tag=tag))
    return verbs
