"""Re-split signed webhooks: X-Twilio-Signature covers the URL and each key+value, sorted by key, with
no separator, so the boundaries inside a captured form can be moved and the signature still holds
(`CallSid` = "CA…" + "CallStatus" + "ringing", `CallStatus` dropped, is a new call to a naive server,
with the captured caller number and attestation). Every such re-split of the owner's attested
webhook is sent, signed with the captured signature, over real HTTP: none gets a token or a call.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, select
from twilio.request_validator import RequestValidator

from callassist.simulator import CallerSimulator
from callassist.store.models import CallRow, StreamAdmissionRow
from callassist.telephony import forms
from tests.fakes.realtime_server import FakeRealtimeServer
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, NO_OPENAI, running_server
from tests.support.twilio_stream import (
    ATTESTED_A,
    OWNER,
    OWNER_TOOL,
    call_sid,
    complete_call,
    greeting_script,
    metric,
    noise,
    signed_headers,
    token_of,
    tools_of,
)

# What the server reads from a voice webhook: nothing else decides who calls or whether a token is issued.
OPTIONAL = ("StirVerstat", "DialCallStatus")
BELIEVED = ("AccountSid", "CallSid", "From", "To", "StirVerstat", "DialCallStatus", "CallStatus", "Direction")


def owner_webhook(sid: str, **extra: str) -> dict[str, str]:
    """A realistic inbound-call webhook (every field Twilio sends), the owner's, attested A."""
    simulator = CallerSimulator("http://127.0.0.1:9", auth_token=AUTH_TOKEN, account_sid=ACCOUNT_SID)
    return simulator.webhook_params(
        call_sid=sid, from_number=OWNER, to_number="+15559870000", extra={"StirVerstat": ATTESTED_A, **extra}
    )


def resplits(params: dict[str, str], *, moves: int = 2) -> Iterator[dict[str, str]]:
    """Every form whose signature is the same as `params`' within one move (each key/value boundary
    moved anywhere between its neighbours; one or two pairs swallowed by the token before them) or,
    with `moves=2`, two (a swallow, then a boundary beside the merged token moved)."""
    tokens = [part for key in sorted(params) for part in (key, params[key])]
    text = "".join(tokens)
    bounds = [0, *itertools.accumulate(len(t) for t in tokens)]

    def moved(cuts: list[int], index: int) -> Iterator[list[int]]:
        for position in range(cuts[index - 1], cuts[index + 1] + 1):
            if position != cuts[index]:
                yield [*cuts[:index], position, *cuts[index + 1 :]]

    def candidates() -> Iterator[list[int]]:
        for index in range(1, len(bounds) - 1):
            yield from moved(bounds, index)
            for swallowed in (2, 4):
                if index + swallowed < len(bounds):
                    merged = bounds[:index] + bounds[index + swallowed :]
                    yield merged
                    if moves < 2:
                        continue
                    for beside in (index - 1, index):
                        if 1 <= beside < len(merged) - 1:
                            yield from moved(merged, beside)

    seen: set[tuple[tuple[str, str], ...]] = set()
    for cuts in candidates():
        parts = [text[a:b] for a, b in itertools.pairwise(cuts)]
        keys = parts[0::2]
        if len(parts) % 2 or not all(keys) or keys != sorted(set(keys)):
            continue  # not what the signature's sorted concatenation would produce
        form = dict(zip(keys, parts[1::2], strict=True))
        identity = tuple(sorted(form.items()))
        if form != params and identity not in seen:
            seen.add(identity)
            yield form


def refused_count() -> float:
    reasons = (
        "no-call-sid",
        "missing-key",
        "call-sid",
        "account-sid",
        "number",
        "stir-verstat",
        "call-status",
    )
    reasons += ("direction", "dial-status", "repeated-key")
    return sum(metric("callassist_webhooks_rejected_total", endpoint="incoming", reason=r) for r in reasons)


def weaker_or_same(form: dict[str, str], original: dict[str, str]) -> bool:
    """Every value the server believes is the original's; an attestation or a dial result may only go
    missing (a call without one is trusted less: no attestation, or no assistant after the dial)."""
    for name in BELIEVED:
        if form.get(name) != original.get(name) and not (name in OPTIONAL and name not in form):
            return False
    return True


def test_every_resplit_that_changes_what_is_believed_is_refused() -> None:
    for extra in ({}, {"DialCallStatus": "no-answer", "DialCallSid": "CA" + "e" * 32}):
        captured = owner_webhook(call_sid(1), **extra)
        assert forms.problem(captured, stream_status=False, account_sid=ACCOUNT_SID) is None
        url = "https://callassist.example/voice/incoming"
        validator = RequestValidator(AUTH_TOKEN)
        signature = validator.compute_signature(url, captured)
        count = 0
        for form in resplits(captured):
            count += 1
            assert validator.validate(url, form, signature)
            if forms.problem(form, stream_status=False, account_sid=ACCOUNT_SID) is None:
                assert weaker_or_same(form, captured), form
        assert count > 1000  # the enumeration is not vacuous


async def test_resplit_owner_webhooks_get_no_token_and_no_call(tmp_path: Path) -> None:
    greeting = noise(300, 1)
    sid = call_sid(1)
    captured = owner_webhook(sid)
    async with (
        FakeRealtimeServer(greeting_script(greeting)) as fake,
        running_server(fake.base_url, tmp_path / "data", owner_phone=OWNER, ring_owner_seconds=0) as server,
    ):
        url = server.settings.public_url + "/voice/incoming"
        # What a tunnel's traffic inspector shows: the body and its signature.
        headers = signed_headers(url, captured)
        async with aiohttp.ClientSession() as http:
            async with http.post(url, data=captured, headers=headers) as response:
                token = token_of(await response.text())
            assert token
            # The owner's real call.
            await complete_call(server, sid, {"token": token}, greeting)
            assert OWNER_TOOL in tools_of(fake.sessions[-1])
            refused_before = refused_count()

            answers: list[tuple[dict[str, str], int, str]] = []
            limit = asyncio.Semaphore(8)

            async def replay(form: dict[str, str]) -> None:
                async with limit, http.post(url, data=form, headers=headers) as response:
                    answers.append((form, response.status, await response.text()))

            forged = list(resplits(captured, moves=1))  # all 2241 two-move ones: the test above
            await asyncio.gather(*(replay(form) for form in forged))

        assert len(answers) == len(forged) > 400
        for form, status, body in answers:
            assert "<Stream" not in body and (status != 200 or token_of(body) is None), form
            assert status == 400 or (status == 200 and weaker_or_same(form, captured)), (form, status)
        # The reviewer's re-split, in particular: a new CallSid swallowing CallStatus is refused.
        swallowed = {k: v for k, v in captured.items() if k != "CallStatus"}
        swallowed["CallSid"] = sid + "CallStatus" + captured["CallStatus"]
        assert any(form == swallowed and status == 400 for form, status, _ in answers)
        # Each refusal is counted, with its reason.
        assert refused_count() - refused_before == sum(status == 400 for _, status, _ in answers) > 0
        # Nothing was recorded for any other call, and no other call reached the model.
        async with server.services.database.session(read_only=True) as session:
            admissions = await session.scalar(select(func.count()).select_from(StreamAdmissionRow))
            calls = await session.scalar(select(func.count()).select_from(CallRow))
        assert (admissions, calls) == (1, 1)
        assert len(fake.sessions) == 1


async def test_signed_forms_twilio_never_sends_are_refused(tmp_path: Path) -> None:
    async with running_server(
        NO_OPENAI, tmp_path, owner_phone="+15550001111", ring_owner_seconds=15
    ) as server:
        good = owner_webhook(call_sid(7))
        cases: list[tuple[str, dict[str, Any], str]] = [
            ("/voice/incoming", {**good, "CallSid": "CA" + "A" * 32}, "call-sid"),
            ("/voice/incoming", {**good, "CallSid": call_sid(7) + "0"}, "call-sid"),
            ("/voice/incoming", {**good, "AccountSid": "AC" + "1" * 32}, "account-sid"),
            ("/voice/incoming", {**good, "From": "+15550001111FromCity"}, "number"),
            ("/voice/incoming", {**good, "From": "sip:a@b.example" + "x" * 60}, "number"),
            ("/voice/incoming", {**good, "To": "+1 555 987"}, "number"),
            ("/voice/incoming", {**good, "StirVerstat": ATTESTED_A + "To"}, "stir-verstat"),
            ("/voice/incoming", {k: v for k, v in good.items() if k != "Direction"}, "missing-key"),
            ("/voice/dial-result", {**good, "DialCallStatus": "no-answerDialCallSid"}, "dial-status"),
            ("/voice/stream-status", {"AccountSid": ACCOUNT_SID, "CallSid": call_sid(7)}, "missing-key"),
        ]
        async with aiohttp.ClientSession() as http:
            for path, form, reason in cases:
                before = metric(
                    "callassist_webhooks_rejected_total", endpoint=path.rsplit("/", 1)[1], reason=reason
                )
                url = server.settings.public_url + path
                headers = signed_headers(url, form)
                async with http.post(url, data=form, headers=headers) as response:
                    body = await response.text()
                    assert response.status == 400 and "token" not in body, (path, form, body)
                after = metric(
                    "callassist_webhooks_rejected_total", endpoint=path.rsplit("/", 1)[1], reason=reason
                )
                assert after == before + 1, (path, reason)
            # Withheld numbers and client/SIP callers are Twilio's too.
            for caller in ("anonymous", "+266696687", "client:alice", "sip:alice@example.com"):
                form = {**good, "CallSid": call_sid(8), "From": caller, "Caller": caller}
                url = server.settings.public_url + "/voice/incoming"
                headers = signed_headers(url, form)
                async with http.post(url, data=form, headers=headers) as response:
                    assert response.status == 200, (caller, await response.text())
        async with server.services.database.session(read_only=True) as session:
            assert await session.scalar(select(func.count()).select_from(StreamAdmissionRow)) == 1
