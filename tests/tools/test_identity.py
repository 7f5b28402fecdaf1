"""Confirming a caller's number with a texted code: sent through Twilio's Messages API (a local
stand-in), checked with bounded tries, and the gate it opens on the caller's own bookings."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import AsyncIterator

import pytest

from callassist.notify.sms import TwilioSms
from callassist.tools import all_tools
from callassist.tools.identity import FAILURES_PER_NUMBER_PER_DAY, SENDS_PER_NUMBER_PER_DAY, CodeLimits
from callassist.tools.registry import ToolContext, ToolRegistry
from tests.support.twilio_rest import ACCOUNT_SID, AUTH_TOKEN, TwilioRestStandIn

CALLER = "+15551230000"
OUR_NUMBER = "+15559870000"


class Services:
    owner_name = "Dana"
    booking = None

    def __init__(self, codes: TwilioSms | None, limits: CodeLimits | None = None) -> None:
        self.codes = codes
        self.code_limits = limits or CodeLimits()
        self.history_asked: list[str] = []

    async def caller_history(self, number: str) -> list[str]:
        self.history_asked.append(number)
        return ["Nov 20: asked to move Thursday's visit"]


@pytest.fixture
async def twilio() -> AsyncIterator[TwilioRestStandIn]:
    async with TwilioRestStandIn() as stand_in:
        yield stand_in


@pytest.fixture
async def sms(twilio: TwilioRestStandIn) -> AsyncIterator[TwilioSms]:
    sender = TwilioSms(ACCOUNT_SID, AUTH_TOKEN, from_number=None, api_base_url=twilio.base_url)
    yield sender
    await sender.aclose()


def context(services: Services, call_sid: str = "CA1", **values: object) -> ToolContext:
    return ToolContext(
        call_sid=call_sid, caller_number=CALLER, is_owner=False, services=services, called_number=OUR_NUMBER,
        **values,  # type: ignore[arg-type]
    )  # fmt: skip


async def call(tools: ToolRegistry, ctx: ToolContext, name: str, arguments: dict[str, object]) -> dict:
    outcome = await tools.call(name, f"call_{name}", json.dumps(arguments), ctx)
    return outcome.output


async def test_a_texted_code_read_back_confirms_the_number(twilio: TwilioRestStandIn, sms: TwilioSms) -> None:
    tools, services = all_tools(), Services(sms)
    ctx = context(services)
    refused = await call(tools, ctx, "find_my_events", {})
    assert refused["ok"] is False and refused["needs_verification"] is True
    assert "send_verification_code" in refused["error"]

    sent = await call(tools, ctx, "send_verification_code", {})
    assert sent["ok"] is True and "texted" in sent["say"]
    [message] = await twilio.wait_for_messages(1)
    assert (message.to, message.from_) == (CALLER, OUR_NUMBER)  # from the number they dialled
    code = re.findall(r"\d{6}", message.body)[-1]
    assert code not in json.dumps(sent)  # the model never sees the code

    spoken = " ".join(code)  # "4 8 2 9 1 3", as a transcript may have it
    confirmed = await call(tools, ctx, "check_verification_code", {"code": spoken})
    assert confirmed["ok"] is True and confirmed["earlier_calls"] == [
        "Nov 20: asked to move Thursday's visit"
    ]
    assert ctx.caller_verified and services.history_asked == [CALLER]


async def test_a_code_typed_on_the_keypad_counts_too(sms: TwilioSms, twilio: TwilioRestStandIn) -> None:
    tools, ctx = all_tools(), context(Services(sms))
    await call(tools, ctx, "send_verification_code", {})
    [message] = await twilio.wait_for_messages(1)
    ctx.keypad = re.findall(r"\d{6}", message.body)[-1]  # what the call collects from DTMF
    assert (await call(tools, ctx, "check_verification_code", {}))["ok"] is True
    assert ctx.keypad == ""


async def test_wrong_codes_have_three_tries_and_two_texts_at_most(
    sms: TwilioSms, twilio: TwilioRestStandIn
) -> None:
    tools, ctx = all_tools(), context(Services(sms))
    await call(tools, ctx, "send_verification_code", {})
    [message] = await twilio.wait_for_messages(1)
    code = re.findall(r"\d{6}", message.body)[-1]
    wrong = "000000" if code != "000000" else "111111"
    for _ in range(3):
        answer = await call(tools, ctx, "check_verification_code", {"code": wrong})
        assert answer["ok"] is False
    assert "last try" in answer["error"]
    # Even the right code is void now.
    assert (await call(tools, ctx, "check_verification_code", {"code": code}))["ok"] is False
    assert not ctx.caller_verified
    assert (await call(tools, ctx, "send_verification_code", {}))["ok"] is True
    refused = await call(tools, ctx, "send_verification_code", {})
    assert refused["ok"] is False and len(twilio.messages) == 2


async def test_without_twilio_or_a_number_no_code_is_offered() -> None:
    tools = all_tools()
    no_sms = context(Services(None))
    refused = await call(tools, no_sms, "find_my_events", {})
    assert "send_verification_code" not in refused["error"] and "message" in refused["error"]
    assert (await call(tools, no_sms, "send_verification_code", {}))["ok"] is False
    hidden = ToolContext(call_sid="CA2", caller_number=None, is_owner=False, services=Services(None))
    assert "hidden" in (await call(tools, hidden, "send_verification_code", {}))["error"]


async def test_a_failed_text_is_an_apology(sms: TwilioSms, twilio: TwilioRestStandIn) -> None:
    twilio.failure_status = 503
    tools, ctx = all_tools(), context(Services(sms))
    answer = await call(tools, ctx, "send_verification_code", {})
    assert answer["ok"] is False and "couldn't be sent" in answer["error"]
    assert ctx.verification is None


async def test_calls_made_in_parallel_send_no_more_than_two_texts(
    sms: TwilioSms, twilio: TwilioRestStandIn
) -> None:
    # One response can ask for several calls at once; each awaits Twilio while the others run.
    tools, ctx = all_tools(), context(Services(sms))
    answers = await asyncio.gather(*(call(tools, ctx, "send_verification_code", {}) for _ in range(4)))
    assert sum(answer["ok"] for answer in answers) == 2
    assert len(twilio.messages) == 2


async def test_calling_again_and_again_gets_no_more_codes_or_guesses(
    sms: TwilioSms, twilio: TwilioRestStandIn
) -> None:
    """A caller can hang up and call again with the same (possibly spoofed) number: texts per number
    and wrong codes per number are limited across calls."""
    now = [0.0]
    limits = CodeLimits(clock=lambda: now[0])
    tools = all_tools()
    for index in range(SENDS_PER_NUMBER_PER_DAY):
        ctx = context(Services(sms, limits), call_sid=f"CA{index}")
        assert (await call(tools, ctx, "send_verification_code", {}))["ok"] is True
    refused = await call(tools, context(Services(sms, limits), call_sid="CAx"), "send_verification_code", {})
    assert refused["ok"] is False and "today" in refused["error"]
    assert len(twilio.messages) == SENDS_PER_NUMBER_PER_DAY
    for _ in range(FAILURES_PER_NUMBER_PER_DAY):
        limits.failed(CALLER)
    now[0] += 86_401  # a day later the number may get codes again, unless it is still failing
    assert limits.refusal(CALLER) is None
    for _ in range(FAILURES_PER_NUMBER_PER_DAY):
        limits.failed(CALLER)
    assert limits.locked(CALLER) and "wrong codes" in (limits.refusal(CALLER) or "")
    assert limits.refusal("+15557654321") is None  # another number is not affected
