"""Whisper peers, all given the same weights, audio array and decoding settings as voxbox's row.

* ``faster-whisper-raw``: ``faster_whisper.WhisperModel`` called directly on the same CTranslate2
  directory, device, compute type and threads (measures voxbox's own overhead);
* ``openai-whisper``: the PyTorch reference implementation (fp32 on the CPU) on a checkpoint
  converted from the bundled weights;
* ``whisper.cpp``: via pywhispercpp, on a ggml (f16) file converted from the bundled weights.

Decoding settings come from the scenario's ``asr.settings`` (language, beam size, temperature,
conditioning on previous text) and are mapped to each library's own parameter names.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from voxbox.bench.peers.base import NotInstalled, RunResult, Target

__all__ = ["FasterWhisperRaw", "OpenAIWhisper", "WhisperCpp", "ct2_dir_for"]


def ct2_dir_for(model: str | None, voxbox: dict[str, Any]) -> Path:
    """The CTranslate2 directory voxbox used (from its row), else voxbox's resolution of ``model``."""
    d = voxbox.get("model_dir")
    if d:
        return Path(d)
    from voxbox.engines.asr.faster_whisper import resolve_model_dir

    return resolve_model_dir(model)[1]


class _WhisperPeer(Target):
    task = "asr"

    def _threads(self) -> int:
        return int(self.threads or self.voxbox.get("threads") or os.cpu_count() or 1)

    def _decoding(self) -> dict[str, Any]:
        s = self.settings.get("decoding") or {}
        return {
            "language": s.get("language"),
            "beam_size": int(s.get("beam_size", 5)),
            "temperature": float(s.get("temperature", 0.0)),
            "condition_on_previous_text": bool(s.get("condition_on_previous_text", True)),
        }


class FasterWhisperRaw(_WhisperPeer):
    interleave_with_voxbox = True  # measures voxbox's overhead: runs alternate with voxbox's
    requires = ("faster_whisper", "ctranslate2")
    install_hint = "pip install faster-whisper"

    def load(self) -> None:
        from faster_whisper import WhisperModel

        self.device = str(self.voxbox.get("device", "cpu")).split(":")[0]
        self.dtype = self.voxbox.get("dtype") or ("float16" if self.device == "cuda" else "int8")
        self.threads = self._threads()
        path = ct2_dir_for(self.model, self.voxbox)
        self.m = WhisperModel(
            str(path), device=self.device, compute_type=self.dtype, cpu_threads=self.threads, local_files_only=True
        )
        self.extra["model_dir"] = str(path)

    def run(self, item: Any, **options: Any) -> RunResult:
        d = self._decoding()
        t0 = self.now()
        segments, _info = self.m.transcribe(
            np.asarray(item, np.float32),
            language=d["language"],
            beam_size=d["beam_size"],
            temperature=d["temperature"],
            condition_on_previous_text=d["condition_on_previous_text"],
        )
        text = " ".join(s.text.strip() for s in segments)
        total = self.now() - t0
        return RunResult(total_s=total, audio_s=len(item) / 16000, text=text)


class OpenAIWhisper(_WhisperPeer):
    requires = ("whisper", "torch", "tiktoken")
    install_hint = "pip install --no-deps openai-whisper && pip install tiktoken numba more-itertools"

    def check(self) -> None:
        super().check()
        import importlib.util

        if importlib.util.find_spec("whisper.transcribe") is None:  # a different package named 'whisper'
            raise NotInstalled("not installed: the importable 'whisper' is not openai-whisper")

    def load(self) -> None:
        import torch
        import whisper

        from voxbox.bench.peers.convert import ensure_openai_checkpoint

        self.threads = self._threads()
        torch.set_num_threads(self.threads)
        ckpt = ensure_openai_checkpoint(ct2_dir_for(self.model, self.voxbox))
        self.m = whisper.load_model(str(ckpt), device="cpu")
        self.device, self.dtype = "cpu", "float32"
        self.extra["checkpoint"] = str(ckpt)

    def run(self, item: Any, **options: Any) -> RunResult:
        d = self._decoding()
        t0 = self.now()
        result = self.m.transcribe(
            np.asarray(item, np.float32),
            language=d["language"],
            beam_size=d["beam_size"],
            temperature=d["temperature"],
            condition_on_previous_text=d["condition_on_previous_text"],
            fp16=False,
            verbose=None,
        )
        text = " ".join(s["text"].strip() for s in result["segments"])
        total = self.now() - t0
        return RunResult(total_s=total, audio_s=len(item) / 16000, text=text)


class WhisperCpp(_WhisperPeer):
    requires = ("pywhispercpp",)
    install_hint = "pip install --no-deps pywhispercpp && pip install openai-whisper's assets (see peers/convert.py)"

    def load(self) -> None:
        from pywhispercpp.model import Model

        from voxbox.bench.peers.convert import ensure_ggml

        d = self._decoding()
        self.threads = self._threads()
        ggml = ensure_ggml(ct2_dir_for(self.model, self.voxbox))
        beam = d["beam_size"] > 1
        self.m = Model(
            str(ggml),
            params_sampling_strategy=1 if beam else 0,
            redirect_whispercpp_logs_to=None,
            n_threads=self.threads,
            print_progress=False,
            print_realtime=False,
            language=d["language"] or "",
            no_context=not d["condition_on_previous_text"],
            temperature=d["temperature"],
            temperature_inc=0.0 if d["temperature"] == 0.0 else 0.2,
            beam_search={"beam_size": d["beam_size"], "patience": -1.0},
        )
        self.device, self.dtype = "cpu", "float16"
        self.extra["ggml"] = str(ggml)

    def run(self, item: Any, **options: Any) -> RunResult:
        t0 = self.now()
        segments = self.m.transcribe(np.asarray(item, np.float32))
        text = " ".join(s.text.strip() for s in segments)
        total = self.now() - t0
        return RunResult(total_s=total, audio_s=len(item) / 16000, text=text)
