"""TTS peers: what people run instead of voxbox for the same bundled voices.

* ``hibari-upstream`` / ``piper-upstream``: the libraries' own Python API, warm, in-process
  (voxbox's overhead over the library it wraps);
* ``hibari-cli`` / ``piper-cli``: the libraries' command lines, one process per call, as a shell
  script would use them (model load included in every call: that is what the command costs).
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
import tempfile
import wave
from pathlib import Path
from typing import Any

import numpy as np

from voxbox.bench.peers.base import NotInstalled, RunResult, Target

__all__ = ["HibariCli", "HibariUpstream", "PiperCli", "PiperUpstream", "read_wav"]


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """16-bit PCM WAV -> (mono float32, rate)."""
    with wave.open(str(path), "rb") as w:
        rate, ch, width = w.getframerate(), w.getnchannels(), w.getsampwidth()
        raw = w.readframes(w.getnframes())
    if width != 2:
        raise ValueError(f"{path}: expected 16-bit PCM, got {8 * width}-bit")
    x = np.frombuffer(raw, dtype="<i2").astype(np.float32) / 32768.0
    return x.reshape(-1, ch).mean(axis=1) if ch > 1 else x, rate


def _cli(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    found = str(exe) if exe.exists() else shutil.which(name)
    if not found:
        raise NotInstalled(f"not installed: no `{name}` command on PATH")
    return found


class _CliTarget(Target):
    task = "tts"
    command = ""

    def load(self) -> None:
        self.exe = _cli(self.command)
        self.tmp = Path(tempfile.mkdtemp(prefix=f"voxbox-bench-{self.command}-"))
        self.extra["note"] = "one process per call: model load included in every run"

    def argv(self, out: Path) -> list[str]:  # pragma: no cover - interface
        raise NotImplementedError

    def run(self, item: Any, **options: Any) -> RunResult:
        out = self.tmp / "out.wav"
        if out.exists():
            out.unlink()
        env = dict(os.environ)
        t0 = self.now()
        proc = subprocess.run(self.argv(out), input=str(item).encode(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=env, check=False)
        total = self.now() - t0
        # the command's own peak memory (the bench worker itself only waits for it)
        self.child_peak_rss = max(getattr(self, "child_peak_rss", 0),
                                  resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024)
        if proc.returncode != 0 or not out.exists():
            tail = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
            raise RuntimeError(f"{self.command} exited {proc.returncode}: {tail[0]}")
        samples, rate = read_wav(out)
        return RunResult(total_s=total, audio_s=len(samples) / rate, samples=samples, sample_rate=rate)

    def close(self) -> None:
        shutil.rmtree(getattr(self, "tmp", ""), ignore_errors=True)


class PiperCli(_CliTarget):
    requires = ("piper",)
    install_hint = "pip install piper-tts"
    command = "piper"

    def load(self) -> None:
        super().load()
        from voxbox.models.bundled import piper_joe_paths

        self.onnx, self.config = piper_joe_paths()
        self.dtype = "float32"

    def argv(self, out: Path) -> list[str]:
        return [self.exe, "-m", str(self.onnx), "-c", str(self.config), "-f", str(out)]


class HibariCli(_CliTarget):
    requires = ("hibari",)
    install_hint = "pip install hibari-tts"
    command = "hibari"

    def load(self) -> None:
        super().load()
        self.dtype = "int8"
        self.threads = self.threads or 1

    def argv(self, out: Path) -> list[str]:
        return [self.exe, "-", "-o", str(out), "--threads", str(self.threads), "--seed", "0"]


class PiperUpstream(Target):
    """piper-tts's ``PiperVoice`` directly: ``synthesize()`` yields one chunk per sentence."""

    task = "tts"
    interleave_with_voxbox = True  # measures voxbox's overhead: runs alternate with voxbox's
    requires = ("piper", "onnxruntime")
    install_hint = "pip install piper-tts"

    def load(self) -> None:
        from piper import PiperVoice

        from voxbox.models.bundled import piper_joe_paths

        onnx, config = piper_joe_paths()
        self.voice = PiperVoice.load(str(onnx), config_path=str(config), use_cuda=False)
        self.dtype = "float32"

    def run(self, item: Any, **options: Any) -> RunResult:
        parts: list[np.ndarray] = []
        ttfa = None
        t0 = self.now()
        rate = 22050
        for chunk in self.voice.synthesize(str(item)):
            if ttfa is None:
                ttfa = self.now() - t0
            parts.append(np.asarray(chunk.audio_float_array, dtype=np.float32).reshape(-1))
            rate = int(chunk.sample_rate)
        total = self.now() - t0
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return RunResult(total_s=total, audio_s=len(samples) / rate, ttfa_s=ttfa, samples=samples, sample_rate=rate)


class HibariUpstream(Target):
    """hibari's ``Hibari.stream()`` directly (its own sentence splitting and G2P)."""

    task = "tts"
    interleave_with_voxbox = True  # measures voxbox's overhead: runs alternate with voxbox's
    requires = ("hibari",)
    install_hint = "pip install hibari-tts"

    def load(self) -> None:
        import hibari

        from voxbox.models.bundled import hibari_voice_path

        self.threads = self.threads or 1
        self.tts = hibari.Hibari(voice="heart", model=str(hibari_voice_path("heart")), threads=self.threads)
        self.rate = int(hibari.SAMPLE_RATE)
        self.dtype = "int8"

    def run(self, item: Any, **options: Any) -> RunResult:
        parts: list[np.ndarray] = []
        ttfa = None
        t0 = self.now()
        for chunk in self.tts.stream(str(item), seed=0):
            if ttfa is None:
                ttfa = self.now() - t0
            parts.append(np.asarray(chunk, dtype=np.float32).reshape(-1))
        total = self.now() - t0
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        return RunResult(total_s=total, audio_s=len(samples) / self.rate, ttfa_s=ttfa, samples=samples,
                         sample_rate=self.rate)
