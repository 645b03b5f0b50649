"""Sending account mail over SMTP (aiosmtplib: async, so nothing blocks the event loop).

`SMTP_URL` (a secret: it may carry the relay's password) says where: `smtp://user:pass@host:587`
(STARTTLS; outside development a relay that does not offer it is refused rather than sent the
password in the clear), `smtps://…:465` (TLS from the first byte), `smtp://host:25`.
`MAIL_FROM` is the sender. In dev with `LOCAL_MAIL = "auto"` and no `SMTP_URL`, mail goes to the
local catcher (`local_server.py`), shared by the processes of one dev state like the other
stand-ins; in production a missing `SMTP_URL` or `MAIL_FROM` stops the start.

Mail leaves in the background (`send_soon`): an answer never waits on the relay, and whether a
message was sent (an account exists) cannot be read from an answer's timing.
"""
from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass, replace
from email.message import EmailMessage
from email.utils import formatdate, getaddresses, make_msgid
from typing import Any
from urllib.parse import unquote, urlsplit

import aiosmtplib

from durable.config import is_development
from durable.dev.local_servers import announce, claim

log = logging.getLogger("rest_shop.mail")
DEFAULT_FROM = "rest-shop <no-reply@shop.localhost>"


class MailConfigError(ValueError):
    """SMTP_URL or MAIL_FROM cannot be used."""


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int
    username: str | None = None
    password: str | None = None
    use_tls: bool = False  # smtps://: TLS from the first byte
    require_starttls: bool = False  # smtp:// with a password outside development: STARTTLS or no send

    @classmethod
    def from_url(cls, url: str) -> SmtpSettings:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("smtp", "smtps") or not parts.hostname:
            raise MailConfigError("SMTP_URL must look like smtp://user:password@host:587 or smtps://host:465")
        try:
            port = parts.port or (465 if parts.scheme == "smtps" else 587)
        except ValueError:
            raise MailConfigError("SMTP_URL has an invalid port") from None
        return cls(parts.hostname, port, unquote(parts.username) if parts.username else None,
                   unquote(parts.password) if parts.password else None, parts.scheme == "smtps")


def _local_allowed(env: Any) -> bool:
    return str(env.get("LOCAL_MAIL", "auto")) == "auto" and is_development(env)


def settings_problems(env: Any) -> list[str]:
    """What stops a production start: account mail (verification, reset, unlock) needs a relay."""
    url = env.get("SMTP_URL")
    if not url:
        return [] if _local_allowed(env) else [
            "SMTP_URL is not set: signup verification, password reset and unlock links are mailed "
            "(e.g. smtp://user:password@smtp.example.com:587)"]
    problems = []
    try:
        SmtpSettings.from_url(str(url))
    except MailConfigError as exc:
        problems.append(str(exc))
    if not _local_allowed(env) and not env.get("MAIL_FROM"):
        problems.append("MAIL_FROM is not set: the sender of account mail (e.g. \"Shop <no-reply@shop.example>\")")
    return problems


class Mailer:
    """One relay, one sender; messages in flight are tracked so shutdown can wait for them."""

    def __init__(self, settings: SmtpSettings, sender: str, timeout_s: float = 10.0,
                 mailbox_url: str | None = None) -> None:
        self.settings, self.sender, self.timeout_s = settings, sender, timeout_s
        self.mailbox_url = mailbox_url  # the local catcher's reader, in dev
        self._pending: set[asyncio.Task[None]] = set()

    def message(self, to: str, subject: str, text: str) -> EmailMessage:
        msg = EmailMessage()
        msg["From"], msg["To"], msg["Subject"] = self.sender, to, subject
        msg["Date"], msg["Message-ID"] = formatdate(localtime=False), make_msgid(domain="rest-shop")
        msg.set_content(text)
        return msg

    async def send(self, to: str, subject: str, text: str) -> None:
        """To `to` alone: the envelope's recipient is given, never parsed back out of the `To`
        header (where an address with a comma in it would become two recipients)."""
        s = self.settings
        start_tls = True if s.require_starttls and not s.use_tls else None  # None: STARTTLS if offered
        await aiosmtplib.send(self.message(to, subject, text), sender=self.envelope_sender, recipients=[to],
                              hostname=s.host, port=s.port, username=s.username, password=s.password,
                              use_tls=s.use_tls, start_tls=start_tls, timeout=self.timeout_s)

    @property
    def envelope_sender(self) -> str:
        return getaddresses([self.sender])[0][1] or self.sender

    def send_soon(self, to: str, subject: str, text: str) -> None:
        """Send in the background; a failure is logged (never the message: it carries a link)."""
        self.soon(self.send(to, subject, text), f"mail {subject!r} to one recipient")

    def soon(self, work: Awaitable[None], what: str) -> None:
        """Run `work` (a mail, or the steps that lead to one) in the background, tracked so shutdown
        waits for it: an answer does not wait on it, nor can its timing tell what it did."""
        async def run() -> None:
            try:
                await work
            except Exception as exc:  # noqa: BLE001 (logged: the caller has answered already)
                log.error("could not %s: %s: %s", what, type(exc).__name__, exc)
        task = asyncio.ensure_future(run())
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def drain(self) -> None:
        """Wait for mail in flight (shutdown: a link promised is a link sent)."""
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=self.timeout_s)


async def install(env: Any) -> None:
    """At start-up: the relay (or, in dev, the shared local catcher) for this worker."""
    timeout_s = float(env.get("MAIL_TIMEOUT_S", 10))
    sender = str(env.get("MAIL_FROM") or DEFAULT_FROM)
    url = env.get("SMTP_URL")
    if url:
        settings = SmtpSettings.from_url(str(url))
        if settings.password is not None and not is_development(env):
            settings = replace(settings, require_starttls=True)
        mailer = Mailer(settings, sender, timeout_s)
    elif _local_allowed(env):
        started: list[Any] = env.isolate_state("mail.local_servers", list)
        record = (await claim(env.state_dir / "mail", ["mail"], lambda names: _start_local(started)))["mail"]
        mailer = Mailer(SmtpSettings.from_url(record["smtp"]), sender, timeout_s, record["mailbox"])
        announce("mailbox", record["mailbox"])
    else:
        raise MailConfigError(settings_problems(env)[0])
    env.isolate_state("mailer", lambda: mailer)


async def _start_local(started: list[Any]) -> dict[str, dict[str, str]]:
    from .local_server import LocalMailServer
    server = LocalMailServer()
    await server.start()
    started.append(server)
    log.warning("SMTP_URL is not set: account mail goes to the local SMTP server at %s; read it at %s",
                server.smtp_url, server.mailbox_url)
    return {"mail": {"smtp": server.smtp_url, "mailbox": server.mailbox_url}}


def mailer(env: Any) -> Mailer:
    found = env.isolate_state("mailer", lambda: None)
    if found is None:
        raise MailConfigError("mail is not configured in this worker")
    return found


async def uninstall(env: Any) -> None:
    found = env.isolate_state("mailer", lambda: None)
    if found is not None:
        await found.drain()
    started: list[Any] = env.isolate_state("mail.local_servers", list)
    while started:
        await started.pop().stop()
