"""The ``omnivoice`` engine object: prompt building, sampling, decoding, voices, streaming."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from voxbox.engines.base import (
    EncodedVoice,
    SpeechStream,
    VoiceArg,
    validate_speed,
    validate_text,
)
from voxbox.engines.spec import build_options
from voxbox.engines.voices import VoiceCache, VoiceCacheStats, clip_digest
from voxbox.errors import BadInputError, VoiceNotFoundError
from voxbox.types import (
    Audio,
    AudioChunk,
    CancelToken,
    ComponentSpec,
    EngineInfo,
    StageTimings,
)

from . import _post, _text, _upstream
from ._codec import Codec
from ._load import ModelFiles, count_params, load_encoder
from ._sampler import Prompt, SampleParams, Sampler

__all__ = ["DEFAULTS", "ENGINE", "OPENAI_VOICES", "OmniVoiceEngine"]

ENGINE = "omnivoice"
MAX_REFERENCE_SECONDS = 60.0
#: OpenAI voice names (clients must send one): all mean "the model picks a voice" (or designs one
#: from ``voice_description``), like ``auto``.
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")
AUTO_VOICES = ("auto", "default", *OPENAI_VOICES)
#: Upstream ``OmniVoiceGenerationConfig`` defaults (``steps`` = ``num_step``, ``postprocess`` =
#: ``postprocess_output``, ``chunk_seconds``/``chunk_threshold`` = ``audio_chunk_duration``/``_threshold``).
DEFAULTS: dict[str, Any] = dict(steps=32, guidance_scale=2.0, t_shift=0.1, layer_penalty_factor=5.0,
                                position_temperature=5.0, class_temperature=0.0, denoise=True, postprocess=True,
                                chunk_seconds=15.0, chunk_threshold=30.0)


@dataclass(frozen=True)
class _Ref:
    codes: torch.Tensor  # (codebooks, frames) long, CPU
    text: str
    rms: float | None


@dataclass(frozen=True)
class _Call:
    text: str
    language: str | None
    instruct: str | None
    ref: _Ref | None
    clip: Audio | None  # a raw reference clip, encoded when the stream starts
    clip_text: str | None
    params: SampleParams
    seed: int
    speed: float
    duration: float | None
    denoise: bool
    postprocess: bool
    chunk_seconds: float
    chunk_threshold: float
    first_window: int
    window: int


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class OmniVoiceEngine(VoiceCacheStats):
    """OmniVoice: a Qwen3 masked-token model over 8 codebooks, decoded by the Higgs audio codec.

    Built by ``load()``; ``placement`` maps ``backbone``, ``decoder`` and ``encoder`` (reference
    clips; loaded on first use) to (device, dtype).
    """

    def __init__(self, files: ModelFiles, model_id: str, sampler: Sampler, codec: Codec, tokenizer: Any, codec_cfg: Any,
                 placement: dict[str, tuple[torch.device, torch.dtype]], *, max_voices: int = 32,
                 first_window: int = 12, window: int = 50, context: int = 16) -> None:
        self.files, self.model_id = files, model_id
        self.sampler, self.codec, self.tokenizer, self.codec_cfg = sampler, codec, tokenizer, codec_cfg
        self.placement = dict(placement)
        self.c = sampler.c
        self.frame_rate = codec.frame_rate
        self.sample_rate = codec.sample_rate
        self.first_window, self.window, self.context = int(first_window), int(window), int(context)
        self.estimator = _upstream.duration().RuleDurationEstimator()
        self._params = count_params(files)
        self._voices: VoiceCache[tuple[torch.Tensor, float]] = VoiceCache(max_voices)
        self._lock = threading.Lock()
        self._voice_lock = threading.Lock()
        dev, dt = placement["backbone"]
        self.info = EngineInfo(
            name=ENGINE, task="tts", model=model_id, device=str(dev), dtype=str(dt).replace("torch.", ""),
            sample_rate=self.sample_rate, voices=(), default_voice=None, languages=(), supports_cloning=True,
            max_concurrency=1,
            extra={"placement": {k: (str(d), str(t).replace("torch.", "")) for k, (d, t) in self.placement.items()},
                   "openai_voices": {v: "auto" for v in OPENAI_VOICES}, "frame_rate": self.frame_rate,
                   "cuda_graphs": sampler.use_graphs, "voice_design": True, "defaults": dict(DEFAULTS)},
        )

    # ------------------------------------------------------------------ planner
    def components(self) -> list[ComponentSpec]:
        devs = ("cuda", "rocm", "cpu")
        return [
            ComponentSpec(
                "backbone", params=self._params["backbone"], devices=devs, dtypes=("bfloat16", "float16", "float32"),
                backend="torch", kind="transformer", overhead_bytes=512 * 2**20,
            ),
            ComponentSpec(
                "decoder", params=self._params["decoder"], devices=devs, dtypes=("float32", "bfloat16", "float16"),
                backend="torch", kind="vocoder", overhead_bytes=1 * 2**30,
            ),
            ComponentSpec(
                "encoder", params=self._params["encoder"], devices=devs, dtypes=("float32", "bfloat16", "float16"),
                backend="torch", kind="codec", overhead_bytes=256 * 2**20,
            ),
        ]

    # ------------------------------------------------------------------ voices
    def encode_voice(self, audio: Audio, transcript: str | None = None) -> EncodedVoice:
        """Reference clip -> (codes, level), cached by the SHA-256 of (rate, samples); upstream
        ``create_voice_clone_prompt`` with a given transcript (level, silence trim, whole frames)."""
        if not isinstance(audio, Audio):
            raise BadInputError("reference voice must be an Audio clip", param="voice")
        if transcript is not None and not isinstance(transcript, str):
            raise BadInputError("transcript must be a string", param="transcript")
        if not 0 < audio.duration <= MAX_REFERENCE_SECONDS:
            raise BadInputError(f"reference clip must be between 0 and {MAX_REFERENCE_SECONDS:.0f} s long, "
                                f"got {audio.duration:.1f} s", param="voice")
        digest = clip_digest(audio)
        codes, rms = self._voices.get_or_encode(digest, lambda: self._encode_clip(audio))
        return EncodedVoice((ENGINE, self.model_id, digest), {"codes": codes, "rms": rms}, transcript,
                            nbytes=codes.numel() * 8)

    def _encode_clip(self, audio: Audio) -> tuple[torch.Tensor, float]:
        wav = np.asarray(audio.samples, np.float32)
        if audio.sample_rate != self.sample_rate:
            from voxbox.audio.resample import (
                resample,  # PyAV; upstream resamples with torchaudio
            )

            wav = resample(wav, audio.sample_rate, self.sample_rate).astype(np.float32)
        rms = float(np.sqrt(np.mean(wav[None] ** 2)))
        if 0 < rms < 0.1:
            wav = wav * 0.1 / rms
        wav = _post.remove_silence(wav, self.sample_rate, mid_ms=200, lead_ms=100, trail_ms=200)
        wav = wav[: len(wav) - len(wav) % self.codec.hop]
        if len(wav) == 0:
            raise BadInputError("reference clip is silent (nothing left after trimming silence)", param="voice")
        with self._voice_lock:
            if self.codec.encoder is None:
                dev, dt = self.placement["encoder"]
                self.codec.encoder = load_encoder(self.files, self.codec_cfg, dev, dt)
        return self.codec.encode(wav), rms

    # ------------------------------------------------------------------ options
    def _voice(self, voice: Any, reference_text: str | None) -> tuple[_Ref | None, Audio | None, str | None]:
        if voice is None or (isinstance(voice, str) and voice.strip().lower() in AUTO_VOICES):
            return None, None, None
        if isinstance(voice, EncodedVoice):
            if voice.key[0] != ENGINE or not isinstance(voice.data, dict) or "codes" not in voice.data:
                raise BadInputError(f"voice {voice.key!r} was encoded by another engine", param="voice")
            text = voice.transcript or reference_text
            if not text or not text.strip():
                raise BadInputError("omnivoice clones a voice from a clip and its transcript; this voice has no "
                                    "transcript (upload it with one)", param="voice")
            add = _upstream.text().add_punctuation
            return _Ref(voice.data["codes"], add(text), voice.data.get("rms")), None, None
        if isinstance(voice, str):
            path = Path(voice).expanduser()
            if not path.is_file():
                raise VoiceNotFoundError(f"omnivoice has no voice {voice!r}; use 'auto' (or an OpenAI voice name), "
                                         "a voice_description, or a reference clip with its transcript", param="voice")
            from voxbox.audio.decode import decode

            side = path.with_suffix(".txt")
            if reference_text is None and side.is_file():
                reference_text = side.read_text(encoding="utf-8").strip()
            voice = decode(path, sample_rate=self.sample_rate, max_duration=MAX_REFERENCE_SECONDS)
        if isinstance(voice, Audio):
            if not reference_text or not reference_text.strip():
                raise BadInputError("a reference clip needs its transcript (reference_text, or a .txt file next to "
                                    "the clip)", param="reference_text")
            return None, voice, reference_text
        raise BadInputError(
            "voice must be None, 'auto', an EncodedVoice, an Audio clip or a clip's path", param="voice"
        )

    def _parse(self, text: Any, voice: Any, speed: Any, o: Any) -> _Call:
        text = validate_text(text)
        speed_v = validate_speed(speed)
        ref, clip, clip_text = self._voice(voice, o.reference_text)
        d = {k: (getattr(o, k) if getattr(o, k) is not None else v) for k, v in DEFAULTS.items()}
        params = SampleParams(
            steps=int(d["steps"]), guidance_scale=float(d["guidance_scale"]), t_shift=float(d["t_shift"]),
            layer_penalty_factor=float(d["layer_penalty_factor"]),
            position_temperature=float(d["position_temperature"]), class_temperature=float(d["class_temperature"]),
        )
        seed = int(o.seed) if o.seed is not None else int.from_bytes(os.urandom(4), "little")
        first = int(o.first_window_frames or self.first_window)
        window = int(o.window_frames or self.window)
        return _Call(
            text=text, language=_text.resolve_language(o.language),
            instruct=_text.resolve_instruct(o.voice_description, text), ref=ref, clip=clip, clip_text=clip_text,
            params=params, seed=seed, speed=speed_v, duration=o.duration, denoise=bool(d["denoise"]),
            postprocess=bool(d["postprocess"]), chunk_seconds=float(d["chunk_seconds"]),
            chunk_threshold=float(d["chunk_threshold"]), first_window=first, window=window,
        )

    # ------------------------------------------------------------------ synthesis
    def stream(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None, *,
               cancel: CancelToken | None = None, **kwargs: Any) -> SpeechStream:
        """Validate, then a lazy stream: one chunk per text piece (upstream's long-text chunks), or
        decoder windows within a piece when nothing needs the whole piece first (a reference voice
        and ``postprocess=False``). ``stream.details`` fills with the pieces' frames and the seed."""
        from . import OmniVoiceOptions

        opts = build_options(OmniVoiceOptions, options, **kwargs)
        call = self._parse(text, voice, speed, opts)
        details: dict[str, Any] = {"seed": call.seed, "steps": call.params.steps}
        token = cancel if cancel is not None else CancelToken()
        return SpeechStream(lambda timings: self._generate(call, timings, details, token), self.sample_rate,
                            cancel=token, details=details)

    def synthesize(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None,
                   **kwargs: Any) -> Audio:
        return self.stream(text, voice, speed, options, **kwargs).collect()

    def _pieces(self, call: _Call, ref: _Ref | None) -> tuple[list[str], int | None, float]:
        """(texts, frames of a single piece or None, speed for per-piece estimates): upstream's
        ``_preprocess_all`` length estimate and ``_generate_chunked`` split."""
        ref_text, ref_frames = (ref.text, ref.codes.shape[1]) if ref is not None else (None, None)
        est = _text.estimate_frames(self.estimator, call.text, ref_text, ref_frames,
                                    1.0 if call.duration is not None else call.speed)
        speed = call.speed
        if call.duration is not None:
            target = max(1, int(call.duration * self.frame_rate))
            speed, est = est / target, target
        if est <= int(call.chunk_threshold * self.frame_rate):
            return [call.text], est, speed
        chunk_len = int(call.chunk_seconds * self.frame_rate / (est / len(call.text)))
        return (
            _upstream.text().chunk_text_punctuation(text=call.text, chunk_len=chunk_len, min_chunk_len=3), None, speed,
        )

    def prompt(
        self, call: _Call, text: str, ref_codes: torch.Tensor | None, ref_text: str | None, frames: int
    ) -> Prompt:
        """Upstream ``_prepare_inference_inputs``: style row, text row, reference codes, MASK target."""
        c = self.c
        style = list(self.tokenizer.encode(_text.style_text(call.language, call.instruct,
                                                            call.denoise and ref_codes is not None)).ids)
        words = _text.text_ids(self.tokenizer, f"<|text_start|>{_text.combine_text(text, ref_text)}<|text_end|>")
        head = torch.tensor(style + words, dtype=torch.long).repeat(c.codebooks, 1)
        parts = [head] + ([ref_codes.long().cpu()] if ref_codes is not None else [])
        parts.append(torch.full((c.codebooks, frames), c.mask_id, dtype=torch.long))
        return Prompt(torch.cat(parts, dim=1), len(style) + len(words), frames)

    def _generate(self, call: _Call, timings: StageTimings, details: dict[str, Any],
                  cancel: CancelToken) -> Iterator[AudioChunk]:
        ref = call.ref
        if call.clip is not None:
            with timings.measure("reference_encode"):
                enc = self.encode_voice(call.clip, call.clip_text)
                ref = self._voice(enc, call.clip_text)[0]
        dev = self.placement["backbone"][0]
        gen = torch.Generator(device=dev).manual_seed(call.seed)
        with timings.measure("prompt"):
            texts, frames0, speed = self._pieces(call, ref)
        details.update(pieces=len(texts), frames=[])
        first: tuple[torch.Tensor, str] | None = None
        index = 0
        for piece in texts:
            if ref is not None:
                r_codes, r_text = ref.codes, ref.text
            elif first is not None:
                r_codes, r_text = first
            else:
                r_codes, r_text = None, None
            with timings.measure("prompt"):
                frames = frames0 if frames0 is not None else _text.estimate_frames(
                    self.estimator, piece, r_text, None if r_codes is None else r_codes.shape[1], speed)
                prompt = self.prompt(call, piece, r_codes, r_text, frames)
            with self._lock, timings.measure("sample"):
                tokens = self.sampler.sample(prompt, call.params, gen, cancel.check)
                _sync(dev)
            details["frames"].append(frames)
            if ref is None and first is None and len(texts) > 1:
                first = (tokens.cpu(), piece)
            rms = ref.rms if ref is not None else None
            for j, audio in enumerate(self._audio(call, tokens, rms, timings, cancel)):
                yield AudioChunk(audio, self.sample_rate, index=index, text=piece if j == 0 else None)
                index += 1

    def _audio(self, call: _Call, tokens: torch.Tensor, rms: float | None, timings: StageTimings,
               cancel: CancelToken) -> Iterator[np.ndarray]:
        """One piece's audio: in decoder windows when the clean-up is elementwise (a reference's
        level, fades, pads), else decoded whole and cleaned up as upstream does."""
        rate = self.sample_rate
        if call.postprocess or rms is None or call.window <= 0:
            with self._lock, timings.measure("decode"):
                audio = self.codec.decode(tokens).numpy()
            with timings.measure("postprocess"):
                yield _post.postprocess(audio, rate, rms, trim_silence=call.postprocess)
            return
        total = tokens.shape[1] * self.codec.hop
        k, pad = _post.fade_gains(total, rate, 0.1), int(0.1 * rate)
        ramp_in, ramp_out = np.linspace(0, 1, k, dtype=np.float32), np.linspace(1, 0, k, dtype=np.float32)
        pos = 0
        windows = self.codec.decode_windows(tokens, call.first_window, call.window, self.context)
        while True:
            cancel.check()
            with self._lock, timings.measure("decode"):
                piece = next(windows, None)
            if piece is None:
                return
            with timings.measure("postprocess"):
                out = _post.level(piece.numpy(), rms).copy()
                a, b = pos, pos + len(out)
                if k > 0 and a < k:
                    out[: min(b, k) - a] *= ramp_in[a:min(b, k)]
                if k > 0 and b > total - k:
                    lo = max(a, total - k)
                    out[lo - a:] *= ramp_out[lo - (total - k):b - (total - k)]
                z = np.zeros(pad, np.float32)
                out = np.concatenate([z if a == 0 else z[:0], out, z if b >= total else z[:0]])
                pos = b
            yield out

    def warmup(self, texts: tuple[str, ...] = ("Hello there.",), **options: Any) -> float:
        t0 = time.perf_counter()
        for text in texts:
            self.synthesize(text, **{"steps": 2, "seed": 0, **options})
        return time.perf_counter() - t0

    def close(self) -> None:
        self.sampler = None  # type: ignore[assignment]
        self.codec = None  # type: ignore[assignment]
        self._voices.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
