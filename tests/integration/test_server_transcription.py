"""POST /v1/audio/transcriptions and /translations through a real server and the openai SDK."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_harness import RunningServer, make_settings, sse_events, validate  # noqa: E402


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = RunningServer(make_settings(tmp_path_factory.mktemp("asr"))).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def client(server):
    return server.openai()


@pytest.fixture(scope="module")
def speech_wav(client) -> bytes:
    """A known sentence spoken by hibari through the server itself."""
    return client.audio.speech.create(model="tts-1", voice="alloy", response_format="wav",
                                      input="The quick brown fox jumps over the lazy dog.").content


def _words(text: str) -> set[str]:
    return {w.strip(".,!?").lower() for w in text.split()}


def test_json(client, speech_wav):
    t = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", speech_wav))
    assert {"quick", "brown", "fox", "lazy", "dog"} <= _words(t.text)
    validate("CreateTranscriptionResponseJson", t.model_dump(exclude_none=True))


def test_text_srt_vtt(client, speech_wav):
    text = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", speech_wav), response_format="text")
    assert isinstance(text, str) and "fox" in text.lower()
    srt = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", speech_wav), response_format="srt")
    assert srt.startswith("1\n00:00:00,") and " --> " in srt
    vtt = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", speech_wav), response_format="vtt")
    assert vtt.startswith("WEBVTT\n\n") and " --> " in vtt


def test_verbose_json_with_word_timestamps(server, moonshine_assets):
    """A human recording; raw HTTP so the exact JSON body is validated against the schema."""
    data = (moonshine_assets / "beckett.wav").read_bytes()
    r = httpx.post(server.url + "/v1/audio/transcriptions", timeout=120,
                   files={"file": ("beckett.wav", data, "audio/wav")},
                   data={"model": "whisper-1", "response_format": "verbose_json",
                         "timestamp_granularities[]": ["word", "segment"]})
    assert r.status_code == 200, r.text
    body = r.json()
    validate("CreateTranscriptionResponseVerboseJson", body)
    assert abs(body["duration"] - 9.96) < 0.1
    assert body["segments"] and body["words"]
    starts = [w["start"] for w in body["words"]]
    assert starts == sorted(starts) and body["words"][-1]["end"] <= body["duration"] + 0.5
    assert len(body["words"]) >= 10
    assert "server-timing" in r.headers and "decode_audio;dur=" in r.headers["server-timing"]


def test_verbose_json_via_sdk(client, speech_wav):
    t = client.audio.transcriptions.create(model="whisper-1", file=("a.wav", speech_wav),
                                           response_format="verbose_json", timestamp_granularities=["word"])
    assert t.words and {"fox", "dog"} <= {w.word.strip(".,").lower() for w in t.words}
    assert t.duration > 1


def test_stream_sse(client, server, speech_wav):
    events = list(client.audio.transcriptions.create(model="whisper-1", file=("a.wav", speech_wav), stream=True))
    assert events[-1].type == "transcript.text.done"
    assert all(e.type == "transcript.text.delta" for e in events[:-1]) and len(events) >= 2
    assert "fox" in events[-1].text.lower()
    # raw events validate against the official stream-event schemas
    with httpx.stream("POST", server.url + "/v1/audio/transcriptions", timeout=120,
                      files={"file": ("a.wav", speech_wav, "audio/wav")},
                      data={"model": "whisper-1", "stream": "true"}) as r:
        raw = sse_events(r.iter_lines())
    for e in raw:
        validate("CreateTranscriptionResponseStreamEvent", e)
    assert raw[-1]["type"] == "transcript.text.done" and "timings_ms" in raw[-1]


def test_translation_on_english_only_model_is_400(client, speech_wav):
    import openai

    with pytest.raises(openai.BadRequestError) as exc:
        client.audio.translations.create(model="whisper-1", file=("a.wav", speech_wav))
    body = exc.value.response.json()
    validate("ErrorResponse", body)
    assert body["error"]["code"] == "unsupported_operation"


def test_audio_consumed_metric(server, client, speech_wav):
    before = server.metric("voxbox_audio_consumed_seconds_total", model="whisper-1")
    client.audio.transcriptions.create(model="whisper-1", file=("a.wav", speech_wav), response_format="text")
    assert server.metric("voxbox_audio_consumed_seconds_total", model="whisper-1") > before + 1


def test_translation_with_multilingual_model(server, speech_wav):
    """``base`` is multilingual: /translations runs Whisper's translate task (English stays English)."""
    r = httpx.post(server.url + "/v1/audio/translations", timeout=180,
                   files={"file": ("a.wav", speech_wav, "audio/wav")},
                   data={"model": "faster-whisper:base", "response_format": "verbose_json"})
    assert r.status_code == 200, r.text
    body = r.json()
    validate("CreateTranslationResponseVerboseJson", body)
    assert body["language"] == "english" and "fox" in body["text"].lower()
    r = httpx.post(server.url + "/v1/audio/translations", timeout=180,
                   files={"file": ("a.wav", speech_wav, "audio/wav")}, data={"model": "faster-whisper:base"})
    validate("CreateTranslationResponseJson", r.json())
    listed = {m["id"] for m in httpx.get(server.url + "/v1/models").json()["data"]}
    assert "faster-whisper:base" in listed  # loaded models are listed under their full id
