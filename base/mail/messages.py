"""The account mails' words and links. A link opens the shop's account page
(`ACCOUNT_PAGES_URL`, default `PUBLIC_BASE_URL`), which sends the token to the API; a link never
changes anything by being fetched (mail scanners open links)."""
from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from durable.public_url import public_base_url

VERIFY_TTL_S = 24 * 3600
RESET_TTL_S = 30 * 60
UNLOCK_TTL_S = 60 * 60
DEV_FALLBACK_URL = "http://127.0.0.1:8787"  # a bare dev runtime with no public URL (wrangler dev sets one)


def _link(env: Any, page: str, token: str) -> str:
    base = str(env.get("ACCOUNT_PAGES_URL") or "").rstrip("/")
    if not base:
        development = str(env.get("ENVIRONMENT", "development")) == "development"
        base = DEV_FALLBACK_URL if development and not env.get("PUBLIC_BASE_URL") else public_base_url(env)
    return f"{base}/account/{page}?{urlencode({'token': token})}"


def verify_email(env: Any, token: str) -> tuple[str, str]:
    link = _link(env, "verify-email", token)
    return "Confirm your email address", (
        f"Welcome to the shop.\n\nConfirm that this address is yours:\n\n{link}\n\n"
        f"(Your shop page sends it as POST /user/verify-email {{\"token\": ...}}.) The link works once, "
        f"for {VERIFY_TTL_S // 3600} hours.\n\nIf you did not sign up, ignore this mail: nobody can use "
        f"this address to sign in with Google, Microsoft or Apple until it is confirmed.\n")


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
