"""kill -9 the dev process in the middle of creating an order; after a restart the order is
either complete or fully compensated, and stock is consistent."""
from __future__ import annotations

import threading
import uuid
from pathlib import Path

import pytest
from bson import ObjectId
from pymongo import MongoClient

from tests.accounts import mint_token
from tests.conftest import BASE_TOML, JWT_KEY
from tests.clients import http, ignore_errors
from tests.polling import wait_until

pytestmark = pytest.mark.slow

REAL = {"void": {"$exists": False}}  # orders, not the stubs that undone ones leave


def _start(dev_process, tmp_path: Path, mongo_uri: str, db_name: str, *extra: str):
    return dev_process("-c", str(BASE_TOML), "--port", "0", "--persist-to", str(tmp_path / "state"),
                       "--var", f"MONGODB_DB:{db_name}", "--var", "ORDER_RECOVERY_S:0.5", *extra,
                       extra_env={"MONGODB_URI": mongo_uri, "JWT_KEY": JWT_KEY})


def _order_until_paused(dev_process, tmp_path: Path, mongo_uri: str, pause_var: str, point: str):
    """A dev session whose order stops at `point` and is killed there: (db, admin, product, db name)."""
    db_name = f"t_{uuid.uuid4().hex[:16]}"
    db = MongoClient(mongo_uri)[db_name]
    admin = mint_token(db, JWT_KEY, "admin", str(ObjectId()), "admin@x")
    user = mint_token(db, JWT_KEY, "user", str(ObjectId()), "u@x")
    dev = _start(dev_process, tmp_path, mongo_uri, db_name, "--var", f"{pause_var}:{point}")
    url = dev.urls["rest-shop-api"]
    status, product = http("POST", url + "/products", {"name": "Crashy", "price": 5, "stock": 10},
                           {"Authorization": f"Bearer {admin}"})
    assert status == 201
    threading.Thread(target=lambda: ignore_errors(http, "POST", url + "/orders",
                                            {"productId": product["_id"], "quantity": 4},
                                            {"Authorization": f"Bearer {user}"}), daemon=True).start()
    dev.wait_for_output(f"{pause_var} reached: {point}")
    dev.kill9()
    return db, admin, user, product, db_name


@pytest.mark.parametrize("pause, outcome", [("after-reserve", "compensated"), ("after-insert", "completed")])
def test_killed_mid_order_is_completed_or_compensated(dev_process, tmp_path: Path, mongo_uri: str,
                                                      pause: str, outcome: str) -> None:
    db, admin, _, product, db_name = _order_until_paused(dev_process, tmp_path, mongo_uri, "ORDER_TEST_PAUSE", pause)

    doc = db["products"].find_one({"_id": ObjectId(product["_id"])})
    assert doc["stock"] == 6  # the reservation happened (and reached the read model) before the crash
    assert (db["orders"].count_documents(REAL) == 1) == (outcome == "completed")

    again = _start(dev_process, tmp_path, mongo_uri, db_name)  # recovery alarm fires after the restart
    url = again.urls["rest-shop-api"]
    admin_auth = {"Authorization": f"Bearer {admin}"}

    def levels() -> dict:
        status, body = http("GET", f"{url}/products/{product['_id']}/stock", headers=admin_auth)
        assert status == 200
        return body
    if outcome == "compensated":
        settled = wait_until(lambda: levels()["stock"] == 10 and levels()["holds"] == []
                        and db["products"].find_one({"_id": ObjectId(product["_id"])})["stock"] == 10)
        assert settled and db["orders"].count_documents(REAL) == 0
        assert db["orders"].count_documents({"void": True}) == 1  # a late write of the order would now fail
    else:
        order_id = str(db["orders"].find_one(REAL)["_id"])
        status, order = http("GET", f"{url}/orders/{order_id}", headers=admin_auth)
        assert status == 200 and order["status"] == "pending" and order["quantity"] == 4
        assert levels() == {"productId": product["_id"], "stock": 6, "held": 4,
                            "holds": [{"orderId": order_id, "quantity": 4}]}
        status, cancelled = http("PATCH", f"{url}/orders/{order_id}/status", {"status": "cancelled"}, admin_auth)
        assert status == 200 and cancelled["status"] == "cancelled"
        assert levels()["stock"] == 10 and levels()["holds"] == []
        assert db["products"].find_one({"_id": ObjectId(product["_id"])})["stock"] == 10
    MongoClient(mongo_uri).drop_database(db_name)


def test_killed_between_a_hold_and_its_read_model(dev_process, tmp_path: Path, mongo_uri: str) -> None:
    """The hold is durable in the product's ProductStock object, the document not yet written:
    after a restart the order is undone (never inserted), the hold released, and the document
    agrees with the object again."""
    db, admin, user, product, db_name = _order_until_paused(dev_process, tmp_path, mongo_uri, "STOCK_TEST_PAUSE",
                                                            "after-hold")
    assert db["products"].find_one({"_id": ObjectId(product["_id"])})["stock"] == 10  # not yet written

    again = _start(dev_process, tmp_path, mongo_uri, db_name)
    url = again.urls["rest-shop-api"]

    def levels() -> dict:
        status, body = http("GET", f"{url}/products/{product['_id']}/stock", headers={"Authorization": f"Bearer {admin}"})
        assert status == 200
        return body
    assert wait_until(lambda: levels()["holds"] == [] and levels()["stock"] == 10
                 and db["products"].find_one({"_id": ObjectId(product["_id"])})["stock"] == 10)
    assert db["orders"].count_documents(REAL) == 0
    status, order = http("POST", url + "/orders", {"productId": product["_id"], "quantity": 10},
                         {"Authorization": f"Bearer {user}"})
    assert status == 201 and levels()["stock"] == 0  # every unit is sellable again, none twice
    MongoClient(mongo_uri).drop_database(db_name)
