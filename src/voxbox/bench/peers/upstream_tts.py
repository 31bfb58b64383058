"""Upstream inference APIs of the local-weights TTS models, beside voxbox's engine on the same files.

* ``echo-tts-upstream`` / ``echo-tts-upstream-compiled``: ``echo_tts.inference.EchoTTS(model_path=
  DIR, compile=False|True).synthesize(text, num_steps=N)`` (bfloat16 on a GPU as upstream runs it;
  upstream builds its DiT from hard-coded real shapes, so only ``random:real`` or real weights
  load). Upstream samples ``sequence_length`` positions (640 unless the call option says).
* ``omnivoice-upstream``: ``omnivoice.OmniVoice.from_pretrained(DIR).generate(text, num_step=N)``
  (k2-fsa's own path), float16 on a GPU as upstream's CLI loads it, float32 on the CPU.
* ``voxcpm2-upstream`` / ``voxcpm2-upstream-compiled``: ``VoxCPM2Model.from_local(DIR,
  optimize=False|True).generate_with_prompt_cache(text, inference_timesteps=N, min_len, max_len)``
  (``optimize=True``: upstream's own torch.compile of its LM steps, encoder and DiT;
  ``retry_badcase`` off so a random stop head cannot re-run the loop).

Call options are mapped to upstream's names (steps / timesteps, seed, voice_description,
min_len / max_len, sequence_length); the same seed per call as voxbox's runs. Upstream returns
the whole clip, so its time to first audio is its total time. Runs alternate with voxbox's
(``interleave_with_voxbox``). Modules upstream imports only to read audio files (torchaudio,
librosa) are replaced by empty stand-ins when they do not import (recorded in ``extra``): the
bench never gives upstream a file.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

import numpy as np

from voxbox.bench.peers.base import RunResult, Target

__all__ = ["EchoUpstream", "EchoUpstreamCompiled", "OmniVoiceUpstream", "VoxCPM2Upstream", "VoxCPM2UpstreamCompiled"]


def import_with_stand_ins(module: str, stand_ins: tuple[str, ...], extra: dict[str, Any]) -> Any:
    """Import ``module``; the ``stand_ins`` that fail to import become empty modules first."""
    try:
        import transformers  # noqa: F401 - its availability checks must run before any stand-in exists
    except ImportError:
        pass
    used = []
    for name in stand_ins:
        try:
            importlib.import_module(name)
        except Exception:  # noqa: BLE001 - broken builds raise OSError, not ImportError
            stand_in = types.ModuleType(name)
            stand_in.functional = types.SimpleNamespace(resample=None)  # type: ignore[attr-defined]
            sys.modules[name] = stand_in
            used.append(name)
    if used:
        extra["stand_ins"] = ",".join(used)
    return importlib.import_module(module)


def _seed(options: dict[str, Any], default: int = 0) -> int:
    return int(options["seed"]) if options.get("seed") is not None else default


class _Upstream(Target):
    task = "tts"
    interleave_with_voxbox = True

    def _cuda(self) -> bool:
        self.device = self.voxbox_device("cpu")
        return self.device.startswith("cuda")

    def _result(self, t0: float, audio: np.ndarray, rate: int) -> RunResult:
        total = self.now() - t0
        return RunResult(total_s=total, audio_s=len(audio) / rate, ttfa_s=total, samples=audio, sample_rate=rate)


class EchoUpstream(_Upstream):
    requires = ("echo_tts", "torch", "einops", "safetensors", "huggingface_hub")
    install_hint = "pip install --no-deps echo-tts && pip install einops safetensors huggingface_hub torchaudio"
    compile = False

    def load(self) -> None:
        import torch

        inference = import_with_stand_ins("echo_tts.inference", ("torchaudio",), self.extra)
        cuda = self._cuda()
        self.dtype = "bfloat16" if cuda else "float32"
        self.tts = inference.EchoTTS(device=self.device, dtype=torch.bfloat16 if cuda else torch.float32,
                                     compile=self.compile, model_path=self.model_dir("echo-tts"))
        self.extra["compile"] = self.compile

    def run(self, item: Any, **options: Any) -> RunResult:
        kw: dict[str, Any] = {"num_steps": int(options.get("steps") or 40), "preset": "none", "seed": _seed(options)}
        if options.get("sequence_length"):
            kw["sequence_length"] = int(options["sequence_length"])
        t0 = self.now()
        audio, rate = self.tts.synthesize(str(item), **kw)
        return self._result(t0, audio.reshape(-1).float().numpy(), int(rate))


class EchoUpstreamCompiled(EchoUpstream):
    compile = True


class OmniVoiceUpstream(_Upstream):
    requires = ("omnivoice", "transformers", "accelerate", "pydub", "soundfile")
    install_hint = "pip install --no-deps omnivoice && pip install torchaudio accelerate pydub soundfile"

    def load(self) -> None:
        import torch

        ov = import_with_stand_ins("omnivoice.models.omnivoice", ("torchaudio",), self.extra)
        if self.extra.get("stand_ins"):  # transformers' lazy export is a placeholder without torchaudio
            higgs = importlib.import_module(
                "transformers.models.higgs_audio_v2_tokenizer.modeling_higgs_audio_v2_tokenizer")
            ov.HiggsAudioV2TokenizerModel = higgs.HiggsAudioV2TokenizerModel
        cuda = self._cuda()
        self.dtype = "float16" if cuda else "float32"
        kwargs: dict[str, Any] = {"dtype": torch.float16 if cuda else torch.float32}
        if cuda:
            kwargs["device_map"] = self.device
        self.tts = ov.OmniVoice.from_pretrained(self.model_dir("omnivoice"), **kwargs).eval()
        self.rate = int(self.tts.sampling_rate)

    def run(self, item: Any, **options: Any) -> RunResult:
        import torch

        kw: dict[str, Any] = {"num_step": int(options.get("steps") or 32)}
        if options.get("voice_description"):
            kw["instruct"] = options["voice_description"]
        t0 = self.now()
        torch.manual_seed(_seed(options))
        audio = np.asarray(self.tts.generate(str(item), **kw)[0], np.float32)
        return self._result(t0, audio, self.rate)


class VoxCPM2Upstream(_Upstream):
    requires = ("voxcpm", "transformers", "einops", "pydantic")
    install_hint = "pip install --no-deps voxcpm && pip install einops pydantic tqdm"
    optimize = False

    def load(self) -> None:
        v2 = import_with_stand_ins("voxcpm.model.voxcpm2", ("torchaudio", "librosa"), self.extra)
        self._cuda()
        self.tts = v2.VoxCPM2Model.from_local(self.model_dir("voxcpm2"), optimize=self.optimize, device=self.device)
        self.dtype = str(self.tts.config.dtype)
        self.rate = int(self.tts.sample_rate)
        self.extra["optimize"] = self.optimize

    def run(self, item: Any, **options: Any) -> RunResult:
        import torch

        kw: dict[str, Any] = {"inference_timesteps": int(options.get("timesteps") or options.get("steps") or 10)}
        for name in ("min_len", "max_len", "cfg_value"):
            if options.get(name) is not None:
                kw[name] = options[name]
        t0 = self.now()
        torch.manual_seed(_seed(options))
        wav, _, _ = self.tts.generate_with_prompt_cache(target_text=str(item), prompt_cache=None, retry_badcase=False,
                                                        **kw)
        return self._result(t0, wav.reshape(-1).float().cpu().numpy(), self.rate)


class VoxCPM2UpstreamCompiled(VoxCPM2Upstream):
    optimize = True
