"""A simulated phone caller that plays Twilio's part faithfully against a callassist server.

`CallerSimulator.place_call()` does what Twilio does for an inbound call: it POSTs the signed voice webhook,
follows the TwiML (`<Dial>` answered or not, `<Connect><Stream>`, `<Say>`, `<Hangup/>`...), opens the signed
Media Streams WebSocket and hands it to the `SimulatedCall` (`call.py`), which sends `connected` + `start`,
then streams caller audio in 20 ms frames at real-time pace (`stream.py`). When the server closes the
stream, the `<Connect action>` URL is fetched and its TwiML followed; when the `<Stream>` has a
`statusCallback`, stream-started / stream-stopped / stream-error are POSTed to it, signed, as Twilio does.
`<Dial><Conference>` joins the account's room (`conference.py`). A REST update of the call (`rest.py`
calls `redirect()`) replaces its TwiML at once: a running stream gets `stop` and is closed, and the
new TwiML is followed (a later `<Connect><Stream>` opens a new stream with a new StreamSid).
Everything observable is recorded on the `SimulatedCall` as timestamped events (`record.py`), and
server-side protocol mistakes land in `violations` instead of crashing the simulator. Protocol facts come
from Twilio's docs: https://www.twilio.com/docs/voice/media-streams/websocket-messages (the stream's
messages), https://www.twilio.com/docs/voice/twiml/stream, https://www.twilio.com/docs/voice/twiml/connect
and https://www.twilio.com/docs/voice/twiml/dial (the TwiML), and
https://www.twilio.com/docs/usage/webhooks/webhooks-security (the signatures).

One reason it runs past 500 lines: it follows TwiML verb by verb as Twilio does (REST redirects
included), and the verbs share the call's state and its webhooks; split, the follower would be read
in pieces.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlencode, urljoin, urlsplit, urlunsplit

import aiohttp
from twilio.request_validator import RequestValidator
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from callassist.simulator import twiml as tw
from callassist.simulator.call import SimulatedCall
from callassist.simulator.conference import Conferences
from callassist.simulator.errors import SimulatorError, StreamRejected, WebhookError
from callassist.simulator.ids import new_sid
from callassist.simulator.owner import Owner, ring
from callassist.simulator.record import CallRecord
from callassist.simulator.stream import WEBHOOK_TIMEOUT_S
from callassist.simulator.voicemail import Record, follow_record

__all__ = ["CallerSimulator"]

STREAM_OPEN_TIMEOUT_S = 10.0


@dataclass(slots=True)
class _Link:
    """Where the simulated Twilio sends things, and how it signs them."""

    base_url: str
    validator: RequestValidator | None

    def local_url(self, public_url: str, *, websocket: bool = False) -> str:
        """Same path on the simulator's base host: the public URL may name a tunnel we can't reach."""
        base = urlsplit(self.base_url)
        scheme = base.scheme
        if websocket:
            scheme = "wss" if scheme == "https" else "ws"
        path = urlsplit(public_url).path or "/"
        query = "" if websocket else urlsplit(public_url).query
        return urlunsplit((scheme, base.netloc, path, query, ""))

    def sign(self, url: str, params: dict[str, str]) -> dict[str, str]:
        if self.validator is None:
            return {}
        return {"X-Twilio-Signature": self.validator.compute_signature(url, params)}


class CallerSimulator:
    """Places simulated inbound calls against a callassist server, playing Twilio's side faithfully."""

    def __init__(
        self,
        base_url: str = "http://127.0.0.1:8000",
        *,
        auth_token: str | None = None,
        account_sid: str | None = None,
        public_base_url: str | None = None,
        incoming_path: str = "/voice/incoming",
        conferences: Conferences | None = None,
    ) -> None:
        if urlsplit(base_url).scheme not in ("http", "https"):
            raise ValueError(f"base_url must be http(s)://host[:port], got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.public_base_url = (public_base_url or base_url).rstrip("/")
        self.auth_token = auth_token
        self.account_sid = account_sid or new_sid("AC")
        self.incoming_path = incoming_path
        self._link = _Link(self.base_url, RequestValidator(auth_token) if auth_token else None)
        # Every call placed, by CallSid: the REST stand-in (rest.py) finds a call to update here.
        self.calls: dict[str, SimulatedCall] = {}
        # The account's conference rooms (`<Dial><Conference>`), shared with the REST stand-in's legs.
        self.conferences = conferences if conferences is not None else Conferences()

    def webhook_params(
        self, *, call_sid: str, from_number: str, to_number: str, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        """The form fields Twilio POSTs to the voice webhook for an inbound call."""
        params = {
            "AccountSid": self.account_sid,
            "ApiVersion": "2010-04-01",
            "CallSid": call_sid,
            "CallStatus": "ringing",
            "Called": to_number,
            "CalledCity": "",
            "CalledCountry": "US",
            "CalledState": "CA",
            "CalledZip": "",
            "Caller": from_number,
            "CallerCity": "SAN FRANCISCO",
            "CallerCountry": "US",
            "CallerState": "CA",
            "CallerZip": "94103",
            "Direction": "inbound",
            "From": from_number,
            "FromCity": "SAN FRANCISCO",
            "FromCountry": "US",
            "FromState": "CA",
            "FromZip": "94103",
            "To": to_number,
            "ToCity": "",
            "ToCountry": "US",
            "ToState": "CA",
            "ToZip": "",
        }
        params.update(extra or {})
        return params

    async def place_call(
        self,
        *,
        from_number: str = "+15551230000",
        to_number: str = "+15559870000",
        owner_answers: bool = False,
        call_sid: str | None = None,
        extra_params: dict[str, str] | None = None,
        owner: Owner | str | None = None,
    ) -> SimulatedCall:
        """Ring the server. Returns once `start` is on the stream, or once the call ended without a stream.

        Raises WebhookError / StreamRejected (both SimulatorError, `.call` set) if Twilio would have failed
        the call before the stream started. A server that accepts the stream and then closes it (e.g. 1008)
        is not an error here: see `call.close_code` after `wait_closed()`.

        `owner`: what the owner's phone does when a `<Dial>` rings it (`simulator.owner.Owner`: press
        1 or 2 on the whisper, no key, hang up, a voicemail answering...); by default it answers and
        takes the call if `owner_answers`, else it rings out.
        """
        behaviour = Owner(owner) if owner is not None else Owner.press_1 if owner_answers else Owner.no_answer
        call = SimulatedCall(
            call_sid=call_sid or new_sid("CA"),
            account_sid=self.account_sid,
            from_number=from_number,
            to_number=to_number,
        )
        params = self.webhook_params(
            call_sid=call.call_sid, from_number=from_number, to_number=to_number, extra=extra_params
        )
        call._params = params
        call._owner = behaviour
        self.calls[call.call_sid] = call
        call._follower = asyncio.create_task(
            self._follow(call, params, behaviour), name=f"sim-twiml-{call.call_sid[-6:]}"
        )
        try:
            await asyncio.shield(call._ready)
        except asyncio.CancelledError:
            call._follower.cancel()
            call._end("cancelled")
            raise
        return call

    # ----- Twilio's TwiML interpreter ----------------------------------------------------------------------

    async def _follow(self, call: SimulatedCall, params: dict[str, str], owner: Owner) -> None:
        url = self.public_base_url + self.incoming_path
        await self._run(call, params, owner, first=(url, "POST", params), verbs=None, doc_url=url)

    async def _run(
        self,
        call: SimulatedCall,
        params: dict[str, str],
        owner: Owner,
        *,
        first: tuple[str, str, dict[str, str]] | None,
        verbs: list[tw.Verb] | None,
        doc_url: str,
    ) -> None:
        """Follow TwiML: fetch `first` (or run `verbs`, inline TwiML from a REST update) to the end."""
        try:
            url = doc_url
            if verbs is None:
                assert first is not None
                url, method, request_params = first
                what = "voice webhook" if request_params is params else "TwiML request"
                verbs = await self._fetch(call, url, method, request_params, what=what)
            while True:
                next_request: tuple[str, str, dict[str, str]] | None = None
                for verb in verbs:
                    call._record_verb(verb)
                    if isinstance(verb, tw.Hangup):
                        call._end("hangup")
                        return
                    if isinstance(verb, tw.Reject):
                        call._end(f"rejected ({verb.reason})")
                        return
                    if isinstance(verb, tw.Redirect):
                        next_request = (
                            urljoin(url, verb.url),
                            verb.method,
                            self._later(params, "in-progress"),
                        )
                        break
                    if isinstance(verb, tw.Dial):
                        next_request = await self._dial(call, verb, url, params, owner)
                        if next_request is not None:
                            break
                    elif isinstance(verb, tw.Connect):
                        outcome = await self._connect(call, verb, url)
                        if outcome == "caller":
                            return  # hang_up() ends the call; Twilio runs no more TwiML for a gone caller
                        if verb.action:
                            next_request = (
                                urljoin(url, verb.action),
                                verb.method,
                                self._later(params, "in-progress"),
                            )
                            break
                    elif isinstance(verb, Record):  # callassist.simulator.voicemail
                        next_request = await follow_record(call, verb, url, params, self._request)
                        if next_request is not None:
                            break
                    elif isinstance(verb, tw.Unsupported):
                        call._warn(f"<{verb.tag}> is not simulated; skipped")
                    elif isinstance(verb, tw.Gather):  # simulated on the owner's leg only (owner.py)
                        call._warn("<Gather> on the caller's leg is not simulated; skipped")
                    # <Say> and <Pause> are recorded only: the simulator does not wait them out.
                if next_request is None:
                    call._end("twiml finished")  # no verbs left: Twilio hangs up
                    return
                url, method, request_params = next_request
                verbs = await self._fetch(call, url, method, request_params, what="TwiML request")
        except SimulatorError as exc:
            call._fail(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            call._fail(SimulatorError(f"simulator bug while following TwiML: {exc!r}"))

    @staticmethod
    def _later(params: dict[str, str], status: str) -> dict[str, str]:
        return {**params, "CallStatus": status}

    async def _dial(
        self, call: SimulatedCall, verb: tw.Dial, url: str, params: dict[str, str], owner: Owner
    ) -> tuple[str, str, dict[str, str]] | None:
        if verb.conference is not None:
            return await self._conference(call, verb, url, params)

        # Resolved at once instead of ringing for `timeout` (+ Twilio's ~5 s buffer,
        # https://www.twilio.com/docs/voice/twiml/dial); a <Number url> is run on the owner's leg.
        async def fetch(doc_url: str, method: str, leg: dict[str, str], what: str) -> list[tw.Verb]:
            return await self._fetch(call, doc_url, method, leg, what=what)

        outcome = await ring(call, verb, url, owner, fetch)
        answered = outcome.bridged
        status = outcome.status
        call.dial_status = status
        call._emit("dial", targets=list(verb.targets), status=status, timeout=verb.timeout)
        if not verb.action:
            return None  # Twilio continues with the next verb
        # answerOnBridge keeps the inbound leg unanswered (ringing) until someone picks up.
        call_status = "ringing" if verb.answer_on_bridge and not answered else "in-progress"
        dial_params = {
            **self._later(params, call_status),
            "DialCallStatus": status,
            "DialCallSid": outcome.dial_call_sid,
            "DialCallDuration": "30" if answered else "0",
            "DialBridged": "true" if answered else "false",
        }
        return urljoin(url, verb.action), verb.method, dial_params

    async def _conference(
        self, call: SimulatedCall, verb: tw.Dial, url: str, params: dict[str, str]
    ) -> tuple[str, str, dict[str, str]] | None:
        """`<Dial><Conference>` on the caller's leg: join the room and stay until the leg leaves it (the
        conference ends under it) or the call is hung up / redirected (this task is cancelled).

        Then, as https://www.twilio.com/docs/voice/twiml/dial#action documents: the `action` gets
        DialCallStatus `answered` ("When calling a conference, the called party answered the call and
        was connected to the caller"), with neither DialCallSid nor DialCallDuration ("not sent after
        dialing a conference"); DialBridged is sent (no exception is stated for it). Without an
        `action`, the next verb runs.
        """
        assert verb.conference is not None
        participant = self.conferences.join(call, verb.conference, role="caller")
        try:
            await participant.done.wait()
        finally:
            # Cancelled: the caller hung up, or the call got new TwiML: the leg leaves the room.
            self.conferences.leave(participant, "the caller's leg left the conference")
        status = "answered"
        call.dial_status = status
        call._emit(
            "dial",
            targets=list(verb.targets),
            status=status,
            timeout=verb.timeout,
            conference=verb.conference.name,
            bridged=participant.bridged,
        )
        if not verb.action:
            return None
        dial_params = {
            **self._later(params, "in-progress"),
            "DialCallStatus": status,
            "DialBridged": "true" if participant.bridged else "false",
        }
        return urljoin(url, verb.action), verb.method, dial_params

    # ----- REST updates (rest.py) ---------------------------------------------------------------------------

    def redirect(
        self,
        call: SimulatedCall,
        *,
        verbs: list[tw.Verb] | None = None,
        url: str | None = None,
        method: str = "POST",
        source: str = "",
    ) -> None:
        """Twilio's side of a REST update of an in-progress call with new TwiML (`Twiml`, or `Url` and
        `Method`): "Twilio will immediately redirect the call to the new TwiML"
        (https://www.twilio.com/docs/voice/api/call-resource#update-a-call-resource).

        The running verb is abandoned at once. A `<Connect><Stream>` running gets `stop` and its
        WebSocket is closed: Twilio's page says `stop` is sent "when the Stream is either <Stop>ped
        or the Call has ended" (https://www.twilio.com/docs/voice/media-streams/websocket-messages)
        and does not name a redirect; users report a redirected call's socket getting `stop`
        (https://github.com/vocodedev/vocode-core/issues/276), so the simulator sends it and closes.
        Its `<Connect action>` is *not* requested: the `<Connect>` page says the action is requested
        "when the <Connect> verb ends", and a redirect replaces the document the verb belonged to;
        Twilio does not say an abandoned verb's action runs, so the simulator is strict and never
        requests it (a server must not rely on it). A `<Dial>` in progress (a conference) is left
        likewise, without its action. Then the new TwiML is followed like any other.
        """
        if call.ended:
            raise ValueError(f"{call.call_sid} is not in progress")
        described = [verb.describe() for verb in verbs or ()]
        call._emit("redirected", url=url, method=method, source=source, verbs=described)
        old = call._follower
        if old is not None:
            old.cancel()
        call._follower = asyncio.create_task(
            self._after_redirect(call, old, verbs, url, method), name=f"sim-twiml-{call.call_sid[-6:]}"
        )

    async def _after_redirect(
        self,
        call: SimulatedCall,
        old: asyncio.Task[None] | None,
        verbs: list[tw.Verb] | None,
        url: str | None,
        method: str,
    ) -> None:
        await call._end_stream_for_redirect()
        if old is not None and not old.done():
            await asyncio.wait({old}, timeout=WEBHOOK_TIMEOUT_S)  # let the abandoned verb clean up
        if call.ended:
            return
        if verbs is None:
            assert url is not None
            first = (url, method, self._later(call._params, "in-progress"))
            await self._run(call, call._params, call._owner, first=first, verbs=None, doc_url=url)
        else:
            await self._run(call, call._params, call._owner, first=None, verbs=verbs, doc_url="")

    async def _request(
        self, public_url: str, method: str, params: dict[str, str], *, what: str
    ) -> tuple[int, str]:
        """One webhook request the way Twilio makes it (signed against the public URL): (status, body)."""
        local = self._link.local_url(public_url)
        headers = {
            "User-Agent": "TwilioProxy/1.1",
            "I-Twilio-Idempotency-Token": str(uuid.uuid4()),
        }
        if method == "GET":
            # For GET, Twilio puts the parameters in the query string and signs the full URL.
            separator = "&" if urlsplit(public_url).query else "?"
            signed_url = public_url + separator + urlencode(params)
            headers.update(self._link.sign(signed_url, {}))
            request_kwargs: dict[str, Any] = {"params": params}
        else:
            headers.update(self._link.sign(public_url, params))
            request_kwargs = {"data": params}
        try:
            timeout = aiohttp.ClientTimeout(total=WEBHOOK_TIMEOUT_S)
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.request(method, local, headers=headers, **request_kwargs) as response,
            ):
                return response.status, await response.text()
        except TimeoutError:
            raise WebhookError(f"{what} {local} did not answer within {WEBHOOK_TIMEOUT_S:g}s") from None
        except (aiohttp.ClientError, OSError) as exc:
            reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
            raise WebhookError(f"cannot reach the server at {local}: {reason}") from None

    async def _fetch(
        self, call: CallRecord, public_url: str, method: str, params: dict[str, str], *, what: str
    ) -> list[tw.Verb]:
        """Request TwiML the way Twilio does (signed against the public URL) and parse it."""
        local = self._link.local_url(public_url)
        call._emit("webhook", url=public_url, method=method, params=dict(params))
        status, body = await self._request(public_url, method, params, what=what)
        if not 200 <= status < 300:
            raise WebhookError(
                f"{what} {local} answered HTTP {status}: {body.strip()[:200] or '(empty body)'}",
                status=status,
            )
        call.twiml_log.append(body)
        call._emit("twiml", url=public_url, status=status, body=body)
        try:
            return tw.parse_twiml(body)
        except tw.TwimlError as exc:
            raise WebhookError(f"{what} {local} returned no valid TwiML: {exc}", status=status) from None

    async def _connect(
        self, call: SimulatedCall, verb: tw.Connect, doc_url: str
    ) -> Literal["caller", "server", "failed"]:
        """Run a `<Connect><Stream>` to its end: open, stream, and wait until either side closes."""
        stream = verb.stream
        if stream is None or not stream.url:
            call._warn("<Connect> without a <Stream url>: nothing to connect")
            return "failed"
        if call.stream_opened or call.stream_url is not None:
            if not call.stream_ended:
                call._warn("a second <Connect><Stream> while the first is open is not simulated; skipped")
                return "failed"
            call._new_stream()  # after a REST redirect: a new stream on the same call
        call.stream_url = stream.url
        if stream.status_callback:
            call._status = self._status_reporter(call, stream, urljoin(doc_url, stream.status_callback))
        parts = urlsplit(urljoin(doc_url, stream.url))
        if parts.scheme != "wss":
            call._warn(f"Stream url {stream.url!r} is not wss://; real Twilio refuses it (31922)")
        elif parts.port not in (None, 443):
            call._warn(f"Stream url {stream.url!r} is not on port 443; real Twilio needs it (31910)")
        if parts.query:
            call._warn(
                f"Stream url {stream.url!r} has a query string; Twilio drops it, use <Parameter> (31920)"
            )
        local = self._link.local_url(stream.url, websocket=True)
        # Signed exactly as written in the TwiML (wss://), with no params: the upgrade is a GET
        # (https://www.twilio.com/docs/usage/webhooks/webhooks-security,
        # https://github.com/twilio-labs/twilio-aspnet/issues/162).
        headers = self._link.sign(stream.url, {})
        try:
            ws = await connect(
                local,
                additional_headers=headers,
                user_agent_header="Twilio.TmeWs/1.0",
                compression=None,
                open_timeout=STREAM_OPEN_TIMEOUT_S,
                ping_interval=None,
                close_timeout=5,
                max_size=None,  # Twilio accepts media messages "of any size"
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            self._stream_failed(
                call,
                StreamRejected(
                    f"the server refused the media stream {local} with HTTP {status}"
                    + (" (bad or missing X-Twilio-Signature?)" if status in (401, 403) else ""),
                    status=status,
                ),
            )
            return "failed"
        except (OSError, TimeoutError, InvalidHandshake, InvalidURI) as exc:
            self._stream_failed(call, StreamRejected(f"cannot open the media stream {local}: {exc}"))
            return "failed"
        try:
            await call._open(ws, stream.parameters)
        except ConnectionClosed:
            call._on_stream_closed(ws)
            self._stream_failed(
                call,
                StreamRejected(
                    f"the server closed the media stream before `start` was sent "
                    f"(code {ws.close_code}{': ' + ws.close_reason if ws.close_reason else ''})",
                    close_code=ws.close_code,
                ),
            )
            return "failed"
        if not call._ready.done():
            call._ready.set_result(None)
        await call._stream_done.wait()
        return "caller" if call._hung_up else "server"

    def _status_reporter(
        self, call: SimulatedCall, stream: tw.Stream, url: str
    ) -> Callable[[str, str | None], Coroutine[Any, Any, None]]:
        """Posts <Stream statusCallback> events: AccountSid, CallSid, StreamSid, StreamName (when the
        stream is named), StreamEvent, StreamError (errors only), Timestamp; signed as any webhook.
        Twilio ignores the answer except to log a failure in its debugger: here, a warning."""

        async def report(event: str, error: str | None) -> None:
            params = {
                "AccountSid": call.account_sid,
                "CallSid": call.call_sid,
                "StreamSid": call.stream_sid,
                "StreamEvent": event,
                "Timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            }
            if stream.name:
                params["StreamName"] = stream.name
            if error is not None:
                params["StreamError"] = error
            status: int | None = None
            try:
                status, _ = await self._request(
                    url, stream.status_callback_method, params, what="stream statusCallback"
                )
            except WebhookError as exc:
                call._warn(f"{event} statusCallback failed: {exc}")
            else:
                if not 200 <= status < 300:
                    call._warn(f"{event} statusCallback {url} answered HTTP {status}")
            call.stream_statuses.append((event, status))
            call._emit("stream_status", event=event, status=status, error=error)

        return report

    @staticmethod
    def _stream_failed(call: SimulatedCall, error: StreamRejected) -> None:
        # Twilio logs the failure and carries on with the next verb; the caller of place_call gets the error.
        call._report_stream("stream-error", str(error))
        error.call = call
        call.errors.append(str(error))
        call._emit("stream_rejected", message=str(error), status=error.status, close_code=error.close_code)
        if not call._ready.done():
            call._ready.set_exception(error)
