"""Verify a conversion: transcribe the same audio with the source and the converted model.

Source: the torch-whisper engine on the Hugging Face checkpoint (transformers ``generate`` when
torch-whisper cannot be imported). Target: the faster-whisper engine (``--to ct2``) or the
onnx-whisper engine (``--to onnx``). Both decode greedily (beam 1, temperature 0, no conditioning
on previous text, no no-speech skipping) so the only difference left is the conversion itself.

Reported: word error rate of the target against the source (corpus-level over all files, after
Whisper's English normaliser, :mod:`voxbox.text.scoring`), wall time and real-time factor of each
side (after one warm-up call), relative speed, and size on disk.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from voxbox.errors import BadInputError, ModelLoadError, VoxboxError
from voxbox.text.scoring import wer  # the one WER (Whisper's English normaliser); re-exported
from voxbox.types import Audio

__all__ = ["VerificationFailedError", "VerifyReport", "default_verify_audio", "verify", "wer"]

SAMPLE_RATE = 16000


class VerificationFailedError(VoxboxError):
    """The converted model's transcripts differ from the source's by more than ``--max-wer``."""

    code = "verification_failed"


def default_verify_audio() -> list[Path]:
    """The bundled human recordings (moonshine-voice assets) used when no --verify-audio is given."""
    import importlib.util

    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        raise BadInputError("no verification audio: moonshine-voice is not installed; pass --verify-audio FILE "
                            "or --no-verify", param="verify_audio")
    assets = Path(next(iter(spec.submodule_search_locations))) / "assets"
    files = [assets / n for n in ("beckett.wav", "two_cities.wav") if (assets / n).is_file()]
    if not files:
        raise BadInputError(f"no verification audio in {assets}; pass --verify-audio FILE or --no-verify",
                            param="verify_audio")
    return files


@dataclass
class SideResult:
    engine: str
    model: str
    device: str
    dtype: str | None
    texts: list[str] = field(default_factory=list)
    seconds: float = 0.0
    audio_seconds: float = 0.0
    size_bytes: int = 0

    @property
    def rtf(self) -> float:
        return self.seconds / self.audio_seconds if self.audio_seconds else 0.0


@dataclass
class VerifyReport:
    files: list[str]
    source: SideResult
    target: SideResult
    wer: float
    max_wer: float
    per_file_wer: list[float]

    @property
    def passed(self) -> bool:
        return self.wer <= self.max_wer

    @property
    def speedup(self) -> float:
        return self.source.seconds / self.target.seconds if self.target.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        d = {
            "files": self.files, "wer": round(self.wer, 4), "max_wer": self.max_wer, "passed": self.passed,
            "per_file_wer": [round(w, 4) for w in self.per_file_wer], "speedup": round(self.speedup, 3),
        }
        for side in ("source", "target"):
            r: SideResult = getattr(self, side)
            d[side] = {**{k: v for k, v in asdict(r).items() if k != "texts"}, "rtf": round(r.rtf, 4),
                       "seconds": round(r.seconds, 3), "texts": r.texts}
        return d


# -- transcribers ------------------------------------------------------------------------------

_GREEDY = {"beam_size": 1, "temperature": 0.0, "condition_on_previous_text": False, "no_speech_threshold": None}


def _engine_runner(engine: Any, options: dict[str, Any]) -> Callable[[Audio], str]:
    def run(audio: Audio) -> str:
        segments, _ = engine.transcribe(audio, **options)
        return "".join(s.text for s in segments).strip()

    return run


def _window_limit(src: Path) -> dict[str, Any]:
    """``max_new_tokens`` for models with fewer than Whisper's 448 decoder positions (tiny test models);
    real checkpoints keep every engine's default (224 tokens per window)."""
    import json

    try:
        n_ctx = int(json.loads((src / "config.json").read_text()).get("max_target_positions", 448))
    except (OSError, ValueError):
        return {}
    return {"max_new_tokens": n_ctx // 2} if n_ctx < 448 else {}


def _source_runner(
    src: Path, device: str, limit: dict[str, Any]
) -> tuple[Callable[[Audio], str], str, str, str, Callable[[], None]]:
    """(transcribe fn, engine name, device, dtype, close) for the source checkpoint."""
    tw_load: Callable[..., Any] | None
    try:
        from voxbox.engines.asr.torch_whisper.engine import load as tw_load
    except ImportError:
        tw_load = None
    if tw_load is not None:
        engine = tw_load(str(src), device=device if device != "auto" else "cpu", dtype="float32", use_graphs=False)
        return (
            _engine_runner(engine, dict(_GREEDY, **limit)), "torch-whisper", engine.info.device, "float32",
            engine.close,
        )
    return _hf_runner(src, device, limit)


def _hf_runner(src: Path, device: str, limit: dict[str, Any]):
    """transformers ``generate`` (sequential long-form with timestamps) as the source reference."""
    import torch

    from voxbox.convert.onnx_export import load_hf_whisper
    from voxbox.engines.asr.whisper.features import CHUNK_FRAMES, log_mel, pad_or_trim

    model = load_hf_whisper(src)
    # English-only models have 51864 entries; a converted checkpoint may still carry a multilingual
    # generation config, which would make generate() prompt an .en model with language tokens
    multilingual = model.config.vocab_size >= 51865
    model.generation_config.is_multilingual = multilingual
    if not multilingual:
        for key in ("lang_to_id", "task_to_id"):
            if hasattr(model.generation_config, key):
                delattr(model.generation_config, key)
    dev = torch.device("cuda" if device.startswith("cuda") and torch.cuda.is_available() else "cpu")
    model.to(dev)
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(src / "tokenizer.json"))
    eot = tok.token_to_id("<|endoftext|>")
    if eot is None:
        raise ModelLoadError(f"{src / 'tokenizer.json'} has no <|endoftext|> token")

    def run(audio: Audio) -> str:
        mel = log_mel(audio.samples, model.config.num_mel_bins)
        frames = mel.shape[-1]
        mel = pad_or_trim(mel, max(frames, CHUNK_FRAMES))
        feats = torch.from_numpy(mel[None]).to(dev)
        kwargs: dict[str, Any] = dict(return_timestamps=True, condition_on_prev_tokens=False, temperature=0.0,
                                      do_sample=False, num_beams=1, **limit)
        if frames > CHUNK_FRAMES:
            kwargs["attention_mask"] = torch.ones(1, frames, dtype=torch.long, device=dev)
        if multilingual:
            kwargs["task"] = "transcribe"
        with torch.no_grad():
            out = model.generate(input_features=feats, **kwargs)
        seq = out["sequences"] if isinstance(out, dict) else out
        ids = [int(i) for i in seq[0].tolist() if int(i) < eot]
        return tok.decode(ids).strip()

    return run, "transformers", str(dev), "float32", lambda: None


def _ct2_compute_type(quantization: str, device: str) -> str:
    if device.startswith("cuda"):
        return quantization
    return "int8" if quantization.startswith("int8") else "float32"


def _target_runner(target: str, out: Path, quantization: str, device: str, limit: dict[str, Any]):
    from voxbox.engines import registry

    if target == "ct2":
        dtype = _ct2_compute_type(quantization, device)
        engine = registry.load_engine("faster-whisper", str(out), device=device if device != "auto" else "cpu",
                                      dtype=dtype)
        opts = dict(_GREEDY, vad_filter=False, **limit)
        return _engine_runner(engine, opts), "faster-whisper", engine.info.device, engine.info.dtype, engine.close
    if target == "ggml":
        engine = registry.load_engine("whisper-cpp", str(out), device=device)
        return (_engine_runner(engine, {"temperature": 0.0, "temperature_increment": 0.0}), "whisper-cpp",
                engine.info.device, engine.info.dtype, engine.close)
    engine = registry.load_engine("onnx-whisper", str(out), device=device)
    return _engine_runner(engine, dict(limit)), "onnx-whisper", engine.info.device, engine.info.dtype, engine.close


def _load_audio(paths: list[Path]) -> list[Audio]:
    from voxbox.audio.decode import decode

    out = []
    for p in paths:
        if not Path(p).is_file():
            raise BadInputError(f"verification audio {p} does not exist", param="verify_audio")
        out.append(decode(str(p), sample_rate=SAMPLE_RATE, max_duration=None))
    return out


def _run_side(runner: Callable[[Audio], str], audios: list[Audio]) -> tuple[list[str], float]:
    runner(Audio(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE))  # warm-up: graph init, allocator, caches
    texts = []
    t0 = time.perf_counter()
    for a in audios:
        texts.append(runner(a))
    return texts, time.perf_counter() - t0


def verify(src: Path, out: Path, *, target: str, quantization: str, audio_files: list[Path] | None = None,
           max_wer: float = 0.05, device: str = "cpu", source_size: int = 0, target_size: int = 0,
           log: Callable[[str], None] | None = None) -> VerifyReport:
    files = list(audio_files) if audio_files else default_verify_audio()
    audios = _load_audio(files)
    total = sum(a.duration for a in audios)
    say = log or (lambda _m: None)

    say("verify: transcribing with the source checkpoint")
    limit = _window_limit(src)
    run, name, dev, dtype, close = _source_runner(src, device, limit)
    try:
        s_texts, s_secs = _run_side(run, audios)
    finally:
        close()
    source = SideResult(name, str(src), dev, dtype, s_texts, s_secs, total, source_size)

    say("verify: transcribing with the converted model")
    run, name, dev, dtype, close = _target_runner(target, out, quantization, device, limit)
    try:
        t_texts, t_secs = _run_side(run, audios)
    finally:
        close()
    tgt = SideResult(name, str(out), dev, dtype, t_texts, t_secs, total, target_size)
    per_file = [wer([r], [h]) for r, h in zip(s_texts, t_texts, strict=True)]
    return VerifyReport([str(f) for f in files], source, tgt, wer(s_texts, t_texts), max_wer, per_file)
