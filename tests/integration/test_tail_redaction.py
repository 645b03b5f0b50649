"""What a tail shows of a request's credentials: nothing, however the client spells them (the
review found `;access_token=`, `access%5Ftoken` — which does authenticate a WebSocket — and the
M-Pesa callback's `sig` in the clear)."""
from __future__ import annotations

import json
import secrets

from yarl import URL

from durable.observe.tail import TailFilters
from tests.conftest import Shop
from tests.polling import eventually


async def test_no_spelling_of_a_credential_reaches_the_tail(full_shop: Shop) -> None:
    shop = full_shop
    tails = [shop.runtime.hub.create(name, TailFilters.from_api({}))
             for name in ("rest-shop-gateway", "rest-shop-api", "rest-shop-payments")]
    owner = shop.token("user")
    secret = secrets.token_hex(16)
    spellings = [f"/api/orders/{'0' * 24}/live?access%5Ftoken={owner}",
                 f"/api/orders/{'0' * 24}/live?x=1;access_token={secret}",
                 f"/api/products?ACCESS_TOKEN={secret}&page=1",
                 f"/api/products?access_token+={secret}",
                 f"/api/payments/mpesa/callback?payment=p1&sig={secret}"]
    for path in spellings:
        url = URL(shop.url + path, encoded=True)  # sent as spelled, not re-quoted by the client
        async with shop.http.request("POST" if "mpesa" in path else "GET", url, json={}) as resp:
            assert resp.status < 500, (path, resp.status)

    async def events() -> list[dict]:
        seen = [tail.queue.get_nowait() for tail in tails for _ in range(tail.queue.qsize())]
        collected.extend(seen)
        gateway = [e for e in collected if e["scriptName"] == "rest-shop-gateway" and "request" in e["event"]]
        payments = [e for e in collected if e["scriptName"] == "rest-shop-payments" and "request" in e["event"]]
        return collected if len(gateway) >= len(spellings) and payments else []
    collected: list[dict] = []
    found = await eventually(events)
    assert found, "no trace events"
    text = json.dumps(found)
    assert secret not in text and owner not in text
    assert "sig=REDACTED" in text and "access%5Ftoken=REDACTED" in text and ";access_token=REDACTED" in text
    for tail in tails:
        shop.runtime.hub.delete(tail.id)
