"""The ``echo-tts`` engine object: components, per-call options, streaming synthesis, voice cache."""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from voxbox.engines.base import Batchable, EncodedVoice, SpeechStream, VoiceArg, validate_speed, validate_text
from voxbox.engines.spec import build_options
from voxbox.errors import BadInputError, UnsupportedOperationError, VoiceNotFoundError
from voxbox.types import Audio, AudioChunk, CancelToken, ComponentSpec, EngineInfo, StageTimings

from ._codec import HOP, SAMPLE_RATE, DecodeGraphs, chunk_bounds, decode_chunks, encode_latent, speech_end
from ._dit import DiTRunner, SamplerParams, padded_len
from ._load import PCA, ModelFiles, load_autoencoder, load_dit, load_pca
from ._text import TextContext
from ._upstream import upstream_model, upstream_presets

__all__ = ["EchoEngine", "PRESETS", "SEQ_BUCKETS", "sequence_bucket", "tokenize"]

ENGINE = "echo-tts"
#: Latent lengths the sampler runs at (positions; 2048 samples each, 640 = 29.7 s = upstream's fixed length).
SEQ_BUCKETS = (160, 320, 480, 640)
MAX_SEQ = 640
#: Speech-rate estimate for choosing the bucket: deliberately slow (read English is ~15 chars/s),
#: so the speech fits; the unused tail is silence that the end-of-speech trim removes.
CHARS_PER_SECOND = 12.0
FRAMES_PER_SECOND = SAMPLE_RATE / HOP
MAX_TEXT_TOKENS = 768  # upstream MAX_TEXT_LENGTH
TEXT_BUCKET = 128
SPEAKER_BUCKET = 16  # speaker tokens (patches of 4 latent frames)
SPEAKER_KV_BYTES = 256 << 20  # DiT speaker keys/values the unbatched path keeps, most recent voices first
MAX_REFERENCE_SECONDS = 300  # upstream load_audio max_duration

#: Per-call sampler presets. "default" is upstream ``EchoTTS.synthesize``'s defaults; the
#: upstream ``sampler_presets.json`` entries are added by name at load time.
PRESETS: dict[str, dict[str, Any]] = {
    "default": dict(steps=40, cfg_scale_text=3.0, cfg_scale_speaker=8.0, cfg_min_t=0.5, cfg_max_t=1.0,
                    truncation_factor=0.8, rescale_k=None, rescale_sigma=None),
}
PRESETS["balanced"] = {**PRESETS["default"], "steps": 20}
PRESETS["fast"] = {**PRESETS["default"], "steps": 10}
_SAMPLER_KEYS = (
    "steps", "cfg_scale_text", "cfg_scale_speaker", "cfg_min_t", "cfg_max_t", "truncation_factor", "rescale_k",
    "rescale_sigma",
)


def tokenize(text: str) -> list[int]:
    """Upstream ``tokenizer_encode(normalize=True, append_bos=True)``: UTF-8 bytes after BOS 0."""
    for a, b in (("…", "..."), ("’", "'"), ("“", '"'), ("”", '"'), ("\n", " "), (":", ","), (";", ","), ("—", ", ")):
        text = text.replace(a, b)
    if not text.startswith(("[", "(")) and "S1" not in text and "S2" not in text:
        text = "[S1] " + text
    return [0, *text.encode("utf-8")]


def sequence_bucket(text: str) -> int:
    """Smallest latent length in SEQ_BUCKETS expected to hold ``text`` spoken (640 at most)."""
    need = len(text) / CHARS_PER_SECOND * FRAMES_PER_SECOND
    return next((b for b in SEQ_BUCKETS if b >= need), MAX_SEQ)


def _can_compile(device: torch.device) -> bool:
    """CUDA (not ROCm) with Triton importable: the DiT block is compiled by default there (the H200
    benchmark: sample 0.081 s vs 0.120 s at 10 steps, 640 positions; a few seconds of compile per
    new (sequence, text, speaker) bucket, paid by ``warmup()``)."""
    if device.type != "cuda" or getattr(torch.version, "hip", None):
        return False
    import importlib.util

    return importlib.util.find_spec("triton") is not None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass(frozen=True)
class _Call:
    text: str
    tokens: list[int]
    voice: EncodedVoice | Audio | None
    seq: int
    params: SamplerParams
    chunk_frames: int
    max_chunk_frames: int
    trim: bool


class EchoEngine(Batchable):
    """Echo-TTS with per-component placement, batched guidance, graph-captured steps and streamed decode.

    Built by ``load()``; ``placement`` maps each component (``text_encoder``, ``speaker_encoder``,
    ``dit``, ``autoencoder``) to its (device, dtype).
    """

    def __init__(
        self, files: ModelFiles, model_id: str, placement: dict[str, tuple[torch.device, torch.dtype]], *,
        preset: str = "default", cuda_graphs: bool = True, compile: bool | None = None, max_voices: int = 32,
        max_shapes: int = 4, chunk_frames: int = 16, max_chunk_frames: int = 256, snake: str | None = None,
    ) -> None:
        self.placement = dict(placement)
        self.model_id = model_id
        t0 = time.perf_counter()
        model, cfg = load_dit(files.dit, placement)
        stages = {"dit_weights": time.perf_counter() - t0}
        self.config = cfg
        self.text_encoder, self.text_norm = model.text_encoder, model.text_norm
        self.speaker_encoder, self.speaker_norm = model.speaker_encoder, model.speaker_norm
        dit_dev, dit_dt = placement["dit"]
        if compile is None:  # default: torch.compile the DiT block where Inductor makes GPU kernels
            compile = _can_compile(dit_dev)
        self._params = {
            "text_encoder": sum(p.numel() for m in (model.text_encoder, model.text_norm) for p in m.parameters()),
            "speaker_encoder": sum(
                p.numel() for m in (model.speaker_encoder, model.speaker_norm) for p in m.parameters()
            ),
        }
        self._params["dit"] = (
            sum(p.numel() for p in model.parameters()) - self._params["text_encoder"] - self._params["speaker_encoder"]
        )
        self.dit = DiTRunner(model, upstream_model().get_timestep_embedding, device=dit_dev, dtype=dit_dt,
                             norm_eps=cfg["norm_eps"], cuda_graphs=cuda_graphs, compile=compile, max_shapes=max_shapes)
        del model
        stages["dit_runner"] = time.perf_counter() - t0 - stages["dit_weights"]
        self.text_context = TextContext(self.text_encoder, self.text_norm, self.dit, placement["text_encoder"][0],
                                        use_graphs=self.dit.use_graphs)
        ae_dev, ae_dt = placement["autoencoder"]
        self.ae = load_autoencoder(files, ae_dev, ae_dt, snake)
        self.pca: PCA = load_pca(files.pca, ae_dev)
        self.decode_graphs = DecodeGraphs(self.ae, self.pca, ae_dev, enabled=self.dit.use_graphs)
        self._params["autoencoder"] = sum(p.numel() for p in self.ae.parameters())
        stages["autoencoder"] = time.perf_counter() - t0 - stages["dit_weights"] - stages["dit_runner"]
        self.presets = {**upstream_presets(), **PRESETS}
        if preset not in self.presets:
            raise BadInputError(
                f"unknown echo-tts preset {preset!r}; known: {', '.join(sorted(self.presets))}", param="preset"
            )
        self.default_preset = preset
        self.chunk_frames, self.max_chunk_frames = int(chunk_frames), int(max_chunk_frames)
        self._voices: OrderedDict[str, EncodedVoice] = OrderedDict()
        self._max_voices = max(1, int(max_voices))
        # The DiT's speaker keys/values per voice for the unbatched path (the batcher keeps its own):
        # a repeated voice skips the speaker encoder and the projection. Bounded in bytes: at the real
        # shape a 10-s reference is ~13 MB, upstream's longest (300 s) ~320 MB.
        self._speaker_kv: OrderedDict[Any, tuple[Any, int, int]] = OrderedDict()
        self.voice_cache_hits = 0
        self.voice_cache_misses = 0
        self._lock = threading.RLock()
        self._scheduler: Any = None  # set by the runtime when it batches this model's calls
        self.info = EngineInfo(
            name=ENGINE, task="tts", model=model_id, device=str(dit_dev), dtype=str(dit_dt).replace("torch.", ""),
            sample_rate=SAMPLE_RATE, voices=(), default_voice=None, languages=("en",), supports_cloning=True,
            max_concurrency=1,
            extra={"placement": {k: (str(d), str(t).replace("torch.", "")) for k, (d, t) in self.placement.items()},
                   "presets": sorted(self.presets), "sequence_buckets": list(SEQ_BUCKETS),
                   "cuda_graphs": self.dit.use_graphs, "text_graphs": self.text_context.use_graphs,
                   "decode_graphs": self.decode_graphs.enabled,
                   "compile": bool(compile), "load_stages_s": {k: round(v, 3) for k, v in stages.items()}},
        )

    # ------------------------------------------------------------------ planner
    def components(self) -> list[ComponentSpec]:
        torch_dtypes = ("bfloat16", "float16", "float32")
        kinds = {
            "text_encoder": "transformer", "speaker_encoder": "transformer", "dit": "transformer",
            "autoencoder": "conv",
        }
        return [
            ComponentSpec(name=name, params=int(self._params[name]), devices=("cuda", "rocm", "cpu"),
                          dtypes=torch_dtypes if name != "autoencoder" else ("float32", "bfloat16", "float16"),
                          backend="torch", kind=kinds[name])
            for name in ("text_encoder", "speaker_encoder", "dit", "autoencoder")
        ]

    # ------------------------------------------------------------------ voices
    def speaker_state(self, voice: EncodedVoice) -> tuple[torch.Tensor, int, int]:
        """The speaker encoder's output for a voice's latent, on the DiT's device and dtype: (state
        (1, n, dim), valid speaker tokens, n = valid padded to ``SPEAKER_BUCKET``)."""
        latent = voice.data["latent"]
        patch = self.dit.speaker_patch_size
        valid = latent.shape[0] // patch
        n = padded_len(valid, SPEAKER_BUCKET, SPEAKER_BUCKET)
        sdev, sdt = self.placement["speaker_encoder"]
        lat = torch.zeros((1, n * patch, latent.shape[1]), dtype=torch.float32)
        lat[0, :valid * patch] = latent[:valid * patch]
        state = self.speaker_norm(self.speaker_encoder(lat.to(device=sdev, dtype=sdt)))
        return state.to(device=self.dit.device, dtype=self.dit.dtype), valid, n

    def _keep_speaker_kv(self, key: Any, entry: tuple[Any, int, int]) -> None:
        """Cache one voice's speaker keys/values, dropping the least recently used past the budget."""
        size = lambda e: sum(t.numel() * t.element_size() for t in e[0])  # noqa: E731
        if size(entry) > SPEAKER_KV_BYTES:
            return
        self._speaker_kv[key] = entry
        while sum(size(e) for e in self._speaker_kv.values()) > SPEAKER_KV_BYTES:
            self._speaker_kv.popitem(last=False)

    def encode_voice(self, audio: Audio, transcript: str | None = None) -> EncodedVoice:
        """Reference clip -> speaker latent, cached by the SHA-256 of the clip (rate + float32 samples)."""
        if not isinstance(audio, Audio):
            raise BadInputError("reference voice must be an Audio clip", param="voice")
        digest = hashlib.sha256(
            np.int64(audio.sample_rate).tobytes() + np.ascontiguousarray(audio.samples, np.float32).tobytes()
        ).hexdigest()
        with self._lock:
            hit = self._voices.get(digest)
            if hit is not None:
                self._voices.move_to_end(digest)
                self.voice_cache_hits += 1
                return hit
        self.voice_cache_misses += 1
        samples = audio.samples[: int(MAX_REFERENCE_SECONDS * audio.sample_rate)]
        if audio.sample_rate != SAMPLE_RATE:
            from voxbox.audio.resample import resample  # PyAV (libswresample); imported only when needed

            samples = resample(samples, audio.sample_rate, SAMPLE_RATE)
        patch = self.dit.speaker_patch_size
        if len(samples) < HOP * patch:
            raise BadInputError(f"reference clip is too short ({len(samples) / SAMPLE_RATE:.2f} s)", param="voice")
        x = torch.from_numpy(np.ascontiguousarray(samples, np.float32))
        x = x / max(float(x.abs().max()), 1.0)  # upstream load_audio: scale down only if it clips
        ae_dev = self.placement["autoencoder"][0]
        latent = encode_latent(self.ae, self.pca, x.to(ae_dev), patch)
        voice = EncodedVoice((ENGINE, self.model_id, digest), {"latent": latent}, transcript, nbytes=latent.numel() * 4)
        with self._lock:
            self._voices[digest] = voice
            while len(self._voices) > self._max_voices:
                self._voices.popitem(last=False)
        return voice

    # ------------------------------------------------------------------ options
    def _parse(self, text: Any, voice: Any, speed: Any, options: dict[str, Any]) -> _Call:
        text = validate_text(text)
        if validate_speed(speed) != 1.0:
            raise UnsupportedOperationError("echo-tts has no speed control (speed must be 1.0)", param="speed")
        tokens = tokenize(text)
        if len(tokens) > MAX_TEXT_TOKENS:
            raise BadInputError(f"echo-tts speaks at most {MAX_TEXT_TOKENS} bytes of text per call "
                                f"(about 30 s of speech); got {len(tokens)}", param="text")
        if isinstance(voice, str):
            cached = self._voices.get(voice)
            if cached is not None:
                voice = cached
            elif Path(voice).expanduser().is_file():  # a reference clip on disk (the CLI's --voice)
                from voxbox.audio.decode import decode

                voice = decode(
                    Path(voice).expanduser(), sample_rate=SAMPLE_RATE, max_duration=2 * MAX_REFERENCE_SECONDS
                )
            else:
                raise VoiceNotFoundError(f"echo-tts has no voice {voice!r}; give a reference clip (file or Audio) "
                                         "or an EncodedVoice from encode_voice()", param="voice")
        elif isinstance(voice, EncodedVoice):
            if voice.key[0] != ENGINE or not isinstance(voice.data, dict) or "latent" not in voice.data:
                raise BadInputError(f"voice {voice.key!r} was encoded by another engine", param="voice")
        elif voice is not None and not isinstance(voice, Audio):
            raise BadInputError(
                "voice must be None, a cached voice id, an EncodedVoice or an Audio clip", param="voice"
            )
        preset_name = options.get("preset") or self.default_preset
        if preset_name not in self.presets:
            raise BadInputError(
                f"unknown echo-tts preset {preset_name!r}; known: {', '.join(sorted(self.presets))}", param="preset"
            )
        merged = {**PRESETS["default"], **self.presets[preset_name]}
        merged.update({k: options[k] for k in _SAMPLER_KEYS if options.get(k) is not None})
        try:
            steps = int(merged["steps"])
            floats = {k: (None if merged[k] is None else float(merged[k])) for k in _SAMPLER_KEYS if k != "steps"}
            seed = int(options.get("seed") or 0)
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"bad echo-tts sampler option: {exc}", param="options") from None
        if not 1 <= steps <= 200:
            raise BadInputError(f"steps must be between 1 and 200, got {steps}", param="steps")
        for k in ("cfg_scale_text", "cfg_scale_speaker", "cfg_min_t", "cfg_max_t"):
            value = floats[k]
            if value is None or not math.isfinite(value):
                raise BadInputError(f"{k} must be a finite number", param=k)
        params = SamplerParams(steps=steps, seed=seed, **floats)  # type: ignore[arg-type]
        seq = options.get("sequence_length")
        if seq is None:
            seq = sequence_bucket(text)
        else:
            try:
                seq = int(seq)
            except (TypeError, ValueError):
                raise BadInputError(
                    f"sequence_length must be an integer, got {seq!r}", param="sequence_length"
                ) from None
            if not 16 <= seq <= MAX_SEQ or seq % 16:
                raise BadInputError(
                    f"sequence_length must be a multiple of 16 in [16, {MAX_SEQ}], got {seq}", param="sequence_length"
                )
        first = int(options.get("chunk_frames") or self.chunk_frames)
        largest = int(options.get("max_chunk_frames") or self.max_chunk_frames)
        if first < 1 or largest < 1:
            raise BadInputError("chunk_frames and max_chunk_frames must be positive", param="chunk_frames")
        trim = options.get("trim")
        return _Call(text, tokens, voice, seq, params, first, max(first, largest), True if trim is None else bool(trim))

    # ------------------------------------------------------------------ synthesis
    def stream(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None, *,
               cancel: CancelToken | None = None, **kwargs: Any) -> SpeechStream:
        """Validate, then return a lazy stream: sampling runs on the first ``next()``, then the latent
        is decoded chunk by chunk. ``stream.details`` fills with the bucket and speech length."""
        from . import EchoOptions

        opts = build_options(EchoOptions, options, **kwargs)
        call = self._parse(text, voice, speed, opts.given())
        details: dict[str, Any] = {}
        token = cancel if cancel is not None else CancelToken()
        sched = self._scheduler
        if sched is not None:
            return SpeechStream(lambda timings: self._generate_batched(sched, call, timings, details, token),
                                SAMPLE_RATE, cancel=token, details=details)
        return SpeechStream(lambda timings: self._generate(call, timings, details), SAMPLE_RATE, cancel=token,
                            details=details)

    # ------------------------------------------------------------------ batching across requests
    def batcher(self, config: Any) -> Any:
        """The runtime's scheduler drives this (``voxbox.runtime.batching``): at most
        ``config.max_batch`` requests sample together, fewer if the DiT's device holds fewer."""
        from voxbox.hardware.memory import batch_slots

        from ._batch import EchoBatcher

        slots = int(config.max_batch)
        dev = self.dit.device
        if dev.type == "cuda":
            free, total = torch.cuda.mem_get_info(dev)
            slots = batch_slots(EchoBatcher.slot_bytes(self.dit), free, total, cap=slots)
        return EchoBatcher(self, slots)

    def _generate_batched(self, sched: Any, call: _Call, timings: StageTimings, details: dict[str, Any],
                          cancel: CancelToken) -> Iterator[AudioChunk]:
        from voxbox.engines.batched import relay

        from ._batch import EchoRequest

        start = time.perf_counter()
        if isinstance(call.voice, Audio):
            with timings.measure("speaker_encode"):
                call = replace(call, voice=self.encode_voice(call.voice))
        yield from relay(sched.submit(EchoRequest(call, time.perf_counter()), cancel), timings, details,
                         started=start)

    def synthesize(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None,
                   **kwargs: Any) -> Audio:
        """Non-streamed: the whole latent is decoded in one call unless ``chunk_frames`` is given."""
        from . import EchoOptions

        opts = build_options(EchoOptions, options, **kwargs)
        if opts.chunk_frames is None:
            opts = replace(opts, chunk_frames=MAX_SEQ)
        return self.stream(text, voice, speed, opts).collect()

    @torch.inference_mode()
    def _latent(self, call: _Call, timings: StageTimings) -> torch.Tensor:
        """Text and speaker conditioning, then the sampler: (1, seq, latent) float32 on the DiT device."""
        dit_dev, dit_dt = self.placement["dit"]
        # text: encoder on its device, one move of its output to the DiT
        with timings.measure("text_encode"):
            n = len(call.tokens)
            tlen = min(padded_len(n, TEXT_BUCKET, TEXT_BUCKET), MAX_TEXT_TOKENS)
            ids = torch.zeros((1, tlen), dtype=torch.int32)
            ids[0, :n] = torch.tensor(call.tokens, dtype=torch.int32)
            mask = torch.zeros((1, tlen), dtype=torch.bool)
            mask[0, :n] = True
            text_kv = self.text_context(ids, mask)  # a CUDA graph per text length where it can be
            _sync(dit_dev)
        # speaker: reference latent (cached) -> speaker encoder -> DiT keys/values
        with timings.measure("speaker_encode"):
            voice = call.voice
            if voice is None:
                spk_kv, spk_valid, spk_len = None, 0, SPEAKER_BUCKET
            else:
                assert isinstance(voice, EncodedVoice)  # callers encode a raw clip before taking the lock
                hit = self._speaker_kv.get(voice.key)
                if hit is not None:  # the voice's keys/values of an earlier call (the engine lock is held)
                    self._speaker_kv.move_to_end(voice.key)
                    spk_kv, spk_valid, spk_len = hit
                else:
                    sstate, spk_valid, spk_len = self.speaker_state(voice)
                    k, v = self.dit.context_kv(sstate, self.dit.w_ctx_spk)
                    spk_kv = (k, v.contiguous())  # v alone, not a view holding the projection's k half
                    self._keep_speaker_kv(voice.key, (spk_kv, spk_valid, spk_len))
            _sync(dit_dev)
        with timings.measure("sample"):
            latent = self.dit.sample(call.seq, text_kv, len(call.tokens), spk_kv, spk_valid, spk_len, call.params)
            _sync(dit_dev)
        return latent

    def _generate(self, call: _Call, timings: StageTimings, details: dict[str, Any]) -> Iterator[AudioChunk]:
        if isinstance(call.voice, Audio):  # a raw clip: encode (or hit the cache) before taking the lock
            with timings.measure("speaker_encode"):
                call = replace(call, voice=self.encode_voice(call.voice))
        with self._lock:
            latent = self._latent(call, timings)
        t0 = time.perf_counter()
        frames = speech_end(latent[0]) if call.trim else latent.shape[1]
        details.update(sequence_length=call.seq, speech_frames=frames, steps=call.params.steps)
        ae_dev = self.placement["autoencoder"][0]
        latent = latent[:, :frames].to(ae_dev)
        timings.add("decode", time.perf_counter() - t0)
        if frames == 0:
            return
        bounds = chunk_bounds(frames, call.chunk_frames, call.max_chunk_frames)
        pieces = decode_chunks(self.ae, self.pca, latent, bounds, self.decode_graphs)
        index = 0
        while True:
            t0 = time.perf_counter()
            audio = next(pieces, None)  # .cpu() inside syncs the device
            timings.add("decode", time.perf_counter() - t0)
            if audio is None:
                return
            yield AudioChunk(audio.numpy(), SAMPLE_RATE, index=index, text=call.text if index == 0 else None)
            index += 1

    def warmup(self, texts: tuple[str, ...] = ("Hello there.",), **options: Any) -> float:
        """Run one short synthesis per text (seconds taken): captures the DiT graphs of those texts'
        buckets and warms the decoder, so the first real call pays neither."""
        t0 = time.perf_counter()
        for text in texts:
            self.synthesize(text, **{"steps": 2, **options})  # one-call decode
            for _ in self.stream(text, **{"steps": 2, **options}):  # streamed chunk shapes (kernel variants)
                pass
        return time.perf_counter() - t0

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler = None
        self.dit = None  # type: ignore[assignment]
        self.ae = None  # type: ignore[assignment]
        self.text_encoder = self.speaker_encoder = None  # type: ignore[assignment]
        self.text_context = self.decode_graphs = None  # type: ignore[assignment]
        self._voices.clear()
        self._speaker_kv.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
