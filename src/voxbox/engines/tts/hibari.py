"""hibari: a 7.9 MB Kokoro-distilled English TTS on ONNX Runtime (24 kHz, CPU).

The ``heart`` voice ships inside the ``hibari-tts`` wheel; other hibari voices are used only if
they are already in hibari's cache (voxbox never downloads). Stages: ``phonemize`` (hibari's own
G2P: lexicon + tagger + OOV net) and ``synthesize`` (ONNX model + hibari's DSP vocoder).
"""

from __future__ import annotations

import dataclasses
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from voxbox.audio.tempo import split_speed, time_stretch
from voxbox.engines.base import (
    EncodedVoice,
    SpeechStream,
    VoiceArg,
    sentence_errors,
    validate_speed,
    validate_text,
)
from voxbox.engines.spec import Capabilities, EngineSpec, LoadRequest, Options, build_options
from voxbox.errors import (
    BadInputError,
    DeviceError,
    EngineUnavailableError,
    ModelLoadError,
    UnsupportedOperationError,
    VoiceNotFoundError,
)
from voxbox.text import speech_sentences
from voxbox.types import Audio, AudioChunk, CancelToken, ComponentSpec, EngineInfo, StageTimings

__all__ = ["HibariEngine", "HibariLoadOptions", "HibariOptions", "OPENAI_VOICE_MAP", "SPEC", "load", "models", "voices"]

SAMPLE_RATE = 24000
DEFAULT_VOICE = "heart"
#: Speeds hibari's own duration control meets: slowing down is exact (0.25 -> 0.25x, 0.5 -> 0.50x),
#: speeding up falls short (1.25 -> 1.16x, 2 -> 1.82x, 4 -> 2.29x), so speeds above 1 are
#: time-stretched (voxbox.audio.tempo) from the voice's normal pace.
NATIVE_SPEED_RANGE = (0.25, 1.0)

VOICE_NOTE = ("hibari: the hibari-tts wheel ships one voice (heart); the OpenAI voice names all play it and "
              "sound the same. Other hibari voices (emma, fenrir, fable, kore) work once they are in hibari's cache.")

#: OpenAI voice names -> hibari voices that are always available (the bundled one).
OPENAI_VOICE_MAP: dict[str, str] = {
    name: DEFAULT_VOICE
    for name in (
        "alloy",
        "ash",
        "ballad",
        "coral",
        "echo",
        "fable",
        "onyx",
        "nova",
        "sage",
        "shimmer",
        "verse",
        "marin",
        "cedar",
    )
}


@dataclass(frozen=True)
class HibariOptions(Options):
    """Per-call options: ``seed`` for hibari's stochastic duration/noise (None = fresh randomness);
    ``normalize`` runs voxbox's English text front-end (numbers, money, dates, URLs...) first."""

    seed: int | None = None
    normalize: bool = True


@dataclass(frozen=True)
class HibariLoadOptions(Options):
    """Load-time options: ``voice`` (the default voice)."""

    voice: str | None = None


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
            extra={"openai_voices": dict(OPENAI_VOICE_MAP), "threads": self._threads, "voice_note": VOICE_NOTE},
        )
        default = self.resolve_voice(voice)
        self.info = dataclasses.replace(self.info, default_voice=default)
        self._get(default)  # load (and verify) the default voice now, so errors surface at load time

    # -- voices ---------------------------------------------------------------------------------
    def resolve_voice(self, voice: VoiceArg) -> str:
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
    def stream(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None, *,
               cancel: CancelToken | None = None, **kwargs: Any) -> SpeechStream:
        text = validate_text(text)
        speed_v = validate_speed(speed)
        name = self.resolve_voice(voice)
        opts = build_options(HibariOptions, options, **kwargs)
        seed, normalize = opts.seed, opts.normalize
        tts = self._get(name)
        sentences = speech_sentences(text, language="en", normalize=normalize, engine="hibari")
        speed_v, stretch = split_speed(speed_v, NATIVE_SPEED_RANGE)

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
                if stretch != 1.0:
                    with timings.measure("stretch"):
                        samples = time_stretch(samples, SAMPLE_RATE, stretch)
                yield AudioChunk(samples, SAMPLE_RATE, index=index, text=sent)
                index += 1

        return SpeechStream(gen, SAMPLE_RATE, cancel=cancel)

    def synthesize(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None,
                   **kwargs: Any) -> Audio:
        return self.stream(text, voice, speed, options, **kwargs).collect()

    def encode_voice(self, audio: Audio, transcript: str | None = None) -> EncodedVoice:
        raise UnsupportedOperationError("hibari does not support voice cloning", param="voice")

    def components(self) -> list[ComponentSpec]:
        size = 0
        try:
            from voxbox.models.bundled import BUNDLES, package_dir

            size = (package_dir(BUNDLES["hibari"]) / "hibari.onnx").stat().st_size
        except (EngineUnavailableError, OSError):  # weights not installed: size unknown
            pass
        # int8 weights: ~1 byte per parameter.
        return [ComponentSpec(name="acoustic", params=size, devices=("cpu",), dtypes=("int8",),
                              backend="onnxruntime", kind="conv", overhead_bytes=64 << 20)]

    def close(self) -> None:
        with self._lock:
            self._voices.clear()
            self._g2p.clear()


def load(model: str | None = None, *, device: str = "auto", dtype: str | None = None, threads: int | None = None,
         voice: str | None = None) -> HibariEngine:
    """Load hibari. ``model``: None/"hibari" (bundled) or a path to a compatible ONNX file."""
    if device not in ("auto", "cpu"):
        raise DeviceError(f"hibari runs on CPU only (asked for device {device!r})")
    if dtype not in (None, "int8", "auto"):
        raise BadInputError(f"hibari ships int8 weights only (asked for dtype {dtype!r})", param="dtype")
    model_path = None
    if model not in (None, "", "hibari"):
        p = Path(model).expanduser()
        if not p.is_file():
            from voxbox.errors import ModelNotFoundError

            raise ModelNotFoundError(f"hibari model {model!r} not found (expected 'hibari' or a path to an .onnx file)",
                                     param="model")
        model_path = str(p)
    return HibariEngine(threads=threads or 1, voice=voice, model_path=model_path)


def _factory(req: LoadRequest) -> HibariEngine:
    opts = build_options(HibariLoadOptions, req.options)
    return load(req.model, device=req.device, dtype=req.dtype, threads=req.threads, voice=opts.voice)


SPEC: EngineSpec[HibariEngine, HibariOptions] = EngineSpec(
    name="hibari", task="tts", factory=_factory, options=HibariOptions, load_options=HibariLoadOptions,
    description="Tiny Kokoro-distilled English TTS (24 kHz), voices bundled in the wheel",
    requires=("hibari", "onnxruntime"), install_hint="pip install hibari-tts",
    components=(ComponentSpec("model", params=4_000_000, devices=("cpu",), dtypes=("int8",), backend="onnxruntime",
                              kind="vocoder", overhead_bytes=100 * 2**20),),
    capabilities=Capabilities(streaming=True, languages=("en",)),
    default_model="hibari", aliases=("tts-1", "hibari"),
    bundled_models=models, bundled_voices=voices,
)
