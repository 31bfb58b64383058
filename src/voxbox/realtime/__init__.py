"""Live transcription over the OpenAI Realtime API (WebSocket, transcription sessions).

* ``protocol`` — client event parsing (GA ``session.update`` and beta
  ``transcription_session.update``), audio formats (pcm16 24 kHz, G.711 μ-law/A-law), server
  event shapes, ``error`` events.
* ``session`` — one session's state machine: VAD turns (Silero, ``voxbox.audio.vad``), partial
  re-decodes with deltas, finals, manual commits; every decode goes through the runtime.
* ``route`` — the ``/v1/realtime`` WebSocket route (an APIRouter the server includes).
"""

from __future__ import annotations

from typing import Any

__all__ = ["router"]


def __getattr__(name: str) -> Any:
    if name == "router":
        from voxbox.realtime.route import router

        return router
    raise AttributeError(name)
