"""Per-request Server-Timing and metrics, as one pure ASGI middleware (it sees streamed bodies end)."""

from __future__ import annotations

import threading
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from voxbox.server.metrics import Metrics

__all__ = ["ServerTiming", "TimingMiddleware", "timing_of"]


class ServerTiming:
    """Ordered stage -> seconds for one request; rendered as a ``Server-Timing`` header."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self._stages: dict[str, float] = {}
        self._lock = threading.Lock()

    def add(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._stages[stage] = self._stages.get(stage, 0.0) + max(0.0, float(seconds))

    def set(self, stage: str, seconds: float) -> None:
        with self._lock:
            self._stages[stage] = max(0.0, float(seconds))

    def update(self, stages: dict[str, float], prefix: str = "") -> None:
        for k, v in stages.items():
            self.add(prefix + k, v)

    def as_dict(self) -> dict[str, float]:
        with self._lock:
            return dict(self._stages)

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def ms(self) -> dict[str, float]:
        """Stages and ``total`` in milliseconds (rounded), for JSON bodies and SSE events."""
        out = {k: round(v * 1000, 2) for k, v in self.as_dict().items()}
        out["total"] = round(self.elapsed() * 1000, 2)
        return out

    def header(self) -> str:
        parts = [f"{_token(k)};dur={v * 1000:.2f}" for k, v in self.as_dict().items()]
        parts.append(f"total;dur={self.elapsed() * 1000:.2f}")
        return ", ".join(parts)


def _token(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name) or "stage"


def timing_of(scope_or_request: Any) -> ServerTiming:
    scope = getattr(scope_or_request, "scope", scope_or_request)
    state = scope.setdefault("state", {})
    t = state.get("timing")
    if t is None:
        t = state["timing"] = ServerTiming()
    return t


class TimingMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        timing = timing_of(scope)
        status = {"code": 0}
        finished = {"done": False}

        async def _send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"server-timing", timing.header().encode("latin-1")))
                message = {**message, "headers": headers}
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                finished["done"] = True
            await send(message)

        try:
            await self.app(scope, receive, _send)
        finally:
            route = scope.get("route")
            label = getattr(route, "path", None) or "unmatched"
            if finished["done"]:
                code = str(status["code"])
            elif status["code"]:
                code = "499"  # response started, client went away (or cancelled) before the end
            else:
                code = "500"
            self.metrics.requests.labels(label, scope.get("method", ""), code).inc()
            self.metrics.latency.labels(label).observe(timing.elapsed())
