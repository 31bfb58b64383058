"""The ``fish-s2`` engine object: streamed decode (one call at a time or batched), warm-up, close.

``FishS2Engine`` runs the dual-AR loop and decodes audio in windows while it goes on; turning a
call into a prompt (options, reference voices and their code cache, the chat template) is the
``PromptBuilder`` half it inherits from ``prompt``.
"""

from __future__ import annotations

import hashlib
import secrets
import threading
import time
from typing import Any, Iterator

import numpy as np
import torch

from voxbox.engines.base import Batchable, SpeechStream, VoiceArg
from voxbox.engines.spec import build_options
from voxbox.engines.voices import VoiceCache
from voxbox.types import Audio, AudioChunk, CancelToken, ComponentSpec, EngineInfo, StageTimings

from .codec import Codec, DecodeGraphs
from .config import DualARConfig
from .model import DualARRunner
from .prompt import ENGINE, IM_END, IM_START, VOICE, PromptBuilder, _Call

__all__ = ["FishS2Engine"]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class FishS2Engine(PromptBuilder, Batchable):
    """Fish S2-Pro: dual-AR (slow + fast transformers) -> codes -> codec, streamed in windows.

    Built by ``load()``. ``placement`` maps ``slow_ar``, ``fast_ar`` and ``codec`` to (device,
    dtype); the two transformers share a device (they share the codebook embeddings and exchange
    a hidden state every frame), the codec may sit anywhere (e.g. on the CPU).
    """

    def __init__(self, cfg: DualARConfig, runner: DualARRunner, codec: Codec, tokenizer: Any, *, model_id: str,
                 placement: dict[str, tuple[torch.device, torch.dtype]], params: dict[str, int],
                 max_voices: int = 32, first_window: int = 4, window: int = 32, context_frames: int = 48,
                 eos_check: int = 4, random_weights: bool = False, batch_capture: bool = True,
                 codec_overlap: bool = False) -> None:
        self.cfg = cfg
        self.runner = runner
        self.codec = codec
        self.codec_graphs = DecodeGraphs(codec)  # shared with the batcher (one lock, one memory pool)
        self.tokenizer = tokenizer
        self.model_id = model_id
        self.placement = dict(placement)
        self._params = dict(params)
        self.first_window, self.window, self.context_frames = int(first_window), int(window), int(context_frames)
        self.eos_check = max(1, int(eos_check))
        self._voices: VoiceCache[torch.Tensor] = VoiceCache(max_voices)
        self._lock = threading.Lock()
        self._scheduler: Any = None  # set by the runtime when it batches this model's calls
        self._batch_capture = bool(batch_capture)
        self._codec_overlap = bool(codec_overlap)
        self._special = {t: self._token_id(t) for t in (IM_START, IM_END, VOICE)}
        dev, dt = placement["slow_ar"]
        self.info = EngineInfo(
            name=ENGINE, task="tts", model=model_id, device=str(dev), dtype=str(dt).replace("torch.", ""),
            sample_rate=codec.sample_rate, voices=(), default_voice=None, languages=(), supports_cloning=True,
            max_concurrency=1,
            extra={"placement": {k: (str(d), str(t).replace("torch.", "")) for k, (d, t) in self.placement.items()},
                   "cuda_graphs": runner.use_graphs, "compiled_ops": runner.ops.compiled,
                   "compile_error": runner.compile_error, "frame_rate": codec.config.frame_rate,
                   "max_frames": runner.max_frames, "max_context": runner.max_context,
                   "random_weights": bool(random_weights)},
        )

    # ------------------------------------------------------------------ planner
    def components(self) -> list[ComponentSpec]:
        t = self.cfg.text
        kv = 2 * t.n_layer * t.n_local_heads * t.head_dim * self.runner.max_context
        return [
            ComponentSpec(name="slow_ar", params=self._params["slow_ar"], devices=("cuda", "rocm", "cpu"),
                          dtypes=("bfloat16", "float16", "float32"), backend="torch", kind="transformer",
                          overhead_bytes=kv * 2),
            ComponentSpec(name="fast_ar", params=self._params["fast_ar"], devices=("cuda", "rocm", "cpu"),
                          dtypes=("bfloat16", "float16", "float32"), backend="torch", kind="transformer"),
            ComponentSpec(name="codec", params=self._params["codec"], devices=("cuda", "rocm", "cpu"),
                          dtypes=("float32", "bfloat16", "float16"), backend="torch", kind="vocoder"),
        ]
    # ------------------------------------------------------------------ synthesis
    def stream(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None, *,
               cancel: CancelToken | None = None, **kwargs: Any) -> SpeechStream:
        """Validate, then return a lazy stream. Generation starts at the first ``next()``; audio is
        decoded in windows (``first_window`` frames, then ``window``) while the AR loop goes on.
        ``stream.details`` gets ``first_audio_s`` (a point in time from the first ``next()``, not
        a stage), ``frames``, ``ms_per_frame``, ``finish_reason`` and the generated ``codes``."""
        from . import FishOptions

        call = self._parse(text, voice, speed, build_options(FishOptions, options, **kwargs).given())
        details: dict[str, Any] = {}
        token = cancel if cancel is not None else CancelToken()
        sched = self._scheduler
        if sched is not None:
            return SpeechStream(lambda timings: self._generate_batched(sched, call, timings, details, token),
                                self.codec.sample_rate, cancel=token, details=details)
        return SpeechStream(lambda timings: self._generate(call, timings, details), self.codec.sample_rate,
                            cancel=token, details=details)

    def synthesize(self, text: str, voice: VoiceArg = None, speed: float | None = None, options: Any = None,
                   **kwargs: Any) -> Audio:
        return self.stream(text, voice, speed, options, **kwargs).collect()

    def _generate(self, call: _Call, timings: StageTimings, details: dict[str, Any]) -> Iterator[AudioChunk]:
        with self._lock:
            yield from self._generate_locked(call, timings, details)

    # ------------------------------------------------------------------ batching across requests
    def batcher(self, config: Any) -> Any:
        """The runtime's scheduler drives this (``voxbox.runtime.batching``): rows for at most
        ``config.max_batch`` utterances, fewer if the device's free memory holds fewer KV caches."""
        from voxbox.hardware.memory import batch_slots

        from .batch import BatchRunner
        from .batcher import FishBatcher

        slots = int(config.max_batch)
        dev = self.runner.device
        if dev.type == "cuda":
            free, total = torch.cuda.mem_get_info(dev)
            slots = batch_slots(BatchRunner.slot_bytes(self.runner), free, total, cap=slots)
        return FishBatcher(self, slots, capture=self._batch_capture, codec_overlap=self._codec_overlap)

    def _generate_batched(self, sched: Any, call: _Call, timings: StageTimings, details: dict[str, Any],
                          cancel: CancelToken) -> Iterator[AudioChunk]:
        from voxbox.engines.batched import relay

        from .batcher import FishRequest

        start = time.perf_counter()
        o = call.opts
        if call.clip is not None:
            with timings.measure("voice_encode"):
                voice = self.encode_voice(call.clip)
                ids, mask, prefix = self._prompt(call.text, voice.data["codes"], None, o.speaker)
                call = _Call(call.text, ids, mask, voice.data["codes"], o, prefix_len=prefix)
        prompt_ids = call.ids
        assert prompt_ids is not None  # a reference clip was encoded into the prompt above
        key = None
        if call.prefix_len and call.vq_codes is not None:
            h = hashlib.sha256(prompt_ids[:call.prefix_len].numpy().tobytes())
            h.update(np.ascontiguousarray(call.vq_codes.numpy()).tobytes())
            key = h.hexdigest()
        seed = o.seed if o.seed is not None else secrets.randbits(62)
        details["prompt_tokens"] = int(prompt_ids.shape[0])
        req = FishRequest(call, int(seed), key, time.perf_counter())
        yield from relay(sched.submit(req, cancel), timings, details, started=start)

    def _generate_locked(self, call: _Call, timings: StageTimings, details: dict[str, Any]) -> Iterator[AudioChunk]:
        """Prefill, then decode windows of frames and yield each window's audio (long: one generator
        whose loop state (frames made, checked, emitted) would otherwise be passed around)."""
        r, o = self.runner, call.opts
        ar_dev = self.placement["slow_ar"][0]
        codec_dev = self.placement["codec"][0]
        start = time.perf_counter()
        if call.clip is not None:
            with timings.measure("voice_encode"):
                voice = self.encode_voice(call.clip)
                ids, mask = self.build_prompt(call.text, voice.data["codes"], None, o.speaker)
                call = _Call(call.text, ids, mask, voice.data["codes"], o)
        prompt_ids, vq_mask = call.ids, call.vq_mask
        assert prompt_ids is not None and vq_mask is not None  # a reference clip was encoded above
        with timings.measure("prefill"):
            if o.seed is not None:
                torch.manual_seed(o.seed)
            r.set_options(temperature=o.temperature, top_p=o.top_p, top_k=o.top_k,
                          repetition_penalty=o.repetition_penalty, ras_temperature=o.ras_temperature,
                          ras_top_p=o.ras_top_p, fast_temperature=o.fast_temperature, fast_top_p=o.fast_top_p,
                          min_frames=o.min_frames, bias=o.bias)
            r.prefill(prompt_ids, vq_mask, call.vq_codes)
            _sync(ar_dev)
        made, checked, emitted, stop, index = 1, 0, 0, None, 0
        decode_s = 0.0
        window = o.first_window
        codes_host: list[torch.Tensor] = []
        while True:
            t0 = time.perf_counter()
            target = min(emitted + window, o.max_frames)
            while stop is None and checked < target:
                upto = min(target, checked + self.eos_check)
                while made < upto:
                    r.step(made)
                    made += 1
                sem = r.sem_out[checked:upto].cpu()  # waits for the device
                hit = (sem == r.eos).nonzero()
                if hit.numel():
                    stop = checked + int(hit[0, 0])
                checked = upto
            end = stop if stop is not None else checked
            dt = time.perf_counter() - t0
            decode_s += dt
            timings.add("decode", dt)
            if end > emitted:
                with timings.measure("codec"):
                    a = max(0, emitted - o.context_frames)
                    codes = r.codes_out[a:end].T.contiguous()
                    codes_host.append(codes[:, emitted - a:].cpu())
                    wave = self.codec_graphs.decode(codes.to(codec_dev)[None])[0]  # left context, then new frames
                    audio = wave[wave.shape[0] - (end - emitted) * self.codec.frame_length:].cpu().numpy()
                if index == 0:
                    details["first_audio_s"] = time.perf_counter() - start
                details["frames"] = end
                yield AudioChunk(audio, self.codec.sample_rate, index=index, text=call.text if index == 0 else None)
                index += 1
                emitted = end
            if stop is not None or checked >= o.max_frames:
                break
            window = o.window
        details["frames"] = emitted
        details["finish_reason"] = "eos" if stop is not None else "max_frames"
        details["codes"] = (
            torch.cat(codes_host, 1) if codes_host else torch.zeros(self.cfg.num_codebooks, 0, dtype=torch.long)
        )
        details["ms_per_frame"] = 1000.0 * decode_s / max(1, checked - 1)
        details["prompt_tokens"] = int(prompt_ids.shape[0])

    def warmup(self) -> float:
        """Capture the CUDA graphs (every attention bucket) and run one short call."""
        t0 = time.perf_counter()
        self.runner.capture_all()
        self.synthesize("Hello.", max_frames=min(4, self.runner.max_frames))
        return time.perf_counter() - t0

    def close(self) -> None:
        if self._scheduler is not None:
            self._scheduler.close()
            self._scheduler = None
        self.runner = None  # type: ignore[assignment]
        self.codec = None  # type: ignore[assignment]
        self._voices.clear()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
