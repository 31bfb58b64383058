"""hibari: a 7.9 MB Kokoro-distilled English TTS on ONNX Runtime (24 kHz, CPU).

The ``heart`` voice ships inside the ``hibari-tts`` wheel; other hibari voices are used only if
they are already in hibari's cache (voxbox never downloads). Stages: ``phonemize`` (hibari's own
G2P: lexicon + tagger + OOV net) and ``synthesize`` (ONNX model + hibari's DSP vocoder).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from voxbox.engines.base import (
    EncodedVoice,
    SpeechStream,
    sentence_errors,
    split_sentences,
    validate_speed,
    validate_text,
)
from voxbox.errors import (
    BadInputError,
    DeviceError,
    EngineUnavailableError,
    ModelLoadError,
    UnsupportedOperationError,
    VoiceNotFoundError,
)
from voxbox.types import Audio, AudioChunk, ComponentSpec, EngineInfo, StageTimings

__all__ = ["HibariEngine", "OPENAI_VOICE_MAP", "load", "models", "voices"]

SAMPLE_RATE = 24000
DEFAULT_VOICE = "heart"

#: OpenAI voice names -> hibari voices that are always available (the bundled one).
OPENAI_VOICE_MAP: dict[str, str] = {
    name: DEFAULT_VOICE
    for name in (
        "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar",
    )
}


def _import_hibari() -> Any:
    try:
        import hibari
        import hibari.voices
    except ImportError as exc:
        raise EngineUnavailableError(f"hibari is not installed ({exc})", install_hint="pip install hibari-tts") from exc
    return hibari


def local_voices() -> list[str]:
    """hibari voices usable without a download: the bundled one plus any already cached."""
    hib = _import_hibari()
    out = []
    for name, v in hib.voices.VOICES.items():
        if v.get("bundled") or os.path.exists(os.path.join(hib.voices.cache_dir(), v["file"])):
            out.append(name)
    return out


def models() -> list[str]:
    return ["hibari"]


def voices() -> list[str]:
    """Voices usable now without loading the model (bundled + cached)."""
    return local_voices()


class HibariEngine:
    """TTS engine over ``hibari.Hibari`` (one ONNX session per loaded voice, loaded lazily)."""

    def __init__(self, *, threads: int = 1, voice: str | None = None, model_path: str | None = None) -> None:
        self._hib = _import_hibari()
        self._threads = max(1, int(threads))
        self._model_path = model_path
        self._lock = threading.Lock()
        self._voices: dict[str, Any] = {}
        self._g2p: dict[bool, Any] = {}
        voices = tuple(local_voices())
        self.info = EngineInfo(
            name="hibari",
            task="tts",
            model=model_path or "hibari",
            device="cpu",
            dtype="int8",
            sample_rate=SAMPLE_RATE,
            voices=voices,
            default_voice=DEFAULT_VOICE,
            languages=("en",),
            max_concurrency=1,
            extra={"openai_voices": dict(OPENAI_VOICE_MAP), "threads": self._threads},
        )
        default = self.resolve_voice(voice)
        self.info = dataclasses.replace(self.info, default_voice=default)
        self._get(default)  # load (and verify) the default voice now, so errors surface at load time

    # -- voices ---------------------------------------------------------------------------------
    def resolve_voice(self, voice: str | EncodedVoice | None) -> str:
        if voice is None:
            return self.info.default_voice or DEFAULT_VOICE
        if isinstance(voice, EncodedVoice):
            raise UnsupportedOperationError("hibari does not support voice cloning", param="voice")
        if not isinstance(voice, str):
            raise BadInputError("voice must be a string", param="voice")
        name = voice.strip().lower()
        if name in self.info.voices:
            return name
        if name in OPENAI_VOICE_MAP:
            return OPENAI_VOICE_MAP[name]
        known = ", ".join(list(self.info.voices) + sorted(OPENAI_VOICE_MAP))
        if name in self._hib.voices.VOICES:
            raise VoiceNotFoundError(
                f"hibari voice {voice!r} is not downloaded (voxbox does not download voices; run `hibari --voice "
                f"{name} 'hi'` once to fetch it); available: {known}",
                param="voice",
            )
        raise VoiceNotFoundError(f"unknown hibari voice {voice!r}; available: {known}", param="voice")

    def _get(self, name: str) -> Any:
        with self._lock:
            tts = self._voices.get(name)
            if tts is not None:
                return tts
            from voxbox.models.bundled import hibari_voice_path

            path = self._model_path or str(hibari_voice_path(name))
            british = bool(self._hib.voices.VOICES[name]["british"])
            try:
                tts = self._hib.Hibari(voice=name, model=path, threads=self._threads, g2p=self._g2p.get(british))
                if self._model_path is not None:  # a local file: check it runs as a hibari model
                    tts.from_ids(tts.ids(tts.phonemize("Check.")[0]), 1.0, np.random.default_rng(0))
                if british not in self._g2p:
                    self._g2p[british] = tts.g2p
            except Exception as exc:  # onnxruntime / file errors, or a model with other inputs
                reason = " ".join(str(exc).split())[:300] or type(exc).__name__
                raise ModelLoadError(f"could not load hibari voice {name!r} from {path}: {reason}") from exc
            self._voices[name] = tts
            return tts

    # -- synthesis -------------------------------------------------------------------------------
    def stream(
        self,
        text: str,
        voice: str | EncodedVoice | None = None,
        speed: float | None = None,
        **options: Any,
    ) -> SpeechStream:
        text = validate_text(text)
        speed_v = validate_speed(speed)
        name = self.resolve_voice(voice)
        seed = options.pop("seed", None)
        if seed is not None and not isinstance(seed, int):
            raise BadInputError("seed must be an integer", param="seed")
        options.pop("response_format", None)
        if options:
            raise BadInputError(f"unknown hibari option(s): {', '.join(sorted(options))}", param=sorted(options)[0])
        tts = self._get(name)
        sentences = split_sentences(text)

        def gen(timings: StageTimings) -> Iterator[AudioChunk]:
            rng = np.random.default_rng(seed)
            index = 0
            for sent in sentences:
                with timings.measure("phonemize"), sentence_errors("hibari", sent, "phonemize"):
                    phonemes = tts.phonemize(sent)
                    ids = [tts.ids(ps) for ps in phonemes or ()]
                if not ids:
                    continue
                with timings.measure("synthesize"), sentence_errors("hibari", sent, "synthesize"):
                    parts = [tts.from_ids(i, speed_v, rng) for i in ids]
                    samples = np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros(0, np.float32)
                if samples.size == 0:
                    continue
                yield AudioChunk(samples, SAMPLE_RATE, index=index, text=sent)
                index += 1

        return SpeechStream(gen, SAMPLE_RATE)

    def synthesize(self, text: str, voice: str | EncodedVoice | None = None, speed: float | None = None,
                   **options: Any) -> Audio:
        return self.stream(text, voice=voice, speed=speed, **options).collect()

    def encode_voice(self, audio: Audio, transcript: str | None = None) -> EncodedVoice:
        raise UnsupportedOperationError("hibari does not support voice cloning", param="voice")

    def components(self) -> list[ComponentSpec]:
        size = 0
        try:
            from voxbox.models.bundled import BUNDLES, package_dir

            size = (package_dir(BUNDLES["hibari"]) / "hibari.onnx").stat().st_size
        except Exception:
            pass
        # int8 weights: ~1 byte per parameter.
        return [ComponentSpec(name="acoustic", params=size, devices=("cpu",), dtypes=("int8",),
                              backend="onnxruntime", kind="conv", overhead_bytes=64 << 20)]

    def close(self) -> None:
        with self._lock:
            self._voices.clear()
            self._g2p.clear()


def load(model: str | None = None, *, device: str = "auto", dtype: str | None = None, **options: Any) -> HibariEngine:
    """Load hibari. ``model``: None/"hibari" (bundled) or a path to a compatible ONNX file."""
    if device not in ("auto", "cpu"):
        raise DeviceError(f"hibari runs on CPU only (asked for device {device!r})")
    if dtype not in (None, "int8", "auto"):
        raise BadInputError(f"hibari ships int8 weights only (asked for dtype {dtype!r})", param="dtype")
    model_path = None
    if model not in (None, "", "hibari", "tts-1"):
        p = Path(model).expanduser()
        if not p.is_file():
            from voxbox.errors import ModelNotFoundError

            raise ModelNotFoundError(f"hibari model {model!r} not found (expected 'hibari' or a path to an .onnx file)",
                                     param="model")
        model_path = str(p)
    threads = options.pop("threads", None) or 1
    voice = options.pop("voice", None)
    options.pop("cache_dir", None)
    if options:
        raise BadInputError(f"unknown hibari load option(s): {', '.join(sorted(options))}", param=sorted(options)[0])
    engine = HibariEngine(threads=threads, voice=voice, model_path=model_path)
    return engine
