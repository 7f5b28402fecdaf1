"""A recorded call over real sockets: the greeting says so, the WAV holds what was played, and
only the owner gets the audio (CALLASSIST_RECORD)."""

from __future__ import annotations

import random

import aiohttp

from callassist.media.recording import RECORDINGS
from tests.fakes.realtime_server import Reply, Say, Script
from tests.media.test_recording import wav_parts
from tests.support.stack import StackFactory

ADMIN = "an-admin-token-long-enough-for-the-check-0123"


async def test_a_recorded_call_says_so_and_only_the_owner_gets_its_audio(
    make_stack: StackFactory,
) -> None:
    greeting = random.Random(2).randbytes(4000)
    stack = await make_stack(
        Script(replies=[Reply([Say("Hi, this call is recorded.", audio=greeting)])]),
        record=True,
        admin_token=ADMIN,
    )
    call = await stack.simulator.place_call()
    await call.wait_until_quiet(quiet_ms=200, timeout=10)
    await call.hang_up()
    session = stack.fake.sessions[0]
    assert call.verbs[0] == "Say 'This call is recorded.'"  # before the stream (and the recording) starts
    assert "This call is recorded" in str(session.session_config.get("instructions"))
    wav = stack.server.settings.data_dir / RECORDINGS / f"{call.call_sid}.wav"
    await stack.server.services.registry.wait_idle(10)  # the stream is over, its WAV assembled
    _caller, assistant = wav_parts(wav)
    assert greeting in assistant  # the assistant's side is what was played
    url = f"{stack.server.base_url}/api/calls/{call.call_sid}/audio"
    async with aiohttp.ClientSession() as http:
        async with http.get(url) as refused:
            assert refused.status == 401
        async with http.get(url, headers={"Authorization": f"Bearer {ADMIN}"}) as answer:
            assert answer.status == 200 and answer.headers["Content-Type"] == "audio/wav"
            assert await answer.read() == wav.read_bytes()
        missing = f"{stack.server.base_url}/api/calls/..%2F..%2Fsecret/audio"
        async with http.get(missing, headers={"Authorization": f"Bearer {ADMIN}"}) as nothing:
            assert nothing.status == 404
