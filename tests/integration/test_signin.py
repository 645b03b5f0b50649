"""Sign-in with Google, Microsoft and Apple on the real base worker over HTTP, against the local
OpenID Connect servers it starts in dev (the real Authlib/joserfc client code runs), and the
attacks a callback must refuse without creating anything."""
from __future__ import annotations

import asyncio
import secrets
from urllib.parse import parse_qs, urlsplit

import jwt
import pytest
from joserfc.jwk import ECKey

from tests.conftest import JWT_KEY
from tests.mailbox import wait_for_link
from tests.signin_flow import Flow, person

PROVIDERS = ["google", "microsoft", "apple"]


@pytest.mark.parametrize("provider", PROVIDERS)
async def test_each_provider_signs_in_end_to_end(shop, provider: str) -> None:
    who = person(provider)
    flow = Flow(shop, provider)
    status, body = await flow.run(**who)
    assert status == 200 and body["message"] == "Auth successful", body
    query = parse_qs(urlsplit(flow.authorize_url).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert len(query["state"][0]) >= 32 and len(query["nonce"][0]) >= 32
    assert query["redirect_uri"] == [f"{shop.url}/user/auth/{provider}/callback"]
    assert query.get("response_mode") == (["form_post"] if provider == "apple" else None)

    claims = jwt.decode(body["token"], JWT_KEY, algorithms=["HS256"])
    assert claims["email"] == who["email"] and claims["role"] == "user"
    status, me, _ = await shop.call("GET", "/user/me", token=body["token"])
    assert status == 200 and me["_id"] == claims["userId"]
    stored = shop.db()["users"].find_one({"email": who["email"]})
    assert stored["identities"] == {provider: who["sub"]} and stored["password"] is None

    again, body2 = await Flow(shop, provider).run(**who)  # the same person: the same account
    assert again == 200 and jwt.decode(body2["token"], JWT_KEY, algorithms=["HS256"])["userId"] == claims["userId"]
    assert shop.db()["users"].count_documents({"email": who["email"]}) == 1
    login, _, _ = await shop.call("POST", "/user/login", {"email": who["email"], "password": "anything at all"})
    assert login == 401  # an account made by a provider has no password to guess


async def test_a_password_account_is_linked_only_once_both_sides_proved_the_email(shop) -> None:
    status, signed_up, _ = await shop.call("POST", "/user/signup", {"email": "ann@mail.example",
                                                                    "password": "correct horse"})
    assert status == 201 and signed_up["user"]["emailVerified"] is False
    unverified = person("google", email="ANN@mail.example", email_verified=False)
    status, body = await Flow(shop, "google").run(**unverified)
    assert status == 401 and body["error"]["code"] == "email_not_verified"
    status, body = await Flow(shop, "google").run(**{**unverified, "email_verified": True})
    assert status == 409 and body["error"]["code"] == "account_exists"  # the signup never proved the address
    assert "identities" not in shop.db()["users"].find_one({"email": "ann@mail.example"})

    token, _ = await wait_for_link(shop, "ann@mail.example", "verify-email")
    _, login, _ = await shop.call("POST", "/user/login", {"email": "ann@mail.example", "password": "correct horse"})
    assert (await shop.call("POST", "/user/verify-email", {"token": token}, token=login["token"]))[0] == 200
    status, body = await Flow(shop, "google").run(**{**unverified, "email_verified": True})
    assert status == 200
    assert jwt.decode(body["token"], JWT_KEY, algorithms=["HS256"])["userId"] == signed_up["user"]["_id"]
    assert shop.db()["users"].count_documents({}) == 1
    assert (await shop.call("GET", "/user/me", token=login["token"]))[0] == 401  # linking ended older sessions
    status, me, _ = await shop.call("GET", "/user/me", token=body["token"])
    assert status == 200 and me["identities"] == ["google"] and me["emailVerified"] is True

    other = person("google", email="ann@mail.example")  # a second Google account claiming the email
    status, body = await Flow(shop, "google").run(**other)
    assert status == 409 and body["error"]["code"] == "identity_conflict"


@pytest.mark.parametrize("tamper", ["signature", "expired", "audience", "issuer", "nonce", "algorithm"])
async def test_a_bad_id_token_is_refused_and_creates_nothing(shop, tamper: str) -> None:
    status, body = await Flow(shop, "google").run(**person("google", tamper=tamper))
    assert status == 401 and body["error"]["code"] == "invalid_id_token", body
    assert shop.db()["users"].count_documents({}) == 0


async def test_state_is_ours_single_use_and_bound_to_its_provider(shop) -> None:
    flow = await (await Flow(shop, "google").start()).approve()
    status, body = await flow.finish(state=secrets.token_urlsafe(32))
    assert status == 401 and body["error"]["code"] == "invalid_state"
    assert (await flow.finish())[0] == 200
    status, body = await flow.finish()  # the same callback again (a replay, a double submit)
    assert status == 401 and body["error"]["code"] == "invalid_state"

    google = await (await Flow(shop, "google").start()).approve()
    _, _, params = google.callback
    async with shop.http.get(f"{shop.url}/user/auth/microsoft/callback", params=params,
                             headers=google.cookie_header) as resp:
        assert resp.status == 401 and (await resp.json())["error"]["code"] == "invalid_state"
    assert (await google.finish())[0] == 401  # spent by the wrong provider's callback: start again
    assert shop.db()["users"].count_documents({}) == 1


async def test_of_two_concurrent_callbacks_with_one_state_exactly_one_signs_in(shop) -> None:
    flow = await (await Flow(shop, "microsoft").start()).approve()
    results = await asyncio.gather(*(flow.finish() for _ in range(8)))
    assert sorted(status for status, _ in results) == [200] + [401] * 7


async def test_a_replayed_code_is_refused(shop) -> None:
    first = await (await Flow(shop, "google").start()).approve()
    assert (await first.finish())[0] == 200
    second = await Flow(shop, "google").start()  # a fresh, valid state, with the old code
    state = parse_qs(urlsplit(second.authorize_url).query)["state"][0]
    first.cookie = second.cookie  # the same browser started both
    status, body = await first.finish(state=state)
    assert status == 401 and body["error"]["code"] == "code_rejected"


async def test_apple_checks_our_es256_client_secret(shop) -> None:
    apple = shop.worker.env.isolate_state("signin", dict).clients["apple"]
    real_key = apple.settings.apple_private_key
    apple.settings.apple_private_key = ECKey.generate_key("P-256", private=True).as_pem(private=True).decode()
    apple.settings._apple_secret = (0.0, "")
    try:
        status, body = await Flow(shop, "apple").run(**person("apple"))
    finally:
        apple.settings.apple_private_key, apple.settings._apple_secret = real_key, (0.0, "")
    assert status == 401 and body["error"]["code"] == "code_rejected"
    assert (await Flow(shop, "apple").run(**person("apple")))[0] == 200


async def test_refusals_from_the_provider_and_unknown_providers(shops) -> None:
    shop = await shops(SIGNIN_PROVIDERS="google")
    status, body = await Flow(shop, "google").run(**person("google", deny=True))
    assert status == 401 and body["error"]["code"] == "provider_denied"
    for path in ("/user/auth/apple", "/user/auth/facebook", "/user/auth/facebook/callback?code=x&state=y"):
        status, body, _ = await shop.call("GET", path)
        assert status == 404 and body["error"]["code"] == "unknown_provider", path
    status, body, _ = await shop.call("GET", "/user/auth/google/callback?state=only")
    assert status == 401 and body["error"]["code"] == "code_rejected"
    status, body, _ = await shop.call("GET", "/user/auth/google/callback?code=only")
    assert status == 401 and body["error"]["code"] == "invalid_state"
    assert shop.db()["users"].count_documents({}) == 0
