"""Reference voices, encoded once per clip: the key of a clip and a small thread-safe LRU of its
encodings, shared by the cloning engines (fish-s2, OmniVoice, VoxCPM2)."""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, TypeVar

import numpy as np

from voxbox.types import Audio

__all__ = ["VoiceCache", "VoiceCacheStats", "clip_digest"]

T = TypeVar("T")


def clip_digest(audio: Audio) -> str:
    """SHA-256 of (sample rate, float32 samples): the same clip gives the same key in any engine."""
    return hashlib.sha256(np.int64(audio.sample_rate).tobytes()
                          + np.ascontiguousarray(audio.samples, np.float32).tobytes()).hexdigest()


class VoiceCache(Generic[T]):
    """At most ``max_items`` encodings by clip key, least recently used out first. Encoding runs
    outside the lock (two threads encoding the same new clip both encode; the second result wins)."""

    def __init__(self, max_items: int) -> None:
        self.max_items = max(1, int(max_items))
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[str, T] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> T | None:
        """The encoding of ``key`` if cached (marked as just used), else None; not counted."""
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def get_or_encode(self, key: str, encode: Callable[[], T]) -> T:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
                self.hits += 1
                return hit
        value = encode()
        with self._lock:
            self.misses += 1
            self._items[key] = value
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        return len(self._items)


class VoiceCacheStats:
    """Mixed into engines that keep their encoded reference voices in ``self._voices`` (a
    :class:`VoiceCache`): its hit and miss counts as ``voice_cache_hits`` / ``voice_cache_misses``."""

    _voices: VoiceCache[Any]

    @property
    def voice_cache_hits(self) -> int:
        return self._voices.hits

    @property
    def voice_cache_misses(self) -> int:
        return self._voices.misses
