"""Kokoro voices: the upstream voices file, weighted voice mixing, and the style row per length.

A Kokoro voice is a float32 array [510, 1, 256]: row ``n - 1`` is the style vector for an utterance
of ``n`` phonemes (first 128 values drive the decoder, last 128 the prosody predictor). The
upstream files are a numpy ``.npz`` archive (``voices-v1.0.bin``, kokoro-onnx) or one torch tensor
per voice (``voices/af_heart.pt``, hexgrad/Kokoro-82M).

Mixing follows Kokoro-FastAPI's syntax: ``af_bella(2)+af_sky(1)`` is the weighted mean
(2·bella + 1·sky) / 3; ``af_bella+af_sky`` weighs both 1.
"""

from __future__ import annotations

import re
import threading
from pathlib import Path
from typing import Any

import numpy as np

from voxbox.errors import BadInputError, ModelLoadError, VoiceNotFoundError

__all__ = ["VoiceBank", "parse_mix", "style_row"]

_TERM = re.compile(r"^\s*([A-Za-z0-9_.\-]+?)\s*(?:\(\s*([0-9]*\.?[0-9]+)\s*\))?\s*$")
MAX_MIX_TERMS = 8


def parse_mix(spec: str) -> list[tuple[str, float]]:
    """``"af_bella(2)+af_sky(1)"`` -> ``[("af_bella", 2.0), ("af_sky", 1.0)]``; names lower-cased."""
    terms = spec.split("+")
    if len(terms) > MAX_MIX_TERMS:
        raise BadInputError(f"a voice mix may have at most {MAX_MIX_TERMS} voices", param="voice")
    out: list[tuple[str, float]] = []
    for term in terms:
        m = _TERM.match(term)
        if m is None:
            raise BadInputError(f"bad voice mix term {term.strip()!r} in {spec!r}; use name or name(weight), "
                                "joined with '+', e.g. af_bella(2)+af_sky(1)", param="voice")
        weight = float(m.group(2)) if m.group(2) is not None else 1.0
        if not (weight > 0 and np.isfinite(weight)):
            raise BadInputError(f"voice weight must be positive, got {m.group(2)} for {m.group(1)!r}", param="voice")
        out.append((m.group(1).lower(), weight))
    return out


def style_row(pack: np.ndarray, n_phonemes: int) -> np.ndarray:
    """The [1, 256] style for an utterance of ``n_phonemes`` (upstream: ``pack[len(ps) - 1]``)."""
    row = pack[max(1, min(n_phonemes, len(pack))) - 1]
    return np.asarray(row, dtype=np.float32).reshape(1, -1)


def _load_archive(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as data:
            return {str(k).lower(): np.asarray(data[k], dtype=np.float32) for k in data.files}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not read the Kokoro voices archive {path.name}: {exc}") from exc


def _load_dir(path: Path) -> dict[str, Path]:
    return {p.stem.lower(): p for p in sorted(path.iterdir()) if p.suffix in (".pt", ".npy")}


def _read_one(path: Path) -> np.ndarray:
    try:
        if path.suffix == ".npy":
            return np.asarray(np.load(path, allow_pickle=False), dtype=np.float32)
        import torch

        tensor: Any = torch.load(str(path), map_location="cpu", weights_only=True)
        return np.asarray(tensor.float().numpy(), dtype=np.float32)
    except ImportError as exc:
        raise ModelLoadError(f"voice {path.name} is a torch tensor; reading it needs torch ({exc})") from exc
    except Exception as exc:
        raise ModelLoadError(f"could not read Kokoro voice {path.name}: {exc}") from exc


class VoiceBank:
    """The voices of one model: loaded eagerly from an archive, lazily from a directory; mixes cached."""

    def __init__(self, path: Path, style_dim: int | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._packs: dict[str, np.ndarray] = {}
        self._files: dict[str, Path] = {}
        self._mixes: dict[str, np.ndarray] = {}
        if path.is_dir():
            self._files = _load_dir(path)
        else:
            self._packs = _load_archive(path)
        if not self.names:
            raise ModelLoadError(f"no voices in {path}")
        self.style_dim = style_dim
        first = self.pack(self.names[0])
        if first.ndim not in (2, 3) or first.shape[-1] < 2:
            raise ModelLoadError(f"Kokoro voice {self.names[0]!r} has shape {first.shape}; expected [510, 1, 256]")
        self.style_dim = int(first.shape[-1])

    @property
    def names(self) -> list[str]:
        return sorted(set(self._packs) | set(self._files))

    def pack(self, name: str) -> np.ndarray:
        """One voice's [rows, 1, dim] array."""
        with self._lock:
            pack = self._packs.get(name)
            if pack is not None:
                return pack
            path = self._files.get(name)
        if path is None:
            raise VoiceNotFoundError(self._unknown(name), param="voice")
        pack = _read_one(path)
        if self.style_dim is not None and pack.shape[-1] != self.style_dim:
            raise ModelLoadError(f"Kokoro voice {name!r} has style size {pack.shape[-1]}, the others {self.style_dim}")
        with self._lock:
            self._packs[name] = pack
        return pack

    def _unknown(self, name: str) -> str:
        names = self.names
        shown = ", ".join(names[:40]) + (f" ... ({len(names)} voices)" if len(names) > 40 else "")
        return f"unknown Kokoro voice {name!r}; available: {shown}"

    def resolve(self, spec: str) -> np.ndarray:
        """A voice name or a weighted mix -> its [rows, 1, dim] array."""
        key = "".join(spec.split()).lower()
        with self._lock:
            cached = self._mixes.get(key) if "+" in key or "(" in key else self._packs.get(key)
        if cached is not None:
            return cached
        terms = parse_mix(spec)
        if len(terms) == 1 and terms[0][1] == 1.0 and "(" not in key:
            return self.pack(terms[0][0])
        for name, _ in terms:
            if name not in self._packs and name not in self._files:
                raise VoiceNotFoundError(self._unknown(name), param="voice")
        packs = [self.pack(name) for name, _ in terms]
        rows = min(len(p) for p in packs)
        total = sum(w for _, w in terms)
        mixed = sum((w / total) * p[:rows] for (_, w), p in zip(terms, packs, strict=True))
        out = np.asarray(mixed, dtype=np.float32)
        with self._lock:
            if len(self._mixes) > 64:
                self._mixes.clear()
            self._mixes[key] = out
        return out
