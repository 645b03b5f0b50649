"""The token a sign-in answers with: our JWT for the account, its session recorded in the user's
UserSessions object first (so every service can ask whether it still speaks for the user)."""
from __future__ import annotations

from typing import Any

from web.auth import user_sessions
from web.tokens import issue_token


async def token_for(env: Any, doc: dict[str, Any]) -> str:
    """Our JWT for this account (password login or a provider's sign-in), its session recorded."""
    user_id, gen = str(doc["_id"]), int(doc.get("tokenGen", 0))
    await user_sessions(user_id).logged_in(user_id, doc["role"], gen)
    return issue_token(env.JWT_KEY, email=doc["email"], user_id=user_id, role=doc["role"], gen=gen)
