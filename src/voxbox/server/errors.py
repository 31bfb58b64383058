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
    UnsupportedOperationError,
    VoxboxError,
    VoxboxTimeoutError,
)

__all__ = [
    "AuthenticationError",
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


class NotReadyError(VoxboxError):
    """The server is starting or shutting down."""

    code = "not_ready"


class UploadTooLargeError(BadInputError):
    """The request body is larger than the configured upload limit."""

    code = "upload_too_large"


class MethodNotAllowedError(BadInputError):
    code = "method_not_allowed"


#: class -> (HTTP status, OpenAI error type). The most specific class in an exception's MRO wins.
STATUS_MAP: dict[type[BaseException], tuple[int, str]] = {
    AuthenticationError: (401, "invalid_request_error"),
    NotReadyError: (503, "server_error"),
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
    ModelLoadError: (500, "server_error"),
    DeviceError: (500, "server_error"),
    VoxboxError: (500, "server_error"),
}


def status_for(exc: BaseException) -> tuple[int, str]:
    for cls in type(exc).__mro__:
        if cls in STATUS_MAP:
            return STATUS_MAP[cls]
    return 500, "server_error"


def error_body(exc: BaseException) -> dict[str, Any]:
    """The OpenAI error object for ``exc`` (unexpected exceptions get a generic message)."""
    _, etype = status_for(exc)
    if isinstance(exc, VoxboxError):
        return {"error": {"message": str(exc), "type": etype, "param": exc.param, "code": exc.code}}
    return {"error": {"message": "internal server error", "type": "server_error", "param": None, "code": "internal_error"}}


def to_response(exc: BaseException) -> JSONResponse:
    status, _ = status_for(exc)
    headers: dict[str, str] = {}
    if isinstance(exc, CapacityError):
        headers["Retry-After"] = str(max(1, math.ceil(exc.retry_after)))
    if isinstance(exc, AuthenticationError):
        headers["WWW-Authenticate"] = "Bearer"
    if isinstance(exc, NotReadyError):
        log.debug("not ready: %s", exc)  # expected while starting or draining
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
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path", "header")]
    param = loc[0] if loc else None  # the top-level field (union members add type names after it)
    msg = first.get("msg", "invalid value")
    return BadInputError(f"{param}: {msg}" if param else msg, param=param)


def from_http_exception(exc: StarletteHTTPException) -> VoxboxError:
    if exc.status_code == 404:
        return NotFoundError(str(exc.detail) if exc.detail else "not found")
    if exc.status_code == 405:
        return MethodNotAllowedError("method not allowed")
    if exc.status_code == 401:
        return AuthenticationError("invalid API key")
    if exc.status_code == 413:
        return UploadTooLargeError(str(exc.detail))
    if 400 <= exc.status_code < 500:
        return BadInputError(str(exc.detail))
    return VoxboxError(str(exc.detail))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(VoxboxError)
    async def _voxbox(request: Request, exc: VoxboxError) -> JSONResponse:
        return to_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return to_response(from_validation_error(exc))

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return to_response(from_http_exception(exc))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        return to_response(exc)
