"""The dashboard's session cookie and CSRF token without a server: signing, expiry, logout, and a
new admin token ending every session."""

from __future__ import annotations

from pydantic import SecretStr
from starlette.requests import Request

from callassist.dashboard.session import COOKIE, SESSION_TTL_S, Sessions
from callassist.settings import load_settings

TOKEN = "owner-secret-token-0123456789"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def request(cookie: str | None) -> Request:
    headers = [(b"cookie", f"{COOKIE}={cookie}".encode())] if cookie else []
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/dashboard",
        "query_string": b"",
        "headers": headers,
        "client": ("198.51.100.7", 50000),
        "server": ("127.0.0.1", 8000),
        "scheme": "http",
    }
    return Request(scope)


def sessions(token: str = TOKEN, clock: Clock | None = None) -> Sessions:
    settings = load_settings(_env_file=None, admin_token=SecretStr(token))
    return Sessions(settings, clock=clock or Clock())


def test_a_session_lasts_its_time_and_no_longer() -> None:
    clock = Clock()
    keeper = sessions(clock=clock)
    value, issued = keeper.issue()
    found = keeper.current(request(value))
    assert found is not None and found.csrf == issued.csrf and keeper.csrf_ok(found, issued.csrf)
    clock.now += SESSION_TTL_S - 1
    assert keeper.current(request(value)) is not None
    clock.now += 1
    assert keeper.current(request(value)) is None


def test_tampered_cookies_and_wrong_csrf_tokens_are_refused() -> None:
    keeper = sessions()
    value, issued = keeper.issue()
    expires, nonce, signature = value.split(".")
    assert keeper.current(request(f"{int(expires) + 3600}.{nonce}.{signature}")) is None
    assert keeper.current(request(f"{expires}.other.{signature}")) is None
    flipped = signature[:-1] + ("B" if signature.endswith("A") else "A")
    assert keeper.current(request(f"{expires}.{nonce}.{flipped}")) is None
    assert keeper.current(request("garbage")) is None
    assert keeper.current(request(None)) is None
    assert not keeper.csrf_ok(issued, None)
    assert not keeper.csrf_ok(issued, keeper.csrf_for("another-session"))


def test_logout_ends_the_session_and_a_new_admin_token_ends_all() -> None:
    keeper = sessions()
    kept, _ = keeper.issue()
    value, issued = keeper.issue()
    keeper.revoke(issued)
    assert keeper.current(request(value)) is None
    assert keeper.current(request(kept)) is not None
    assert sessions(token=TOKEN + "-new").current(request(kept)) is None


def test_the_server_names_the_dashboard_when_it_starts() -> None:
    from callassist.runtime import describe_startup

    local = load_settings(_env_file=None, port=8123)
    assert (
        "Dashboard: http://127.0.0.1:8123/dashboard  (this machine only: CALLASSIST_ADMIN_TOKEN is not set)"
        in (describe_startup(local))
    )
    public = load_settings(
        _env_file=None,
        public_base_url="https://owner.example.net",
        admin_token=SecretStr(TOKEN),
        twilio_auth_token=SecretStr("twilio-auth-token"),
    )
    assert "Dashboard: https://owner.example.net/dashboard" in describe_startup(public)
