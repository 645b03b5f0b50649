"""The account mails' words and links. A link opens the shop's account page
(`ACCOUNT_PAGES_URL`, default `PUBLIC_BASE_URL`), which sends the token to the API; a link never
changes anything by being fetched (mail scanners open links). The token rides in the fragment
(`#token=`), which a browser never sends to any server: not to the page's host, its logs or a
`Referer`. Notices (a provider linked or unlinked, a password reset) carry no link at all.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlencode, urlsplit

from durable.config import is_development
from durable.public_url import public_base_url

VERIFY_TTL_S = 24 * 3600
RESET_TTL_S = 30 * 60
UNLOCK_TTL_S = 60 * 60
DEV_FALLBACK_URL = "http://127.0.0.1:8787"  # a bare dev runtime with no public URL (wrangler dev sets one)


def settings_problems(env: Any) -> list[str]:
    """ACCOUNT_PAGES_URL, when set, is where mailed tokens go: outside development an https://
    address with no query or fragment (a token must not travel in the clear or beside other data)."""
    raw = str(env.get("ACCOUNT_PAGES_URL") or "").strip()
    if not raw or is_development(env):
        return []
    parts = urlsplit(raw)
    if parts.scheme != "https" or not parts.hostname or parts.query or parts.fragment:
        return [f"ACCOUNT_PAGES_URL {raw!r} must be an https:// address without query or fragment outside development"]
    return []


def _link(env: Any, page: str, token: str) -> str:
    base = str(env.get("ACCOUNT_PAGES_URL") or "").rstrip("/")
    if not base:
        base = DEV_FALLBACK_URL if is_development(env) and not env.get("PUBLIC_BASE_URL") else public_base_url(env)
    return f"{base}/account/{page}#{urlencode({'token': token})}"


def _pages(env: Any, page: str) -> str:
    """A page's address with no token (where a notice sends the reader)."""
    return _link(env, page, "").split("#", 1)[0]


def verify_email(env: Any, token: str) -> tuple[str, str]:
    link = _link(env, "verify-email", token)
    return "Confirm your email address", (
        f"Welcome to the shop.\n\nSign in with the password you chose, then confirm that this address "
        f"is yours:\n\n{link}\n\n(Your shop page sends it, signed in, as POST /user/verify-email "
        f"{{\"token\": ...}}.) The link works once, for {VERIFY_TTL_S // 3600} hours.\n\n"
        f"If you did not sign up, someone else gave this address: do not confirm it. Nobody can use it "
        f"to sign in with Google, Microsoft or Apple until it is confirmed, and you can take the account "
        f"over by resetting its password: {_pages(env, 'forgot-password')}\n")


def reset_password(env: Any, token: str) -> tuple[str, str]:
    link = _link(env, "reset-password", token)
    return "Reset your password", (
        f"Someone asked to reset the password of the account for this address.\n\nSet a new one here:\n\n"
        f"{link}\n\n(Your shop page sends it as POST /user/password/reset {{\"token\": ..., \"newPassword\": ...}}.) "
        f"The link works once, for {RESET_TTL_S // 60} minutes; setting a password signs out every session.\n\n"
        f"If it was not you, ignore this mail: your password stays as it is.\n")


def unlock_login(env: Any, token: str, retry_after_s: int) -> tuple[str, str]:
    link = _link(env, "unlock-login", token)
    return "Sign-ins to your account are being held back", (
        f"Many wrong passwords were tried for your account, so sign-ins from new places wait "
        f"(about {retry_after_s} s now).\n\nIf that is you, sign in at once through this link:\n\n{link}\n\n"
        f"(Your shop page sends the token with the login as \"unlockToken\".) It works once, for "
        f"{UNLOCK_TTL_S // 60} minutes. If it was not you, your password held; consider changing it.\n")


def identity_linked(env: Any, provider: str) -> tuple[str, str]:
    return f"{provider.title()} sign-in was linked to your account", (
        f"Signing in with {provider.title()} now opens your shop account, and every earlier session was "
        f"signed out.\n\nIf that was not you, reset your password now ({_pages(env, 'forgot-password')}): a reset "
        f"removes every linked sign-in provider and signs everyone out.\n")


def identity_unlinked(env: Any, provider: str) -> tuple[str, str]:
    return f"{provider.title()} sign-in was removed from your account", (
        f"Signing in with {provider.title()} no longer opens your shop account, and every earlier session was "
        f"signed out. It will not be linked again unless you link it from your account.\n\nIf that was not "
        f"you, reset your password now: {_pages(env, 'forgot-password')}\n")


def password_was_reset(env: Any, unlinked: Iterable[str]) -> tuple[str, str]:
    removed = sorted(unlinked)
    providers = (f"\n\nThe sign-in providers linked to the account were removed ({', '.join(p.title() for p in removed)}); "
                 f"link again the ones that are yours." if removed else "")
    return "Your password was reset", (
        f"The password of your shop account was set through a reset link, and every session was signed "
        f"out.{providers}\n\nIf that was not you, reset it again now: {_pages(env, 'forgot-password')}\n")
