"""``GET /v1/realtime?intent=transcription`` upgraded to a WebSocket (OpenAI Realtime, transcription).

The guard middleware has already checked Host, Origin and the API key (``Authorization: Bearer``
or, for browsers, the ``openai-insecure-api-key.<key>`` subprotocol). The route accepts the
socket (selecting the ``realtime`` subprotocol when offered, as browsers require one to be
echoed), runs one :class:`~voxbox.realtime.session.TranscriptionSession` on the server's runtime,
and pumps JSON events both ways. A bad event gets an ``error`` event; the session stays open.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect

from voxbox.errors import VoxboxError
from voxbox.realtime.protocol import ProtocolError, error_event
from voxbox.realtime.session import LiveSettings, TranscriptionSession

__all__ = ["router"]

log = logging.getLogger("voxbox.realtime")

router = APIRouter()

#: Close codes (RFC 6455): 1008 policy violation, 1011 internal error, 1013 try again later.
_POLICY, _TRY_LATER = 1008, 1013


class _Sessions:
    """Open sessions of one app (bounded by ``realtime.max_sessions``)."""

    def __init__(self) -> None:
        self.open = 0


def _sessions(ws: WebSocket) -> _Sessions:
    hub = getattr(ws.app.state, "voxbox_realtime", None)
    if hub is None:
        hub = ws.app.state.voxbox_realtime = _Sessions()
    return hub  # type: ignore[no-any-return]


async def _refuse(ws: WebSocket, subprotocol: str | None, exc: VoxboxError, code: int) -> None:
    await ws.accept(subprotocol=subprotocol)
    await ws.send_text(json.dumps(error_event(exc)))
    await ws.close(code=code, reason=str(exc)[:120])


@router.websocket("/v1/realtime")
async def realtime(ws: WebSocket) -> None:
    """OpenAI Realtime transcription sessions (``?intent=transcription``)."""
    state = ws.app.state.voxbox
    settings = state.settings
    offered = [p.strip() for p in ws.headers.get("sec-websocket-protocol", "").split(",") if p.strip()]
    subprotocol = "realtime" if "realtime" in offered else None
    hub = _sessions(ws)
    if not settings.realtime.enabled:
        await _refuse(ws, subprotocol, ProtocolError("realtime sessions are disabled on this server",
                                                     code="feature_disabled"), _POLICY)
        return
    intent = ws.query_params.get("intent")
    if intent not in (None, "transcription"):
        await _refuse(ws, subprotocol, ProtocolError(
            f"intent {intent[:40]!r} is not served: voxbox offers transcription sessions (?intent=transcription)",
            code="invalid_intent", param="intent"), _POLICY)
        return
    if hub.open >= settings.realtime.max_sessions:
        await _refuse(ws, subprotocol, ProtocolError("too many realtime sessions are open; retry later",
                                                     code="session_limit", kind="server_error"), _TRY_LATER)
        return
    hub.open += 1
    try:
        await _serve(ws, subprotocol, state)
    finally:
        hub.open -= 1


async def _serve(ws: WebSocket, subprotocol: str | None, state: Any) -> None:
    settings = state.settings
    await ws.accept(subprotocol=subprotocol)
    out: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    async def send(event: dict[str, Any]) -> None:
        out.put_nowait(event)

    async def writer() -> None:
        while True:
            event = await out.get()
            if event is None:
                return
            await ws.send_text(json.dumps(event, separators=(",", ":")))

    rs = settings.realtime
    live = LiveSettings(partial_interval_ms=rs.partial_interval_ms, max_turn_seconds=rs.max_turn_seconds,
                        beam_size=rs.beam_size)
    session = TranscriptionSession(state.runtime, send, model=settings.models.asr, settings=live)
    writing = asyncio.create_task(writer())
    try:
        await session.start()
        await asyncio.wait_for(_read(ws, session), timeout=rs.max_session_seconds)
    except asyncio.TimeoutError:
        await send(error_event(ProtocolError("the session reached its maximum duration",
                                             code="session_expired")))
    except (WebSocketDisconnect, RuntimeError):
        pass  # the client went away
    except VoxboxError as exc:  # e.g. the default model is not in the catalog
        await send(error_event(exc))
    finally:
        await session.close()
        out.put_nowait(None)
        with contextlib.suppress(BaseException):
            await asyncio.wait_for(writing, timeout=5)
        with contextlib.suppress(BaseException):
            await ws.close()


async def _read(ws: WebSocket, session: TranscriptionSession) -> None:
    while True:
        message = await ws.receive()
        if message["type"] == "websocket.disconnect":
            return
        raw = message.get("text")
        if raw is None:
            raw = (message.get("bytes") or b"").decode("utf-8", "replace")
        try:
            event = json.loads(raw)
        except ValueError:
            await session.report(ProtocolError("the message is not valid JSON", code="invalid_json"), None)
            continue
        try:
            await session.handle(event)
        except VoxboxError as exc:
            await session.report(exc, event)
        except Exception as exc:
            log.exception("realtime: event failed")
            await session.report(exc, event)
