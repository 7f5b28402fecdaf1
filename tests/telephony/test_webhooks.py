"""The incoming-call webhook, the owner dial result and the stream's status callback, over real HTTP
with Twilio's signatures."""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from pathlib import Path

import aiohttp
import pytest
from twilio.request_validator import RequestValidator

from callassist.store.models import StreamAdmissionRow
from tests.support.server import ACCOUNT_SID, AUTH_TOKEN, NO_OPENAI, RunningServer, running_server

CALL = {
    "AccountSid": ACCOUNT_SID,
    "ApiVersion": "2010-04-01",
    "CallSid": "CA" + "1" * 32,
    "CallStatus": "ringing",
    "Direction": "inbound",
    "From": "+15551230000",
    "To": "+15559870000",
}


async def post(
    server: RunningServer, path: str, params: dict[str, str], signature: str | None
) -> tuple[int, str]:
    headers = {} if signature is None else {"X-Twilio-Signature": signature}
    async with (
        aiohttp.ClientSession() as http,
        http.post(server.base_url + path, data=params, headers=headers) as response,
    ):
        return response.status, await response.text()


def sign(server: RunningServer, path: str, params: dict[str, str], token: str = AUTH_TOKEN) -> str:
    return RequestValidator(token).compute_signature(server.settings.public_url + path, params)


async def test_unsigned_or_wrongly_signed_webhooks_are_refused(server: RunningServer) -> None:
    assert (await post(server, "/voice/incoming", CALL, None))[0] == 403
    assert (await post(server, "/voice/incoming", CALL, "bm90IGEgc2lnbmF0dXJl"))[0] == 403
    wrong_key = sign(server, "/voice/incoming", CALL, token="someone-else")
    assert (await post(server, "/voice/incoming", CALL, wrong_key))[0] == 403
    tampered = {**CALL, "From": "+15550000000"}
    assert (await post(server, "/voice/incoming", tampered, sign(server, "/voice/incoming", CALL)))[0] == 403
    assert (await post(server, "/voice/dial-result", CALL, None))[0] == 403


async def test_signed_webhook_connects_the_assistant(server: RunningServer) -> None:
    status, body = await post(server, "/voice/incoming", CALL, sign(server, "/voice/incoming", CALL))
    assert status == 200
    root = ET.fromstring(body)
    assert [child.tag for child in root] == ["Connect", "Hangup"]
    assert root.find("Connect").get("action") == server.settings.public_url + "/voice/stream-ended"  # type: ignore[union-attr]
    stream = root.find("Connect/Stream")
    assert stream is not None
    # The call's own URL (Twilio signs it: the handshake's signature is this call's), token in the path.
    token = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}["token"]
    assert stream.get("url") == server.settings.stream_url() + f"/{CALL['CallSid']}/{token}"
    assert stream.get("url", "").startswith("ws://127.0.0.1:")
    # Absolute, under the public URL, signed like every webhook (see the stream-status tests below).
    assert stream.get("statusCallback") == server.settings.public_url + "/voice/stream-status"
    assert stream.get("statusCallbackMethod") == "POST"
    parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
    # The token only: who is calling stays on the server, recorded from this signed webhook.
    assert list(parameters) == ["token"] and parameters["token"]
    assert "+1555" not in body


async def test_owner_is_rung_first_and_the_assistant_answers_only_when_missed(tmp_path: Path) -> None:
    async with running_server(
        NO_OPENAI, tmp_path, owner_phone="+15550001111", ring_owner_seconds=15
    ) as server:
        status, body = await post(server, "/voice/incoming", CALL, sign(server, "/voice/incoming", CALL))
        dial = ET.fromstring(body).find("Dial")
        assert status == 200 and dial is not None
        assert dial.get("timeout") == "15" and dial.get("answerOnBridge") == "true"
        assert dial.get("action") == server.settings.public_url + "/voice/dial-result"
        assert dial.findtext("Number") == "+15550001111"
        # The owner's leg is screened first (see tests/telephony/test_screening.py).
        number = dial.find("Number")
        assert number is not None
        assert number.get("url") == server.settings.public_url + f"/voice/screen?parent={CALL['CallSid']}"

        for index, missed in enumerate(("busy", "no-answer", "failed")):
            params = {**CALL, "CallSid": f"CA{index:032d}", "DialCallStatus": missed}
            _, body = await post(
                server, "/voice/dial-result", params, sign(server, "/voice/dial-result", params)
            )
            stream = ET.fromstring(body).find("Connect/Stream")
            assert stream is not None, missed
            assert [p.get("name") for p in stream.findall("Parameter")] == ["token"]
            # The owner's missed dial is the server's record, for the stream to read.
            async with server.services.database.session(read_only=True) as session:
                row = await session.get(StreamAdmissionRow, params["CallSid"])
            assert row is not None and row.dial_status == missed and row.token_issued is not None

        # Answered means taken only when the owner pressed 1 on the whisper; canceled: the caller left.
        choice = {**CALL, "Direction": "outbound-dial", "CallSid": "CA" + "9" * 32, "Digits": "1"}
        path = f"/voice/screen-choice?parent={CALL['CallSid']}"
        assert (await post(server, path, choice, sign(server, path, choice)))[0] == 200
        for answered in ("completed", "answered", "canceled"):
            params = {**CALL, "DialCallStatus": answered, "DialCallDuration": "42"}
            _, body = await post(
                server, "/voice/dial-result", params, sign(server, "/voice/dial-result", params)
            )
            assert [child.tag for child in ET.fromstring(body)] == ["Hangup"], answered

        # The owner calling their own number is not rung back: the assistant answers.
        own = {**CALL, "From": "+15550001111"}
        _, body = await post(server, "/voice/incoming", own, sign(server, "/voice/incoming", own))
        assert ET.fromstring(body).find("Connect/Stream") is not None


async def test_without_auth_token_loopback_is_served(tmp_path: Path) -> None:
    async with running_server(NO_OPENAI, tmp_path, twilio_auth_token=None) as server:
        status, body = await post(server, "/voice/incoming", CALL, None)
        assert status == 200 and "<Connect" in body


async def test_healthz(server: RunningServer) -> None:
    async with aiohttp.ClientSession() as http, http.get(server.base_url + "/healthz") as response:
        assert response.status == 200
        assert (await response.json())["status"] == "ok"


async def test_a_signed_webhook_without_call_sid_gets_400_and_no_token(tmp_path: Path) -> None:
    no_sid = {k: v for k, v in CALL.items() if k != "CallSid"}
    async with running_server(
        NO_OPENAI, tmp_path, owner_phone="+15550001111", ring_owner_seconds=15
    ) as server:
        cases = {
            "/voice/incoming": no_sid,
            "/voice/dial-result": {**no_sid, "DialCallStatus": "no-answer"},
            "/voice/stream-ended": no_sid,
            "/voice/stream-status": {**no_sid, "StreamEvent": "stream-error", "StreamError": "x"},
        }
        for path, params in cases.items():
            status, body = await post(server, path, params, sign(server, path, params))
            assert status == 400, (path, status, body)
            assert "<Stream" not in body and "token" not in body, (path, body)
        # An empty CallSid is no CallSid.
        blank = {**cases["/voice/dial-result"], "CallSid": " "}
        status, _ = await post(server, "/voice/dial-result", blank, sign(server, "/voice/dial-result", blank))
        assert status == 400
        # Unsigned still means 403, whatever the form holds.
        assert (await post(server, "/voice/incoming", no_sid, None))[0] == 403


def stream_event(event: str, **extra: str) -> dict[str, str]:
    return {
        "AccountSid": ACCOUNT_SID,
        "CallSid": CALL["CallSid"],
        "StreamSid": "MZ" + "2" * 32,
        "StreamEvent": event,
        "Timestamp": "2030-01-07T14:00:00.000Z",
        **extra,
    }


async def test_stream_status_logs_errors_as_warnings_with_numbers_masked(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    path = "/voice/stream-status"
    caplog.set_level(logging.DEBUG, logger="callassist.telephony.webhooks")
    for event in ("stream-started", "stream-stopped"):
        params = stream_event(event)
        assert await post(server, path, params, sign(server, path, params)) == (204, "")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]

    error = stream_event(
        "stream-error", StreamError="Stream - WebSocket - Handshake Error for +15551230000\nsecond line"
    )
    assert await post(server, path, error, sign(server, path, error)) == (204, "")
    [warning] = [r for r in caplog.records if r.levelno >= logging.WARNING]
    text = warning.getMessage()
    assert CALL["CallSid"] in text and "Handshake Error" in text and "second line" in text
    assert "+15551230000" not in text and "+1…0000" in text and "\n" not in text

    # Signature-checked like the other webhooks: nothing is logged for a forged report.
    caplog.clear()
    assert (await post(server, path, error, None))[0] == 403
    assert (await post(server, path, error, sign(server, path, error, token="someone-else")))[0] == 403
    assert not [r for r in caplog.records if "media stream error" in r.getMessage()]
