"""The yardstick for bench/relay.py: a minimal two-coroutine Twilio <-> OpenAI Realtime bridge.

It is the shape of twilio-samples' speech-assistant-openai-realtime-api-python main.py, moved to the
GA protocol: one coroutine per direction, `json.loads`/`json.dumps` on every message, `clear` on
speech_started, and nothing else: no signature checks, no truncation, no tools, no records, no
reconnect. With --marks it also sends a mark after each audio chunk and pops a queue when Twilio
echoes it, as the sample does (Twilio's message count then matches callassist's). Run it with
`python bench/relay.py --server baseline` (or `baseline-marks`) to measure callassist against it on
the same machine, with the same callers and the same fake.

    python bench/baseline.py --port 8011 [--marks]   (OPENAI_API_KEY, OPENAI_BASE_URL from the environment)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os

import uvicorn
import websockets
from fastapi import FastAPI, Request, WebSocket, WebSocketDisconnect
from fastapi.responses import Response

app = FastAPI()
SEND_MARKS = False
OPENAI_API_KEY = os.environ.get("OPENAI_API_KEY", "")
REALTIME_URL = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1").replace("http", "ws", 1)
MODEL = "gpt-realtime-2.1"
SESSION = {
    "type": "realtime",
    "model": MODEL,
    "output_modalities": ["audio"],
    "audio": {
        "input": {
            "format": {"type": "audio/pcmu"},
            # callassist's defaults (CALLASSIST_VAD_*), so both answer after the same silence: the
            # service's own default is 200 ms of silence, callassist's 500 ms.
            "turn_detection": {
                "type": "server_vad",
                "threshold": 0.5,
                "prefix_padding_ms": 300,
                "silence_duration_ms": 500,
            },
        },
        "output": {"format": {"type": "audio/pcmu"}, "voice": "marin"},
    },
    "instructions": "You are a helpful phone assistant. Keep answers short.",
}


@app.post("/voice/incoming")
async def incoming_call(request: Request) -> Response:
    stream_url = f"ws://{request.url.netloc}/voice/stream"
    twiml = f'<Response><Connect><Stream url="{stream_url}"/></Connect></Response>'
    return Response(twiml, media_type="application/xml")


@app.websocket("/voice/stream")
async def media_stream(websocket: WebSocket) -> None:
    await websocket.accept()
    async with websockets.connect(
        f"{REALTIME_URL}/realtime?model={MODEL}",
        additional_headers={"Authorization": f"Bearer {OPENAI_API_KEY}"},
    ) as openai_ws:
        await openai_ws.send(json.dumps({"type": "session.update", "session": SESSION}))
        await openai_ws.send(json.dumps({"type": "response.create"}))
        stream_sid: str | None = None
        mark_queue: list[str] = []

        async def receive_from_twilio() -> None:
            nonlocal stream_sid
            try:
                async for message in websocket.iter_text():
                    data = json.loads(message)
                    if data["event"] == "media":
                        append = {"type": "input_audio_buffer.append", "audio": data["media"]["payload"]}
                        await openai_ws.send(json.dumps(append))
                    elif data["event"] == "start":
                        stream_sid = data["start"]["streamSid"]
                    elif data["event"] == "mark" and mark_queue:
                        mark_queue.pop(0)
                    elif data["event"] == "stop":
                        break
            except WebSocketDisconnect:
                pass
            await openai_ws.close()

        async def send_to_twilio() -> None:
            async for raw in openai_ws:
                event = json.loads(raw)
                if event.get("type") == "response.output_audio.delta":
                    payload = base64.b64encode(base64.b64decode(event["delta"])).decode()
                    media = {"event": "media", "streamSid": stream_sid, "media": {"payload": payload}}
                    await websocket.send_json(media)
                    if SEND_MARKS:
                        await websocket.send_json(
                            {"event": "mark", "streamSid": stream_sid, "mark": {"name": "part"}}
                        )
                        mark_queue.append("part")
                elif event.get("type") == "input_audio_buffer.speech_started":
                    await websocket.send_json({"event": "clear", "streamSid": stream_sid})
                    mark_queue.clear()

        with contextlib.suppress(websockets.ConnectionClosed):
            await asyncio.gather(receive_from_twilio(), send_to_twilio())


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument(
        "--marks", action="store_true", help="send a mark after each chunk, as the sample does"
    )
    args = parser.parse_args()
    SEND_MARKS = args.marks
    uvicorn.run(app, host="127.0.0.1", port=args.port, log_level="warning")
