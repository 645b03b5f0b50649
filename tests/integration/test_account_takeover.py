"""Security round three, on accounts: each test is a reproduction that succeeded on the code before
it (the attack worked) and fails now. Spellings of an address that the lookup's collation equates
share the account's limits; a confirmation needs the session of the account it was mailed for; a
reset takes the account back whole (providers too) and says so; a guessed reset token costs no
password hash; a login racing a reset cannot bring the old session back; unlinking a provider
ends sessions and is not undone by the next sign-in."""
from __future__ import annotations

import asyncio
from typing import Any

import base.accounts.passwords
from base.accounts import limits
from base.stores.account_tokens import AccountTokens
from models.users import canonical_email
from tests.mailbox import last_id, mailbox_url, messages, wait_for_link
from tests.polling import eventually
from tests.signin_flow import Flow, person

PASSWORD = "correct horse"
# spellings a case-insensitive ICU collation (strength 2) finds `victim@shop.example` by: the long s
# (its case fold is "s"; the embedded server folds case the same way), a soft hyphen and a
# zero-width space (weightless), full-width letters (a level-3 difference only)
SPELLINGS = ["victim@\u017fhop.example", "vic\u00adtim@shop.example", "vic\u200btim@shop.example",
             "\uff56ictim@shop.example", "VICTIM@SHOP.EXAMPLE"]


def test_every_spelling_of_an_address_gets_the_account_s_key_or_one_canonical_key() -> None:
    """The keying itself: the key a spelling gets is the account it finds, whatever the spelling."""
    victim = {"_id": "65a000000000000000000001", "email": "victim@shop.example"}
    assert {limits.limit_key(spelling, victim) for spelling in SPELLINGS} == {"user:65a000000000000000000001"}
    assert {limits.limit_key(spelling, None) for spelling in SPELLINGS} == {"email:victim@shop.example"}
    assert {canonical_email(s) for s in ["Stra\u00dfe@x.example", "STRASSE@x.example"]} == {"strasse@x.example"}


async def signup(shop: Any, email: str, password: str = PASSWORD, api: str = "/api") -> dict[str, Any]:
    status, body, _ = await shop.call("POST", f"{api}/user/signup", {"email": email, "password": password})
    assert status == 201, body
    return body["user"]


async def test_another_spelling_of_a_locked_account_is_held_back_too(custom_shop) -> None:
    """The reproduction: lock victim@shop.example, then log in as a spelling the lookup equates with it
    (the embedded server folds case as ICU does: `ſ` is `s`); it used to get a fresh guard (401 for a
    wrong password, 200 and the victim's account for the right one) and fresh reset mails."""
    shop = await custom_shop(gateway_vars={"TRUSTED_PROXIES": "127.0.0.1"},
                             base_vars={"LOGIN_FREE_FAILURES": 2, "LOGIN_FIRST_DELAY_S": 300})
    await signup(shop, "victim@shop.example")

    async def attempt(email: str, password: str, ip: str) -> int:
        status, _, _ = await shop.call("POST", "/api/user/login", {"email": email, "password": password},
                                       headers={"X-Forwarded-For": ip})
        return status
    assert [await attempt("victim@shop.example", "guess", f"203.0.113.{i}") for i in range(3)] == [401, 401, 429]
    found = shop.db()["users"].find_one({"email": "victim@\u017fhop.example"},
                                        collation={"locale": "en", "strength": 2})
    assert found is not None  # the lookup finds the victim under this spelling
    assert await attempt("victim@\u017fhop.example", "guess", "203.0.113.50") == 429
    assert await attempt("victim@\u017fhop.example", PASSWORD, "203.0.113.51") == 429

    before = await last_id(shop)
    statuses = [(await shop.call("POST", "/api/user/password/forgot", {"email": email},
                                 headers={"X-Forwarded-For": f"198.51.100.{i}"}))[0]
                for i, email in enumerate(["victim@shop.example", "Victim@shop.example", "victim@\u017fhop.example",
                                           "VICTIM@\u017fHOP.example"])]
    assert statuses == [202, 202, 202, 429]  # three mails an hour per account, however it is spelt
    await wait_for_link(shop, "victim@shop.example", "reset-password", after=before)
    resets = [m for m in await messages(shop.http, mailbox_url(shop), "victim@shop.example")
              if m["id"] > before and "reset-password" in m["text"]]
    assert len(resets) <= 3


async def test_a_provider_address_the_collation_could_equate_with_another_is_refused(shop) -> None:
    """A provider's address is matched to an account with the same collation: one that is not a
    plain address (here a full-width letter) never links to, nor creates, an account."""
    _, token = await confirmed(shop, "victim@mail.example")
    status, body = await Flow(shop, "google").run(**person("google", email="\uff56ictim@mail.example"))
    assert status == 401 and body["error"]["code"] == "unsupported_email", body
    assert shop.db()["users"].count_documents({}) == 1
    assert (await shop.call("GET", "/user/me", token=token))[1]["identities"] == []


async def confirmed(shop: Any, email: str) -> tuple[str, str]:
    """Sign up, log in, confirm from that session: (user id, token)."""
    user = await signup(shop, email, api="")
    link, _ = await wait_for_link(shop, email, "verify-email")
    status, body, _ = await shop.call("POST", "/user/login", {"email": email, "password": PASSWORD})
    assert status == 200, body
    status, _, _ = await shop.call("POST", "/user/verify-email", {"token": link}, token=body["token"])
    assert status == 200
    return user["_id"], body["token"]


async def test_a_victim_following_a_squatter_s_confirmation_link_does_not_bless_his_password(shop) -> None:
    """The reproduction: the attacker signs up with the victim's address and has the mail resent;
    the victim clicks "confirm". That used to prove the attacker's password (200), after which he
    linked his own Google account from his session and kept it through the victim's reset."""
    attacker = await signup(shop, "victim@mail.example", "attacker's password", api="")
    _, login, _ = await shop.call("POST", "/user/login", {"email": "victim@mail.example",
                                                         "password": "attacker's password"})
    squat = login["token"]
    before = await last_id(shop)
    assert (await shop.call("POST", "/user/verify-email/resend", token=squat))[0] == 202
    link, mail = await wait_for_link(shop, "victim@mail.example", "verify-email", after=before)
    assert "did not sign up" in mail["text"] and "forgot-password" in mail["text"]

    status, body, _ = await shop.call("POST", "/user/verify-email", {"token": link})  # the victim, signed out
    assert status == 401, body
    someone = await signup(shop, "bystander@mail.example", api="")
    _, bystander, _ = await shop.call("POST", "/user/login", {"email": "bystander@mail.example", "password": PASSWORD})
    status, body, _ = await shop.call("POST", "/user/verify-email", {"token": link}, token=bystander["token"])
    assert status == 400 and body["error"]["code"] == "invalid_token"  # mailed for another account
    assert shop.db()["users"].find_one({"email": "victim@mail.example"})["emailVerified"] is False
    assert someone["_id"] != attacker["_id"]
    status, body, _ = await shop.call("POST", "/user/me/identities/google", token=squat)
    assert status == 403 and body["error"]["code"] == "email_not_verified"  # so no link of his own either
    # the link was not spent by the refusals: the account's own session may still use it
    assert (await shop.call("POST", "/user/verify-email", {"token": link}, token=squat))[0] == 200


async def test_a_reset_removes_providers_linked_before_it_and_every_change_is_mailed(shop) -> None:
    """However a provider came to be linked (here from a session someone else held), the address's
    owner takes the account back whole with a reset: that provider no longer opens it."""
    user_id, token = await confirmed(shop, "owner@mail.example")
    intruder = person("google", email="intruder@mail.example", sub="g-att")
    before = await last_id(shop)
    flow = await (await (await Flow(shop, "google").link(token)).as_identity(**intruder)).approve()
    status, body = await flow.finish()
    assert status == 200
    linked = await eventually(lambda: mail_with(shop, "owner@mail.example", "Google sign-in was linked", before))
    assert linked and "reset your password" in linked["text"]

    before = await last_id(shop)
    await shop.call("POST", "/user/password/forgot", {"email": "owner@mail.example"})
    reset, _ = await wait_for_link(shop, "owner@mail.example", "reset-password", after=before)
    assert (await shop.call("POST", "/user/password/reset", {"token": reset, "newPassword": "owner's own"}))[0] == 200
    notice = await eventually(lambda: mail_with(shop, "owner@mail.example", "Your password was reset", before))
    assert notice and "Google" in notice["text"]
    doc = shop.db()["users"].find_one({"email": "owner@mail.example"})
    assert "google" not in (doc.get("identities") or {})

    status, body = await Flow(shop, "google").run(**intruder)  # the intruder's Google account
    assert status == 200
    status, me, _ = await shop.call("GET", "/user/me", token=body["token"])
    assert me["_id"] != user_id and me["email"] == "intruder@mail.example"  # his own account, not the owner's


async def mail_with(shop: Any, to: str, subject: str, after: int) -> dict[str, Any] | None:
    for message in await messages(shop.http, mailbox_url(shop), to):
        if message["id"] > after and message["subject"].startswith(subject):
            return message
    return None


async def test_unlinking_ends_sessions_mails_the_owner_and_is_not_undone_by_the_next_sign_in(shop) -> None:
    user_id, token = await confirmed(shop, "ann@mail.example")
    google = person("google", email="ann@mail.example")
    status, body = await Flow(shop, "google").run(**google)  # a proven address: linked on sign-in
    assert status == 200
    token = body["token"]
    before = await last_id(shop)
    status, body, _ = await shop.call("DELETE", "/user/me/identities/google", token=token)
    assert status == 200 and body["user"]["identities"] == []
    assert (await shop.call("GET", "/user/me", token=token))[0] == 401  # every session from before ends
    fresh = body["token"]
    assert (await shop.call("GET", "/user/me", token=fresh))[0] == 200
    assert await eventually(lambda: mail_with(shop, "ann@mail.example", "Google sign-in was removed", before))

    status, body = await Flow(shop, "google").run(**google)  # the same Google account, the same address
    assert status == 409 and body["error"]["code"] == "account_exists", body
    assert shop.db()["users"].find_one({"email": "ann@mail.example"}).get("identities", {}) == {}
    # the owner links it again on purpose, from the account: that lifts the refusal
    flow = await (await (await Flow(shop, "google").link(fresh)).as_identity(**google)).approve()
    assert (await flow.finish())[0] == 200
    assert (await Flow(shop, "google").run(**google))[0] == 200


async def test_a_guessed_reset_token_costs_no_password_hash_and_the_route_is_limited(shops, monkeypatch) -> None:
    """The reproduction: 40 random tokens from one client, all 400 and each one an argon2id hash
    (tens of milliseconds of the hashing pool, logins queued behind them)."""
    shop = await shops(PASSWORD_RESET_SUBMIT_LIMIT="10/900")
    hashed: list[str] = []
    real = base.accounts.passwords._hasher

    class Counting:  # argon2's hasher, counting its hashes
        def hash(self, password: str) -> str:
            hashed.append(password)
            return real.hash(password)

        def verify(self, stored: str, password: str) -> bool:
            return real.verify(stored, password)
    monkeypatch.setattr(base.accounts.passwords, "_hasher", Counting())
    statuses = [(await shop.call("POST", "/user/password/reset", {"token": f"guess-{i}", "newPassword": "x" * 12}))[0]
                for i in range(40)]
    assert statuses == [400] * 10 + [429] * 30
    assert hashed == []
    await signup(shop, "real@mail.example", api="")
    assert len(hashed) == 1  # (the signup's own)


async def test_a_forgot_request_for_a_known_address_does_not_wait_on_its_token(shop, monkeypatch) -> None:
    """The answer for a known address used to wait for the token's writes, which an unknown one
    never makes: now both answer after the same lookup, and the token is written behind the answer."""
    await signup(shop, "known@mail.example", api="")
    release = asyncio.Event()
    real_issue = AccountTokens.issue

    async def slow_issue(self: AccountTokens, *args: Any, **kwargs: Any) -> str:
        await release.wait()
        return await real_issue(self, *args, **kwargs)
    monkeypatch.setattr(AccountTokens, "issue", slow_issue)
    before = await last_id(shop)
    status, _, _ = await asyncio.wait_for(shop.call("POST", "/user/password/forgot",
                                                    {"email": "known@mail.example"}), 10)
    assert status == 202
    release.set()
    await wait_for_link(shop, "known@mail.example", "reset-password", after=before)


async def test_a_login_racing_a_reset_cannot_bring_the_old_session_back(shop) -> None:
    """The reproduction: a login reads the account (generation 0), a reset bumps it to 1, then the
    login records what it read: the session object used to take generation 0 again, so tokens from
    before the reset worked (and the new ones did not) for up to SESSION_REFRESH_S."""
    user_id, old = await confirmed(shop, "race@mail.example")
    sessions = shop.runtime.workers["rest-shop-api"].env.USER_SESSIONS.get_by_name(user_id)
    gen = shop.db()["users"].find_one({"email": "race@mail.example"}).get("tokenGen", 0)
    before = await last_id(shop)
    await shop.call("POST", "/user/password/forgot", {"email": "race@mail.example"})
    reset, _ = await wait_for_link(shop, "race@mail.example", "reset-password", after=before)
    assert (await shop.call("POST", "/user/password/reset", {"token": reset, "newPassword": "new password"}))[0] == 200
    await sessions.logged_in(user_id, "user", gen)  # the racing login's stale read lands last
    assert (await shop.call("GET", "/user/me", token=old))[0] == 401
    status, body, _ = await shop.call("POST", "/user/login", {"email": "race@mail.example", "password": "new password"})
    assert status == 200 and (await shop.call("GET", "/user/me", token=body["token"]))[0] == 200


async def test_a_login_racing_a_deletion_cannot_bring_the_account_back(shop) -> None:
    user_id, token = await confirmed(shop, "gone@mail.example")
    sessions = shop.runtime.workers["rest-shop-api"].env.USER_SESSIONS.get_by_name(user_id)
    assert (await shop.call("DELETE", f"/user/{user_id}", token=token))[0] == 200
    await sessions.logged_in(user_id, "user", 0)
    assert (await shop.call("GET", "/user/me", token=token))[0] == 401
