"""The server's front door: Host allowlist, CORS, API key and body limits, before any body is read.

One pure ASGI middleware, run first for every HTTP request:

1. ``Host`` must be in the allowlist (default: the loopback names when bound to loopback), so a
   web page cannot reach the server through DNS rebinding → 400.
2. A request that carries ``Origin`` (a browser) from an origin not in ``cors.allow_origins`` is
   refused → 403, before it runs — cross-origin "simple" requests (form posts) included. Allowed
   origins get CORS headers and preflight answers. Same-origin requests (the web page) pass.
3. With an API key set, every path but ``/health*`` and the web page's static files needs
   ``Authorization: Bearer <key>`` → 401, checked before the body is read. WebSockets may carry
   the key as a subprotocol ``openai-insecure-api-key.<key>`` instead (browsers cannot set
   headers on a WebSocket; OpenAI's browser clients do this).
4. Bodies are bounded for every content type: ``Content-Length`` over the limit → 413 at once;
   a body that streams past it → 413 as soon as it does (multipart: ``max_upload_bytes``;
   anything else: ``max_json_bytes``).

Errors are the OpenAI-shaped JSON bodies of :mod:`voxbox.server.errors`.
"""

from __future__ import annotations

import hmac
from typing import Iterable

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxbox.errors import BadInputError, VoxboxError
from voxbox.server.errors import AuthenticationError, ForbiddenError, UploadTooLargeError, to_response

__all__ = ["GuardMiddleware"]

#: Paths that never need the API key: liveness/readiness, and the web page's static files (the
#: page asks for the key and sends it with every API call).
PUBLIC_PREFIXES = ("/health", "/ui/")
PUBLIC_PATHS = frozenset({"/", "/favicon.ico"})

#: WebSocket subprotocol that carries the API key from browsers (OpenAI's convention).
_WS_KEY_PREFIX = "openai-insecure-api-key."

_CORS_METHODS = "GET, POST, DELETE, OPTIONS"
_CORS_HEADERS = "Authorization, Content-Type"


class GuardMiddleware:
    def __init__(self, app: ASGIApp, *, allowed_hosts: Iterable[str] | None, allow_origins: Iterable[str],
                 api_key: str | None, max_upload_bytes: int, max_json_bytes: int) -> None:
        self.app = app
        self.allowed_hosts = None if allowed_hosts is None else {h.lower() for h in allowed_hosts}
        self.allow_origins = {o.rstrip("/").lower() for o in allow_origins}
        self.api_key = api_key.encode() if api_key else None
        self.max_upload = max_upload_bytes
        self.max_json = max_json_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        cors_ok = False
        try:
            self._check_host(headers.get("host", ""))
            if origin is not None:
                cors_ok = self._check_origin(origin, headers.get("host", ""), scope)
            if scope["type"] == "http" and scope["method"] == "OPTIONS" and origin is not None \
                    and "access-control-request-method" in headers:
                await self._preflight(origin, send)
                return
            if not self._public(scope["path"]):
                self._check_key(headers, websocket=scope["type"] == "websocket")
            limit = self.max_upload if headers.get("content-type", "").lower().startswith("multipart/") \
                else self.max_json
            declared = headers.get("content-length")
            if declared is not None and declared.isdigit() and int(declared) > limit:
                raise UploadTooLargeError(f"request body is {declared} bytes; the limit is {limit} bytes")
        except VoxboxError as exc:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008, "reason": str(exc)[:120]})
                return
            await self._send_error(exc, send, origin if cors_ok else None)
            return
        if scope["type"] == "websocket":
            await self.app(scope, receive, send)
            return
        await self._forward(scope, receive, send, limit, origin if cors_ok else None)

    # -- checks ---------------------------------------------------------------------------------------
    def _public(self, path: str) -> bool:
        return path in PUBLIC_PATHS or path.startswith(PUBLIC_PREFIXES)

    def _check_host(self, host: str) -> None:
        if self.allowed_hosts is None:
            return
        host = host.strip().lower()
        name = host
        if host.startswith("["):  # [::1]:8000
            name = host[: host.find("]") + 1] if "]" in host else host
        elif host.count(":") == 1:
            name = host.rsplit(":", 1)[0]
        if host not in self.allowed_hosts and name not in self.allowed_hosts:
            raise BadInputError("this server does not answer to that Host header "
                                "(set VOXBOX_ALLOWED_HOSTS to serve other names)", param="host")

    def _check_origin(self, origin: str, host: str, scope: Scope) -> bool:
        """True if cross-origin and allowed (CORS headers to add); False if same-origin. Raises
        ForbiddenError for other origins."""
        o = origin.rstrip("/").lower()
        scheme = "https" if scope.get("scheme") in ("https", "wss") else "http"
        if o in (f"{scheme}://{host.lower()}", f"{'wss' if scheme == 'https' else 'ws'}://{host.lower()}"):
            return False
        if o in self.allow_origins or "*" in self.allow_origins:
            return True
        raise ForbiddenError("cross-origin requests from this origin are not allowed "
                             "(set VOXBOX_CORS__ALLOW_ORIGINS to allow it)")

    def _check_key(self, headers: Headers, *, websocket: bool = False) -> None:
        if self.api_key is None:
            return
        scheme, _, token = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), self.api_key):
            return
        if websocket:
            for proto in headers.get("sec-websocket-protocol", "").split(","):
                name, _, key = proto.strip().partition(_WS_KEY_PREFIX)
                if not name and key and hmac.compare_digest(key.encode(), self.api_key):
                    return
        raise AuthenticationError("invalid or missing API key (send Authorization: Bearer <key>)")

    # -- responses ------------------------------------------------------------------------------------
    def _cors_headers(self, origin: str | None) -> list[tuple[bytes, bytes]]:
        if origin is None:
            return []
        return [(b"access-control-allow-origin", origin.encode("latin-1")), (b"vary", b"Origin"),
                (b"access-control-expose-headers", b"Server-Timing, Retry-After")]

    async def _preflight(self, origin: str, send: Send) -> None:
        headers = self._cors_headers(origin) + [
            (b"access-control-allow-methods", _CORS_METHODS.encode()),
            (b"access-control-allow-headers", _CORS_HEADERS.encode()),
            (b"access-control-max-age", b"600"), (b"content-length", b"0")]
        await send({"type": "http.response.start", "status": 204, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    async def _send_error(self, exc: VoxboxError, send: Send, origin: str | None) -> None:
        response = to_response(exc)
        response.headers["connection"] = "close"  # we did not read the body: do not reuse the connection
        extra = self._cors_headers(origin)
        raw = list(response.raw_headers) + extra
        await send({"type": "http.response.start", "status": response.status_code, "headers": raw})
        await send({"type": "http.response.body", "body": response.body})

    async def _forward(self, scope: Scope, receive: Receive, send: Send, limit: int, origin: str | None) -> None:
        seen = 0
        started = False

        async def _receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    # HTTPException passes FastAPI's body parsing untouched and maps to 413.
                    raise HTTPException(413, f"request body is larger than {limit} bytes")
            return message

        async def _send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if origin is not None:
                    message = {**message, "headers": list(message.get("headers", [])) + self._cors_headers(origin)}
            await send(message)

        try:
            await self.app(scope, _receive, _send)
        except HTTPException as exc:
            if exc.status_code != 413 or started:
                raise
            await self._send_error(UploadTooLargeError(f"request body is larger than {limit} bytes"), send, origin)
