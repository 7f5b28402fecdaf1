"""Relay benchmark: N concurrent simulated calls through a real `callassist serve` against the fake.

Three processes share the machine: the fake OpenAI Realtime server, the callassist server (the one
measured) and a lean Twilio stand-in placing N calls. Every audio frame carries its send time
(monotonic ns, written as quiet μ-law codes so the fake's VAD doesn't hear it), so each side
measures the relay latency of the other direction: caller -> callassist -> fake ("up") and
fake -> callassist -> caller ("down"). Callers talk in turns: ~1.5 s of speech, then they listen to
the assistant's ~3 s answer (marks echoed at real-time playback, like Twilio), and repeat.

Prints: server CPU seconds per call-minute, relay latency p50/p99 per direction, frames lost per
direction, peak RSS of the server, and failed calls.

    python bench/relay.py --calls 100 --seconds 60
    python bench/relay.py --calls 100 --seconds 60 --engine live     (the same on GPT-Live)
    python bench/relay.py --calls 100 --seconds 60 --server baseline   (the yardstick: bench/baseline.py;
                                                         baseline-marks: the same with a mark per chunk)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import math
import os
import random
import signal
import socket
import sys
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

AUTH_TOKEN = "bench-auth-token"
MAGIC = bytes([0xF1, 0xF3, 0xF5, 0xF7])  # quiet μ-law codes: |sample| <= 120
STAMP_BYTES = len(MAGIC) + 16
FRAME_BYTES = 160
SPEECH_MS = 1500


# Stamps ---------------------------------------------------------------------------------------


def stamp(chunk: bytes) -> bytes:
    """Overwrite the start of `chunk` with the current monotonic time, as 16 quiet nibbles."""
    now = time.monotonic_ns()
    nibbles = bytes(0xF0 | ((now >> (4 * i)) & 0xF) for i in range(16))
    return MAGIC + nibbles + chunk[STAMP_BYTES:]


def read_stamp(chunk: bytes) -> int | None:
    if len(chunk) < STAMP_BYTES or chunk[:4] != MAGIC:
        return None
    return sum((chunk[4 + i] & 0xF) << (4 * i) for i in range(16))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def use_uvloop() -> None:
    with contextlib.suppress(ImportError):
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())


# Role: fake OpenAI ------------------------------------------------------------------------------


async def run_fake(port: int, report: Path, engine: str = "realtime") -> None:
    from tests.fakes.live_script import LiveReply
    from tests.fakes.live_server import FakeLiveServer, LiveScript
    from tests.fakes.realtime_server import AudioTaps, FakeRealtimeServer, Reply, Say, Script

    from callassist.simulator.audio import tone

    up_latencies: list[float] = []
    window_from = [0]  # where the measurement window's samples begin (SIGUSR2 from the orchestrator)
    counts = {"frames_in": 0, "stamped_in": 0, "chunks_out": 0}

    def on_audio_in(chunk: bytes) -> None:
        counts["frames_in"] += 1
        sent = read_stamp(chunk)
        if sent is not None:
            counts["stamped_in"] += 1
            up_latencies.append((time.monotonic_ns() - sent) / 1e6)

    def on_audio_out(chunk: bytes) -> bytes:
        counts["chunks_out"] += 1
        return stamp(chunk)

    greeting, answer = tone(1000, 523), tone(3000, 440)
    script = lambda: Script(  # noqa: E731 - one fresh script per session
        replies=[Reply([Say("Hello", audio=greeting)])], default_reply=Reply([Say("Answer", audio=answer)])
    )
    server: FakeRealtimeServer | FakeLiveServer
    if engine == "live":  # the same conversation on the fake GPT-Live (greeted by callassist's cue)
        live_script = lambda: LiveScript(  # noqa: E731
            replies=[LiveReply([Say("Hello", audio=greeting)])],
            default_reply=LiveReply([Say("Answer", audio=answer)]),
        )
        server = FakeLiveServer(live_script, port=port, keep_history=False)
        server.on_audio_in, server.on_audio_out = on_audio_in, on_audio_out
    else:
        taps = AudioTaps(on_audio_in=on_audio_in, on_audio_out=on_audio_out, keep_history=False)
        server = FakeRealtimeServer(script, port=port, taps=taps, validate_outgoing=False)
    await server.start()
    print("fake ready", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loop.add_signal_handler(signal.SIGUSR2, lambda: window_from.__setitem__(0, len(up_latencies)))
    await stop.wait()
    in_window = up_latencies[window_from[0] :]
    failures = list(server.validation_failures)
    await server.stop()
    report.write_text(
        json.dumps(
            {
                **counts,
                "sessions": len(server.sessions),
                "up_p50_ms": percentile(up_latencies, 50),
                "up_p99_ms": percentile(up_latencies, 99),
                "up_max_ms": max(up_latencies, default=float("nan")),
                "up_window_p99_ms": percentile(in_window, 99),
                "validation_failures": failures[:10],
            }
        )
    )


# Role: callers (a lean Twilio stand-in) ---------------------------------------------------------


@dataclass
class CallResult:
    frames_sent: int = 0
    media_in: int = 0
    stamped_in: int = 0
    turns_answered: int = 0
    down_latencies: list[float] = field(default_factory=list)
    window_from: int = 0  # where the measurement window's samples begin
    answer_gaps: list[float] = field(default_factory=list)  # end of the caller's words -> first audio back
    error: str | None = None


class BenchCall:
    """One call: signed webhook, signed stream, 20 ms frames on an absolute schedule, real-time playback
    with marks echoed when their audio has played (and at once on clear), turn-taking conversation."""

    def __init__(self, index: int, base_url: str, http: Any, stop: asyncio.Event) -> None:
        self.index = index
        self.base_url = base_url
        self.http = http
        self.stop = stop
        self.result = CallResult()
        self.greeted = asyncio.Event()
        self._play_until = 0.0
        self._heard_since_listening = False
        self._marks: list[tuple[float, str]] = []
        self._spoke_until: float | None = None  # when the caller's last words ended, until answered
        self._ws: Any = None
        self._stream_sid = f"MZ{random.getrandbits(128):032x}"
        self._call_sid = f"CA{random.getrandbits(128):032x}"

    async def run(self) -> CallResult:
        try:
            await self._run()
        except Exception as exc:
            self.result.error = f"{type(exc).__name__}: {exc}"
            self.greeted.set()
        return self.result

    async def _run(self) -> None:
        from twilio.request_validator import RequestValidator
        from websockets.asyncio.client import connect

        validator = RequestValidator(AUTH_TOKEN)
        params = {
            "AccountSid": "AC" + "0" * 32,
            "CallSid": self._call_sid,
            "From": f"+1555{self.index:07d}",
            "To": "+15559870000",
            "CallStatus": "ringing",
            "Direction": "inbound",
        }
        url = self.base_url + "/voice/incoming"
        headers = {"X-Twilio-Signature": validator.compute_signature(url, params)}
        async with self.http.post(url, data=params, headers=headers) as response:
            stream = ET.fromstring(await response.text()).find("Connect/Stream")
        if stream is None:
            raise RuntimeError("no <Stream> in the TwiML")
        stream_url = stream.get("url", "")
        parameters = {p.get("name"): p.get("value") for p in stream.findall("Parameter")}
        signature = validator.compute_signature(stream_url, {})
        async with connect(
            stream_url, additional_headers={"X-Twilio-Signature": signature}, compression=None, max_size=None
        ) as ws:
            self._ws = ws
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            start = {
                "accountSid": params["AccountSid"],
                "streamSid": self._stream_sid,
                "callSid": self._call_sid,
                "tracks": ["inbound"],
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
                "customParameters": parameters,
            }
            await ws.send(
                json.dumps(
                    {"event": "start", "sequenceNumber": "1", "start": start, "streamSid": self._stream_sid}
                )
            )
            receiver = asyncio.create_task(self._receive())
            try:
                await self._send_frames()
            finally:
                receiver.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await receiver
            await ws.send(json.dumps({"event": "stop", "sequenceNumber": "0", "streamSid": self._stream_sid}))

    async def _send_frames(self) -> None:
        from callassist.simulator.audio import tone

        speech = tone(SPEECH_MS, 300 + self.index % 200, amplitude=6000)
        silence = bytes([0xFF]) * FRAME_BYTES
        prefix = (
            '{"event":"media","sequenceNumber":"%d","media":{"track":"inbound","chunk":"%d",'
            '"timestamp":"%d","payload":"'
        )
        suffix = '"},"streamSid":"' + self._stream_sid + '"}'
        t0 = time.monotonic()
        n = 0
        speaking_from: int | None = None  # frame index where the current utterance began
        while True:
            now = time.monotonic()
            if speaking_from is None and self._heard_since_listening and now > self._play_until + 0.6:
                # The greeting or the answer has been heard out: take the next turn (or hang up).
                self.result.turns_answered += 1
                self.greeted.set()
                if self.stop.is_set():
                    return
                speaking_from = n
                self._heard_since_listening = False
            frame = silence
            if speaking_from is not None:
                offset = (n - speaking_from) * FRAME_BYTES
                frame = speech[offset : offset + FRAME_BYTES]
                if len(frame) < FRAME_BYTES:
                    speaking_from, frame = None, silence
                    self._spoke_until = now
            payload = base64.b64encode(stamp(frame)).decode()
            await self._ws.send(prefix % (n + 2, n + 1, n * 20) + payload + suffix)
            self.result.frames_sent += 1
            n += 1
            delay = t0 + n * 0.020 - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

    async def _receive(self) -> None:
        loop = asyncio.get_running_loop()
        timer: asyncio.TimerHandle | None = None

        def echo_due() -> None:
            nonlocal timer
            timer = None
            now = time.monotonic()
            while self._marks and self._marks[0][0] <= now:
                _, name = self._marks.pop(0)
                self._send_mark(name)
            if self._marks:
                timer = loop.call_at(loop.time() + max(0.0, self._marks[0][0] - now), echo_due)

        async for raw in self._ws:
            message = json.loads(raw)
            event = message.get("event")
            now = time.monotonic()
            if event == "media":
                chunk = base64.b64decode(message["media"]["payload"])
                sent = read_stamp(chunk)
                self.result.media_in += 1
                if sent is not None:
                    self.result.stamped_in += 1
                    self.result.down_latencies.append((time.monotonic_ns() - sent) / 1e6)
                self._play_until = max(self._play_until, now) + len(chunk) / 8000
                self._heard_since_listening = True
                if self._spoke_until is not None:
                    self.result.answer_gaps.append((now - self._spoke_until) * 1000)
                    self._spoke_until = None
            elif event == "mark":
                self._marks.append((max(self._play_until, now), message["mark"]["name"]))
                if timer is None:
                    timer = loop.call_at(loop.time() + max(0.0, self._marks[0][0] - now), echo_due)
            elif event == "clear":
                self._play_until = now
                for _, name in self._marks:
                    self._send_mark(name)
                self._marks.clear()

    def _send_mark(self, name: str) -> None:
        message = {
            "event": "mark",
            "sequenceNumber": "0",
            "streamSid": self._stream_sid,
            "mark": {"name": name},
        }
        task = asyncio.ensure_future(self._ws.send(json.dumps(message)))
        task.add_done_callback(lambda t: t.exception() if not t.cancelled() else None)


async def run_callers(base_url: str, calls: int, ramp_s: float) -> None:
    import aiohttp

    stop = asyncio.Event()
    bench_calls: list[BenchCall] = []
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, stop.set)

    def window_opens() -> None:
        for call in bench_calls:
            call.result.window_from = len(call.result.down_latencies)

    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR2, window_opens)
    connector = aiohttp.TCPConnector(limit=64)
    async with aiohttp.ClientSession(connector=connector) as http:
        bench_calls.extend(BenchCall(i, base_url, http, stop) for i in range(calls))
        tasks = []
        for call in bench_calls:
            tasks.append(asyncio.create_task(call.run()))
            await asyncio.sleep(ramp_s / calls)  # ramp up like real traffic, not all in one ms
        await asyncio.wait_for(asyncio.gather(*(c.greeted.wait() for c in bench_calls)), 120)
        print("callers ready", flush=True)
        results = await asyncio.gather(*tasks)
    down = [latency for result in results for latency in result.down_latencies]
    in_window = [latency for result in results for latency in result.down_latencies[result.window_from :]]
    gaps = [gap for result in results for gap in result.answer_gaps]
    print(
        "RESULT "
        + json.dumps(
            {
                "frames_sent": sum(r.frames_sent for r in results),
                "media_in": sum(r.media_in for r in results),
                "stamped_in": sum(r.stamped_in for r in results),
                "turns": sum(r.turns_answered for r in results),
                "down_p50_ms": percentile(down, 50),
                "down_p99_ms": percentile(down, 99),
                "down_max_ms": max(down, default=float("nan")),
                "down_window_p99_ms": percentile(in_window, 99),
                "answer_p50_ms": percentile(gaps, 50),
                "answer_p99_ms": percentile(gaps, 99),
                "failed_calls": [r.error for r in results if r.error][:10],
                "failed": sum(1 for r in results if r.error),
            }
        ),
        flush=True,
    )


# Orchestration ---------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def read_until(stream: asyncio.StreamReader, needle: str, timeout: float, sink: list[str]) -> None:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while True:
            line = (await stream.readline()).decode(errors="replace")
            if not line:
                raise RuntimeError(f"process ended before printing {needle!r}:\n" + "".join(sink[-20:]))
            sink.append(line)
            if needle in line:
                return


async def drain(stream: asyncio.StreamReader, sink: list[str]) -> None:
    while line := await stream.readline():
        sink.append(line.decode(errors="replace"))


async def orchestrate(args: argparse.Namespace) -> dict[str, Any]:
    children: list[asyncio.subprocess.Process] = []
    try:
        return await _orchestrate(args, children)
    finally:
        for child in children:  # a failed run must not leave a server or fake behind
            if child.returncode is None:
                child.kill()
                await child.wait()


async def _orchestrate(
    args: argparse.Namespace, children: list[asyncio.subprocess.Process]
) -> dict[str, Any]:
    fake_port, server_port = free_port(), free_port()
    report = Path(f"/tmp/callassist-bench-fake-{os.getpid()}.json")
    me = [sys.executable, str(Path(__file__).resolve())]
    fake = await asyncio.create_subprocess_exec(
        *me, "--role", "fake", "--port", str(fake_port), "--report", str(report), "--engine", args.engine,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    children.append(fake)
    fake_lines: list[str] = []
    assert fake.stdout
    await read_until(fake.stdout, "fake ready", 30, fake_lines)
    fake_drain = asyncio.create_task(drain(fake.stdout, fake_lines))
    base_url = f"http://127.0.0.1:{server_port}"
    env = {
        **os.environ,
        "OPENAI_API_KEY": "sk-bench",
        "OPENAI_BASE_URL": f"http://127.0.0.1:{fake_port}/v1",
        "TWILIO_AUTH_TOKEN": AUTH_TOKEN,
        "PUBLIC_BASE_URL": base_url,
        "CALLASSIST_PORT": str(server_port),
        "CALLASSIST_DATA_DIR": f"/tmp/callassist-bench-data-{os.getpid()}",
        "CALLASSIST_LOG_LEVEL": "warning",
        "CALLASSIST_MAX_CALLS": "10000",
        "CALLASSIST_ENV_FILE": "none",  # a developer's .env must not change what is measured
        "CALLASSIST_ENGINE": args.engine,
    }
    if args.server.startswith("baseline"):
        command = [sys.executable, str(REPO / "bench" / "baseline.py"), "--port", str(server_port)]
        command += ["--marks"] if args.server == "baseline-marks" else []
    else:
        command = [str(Path(sys.executable).with_name("callassist")), "serve"]
    server = await asyncio.create_subprocess_exec(
        *command,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd="/tmp",
    )
    children.append(server)
    server_lines: list[str] = []
    assert server.stdout
    server_drain = asyncio.create_task(drain(server.stdout, server_lines))
    # The server logs at warning: wait for its port to answer instead of a start-up line.
    async with asyncio.timeout(30):
        while True:
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", server_port)
                writer.close()
                break
            await asyncio.sleep(0.05)
    callers = await asyncio.create_subprocess_exec(
        *me, "--role", "callers", "--url", base_url, "--calls", str(args.calls), "--ramp", str(args.ramp),
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, cwd=REPO,
    )  # fmt: skip
    children.append(callers)
    caller_lines: list[str] = []
    assert callers.stdout
    await read_until(callers.stdout, "callers ready", 180, caller_lines)
    cpu_start, wall_start = cpu_seconds(server.pid), time.monotonic()
    fake.send_signal(signal.SIGUSR2)
    callers.send_signal(signal.SIGUSR2)
    await asyncio.sleep(args.seconds)  # the measurement window itself
    cpu_used, wall = cpu_seconds(server.pid) - cpu_start, time.monotonic() - wall_start
    callers.send_signal(signal.SIGUSR1)
    await asyncio.wait_for(drain(callers.stdout, caller_lines), 120)
    await callers.wait()
    rss = peak_rss_mb(server.pid)
    server.send_signal(signal.SIGTERM)
    await asyncio.wait_for(server.wait(), 15)
    fake.send_signal(signal.SIGTERM)
    await asyncio.wait_for(fake.wait(), 15)
    await asyncio.gather(fake_drain, server_drain, return_exceptions=True)
    result_line = next((line for line in caller_lines if line.startswith("RESULT ")), None)
    if result_line is None:
        raise RuntimeError("callers printed no result:\n" + "".join(caller_lines[-30:]))
    callers_result = json.loads(result_line[len("RESULT ") :])
    fake_result = json.loads(report.read_text())
    report.unlink(missing_ok=True)
    return {
        "server": args.server,
        "engine": args.engine,
        "calls": args.calls,
        "window_s": round(wall, 1),
        "server_cpu_s_per_call_minute": cpu_used / (args.calls * wall / 60),
        "server_cpu_share": cpu_used / wall,
        "up_p50_ms": fake_result["up_p50_ms"],
        "up_p99_ms": fake_result["up_p99_ms"],
        "down_p50_ms": callers_result["down_p50_ms"],
        "down_p99_ms": callers_result["down_p99_ms"],
        "up_window_p99_ms": fake_result["up_window_p99_ms"],
        "down_window_p99_ms": callers_result["down_window_p99_ms"],
        "frames_lost_up": callers_result["frames_sent"] - fake_result["frames_in"],
        "frames_lost_down": fake_result["chunks_out"] - callers_result["media_in"],
        "turns_answered": callers_result["turns"],
        "answer_p50_ms": callers_result["answer_p50_ms"],
        "answer_p99_ms": callers_result["answer_p99_ms"],
        "failed_calls": callers_result["failed"],
        "failures": callers_result["failed_calls"],
        "server_peak_rss_mb": rss,
        "fake_validation_failures": fake_result["validation_failures"],
        "server_errors": [line.rstrip() for line in server_lines if " ERROR " in line][:5],
    }


def print_summary(result: dict[str, Any]) -> None:
    print(f"server                         {result['server']} ({result['engine']} engine)")
    print(f"calls                          {result['calls']} (window {result['window_s']} s)")
    print(f"server CPU per call-minute     {result['server_cpu_s_per_call_minute']:.3f} s")
    print(f"server CPU share               {100 * result['server_cpu_share']:.0f}% of one core")
    print(f"relay latency up   p50 / p99   {result['up_p50_ms']:.2f} / {result['up_p99_ms']:.2f} ms")
    print(f"relay latency down p50 / p99   {result['down_p50_ms']:.2f} / {result['down_p99_ms']:.2f} ms")
    window = f"{result['up_window_p99_ms']:.2f} / {result['down_window_p99_ms']:.2f} ms"
    print(f"p99 in the window up / down    {window} (the calls' starts left out)")
    print(f"frames lost up / down          {result['frames_lost_up']} / {result['frames_lost_down']}")
    print(f"turns answered                 {result['turns_answered']}")
    print(f"answer after speech p50 / p99  {result['answer_p50_ms']:.0f} / {result['answer_p99_ms']:.0f} ms")
    print(f"failed calls                   {result['failed_calls']} {result['failures'] or ''}")
    print(f"server peak RSS                {result['server_peak_rss_mb']:.0f} MB")
    if result["fake_validation_failures"] or result["server_errors"]:
        print(
            f"problems                       {result['fake_validation_failures']} {result['server_errors']}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60.0, help="measurement window")
    parser.add_argument("--ramp", type=float, default=5.0, help="seconds over which calls start")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument(
        "--server",
        choices=["callassist", "baseline", "baseline-marks"],
        default="callassist",
        help="what to measure: `callassist serve`, or the minimal bridge in bench/baseline.py "
        "(without or with a mark per chunk)",
    )
    parser.add_argument(
        "--engine",
        choices=["realtime", "live"],
        default="realtime",
        help="the fake the server talks to, and CALLASSIST_ENGINE: OpenAI Realtime or GPT-Live",
    )
    parser.add_argument(
        "--role", choices=["bench", "fake", "callers"], default="bench", help=argparse.SUPPRESS
    )
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--report", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    use_uvloop()
    if args.role == "fake":
        asyncio.run(run_fake(args.port, args.report, args.engine))
    elif args.role == "callers":
        asyncio.run(run_callers(args.url, args.calls, args.ramp))
    else:
        result = asyncio.run(orchestrate(args))
        if args.json:
            print(json.dumps(result, indent=2))
        else:
            print_summary(result)


if __name__ == "__main__":
    main()
