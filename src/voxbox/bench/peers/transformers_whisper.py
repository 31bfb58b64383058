"""transformers ``generate`` beside torch-whisper, on the very same checkpoint directory.

* ``transformers-generate``: ``WhisperForConditionalGeneration.generate`` with SDPA attention and
  the default (dynamic) KV cache: what a transformers user runs;
* ``transformers-generate-static``: the same with ``cache_implementation="static"`` (a
  pre-allocated cache; recent transformers also compiles the decoder step for it on the first
  call, which lands in the warm-up).

fp16 on a GPU, fp32 on the CPU. The clip is cut into 30 s windows, ``batch_size`` at a time (the
call option torch-whisper's batched mode takes); ``max_new_tokens`` becomes both
``min_new_tokens`` and ``max_new_tokens``, so with random weights (whose end-of-text is
suppressed, :mod:`voxbox.bench.shapes.whisper`) both sides decode the same number of tokens per
window. Greedy (``num_beams`` = ``beam_size``, default 1). Stages: ``features`` (the feature
extractor, on the device where transformers supports it) and ``generate``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voxbox.bench.peers.base import RunResult, Target

__all__ = ["TransformersGenerate", "TransformersGenerateStatic"]

WINDOW = 30 * 16000


class TransformersGenerate(Target):
    task = "asr"
    requires = ("transformers", "torch")
    install_hint = "pip install transformers torch"
    cache_implementation: str | None = None

    def load(self) -> None:
        import torch
        from transformers import WhisperFeatureExtractor, WhisperForConditionalGeneration

        path = self.model_dir("torch-whisper")
        self.device = self.voxbox_device("cpu")
        cuda = self.device.startswith("cuda")
        self.torch_dtype = torch.float16 if cuda else torch.float32
        self.dtype = "float16" if cuda else "float32"
        if self.threads and not cuda:
            torch.set_num_threads(int(self.threads))
        self.m = WhisperForConditionalGeneration.from_pretrained(path, dtype=self.torch_dtype,
                                                                 attn_implementation="sdpa").to(self.device).eval()
        self.fe = WhisperFeatureExtractor.from_pretrained(path)
        self.multilingual = bool(getattr(self.m.generation_config, "is_multilingual", False))
        self.extra.update(model_dir=path, cache=self.cache_implementation or "dynamic")

    def _generate_kwargs(self, options: dict[str, Any]) -> dict[str, Any]:
        kw: dict[str, Any] = {"do_sample": False, "num_beams": int(options.get("beam_size") or 1)}
        n = options.get("max_new_tokens")
        if n:
            kw.update(max_new_tokens=int(n), min_new_tokens=int(n))
        language = (self.settings.get("decoding") or {}).get("language")
        if language and self.multilingual:
            kw.update(language=language, task="transcribe")
        if self.cache_implementation:
            kw["cache_implementation"] = self.cache_implementation
        return kw

    def _features(self, windows: list[np.ndarray]) -> Any:
        try:
            feats = self.fe(windows, sampling_rate=16000, return_tensors="pt", device=self.device).input_features
        except TypeError:  # an older feature extractor without device=
            feats = self.fe(windows, sampling_rate=16000, return_tensors="pt").input_features
        return feats.to(self.device, self.torch_dtype)

    def run(self, item: Any, **options: Any) -> RunResult:
        import torch

        audio = np.asarray(item, np.float32)
        windows = [audio[i:i + WINDOW] for i in range(0, max(len(audio), 1), WINDOW)]
        batch = int(options.get("batch_size") or 1)
        kw = self._generate_kwargs(options)
        stages = {"features": 0.0, "generate": 0.0}
        tokens = 0
        t0 = self.now()
        with torch.inference_mode():
            for i in range(0, len(windows), batch):
                s0 = self.now()
                feats = self._features(windows[i:i + batch])
                s1 = self.now()
                out = self.m.generate(feats, **kw)
                s2 = self.now()
                stages["features"] += s1 - s0
                stages["generate"] += s2 - s1
                tokens += int(out.shape[0] * out.shape[-1])
        total = self.now() - t0
        return RunResult(total_s=total, audio_s=len(audio) / 16000, stages=stages,
                         details={"tokens": float(tokens), "windows": float(len(windows))})


class TransformersGenerateStatic(TransformersGenerate):
    cache_implementation = "static"
