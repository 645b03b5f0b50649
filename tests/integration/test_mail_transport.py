"""Account mail on the wire, against a real SMTP server (aiosmtpd): outside development a relay's
password never crosses in the clear (STARTTLS or no mail), and a message goes to the one address
it is for, whatever its `To` header holds."""
from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiosmtplib
import pytest
from aiosmtpd.smtp import SMTP, AuthResult, Envelope, Session

from base.accounts.mail import sender
from base.accounts.mail.local_server import LocalMailServer


class _Keep:
    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


@pytest.fixture
async def plaintext_relay() -> AsyncIterator[tuple[int, _Keep]]:
    """A relay that takes a password with no TLS on offer (as a misconfigured or downgraded one does)."""
    kept = _Keep()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(kept, auth_require_tls=False, authenticator=lambda *_: AuthResult(success=True)),
        "127.0.0.1", 0)
    try:
        yield server.sockets[0].getsockname()[1], kept
    finally:
        server.close()
        await server.wait_closed()


class _Env(dict[str, Any]):
    def isolate_state(self, key: str, make: Any) -> Any:
        return self.setdefault(f"state:{key}", make())


async def installed(url: str, environment: str) -> sender.Mailer:
    env = _Env(SMTP_URL=url, MAIL_FROM="Shop <no-reply@shop.example>", ENVIRONMENT=environment, LOCAL_MAIL="off")
    await sender.install(env)
    return sender.mailer(env)


async def test_a_relay_password_is_never_sent_without_starttls_outside_development(plaintext_relay) -> None:
    """The reproduction: `smtp://user:password@relay` upgraded to STARTTLS only when offered, so a
    relay (or a man in the middle) that did not offer it got the password and the mail in the clear."""
    port, kept = plaintext_relay
    production = await installed(f"smtp://shop:s3cret@127.0.0.1:{port}", "production")
    with pytest.raises(aiosmtplib.SMTPException):
        await production.send("ann@shop.example", "Reset your password", "a link")
    assert kept.envelopes == []
    development = await installed(f"smtp://shop:s3cret@127.0.0.1:{port}", "development")
    await development.send("ann@shop.example", "Reset your password", "a link")  # a dev relay may be plain
    assert [e.rcpt_tos for e in kept.envelopes] == [["ann@shop.example"]]


async def test_a_message_goes_to_its_one_recipient_whatever_the_header_says() -> None:
    """The reproduction: the envelope's recipients were read back out of the `To` header, so an
    address with a comma in it (from a provider, say) became two recipients: the second got the link."""
    server = LocalMailServer()
    await server.start()
    try:
        mailer = sender.Mailer(sender.SmtpSettings.from_url(server.smtp_url), "Shop <no-reply@shop.example>")
        try:
            await mailer.send("victim@shop.example, thief@evil.example", "Reset your password", "a link")
        except (aiosmtplib.SMTPException, ValueError):
            pass  # refused outright (by the relay, or before sending on Python 3.13): that is fine too
        assert all("thief@evil.example" not in m["to"] for m in server.catcher.messages)
    finally:
        await server.stop()
