"""kill -9 the payments process after Stripe charged but before our records were final; the
client's retry with the same Idempotency-Key completes the payment without a second charge."""
from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from bson import ObjectId
from pymongo import MongoClient

from tests.accounts import mint_token
from tests.conftest import BASE_TOML, JWT_KEY, PAYMENTS_TOML
from tests.clients import http, ignore_errors, ledger

pytestmark = pytest.mark.slow


def test_killed_after_the_charge_retry_does_not_charge_twice(dev_process, tmp_path: Path, mongo_uri: str,
                                                             stripe_server) -> None:
    stripe_url, stripe_key = stripe_server
    db_name = f"t_{uuid.uuid4().hex[:16]}"
    env = {"MONGODB_URI": mongo_uri, "JWT_KEY": JWT_KEY, "STRIPE_SECRET_KEY": stripe_key,
           "STRIPE_WEBHOOK_SECRET": "whsec_not_used_here"}

    def start(*extra: str):
        return dev_process("-c", str(BASE_TOML), "-c", str(PAYMENTS_TOML), "--port", "0",
                           "--persist-to", str(tmp_path / "state"), "--var", f"MONGODB_DB:{db_name}",
                           "--var", f"STRIPE_API_BASE:{stripe_url}", *extra, extra_env=env)

    admin = mint_token(MongoClient(mongo_uri)[db_name], JWT_KEY, "admin", str(ObjectId()), "a@x")
    user_id = str(ObjectId())
    user = mint_token(MongoClient(mongo_uri)[db_name], JWT_KEY, "user", user_id, "u@x")
    dev = start("--var", "PAYMENTS_TEST_PAUSE:after-provider")
    base = dev.urls["rest-shop-api"]
    product = http("POST", base + "/products", {"name": "P", "price": 7.5, "stock": 5},
                   {"Authorization": f"Bearer {admin}"})[1]
    order = http("POST", base + "/orders", {"productId": product["_id"], "quantity": 2},
                 {"Authorization": f"Bearer {user}"})[1]["createdOrder"]
    body = {"orderId": order["_id"], "paymentMethod": "stripe", "paymentData": {"paymentMethodId": "pm_card_visa"}}
    headers = {"Authorization": f"Bearer {user}", "Idempotency-Key": "checkout-1"}
    threading.Thread(target=ignore_errors, args=(http, "POST", dev.urls["rest-shop-payments"] + "/payments/initiate",
                                           body, headers), daemon=True).start()
    dev.wait_for_output("PAYMENTS_TEST_PAUSE reached: after-provider")
    dev.kill9()
    assert [(e["type"], e["amount"]) for e in ledger(stripe_url)] == [("charge", 1500)]
    payment = MongoClient(mongo_uri)[db_name]["payments"].find_one({})
    assert payment["status"] == "processing"  # every charge has a record, even mid-crash

    again = start()
    status, reply = http("POST", again.urls["rest-shop-payments"] + "/payments/initiate", body, headers)
    assert status == 201 and reply["payment"]["status"] == "succeeded"
    assert reply["payment"]["_id"] == str(payment["_id"])
    assert [(e["type"], e["amount"]) for e in ledger(stripe_url)] == [("charge", 1500)]  # not charged twice
    status, got = http("GET", f"{again.urls['rest-shop-api']}/orders/{order['_id']}",
                       headers={"Authorization": f"Bearer {user}"})
    assert (got["status"], got["paymentStatus"]) == ("confirmed", "paid")
    MongoClient(mongo_uri).drop_database(db_name)
