"""The one place where exceptions become HTTP responses.

Every handler raises ``voxbox.errors`` classes (or the few server-only subclasses below); this
module maps the class — walking its MRO, never matching message text — to a status and an OpenAI
error body::

    {"error": {"message": "...", "type": "invalid_request_error", "param": "voice", "code": "voice_not_found"}}
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from voxbox.errors import (
    AudioDecodeError,
    AudioTooLongError,
    BadInputError,
    CapacityError,
    DeviceError,
    EngineUnavailableError,
    ImplausibleAudioError,
    ModelLoadError,
    NotFoundError,
    RequestCancelledError,
    ServiceUnavailableError,
    UnsupportedOperationError,
    VoxboxError,
    VoxboxTimeoutError,
)

__all__ = [
    "ERROR_RESPONSES",
    "ErrorResponse",
    "AuthenticationError",
    "ForbiddenError",
    "PARAM_NAMES",
    "NotReadyError",
    "UploadTooLargeError",
    "error_body",
    "install_error_handlers",
    "status_for",
    "to_response",
]

log = logging.getLogger("voxbox.server")


class AuthenticationError(VoxboxError):
    """Missing or wrong API key."""

    code = "invalid_api_key"


class ForbiddenError(VoxboxError):
    """A browser request from an origin that is not allowed."""

    code = "forbidden_origin"


class NotReadyError(VoxboxError):
    """The server is starting or shutting down."""

    code = "not_ready"


class UploadTooLargeError(BadInputError):
    """The request body is larger than the configured upload limit."""

    code = "upload_too_large"


class MethodNotAllowedError(BadInputError):
    code = "method_not_allowed"

    def __init__(self, message: str, *, allow: str | None = None) -> None:
        super().__init__(message)
        self.allow = allow


#: class -> (HTTP status, OpenAI error type). The most specific class in an exception's MRO wins.
STATUS_MAP: dict[type[BaseException], tuple[int, str]] = {
    AuthenticationError: (401, "invalid_request_error"),
    ForbiddenError: (403, "invalid_request_error"),
    NotReadyError: (503, "server_error"),
    ServiceUnavailableError: (503, "server_error"),
    RequestCancelledError: (499, "invalid_request_error"),
    UploadTooLargeError: (413, "invalid_request_error"),
    MethodNotAllowedError: (405, "invalid_request_error"),
    AudioTooLongError: (413, "invalid_request_error"),
    ImplausibleAudioError: (400, "invalid_request_error"),  # a decodable header that cannot be true
    AudioDecodeError: (415, "invalid_request_error"),  # includes UnsupportedFormatError
    UnsupportedOperationError: (400, "invalid_request_error"),
    BadInputError: (400, "invalid_request_error"),
    NotFoundError: (404, "invalid_request_error"),
    EngineUnavailableError: (400, "invalid_request_error"),
    CapacityError: (429, "rate_limit_exceeded"),
    VoxboxTimeoutError: (504, "timeout_error"),
    ModelLoadError: (503, "server_error"),  # weights the operator configured could not be loaded
    DeviceError: (500, "server_error"),
    VoxboxError: (500, "server_error"),
}


def status_for(exc: BaseException) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in STATUS_MAP:
            return STATUS_MAP[cls]
    return 500, "server_error"


#: Engine parameter names -> the OpenAI API's field names (engines never see HTTP names).
PARAM_NAMES = {"text": "input", "audio": "file", "word_timestamps": "timestamp_granularities",
               "voice_description": "instructions"}


def error_body(exc: BaseException) -> dict[str, Any]:
    """The OpenAI error object for ``exc`` (unexpected exceptions get a generic message)."""
    _, etype = status_for(exc)
    if isinstance(exc, VoxboxError):
        param = PARAM_NAMES.get(exc.param, exc.param) if exc.param else None
        return {"error": {"message": str(exc), "type": etype, "param": param, "code": exc.code}}
    return {
        "error": {"message": "internal server error", "type": "server_error", "param": None, "code": "internal_error"}
    }


def to_response(exc: BaseException) -> JSONResponse:
    status, _ = status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, CapacityError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, MethodNotAllowedError) and exc.allow:
        headers["Allow"] = exc.allow
    if isinstance(exc, NotReadyError):
        log.debug("not ready: %s", exc)  # expected while starting or draining
    elif status in (503, 504):
        log.warning("%d %s: %s", status, type(exc).__name__, exc)  # load or capacity, not a bug
    elif status >= 500:
        if isinstance(exc, VoxboxError):
            log.error("%s: %s", type(exc).__name__, exc)
        else:
            log.error("unhandled error", exc_info=exc)
    return JSONResponse(error_body(exc), status_code=status, headers=headers)


def from_validation_error(exc: RequestValidationError) -> BadInputError:
    """FastAPI's request validation error -> BadInputError naming the first bad field."""
    errors = exc.errors()
    if not errors:
        return BadInputError("invalid request")
    first = errors[0]
    if first.get("type") == "json_invalid":
        return BadInputError("the request body is not valid JSON")
    loc = [p for p in first.get("loc", ()) if isinstance(p, str) and p not in ("body", "query", "path", "header")]
    param = loc[0] if loc else None  # the top-level field (union members add type names after it)
    msg = first.get("msg", "invalid value")
    return BadInputError(f"{param}: {msg}" if param else msg, param=param)


def from_http_exception(exc: StarletteHTTPException) -> VoxboxError:
    if exc.status_code == 404:
        return NotFoundError(str(exc.detail) if exc.detail else "not found")
    if exc.status_code == 405:
        allow = (exc.headers or {}).get("Allow") or (exc.headers or {}).get("allow")
        return MethodNotAllowedError("method not allowed" + (f"; allowed: {allow}" if allow else ""), allow=allow)
    if exc.status_code == 401:
        return AuthenticationError("invalid API key")
    if exc.status_code == 413:
        return UploadTooLargeError(str(exc.detail))
    if 400 <= exc.status_code < 500:
        return BadInputError(str(exc.detail))
    return VoxboxError(str(exc.detail))


def _allowed_methods(request: Request) -> set[str]:
    """Every method the API documents at this path (for ``Allow``): the OpenAPI document is the
    one list of routes, so the header and /openapi.json never disagree."""
    import re

    methods: set[str] = set()
    try:
        paths = request.app.openapi().get("paths", {})
    except Exception:  # noqa: BLE001 - docs off: fall back to GET
        paths = {}
    for template, ops in paths.items():
        pattern = "^" + re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(template)) + "$"
        if re.match(pattern, request.url.path):
            methods |= {m.upper() for m in ops}
    return methods or {"GET"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VoxboxError)
    async def _voxbox(request: Request, exc: VoxboxError) -> JSONResponse:
        return to_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return to_response(from_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 405:  # Starlette lists only the first matching route's methods
            allow = ", ".join(sorted(_allowed_methods(request)))
            return to_response(MethodNotAllowedError(f"method not allowed; allowed: {allow}", allow=allow))
        return to_response(from_http_exception(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return to_response(exc)


# --- the error contract in the OpenAPI document --------------------------------------------------------

class _ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(BaseModel):
    """OpenAI's error body."""

    error: _ErrorDetail


#: Statuses any voxbox API route may answer with, declared on every route (``responses=``) so the
#: OpenAPI document matches what the server does. Request validation is 400, never FastAPI's 422.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorResponse, "description": desc}
    for code, desc in (
        (400, "Bad request: an invalid parameter or unusable input (param names it)"),
        (401, "Missing or wrong API key"),
        (403, "Cross-origin request from an origin that is not allowed"),
        (404, "Unknown model or voice"),
        (405, "Method not allowed (the Allow header lists the allowed ones)"),
        (413, "Upload, body or decoded audio too large"),
        (415, "Not decodable audio"),
        (429, "Queue full for this model; retry after Retry-After seconds"),
        (500, "Internal error"),
        (503, "Not ready, draining, or the model cannot be loaded now"),
        (504, "The request did not finish within the request timeout"),
    )
}
