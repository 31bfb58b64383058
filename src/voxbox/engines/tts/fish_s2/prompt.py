"""What a ``fish-s2`` call becomes before decoding: validated options, the reference voice's codes, the prompt.

``DEFAULTS`` and ``SpeechOptions`` (per-call sampling and streaming options), ``_Call`` (one
parsed call) and ``PromptBuilder``, the half of ``FishS2Engine`` that turns (text, voice, options)
into a ``_Call``: upstream's chat prompt, reference clips encoded to codes once per clip (an LRU
keyed by content hash) and option checks. ``engine`` holds the decode loop that consumes it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from voxbox.engines.base import EncodedVoice, sentence_errors, validate_speed, validate_text
from voxbox.engines.voices import VoiceCache, VoiceCacheStats, clip_digest
from voxbox.errors import BadInputError, UnsupportedOperationError, VoiceNotFoundError
from voxbox.types import Audio

from .codec import Codec
from .config import DualARConfig
from .model import TOPK_WIDTH, DualARRunner

__all__ = ["DEFAULTS", "PromptBuilder", "SpeechOptions"]

ENGINE = "fish-s2"
IM_START, IM_END, VOICE = "<|im_start|>", "<|im_end|>", "<|voice|>"
SYSTEM_PROMPT = "convert the provided text to speech reference to the following:\n\nText:\n"
MAX_REFERENCE_SECONDS = 60.0

#: Per-call defaults (sglang-omni's S2-Pro serving defaults).
DEFAULTS: dict[str, Any] = dict(
    temperature=0.8, top_p=0.8, top_k=30, repetition_penalty=1.1, ras_temperature=1.0, ras_top_p=0.9,
    fast_temperature=0.0, fast_top_p=1.0, max_frames=None, min_frames=0, seed=None, logit_bias=None,
    first_window=None, window=None, context_frames=None, speaker=0,
)


@dataclass(frozen=True)
class SpeechOptions:
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    ras_temperature: float
    ras_top_p: float
    fast_temperature: float
    fast_top_p: float
    max_frames: int
    min_frames: int
    seed: int | None
    bias: dict[int, float]
    first_window: int
    window: int
    context_frames: int
    speaker: int


@dataclass(frozen=True)
class _Call:
    text: str
    ids: torch.Tensor | None  # None while a reference clip still has to be encoded (in the stream)
    vq_mask: torch.Tensor | None
    vq_codes: torch.Tensor | None
    opts: SpeechOptions
    clip: Audio | None = None
    prefix_len: int = 0  # prompt tokens of the voice's system turn (0 without a voice)



class PromptBuilder(VoiceCacheStats):
    """Prompt building, reference voices and option parsing for ``FishS2Engine`` (a mixin: the
    engine's ``__init__`` sets the attributes declared here)."""

    cfg: DualARConfig
    runner: DualARRunner
    codec: Codec
    tokenizer: Any
    model_id: str
    first_window: int
    window: int
    context_frames: int
    _voices: VoiceCache[torch.Tensor]

    # ------------------------------------------------------------------ text
    def _token_id(self, token: str) -> int:
        tid = self.tokenizer.token_to_id(token)
        if tid is None:
            raise BadInputError(f"the tokenizer has no {token!r} token (not a Fish S2 tokenizer?)", param="model")
        return int(tid)

    def _encode(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def build_prompt(self, text: str, codes: torch.Tensor | None, transcript: str | None,
                     speaker: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """Upstream's chat prompt: [system: reference transcript + codes], user: text, assistant: <|voice|>.
        Returns (ids, vq_mask); the reference codes' semantic row becomes <|semantic:i|> tokens."""
        ids, mask, _ = self._prompt(text, codes, transcript, speaker)
        return ids, mask

    def _prompt(self, text: str, codes: torch.Tensor | None, transcript: str | None,
                speaker: int = 0) -> tuple[torch.Tensor, torch.Tensor, int]:
        """(ids, vq_mask, prefix length): the prefix is the system turn (reference transcript and
        codes), the same for every call with one voice (batching reuses its keys/values)."""
        pieces: list[tuple[list[int], bool]] = []

        def add(s: str) -> None:
            pieces.append((self._encode(s), False))

        if codes is not None:
            add(f"{IM_START}system\n")
            add(SYSTEM_PROMPT)
            if transcript:
                add(f"<|speaker:{speaker}|>{transcript}")
            add("\n\nSpeech:\n")
            pieces.append(((codes[0].long() + self.cfg.semantic_start_token_id).tolist(), True))
            add(f"{IM_END}\n")
        prefix = sum(len(p) for p, _ in pieces)
        add(f"{IM_START}user\n")
        add(f"<|speaker:{speaker}|>{text}")
        add(f"{IM_END}\n")
        add(f"{IM_START}assistant\n{VOICE}")
        ids = [i for p, _ in pieces for i in p]
        mask = [m for p, m in pieces for _ in p]
        return torch.tensor(ids, dtype=torch.long), torch.tensor(mask, dtype=torch.bool), prefix

    # ------------------------------------------------------------------ voices
    def encode_voice(self, audio: Audio, transcript: str | None = None) -> EncodedVoice:
        """Reference clip -> codes (1 + residual codebooks, frames), once per clip: an LRU keyed by
        the SHA-256 of (rate, float32 samples). The transcript travels with the voice (it goes in
        the prompt), so one clip with different transcripts shares its codes."""
        if not isinstance(audio, Audio):
            raise BadInputError("reference voice must be an Audio clip", param="voice")
        if transcript is not None and not isinstance(transcript, str):
            raise BadInputError("transcript must be a string", param="transcript")
        self._check_clip(audio)
        digest = clip_digest(audio)

        def encode() -> torch.Tensor:
            samples = audio.samples
            if audio.sample_rate != self.codec.sample_rate:
                from voxbox.audio.resample import resample  # PyAV; imported only when needed

                samples = resample(samples, audio.sample_rate, self.codec.sample_rate)
            x = torch.from_numpy(np.clip(np.ascontiguousarray(samples, np.float32), -1.0, 1.0))
            return self.codec.encode(x).cpu()

        codes = self._voices.get_or_encode(digest, encode)
        return EncodedVoice((ENGINE, self.model_id, digest), {"codes": codes}, transcript, nbytes=codes.numel() * 8)

    # ------------------------------------------------------------------ options
    def _options(self, options: dict[str, Any]) -> SpeechOptions:
        o = {k: (options[k] if options.get(k) is not None else v) for k, v in DEFAULTS.items()}
        try:
            floats = {k: float(o[k]) for k in ("temperature", "top_p", "repetition_penalty", "ras_temperature",
                                               "ras_top_p", "fast_temperature", "fast_top_p")}
            top_k = int(o["top_k"])
            max_frames = self.runner.max_frames if o["max_frames"] is None else int(o["max_frames"])
            min_frames = int(o["min_frames"])
            seed = None if o["seed"] is None else int(o["seed"])
            first = int(o["first_window"] if o["first_window"] is not None else self.first_window)
            window = int(o["window"] if o["window"] is not None else self.window)
            ctx = int(o["context_frames"] if o["context_frames"] is not None else self.context_frames)
            speaker = int(o["speaker"])
        except (TypeError, ValueError) as exc:
            raise BadInputError(f"bad fish-s2 option: {exc}", param="options") from None
        for k, v in floats.items():
            if not math.isfinite(v) or v < 0:
                raise BadInputError(f"{k} must be a finite number >= 0, got {v}", param=k)
        for k in ("top_p", "ras_top_p", "fast_top_p"):
            if not 0 < floats[k] <= 1:
                raise BadInputError(f"{k} must be in (0, 1], got {floats[k]}", param=k)
        if floats["repetition_penalty"] <= 0:
            raise BadInputError("repetition_penalty must be > 0", param="repetition_penalty")
        if not 1 <= top_k <= TOPK_WIDTH:
            raise BadInputError(f"top_k must be between 1 and {TOPK_WIDTH}, got {top_k}", param="top_k")
        if not 1 <= max_frames <= self.runner.max_frames:
            raise BadInputError(
                f"max_frames must be between 1 and {self.runner.max_frames}, got {max_frames}", param="max_frames"
            )
        if min_frames < 0:
            raise BadInputError("min_frames must be >= 0", param="min_frames")
        if first < 1 or window < 1 or ctx < 0:
            raise BadInputError("first_window and window must be >= 1, context_frames >= 0", param="window")
        bias: dict[int, float] = {}
        for tok, b in dict(o["logit_bias"] or {}).items():
            try:
                tid, val = int(tok), float(b)
            except (TypeError, ValueError):
                raise BadInputError(f"bad logit_bias entry {tok!r}: {b!r}", param="logit_bias") from None
            if tid == self.cfg.eos_token_id:
                bias[self.runner.eos] = val
            elif self.cfg.semantic_start_token_id <= tid <= self.cfg.semantic_end_token_id:
                bias[tid - self.cfg.semantic_start_token_id] = val
            else:
                raise BadInputError(
                    f"logit_bias token {tid} is neither a semantic token nor <|im_end|>", param="logit_bias"
                )
        return SpeechOptions(top_k=top_k, max_frames=max_frames, min_frames=min_frames, seed=seed, bias=bias,
                             first_window=first, window=window, context_frames=ctx, speaker=speaker, **floats)

    def _check_clip(self, audio: Audio) -> int:
        """Validate a reference clip; returns the number of code frames it will encode to."""
        if audio.duration > MAX_REFERENCE_SECONDS:
            raise BadInputError(
                f"reference clip lasts {audio.duration:.1f} s; the limit is {MAX_REFERENCE_SECONDS:g} s", param="voice"
            )
        n = math.ceil(audio.duration * self.codec.sample_rate)
        if n < self.codec.frame_length:
            raise BadInputError(f"reference clip is too short ({audio.duration:.3f} s)", param="voice")
        return math.ceil(n / self.codec.frame_length)

    def _parse(self, text: Any, voice: Any, speed: Any, options: dict[str, Any]) -> _Call:
        text = validate_text(text)
        if validate_speed(speed) != 1.0:
            raise UnsupportedOperationError("fish-s2 has no speed control (speed must be 1.0)", param="speed")
        opts = self._options(options)
        clip = None
        if isinstance(voice, str):
            codes = self._voices.get(voice)
            if codes is None:
                raise VoiceNotFoundError(f"fish-s2 has no voice {voice!r}; encode a reference clip with encode_voice()",
                                         param="voice")
            voice = EncodedVoice((ENGINE, self.model_id, voice), {"codes": codes}, None)
        elif isinstance(voice, Audio):
            clip, voice = voice, None  # encoded inside the stream, timed as "voice_encode"
        elif isinstance(voice, EncodedVoice):
            if voice.key[0] != ENGINE or not isinstance(voice.data, dict) or "codes" not in voice.data:
                raise BadInputError(f"voice {voice.key!r} was encoded by another engine", param="voice")
        elif voice is not None:
            raise BadInputError(
                "voice must be None, a cached voice id, an EncodedVoice or an Audio clip", param="voice"
            )
        codes = None
        transcript = None
        if voice is not None:
            codes = voice.data["codes"]
            transcript = voice.transcript
            if codes.ndim != 2 or codes.shape[0] != self.cfg.num_codebooks:
                raise BadInputError(f"voice codes have shape {tuple(codes.shape)}; this model needs "
                                    f"({self.cfg.num_codebooks}, frames)", param="voice")
        if clip is not None:
            n_ref = self._check_clip(clip)
            with sentence_errors(ENGINE, text, "tokenize"):
                ids, mask = self.build_prompt(text, torch.zeros(self.cfg.num_codebooks, n_ref, dtype=torch.long), None,
                                              opts.speaker)
        else:
            with sentence_errors(ENGINE, text, "tokenize"):
                ids, mask, prefix = self._prompt(text, codes, transcript, opts.speaker)
        need = ids.shape[0] + opts.max_frames
        if need > self.runner.max_context:
            room = self.runner.max_context - ids.shape[0]
            if room < 1:
                raise BadInputError(f"prompt of {ids.shape[0]} tokens (text + reference) exceeds the context of "
                                    f"{self.runner.max_context}", param="text")
            opts = SpeechOptions(**{**opts.__dict__, "max_frames": min(opts.max_frames, room)})
        if clip is not None:
            return _Call(text, None, None, None, opts, clip)
        return _Call(text, ids, mask, codes, opts, prefix_len=prefix)
