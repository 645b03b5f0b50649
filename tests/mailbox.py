"""Reading account mail the way a person would: from the local SMTP catcher's mailbox over HTTP,
taking the link's token out of the message text (never from the database)."""
from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from tests.polling import eventually

LINK = re.compile(r"https?://\S+/account/([a-z-]+)#\S+")  # the token in the fragment, never sent to a server


def mailbox_url(shop: Any) -> str:
    """Where the base worker's local catcher serves its mail (printed at start in `wrangler dev`)."""
    from base.accounts.mail.sender import mailer
    url = mailer(shop.worker.env).mailbox_url
    assert url, "the base worker is not using the local mail catcher"
    return url


async def messages(http: aiohttp.ClientSession, url: str, to: str) -> list[dict[str, Any]]:
    async with http.get(url, params={"to": to}) as resp:
        assert resp.status == 200
        return (await resp.json())["messages"]


async def wait_for_link(shop: Any, to: str, page: str, after: int = 0) -> tuple[str, dict[str, Any]]:
    """The token of the newest `page` link (verify-email, reset-password, unlock-login) mailed to
    `to` in a message with an id over `after`; waits for it to arrive."""
    url = mailbox_url(shop)

    async def newest() -> dict[str, Any] | None:
        for message in await messages(shop.http, url, to):
            found = LINK.search(message["text"])
            if message["id"] > after and found and found.group(1) == page:
                return message
        return None
    message = await eventually(newest)
    assert message, f"no {page} mail reached {to}"
    link = LINK.search(message["text"]).group(0)
    return parse_qs(urlsplit(link).fragment)["token"][0], message


async def last_id(shop: Any) -> int:
    """The newest message id so far (so a test can wait for a mail sent after this point)."""
    async with shop.http.get(mailbox_url(shop)) as resp:
        found = (await resp.json())["messages"]
    return found[0]["id"] if found else 0
