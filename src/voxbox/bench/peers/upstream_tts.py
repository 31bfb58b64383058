"""Upstream inference APIs of the local-weights TTS models, beside voxbox's engine on the same weights.

* ``omnivoice-upstream``: ``omnivoice.OmniVoice.from_pretrained(DIR).generate(text, num_step=N)``
  (k2-fsa's own path: transformers' Qwen3 and Higgs audio tokenizer, pydub clean-up), float16 on a
  GPU as upstream's CLI loads it, float32 on the CPU; the same seed per call as voxbox's runs.

Upstream returns the whole clip, so its time to first audio is its total time. Runs alternate with
voxbox's (``interleave_with_voxbox``), so both see the same machine state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voxbox.bench.peers.base import NotInstalled, RunResult, Target

__all__ = ["OmniVoiceUpstream"]


class OmniVoiceUpstream(Target):
    task = "tts"
    interleave_with_voxbox = True
    requires = ("omnivoice", "torchaudio", "transformers", "accelerate", "pydub", "soundfile")
    install_hint = "pip install --no-deps omnivoice && pip install torchaudio accelerate pydub soundfile"

    def load(self) -> None:
        if not self.model:
            raise NotInstalled("skipped: omnivoice-upstream needs the same local model directory as voxbox")
        import torch
        from omnivoice import OmniVoice

        vox = self.settings.get("voxbox") or {}
        device = str(vox.get("device") or "cpu")
        cuda = device.startswith("cuda")
        self.device = device
        self.dtype = "float16" if cuda else "float32"
        kwargs: dict[str, Any] = {"dtype": torch.float16 if cuda else torch.float32}
        if cuda:
            kwargs["device_map"] = device
        self.tts = OmniVoice.from_pretrained(str(self.model), **kwargs).eval()
        self.rate = int(self.tts.sampling_rate)

    def run(self, item: Any, **options: Any) -> RunResult:
        import torch

        steps = options.get("steps") or 32
        t0 = self.now()
        torch.manual_seed(0)
        audio = np.asarray(self.tts.generate(str(item), num_step=int(steps))[0], np.float32)
        total = self.now() - t0
        return RunResult(total_s=total, audio_s=len(audio) / self.rate, ttfa_s=total, samples=audio,
                         sample_rate=self.rate)
