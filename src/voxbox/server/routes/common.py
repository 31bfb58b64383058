"""Helpers shared by the routes: state access, auth, bounded body reading, form fields, streams."""

from __future__ import annotations

import hmac
import logging
from typing import Any, Callable

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from voxbox.errors import BadInputError
from voxbox.server.errors import AuthenticationError, UploadTooLargeError
from voxbox.server.state import ServerState

__all__ = [
    "ManagedStream",
    "form_bool",
    "form_float",
    "form_str",
    "read_form",
    "require_api_key",
    "state_of",
]

log = logging.getLogger("voxbox.server")

#: After the limit is passed, keep reading (and discarding) up to this much more so the client gets
#: a clean 413 rather than a reset connection; beyond it the connection is dropped.
_DRAIN_MAX = 256 * 1024 * 1024


def state_of(request: Request) -> ServerState:
    return request.app.state.voxbox


async def require_api_key(request: Request) -> None:
    """Dependency on every route but health: ``Authorization: Bearer <key>`` when a key is set."""
    expected = state_of(request).settings.api_key_value()
    if expected is None:
        return
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), expected.encode()):
        raise AuthenticationError("invalid or missing API key (send Authorization: Bearer <key>)")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, or UploadTooLargeError (413) when it is larger than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    declared_n = int(declared) if declared and declared.isdigit() else None
    if declared_n is not None and declared_n > limit + _DRAIN_MAX:
        raise UploadTooLargeError(f"request body is {declared_n} bytes; the limit is {limit} bytes", param="file")
    buf = bytearray()
    total = 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            buf = bytearray()  # drop what we have; keep draining so the 413 reaches the client
            if total > limit + _DRAIN_MAX:
                break
            continue
        buf += chunk
    if total > limit:
        raise UploadTooLargeError(
            f"request body is {declared_n or total} bytes; the limit is {limit} bytes", param="file"
        )
    return bytes(buf)


async def read_form(request: Request, limit: int) -> FormData:
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise BadInputError("expected a multipart/form-data body", param="file")
    body = await read_body(request, limit)
    request._body = body  # Request.form() parses the cached body
    try:
        return await request.form(max_files=4, max_fields=64)
    except Exception as exc:  # malformed multipart
        raise BadInputError(f"could not parse the multipart body: {exc}") from exc


def form_str(form: FormData, name: str, *, required: bool = False, default: str | None = None) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise BadInputError(f"missing required field {name!r}", param=name)
        return default
    if not isinstance(value, str):
        raise BadInputError(f"field {name!r} must be text, not a file", param=name)
    return value


def form_float(form: FormData, name: str, default: float | None = None) -> float | None:
    value = form_str(form, name)
    if value is None:
        return default
    try:
        out = float(value)
    except ValueError:
        raise BadInputError(f"field {name!r} must be a number, got {value!r}", param=name) from None
    if out != out or out in (float("inf"), float("-inf")):
        raise BadInputError(f"field {name!r} must be a finite number", param=name)
    return out


def form_bool(form: FormData, name: str, default: bool = False) -> bool:
    value = form_str(form, name)
    if value is None:
        return default
    v = value.strip().lower()
    if v in ("true", "1", "yes", "on"):
        return True
    if v in ("false", "0", "no", "off"):
        return False
    raise BadInputError(f"field {name!r} must be true or false, got {value!r}", param=name)


async def form_file(form: FormData, name: str = "file") -> tuple[bytes, str | None]:
    value = form.get(name)
    if value is None:
        raise BadInputError(f"missing required file field {name!r}", param=name)
    if not isinstance(value, UploadFile):
        raise BadInputError(f"field {name!r} must be a file upload", param=name)
    data = await value.read()
    return data, value.filename


class ManagedStream(StreamingResponse):
    """A StreamingResponse that always runs ``on_close`` — after the last byte, on client disconnect,
    on cancellation (shutdown), or if the body was never iterated — and closes its generator."""

    def __init__(self, content: Any, *, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            try:
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
            except BaseException:  # cancelled again during cleanup: on_close still runs
                pass
            finally:
                self._on_close()
