"""A shopper's trip through sign-in with a provider, as a browser makes it: our start (and the
cookie it sets) → the local provider, which approves at once → our callback."""
from __future__ import annotations

import html
import re
import secrets
from typing import Any
from urllib.parse import parse_qs, urlsplit


BINDING_COOKIES = ("shop_signin", "__Host-shop_signin")  # plain over http; `__Host-` wherever it is Secure


def binding(resp: Any) -> Any:
    """The browser-binding cookie our start set (a Morsel), under whichever name it has."""
    found = [resp.cookies[name] for name in BINDING_COOKIES if name in resp.cookies]
    assert len(found) <= 1, found
    return found[0] if found else None


class Flow:
    """One shopper's trip: our start → the provider (which approves at once) → our callback."""

    def __init__(self, shop: Any, provider: str) -> None:
        self.shop, self.provider, self.http = shop, provider, shop.http
        self.authorize_url = ""
        self.callback: tuple[str, str, dict[str, str]] = ("", "", {})  # method, url, params
        self.cookie: Any = None  # the browser binding our start set (a Morsel)

    @property
    def provider_origin(self) -> str:
        parts = urlsplit(self.authorize_url)
        return f"{parts.scheme}://{parts.netloc}"

    async def start(self) -> Flow:
        async with self.http.get(f"{self.shop.url}/user/auth/{self.provider}", allow_redirects=False) as resp:
            assert resp.status == 302, await resp.text()
            self.authorize_url = resp.headers["Location"]
            self.cookie = binding(resp)
        return self

    async def link(self, token: str) -> Flow:
        """Start linking this provider to the signed-in account instead of signing in."""
        async with self.http.post(f"{self.shop.url}/user/me/identities/{self.provider}",
                                  headers={"Authorization": f"Bearer {token}"}) as resp:
            body = await resp.json()
            assert resp.status == 200, body
            self.authorize_url = body["authorizationUrl"]
            self.cookie = binding(resp)
        return self

    @property
    def cookie_header(self) -> dict[str, str]:
        """What the browser sends back (aiohttp's jar keeps no cookies for an IP address, so the
        flow carries it as a browser would)."""
        return {"Cookie": f"{self.cookie.key}={self.cookie.value}"} if self.cookie is not None else {}

    async def as_identity(self, **identity: Any) -> Flow:
        async with self.http.post(f"{self.provider_origin}/_local/{self.provider}/identity", json=identity) as resp:
            assert resp.status == 200, await resp.text()
        return self

    async def approve(self) -> Flow:
        """What the browser does at the provider: follow its answer back to our callback."""
        async with self.http.get(self.authorize_url, allow_redirects=False) as resp:
            if resp.status == 302:
                location = resp.headers["Location"]
                params = {k: v[0] for k, v in parse_qs(urlsplit(location).query).items()}
                self.callback = ("GET", location.split("?")[0], params)
            else:  # Apple's form_post page
                page = await resp.text()
                action = html.unescape(re.search(r'action="([^"]+)"', page).group(1))
                fields = {html.unescape(k): html.unescape(v)
                          for k, v in re.findall(r'name="([^"]+)" value="([^"]*)"', page)}
                self.callback = ("POST", action, fields)
        return self

    async def finish(self, browser: bool = True, **override: str) -> tuple[int, dict[str, Any]]:
        """`browser=False`: the callback arrives without our cookie (another browser: login CSRF)."""
        method, url, params = self.callback
        params = {**params, **override}
        headers = self.cookie_header if browser else {}
        if method == "GET":
            request = self.http.get(url, params=params, headers=headers)
        else:
            request = self.http.post(url, data={**params, "user": '{"name":{"firstName":"Ann"}}'}, headers=headers)
        async with request as resp:
            return resp.status, await resp.json()

    async def run(self, **identity: Any) -> tuple[int, dict[str, Any]]:
        await self.start()
        if identity:
            await self.as_identity(**identity)
        await self.approve()
        return await self.finish()


def person(provider: str, **extra: Any) -> dict[str, Any]:
    return {"sub": f"{provider}-{secrets.token_hex(6)}", "email": f"{secrets.token_hex(4)}@mail.example",
            "email_verified": True, **extra}
