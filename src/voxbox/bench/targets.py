"""voxbox's own bench targets: engines loaded and called through the runtime, as the CLI and server do.

Each target holds a :class:`~voxbox.runtime.sync.SyncRuntime` with a one-entry catalog (the
engine and its weights: a bundled name, a local directory, or ``random:SHAPE`` built by
:mod:`voxbox.bench.shapes`), acquires one :class:`~voxbox.runtime.core.Work` for its lifetime
(model manager: load once; admission: one slot) and runs every measured call in the runtime's
worker thread with the work's cancel token. The clock is read *in that worker*, around the
engine's own call (after a device sync), so what is timed is the engine; the runtime's hand-off
costs are measured separately at load and reported as ``extra.runtime_call_s`` (one
``call`` round trip, paid once per measured call, outside the clock) and
``extra.runtime_chunk_s`` (one ``iterate`` hop, what a streaming front pays per chunk).

Random-weight models are never put in any server's catalog: the entry lives in this target only.
"""

from __future__ import annotations

import statistics
from typing import Any, Callable

import numpy as np

from voxbox.bench.metrics import clock
from voxbox.bench.peers.base import NotInstalled, RunResult, Target

__all__ = ["VoxboxASR", "VoxboxTTS", "bench_runtime", "numeric_details"]

_HOP_SAMPLES = 20


def bench_runtime(device: str | None, threads: int | None, *, batching: bool = False,
                  loader: Callable[[Any], Any] | None = None) -> Any:
    """A one-model SyncRuntime (not entered): no TTL, no queue, no deadline worth the name.

    Batching across requests is off unless asked (a single stream would wait its batch window)."""
    from voxbox.runtime import Catalog, RuntimeConfig
    from voxbox.runtime.sync import SyncRuntime

    config = RuntimeConfig(device=device or "auto", threads=threads, ttl=-1, max_loaded=1, queue_size=0,
                           request_timeout=7 * 24 * 3600.0, batching=batching)
    return SyncRuntime(Catalog(), config, loader=loader)


def numeric_details(details: dict[str, Any] | None) -> dict[str, float]:
    """The numbers among an engine's per-call details (frames, ms per frame, first audio ...)."""
    out: dict[str, float] = {}
    for k, v in (details or {}).items():
        if isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v):
            out[str(k)] = float(v)
    return out


class _VoxboxTarget(Target):
    kind = "voxbox"

    def check(self) -> None:
        from voxbox.bench import shapes
        from voxbox.engines.registry import get_spec

        spec = get_spec(self.name)
        missing = spec.missing()
        if missing:
            raise NotInstalled(f"not installed: missing {', '.join(missing)} ({spec.install_hint})")
        if shapes.is_random(self.model):
            shapes.shape_of(self.name, str(self.model))  # an unknown shape fails here, before loading
        elif spec.default_model is None and not self.model:
            raise NotInstalled(f"skipped: engine {self.name!r} has no bundled weights; pass a local model directory")

    # -- loading through the runtime ------------------------------------------------------------
    def _entry(self) -> Any:
        from voxbox.bench import shapes
        from voxbox.runtime import CatalogEntry

        model, load_options = self.model, dict(self.settings.get("load_options") or {})
        if shapes.is_random(model):
            built = shapes.build(self.name, str(model), str(self.settings.get("device") or "cpu"))
            self.extra.update(random_weights=model, model_dir=built.model, build_s=round(built.build_s, 3))
            model, load_options = built.model, {**built.load_options, **load_options}
        return CatalogEntry(name=f"bench:{self.name}", engine=self.name, task=self.task, model=model,  # type: ignore[arg-type]
                            source="local", load_options=load_options)

    def _loader(self) -> Callable[[Any], Any] | None:
        """The runtime's own loader, unless a dtype or placement is pinned (RuntimeConfig has neither)."""
        dtype, placement = self.settings.get("dtype"), self.settings.get("placement")
        if not dtype and not placement:
            return None
        from voxbox.engines.registry import get_spec
        from voxbox.engines.spec import LoadRequest

        device, threads = str(self.settings.get("device") or "auto"), self.threads

        def load(entry: Any) -> Any:
            return get_spec(entry.engine).load(LoadRequest(model=entry.model, device=device, dtype=dtype,
                                                           threads=threads, placement=placement,
                                                           options=entry.load_options))

        return load

    def load(self) -> None:
        entry = self._entry()
        self.rt = bench_runtime(self.settings.get("device"), self.threads,
                                batching=bool(self.settings.get("batching", False)), loader=self._loader())
        self.rt.__enter__()
        self._work_cm = self.rt.acquire(entry, self.task)
        self.work = self._work_cm.__enter__()
        self.engine = self.work.engine
        info = self.engine.info
        self.device, self.dtype = info.device, info.dtype
        extra = dict(info.extra or {})
        self.threads = self.threads or extra.get("threads") or extra.get("cpu_threads")
        self.compile_s = extra.get("compile_seconds")
        for key in ("model_dir", "model_path"):
            if key in extra and key not in self.extra:
                self.extra[key] = extra[key]
        self.extra["model"] = info.model
        self._measure_hops()

    def _measure_hops(self) -> None:
        """Median cost of one runtime ``call`` round trip and of one ``iterate`` hop (no engine work)."""
        calls = []
        for _ in range(_HOP_SAMPLES):
            t0 = clock()
            self.rt.call(self.work, lambda: None)
            calls.append(clock() - t0)
        t0 = clock()
        n = sum(1 for _ in self.rt.iterate(self.work, lambda: iter(range(_HOP_SAMPLES))))
        self.extra["runtime_call_s"] = statistics.median(calls)
        self.extra["runtime_chunk_s"] = (clock() - t0) / max(1, n)

    def in_worker(self, fn: Callable[[], RunResult]) -> RunResult:
        """Run ``fn`` (which reads the clock itself) in the runtime's worker thread for this work."""
        return self.rt.call(self.work, fn)  # type: ignore[no-any-return]

    def close(self) -> None:
        cm, rt = getattr(self, "_work_cm", None), getattr(self, "rt", None)
        try:
            if cm is not None:
                cm.__exit__(None, None, None)
        finally:
            if rt is not None:
                rt.__exit__(None, None, None)


class VoxboxTTS(_VoxboxTarget):
    task = "tts"

    def load(self) -> None:
        super().load()
        self.voice: Any = self.settings.get("voice_name")
        ref = self.settings.get("voice")
        if ref:  # a cloned voice: a synthetic reference, encoded once (the server caches encodings alike)
            from voxbox.bench.scenarios import speechlike
            from voxbox.types import Audio

            rate = int(getattr(self.engine, "sample_rate", 0) or 24000)
            clip = Audio(speechlike(float(ref.get("seconds", 10.0)), rate=rate), rate)
            t0 = clock()
            self.voice = self.in_worker(lambda: self.engine.encode_voice(clip, ref.get("transcript")))
            self.extra["voice_encode_s"] = clock() - t0

    def run(self, item: Any, **options: Any) -> RunResult:
        text, opts = str(item), {k: v for k, v in options.items() if v is not None}
        engine, cancel, voice = self.engine, self.work.cancel, self.voice

        def measure() -> RunResult:
            parts: list[np.ndarray] = []
            ttfa = None
            t0 = self.now()
            stream = engine.stream(text, voice, options=opts, cancel=cancel)
            for chunk in stream:
                if ttfa is None:
                    ttfa = self.now() - t0
                parts.append(np.asarray(chunk.samples, np.float32))
            total = self.now() - t0
            samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
            rate = int(stream.sample_rate)
            details = numeric_details(stream.details)
            details["chunks"] = float(len(parts))
            return RunResult(total_s=total, audio_s=len(samples) / rate, ttfa_s=ttfa, stages=stream.timings.as_dict(),
                             samples=samples, sample_rate=rate, details=details)

        return self.in_worker(measure)


class VoxboxASR(_VoxboxTarget):
    task = "asr"

    def run(self, item: Any, **options: Any) -> RunResult:
        from voxbox.types import Audio

        d = {**(self.settings.get("decoding") or {}), **{k: v for k, v in options.items() if v is not None}}
        language = d.pop("language", None)
        audio = Audio(np.asarray(item, np.float32), 16000)
        engine, cancel = self.engine, self.work.cancel

        def measure() -> RunResult:
            t0 = self.now()
            segments, info = engine.transcribe(audio, language, options=d, cancel=cancel)
            segs = list(segments)
            total = self.now() - t0
            text = " ".join(s.text.strip() for s in segs)
            tokens = sum(len(s.tokens) for s in segs if s.tokens is not None)
            details = {"segments": float(len(segs))} | ({"tokens": float(tokens)} if tokens else {})
            return RunResult(total_s=total, audio_s=audio.duration, stages=info.timings.as_dict(), text=text,
                             details=details)

        return self.in_worker(measure)
