"""What every operation of a service can answer, added to the document QuartSchema builds from
the route decorators: the answers no single handler raises but every request can meet.

- 400 `validation_error` / `invalid_id` wherever the request has a body, a query or a path id;
  404 wherever the path names a resource; 413 for bodies over the size limit;
- 429 (the gateway's rate limits), 503 (database, a Durable Object's node, the gateway's
  breaker), and the gateway's 502 (a service failed without our error shape) and 504 (a
  service did not answer in time) everywhere;
- path ids constrained as the server checks them (24 hex characters), so a document-valid id is
  never refused as malformed.
Each answer carries the error envelope (ARCHITECTURE.md, API conventions).
"""
from __future__ import annotations

import inspect
import re
from typing import Any

from quart_schema.openapi import OpenAPIProvider

from models.errors import ErrorBody
from models.ids import PATH_OBJECT_ID

# printable ASCII, 1-255, no space at either end (HTTP trims it)
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e](?:[\x20-\x7e]{0,253}[\x21-\x7e])?$"

OBJECT_ID = {"type": "string", "pattern": f"^{PATH_OBJECT_ID}$", "examples": ["65f1c0ffee0ddba11b0a7c11"]}
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}
REASONS = {400: "Invalid request", 404: "Not found", 413: "Body too large", 429: "Rate limited (retry after "
           "the Retry-After header)", 502: "The service behind the gateway failed",
           503: "A dependency is unavailable (retry after the Retry-After header)",
           504: "The service behind the gateway did not answer in time (retry after the Retry-After header)"}


def _error(status: int) -> dict[str, Any]:
    return {"description": REASONS[status], "content": {"application/json": {"schema": ERROR_REF}}}


class TruthfulOpenAPI(OpenAPIProvider):
    _operation_ids: set[str]  # names given so far in the document being built (see schema)

    def operation_id(self, method: str, path: str, func: Any) -> str | None:
        """The handler's name (`create_order`), method-prefixed only where one handler serves
        several methods: the names generated clients give their calls."""
        name = func.__name__
        if name in self._operation_ids:
            name = f"{method.lower()}_{name}"
        self._operation_ids.add(name)
        return name

    def build_paths(self, rule: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        handler = self._app.view_functions[rule.endpoint]
        required = getattr(handler, "_idempotency_key", None)
        media_type = getattr(handler, "_documents_file", None)
        target = getattr(handler, "_documents_redirect", None)
        choices = getattr(handler, "_path_choices", {})
        patterns = getattr(handler, "_path_patterns", {})
        for operations in paths.values():
            for operation in operations.values():
                if required is not None:
                    operation.setdefault("parameters", []).append({
                        "name": "Idempotency-Key", "in": "header", "required": required,
                        "description": "the same key and body replay the first answer; a reused key with "
                                       "another body is refused",
                        "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN}})
                if media_type is not None:
                    file = {media_type: {"schema": {"type": "string", "contentMediaType": media_type}}}
                    operation["responses"][200] = {"description": "The file", "content": file}
                    ranges, revalidated = getattr(handler, "_documents_file_answers", (False, False))
                    if ranges:
                        operation["responses"][206] = {"description": "The bytes a Range asked for", "content": file}
                    if revalidated:
                        operation["responses"][304] = {"description": "Not modified (If-None-Match matched)"}
                if target is not None:
                    operation["responses"].pop(200, None)
                    operation["responses"][302] = {"description": f"Redirect to {target}", "headers": {
                        "Location": {"required": True, "schema": {"type": "string", "format": "uri"}}}}
                for parameter in operation.get("parameters", []):
                    if parameter.get("in") == "path" and parameter["name"] in choices:
                        parameter["schema"] = {"type": "string", "enum": list(choices[parameter["name"]])}
                    if parameter.get("in") == "path" and parameter["name"] in patterns:
                        parameter["schema"] = {"type": "string", "pattern": patterns[parameter["name"]]}
        return paths, components

    def schema(self) -> dict[str, Any]:
        self._operation_ids = set()
        document = super().schema()
        components = document.setdefault("components", {}).setdefault("schemas", {})
        components.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"))
        for definition in components["ErrorBody"].pop("$defs", {}).items():
            components.setdefault(*definition)
        by_id: dict[str, dict[str, Any]] = {}
        for operations in document["paths"].values():
            for operation in operations.values():
                complete(operation)
                hoist(operation, components)
                by_id[operation.get("operationId", "")] = operation
        link(by_id)
        sockets = websockets(self._app)
        if sockets:
            document["x-websockets"] = sockets
        return document


def websockets(app: Any) -> dict[str, dict[str, str]]:
    """OpenAPI cannot describe a WebSocket, so the document lists them under `x-websockets`:
    path → summary and description (from the handler's docstring)."""
    found: dict[str, dict[str, str]] = {}
    for rule in app.url_map.iter_rules():
        if getattr(rule, "websocket", False):
            doc = inspect.getdoc(app.view_functions[rule.endpoint]) or ""
            summary, _, description = doc.partition("\n\n")
            found[re.sub(r"<(?:[^:>]+:)?([^>]+)>", r"{\1}", rule.rule)] = {"summary": summary.strip(),
                                                                            "description": description.strip()}
    return found


# What one answer lets a client do next (OpenAPI links): the way through the API for generated
# clients and for stateful testing — signup → login; product → order → cancel/status; payment →
# read/verify/refund. (Across the two documents, orderId travels by hand.)
LINKS: dict[tuple[str, int], dict[str, dict[str, Any]]] = {
    ("signup", 201): {"LogIn": {"operationId": "login", "requestBody": {"email": "$request.body#/email",
                                                                        "password": "$request.body#/password"}}},
    ("create_product", 201): {
        "GetProduct": {"operationId": "get_product", "parameters": {"product_id": "$response.body#/_id"}},
        "OrderIt": {"operationId": "create_order", "requestBody": {"productId": "$response.body#/_id"}},
        "StockOf": {"operationId": "stock_levels", "parameters": {"product_id": "$response.body#/_id"}}},
    ("create_order", 201): {
        "GetOrder": {"operationId": "get_order", "parameters": {"order_id": "$response.body#/createdOrder/_id"}},
        "CancelOrder": {"operationId": "cancel_order", "parameters": {"order_id": "$response.body#/createdOrder/_id"}},
        "SetStatus": {"operationId": "set_status", "parameters": {"order_id": "$response.body#/createdOrder/_id"}}},
    ("initiate", 201): {
        "GetPayment": {"operationId": "get_payment", "parameters": {"payment_id": "$response.body#/payment/_id"}},
        "Verify": {"operationId": "verify", "parameters": {"payment_id": "$response.body#/payment/_id"}},
        "Refund": {"operationId": "refund", "parameters": {"payment_id": "$response.body#/payment/_id"}}},
}


def link(operations: dict[str, dict[str, Any]]) -> None:
    for (source, status), links in LINKS.items():
        response = operations.get(source, {}).get("responses", {}).get(status)
        usable = {name: spec for name, spec in links.items() if spec["operationId"] in operations}
        if response is not None and usable:
            response["links"] = usable


def hoist(operation: dict[str, Any], components: dict[str, Any]) -> None:
    """Named body schemas go to components and are referenced: one model per name for client
    generators (QuartSchema writes each response's schema inline, so ErrorBody appeared once per
    status and generated clients dropped all but one)."""
    bodies = [operation.get("requestBody") or {}, *operation.get("responses", {}).values()]
    for body in bodies:
        for media in (body.get("content") or {}).values():
            schema = media.get("schema") or {}
            title = schema.get("title")
            if title and schema.get("type") == "object" and components.get(title, schema) == schema:
                components[title] = schema
                media["schema"] = {"$ref": f"#/components/schemas/{title}"}


def complete(operation: dict[str, Any]) -> None:
    if "requestBody" in operation:
        operation["requestBody"]["required"] = True  # no operation here takes an empty body
    parameters = operation.setdefault("parameters", [])
    path_params = [p for p in parameters if p.get("in") == "path"]
    for parameter in path_params:
        if parameter["name"].endswith("_id"):
            parameter["schema"] = dict(OBJECT_ID)
    statuses = [429, 502, 503, 504]
    if operation.get("requestBody") or path_params or any(p.get("in") == "query" for p in parameters):
        statuses.append(400)
    if path_params:
        statuses.append(404)
    if operation.get("requestBody"):
        statuses.append(413)
    responses = operation.setdefault("responses", {})
    for status in statuses:
        responses.setdefault(status, _error(status))
