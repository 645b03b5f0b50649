"""/products: public catalogue reads; admin writes (JSON or multipart with an image)."""
from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from quart import Blueprint, request
from quart_schema import (
    document_request,
    document_response,
    validate_querystring,
    validate_request,
    validate_response,
)

from durable import env
from durable.mongo_pool import pooled_database as database
from models.errors_domain import Conflict
from models.ids import is_object_id
from models.pagination import Pagination
from models.products import (
    ProductDeleted,
    ProductIn,
    ProductList,
    ProductOut,
    ProductPatch,
    ProductQuery,
    StockLevels,
)
from web.auth import auth, optional_user
from web.docs import documents_errors
from web.errors import ApiError, validation_details

from ..images import discard_upload, read_upload, store_upload
from ..stores.products import ProductStore

bp = Blueprint("products", __name__, url_prefix="/products")


async def products() -> ProductStore:
    return ProductStore(await database(env))


def product_stock(product_id: str) -> Any:
    return env.PRODUCT_STOCK.get_by_name(product_id)


def _check_id(product_id: str) -> None:
    if not is_object_id(product_id):
        raise ApiError(400, "invalid_id", f"{product_id!r} is not a valid product id")


@bp.get("")
@documents_errors(401, 403)  # a token that is sent must be good; showInactive is for admins
@validate_querystring(ProductQuery)
@document_response(ProductList)  # documented, not re-validated: the store builds this shape (hot path)
async def list_products(query_args: ProductQuery) -> Any:
    if query_args.showInactive:
        user = await optional_user()
        if user is None or user.role != "admin":
            raise ApiError(403, "forbidden", "showInactive is for admins")
    items, total = await (await products()).list(query_args, include_inactive=query_args.showInactive)
    return {"count": len(items), "total": total, "products": items,
            "pagination": Pagination.of(query_args.page, query_args.limit, total).model_dump()}


@bp.get("/<product_id>")
@documents_errors(401)  # a token that is sent must be good
@document_response(ProductOut)
async def get_product(product_id: str) -> Any:
    _check_id(product_id)
    user = await optional_user()
    doc = await (await products()).get(product_id, include_inactive=bool(user and user.role == "admin"))
    if doc is None:
        raise ApiError(404, "not_found", "Product not found")
    return doc


def form_fields(form: Any) -> dict[str, Any]:
    """A form sends text: its whole numbers and true/false become JSON's types (else they stay
    text, and validation says what is wrong)."""
    fields: dict[str, Any] = {k: v for k, v in form.items()}
    if isinstance(fields.get("stock"), str) and fields["stock"].strip().isdigit():
        fields["stock"] = int(fields["stock"])
    if fields.get("isActive") in ("true", "false"):
        fields["isActive"] = fields["isActive"] == "true"
    return fields


async def _product_body() -> tuple[ProductIn, bytes | None]:
    """JSON, or multipart form fields plus an optional `productImage` file (checked, not yet stored)."""
    image = None
    if request.mimetype == "multipart/form-data":
        form = await request.form
        files = await request.files
        fields: dict[str, Any] = form_fields(form)
        if "productImage" in files:
            if "productImage" in fields:
                raise ApiError(400, "validation_error", "Send productImage as a file or as a URL, not both")
            image = read_upload(files["productImage"])
    else:
        fields = await request.get_json(force=False, silent=True)
        if not isinstance(fields, dict):
            raise ApiError(400, "validation_error", "Invalid request: expected a JSON object or multipart form")
    try:
        return ProductIn.model_validate(fields), image
    except ValidationError as exc:
        raise ApiError(400, "validation_error", "Invalid request", validation_details(exc)) from None


@bp.post("")
@documents_errors(409)  # the SKU is taken
@auth("admin")
@document_request(ProductIn)
@validate_response(ProductOut, 201)
async def create_product() -> Any:
    body, image = await _product_body()
    if image is None:
        return await (await products()).create(body.model_dump()), 201
    stored = await store_upload(image)  # only once the product is valid: a refused one leaves no file
    try:
        return await (await products()).create({**body.model_dump(), "productImage": stored}), 201
    except (ApiError, Conflict):  # the product was refused (a taken SKU…): its image is not kept (a
        await discard_upload(stored)  # write cut short may have landed: its image stays)
        raise


@bp.patch("/<product_id>")
@documents_errors(409)  # the SKU is taken
@auth("admin")
@validate_request(ProductPatch)
@validate_response(ProductOut)
async def patch_product(product_id: str, data: ProductPatch) -> Any:
    _check_id(product_id)
    fields = data.model_dump(exclude_unset=True)
    stock = fields.pop("stock", None)
    doc = await (await products()).patch(product_id, fields)
    if doc is None:
        raise ApiError(404, "not_found", "Product not found")
    holder = product_stock(product_id)
    await holder.product_changed()
    if stock is not None:  # the stock's authority is its object; the document follows it
        await holder.set_stock(product_id, stock)
        doc["stock"] = stock
    return doc


@bp.get("/<product_id>/stock")
@documents_errors(400, 404)
@auth("admin")
@document_response(StockLevels)
async def stock_levels(product_id: str) -> Any:
    """Inventory as its authority sees it: on hand, and held by unpaid orders (each named)."""
    _check_id(product_id)
    snapshot = await product_stock(product_id).snapshot(product_id)
    if snapshot is None:
        raise ApiError(404, "not_found", "Product not found")
    holds = [{"orderId": h["o"], "quantity": h["q"]} for h in snapshot["holds"]]
    return {"productId": product_id, "stock": snapshot["stock"], "held": sum(h["quantity"] for h in holds),
            "holds": holds}


@bp.delete("/<product_id>")
@auth("admin")
@document_response(ProductDeleted)
async def delete_product(product_id: str) -> Any:
    """Soft delete: the product stops being sold; orders keep their reference."""
    _check_id(product_id)
    doc = await (await products()).patch(product_id, {"isActive": False})
    if doc is None:
        raise ApiError(404, "not_found", "Product not found")
    await product_stock(product_id).product_changed()  # no new holds for a withdrawn product
    return {"message": "Product deleted", "product": doc}
