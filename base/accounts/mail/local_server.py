"""The local mail catcher for dev and tests: a real SMTP server (aiosmtpd) that keeps every message
it is handed, and an HTTP reader of them (`GET /_local/mail`, as MailHog has), so the account flows
work end to end with no mail account, and tests read links from real mail, never from a back door.
"""
from __future__ import annotations

import asyncio
import email
import email.policy
import itertools
from email.utils import getaddresses
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session

from durable.dev.local_servers import serve_locally

MAX_KEPT = 1000  # oldest first out: a long dev session does not grow without bound


class _Catcher:
    """aiosmtpd's handler: every accepted message parsed and kept, newest last."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self._ids = itertools.count(1)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        parsed = email.message_from_bytes(envelope.original_content or b"", policy=email.policy.default)
        body = parsed.get_body(preferencelist=("plain",))
        self.messages.append({
            "id": next(self._ids), "from": envelope.mail_from, "to": [a.lower() for a in envelope.rcpt_tos],
            "headerTo": [addr for _, addr in getaddresses(parsed.get_all("To", []))],
            "subject": str(parsed.get("Subject", "")), "text": body.get_content() if body is not None else "",
        })
        del self.messages[:-MAX_KEPT]
        return "250 Message accepted for delivery"


class LocalMailServer:
    """SMTP on one free port, the mailbox over HTTP on another, both on 127.0.0.1."""

    def __init__(self) -> None:
        self.catcher = _Catcher()
        self._smtp: asyncio.AbstractServer | None = None
        self._runner: web.AppRunner | None = None
        self.smtp_url = ""
        self.mailbox_url = ""

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._smtp = await loop.create_server(lambda: SMTP(self.catcher, hostname="mail.local"), "127.0.0.1", 0)
        port = self._smtp.sockets[0].getsockname()[1]
        self.smtp_url = f"smtp://127.0.0.1:{port}"
        app = web.Application()
        app.router.add_get("/_local/mail", self._list)
        app.router.add_delete("/_local/mail", self._clear)
        self._runner, base = await serve_locally(app)
        self.mailbox_url = f"{base}/_local/mail"

    async def _list(self, request: web.Request) -> web.Response:
        """Messages, newest first; `?to=` keeps those for one address (case-insensitive)."""
        to = request.query.get("to", "").lower()
        found = [m for m in reversed(self.catcher.messages) if not to or to in m["to"]]
        return web.json_response({"count": len(found), "messages": found})

    async def _clear(self, request: web.Request) -> web.Response:
        self.catcher.messages.clear()
        return web.json_response({"count": 0, "messages": []})

    async def stop(self) -> None:
        if self._smtp is not None:
            self._smtp.close()
            await self._smtp.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()
