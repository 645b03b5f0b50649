"""Token verification: a verdict is reused within a process, expiry never is."""
from __future__ import annotations

import time

import jwt
import pytest

from web import tokens

KEY = "k" * 48


def test_a_token_verified_once_still_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token = tokens.issue_token(KEY, email="a@b.io", user_id="65f1c0ffee0ddba11b0a7c11", role="user", ttl_s=60)
    assert tokens.verify_token(KEY, token).userId == "65f1c0ffee0ddba11b0a7c11"
    later = time.time() + 61
    monkeypatch.setattr(tokens.time, "time", lambda: later)
    with pytest.raises(tokens.TokenError, match="expired"):
        tokens.verify_token(KEY, token)


def test_forged_tokens_stay_refused_and_claims_cannot_be_changed_in_place() -> None:
    token = tokens.issue_token(KEY, email="a@b.io", user_id="65f1c0ffee0ddba11b0a7c11", role="user")
    forged = jwt.encode({**jwt.decode(token, options={"verify_signature": False}), "role": "admin"}, "x" * 48,
                        algorithm="HS256")
    for _ in range(2):  # the second answer comes from the cache
        with pytest.raises(tokens.TokenError, match="Invalid"):
            tokens.verify_token(KEY, forged)
    with pytest.raises(tokens.TokenError):
        tokens.verify_token("another-key-" + "y" * 40, token)  # the verdict is per key
    claims = tokens.verify_token(KEY, token)
    with pytest.raises(Exception):
        claims.role = "admin"  # type: ignore[misc]
    assert tokens.verify_token(KEY, token).role == "user"
