"""The owner's gate without a server: the failure limiter's window and memory bound, whom it counts
as one client, the calendar feed's derived token, and the admin token's minimum length."""

from __future__ import annotations

import pytest
from starlette.requests import Request

from callassist.dashboard.auth import FEED_TOKEN_LENGTH, FailureLimiter, client_key, feed_token
from callassist.settings import MIN_ADMIN_TOKEN_LENGTH, SettingsError, load_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def request(client: str, headers: dict[str, str] | None = None) -> Request:
    scope = {
        "type": "http",
        "method": "GET",
        "path": "/api/calls",
        "query_string": b"",
        "headers": [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()],
        "client": (client, 50000),
        "server": ("127.0.0.1", 8000),
        "scheme": "http",
    }
    return Request(scope)


def test_five_failures_in_a_minute_make_a_client_wait_until_the_first_is_a_minute_old() -> None:
    clock = Clock()
    limiter = FailureLimiter(allowed=5, window_s=60, clock=clock)
    for _ in range(4):
        limiter.failed("a")
        clock.now += 10
    assert limiter.retry_after("a") is None
    limiter.failed("a")  # 5th, 40 s after the first
    assert limiter.retry_after("a") == 20
    assert limiter.retry_after("b") is None
    clock.now += 20.5
    assert limiter.retry_after("a") is None  # the first failure left the window
    limiter.failed("a")
    assert limiter.retry_after("a") == 10  # the second one is now the oldest of five
    limiter.succeeded("a")
    assert limiter.retry_after("a") is None


def test_memory_is_bounded_by_clients_and_failures_per_client() -> None:
    clock = Clock()
    limiter = FailureLimiter(allowed=5, window_s=60, max_clients=100, clock=clock)
    for number in range(10_000):
        limiter.failed(f"client-{number}")
    assert len(limiter) == 100
    assert limiter.retry_after("client-0") is None  # forgotten: the least recently refused go first
    for _ in range(1000):
        limiter.failed("client-9999")
    assert len(limiter._failures["client-9999"]) == 5
    clock.now += 61
    limiter.retry_after("client-9999")
    assert "client-9999" not in limiter._failures  # expired entries are dropped when looked at


def test_one_client_is_one_address_as_the_tunnel_reports_it() -> None:
    assert client_key(request("203.0.113.9")) == "203.0.113.9"
    # A direct public client cannot choose its key with a header.
    for header in ("X-Forwarded-For", "X-Real-IP", "CF-Connecting-IP"):
        assert client_key(request("203.0.113.9", {header: "192.0.2.1"})) == "203.0.113.9"
    # Behind a tunnel on this machine: the address the tunnel appended to X-Forwarded-For, whatever
    # the client put before it or in headers the tunnel passes through.
    tunnel = {"X-Forwarded-For": "10.9.9.9, 198.51.100.7"}
    assert client_key(request("127.0.0.1", tunnel)) == "198.51.100.7"
    spoofed = {
        **tunnel,
        "X-Real-IP": "192.0.2.1",
        "CF-Connecting-IP": "192.0.2.2",
        "Forwarded": "for=192.0.2.3",
    }
    assert client_key(request("127.0.0.1", spoofed)) == "198.51.100.7"
    assert client_key(request("127.0.0.1", {"X-Real-IP": "192.0.2.1"})) == "127.0.0.1"
    assert client_key(request("::1", {"CF-Connecting-IP": "192.0.2.2"})) == "::1"
    assert client_key(request("127.0.0.1", {"X-Forwarded-For": "192.0.2.7:4711"})) == "192.0.2.7"
    # An IPv6 subscriber's /64 is one client, however many addresses it uses.
    assert client_key(request("2001:db8:1:2::1")) == client_key(request("2001:db8:1:2:ffff::9"))
    assert client_key(request("127.0.0.1")) == "127.0.0.1"
    assert len(client_key(request("127.0.0.1", {"X-Forwarded-For": "x" * 1000}))) <= 64


def test_the_owner_may_name_the_one_header_their_proxy_sets() -> None:
    cloudflare = {"X-Forwarded-For": "192.0.2.1, 198.51.100.7", "CF-Connecting-IP": "198.51.100.8"}
    assert client_key(request("127.0.0.1", cloudflare), "cf-connecting-ip") == "198.51.100.8"
    # Only that header: when it is missing, X-Forwarded-For is not consulted instead.
    assert client_key(request("127.0.0.1", {"X-Forwarded-For": "192.0.2.1"}), "x-real-ip") == "127.0.0.1"
    forwarded = {"Forwarded": 'for=192.0.2.60;proto=https, for="[2001:db8:cafe::17]:4711"'}
    assert client_key(request("127.0.0.1", forwarded), "forwarded") == "2001:db8:cafe::/64"
    # A direct client still cannot choose its key.
    assert client_key(request("203.0.113.9", cloudflare), "cf-connecting-ip") == "203.0.113.9"
    assert load_settings(_env_file=None, client_ip_header=" CF-Connecting-IP ").client_ip_header == (
        "cf-connecting-ip"
    )
    assert load_settings(_env_file=None, client_ip_header="").client_ip_header is None
    with pytest.raises(SettingsError):
        load_settings(_env_file=None, client_ip_header="X-Real-IP: 1.2.3.4")


def test_the_feed_token_is_derived_from_the_admin_token_and_is_not_it() -> None:
    admin = "owner-secret-token-0123456789"
    token = feed_token(load_settings(_env_file=None, admin_token=admin))
    assert token is not None and len(token) == FEED_TOKEN_LENGTH
    assert set(token) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")
    assert token not in admin and admin not in token
    assert feed_token(load_settings(_env_file=None, admin_token=admin)) == token  # stable
    assert feed_token(load_settings(_env_file=None, admin_token=admin + "x")) != token  # rotates
    assert feed_token(load_settings(_env_file=None, admin_token="")) is None


def test_the_admin_token_must_be_long(monkeypatch: pytest.MonkeyPatch) -> None:
    short = "s3cret-but-short"
    with pytest.raises(SettingsError) as refused:
        load_settings(_env_file=None, admin_token=short)
    assert "CALLASSIST_ADMIN_TOKEN" in str(refused.value)
    assert f"at least {MIN_ADMIN_TOKEN_LENGTH} characters" in str(refused.value)
    assert short not in str(refused.value)
    with pytest.raises(SettingsError):
        load_settings(_env_file=None, admin_token=" " * 30)
    monkeypatch.setenv("CALLASSIST_ADMIN_TOKEN", "x" * (MIN_ADMIN_TOKEN_LENGTH - 1))
    with pytest.raises(SettingsError):
        load_settings(_env_file=None)
    monkeypatch.setenv("CALLASSIST_ADMIN_TOKEN", "x" * MIN_ADMIN_TOKEN_LENGTH)
    assert load_settings(_env_file=None).admin_token is not None
    monkeypatch.setenv("CALLASSIST_ADMIN_TOKEN", "")  # empty: unset, loopback only
    assert not load_settings(_env_file=None).admin_token
