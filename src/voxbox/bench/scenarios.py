"""Benchmark scenarios as data: the YAML shipped beside this module, overridable by a user file.

``load_scenarios(path=None, quick=False)`` returns a plain dict (validated here). ASR clips are
turned into audio by ``materialize_clips`` (moonshine-voice recordings, TTS-made speech with a
known text, long-form concatenations), cached on disk so repeated runs reuse them.
"""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from voxbox.errors import BadInputError

__all__ = ["Clip", "ClipUnavailable", "DEFAULT_FILE", "clip_cache_dir", "load_scenarios", "materialize_clips", "merge"]

DEFAULT_FILE = Path(__file__).with_name("scenarios.yaml")
ASR_RATE = 16000
#: Keys whose value replaces the default as a whole, so an override names exactly what it wants.
_REPLACE_KEYS = {"texts", "clips", "targets", "settings"}


def merge(base: Any, over: Any, key: str | None = None) -> Any:
    """Deep merge: mappings key by key (except ``_REPLACE_KEYS``), everything else replaces."""
    if isinstance(base, dict) and isinstance(over, dict) and key not in _REPLACE_KEYS:
        out = dict(base)
        for k, v in over.items():
            out[k] = merge(base[k], v, k) if k in base else copy.deepcopy(v)
        return out
    return copy.deepcopy(over)


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise BadInputError(f"cannot read scenarios file {path}: {exc}", param="scenarios") from exc
    except yaml.YAMLError as exc:
        raise BadInputError(f"scenarios file {path} is not valid YAML: {exc}", param="scenarios") from exc
    if not isinstance(data, dict):
        raise BadInputError(f"scenarios file {path} must hold a mapping", param="scenarios")
    return data


def load_scenarios(path: str | Path | None = None, quick: bool = False) -> dict[str, Any]:
    """The shipped scenarios, with ``path`` merged over them and then ``quick:`` if asked."""
    data = _read_yaml(DEFAULT_FILE)
    if path is not None:
        over = _read_yaml(Path(path))
        data = merge(data, over)
    quick_over = data.pop("quick", None) or {}
    if quick:
        data = merge(data, quick_over)
    _validate(data)
    return data


def _validate(data: dict[str, Any]) -> None:
    def need(cond: bool, msg: str) -> None:
        if not cond:
            raise BadInputError(f"scenarios: {msg}", param="scenarios")

    d = data.setdefault("defaults", {})
    need(int(d.get("runs", 3)) >= 1, "defaults.runs must be >= 1")
    need(int(d.get("warmup", 1)) >= 0, "defaults.warmup must be >= 0")
    tts = data.get("tts", {})
    need(isinstance(tts.get("texts", {}), dict) and all(isinstance(v, str) and v.strip() for v in tts.get("texts", {}).values()),
         "tts.texts must map names to non-empty strings")
    for t in tts.get("targets", []) + data.get("asr", {}).get("targets", []):
        need(isinstance(t, dict) and "engine" in t, f"every target needs an engine: {t!r}")
    clips = data.get("asr", {}).get("clips", {})
    need(isinstance(clips, dict), "asr.clips must be a mapping")
    for name, c in clips.items():
        need(isinstance(c, dict) and ("source" in c or "concat" in c), f"clip {name!r} needs source or concat")
        for part in c.get("concat", []):
            need(part in clips and "concat" not in clips[part], f"clip {name!r} concatenates unknown clip {part!r}")


# --------------------------------------------------------------------------------------------
# ASR clips


@dataclass
class Clip:
    """One ASR input: 16 kHz mono float32 samples and, where known, the reference transcript."""

    name: str
    samples: np.ndarray
    reference: str | None
    source: str
    runs: int | None = None  # per-clip override of defaults.runs

    @property
    def seconds(self) -> float:
        return len(self.samples) / ASR_RATE


def clip_cache_dir() -> Path:
    from voxbox.paths import cache_dir

    p = cache_dir() / "bench" / "clips"
    p.mkdir(parents=True, exist_ok=True)
    return p


class ClipUnavailable(BadInputError):
    """A clip's source is not on this machine (e.g. moonshine-voice not installed)."""


def moonshine_assets() -> Path:
    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        raise ClipUnavailable("recordings from moonshine-voice are not installed: pip install 'voxbox[bench]'")
    return Path(list(spec.submodule_search_locations)[0]) / "assets"


def _load_file_16k(path: Path) -> np.ndarray:
    from voxbox.audio.resample import resample

    try:
        from voxbox.audio.decode import decode
    except ImportError:  # pragma: no cover - audio I/O not built yet
        decode = None
    if decode is not None:
        audio = decode(str(path))
        samples, rate = audio.samples, audio.sample_rate
    else:  # plain PCM wav fallback
        import wave

        with wave.open(str(path), "rb") as w:
            rate = w.getframerate()
            raw = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32) / 32768.0
            samples = raw.reshape(-1, w.getnchannels()).mean(axis=1)
    return resample(np.asarray(samples, np.float32), rate, ASR_RATE)


def _tts_clip(engine: str, model: str | None, text: str, cache: Path) -> np.ndarray:
    key = hashlib.sha256(json.dumps([engine, model, text]).encode()).hexdigest()[:16]
    path = cache / f"tts-{engine}-{key}.npy"
    if path.exists():
        return np.load(path)
    from voxbox.audio.resample import resample
    from voxbox.engines.registry import load_engine

    eng = load_engine(engine, model)
    try:
        audio = eng.stream(text).collect()
    finally:
        close = getattr(eng, "close", None)
        if close:
            close()
    samples = resample(audio.samples, audio.sample_rate, ASR_RATE)
    np.save(path, samples)
    return samples


def materialize_clips(
    scen: dict[str, Any],
    names: list[str] | None = None,
    progress: Callable[[str], None] | None = None,
    skipped: dict[str, str] | None = None,
) -> list[Clip]:
    """Build the ASR clips named in the scenarios (all of them by default), in file order.

    With ``skipped`` (a dict), clips whose source is not installed are left out and their reason
    recorded there instead of failing the whole run.
    """
    asr = scen.get("asr", {})
    clips_cfg: dict[str, Any] = asr.get("clips", {})
    texts: dict[str, str] = scen.get("tts", {}).get("texts", {})
    wanted = list(clips_cfg) if names is None else names
    unknown = [n for n in wanted if n not in clips_cfg]
    if unknown:
        raise BadInputError(f"unknown clip(s) {', '.join(unknown)}; known: {', '.join(clips_cfg)}", param="clips")
    cache = clip_cache_dir()
    built: dict[str, Clip] = {}

    def build(name: str) -> Clip:
        if name in built:
            return built[name]
        cfg = clips_cfg[name]
        if progress:
            progress(name)
        if "concat" in cfg:
            parts = [build(p) for p in cfg["concat"]]
            gap = np.zeros(int(float(cfg.get("gap_seconds", 0.5)) * ASR_RATE), np.float32)
            min_s = float(cfg.get("min_seconds", 0))
            pieces: list[np.ndarray] = []
            refs: list[str | None] = []
            total = 0
            while True:
                for p in parts:
                    pieces += [p.samples, gap]
                    refs.append(p.reference)
                    total += len(p.samples) + len(gap)
                if total >= min_s * ASR_RATE:
                    break
            reference = None if any(r is None for r in refs) else " ".join(refs)  # type: ignore[arg-type]
            clip = Clip(name, np.concatenate(pieces), reference, f"concat:{'+'.join(cfg['concat'])}", cfg.get("runs"))
        else:
            src = str(cfg["source"])
            if src.startswith("moonshine:"):
                samples = _load_file_16k(moonshine_assets() / src.split(":", 1)[1])
                reference = cfg.get("reference")
            elif src == "tts":
                text = str(cfg["text"])
                if text.startswith("@"):
                    text = texts[text[1:]]
                text = " ".join(text.split())
                samples = _tts_clip(cfg.get("engine", "piper"), cfg.get("model"), text, cache)
                reference = text
                src = f"tts:{cfg.get('engine', 'piper')}"
            else:
                samples = _load_file_16k(Path(src).expanduser())
                reference = cfg.get("reference")
            if reference is not None:
                reference = " ".join(str(reference).split())
            clip = Clip(name, samples, reference, src, cfg.get("runs"))
        built[name] = clip
        return clip

    out = []
    for n in wanted:
        try:
            out.append(build(n))
        except ClipUnavailable as exc:
            if skipped is None:
                raise
            skipped[n] = str(exc)
    if not out:
        raise BadInputError("no ASR clip could be built: " + "; ".join(f"{k}: {v}" for k, v in (skipped or {}).items()))
    return out
