"""Request and response shapes of the OpenAI audio API (and voxbox's voice/model extensions)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

__all__ = [
    "SPEECH_FORMATS",
    "TRANSCRIPT_FORMATS",
    "ModelObject",
    "SpeechRequest",
    "VoiceObject",
    "VoiceRef",
]

SPEECH_FORMATS = ("mp3", "opus", "aac", "flac", "wav", "pcm")
TRANSCRIPT_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")


class VoiceRef(BaseModel):
    """A custom voice reference, as the OpenAI schema allows: ``{"id": "my-voice"}``."""

    model_config = ConfigDict(extra="forbid")
    id: StrictStr


class SpeechRequest(BaseModel):
    # Unknown fields are ignored so newer SDKs keep working; known ones are strictly typed.
    model_config = ConfigDict(extra="ignore")

    model: StrictStr
    input: StrictStr = Field(max_length=4096)
    voice: StrictStr | VoiceRef
    instructions: StrictStr | None = Field(default=None, max_length=4096)  # accepted, not used
    response_format: Literal["mp3", "opus", "aac", "flac", "wav", "pcm"] = "mp3"
    speed: StrictFloat | StrictInt = 1.0
    stream_format: Literal["audio", "sse"] = "audio"

    @property
    def voice_name(self) -> str:
        return self.voice.id if isinstance(self.voice, VoiceRef) else self.voice


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "voxbox"
    # voxbox extensions (extra properties are allowed by the OpenAI schema)
    task: Literal["tts", "asr"] | None = None
    engine: str | None = None
    loaded: bool = False
    voices: list[str] | None = None


class VoiceObject(BaseModel):
    id: str
    object: Literal["voice"] = "voice"
    name: str
    type: Literal["builtin", "uploaded"]
    models: list[str] = Field(default_factory=list)
    #: For OpenAI voice names: the engine voice each model plays for it (model -> voice).
    alias_of: dict[str, str] | None = None
    #: What the engine says about its voices (e.g. that every OpenAI name sounds the same).
    note: str | None = None
    sha256: str | None = None
    transcript: str | None = None
    created: int | None = None
    bytes: int | None = None
    duration: float | None = None


def list_body(items: list[Any]) -> dict[str, Any]:
    return {"object": "list", "data": items}
