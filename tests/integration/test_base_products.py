"""/products on the real base worker: catalogue reads, admin writes, validation, images."""
from __future__ import annotations

import pytest

async def test_create_and_read_product(shop) -> None:
    created = await shop.product(name="  Red Shoe  ", price=19.99, stock=3, sku="RS-1", category="shoes",
                                 description="A red running shoe")
    assert created["name"] == "Red Shoe" and created["price"] == 19.99 and created["currency"] == "USD"
    assert created["isActive"] is True and created["createdAt"].endswith("Z")
    stored = shop.db()["products"].find_one({"sku": "RS-1"})
    assert stored["price_minor"] == 1999 and "red" in stored["keywords"]
    status, body, _ = await shop.call("GET", f"/products/{created['_id']}")
    assert status == 200 and body == created


@pytest.mark.parametrize("body, field", [
    ({"name": "x", "price": 1.999}, "price"),
    ({"name": "x", "price": -1}, "price"),
    ({"name": "   ", "price": 1}, "name"),
    ({"price": 1}, "name"),
    ({"name": "x", "price": 1, "stock": -1}, "stock"),
    ({"name": "x", "price": 1, "stock": 1.5}, "stock"),
    ({"name": "x", "price": 1, "description": "d" * 2001}, "description"),
    ({"name": "x", "price": 1, "currency": "usd"}, "currency"),
    ({"name": "x", "price": 1, "sku": "has space"}, "sku"),
    ({"name": "x", "price": 1, "holds": []}, "holds"),
    ({"name": {"$gt": ""}, "price": 1}, "name"),
])
async def test_create_validation(shop, body, field) -> None:
    status, reply, _ = await shop.call("POST", "/products", body, token=shop.token("admin"))
    assert status == 400 and reply["error"]["code"] == "validation_error"
    assert field in [d["field"] for d in reply["error"]["details"]]
    assert shop.db()["products"].count_documents({}) == 0


async def test_writes_need_an_admin(shop) -> None:
    assert (await shop.call("POST", "/products", {"name": "x", "price": 1}))[0] == 401
    status, body, _ = await shop.call("POST", "/products", {"name": "x", "price": 1}, token=shop.token("user"))
    assert status == 403 and body["error"]["code"] == "forbidden"


async def test_duplicate_sku_is_409(shop) -> None:
    await shop.product(sku="SKU-1")
    status, body, _ = await shop.call("POST", "/products", {"name": "y", "price": 1, "sku": "SKU-1"},
                                      token=shop.token("admin"))
    assert status == 409 and body["error"]["code"] == "conflict"
    await shop.product(name="no sku one")
    await shop.product(name="no sku two")  # products without a sku never collide


async def test_get_unknown_and_malformed_ids(shop) -> None:
    status, body, _ = await shop.call("GET", "/products/" + "0" * 24)
    assert status == 404 and body["error"]["code"] == "not_found"
    status, body, _ = await shop.call("GET", "/products/not-an-id")
    assert status == 400 and body["error"]["code"] == "invalid_id"


async def test_list_paginates_filters_searches_and_sorts(shop) -> None:
    for i, (name, price, category) in enumerate([("Red shoe", 50, "shoes"), ("Blue shoe", 30, "shoes"),
                                                  ("Red hat", 20, "hats"), ("Green hat", 10.5, "hats"),
                                                  ("Red scarf", 15, "scarves")]):
        await shop.product(name=name, price=price, category=category)
    status, page, _ = await shop.call("GET", "/products?limit=2&page=2&sort=price_asc")
    assert status == 200 and page["total"] == 5 and page["count"] == 2
    assert page["pagination"] == {"page": 2, "limit": 2, "pages": 3}
    assert [p["price"] for p in page["products"]] == [20, 30]
    names = lambda body: [p["name"] for p in body["products"]]  # noqa: E731
    assert names((await shop.call("GET", "/products?search=red&sort=name"))[1]) == ["Red hat", "Red scarf", "Red shoe"]
    assert names((await shop.call("GET", "/products?search=RED%20Shoe"))[1]) == ["Red shoe"]
    assert names((await shop.call("GET", "/products?category=hats&sort=price_desc"))[1]) == ["Red hat", "Green hat"]
    assert names((await shop.call("GET", "/products?minPrice=15&maxPrice=30&sort=price_asc"))[1]) == [
        "Red scarf", "Red hat", "Blue shoe"]
    assert names((await shop.call("GET", "/products?sort=newest&limit=1"))[1]) == ["Red scarf"]


@pytest.mark.parametrize("query", ["limit=101", "limit=0", "page=0", "page=-1", "sort=random", "minPrice=-1",
                                   "maxPrice=abc", "limit=abc", "bogus=1"])
async def test_list_query_validation(shop, query) -> None:
    status, body, _ = await shop.call("GET", f"/products?{query}")
    assert status == 400 and body["error"]["code"] == "validation_error"


async def test_patch_is_partial_and_validated(shop) -> None:
    product = await shop.product(name="Lamp", price=40, stock=2, description="for the desk")
    admin = shop.token("admin")
    status, body, _ = await shop.call("PATCH", f"/products/{product['_id']}", {"price": 35.5}, token=admin)
    assert status == 200 and body["price"] == 35.5 and body["stock"] == 2 and body["name"] == "Lamp"
    assert body["updatedAt"] > product["updatedAt"]
    status, body, _ = await shop.call("PATCH", f"/products/{product['_id']}", {"name": "Floor light"}, token=admin)
    assert (await shop.call("GET", "/products?search=floor"))[1]["total"] == 1
    assert (await shop.call("GET", "/products?search=lamp"))[1]["total"] == 0
    for bad in ({}, {"price": "x"}, {"stock": -3}, {"unknown": 1}):
        status, body, _ = await shop.call("PATCH", f"/products/{product['_id']}", bad, token=admin)
        assert status == 400, bad
    assert (await shop.call("PATCH", "/products/" + "0" * 24, {"price": 1}, token=admin))[0] == 404


async def test_soft_delete_hides_from_public_but_not_admins(shop) -> None:
    product = await shop.product(name="Old thing")
    admin = shop.token("admin")
    status, body, _ = await shop.call("DELETE", f"/products/{product['_id']}", token=admin)
    assert status == 200 and body["product"]["isActive"] is False
    assert (await shop.call("GET", f"/products/{product['_id']}"))[0] == 404
    assert (await shop.call("GET", "/products"))[1]["total"] == 0
    assert (await shop.call("GET", f"/products/{product['_id']}", token=admin))[1]["isActive"] is False
    assert (await shop.call("GET", "/products?showInactive=true", token=admin))[1]["total"] == 1
    status, body, _ = await shop.call("GET", "/products?showInactive=true", token=shop.token("user"))
    assert status == 403


@pytest.mark.parametrize("image", ["javascript:alert(1)", "http://plain.example/x.png", "/etc/passwd",
                                   "/uploads/../../x.png", "data:text/html;base64,PHNjcmlwdD4=",
                                   "https://ok.example/a.png\" onerror=\"x"])
async def test_product_images_are_our_uploads_or_https_urls(shop, image) -> None:
    admin = shop.token("admin")
    status, body, _ = await shop.call("POST", "/products", {"name": "X", "price": 1, "productImage": image},
                                      token=admin)
    assert status == 400 and body["error"]["details"][0]["field"] == "productImage"
    created = await shop.product(productImage="https://cdn.example/a.png")
    status, body, _ = await shop.call("PATCH", f"/products/{created['_id']}", {"productImage": image}, token=admin)
    assert status == 400


async def test_openapi_document_is_served(shop) -> None:
    status, spec, _ = await shop.call("GET", "/openapi.json")
    assert status == 200 and spec["openapi"].startswith("3.1")
    assert {"/products", "/products/{product_id}", "/orders", "/user/signup"} <= set(spec["paths"])


async def test_reads_are_never_stale_after_writes(shop) -> None:
    product = await shop.product(name="Cached", price=10, stock=5)
    path = f"/products/{product['_id']}"
    assert (await shop.call("GET", path))[1]["stock"] == 5
    assert (await shop.call("GET", "/products"))[1]["products"][0]["stock"] == 5  # both now cached
    await shop.call("POST", "/orders", {"productId": product["_id"], "quantity": 2}, token=shop.token())
    assert (await shop.call("GET", path))[1]["stock"] == 3
    assert (await shop.call("GET", "/products"))[1]["products"][0]["stock"] == 3
    await shop.call("PATCH", path, {"price": 12.25}, token=shop.token("admin"))
    assert (await shop.call("GET", path))[1]["price"] == 12.25
    assert (await shop.call("GET", "/products"))[1]["products"][0]["price"] == 12.25


async def test_a_405_says_which_methods_are_allowed(shop) -> None:
    status, body, headers = await shop.call("PUT", "/products")
    assert status == 405 and body["error"]["code"] == "method_not_allowed"
    assert {m.strip() for m in headers["Allow"].split(",")} >= {"GET", "POST"}
