"""The dashboard as the tests drive it without a browser: a client that keeps the session cookie (on
an IP address, which aiohttp's default jar refuses) and reads the forms' CSRF token."""

from __future__ import annotations

import re
from typing import Any

import aiohttp

CSRF_FIELD = re.compile(r'name="csrf" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF_FIELD.search(html)
    assert found is not None, "no CSRF token on the page"
    return found.group(1)


class DashboardClient:
    """An owner's browser, minus the browser: cookies kept, redirects not followed."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))

    async def __aenter__(self) -> DashboardClient:
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.http.close()

    async def get(self, path: str, **kwargs: Any) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.get(self.base_url + path, allow_redirects=False, **kwargs) as response:
            return response.status, await response.text(), response

    async def post(
        self, path: str, data: dict[str, str], **kwargs: Any
    ) -> tuple[int, str, aiohttp.ClientResponse]:
        async with self.http.post(
            self.base_url + path, data=data, allow_redirects=False, **kwargs
        ) as response:
            return response.status, await response.text(), response

    async def log_in(self, token: str) -> None:
        status, _, response = await self.post("/dashboard/login", {"token": token})
        assert status == 303 and response.headers["Location"] == "/dashboard", status

    async def csrf(self, path: str = "/dashboard") -> str:
        status, html, _ = await self.get(path)
        assert status == 200, status
        return csrf_of(html)
