"""Server settings: ``VOXBOX_*`` environment variables (nested with ``__``), a ``.env`` file, and the
flags of ``voxbox serve`` (which override both).

::

    VOXBOX_PORT=9000
    VOXBOX_API_KEY=sk-local-...
    VOXBOX_MODELS__TTS=tts-1-hd            # default speech model
    VOXBOX_MODELS__TTL=600                 # idle seconds before unload; -1 never
    VOXBOX_ADMISSION__MAX_CONCURRENCY=2    # per model; default from the engine
    VOXBOX_ADMISSION__QUEUE_SIZE=16
    VOXBOX_VOICES__PRELOAD='["narrator"]'

Settings are read once, at the edge (``voxbox serve`` / ``create_app``); everything below takes
explicit arguments.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from voxbox.paths import data_dir

__all__ = ["AdmissionSettings", "ModelSettings", "ServerSettings", "VoiceSettings", "default_data_dir"]


def default_data_dir() -> Path:
    return data_dir()


class ModelSettings(BaseModel):
    #: Default speech model (used when a request names ``tts-1`` or the engine's alias).
    tts: str = "tts-1"
    #: Default transcription model.
    asr: str = "whisper-1"
    #: Load the default models at start-up (``/health/ready`` is 503 until they are loaded).
    preload_defaults: bool = True
    #: Extra models to load at start-up (model ids as accepted by the API, e.g. ``tts-1-hd``).
    preload: list[str] = Field(default_factory=list)
    #: Seconds a model may stay idle before it is unloaded; -1 keeps models loaded forever.
    ttl: float = 300.0
    #: Device passed to engines' ``load()`` ("auto", "cpu", "cuda"...).
    device: str = "auto"


class AdmissionSettings(BaseModel):
    #: Requests that may run at once per model; ``None`` takes the engine's ``max_concurrency``.
    max_concurrency: int | None = Field(default=None, ge=1)
    #: Requests that may wait per model; beyond this a request gets 429 with Retry-After.
    queue_size: int = Field(default=16, ge=0)
    #: Seconds a request may take in all (queue wait included); 504 beyond it.
    request_timeout: float = Field(default=300.0, gt=0)


class VoiceSettings(BaseModel):
    #: Engine encodings of reference clips kept in memory (least recently used are evicted).
    cache_size: int = Field(default=32, ge=1)
    #: Uploaded voices to encode at start-up for the default speech model (if it can clone).
    preload: list[str] = Field(default_factory=list)
    #: Longest reference clip accepted, seconds.
    max_clip_seconds: float = Field(default=60.0, gt=0)


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
    #: Optional API key; when set every route but /health needs ``Authorization: Bearer <key>``.
    api_key: SecretStr | None = None
    #: Where uploaded voices and cached encodings live.
    data_dir: Path = Field(default_factory=default_data_dir)
    #: Largest request body accepted (uploads), bytes. OpenAI's limit is 25 MB.
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, ge=1)
    #: Longest decoded audio accepted for transcription, seconds.
    max_audio_seconds: float = Field(default=3600.0, gt=0)
    #: Seconds to let in-flight requests finish after SIGTERM before cancelling them.
    shutdown_grace: float = Field(default=10.0, ge=0)
    log_level: str = "info"

    models: ModelSettings = Field(default_factory=ModelSettings)
    admission: AdmissionSettings = Field(default_factory=AdmissionSettings)
    voices: VoiceSettings = Field(default_factory=VoiceSettings)

    def api_key_value(self) -> str | None:
        if self.api_key is None:
            return None
        value = self.api_key.get_secret_value()
        return value or None
