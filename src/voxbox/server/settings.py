"""Server settings: ``VOXBOX_*`` environment variables (nested with ``__``), a ``.env`` file, and the
flags of ``voxbox serve`` (which override both).

::

    VOXBOX_PORT=9000
    VOXBOX_API_KEY=sk-local-...
    VOXBOX_MODELS__TTS=tts-1-hd                                   # default speech model
    VOXBOX_MODELS__LOCAL='{"my-whisper": "torch-whisper:/srv/models/ft"}'   # names clients may use
    VOXBOX_MODELS__MAX_LOADED=4
    VOXBOX_MODELS__TTL=600                                         # idle seconds before unload; -1 never
    VOXBOX_ADMISSION__MAX_CONCURRENCY=2                            # per model; default from the engine
    VOXBOX_ADMISSION__QUEUE_SIZE=16
    VOXBOX_ADMISSION__BATCHING=true                                # batch across requests (default: on CUDA)
    VOXBOX_ALLOWED_HOSTS='["speech.lan", "192.168.1.20"]'          # Host header allowlist
    VOXBOX_CORS__ALLOW_ORIGINS='["http://localhost:3000"]'        # browsers on other origins
    VOXBOX_VOICES__PRELOAD='["narrator"]'
    VOXBOX_ASR__VAD=false                                          # transcribe silence too (default: skip it)
    VOXBOX_REALTIME__PARTIAL_INTERVAL_MS=300                       # live captions: re-decode cadence

Settings are read once, at the edge (``voxbox serve`` / ``create_app``); everything below takes
explicit arguments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from voxbox.paths import data_dir as default_data_dir
from voxbox.paths import models_dir as default_models_dir

__all__ = ["AdmissionSettings", "AsrSettings", "CorsSettings", "ModelSettings", "RealtimeSettings", "ServerSettings",
           "VoiceSettings", "default_data_dir"]


class ModelSettings(BaseModel):
    #: Default speech model (a catalog name).
    tts: str = "tts-1"
    #: Default transcription model (a catalog name).
    asr: str = "whisper-1"
    #: The operator's own models: catalog name -> ``ENGINE:PATH`` (or {"engine", "path", "options"}).
    #: Clients can only ever name models; paths come from here or ``voxbox serve --model``.
    local: dict[str, Any] = Field(default_factory=dict)
    #: Folder whose well-known subfolders (``kokoro``, ``parakeet-tdt-0.6b``...) are served by name.
    dir: Path = Field(default_factory=default_models_dir)
    #: Load the default models at start-up (``/health/ready`` is 503 until they are loaded).
    preload_defaults: bool = True
    #: Extra models to load at start-up (catalog names, e.g. ``tts-1-hd``).
    preload: list[str] = Field(default_factory=list)
    #: Seconds a model may stay idle before it is unloaded; -1 keeps models loaded forever.
    ttl: float = 300.0
    #: Models loaded at once; loading another unloads the least recently used idle one (503 if all are busy).
    max_loaded: int = Field(default=4, ge=1)
    #: Memory budget for loaded models in GiB (estimated from each engine's components); None = no budget.
    memory_budget_gb: float | None = Field(default=None, gt=0)
    #: Device passed to engines ("auto", "cpu", "cuda"...).
    device: str = "auto"


class AdmissionSettings(BaseModel):
    #: Requests that may run at once per model; ``None`` takes the engine's ``max_concurrency``.
    max_concurrency: int | None = Field(default=None, ge=1)
    #: Requests that may wait per model; beyond this a request gets 429 with Retry-After.
    queue_size: int = Field(default=16, ge=0)
    #: Seconds a request may take in all (queue wait included); 504 beyond it.
    request_timeout: float = Field(default=300.0, gt=0)
    #: Worker threads for engine work and decoding; None = min(64, 8 + 4 x CPUs).
    workers: int | None = Field(default=None, ge=1)
    #: Batch requests across clients for engines that can (fish-s2, echo-tts, faster-whisper): None = on where
    #: the model runs on CUDA, off on the CPU. A batched model admits ``batch_max`` requests at once.
    batching: bool | None = None
    #: Sequences decoded together per model (slots); None = 16, fewer if GPU memory holds fewer.
    batch_max: int | None = Field(default=None, ge=1)
    #: Milliseconds an idle batched model waits for more requests before it starts a batch.
    batch_window_ms: float = Field(default=5.0, ge=0, le=1000)


class VoiceSettings(BaseModel):
    #: Engine encodings of reference clips kept in memory (least recently used are evicted).
    cache_size: int = Field(default=32, ge=1)
    #: Uploaded voices to encode at start-up for the default speech model (if it can clone).
    preload: list[str] = Field(default_factory=list)
    #: Longest reference clip accepted, seconds.
    max_clip_seconds: float = Field(default=60.0, gt=0)
    #: Longest transcript of a reference clip, characters.
    max_transcript_chars: int = Field(default=2000, ge=1)


class AsrSettings(BaseModel):
    #: Voice activity detection before transcribing files (Silero VAD): silence and music-only
    #: stretches are skipped, pure silence gives an empty transcript. Per request: form field ``vad``.
    vad: bool = True
    #: VAD speech threshold (0-1) for files.
    vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    #: Silence that separates two speech regions in a file, ms.
    vad_min_silence_ms: int = Field(default=1000, ge=0, le=60000)
    #: Audio kept around each speech region, ms.
    vad_speech_pad_ms: int = Field(default=400, ge=0, le=60000)


class RealtimeSettings(BaseModel):
    #: Serve ``/v1/realtime?intent=transcription`` (OpenAI Realtime transcription sessions).
    enabled: bool = True
    #: While the user speaks, the growing turn is re-decoded this often and new words are sent
    #: as ``...input_audio_transcription.delta`` events; 0 turns partial results off.
    partial_interval_ms: int = Field(default=500, ge=0, le=10000)
    #: A turn longer than this is committed even without a pause, seconds.
    max_turn_seconds: float = Field(default=30.0, gt=1, le=600)
    #: Beam size of the final decode of a turn (partials are greedy); None = the engine's default.
    beam_size: int | None = Field(default=None, ge=1, le=16)
    #: Concurrent sessions per server; more are refused with an error event.
    max_sessions: int = Field(default=32, ge=1)
    #: Seconds a session may stay open in all.
    max_session_seconds: float = Field(default=3600.0, gt=0)


class CorsSettings(BaseModel):
    #: Origins (``scheme://host[:port]``) whose pages may call the API from a browser. Empty = none:
    #: cross-origin requests are refused (403) and no CORS headers are sent.
    allow_origins: list[str] = Field(default_factory=list)


class ServerSettings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="VOXBOX_",
        env_nested_delimiter="__",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    #: Optional API key; when set every route but /health needs ``Authorization: Bearer <key>``
    #: (the API docs and /openapi.json too).
    api_key: SecretStr | None = None
    #: ``Host`` header values accepted (host names, optionally with ``:port``). Default: the loopback
    #: names when bound to loopback, anything when bound to another address (set it then!).
    allowed_hosts: list[str] | None = None
    #: Serve /docs and /openapi.json (behind the API key when one is set).
    docs: bool = True
    #: Where uploaded voices and cached encodings live.
    data_dir: Path = Field(default_factory=default_data_dir)
    #: Where the web page looks for ``voxbox bench`` results (default ``./bench-results``).
    bench_dir: Path | None = None
    #: Largest request body accepted (uploads), bytes. OpenAI's limit is 25 MB.
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1)
    #: Largest JSON request body, bytes (speech requests carry at most 4096 characters of text).
    max_json_bytes: int = Field(default=1024 * 1024, ge=1024)
    #: Longest speech input accepted, characters: OpenAI's limit (4096) at most; lower it to bound
    #: the synthesis one request can ask for (HTTP and Wyoming alike).
    max_speech_chars: int = Field(default=4096, ge=1, le=4096)
    #: Longest decoded audio accepted for transcription, seconds (1 hour).
    max_audio_seconds: float = Field(default=3600.0, gt=0)
    #: Seconds to let in-flight requests finish after SIGTERM before cancelling them.
    shutdown_grace: float = Field(default=10.0, ge=0)
    log_level: str = "info"

    models: ModelSettings = Field(default_factory=ModelSettings)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    voices: VoiceSettings = Field(default_factory=VoiceSettings)
    asr: AsrSettings = Field(default_factory=AsrSettings)
    realtime: RealtimeSettings = Field(default_factory=RealtimeSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)

    def api_key_value(self) -> str | None:
        if self.api_key is None:
            return None
        value = self.api_key.get_secret_value()
        return value or None

    def host_allowlist(self) -> list[str] | None:
        """The Host values to accept, or None for any (bound to a non-loopback address, unset)."""
        if self.allowed_hosts is not None:
            return list(self.allowed_hosts)
        if self.host in ("127.0.0.1", "::1", "localhost", "[::1]"):
            return ["127.0.0.1", "localhost", "[::1]", "::1"]
        return None
