"""The ``voxcpm2`` engine object: prompts, the AR runner, streamed 48 kHz decode, reference voices."""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

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
from voxbox.errors import BadInputError, UnsupportedOperationError, VoiceNotFoundError
from voxbox.types import (
    Audio,
    AudioChunk,
    CancelToken,
    ComponentSpec,
    EngineInfo,
    StageTimings,
)

from ._model import AUDIO_START, REF_END, REF_START, Files, Net, Tokenizer
from ._runner import GenParams, Prompt, Runner

__all__ = ["DEFAULTS", "ENGINE", "VoxCPM2Engine"]

ENGINE = "voxcpm2"
MAX_REFERENCE_SECONDS = 60.0
OPENAI_VOICES = ("alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse")
AUTO_VOICES = ("auto", "default", *OPENAI_VOICES)
#: Upstream ``VoxCPM.generate`` defaults (``timesteps`` = ``inference_timesteps``).
DEFAULTS: dict[str, Any] = {"timesteps": 10, "cfg_value": 2.0, "min_len": 2, "max_len": 4096}


@dataclass(frozen=True)
class _Call:
    text: str
    feats: torch.Tensor | None  # reference latent patches (R, patch, dim)
    clip: Audio | None
    params: GenParams
    seed: int
    first_window: int
    window: int


class VoxCPM2Engine(VoiceCacheStats):
    """VoxCPM2: text-semantic + residual LMs drive a local flow-matching DiT, patch by patch; the
    AudioVAE decodes the latent to 48 kHz as the patches come. ``placement`` maps ``lm``, ``dit``
    (same device as ``lm``) and ``vae`` to (device, dtype)."""

    def __init__(self, files: Files, model_id: str, net: Net, vae: Any, runner: Runner, tokenizer: Tokenizer,
                 placement: dict[str, tuple[torch.device, torch.dtype]], params: dict[str, int], *,
                 max_voices: int = 32, first_window: int = 2, window: int = 8) -> None:
        self.files, self.model_id = files, model_id
        self.net, self.vae, self.runner, self.tokenizer = net, vae, runner, tokenizer
        self.placement = dict(placement)
        self._params = dict(params)
        self.sample_rate = int(getattr(vae, "out_sample_rate", vae.sample_rate))
        self.encode_rate = int(vae.sample_rate)
        self.first_window, self.window = int(first_window), int(window)
        self._voices: VoiceCache[torch.Tensor] = VoiceCache(max_voices)
        self._lock = threading.Lock()
        dev, dt = placement["lm"]
        self.info = EngineInfo(
            name=ENGINE, task="tts", model=model_id, device=str(dev), dtype=str(dt).replace("torch.", ""),
            sample_rate=self.sample_rate, voices=(), default_voice=None, languages=(), supports_cloning=True,
            max_concurrency=1,
            extra={"placement": {k: (str(d), str(t).replace("torch.", "")) for k, (d, t) in self.placement.items()},
                   "openai_voices": {v: "auto" for v in OPENAI_VOICES}, "cuda_graphs": runner.use_graphs,
                   "patch_seconds": net.patch_size * vae.chunk_size / vae.sample_rate, "defaults": dict(DEFAULTS)},
        )

    # ------------------------------------------------------------------ planner
    def components(self) -> list[ComponentSpec]:
        devs = ("cuda", "rocm", "cpu")
        tf = ("bfloat16", "float16", "float32")
        return [
            ComponentSpec(
                "lm", params=self._params["lm"], devices=devs, dtypes=tf, backend="torch", kind="transformer",
                overhead_bytes=2 * self.runner.max_length * 2**16,
            ),
            ComponentSpec(
                "dit", params=self._params["dit"], devices=devs, dtypes=tf, backend="torch", kind="transformer"
            ),
            ComponentSpec(
                "vae", params=self._params["vae"], devices=devs, dtypes=("float32",), backend="torch", kind="vocoder",
                overhead_bytes=1 * 2**30,
            ),
        ]

    # ------------------------------------------------------------------ voices
    def encode_voice(self, audio: Audio, transcript: str | None = None) -> EncodedVoice:
        """Reference clip -> AudioVAE latent patches (upstream ``_encode_wav``, right-padded), cached
        by the SHA-256 of (rate, samples). VoxCPM2 clones from the clip alone; the transcript is kept."""
        if not isinstance(audio, Audio):
            raise BadInputError("reference voice must be an Audio clip", param="voice")
        if not 0 < audio.duration <= MAX_REFERENCE_SECONDS:
            raise BadInputError(f"reference clip must be between 0 and {MAX_REFERENCE_SECONDS:.0f} s long, "
                                f"got {audio.duration:.1f} s", param="voice")
        digest = clip_digest(audio)
        feats = self._voices.get_or_encode(digest, lambda: self._encode_clip(audio))
        return EncodedVoice((ENGINE, self.model_id, digest), {"feats": feats}, transcript, nbytes=feats.numel() * 4)

    @torch.inference_mode()
    def _encode_clip(self, audio: Audio) -> torch.Tensor:
        wav = np.asarray(audio.samples, np.float32)
        if audio.sample_rate != self.encode_rate:
            from voxbox.audio.resample import (
                resample,  # PyAV; upstream loads with librosa
            )

            wav = resample(wav, audio.sample_rate, self.encode_rate).astype(np.float32)
        x = torch.from_numpy(np.ascontiguousarray(wav))[None]
        patch_len = self.net.patch_size * self.vae.chunk_size
        if x.shape[1] % patch_len:
            x = torch.nn.functional.pad(x, (0, patch_len - x.shape[1] % patch_len))
        dev = self.placement["vae"][0]
        feat = self.vae.encode(x.to(dev), self.encode_rate).float().cpu()
        return feat.view(self.vae.latent_dim, -1, self.net.patch_size).permute(1, 2, 0).contiguous()

    # ------------------------------------------------------------------ options
    def _voice(self, voice: Any) -> tuple[torch.Tensor | None, Audio | None]:
        if voice is None or (isinstance(voice, str) and voice.strip().lower() in AUTO_VOICES):
            return None, None
        if isinstance(voice, EncodedVoice):
            if voice.key[0] != ENGINE or not isinstance(voice.data, dict) or "feats" not in voice.data:
                raise BadInputError(f"voice {voice.key!r} was encoded by another engine", param="voice")
            return voice.data["feats"], None
        if isinstance(voice, str):
            path = Path(voice).expanduser()
            if not path.is_file():
                raise VoiceNotFoundError(f"voxcpm2 has no voice {voice!r}; use 'auto' (or an OpenAI voice name) or a "
                                         "reference clip", param="voice")
            from voxbox.audio.decode import decode

            return None, decode(path, sample_rate=self.encode_rate, max_duration=MAX_REFERENCE_SECONDS)
        if isinstance(voice, Audio):
            return None, voice
        raise BadInputError(
            "voice must be None, 'auto', an EncodedVoice, an Audio clip or a clip's path", param="voice"
        )

    def _parse(self, text: Any, voice: Any, speed: Any, o: Any) -> _Call:
        text = re.sub(r"\s+", " ", validate_text(text).replace("\n", " "))
        if validate_speed(speed) != 1.0:
            raise UnsupportedOperationError("voxcpm2 has no speed control (speed must be 1.0)", param="speed")
        feats, clip = self._voice(voice)
        d = {k: (getattr(o, k) if getattr(o, k) is not None else v) for k, v in DEFAULTS.items()}
        cap = int(len(self.tokenizer(text)) * 6.0 + 10)  # upstream's length cap (retry_badcase_ratio_threshold)
        params = GenParams(timesteps=int(d["timesteps"]), cfg_value=float(d["cfg_value"]), min_len=int(d["min_len"]),
                           max_len=min(cap, int(d["max_len"])))
        seed = int(o.seed) if o.seed is not None else int.from_bytes(os.urandom(4), "little")
        return _Call(text, feats, clip, params, seed, int(o.first_window_patches or self.first_window),
                     int(o.window_patches or self.window))

    def prompt(self, text: str, feats: torch.Tensor | None) -> Prompt:
        """Upstream's zero-shot or reference ("prompt isolation") input rows."""
        ids = self.tokenizer(text) + [AUDIO_START]
        n, p, d = len(ids), self.net.patch_size, self.net.feat_dim
        tokens = torch.tensor(ids, dtype=torch.long)
        fts = torch.zeros((n, p, d))
        tmask, fmask = torch.ones(n), torch.zeros(n)
        if feats is not None:
            r = feats.shape[0]
            z1 = torch.zeros((1, p, d))
            tokens = torch.cat([torch.tensor([REF_START] + [0] * r + [REF_END], dtype=torch.long), tokens])
            fts = torch.cat([z1, feats.float(), z1, fts])
            tmask = torch.cat([torch.tensor([1.0]), torch.zeros(r), torch.tensor([1.0]), tmask])
            fmask = torch.cat([torch.tensor([0.0]), torch.ones(r), torch.tensor([0.0]), fmask])
        return Prompt(tokens, tmask, fts, fmask)

    # ------------------------------------------------------------------ synthesis
    def stream(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None, *,
               cancel: CancelToken | None = None, **kwargs: Any) -> SpeechStream:
        """Validate, then a lazy stream: patches are generated one by one and decoded in windows
        (``first_window_patches``, then ``window_patches``) by the causal AudioVAE, state carried."""
        from . import VoxCPM2Options

        opts = build_options(VoxCPM2Options, options, **kwargs)
        call = self._parse(text, voice, speed, opts)
        details: dict[str, Any] = {"seed": call.seed, "timesteps": call.params.timesteps}
        token = cancel if cancel is not None else CancelToken()
        return SpeechStream(lambda timings: self._generate(call, timings, details, token), self.sample_rate,
                            cancel=token, details=details)

    def synthesize(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None,
                   **kwargs: Any) -> Audio:
        return self.stream(text, voice, speed, options, **kwargs).collect()

    def _decode(self, dec: Any, patches: list[torch.Tensor]) -> np.ndarray:
        lat = torch.stack(patches)  # (n, patch, dim)
        lat = lat.permute(2, 0, 1).reshape(lat.shape[2], -1)[None].float().to(self.placement["vae"][0])
        return dec.decode_chunk(lat).reshape(-1).float().cpu().numpy()

    def _generate(self, call: _Call, timings: StageTimings, details: dict[str, Any],
                  cancel: CancelToken) -> Iterator[AudioChunk]:
        feats = call.feats
        if call.clip is not None:
            with timings.measure("reference_encode"):
                feats = self.encode_voice(call.clip).data["feats"]
        with timings.measure("prompt"):
            prompt = self.prompt(call.text, feats)
        dev = self.runner.device
        with self._lock, torch.inference_mode(), self.vae.streaming_decode() as dec:
            gen = torch.Generator(device=dev).manual_seed(call.seed)
            patches = self.runner.run(prompt, call.params, gen, cancel.check)
            buf: list[torch.Tensor] = []
            index, total = 0, 0
            while True:
                t0 = time.perf_counter()
                patch = next(patches, None)
                timings.add("sample", time.perf_counter() - t0)
                if patch is not None:
                    buf.append(patch)
                    total += 1
                want = call.first_window if index == 0 else call.window
                if buf and (patch is None or len(buf) >= want):
                    with timings.measure("decode"):
                        audio = self._decode(dec, buf)
                    buf = []
                    details["patches"] = total
                    yield AudioChunk(audio, self.sample_rate, index=index, text=call.text if index == 0 else None)
                    index += 1
                if patch is None:
                    return

    def warmup(self, texts: tuple[str, ...] = ("Hello there.",), **options: Any) -> float:
        t0 = time.perf_counter()
        for text in texts:
            self.synthesize(text, **{"timesteps": 2, "seed": 0, "max_len": 4, **options})
        return time.perf_counter() - t0

    def close(self) -> None:
        self.runner = None  # type: ignore[assignment]
        self.net = None  # type: ignore[assignment]
        self._voices.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
