"""The one place where exceptions become HTTP statuses and the JSON error body `{"error": {"code", "message"}}`.

Handlers and the node raise domain errors (`server.errors`); aiohttp raises its own HTTPExceptions for unmatched
routes (404), wrong methods (405) and bodies over `client_max_size` (413). Both end up here, so every error a client
sees has the same shape whatever produced it. Error bodies are always JSON, even for msgpack clients: they are rare
and must be readable by a human with curl.
"""

from __future__ import annotations

import json
import logging

from aiohttp import web

from rumor.server.errors import (
    BadRequestError,
    KeyNotFoundError,
    NodeNotRunningError,
    OpIdConflictError,
    PayloadTooLargeError,
    ServerError,
    StorageError,
    TypeConflictError,
    UnauthorizedError,
    UnsupportedMediaTypeError,
)

log = logging.getLogger(__name__)

#: Most specific first: the first class the error is an instance of decides.
STATUS_BY_ERROR: tuple[tuple[type[ServerError], int], ...] = (
    (OpIdConflictError, 422),
    (BadRequestError, 400),
    (UnauthorizedError, 401),
    (KeyNotFoundError, 404),
    (TypeConflictError, 409),
    (PayloadTooLargeError, 413),
    (UnsupportedMediaTypeError, 415),
    (StorageError, 503),
    (NodeNotRunningError, 503),
    (ServerError, 500),
)

_CODE_BY_HTTP_STATUS = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> web.Response:
    body = json.dumps({"error": {"code": code, "message": message}}, ensure_ascii=False)
    return web.Response(status=status, text=body, content_type="application/json", headers=headers)


def status_for(exc: ServerError) -> int:
    return next(status for cls, status in STATUS_BY_ERROR if isinstance(exc, cls))


def response_for(exc: BaseException) -> web.Response:
    """Maps any exception a handler let escape to the response the client gets."""
    if isinstance(exc, ServerError):
        status = status_for(exc)
        if status >= 500:
            log.error("request failed: %s", exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return error_response(status, exc.code, str(exc), headers)
    if isinstance(exc, web.HTTPException):
        headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
        code = _CODE_BY_HTTP_STATUS.get(exc.status, "http_error")
        return error_response(exc.status, code, exc.reason, headers)
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, "internal", "internal server error")
