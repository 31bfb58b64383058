"""Reference voices: content-addressed clips on disk, and a bounded cache of engine encodings.

Layout under the data dir::

    voices/clips/<sha256>            the reference clip's bytes, exactly as uploaded
    voices/index/<name>.json         {"name", "sha256", "transcript", "created", "bytes", "duration"}
    voices/encodings/<engine>/<model-digest>/<sha256>.pkl   an engine's encoding of a clip

An engine's encoding (speaker latent, reference codes...) is keyed by (engine, model, clip sha256):
the same clip uploaded under two names is encoded once, and an encoding survives restarts on disk.
In memory at most ``cache_size`` encodings are kept, least recently used evicted first.

The pickles are written and read only by this process under the operator's own data dir.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import pickle
import re
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

from voxbox.engines.base import EncodedVoice
from voxbox.errors import BadInputError, VoiceNotFoundError

__all__ = ["EncodingCache", "StoredVoice", "VoiceStore", "sha256_bytes", "validate_voice_name"]

log = logging.getLogger("voxbox.runtime")

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")

CacheKey = tuple[str, str, str]  # (engine, model, clip sha256)


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def validate_voice_name(name: Any) -> str:
    if not isinstance(name, str) or not _NAME.match(name):
        raise BadInputError(
            "voice name must be 1-64 characters of letters, digits, '_', '-' or '.', starting with a letter or digit",
            param="name",
        )
    return name


def _atomic_write(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


@dataclass(frozen=True)
class StoredVoice:
    name: str
    sha256: str
    transcript: str | None
    created: int
    bytes: int
    duration: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class EncodingCache:
    """Bounded in-memory LRU over an on-disk store of encodings, keyed by (engine, model, sha256)."""

    def __init__(self, root: Path | None, capacity: int) -> None:
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.root = root
        self.capacity = capacity
        self._mem: collections.OrderedDict[CacheKey, EncodedVoice] = collections.OrderedDict()
        self._lock = threading.Lock()
        self.stats = {"memory": 0, "disk": 0, "miss": 0, "evicted": 0}

    def __len__(self) -> int:
        return len(self._mem)

    def keys(self) -> list[CacheKey]:
        with self._lock:
            return list(self._mem)

    def _path(self, key: CacheKey) -> Path | None:
        if self.root is None:
            return None
        engine, model, sha = key
        model_digest = hashlib.sha256(model.encode()).hexdigest()[:16]
        safe_engine = re.sub(r"[^A-Za-z0-9_.-]", "_", engine)
        return self.root / safe_engine / model_digest / f"{sha}.pkl"

    def get(self, key: CacheKey, *, count: bool = True) -> tuple[EncodedVoice | None, str]:
        """(encoding or None, where: "memory" | "disk" | "miss")."""
        with self._lock:
            enc = self._mem.get(key)
            if enc is not None:
                self._mem.move_to_end(key)
                self.stats["memory"] += 1
                return enc, "memory"
        path = self._path(key)
        if path is not None and path.is_file():
            try:
                with open(path, "rb") as f:
                    payload = pickle.load(f)
                enc = EncodedVoice(key, payload["data"], payload.get("transcript"), payload.get("nbytes", 0))
            except Exception:  # noqa: BLE001 - a corrupt cache file is a miss, not an error; unpickling raises anything
                log.warning("ignoring unreadable voice encoding %s", path)
            else:
                self._remember(key, enc)
                with self._lock:
                    self.stats["disk"] += 1
                return enc, "disk"
        if count:
            with self._lock:
                self.stats["miss"] += 1
        return None, "miss"

    def put(self, key: CacheKey, enc: EncodedVoice, *, persist: bool = True) -> None:
        self._remember(key, enc)
        path = self._path(key)
        if persist and path is not None:
            try:
                payload = {"data": enc.data, "transcript": enc.transcript, "nbytes": enc.nbytes}
                _atomic_write(path, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
            except Exception:  # unpicklable encodings stay memory-only
                log.warning("could not persist voice encoding %s", key, exc_info=True)

    def _remember(self, key: CacheKey, enc: EncodedVoice) -> None:
        with self._lock:
            self._mem[key] = enc
            self._mem.move_to_end(key)
            while len(self._mem) > self.capacity:
                self._mem.popitem(last=False)
                self.stats["evicted"] += 1

    def drop_clip(self, sha: str) -> None:
        """Forget every encoding of a clip, in memory and on disk."""
        with self._lock:
            for key in [k for k in self._mem if k[2] == sha]:
                del self._mem[key]
        if self.root is not None and self.root.is_dir():
            for p in self.root.glob(f"*/*/{sha}.pkl"):
                try:
                    p.unlink()
                except OSError:
                    pass


class VoiceStore:
    """Uploaded reference voices under ``data_dir/voices`` plus the encoding cache."""

    def __init__(self, data_dir: Path, cache_size: int = 32) -> None:
        self.root = Path(data_dir) / "voices"
        self.clips = self.root / "clips"
        self.index = self.root / "index"
        self.clips.mkdir(parents=True, exist_ok=True)
        self.index.mkdir(parents=True, exist_ok=True)
        self.cache = EncodingCache(self.root / "encodings", cache_size)
        self._lock = threading.Lock()
        self._encode_locks: dict[CacheKey, threading.Lock] = {}

    # -- clips -----------------------------------------------------------------------------------
    def add(self, name: str, clip: bytes, transcript: str | None = None, duration: float | None = None) -> StoredVoice:
        validate_voice_name(name)
        if not clip:
            raise BadInputError("reference clip is empty", param="file")
        sha = sha256_bytes(clip)
        clip_path = self.clips / sha
        if not clip_path.is_file():
            _atomic_write(clip_path, clip)
        voice = StoredVoice(name=name, sha256=sha, transcript=transcript or None, created=int(time.time()),
                            bytes=len(clip), duration=duration)
        with self._lock:
            old = self._read(name)
            _atomic_write(self.index / f"{name}.json", json.dumps(voice.as_dict()).encode())
            if old is not None and old.sha256 != sha:
                self._gc_clip(old.sha256)
        return voice

    def _read(self, name: str) -> StoredVoice | None:
        path = self.index / f"{name}.json"
        if not path.is_file():
            return None
        try:
            return StoredVoice(**json.loads(path.read_text()))
        except (OSError, ValueError, TypeError):  # unreadable, not JSON, or wrong fields
            log.warning("ignoring unreadable voice index %s", path)
            return None

    def get(self, name: str) -> StoredVoice | None:
        if not isinstance(name, str) or not _NAME.match(name):
            return None
        return self._read(name)

    def list(self) -> list[StoredVoice]:
        out = []
        for p in sorted(self.index.glob("*.json")):
            v = self._read(p.stem)
            if v is not None:
                out.append(v)
        return out

    def clip_bytes(self, voice: StoredVoice) -> bytes:
        return (self.clips / voice.sha256).read_bytes()

    def delete(self, name: str) -> StoredVoice:
        with self._lock:
            voice = self.get(name)
            if voice is None:
                raise VoiceNotFoundError(f"voice {name!r} not found", param="name")
            (self.index / f"{name}.json").unlink(missing_ok=True)
            self._gc_clip(voice.sha256)
        return voice

    def _gc_clip(self, sha: str) -> None:
        if any(v.sha256 == sha for v in self.list()):
            return  # another name still uses this clip
        (self.clips / sha).unlink(missing_ok=True)
        self.cache.drop_clip(sha)

    # -- encodings -------------------------------------------------------------------------------
    def encoding(
        self,
        voice: StoredVoice,
        engine_name: str,
        model_name: str,
        encode: Callable[[bytes, str | None], EncodedVoice],
    ) -> tuple[EncodedVoice, str]:
        """The engine's encoding of ``voice``: (encoding, "memory" | "disk" | "miss").

        Blocking (may run the engine's encoder); call it from a worker thread. Concurrent calls for
        the same key encode once.
        """
        key: CacheKey = (engine_name, model_name, voice.sha256)
        enc, where = self.cache.get(key)
        if enc is not None:
            return enc, where
        with self._lock:
            lock = self._encode_locks.setdefault(key, threading.Lock())
        with lock:
            enc, where = self.cache.get(key, count=False)
            if enc is not None:
                return enc, where
            enc = encode(self.clip_bytes(voice), voice.transcript)
            enc = EncodedVoice(
                key, enc.data, enc.transcript if enc.transcript is not None else voice.transcript, enc.nbytes
            )
            self.cache.put(key, enc)
            return enc, "miss"
