"""The owner's side of a `<Dial>`: what the simulated owner's phone does, and the screening TwiML
(`<Number url>`) Twilio runs on the owner's leg once it answers, before bridging.

Twilio's documented behaviour, followed strictly here:
- `<Number url>`: the TwiML is run "on the called party's end, after they answer, but before the
  parties are connected"; it may `<Say>`/`<Play>` privately and offer a chance to decline with
  `<Gather>` and `<Hangup>`; with answerOnBridge the caller keeps hearing ringing meanwhile; it may
  not contain `<Dial>` (https://www.twilio.com/docs/voice/twiml/number#url). Twilio requests it
  like any webhook: signed, POST by default, with the owner leg's own CallSid and the caller's as
  ParentCallSid (https://www.twilio.com/docs/voice/twiml/twilio_request).
- `<Gather>`: digits go to its `action` (`Digits`), whose TwiML replaces the rest; no input within
  `timeout` falls through to the next verb unless actionOnEmptyResult
  (https://www.twilio.com/docs/voice/twiml/gather).
- The screening TwiML running out of verbs bridges the legs: DialCallStatus `completed`. When it
  (or the owner) hangs up first, the legs are never bridged. Twilio's pages don't name that Dial
  status; its call-screening how-to (https://www.twilio.com/docs/howto/callscreening) moves on to
  the next number when the status is not `completed`, so `no-answer` is reported, with
  DialBridged=false (https://www.twilio.com/docs/voice/twiml/dial#action).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urljoin

from callassist.simulator import twiml as tw
from callassist.simulator.errors import WebhookError
from callassist.simulator.ids import new_sid
from callassist.simulator.record import CallRecord

# The status a <Dial> gets when the owner's leg answered but was never bridged (see above).
UNBRIDGED_STATUS = "no-answer"
MAX_SCREEN_DOCUMENTS = 10  # redirects and Gather actions on the owner's leg


class Owner(StrEnum):
    """What the owner's phone does when rung."""

    no_answer = "no-answer"  # rings out
    busy = "busy"
    failed = "failed"  # can't be reached (Twilio's `failed`: e.g. a number that doesn't exist)
    press_1 = "press-1"  # answers, hears the whisper, presses 1 (or just talks, unscreened)
    press_2 = "press-2"
    no_key = "no-key"  # answers and says nothing, presses nothing
    hang_up = "hang-up"  # answers and hangs up during the whisper
    voicemail = "voicemail"  # the phone's voicemail (or screening bot) answers and says nothing

    @property
    def answers(self) -> bool:
        return self not in (Owner.no_answer, Owner.busy, Owner.failed)

    @property
    def digit(self) -> str | None:
        return {Owner.press_1: "1", Owner.press_2: "2"}.get(self)


@dataclass(frozen=True, slots=True)
class DialOutcome:
    status: str  # DialCallStatus
    bridged: bool
    dial_call_sid: str


Fetch = Callable[[str, str, dict[str, str], str], Awaitable[list[tw.Verb]]]


@dataclass(frozen=True, slots=True)
class GatherOutcome:
    """What the owner did at a `<Gather>`: hung up, or pressed a key whose `action` is to be requested
    (`next_request`); neither means no input: Twilio goes on with the next verb."""

    hung_up: bool = False
    next_request: tuple[str, str, dict[str, str]] | None = None


def owner_gather(
    record: CallRecord, verb: tw.Gather, url: str, leg: dict[str, str], owner: Owner
) -> GatherOutcome:
    """The owner's answer to a `<Gather>` on their leg (a screened `<Number url>` leg, or a call the
    REST API placed to them). Twilio's <Gather> page (https://www.twilio.com/docs/voice/twiml/gather):
    the digits go to `action` as `Digits` (with the leg's own parameters), and that answer's TwiML
    replaces the rest; no input within `timeout` goes on with the next verb, unless
    actionOnEmptyResult asks for the action anyway (Digits is then sent empty)."""
    for prompt in verb.prompts:
        if isinstance(prompt, tw.Say):
            record._emit("owner_heard", text=prompt.text)
    if owner is Owner.hang_up:
        record._emit("owner_leg", outcome="the owner hung up during the whisper")
        return GatherOutcome(hung_up=True)
    digit = owner.digit
    if digit is not None and verb.num_digits is not None and verb.num_digits > 1:
        record._warn(f"<Gather numDigits={verb.num_digits}>: the simulated owner presses one key only")
    if digit is not None and verb.action:
        record._emit("owner_pressed", digit=digit)
        return GatherOutcome(next_request=(urljoin(url, verb.action), verb.method, {**leg, "Digits": digit}))
    if digit is None and verb.action_on_empty_result and verb.action:
        return GatherOutcome(next_request=(urljoin(url, verb.action), verb.method, {**leg, "Digits": ""}))
    if digit is not None:
        # A digit with no action goes back to the same document's URL (Twilio's <Gather> page);
        # not needed by callassist, so it is treated like no input: fall through.
        record._warn("<Gather> without action: the simulator treats the key as no input")
    return GatherOutcome()


async def ring(call: CallRecord, verb: tw.Dial, doc_url: str, owner: Owner, fetch: Fetch) -> DialOutcome:
    """Ring the `<Dial>`'s first `<Number>` and play the owner's side to the Dial's outcome."""
    dial_sid = new_sid("CA")
    if not verb.targets or not owner.answers:
        status = "no-answer"
        if verb.targets and owner in (Owner.busy, Owner.failed):
            status = str(owner)
        return DialOutcome(status, False, dial_sid)
    number = verb.numbers[0] if verb.numbers else None
    if number is None or number.url is None:
        # No screening: whoever answers (the owner, their voicemail) is bridged at once.
        return DialOutcome("completed", True, dial_sid)
    leg = {
        "AccountSid": call.account_sid,
        "ApiVersion": "2010-04-01",
        "CallSid": dial_sid,
        "ParentCallSid": call.call_sid,
        "CallStatus": "in-progress",
        "Direction": "outbound-dial",
        "From": call.from_number,
        "Caller": call.from_number,
        "To": number.number,
        "Called": number.number,
    }
    bridged = await _screen(call, urljoin(doc_url, number.url), number.method, leg, owner, fetch)
    return DialOutcome("completed" if bridged else UNBRIDGED_STATUS, bridged, dial_sid)


async def _screen(
    call: CallRecord, url: str, method: str, leg: dict[str, str], owner: Owner, fetch: Fetch
) -> bool:
    """Run the screening TwiML on the owner's leg: True if it ran out of verbs (the legs bridge)."""
    verbs = await fetch(url, method, leg, "screening TwiML (<Number url>)")
    for _ in range(MAX_SCREEN_DOCUMENTS):
        next_request: tuple[str, str, dict[str, str]] | None = None
        for verb in verbs:
            call._emit("owner_verb", verb=verb.describe())
            if isinstance(verb, tw.Dial):
                raise WebhookError(
                    f"screening TwiML {url} contains <Dial>: Twilio does not allow it "
                    "(https://www.twilio.com/docs/voice/twiml/number#url)"
                )
            if isinstance(verb, tw.Say):
                call._emit("owner_heard", text=verb.text)
            elif isinstance(verb, tw.Hangup | tw.Reject):
                call._emit("owner_leg", outcome="hung up by the screening TwiML")
                return False
            elif isinstance(verb, tw.Redirect):
                next_request = (urljoin(url, verb.url), verb.method, leg)
                break
            elif isinstance(verb, tw.Gather):
                gathered = owner_gather(call, verb, url, leg, owner)
                if gathered.hung_up:
                    return False
                if gathered.next_request is not None:
                    next_request = gathered.next_request
                    break
            elif isinstance(verb, tw.Connect | tw.Unsupported):
                call._warn(f"{verb.describe()} on the owner's screened leg is not simulated; skipped")
        if next_request is None:
            if owner is Owner.hang_up:
                return False  # the owner hung up before the legs could bridge
            call._emit("owner_leg", outcome="bridged")
            return True
        url, method, params = next_request
        verbs = await fetch(url, method, params, "screening TwiML request")
    raise WebhookError(f"the owner's screened leg fetched more than {MAX_SCREEN_DOCUMENTS} documents")
