"""faster-whisper batching across requests: one CTranslate2 call for the windows of many requests.

Every transcription keeps running faster-whisper's own loop in its caller's thread (VAD, features,
seek over 30-s windows, conditioning on previous text, temperature fallback, word alignment,
segment splitting: all the library's), so a batched request gives what the unbatched one gives.
Only its two heavy calls on the CTranslate2 model, ``encode(features)`` and ``generate(encoder
output, prompts, ...)``, are routed through the runtime's :class:`~voxbox.runtime.batching.Scheduler`:
each call is one *op*; the scheduler gathers the ops of the transcriptions in flight and
:class:`WhisperOpBatcher` runs them as one CTranslate2 batch::

    request A thread  ── encode(win A1) ──┐                 ┌─► rows A1
    request B thread  ── encode(win B1) ──┴─► one encode ───┴─► rows B1
    request A thread  ── generate(A1) ────┐                 ┌─► result A1
    request B thread  ── generate(B1) ────┴─► one generate ─┴─► result B1   (same settings only)

* generate ops join one call only when their keyword arguments (beam size, temperature,
  penalties, suppressed tokens, max length...) are equal and their prompts have the same length
  (CTranslate2 needs the start-of-transcript token at one position in a batch): per-request
  greedy/beam settings are honoured, different settings run as separate calls of the same step;
* a step runs the pending encodes first, else the generates: transcriptions that drifted apart
  (one encoding while another decodes) fall back in phase at the next step;
* ``expected()`` tells the scheduler how many transcriptions are in flight, so it waits up to its
  window for all of them before each step (with one in flight it never waits);
* encoder outputs come back to the host (``to_cpu``) so each request gets its own rows; on CUDA
  that is a ~2-4 MB copy per window, small next to decoding;
* a request that leaves (cancel, disconnect) has its ops dropped before the next step; the
  others' batch goes on without it.

The other CTranslate2 calls (``detect_language``, ``align``) pass straight through (the model is
thread-safe and serialises them).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from voxbox.types import CancelToken

__all__ = ["RoutedWhisper", "WhisperOpBatcher"]


@dataclass(eq=False)  # ops are handles: compared by identity
class _Op:
    kind: str  # "encode" | "generate"
    features: np.ndarray  # [n, mels, frames] or encoder output [n, frames, width]
    prompts: list[list[int]] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    key: Any = None

    @property
    def rows(self) -> int:
        return int(self.features.shape[0])


def _frozen(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return tuple(_frozen(v) for v in value)
    if isinstance(value, dict):
        return tuple(sorted((k, _frozen(v)) for k, v in value.items()))
    return value


class WhisperOpBatcher:
    """The scheduler's :class:`~voxbox.runtime.batching.Batcher` for CTranslate2 Whisper ops."""

    def __init__(self, model: Any, max_batch: int, expected: Callable[[], int]) -> None:
        self.model = model  # ctranslate2.models.Whisper
        self.max_batch = max(1, int(max_batch))
        self.expected = expected
        self.ops: list[_Op] = []
        self.calls = {"encode": 0, "generate": 0}  # CTranslate2 calls made
        self.rows = {"encode": 0, "generate": 0}  # windows they carried

    def admit(self, requests: list[_Op]) -> list[_Op]:
        self.ops.extend(requests)
        return list(requests)

    def drop(self, handle: _Op) -> None:
        if handle in self.ops:
            self.ops.remove(handle)

    def step(self) -> list[tuple[Any, list[Any], bool]]:
        encodes = [op for op in self.ops if op.kind == "encode"]
        if encodes:
            return self._encode(encodes)
        groups: dict[Any, list[_Op]] = {}
        for op in self.ops:
            groups.setdefault(op.key, []).append(op)
        out: list[tuple[Any, list[Any], bool]] = []
        for ops in groups.values():
            out.extend(self._generate(ops))
        return out

    def _encode(self, ops: list[_Op]) -> list[tuple[Any, list[Any], bool]]:
        import ctranslate2

        feats = np.concatenate([op.features for op in ops]) if len(ops) > 1 else ops[0].features
        enc = np.asarray(self.model.encode(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)),
                                           to_cpu=True))
        self.calls["encode"] += 1
        self.rows["encode"] += len(feats)
        out: list[tuple[Any, list[Any], bool]] = []
        at = 0
        for op in ops:
            rows = np.ascontiguousarray(enc[at:at + op.rows])
            at += op.rows
            out.append((op, [rows], True))
        return out

    def _generate(self, ops: list[_Op]) -> list[tuple[Any, list[Any], bool]]:
        import ctranslate2

        feats = np.concatenate([op.features for op in ops]) if len(ops) > 1 else ops[0].features
        prompts = [p for op in ops for p in op.prompts]
        results = self.model.generate(ctranslate2.StorageView.from_array(np.ascontiguousarray(feats)), prompts,
                                      **ops[0].kwargs)
        self.calls["generate"] += 1
        self.rows["generate"] += len(prompts)
        out: list[tuple[Any, list[Any], bool]] = []
        at = 0
        for op in ops:
            out.append((op, [results[at:at + len(op.prompts)]], True))
            at += len(op.prompts)
        return out

    def check(self, n_mels: int, prompt: list[int]) -> None:
        """Two silent windows through one encode and one short generate, by the code path requests
        take (host copies of the encoder rows included): on a device where that fails the batcher
        fails to build and the runtime serves the model unbatched, saying why in its log."""
        ops = [_Op("encode", np.zeros((1, n_mels, 3000), np.float32)) for _ in range(2)]
        rows = [out[0] for _, out, _ in self._encode(ops)]
        gens = [_Op("generate", r, [list(prompt)], {"max_length": len(prompt) + 2, "beam_size": 1}) for r in rows]
        results = self._generate(gens)
        if len(results) != 2 or any(len(out[0]) != 1 for _, out, _ in results):
            raise RuntimeError("a batched generate returned the wrong number of results")
        self.calls = {"encode": 0, "generate": 0}
        self.rows = {"encode": 0, "generate": 0}

    def stats(self) -> dict[str, Any]:
        return {"calls": dict(self.calls), "rows": dict(self.rows)}


class _Route:
    """The scheduler and cancel token of the transcription running in this thread."""

    def __init__(self, scheduler: Any, cancel: CancelToken) -> None:
        self.scheduler = scheduler
        self.cancel = cancel
        self.waited = 0.0  # seconds spent in batched ops (queueing + the shared call)
        self.ops = 0
        self.ended = False


class RoutedWhisper:
    """Stands in for faster-whisper's ``WhisperModel.model`` (a ``ctranslate2.models.Whisper``):
    ``encode``/``generate`` called from a thread inside :meth:`route` go through its scheduler;
    everything else (and every call outside a route) goes straight to the real model."""

    def __init__(self, model: Any, sot: int) -> None:
        self._model = model
        self._sot = sot
        self._tls = threading.local()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    @property
    def real(self) -> Any:
        return self._model

    def current(self) -> _Route | None:
        return getattr(self._tls, "route", None)

    def enter(self, route: _Route | None) -> _Route | None:
        prev = self.current()
        self._tls.route = route
        return prev

    def _submit(self, route: _Route, op: _Op) -> Any:
        t0 = time.perf_counter()
        try:
            # read to the end: the scheduler marks the op done after its result (closing the
            # iterator earlier would cancel the whole transcription's token)
            out = list(route.scheduler.submit(op, route.cancel))
        finally:
            route.waited += time.perf_counter() - t0
            route.ops += 1
        return out[0]

    def encode(self, features: Any, to_cpu: bool = False) -> Any:
        route = self.current()
        if route is None:
            return self._model.encode(features, to_cpu=to_cpu)
        import ctranslate2

        arr = np.asarray(features) if not isinstance(features, np.ndarray) else features
        if arr.ndim == 2:
            arr = arr[None]
        rows = self._submit(route, _Op("encode", arr))
        return ctranslate2.StorageView.from_array(rows)

    def generate(self, features: Any, prompts: list[list[int]], **kwargs: Any) -> Any:
        route = self.current()
        if route is None or kwargs.get("asynchronous"):
            return self._model.generate(features, prompts, **kwargs)
        arr = np.asarray(features) if not isinstance(features, np.ndarray) else features
        shapes = {(p.index(self._sot) if self._sot in p else -1, len(p)) for p in prompts}
        key = (_frozen(kwargs), arr.shape[1:], str(arr.dtype), tuple(sorted(shapes)) if len(shapes) == 1
               else ("alone", id(prompts)))
        return self._submit(route, _Op("generate", arr, [list(p) for p in prompts], kwargs, key))
