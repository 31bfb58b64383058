"""Peers: what users would otherwise run, measured beside voxbox in the same run.

A peer is only measured if its software is installed; otherwise its row says "not installed"
(never a made-up number). ``PEERS`` maps a peer name to ``module:Class`` (imported lazily).
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PEERS", "peer_class"]

PEERS: dict[str, str] = {
    "faster-whisper-raw": "voxbox.bench.peers.whisper:FasterWhisperRaw",
    "openai-whisper": "voxbox.bench.peers.whisper:OpenAIWhisper",
    "whisper.cpp": "voxbox.bench.peers.whisper:WhisperCpp",
    "piper-cli": "voxbox.bench.peers.tts:PiperCli",
    "piper-upstream": "voxbox.bench.peers.tts:PiperUpstream",
    "hibari-cli": "voxbox.bench.peers.tts:HibariCli",
    "hibari-upstream": "voxbox.bench.peers.tts:HibariUpstream",
}


def peer_class(name: str) -> Any:
    """The Target class of a peer; None for a name this bench has no adapter for."""
    path = PEERS.get(name)
    if path is None:
        return None
    mod, _, cls = path.partition(":")
    return getattr(importlib.import_module(mod), cls)
