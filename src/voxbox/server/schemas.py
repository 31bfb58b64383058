"""Request and response shapes of the OpenAI audio API (and voxbox's voice/model extensions)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

__all__ = [
    "SPEECH_FORMATS",
    "METRICS_RESPONSE",
    "SPEECH_RESPONSE",
    "TRANSCRIPTION_FORM",
    "TRANSCRIPTION_RESPONSE",
    "TRANSCRIPT_FORMATS",
    "VOICE_FORM",
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

    model: StrictStr = Field(examples=["tts-1"], description="A speech model name from GET /v1/models.")
    input: StrictStr = Field(max_length=4096, examples=["Hello from voxbox."])
    voice: StrictStr | VoiceRef = Field(examples=["alloy"])
    #: A voice description for engines with voice design; other engines ignore it (OpenAI: a style hint).
    instructions: StrictStr | None = Field(default=None, max_length=4096)
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
    memory_bytes: int | None = None  # estimated, while loaded
    running: int = 0  # requests holding a slot
    waiting: int = 0  # requests queued


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


def _form_body(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    """``openapi_extra`` publishing a multipart route's request body (the route parses it itself)."""
    return {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
        "type": "object", "properties": properties, "required": required}}}}}


TRANSCRIPTION_FORM = _form_body({
    "file": {"type": "string", "format": "binary", "description": "Audio file (wav, mp3, flac, ogg, m4a, webm...)."},
    "model": {"type": "string", "description": "A model name from GET /v1/models.", "example": "whisper-1"},
    "language": {"type": "string", "description": "ISO-639-1 code of the spoken language."},
    "prompt": {"type": "string", "maxLength": 4096},
    "response_format": {"type": "string", "enum": list(TRANSCRIPT_FORMATS), "default": "json"},
    "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["word", "segment"]}},
    "stream": {"type": "boolean", "default": False},
    "vad": {"type": "boolean", "default": True,
            "description": "voxbox extension: skip silence with voice activity detection first "
                           "(server default from VOXBOX_ASR__VAD)."},
}, ["file", "model"])

VOICE_FORM = _form_body({
    "name": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"},
    "file": {"type": "string", "format": "binary", "description": "Reference clip (at most 60 s by default)."},
    "transcript": {"type": "string", "maxLength": 2000, "description": "What the clip says (helps cloning)."},
}, ["name", "file"])


#: One server-sent event (``data:`` carries a JSON object: speech.audio.delta/done, transcript.text.delta/done).
_SSE_EVENT = {"type": "object", "properties": {"data": {"type": "string"}, "event": {"type": "string"},
                                               "id": {"type": "string"}}}

#: The success responses of the binary/text routes, for /openapi.json (FastAPI would say JSON).
SPEECH_RESPONSE: dict[int | str, dict[str, Any]] = {200: {
    "description": "Audio in the requested format (chunked as it is made), or server-sent events with "
                   "stream_format=sse.",
    "content": {mime: {"schema": {"type": "string", "format": "binary"}} for mime in (
        "audio/mpeg", "audio/ogg", "audio/aac", "audio/flac", "audio/wav", "audio/pcm")}
    | {"text/event-stream": {"schema": _SSE_EVENT}},
}}

TRANSCRIPTION_RESPONSE: dict[int | str, dict[str, Any]] = {200: {
    "description": "The transcript: JSON (json, verbose_json), text (text, srt, vtt), or server-sent events.",
    "content": {"application/json": {"schema": {"type": "object"}},
                "text/plain": {"schema": {"type": "string"}},
                "text/event-stream": {"schema": _SSE_EVENT}},
}}

METRICS_RESPONSE: dict[int | str, dict[str, Any]] = {200: {
    "description": "Prometheus text exposition format.",
    "content": {"text/plain": {"schema": {"type": "string"}}},
}}
