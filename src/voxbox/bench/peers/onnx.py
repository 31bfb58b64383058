"""ONNX peers on the very same graphs voxbox runs: kokoro-onnx beside ``kokoro``, onnx-asr beside ``parakeet``.

Each peer gets an ONNX Runtime session with the providers and thread count voxbox's target
reported (CUDA execution provider when voxbox ran on a GPU), so the model time is the same and
what differs is the code around it (phonemizing, windowing, features, per-item vs batched TDT
decoding).

* ``kokoro-onnx``: ``kokoro_onnx.Kokoro.from_session(session, voices).create(text, voice)`` (the
  whole text at once; its time to first audio is its total);
* ``onnx-asr``: ``onnx_asr.load_model("nemo-conformer-tdt", DIR).recognize(...)``: the whole clip,
  or, when the call options give ``chunk_length``, windows of that length ``batch_size`` at a time
  (what voxbox's parakeet does with the same options).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from voxbox.bench.peers.base import RunResult, Target

__all__ = ["KokoroOnnx", "OnnxAsr"]


class _OnnxPeer(Target):
    def _session_setup(self) -> tuple[Any, list[Any]]:
        import onnxruntime as ort

        self.device = self.voxbox_device("cpu")
        so = ort.SessionOptions()
        so.log_severity_level = 3
        threads = int(self.threads or self.voxbox.get("threads") or 0)
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
            self.threads = threads
        providers: list[Any] = ["CPUExecutionProvider"]
        if self.device.startswith("cuda"):
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": int(self.device.partition(":")[2] or 0)}))
        self.dtype = "float32"
        return so, providers


class KokoroOnnx(_OnnxPeer):
    task = "tts"
    interleave_with_voxbox = True
    requires = ("kokoro_onnx", "onnxruntime")
    install_hint = "pip install --no-deps kokoro-onnx && pip install phonemizer espeakng-loader"

    def load(self) -> None:
        import kokoro_onnx
        import onnxruntime as ort

        d = Path(self.model_dir("kokoro"))
        so, providers = self._session_setup()
        sess = ort.InferenceSession(str(d / "kokoro-v1.0.onnx"), so, providers=providers)
        self.tts = kokoro_onnx.Kokoro.from_session(sess, str(d / "voices-v1.0.bin"))
        self.voice = str(self.settings.get("voice_name") or self.voxbox.get("voice") or "af_heart")

    def run(self, item: Any, **options: Any) -> RunResult:
        t0 = self.now()
        samples, rate = self.tts.create(str(item), self.voice)
        total = self.now() - t0
        audio = np.asarray(samples, np.float32).reshape(-1)
        return RunResult(total_s=total, audio_s=len(audio) / int(rate), ttfa_s=total, samples=audio,
                         sample_rate=int(rate))


class OnnxAsr(_OnnxPeer):
    task = "asr"
    interleave_with_voxbox = True
    requires = ("onnx_asr", "onnxruntime")
    install_hint = "pip install --no-deps onnx-asr"

    def load(self) -> None:
        import onnx_asr

        so, providers = self._session_setup()
        self.m = onnx_asr.load_model("nemo-conformer-tdt", self.model_dir("parakeet"), sess_options=so,
                                     providers=providers)

    def run(self, item: Any, **options: Any) -> RunResult:
        audio = np.asarray(item, np.float32)
        chunk = options.get("chunk_length")
        t0 = self.now()
        if chunk:
            n = int(float(chunk) * 16000)
            windows = [audio[i:i + n] for i in range(0, max(len(audio), 1), n)]
            batch = int(options.get("batch_size") or 1)
            texts: list[str] = []
            for i in range(0, len(windows), batch):
                out = self.m.recognize(windows[i:i + batch] if batch > 1 else windows[i])
                texts.extend(out if isinstance(out, list) else [out])
            text = " ".join(t.strip() for t in texts)
        else:
            text = str(self.m.recognize(audio))
        total = self.now() - t0
        return RunResult(total_s=total, audio_s=len(audio) / 16000, text=text)
