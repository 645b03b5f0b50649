"""/user and auth on the real base worker over HTTP, against the embedded MongoDB."""
from __future__ import annotations

import base64
import json
import time

import jwt
import pytest

from tests.conftest import JWT_KEY


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


async def signup(shop, email="ann@example.com", password="correct horse"):
    return await shop.call("POST", "/user/signup", {"email": email, "password": password})


async def test_signup_login_me(shop) -> None:
    status, body, _ = await signup(shop)
    assert status == 201 and body["message"] == "User created"
    assert body["user"]["email"] == "ann@example.com" and body["user"]["role"] == "user"
    assert len(body["user"]["_id"]) == 24 and "password" not in body["user"]
    stored = shop.db()["users"].find_one({"email": "ann@example.com"})
    assert stored["password"].startswith("$argon2id$")

    status, body, _ = await shop.call("POST", "/user/login", {"email": "ANN@example.com", "password": "correct horse"})
    assert status == 200 and body["message"] == "Auth successful"
    claims = jwt.decode(body["token"], JWT_KEY, algorithms=["HS256"])
    assert set(claims) == {"email", "userId", "role", "iat", "exp", "sid", "gen"} and claims["exp"] - claims["iat"] == 3600

    status, me, _ = await shop.call("GET", "/user/me", token=body["token"])
    assert status == 200 and me["email"] == "ann@example.com" and me["_id"] == claims["userId"]


@pytest.mark.parametrize("body, field", [
    ({"email": "not-an-email", "password": "long enough"}, "email"),
    ({"email": "a@example.com", "password": "short"}, "password"),
    ({"email": "a@example.com"}, "password"),
    ({"email": {"$gt": ""}, "password": "long enough"}, "email"),
    ({"email": "a@example.com", "password": "long enough", "role": "admin"}, "role"),
])
async def test_signup_validation(shop, body, field) -> None:
    status, reply, _ = await shop.call("POST", "/user/signup", body)
    assert status == 400 and reply["error"]["code"] == "validation_error"
    assert field in [d["field"] for d in reply["error"]["details"]]
    assert shop.db()["users"].count_documents({}) == 0


async def test_signup_duplicate_email_is_case_insensitive(shop) -> None:
    assert (await signup(shop, "Bob@Example.com"))[0] == 201
    status, body, _ = await signup(shop, "bob@example.COM")
    assert status == 409 and body["error"]["code"] == "conflict"


async def test_login_failures_look_the_same(shop) -> None:
    await signup(shop)
    wrong = await shop.call("POST", "/user/login", {"email": "ann@example.com", "password": "wrong password"})
    unknown = await shop.call("POST", "/user/login", {"email": "nobody@example.com", "password": "wrong password"})
    assert wrong[0] == unknown[0] == 401
    assert wrong[1] == unknown[1] and wrong[1]["message"] == "Auth failed"


def _forged_tokens(shop) -> dict[str, str]:
    now = int(time.time())
    claims = {"email": "e@x.com", "userId": "a" * 24, "role": "admin", "iat": now, "exp": now + 600}
    return {
        "expired": jwt.encode({**claims, "iat": now - 7200, "exp": now - 3600}, JWT_KEY, algorithm="HS256"),
        "other key": jwt.encode(claims, "another-key-" + "y" * 40, algorithm="HS256"),
        "alg none": f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.",
        "hs512": jwt.encode(claims, JWT_KEY, algorithm="HS512"),
        "no exp": jwt.encode({k: v for k, v in claims.items() if k != "exp"}, JWT_KEY, algorithm="HS256"),
        "tampered": (lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"))(
            jwt.encode(claims, JWT_KEY, algorithm="HS256")),
        "garbage": "not.a.jwt",
    }


@pytest.mark.filterwarnings("ignore::jwt.warnings.InsecureKeyLengthWarning")
async def test_bad_tokens_are_401(shop) -> None:
    for name, token in _forged_tokens(shop).items():
        status, body, _ = await shop.call("GET", "/user/me", token=token)
        assert status == 401, name
        assert body["error"]["code"] == "unauthorized", name
    status, body, _ = await shop.call("GET", "/user/me")
    assert status == 401 and "missing bearer token" in body["message"]


async def test_delete_user_rules(shop) -> None:
    ann = (await signup(shop, "ann@example.com"))[1]["user"]["_id"]
    bob = (await signup(shop, "bob@example.com"))[1]["user"]["_id"]
    status, body, _ = await shop.call("DELETE", f"/user/{bob}", token=shop.token(user_id=ann))
    assert status == 403 and body["error"]["code"] == "forbidden"
    assert (await shop.call("DELETE", f"/user/{ann}", token=shop.token(user_id=ann)))[0] == 200
    assert (await shop.call("DELETE", f"/user/{bob}", token=shop.token("admin")))[0] == 200
    status, body, _ = await shop.call("DELETE", f"/user/{bob}", token=shop.token("admin"))
    assert status == 404 and body["error"]["code"] == "not_found"
    assert shop.db()["users"].count_documents({"role": "user"}) == 0  # the admins are accounts too


async def test_signup_and_login_are_rate_limited_per_client(shops) -> None:
    shop = await shops(SIGNUP_RATE_LIMIT="2/3600", LOGIN_RATE_LIMIT="3/900")
    assert [(await signup(shop, f"u{i}@example.com"))[0] for i in range(2)] == [201, 201]
    status, body, headers = await signup(shop, "u9@example.com")
    assert status == 429 and body["error"]["code"] == "rate_limited"
    assert int(headers["Retry-After"]) > 0 and headers["RateLimit-Remaining"] == "0"
    assert shop.db()["users"].count_documents({}) == 2
    logins = [(await shop.call("POST", "/user/login", {"email": "u0@example.com", "password": "correct horse"}))[0]
              for _ in range(4)]
    assert logins == [200, 200, 200, 429]
    spoofed = await shop.call("POST", "/user/login", {"email": "u0@example.com", "password": "correct horse"},
                              headers={"X-Forwarded-For": "203.0.113.9", "CF-Connecting-IP": "203.0.113.9"})
    assert spoofed[0] == 429  # unsigned forwarding headers are the client's word: not believed


async def test_health_reports_database_and_pool(shop) -> None:
    status, body, _ = await shop.call("GET", "/health")
    assert status == 200 and body["status"] == "ok" and body["service"] == "rest-shop-api"
    assert body["database"]["status"] == "connected" and body["database"]["latency_ms"] >= 0
    assert body["database"]["pool"]["connections"]["total"] >= 1
    assert JWT_KEY not in json.dumps(body) and "mongodb://" not in json.dumps(body)


async def test_health_is_503_when_the_database_is_unreachable(shops, monkeypatch) -> None:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    monkeypatch.setenv("MONGODB_URI", f"mongodb://127.0.0.1:{dead_port}/?directConnection=true")
    shop = await shops(MONGODB_TIMEOUT_MS=200)
    status, body, headers = await shop.call("GET", "/health")
    assert status == 503 and body["status"] == "degraded"
    assert headers.get("Retry-After") == "1"  # away for now: a gateway's breaker does not count it
    assert body["database"]["status"] == "disconnected" and body["database"]["pool"]["last_error"]
