"""The per-request access line: the same text and JSON the logging module writes, written directly."""
from __future__ import annotations

import io
import json
import logging

import pytest

from durable.observe.logs import AccessLog, BatchingStreamHandler, JsonFormatter


@pytest.fixture
def restore_level():
    level = AccessLog.logger.level
    yield
    AccessLog.logger.setLevel(level)


def test_text_and_json_lines_match_what_the_logging_module_writes(restore_level) -> None:
    AccessLog.logger.setLevel(logging.INFO)
    for as_json in (False, True):
        stream = io.StringIO()
        handler = BatchingStreamHandler(stream)
        handler.setFormatter(JsonFormatter() if as_json else logging.Formatter("[%(name)s:%(levelname)s] %(message)s"))
        log = AccessLog()
        log.handler, log.json = handler, as_json
        log.write("rest-shop-api", "GET", "/products/1", 200, 1.25, "req-1", "00-abc-def-01")
        log.write("rest-shop-api", "GET", "/gone", None, 0.5, "req-2", "00-abc-def-01")
        # the same line through logging, for comparison
        AccessLog.logger.addHandler(handler)
        try:
            AccessLog.logger.propagate = False
            AccessLog.logger.info("%s %s %s %s (%.1f ms) request_id=%s", "rest-shop-api", "GET", "/products/1", 200,
                                  1.25, "req-1", extra={"worker": "rest-shop-api", "method": "GET",
                                                        "path": "/products/1", "status": 200, "duration_ms": 1.25,
                                                        "request_id": "req-1", "traceparent": "00-abc-def-01",
                                                        "scheme": "http"})
        finally:
            AccessLog.logger.removeHandler(handler)
            AccessLog.logger.propagate = True
        direct, missing, through_logging = stream.getvalue().splitlines()
        if as_json:
            direct_fields, logged_fields = json.loads(direct), json.loads(through_logging)
            assert direct_fields.pop("time")[-1] == "Z" and logged_fields.pop("time")[-1] == "Z"
            assert direct_fields == logged_fields
            assert json.loads(missing)["status"] is None
        else:
            assert direct == through_logging == "[durable.access:INFO] rest-shop-api GET /products/1 200 (1.2 ms) request_id=req-1"
            assert missing.endswith("GET /gone - (0.5 ms) request_id=req-2")
    AccessLog.logger.setLevel(logging.WARNING)  # turned down, nothing is written
    stream = io.StringIO()
    log = AccessLog()
    log.handler = BatchingStreamHandler(stream)
    log.write("w", "GET", "/", 200, 1.0, "r", "t")
    assert stream.getvalue() == ""
