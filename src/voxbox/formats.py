"""Transcript formatters: text, json, verbose_json, srt, vtt — pure functions over Segments.

The CLI and the server share these. ``transcript_dict`` matches OpenAI's ``verbose_json`` shape::

    {"task", "language", "duration", "text",
     "segments": [{"id", "seek", "start", "end", "text", "tokens", "temperature",
                   "avg_logprob", "compression_ratio", "no_speech_prob"}],
     "words": [{"word", "start", "end"}],          # only when word timestamps were asked for
     "usage": {"type": "duration", "seconds": N}}

``language`` is the lower-case English name, as OpenAI returns it (``"english"``).
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable

from voxbox.errors import BadInputError
from voxbox.types import Segment, TranscriptionInfo

__all__ = [
    "FORMATS",
    "LANGUAGE_NAMES",
    "MEDIA_TYPES",
    "format_timestamp",
    "format_transcript",
    "language_name",
    "transcript_dict",
    "transcript_text",
]

FORMATS = ("text", "json", "verbose_json", "srt", "vtt")
MEDIA_TYPES = {
    "text": "text/plain; charset=utf-8",
    "json": "application/json",
    "verbose_json": "application/json",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}

#: Whisper's language codes -> names.
LANGUAGE_NAMES = {
    "en": "english", "zh": "chinese", "de": "german", "es": "spanish", "ru": "russian", "ko": "korean",
    "fr": "french", "ja": "japanese", "pt": "portuguese", "tr": "turkish", "pl": "polish", "ca": "catalan",
    "nl": "dutch", "ar": "arabic", "sv": "swedish", "it": "italian", "id": "indonesian", "hi": "hindi",
    "fi": "finnish", "vi": "vietnamese", "he": "hebrew", "uk": "ukrainian", "el": "greek", "ms": "malay",
    "cs": "czech", "ro": "romanian", "da": "danish", "hu": "hungarian", "ta": "tamil", "no": "norwegian",
    "th": "thai", "ur": "urdu", "hr": "croatian", "bg": "bulgarian", "lt": "lithuanian", "la": "latin",
    "mi": "maori", "ml": "malayalam", "cy": "welsh", "sk": "slovak", "te": "telugu", "fa": "persian",
    "lv": "latvian", "bn": "bengali", "sr": "serbian", "az": "azerbaijani", "sl": "slovenian", "kn": "kannada",
    "et": "estonian", "mk": "macedonian", "br": "breton", "eu": "basque", "is": "icelandic", "hy": "armenian",
    "ne": "nepali", "mn": "mongolian", "bs": "bosnian", "kk": "kazakh", "sq": "albanian", "sw": "swahili",
    "gl": "galician", "mr": "marathi", "pa": "punjabi", "si": "sinhala", "km": "khmer", "sn": "shona",
    "yo": "yoruba", "so": "somali", "af": "afrikaans", "oc": "occitan", "ka": "georgian", "be": "belarusian",
    "tg": "tajik", "sd": "sindhi", "gu": "gujarati", "am": "amharic", "yi": "yiddish", "lo": "lao",
    "uz": "uzbek", "fo": "faroese", "ht": "haitian creole", "ps": "pashto", "tk": "turkmen", "nn": "nynorsk",
    "mt": "maltese", "sa": "sanskrit", "lb": "luxembourgish", "my": "myanmar", "bo": "tibetan", "tl": "tagalog",
    "mg": "malagasy", "as": "assamese", "tt": "tatar", "haw": "hawaiian", "ln": "lingala", "ha": "hausa",
    "ba": "bashkir", "jw": "javanese", "su": "sundanese", "yue": "cantonese",
}


def language_name(code: str | None) -> str | None:
    if code is None:
        return None
    return LANGUAGE_NAMES.get(code, code)


def format_timestamp(seconds: float, *, sep: str = ",", always_hours: bool = True) -> str:
    """``HH:MM:SS,mmm`` (srt, ``sep=","``) or ``HH:MM:SS.mmm`` (vtt, ``sep="."``)."""
    ms = max(0, int(round(float(seconds) * 1000.0)))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    if always_hours or h:
        return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"
    return f"{m:02d}:{s:02d}{sep}{ms:03d}"


def transcript_text(segments: Iterable[Segment]) -> str:
    return "".join(s.text for s in segments).strip()


def _num(v: float | None, default: float = 0.0) -> float:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return default
    return float(v)


def transcript_dict(
    segments: Iterable[Segment],
    info: TranscriptionInfo,
    fmt: str = "verbose_json",
    *,
    words: bool = False,
) -> dict[str, Any]:
    """The JSON body for ``json`` ({"text", "usage"}) or ``verbose_json`` (OpenAI's shape)."""
    segs = list(segments)
    text = transcript_text(segs)
    usage = {"type": "duration", "seconds": int(math.ceil(_num(info.duration)))}
    if fmt == "json":
        return {"text": text, "usage": usage}
    if fmt != "verbose_json":
        raise BadInputError(f"transcript_dict handles json and verbose_json, not {fmt!r}", param="response_format")
    out: dict[str, Any] = {
        "task": info.task,
        "language": language_name(info.language),
        "duration": round(_num(info.duration), 3),
        "text": text,
        "segments": [
            {
                "id": i,
                "seek": int(round(_num(s.start) * 100)),
                "start": round(_num(s.start), 3),
                "end": round(_num(s.end), 3),
                "text": s.text,
                "tokens": list(s.tokens or []),
                "temperature": _num(s.temperature),
                "avg_logprob": _num(s.avg_logprob),
                "compression_ratio": _num(s.compression_ratio),
                "no_speech_prob": _num(s.no_speech_prob),
            }
            for i, s in enumerate(segs)
        ],
    }
    if words:
        out["words"] = [
            {"word": w.word.strip(), "start": round(_num(w.start), 3), "end": round(_num(w.end), 3)}
            for s in segs
            for w in (s.words or [])
        ]
    out["usage"] = usage
    return out


def _cues(segs: list[Segment]) -> list[tuple[float, float, str]]:
    return [(_num(s.start), _num(s.end), s.text.strip()) for s in segs if s.text.strip()]


def format_transcript(segments: Iterable[Segment], info: TranscriptionInfo, fmt: str, *, words: bool = False) -> str:
    """Render a transcript as ``text``, ``json``, ``verbose_json``, ``srt`` or ``vtt``."""
    if fmt not in FORMATS:
        raise BadInputError(f"unknown transcript format {fmt!r}; choose one of {', '.join(FORMATS)}",
                            param="response_format")
    segs = list(segments)
    if fmt == "text":
        return transcript_text(segs) + "\n"
    if fmt in ("json", "verbose_json"):
        return json.dumps(transcript_dict(segs, info, fmt, words=words), ensure_ascii=False) + "\n"
    if fmt == "srt":
        blocks = [
            f"{i}\n{format_timestamp(a)} --> {format_timestamp(b)}\n{t}\n"
            for i, (a, b, t) in enumerate(_cues(segs), start=1)
        ]
        return "\n".join(blocks)
    # vtt
    blocks = [f"{format_timestamp(a, sep='.')} --> {format_timestamp(b, sep='.')}\n{t}\n" for a, b, t in _cues(segs)]
    return "WEBVTT\n\n" + "\n".join(blocks)
