"""The account lifecycle, tried as an attacker would: a signup nobody confirmed never becomes a way
into a provider user's account (pre-hijacking), mailed links work once and expire, a reset ends
every session, a provider is linked only from a signed-in, confirmed account and never unlinked
as the last way in, and a held-back owner gets an unlock link. Every link is read from real mail
caught by the local SMTP server."""
from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import jwt
from bson import ObjectId

from models.stamps import now
from tests.accounts import account, login
from tests.conftest import JWT_KEY
from tests.mailbox import last_id, messages, mailbox_url, wait_for_link
from tests.signin_flow import Flow, person

PASSWORD = "correct horse"


async def signup(shop: Any, email: str, password: str = PASSWORD) -> dict[str, Any]:
    status, body, _ = await shop.call("POST", "/user/signup", {"email": email, "password": password})
    assert status == 201, body
    return body["user"]


async def verified(shop: Any, email: str) -> tuple[str, str]:
    """Sign up, follow the mailed link, log in: (user id, token)."""
    user = await signup(shop, email)
    link, _ = await wait_for_link(shop, email, "verify-email")
    session = await login(shop, email, api="")
    assert (await shop.call("POST", "/user/verify-email", {"token": link}, token=session))[0] == 200
    return user["_id"], session


async def test_pre_hijacking_through_a_provider_sign_in_is_refused(shop) -> None:
    """The reproduction: an attacker signs up with the victim's address in another case; the victim
    later signs in with Google (and Microsoft, upper-cased): that used to link the attacker's account."""
    attacker = await signup(shop, "Victim@gmail.example", "attacker's password")
    attacker_token = await login(shop, "Victim@gmail.example", "attacker's password", api="")
    for provider, address in (("google", "victim@gmail.example"), ("microsoft", "VICTIM@GMAIL.EXAMPLE")):
        status, body = await Flow(shop, provider).run(**person(provider, email=address))
        assert status == 409 and body["error"]["code"] == "account_exists", body
    assert "identities" not in shop.db()["users"].find_one({"_id": ObjectId(attacker["_id"])})

    # the victim takes the address back with a reset link (mailed to the victim, not the attacker)
    status, _, _ = await shop.call("POST", "/user/password/forgot", {"email": "victim@gmail.example"})
    assert status == 202
    reset, _ = await wait_for_link(shop, "victim@gmail.example", "reset-password")
    assert (await shop.call("POST", "/user/password/reset", {"token": reset, "newPassword": "victim's own"}))[0] == 200
    assert (await shop.call("GET", "/user/me", token=attacker_token))[0] == 401  # every session ended
    status, _, _ = await shop.call("POST", "/user/login", {"email": "victim@gmail.example",
                                                          "password": "attacker's password"})
    assert status == 401
    google = person("google", email="victim@gmail.example")
    status, body = await Flow(shop, "google").run(**google)  # the reset proved the address: now it links
    assert status == 200
    status, me, _ = await shop.call("GET", "/user/me", token=body["token"])
    assert me["_id"] == attacker["_id"] and me["emailVerified"] is True and me["identities"] == ["google"]


async def test_signup_mails_a_single_use_verification_link(shop) -> None:
    user = await signup(shop, "new@mail.example")
    token = await login(shop, "new@mail.example", api="")
    status, me, _ = await shop.call("GET", "/user/me", token=token)
    assert status == 200 and me["emailVerified"] is False and user["emailVerified"] is False
    link, message = await wait_for_link(shop, "new@mail.example", "verify-email")
    assert message["to"] == ["new@mail.example"] and "Confirm" in message["subject"]
    assert shop.db()["account_tokens"].count_documents({"_id": link}) == 0  # stored hashed, never as sent

    status, body, _ = await shop.call("POST", "/user/verify-email", {"token": link}, token=token)
    assert status == 200 and body["user"]["emailVerified"] is True
    status, body, _ = await shop.call("POST", "/user/verify-email", {"token": link}, token=token)  # used once
    assert status == 400 and body["error"]["code"] == "invalid_token"
    status, body, _ = await shop.call("POST", "/user/verify-email", {"token": "made-up"}, token=token)
    assert status == 400 and body["error"]["code"] == "invalid_token"
    assert (await shop.call("GET", "/user/me", token=token))[1]["emailVerified"] is True
    status, body, _ = await shop.call("POST", "/user/verify-email/resend", token=token)
    assert status == 409 and body["error"]["code"] == "already_verified"


async def test_a_new_verification_link_voids_the_old_one_and_resends_are_limited(shop) -> None:
    await signup(shop, "slow@mail.example")
    token = await login(shop, "slow@mail.example", api="")
    first, message = await wait_for_link(shop, "slow@mail.example", "verify-email")
    statuses = [(await shop.call("POST", "/user/verify-email/resend", token=token))[0] for _ in range(4)]
    assert statuses == [202, 202, 202, 429]  # VERIFY_RESEND_RATE_LIMIT = 3/3600 per account
    newest, _ = await wait_for_link(shop, "slow@mail.example", "verify-email", after=message["id"] + 2)
    assert (await shop.call("POST", "/user/verify-email", {"token": first}, token=token))[0] == 400
    assert (await shop.call("POST", "/user/verify-email", {"token": newest}, token=token))[0] == 200


async def test_an_expired_link_is_refused(shop) -> None:
    await signup(shop, "late@mail.example")
    session = await login(shop, "late@mail.example", api="")
    link, _ = await wait_for_link(shop, "late@mail.example", "verify-email")
    shop.db()["account_tokens"].update_many({}, {"$set": {"expiresAt": now() - timedelta(seconds=1)}})  # time passes
    status, body, _ = await shop.call("POST", "/user/verify-email", {"token": link}, token=session)
    assert status == 400 and body["error"]["code"] == "invalid_token"


async def test_password_reset_answers_alike_works_once_and_ends_every_session(shop) -> None:
    await signup(shop, "pat@mail.example")
    phone = await login(shop, "pat@mail.example", api="")
    before = await last_id(shop)
    known = await shop.call("POST", "/user/password/forgot", {"email": "PAT@mail.example"})
    unknown = await shop.call("POST", "/user/password/forgot", {"email": "nobody@mail.example"})
    assert known[0] == unknown[0] == 202 and known[1] == unknown[1]  # nothing tells them apart
    link, message = await wait_for_link(shop, "pat@mail.example", "reset-password", after=before)
    assert "30 minutes" in message["text"]
    assert await messages(shop.http, mailbox_url(shop), "nobody@mail.example") == []

    status, body, _ = await shop.call("POST", "/user/password/reset", {"token": link, "newPassword": "short"})
    assert status == 400  # the policy still holds (and the link is not spent by a refused body)
    assert (await shop.call("POST", "/user/password/reset", {"token": link, "newPassword": "battery staple"}))[0] == 200
    assert (await shop.call("GET", "/user/me", token=phone))[0] == 401
    status, body, _ = await shop.call("POST", "/user/password/reset", {"token": link, "newPassword": "another one"})
    assert status == 400 and body["error"]["code"] == "invalid_token"
    assert (await shop.call("POST", "/user/login", {"email": "pat@mail.example", "password": PASSWORD}))[0] == 401
    token = await login(shop, "pat@mail.example", "battery staple", api="")
    assert (await shop.call("GET", "/user/me", token=token))[1]["emailVerified"] is True

    before = await last_id(shop)  # an expired reset link
    await shop.call("POST", "/user/password/forgot", {"email": "pat@mail.example"})
    link, _ = await wait_for_link(shop, "pat@mail.example", "reset-password", after=before)
    shop.db()["account_tokens"].update_many({"purpose": "reset_password"},
                                            {"$set": {"expiresAt": now() - timedelta(seconds=1)}})
    assert (await shop.call("POST", "/user/password/reset", {"token": link, "newPassword": "x" * 12}))[0] == 400


async def test_reset_requests_are_limited_per_address(shop) -> None:
    statuses = [(await shop.call("POST", "/user/password/forgot", {"email": "bomb@mail.example"}))[0]
                for _ in range(4)]
    assert statuses == [202, 202, 202, 429]  # PASSWORD_RESET_ADDRESS_LIMIT = 3/3600: no mail bombing


async def test_of_two_concurrent_uses_of_one_reset_link_exactly_one_wins(shop) -> None:
    await signup(shop, "race@mail.example")
    await shop.call("POST", "/user/password/forgot", {"email": "race@mail.example"})
    link, _ = await wait_for_link(shop, "race@mail.example", "reset-password")
    results = await asyncio.gather(*(shop.call("POST", "/user/password/reset",
                                               {"token": link, "newPassword": f"password {i}"}) for i in range(6)))
    assert sorted(status for status, _, _ in results) == [200] + [400] * 5


async def test_a_signed_in_confirmed_account_links_and_unlinks_providers(shop) -> None:
    user_id, token = await verified(shop, "link@mail.example")
    someone = person("google", email="another-address@mail.example")  # any Google account of theirs
    flow = await Flow(shop, "google").link(token)
    assert flow.cookie["httponly"] and flow.cookie["samesite"] == "Lax"
    await flow.as_identity(**someone)
    await flow.approve()
    status, body = await flow.finish()
    assert status == 200
    assert jwt.decode(body["token"], JWT_KEY, algorithms=["HS256"])["userId"] == user_id
    assert (await shop.call("GET", "/user/me", token=token))[0] == 401  # the link ended older sessions
    token = body["token"]
    assert (await Flow(shop, "google").run(**someone))[0] == 200  # that Google account now signs in here

    # the same Google account cannot be linked to a second account
    _, other = await verified(shop, "other@mail.example")
    taken = await (await (await Flow(shop, "google").link(other)).as_identity(**someone)).approve()
    status, body = await taken.finish()
    assert status == 409 and body["error"]["code"] == "identity_conflict"

    status, body, _ = await shop.call("DELETE", "/user/me/identities/google", token=token)
    assert status == 200 and body["user"]["identities"] == []
    assert (await shop.call("GET", "/user/me", token=token))[0] == 401  # the unlink ended older sessions
    status, body, _ = await shop.call("DELETE", "/user/me/identities/google", token=body["token"])
    assert status == 404 and body["error"]["code"] == "not_linked"


async def test_an_unconfirmed_account_cannot_link_and_the_last_way_in_stays(shop) -> None:
    await signup(shop, "unsure@mail.example")
    token = await login(shop, "unsure@mail.example", api="")
    status, body, _ = await shop.call("POST", "/user/me/identities/google", token=token)
    assert status == 403 and body["error"]["code"] == "email_not_verified"

    status, body = await Flow(shop, "apple").run(**person("apple"))  # an account made by Apple: no password
    assert status == 200
    status, body, _ = await shop.call("DELETE", "/user/me/identities/apple", token=body["token"])
    assert status == 409 and body["error"]["code"] == "last_sign_in_method"


async def test_a_callback_from_another_browser_is_refused_and_spends_nothing(shop) -> None:
    """Login CSRF: an attacker's own callback URL opened in the victim's browser signs nobody in."""
    flow = await (await Flow(shop, "google").start()).approve()
    assert flow.cookie["httponly"] and flow.cookie["samesite"] == "Lax" and flow.cookie.key == "shop_signin"
    status, body = await flow.finish(browser=False)
    assert status == 401 and body["error"]["code"] == "invalid_state"
    assert (await flow.finish())[0] == 200  # the browser that started it still finishes it
    apple = await (await Flow(shop, "apple").start()).approve()  # Apple's form_post is a cross-site POST
    assert apple.cookie["samesite"] == "None" and apple.cookie["secure"]
    # Secure, so `__Host-`: taken only from https, for Path=/, with no Domain (no sibling subdomain sets it)
    assert apple.cookie.key == "__Host-shop_signin" and apple.cookie["path"] == "/" and not apple.cookie["domain"]
    assert (await apple.finish(browser=False))[0] == 401
    assert (await apple.finish())[0] == 200


async def test_a_held_back_owner_gets_an_unlock_link(custom_shop) -> None:
    shop = await custom_shop(gateway_vars={"TRUSTED_PROXIES": "127.0.0.1"},
                             base_vars={"LOGIN_FREE_FAILURES": 2, "LOGIN_FIRST_DELAY_S": 300})
    await account(shop, "owner@mail.example")

    async def attempt(password: str, ip: str, **extra: str) -> tuple[int, Any]:
        status, body, _ = await shop.call("POST", "/api/user/login", {"email": "owner@mail.example",
                                                                      "password": password, **extra},
                                          headers={"X-Forwarded-For": ip})
        return status, body
    before = await last_id(shop)
    assert [(await attempt("guess", f"203.0.113.{i}"))[0] for i in range(4)] == [401, 401, 429, 429]
    assert (await attempt(PASSWORD, "198.51.100.50"))[0] == 429  # the owner, travelling
    unlock, message = await wait_for_link(shop, "owner@mail.example", "unlock-login", after=before)
    assert len([m for m in await messages(shop.http, mailbox_url(shop), "owner@mail.example")
                if "unlock-login" in m["text"]]) == 1  # one mail, not one per refusal
    status, _ = await attempt("guess", "203.0.113.9", unlockToken=unlock)  # a typo does not spend it
    assert status == 401
    assert (await attempt(PASSWORD, "198.51.100.50", unlockToken=unlock))[0] == 200
    # spent: the attacker cannot reuse it once the lock is back
    for i in range(3):
        await attempt("guess", f"203.0.113.{20 + i}")
    assert (await attempt(PASSWORD, "198.51.100.77", unlockToken=unlock))[0] == 429
    assert (await attempt("guess", "203.0.113.30", unlockToken="made-up"))[0] == 429
