"""Helpers shared by the routes: state access, form fields, disconnect watching, SSE, streams."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Callable

from fastapi import Request
from starlette.datastructures import FormData, UploadFile
from starlette.exceptions import HTTPException
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from voxbox.errors import BadInputError, RequestCancelledError
from voxbox.server.state import ServerState

__all__ = [
    "ManagedStream",
    "cancel_on_disconnect",
    "form_bool",
    "form_file",
    "form_float",
    "form_str",
    "read_form",
    "sse",
    "state_of",
]

log = logging.getLogger("voxbox.server")

#: Multipart limits: files and fields per request, bytes per non-file field.
MAX_FILES, MAX_FIELDS, MAX_FIELD_BYTES = 4, 64, 64 * 1024


def state_of(request: Request) -> ServerState:
    return request.app.state.voxbox  # type: ignore[no-any-return]


def sse(event: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``event`` as JSON (the OpenAI streaming shape)."""
    return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"


async def read_form(request: Request) -> FormData:
    """The multipart form (the guard middleware has bounded the body's size already)."""
    ctype = request.headers.get("content-type", "")
    if not ctype.lower().startswith("multipart/form-data"):
        raise BadInputError("expected a multipart/form-data body", param="file")
    try:
        return await request.form(max_files=MAX_FILES, max_fields=MAX_FIELDS, max_part_size=MAX_FIELD_BYTES)
    except HTTPException as exc:
        if exc.status_code == 413:
            raise
        raise BadInputError(f"could not parse the multipart body: {exc.detail}") from None
    except Exception as exc:  # noqa: BLE001 - malformed multipart: the parser raises many types
        raise BadInputError(f"could not parse the multipart body: {' '.join(str(exc).split())[:200]}") from None


def form_str(form: FormData, name: str, *, required: bool = False, default: str | None = None,
             max_chars: int | None = None) -> str | None:
    value = form.get(name)
    if value is None or value == "":
        if required:
            raise BadInputError(f"missing required field {name!r}", param=name)
        return default
    if not isinstance(value, str):
        raise BadInputError(f"field {name!r} must be text, not a file", param=name)
    if max_chars is not None and len(value) > max_chars:
        raise BadInputError(f"field {name!r} is {len(value)} characters; the limit is {max_chars}", param=name)
    return value


def form_float(form: FormData, name: str, default: float | None = None) -> float | None:
    value = form_str(form, name)
    if value is None:
        return default
    try:
        out = float(value)
    except ValueError:
        raise BadInputError(f"field {name!r} must be a number, got {value[:40]!r}", param=name) from None
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
    raise BadInputError(f"field {name!r} must be true or false, got {value[:40]!r}", param=name)


async def form_file(form: FormData, name: str = "file") -> tuple[bytes, str | None]:
    value = form.get(name)
    if value is None:
        raise BadInputError(f"missing required file field {name!r}", param=name)
    if not isinstance(value, UploadFile):
        raise BadInputError(f"field {name!r} must be a file upload", param=name)
    data = await value.read()
    return data, value.filename


@asynccontextmanager
async def cancel_on_disconnect(request: Request) -> AsyncIterator[None]:
    """Cancel the route's task when the client disconnects (the body must be fully read first).

    Waiting in an admission queue, a blocking engine call, a model load: all end at once for a
    client that left; the runtime sets the work's cancel token so the engine stops too. The
    cancellation surfaces as :class:`RequestCancelledError` (logged as 499, never an ERROR).
    """
    task = asyncio.current_task()
    assert task is not None
    gone = asyncio.Event()

    async def watch() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                gone.set()
                task.cancel()
                return

    watcher = asyncio.get_running_loop().create_task(watch())
    try:
        yield
    except asyncio.CancelledError:
        if gone.is_set():
            if sys.version_info >= (3, 11):  # Task.uncancel is 3.11+; 3.10 keeps no cancel count
                task.uncancel()
            raise RequestCancelledError("the client disconnected") from None
        raise
    finally:
        watcher.cancel()


class ManagedStream(StreamingResponse):
    """A StreamingResponse that always runs ``on_close`` — after the last byte, on client disconnect,
    on cancellation (shutdown), or if the body was never iterated — and closes its generator."""

    def __init__(self, content: Any, *, on_close: Callable[[], None], **kwargs: Any) -> None:
        super().__init__(content, **kwargs)
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        except OSError:
            pass  # the client went away: on_close cleans up
        finally:
            try:
                aclose = getattr(self.body_iterator, "aclose", None)
                if aclose is not None:
                    await aclose()
            except BaseException:  # noqa: BLE001 - cancelled again during cleanup: on_close still runs
                pass
            finally:
                self._on_close()
