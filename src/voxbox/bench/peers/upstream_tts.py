"""Upstream inference APIs of the local-weights TTS models, beside voxbox's engine on the same weights.

* ``omnivoice-upstream``: ``omnivoice.OmniVoice.from_pretrained(DIR).generate(text, num_step=N)``
  (k2-fsa's own path: transformers' Qwen3 and Higgs audio tokenizer, pydub clean-up), float16 on a
  GPU as upstream's CLI loads it, float32 on the CPU; the same seed per call as voxbox's runs.

* ``voxcpm2-upstream``: ``voxcpm.model.voxcpm2.VoxCPM2Model.from_local(DIR).generate_with_prompt_cache(
  text, inference_timesteps=N)`` (OpenBMB's model class, eager; ``retry_badcase`` off so a random stop
  head cannot re-run the loop), in the model's configured dtype, AudioVAE in float32.

Upstream returns the whole clip, so its time to first audio is its total time. Runs alternate with
voxbox's (``interleave_with_voxbox``), so both see the same machine state.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from voxbox.bench.peers.base import NotInstalled, RunResult, Target

__all__ = ["OmniVoiceUpstream", "VoxCPM2Upstream"]


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


class VoxCPM2Upstream(Target):
    task = "tts"
    interleave_with_voxbox = True
    requires = ("voxcpm", "transformers", "einops", "pydantic", "librosa", "torchaudio")
    install_hint = "pip install --no-deps voxcpm && pip install einops pydantic librosa torchaudio tqdm"

    def load(self) -> None:
        if not self.model:
            raise NotInstalled("skipped: voxcpm2-upstream needs the same local model directory as voxbox")
        from voxcpm.model.voxcpm2 import VoxCPM2Model

        vox = self.settings.get("voxbox") or {}
        self.device = str(vox.get("device") or "cpu")
        self.tts = VoxCPM2Model.from_local(str(self.model), optimize=False, device=self.device)
        self.dtype = str(self.tts.config.dtype)
        self.rate = int(self.tts.sample_rate)

    def run(self, item: Any, **options: Any) -> RunResult:
        import torch

        steps = options.get("steps") or 10
        t0 = self.now()
        torch.manual_seed(0)
        wav, _, _ = self.tts.generate_with_prompt_cache(target_text=str(item), prompt_cache=None,
                                                        inference_timesteps=int(steps), retry_badcase=False)
        total = self.now() - t0
        audio = wav.reshape(-1).float().cpu().numpy()
        return RunResult(total_s=total, audio_s=len(audio) / self.rate, ttfa_s=total, samples=audio,
                         sample_rate=self.rate)
