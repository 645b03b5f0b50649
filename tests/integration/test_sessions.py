"""Tokens live only as long as their user, role, password and session: each change takes effect
on the very next request, on base and on payments, through the gateway."""
from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from base.stores.users import UserStore
from tests.accounts import account, login
from tests.polling import eventually
from tests.shop_flows import initiate





async def works_everywhere(shop: Any, token: str) -> tuple[int, int]:
    """(base, payments) statuses of an authenticated read on each service."""
    base = (await shop.call("GET", "/api/user/me", token=token))[0]
    payments = (await shop.call("GET", "/api/payments/history", token=token))[0]
    return base, payments


async def test_a_deleted_user_s_token_stops_at_once_on_every_service(full_shop) -> None:
    shop = full_shop
    user_id, token = await account(shop, "gone@example.com")
    product = await shop.product(stock=5)
    assert await works_everywhere(shop, token) == (200, 200)
    status, order, _ = await shop.call("POST", "/api/orders", {"productId": product["_id"]}, token=token)
    assert status == 201
    assert (await shop.call("DELETE", f"/api/user/{user_id}", token=token))[0] == 200
    assert await works_everywhere(shop, token) == (401, 401)
    status, body, _ = await shop.call("POST", "/api/orders", {"productId": product["_id"]}, token=token)
    assert status == 401 and "no longer exists" in body["message"]
    status, body, _ = await initiate(shop, token, order["createdOrder"]["_id"], "after-delete", "card",
                                     paymentMethodId="pm_card_visa")
    assert status == 401  # the reproduction: the old token paid an order after its user was deleted


async def test_a_demoted_admin_loses_admin_powers_at_once(full_shop) -> None:
    shop = full_shop
    root = shop.token("admin")
    demoted_id, _ = await account(shop, "boss@example.com")
    status, _, _ = await shop.call("PATCH", f"/api/user/{demoted_id}/role", {"role": "admin"}, token=root)
    assert status == 200
    boss = await login(shop, "boss@example.com")
    assert (await shop.call("POST", "/api/products", {"name": "Ok", "price": 1, "stock": 1}, token=boss))[0] == 201
    status, body, _ = await shop.call("PATCH", f"/api/user/{demoted_id}/role", {"role": "user"}, token=root)
    assert status == 200 and body["role"] == "user"
    assert (await shop.call("POST", "/api/products", {"name": "No", "price": 1, "stock": 1}, token=boss))[0] == 401
    assert (await shop.call("GET", "/api/orders", token=boss))[0] == 401
    assert (await shop.call("GET", "/api/payments/history", token=boss))[0] == 401
    again = await login(shop, "boss@example.com")  # a new login carries the new role
    assert (await shop.call("POST", "/api/products", {"name": "No", "price": 1, "stock": 1}, token=again))[0] == 403


async def test_a_role_changed_in_the_database_is_picked_up_within_the_refresh(custom_shop) -> None:
    """Behind the API's back (the admin CLI, a console): bounded by SESSION_REFRESH_S."""
    shop = await custom_shop(base_vars={"SESSION_REFRESH_S": "0.2"})
    admin_id, _ = await account(shop, "cli@example.com")
    shop.db()["users"].update_one({"email": "cli@example.com"}, {"$set": {"role": "admin"}})
    admin = await login(shop, "cli@example.com")
    assert (await shop.call("GET", "/api/orders", token=admin))[0] == 200
    client: AsyncMongoClient = AsyncMongoClient(shop.mongo_uri)  # the CLI's own write: role + new generation
    try:
        assert await UserStore(client[shop.db_name]).set_role("cli@example.com", "user")
    finally:
        await client.close()

    async def refused() -> bool:
        return (await shop.call("POST", "/api/products", {"name": "x", "price": 1, "stock": 1}, token=admin))[0] == 401
    assert await eventually(refused, timeout=10)


async def test_changing_the_password_ends_every_older_token(full_shop) -> None:
    shop = full_shop
    _, first = await account(shop, "pw@example.com")
    second = await login(shop, "pw@example.com")
    status, body, _ = await shop.call("PATCH", "/api/user/me/password",
                                      {"currentPassword": "wrong one", "newPassword": "battery staple"}, token=first)
    assert status == 401 and await works_everywhere(shop, first) == (200, 200)
    status, body, _ = await shop.call("PATCH", "/api/user/me/password",
                                      {"currentPassword": "correct horse", "newPassword": "battery staple"},
                                      token=first)
    assert status == 200
    assert await works_everywhere(shop, first) == (401, 401)
    assert await works_everywhere(shop, second) == (401, 401)
    assert await works_everywhere(shop, body["token"]) == (200, 200)
    status, _, _ = await shop.call("POST", "/api/user/login", {"email": "pw@example.com", "password": "correct horse"})
    assert status == 401
    await login(shop, "pw@example.com", "battery staple")


async def test_logout_ends_this_token_and_all_ends_every_token(full_shop) -> None:
    shop = full_shop
    _, phone = await account(shop, "out@example.com")
    laptop = await login(shop, "out@example.com")
    status, body, _ = await shop.call("POST", "/api/user/logout", token=phone)
    assert status == 200 and body["message"] == "Logged out"
    assert await works_everywhere(shop, phone) == (401, 401)
    assert await works_everywhere(shop, laptop) == (200, 200)
    tablet = await login(shop, "out@example.com")
    assert (await shop.call("POST", "/api/user/logout?all=true", token=laptop))[0] == 200
    assert await works_everywhere(shop, laptop) == (401, 401)
    assert await works_everywhere(shop, tablet) == (401, 401)
    assert await works_everywhere(shop, await login(shop, "out@example.com")) == (200, 200)


async def test_the_documents_list_what_these_routes_answer(full_shop) -> None:
    """A generated client learns every status of the session, order and callback routes."""
    from durable import Request
    from durable.asgi import asgi_fetch
    status, base_spec, _ = await full_shop.call("GET", "/api/openapi.json")
    assert status == 200
    reply = await asgi_fetch(full_shop.runtime.workers["rest-shop-payments"], Request("http://payments/openapi.json"))
    pay_spec = await reply.json()
    expected = {
        ("base", "/user/login", "post"): {"200", "400", "401", "429", "503"},
        ("base", "/user/logout", "post"): {"200", "400", "401", "503"},
        ("base", "/user/me/password", "patch"): {"200", "400", "401", "503"},
        ("base", "/user/{user_id}/role", "patch"): {"200", "400", "401", "403", "404", "503"},
        ("base", "/orders", "post"): {"400", "401", "404", "409", "422", "503"},
        ("base", "/orders/{order_id}/cancel", "post"): {"200", "400", "401", "404", "409", "503"},
        ("base", "/products/{product_id}/stock", "get"): {"400", "401", "403", "404", "503"},
        ("payments", "/payments/mpesa/callback", "post"): {"400", "401", "403", "404", "409", "422"},
        ("payments", "/payments/initiate", "post"): {"400", "401", "402", "404", "409", "422", "501", "503"},
    }
    specs = {"base": base_spec, "payments": pay_spec}
    for (service, path, method), statuses in expected.items():
        responses = specs[service]["paths"][path][method]["responses"]
        assert statuses <= {str(s) for s in responses}, (path, method, sorted(responses))
        assert {"502", "504"} <= set(responses)  # the gateway's own failures, on every operation
        error = responses.get("401") or responses.get("400")
        schema = error["content"]["application/json"]["schema"]  # the envelope (ARCHITECTURE.md, API conventions), named once
        assert schema == {"$ref": "#/components/schemas/ErrorBody"}
        envelope = specs[service]["components"]["schemas"]["ErrorBody"]
        assert envelope["required"] == ["message", "error"]


async def test_a_database_failure_inside_an_object_is_a_retryable_503_not_a_500(shop, monkeypatch) -> None:
    """The reproduction (issue 27): a database call cancelled under an object (pymongo's
    `_OperationCancelled`) crossed the RPC as an RpcError and was answered 500 internal_error."""
    from pymongo.errors import _OperationCancelled

    from base.objects.user_sessions import UserSessions

    token = shop.token()
    assert (await shop.call("GET", "/user/me", token=token))[0] == 200

    async def cancelled(self: Any, *args: Any) -> Any:
        raise _OperationCancelled("operation cancelled")
    monkeypatch.setattr(UserSessions, "check", cancelled)
    status, body, headers = await shop.call("GET", "/user/me", token=token)
    assert status == 503 and body["error"]["code"] == "database_unavailable" and headers["Retry-After"]
