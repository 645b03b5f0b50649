"""Who the client is, and how hard it may push: the address the gateway resolved (and signed) is
the only one the services believe; logins are limited per address and per account, without an
attacker locking the owner out or learning whether an email is registered."""
from __future__ import annotations

from typing import Any

from tests.accounts import account

PROXY = {"TRUSTED_PROXIES": "127.0.0.1"}  # as behind the README's nginx: the gateway believes its X-Forwarded-For


async def attempt(shop: Any, email: str, password: str, ip: str | None = None) -> tuple[int, Any]:
    headers = {"X-Forwarded-For": ip} if ip else {}
    status, body, _ = await shop.call("POST", "/api/user/login", {"email": email, "password": password},
                                      headers=headers)
    return status, body


async def test_behind_a_trusted_proxy_each_client_has_its_own_login_budget(custom_shop) -> None:
    """The reproduction: base used the gateway's own address, so one client's bad logins locked out everyone."""
    shop = await custom_shop(gateway_vars=PROXY, base_vars={"LOGIN_RATE_LIMIT": "3/900", "LOGIN_FREE_FAILURES": 100})
    await account(shop, "ann@example.com")  # signs up and logs in from 127.0.0.1: a budget of its own
    for _ in range(3):
        assert (await attempt(shop, "ann@example.com", "wrong", "203.0.113.66"))[0] == 401
    assert (await attempt(shop, "ann@example.com", "wrong", "203.0.113.66"))[0] == 429
    assert (await attempt(shop, "ann@example.com", "correct horse", "198.51.100.7"))[0] == 200  # someone else


async def test_without_a_trusted_proxy_client_sent_addresses_are_ignored(custom_shop) -> None:
    shop = await custom_shop(base_vars={"LOGIN_RATE_LIMIT": "2/900", "LOGIN_FREE_FAILURES": 100})
    results = []
    for i in range(3):  # a fresh made-up address each time buys no fresh budget
        status, _, _ = await shop.call("POST", "/api/user/login", {"email": "x@example.com", "password": "wrong"},
                                       headers={"X-Forwarded-For": f"203.0.113.{i}", "CF-Connecting-IP": f"10.0.0.{i}",
                                                "X-Real-IP": f"10.1.0.{i}"})
        results.append(status)
    assert results == [401, 401, 429]


async def test_an_account_under_attack_slows_down_but_its_owner_still_gets_in(custom_shop) -> None:
    shop = await custom_shop(gateway_vars=PROXY, base_vars={"LOGIN_FREE_FAILURES": 3, "LOGIN_FIRST_DELAY_S": 300})
    await account(shop, "owner@example.com")
    assert (await attempt(shop, "owner@example.com", "correct horse", "198.51.100.10"))[0] == 200  # usual address
    # many addresses, each with few tries: after 3 failures the account itself holds everyone back
    statuses = [(await attempt(shop, "owner@example.com", "guess", f"203.0.113.{i}"))[0] for i in range(6)]
    assert statuses == [401, 401, 401, 429, 429, 429]
    status, body = await attempt(shop, "owner@example.com", "guess", "203.0.113.99")
    assert status == 429 and body["error"]["code"] == "login_locked"
    # even the right password from a new address waits; from the owner's usual address it works
    assert (await attempt(shop, "owner@example.com", "correct horse", "203.0.113.100"))[0] == 429
    assert (await attempt(shop, "owner@example.com", "correct horse", "198.51.100.10"))[0] == 200
    # and that success starts the count over for everyone
    assert (await attempt(shop, "owner@example.com", "guess", "203.0.113.101"))[0] == 401


async def test_locked_answers_do_not_tell_whether_the_email_exists(custom_shop) -> None:
    shop = await custom_shop(gateway_vars=PROXY, base_vars={"LOGIN_FREE_FAILURES": 2, "LOGIN_FIRST_DELAY_S": 300})
    await account(shop, "real@example.com")
    answers = {}
    for email in ("real@example.com", "nobody@example.com"):
        answers[email] = [(await attempt(shop, email, "guess", f"203.0.113.{i}")) for i in range(4)]
    real, fake = answers["real@example.com"], answers["nobody@example.com"]
    assert [s for s, _ in real] == [s for s, _ in fake] == [401, 401, 429, 429]
    assert [b["error"]["code"] for _, b in real] == [b["error"]["code"] for _, b in fake]
    assert real[0][1]["message"] == fake[0][1]["message"] == "Auth failed"


async def test_login_does_not_judge_the_password_s_shape(full_shop) -> None:
    """A wrong password shorter than the signup policy is a plain 401, not the policy."""
    await account(full_shop, "short@example.com")
    status, body = await attempt(full_shop, "short@example.com", "abc")
    assert status == 401 and body["message"] == "Auth failed"


async def test_hoarding_through_the_gateway_is_capped(full_shop) -> None:
    """The reproduction, through the edge: three unpaid orders of 100 units held all 300 for 30 min."""
    shop = full_shop
    product = await shop.product(stock=300)
    hoarder, other = shop.token(), shop.token()
    statuses = [(await shop.call("POST", "/api/orders", {"productId": product["_id"], "quantity": 50},
                                 token=hoarder))[0] for _ in range(3)]
    assert statuses == [201, 409, 409]  # MAX_UNPAID_UNITS = 50 by default: the second would pass it
    status, body, _ = await shop.call("POST", "/api/orders", {"productId": product["_id"], "quantity": 100},
                                      token=hoarder)
    assert status == 409 and body["error"]["code"] == "unpaid_limit"
    assert (await shop.call("POST", "/api/orders", {"productId": product["_id"], "quantity": 50}, token=other))[0] == 201


