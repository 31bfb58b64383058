"""Benchmark scenarios as data: the YAML shipped beside this module, overridable by a user file.

``load_scenarios(path=None, quick=False)`` returns a plain dict (validated here); ``path`` is a
YAML file or the name of a shipped profile (``profiles/NAME.yaml`` beside this module, e.g.
``gpu``: random weights at real shapes with peers, for one GPU). ASR clips are turned into audio
by ``materialize_clips`` (moonshine-voice recordings, TTS-made speech with a known text,
long-form concatenations, synthetic speech-like signals of a given length for random-weight
models), cached on disk so repeated runs reuse them.
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

__all__ = [
    "Clip",
    "ClipUnavailable",
    "DEFAULT_FILE",
    "PROFILES_DIR",
    "clip_cache_dir",
    "load_scenarios",
    "materialize_clips",
    "merge",
    "profiles",
    "speechlike",
]

DEFAULT_FILE = Path(__file__).with_name("scenarios.yaml")
PROFILES_DIR = Path(__file__).with_name("profiles")
ASR_RATE = 16000
#: Keys whose value replaces the default as a whole, so an override names exactly what it wants.
_REPLACE_KEYS = {"texts", "clips", "targets", "settings", "quick"}


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


def profiles() -> list[str]:
    """Names of the shipped scenario profiles (``--scenarios NAME``)."""
    return sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))


def _resolve(path: str | Path) -> Path:
    p = Path(path)
    if p.is_file() or p.suffix in (".yaml", ".yml") or len(p.parts) > 1:
        return p
    shipped = PROFILES_DIR / f"{p.name}.yaml"
    if shipped.is_file():
        return shipped
    raise BadInputError(
        f"no scenarios file {str(path)!r} and no shipped profile of that name "
        f"(profiles: {', '.join(profiles()) or 'none'})",
        param="scenarios",
    )


def load_scenarios(path: str | Path | None = None, quick: bool = False) -> dict[str, Any]:
    """The shipped scenarios, with ``path`` (a file or a profile name) merged over them, then ``quick:`` if asked."""
    data = _read_yaml(DEFAULT_FILE)
    if path is not None:
        over = _read_yaml(_resolve(path))
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
    need(
        isinstance(tts.get("texts", {}), dict)
        and all(isinstance(v, str) and v.strip() for v in tts.get("texts", {}).values()),
        "tts.texts must map names to non-empty strings",
    )
    for t in tts.get("targets", []) + data.get("asr", {}).get("targets", []):
        need(isinstance(t, dict) and "engine" in t, f"every target needs an engine: {t!r}")
        _validate_target(t, need)
    clips = data.get("asr", {}).get("clips", {})
    need(isinstance(clips, dict), "asr.clips must be a mapping")
    for name, c in clips.items():
        need(isinstance(c, dict) and ("source" in c or "concat" in c), f"clip {name!r} needs source or concat")
        if isinstance(c, dict) and c.get("source") == "synthetic":
            need(float(c.get("seconds", 0)) > 0, f"synthetic clip {name!r} needs seconds > 0")
        for part in c.get("concat", []):
            need(part in clips and "concat" not in clips[part], f"clip {name!r} concatenates unknown clip {part!r}")


_TARGET_KEYS = {
    "engine",
    "model",
    "label",
    "device",
    "dtype",
    "placement",
    "load_options",
    "options",
    "steps",
    "steps_option",
    "sweep",
    "items",
    "voice",
    "voice_name",
    "decoding",
    "batching",
    "peers",
}


def _validate_target(t: dict[str, Any], need: Callable[[bool, str], None]) -> None:
    unknown = sorted(set(t) - _TARGET_KEYS)
    need(
        not unknown,
        f"target {t.get('engine')!r}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(_TARGET_KEYS))})",
    )
    for key in ("options", "load_options", "placement", "decoding", "voice"):
        need(t.get(key) is None or isinstance(t[key], dict), f"target {t['engine']!r}: {key} must be a mapping")
    sweep = t.get("sweep")
    need(
        sweep is None or (isinstance(sweep, list) and all(isinstance(p, dict) for p in sweep)),
        f"target {t['engine']!r}: sweep must be a list of mappings (label, options, items)",
    )
    labels = [p.get("label") for p in sweep or []]
    need(
        len(labels) == len(set(labels)) and all(isinstance(x, str) and x for x in labels) if sweep else True,
        f"target {t['engine']!r}: every sweep point needs its own label",
    )


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


def speechlike(seconds: float, seed: int = 0, rate: int = ASR_RATE) -> np.ndarray:
    """A speech-like signal (voiced pulses under a syllable-rate envelope, plus noise): input for
    random-weight ASR models, whose work depends on the audio's length only."""
    t = np.arange(int(seconds * rate)) / rate
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t)
    rng = np.random.default_rng(seed)
    return (0.1 * env * np.sin(2 * np.pi * (150 + 50 * np.sin(t)) * t) + rng.normal(0, 0.02, t.size)).astype(np.float32)


def _tts_clip(engine: str, model: str | None, text: str, cache: Path) -> np.ndarray:
    key = hashlib.sha256(json.dumps([engine, model, text]).encode()).hexdigest()[:16]
    path = cache / f"tts-{engine}-{key}.npy"
    if path.exists():
        return np.load(path)
    from voxbox.audio.resample import resample
    from voxbox.bench.targets import VoxboxTTS

    target = VoxboxTTS(engine, model, {}, None)  # through the runtime, like every voxbox call
    target.load()
    try:
        out = target.run(text)
    finally:
        target.close()
    samples = resample(np.asarray(out.samples, np.float32), int(out.sample_rate or ASR_RATE), ASR_RATE)
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
            elif src == "synthetic":
                samples = speechlike(float(cfg["seconds"]), seed=int(cfg.get("seed", 0)))
                reference = None
                src = f"synthetic:{float(cfg['seconds']):g}s"
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
