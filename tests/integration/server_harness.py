"""Run a real uvicorn server on 127.0.0.1 (free port) in a background thread, and check bodies
against the official OpenAI schemas in tests/data/openai/audio-api.json (committed; see its README
for the source and licence)."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import httpx
import numpy as np

from voxbox.server.app import create_app
from voxbox.server.settings import ServerSettings

REPO = Path(__file__).resolve().parents[2]

#: OpenAI's published audio schemas, committed so that a plain clone runs the schema tests.
SCHEMA_PATH = REPO / "tests" / "data" / "openai" / "audio-api.json"

_SPEC: dict[str, Any] | None = None


def openai_schema(name: str) -> Any:
    """A jsonschema validator for one component schema of the OpenAI spec."""
    import jsonschema
    from referencing import Registry, Resource
    from referencing.jsonschema import DRAFT202012

    global _SPEC
    if _SPEC is None:
        _SPEC = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    resource = Resource.from_contents(_SPEC, default_specification=DRAFT202012)
    registry = Registry().with_resource("urn:openai", resource)
    schema = {"$ref": f"urn:openai#/components/schemas/{name}"}
    return jsonschema.Draft202012Validator(schema, registry=registry)


def validate(name: str, body: Any) -> None:
    openai_schema(name).validate(body)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RunningServer:
    def __init__(self, settings: ServerSettings) -> None:
        import uvicorn

        self.settings = settings
        self.app = create_app(settings)
        self.state = self.app.state.voxbox
        self.port = settings.port
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
                                timeout_graceful_shutdown=5)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def start(self, ready_timeout: float = 120.0, wait_ready: bool = True) -> "RunningServer":
        self.thread.start()
        deadline = time.monotonic() + ready_timeout
        path = "/health/ready" if wait_ready else "/health"
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + path, timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"server did not become ready: {self.state.startup_error}")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)

    def openai(self, api_key: str = "not-needed", **kw: Any) -> Any:
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=120, **kw)

    def metric(self, name: str, **labels: str) -> float:
        value = self.state.metrics.registry.get_sample_value(name, labels or None)
        return 0.0 if value is None else value


def make_settings(tmp: Path, **kw: Any) -> ServerSettings:
    base: dict[str, Any] = {"port": free_port(), "data_dir": tmp, "api_key": None}
    base.update(kw)
    # Ignore any VOXBOX_* in the developer's environment or .env: tests pin their settings.
    return ServerSettings(_env_file=None, **base)


def decode_bytes(data: bytes, fmt: str | None = None) -> tuple[np.ndarray, int]:
    """Decode with PyAV directly (independent of voxbox.audio): mono float samples and rate."""
    import av

    if fmt == "pcm":
        return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0, 24000
    container = av.open(io.BytesIO(data), format={"aac": "aac"}.get(fmt or "", None))
    stream = container.streams.audio[0]
    parts = []
    rate = None
    for frame in container.decode(stream):
        rate = frame.sample_rate
        a = frame.to_ndarray()
        if a.ndim == 2 and a.shape[0] > 1 and not frame.format.is_planar:
            a = a.reshape(-1, len(frame.layout.channels)).T
        parts.append(a.reshape(len(frame.layout.channels), -1)[0].astype(np.float32))
    container.close()
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), int(rate or 0)


def sse_events(lines: Iterator[str]) -> list[dict[str, Any]]:
    events = []
    for line in lines:
        if line.startswith("data:"):
            events.append(json.loads(line[5:].strip()))
    return events
