"""Peers: what users would otherwise run, measured beside voxbox in the same run.

A peer is only measured if its software is installed; otherwise its row says "not installed"
(never a made-up number). ``PEERS`` maps a peer name to ``module:Class`` (imported lazily);
``PEER_OF`` says which voxbox engine each peer is compared with.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["PEERS", "PEER_OF", "applies_to", "peer_class"]

PEERS: dict[str, str] = {
    "faster-whisper-raw": "voxbox.bench.peers.whisper:FasterWhisperRaw",
    "openai-whisper": "voxbox.bench.peers.whisper:OpenAIWhisper",
    "whisper.cpp": "voxbox.bench.peers.whisper:WhisperCpp",
    "piper-cli": "voxbox.bench.peers.tts:PiperCli",
    "piper-upstream": "voxbox.bench.peers.tts:PiperUpstream",
    "hibari-cli": "voxbox.bench.peers.tts:HibariCli",
    "hibari-upstream": "voxbox.bench.peers.tts:HibariUpstream",
    "echo-tts-upstream": "voxbox.bench.peers.upstream_tts:EchoUpstream",
    "echo-tts-upstream-compiled": "voxbox.bench.peers.upstream_tts:EchoUpstreamCompiled",
    "omnivoice-upstream": "voxbox.bench.peers.upstream_tts:OmniVoiceUpstream",
    "voxcpm2-upstream": "voxbox.bench.peers.upstream_tts:VoxCPM2Upstream",
    "voxcpm2-upstream-compiled": "voxbox.bench.peers.upstream_tts:VoxCPM2UpstreamCompiled",
    "transformers-generate": "voxbox.bench.peers.transformers_whisper:TransformersGenerate",
    "transformers-generate-static": "voxbox.bench.peers.transformers_whisper:TransformersGenerateStatic",
    "kokoro-onnx": "voxbox.bench.peers.onnx:KokoroOnnx",
    "onnx-asr": "voxbox.bench.peers.onnx:OnnxAsr",
}

PEER_OF: dict[str, str] = {
    "faster-whisper-raw": "faster-whisper",
    "openai-whisper": "faster-whisper",
    "whisper.cpp": "faster-whisper",
    "piper-cli": "piper",
    "piper-upstream": "piper",
    "hibari-cli": "hibari",
    "hibari-upstream": "hibari",
    "echo-tts-upstream": "echo-tts",
    "echo-tts-upstream-compiled": "echo-tts",
    "omnivoice-upstream": "omnivoice",
    "voxcpm2-upstream": "voxcpm2",
    "voxcpm2-upstream-compiled": "voxcpm2",
    "transformers-generate": "torch-whisper",
    "transformers-generate-static": "torch-whisper",
    "kokoro-onnx": "kokoro",
    "onnx-asr": "parakeet",
}


def applies_to(peer: str, engine: str) -> bool:
    """Whether ``peer`` is compared with voxbox ``engine`` (unknown peers apply everywhere, to be reported)."""
    return PEER_OF.get(peer, engine) == engine


def peer_class(name: str) -> Any:
    """The Target class of a peer; None for a name this bench has no adapter for."""
    path = PEERS.get(name)
    if path is None:
        return None
    mod, _, cls = path.partition(":")
    return getattr(importlib.import_module(mod), cls)
