"""Bad input gets the documented status and an OpenAI error body; the server keeps serving.

Documented statuses: 400 bad parameters / missing fields / wrong types, 401 bad API key,
404 unknown model or voice, 413 upload over the limit, 415 undecodable audio.
"""

from __future__ import annotations

import io
import os
import sys
import wave
from pathlib import Path

import httpx
import numpy as np
import openai
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_harness import RunningServer, make_settings, validate  # noqa: E402

KEY = "sk-test-key-123"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("errors"), api_key=KEY, max_upload_bytes=10 * 1024 * 1024,
                             max_audio_seconds=30, max_speech_chars=300)
    srv = RunningServer(settings).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def auth():
    return {"Authorization": f"Bearer {KEY}"}


def _wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    pcm = (0.3 * np.sin(2 * np.pi * 220 * t) * 32767).astype("<i2").tobytes()
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm)
    return buf.getvalue()


def _error(r: httpx.Response, status: int, code: str | None = None, param: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    validate("ErrorResponse", body)
    if code is not None:
        assert body["error"]["code"] == code, body
    if param is not None:
        assert body["error"]["param"] == param, body
    return body


def _still_serving(server, auth) -> None:
    assert httpx.get(server.url + "/health", timeout=5).status_code == 200
    r = httpx.post(server.url + "/v1/audio/speech", headers=auth, timeout=30,
                   json={"model": "tts-1", "voice": "alloy", "input": "Still here.", "response_format": "wav"})
    assert r.status_code == 200 and len(r.content) > 1000


def _transcribe(server, auth, data: bytes, name: str = "a.wav", **fields) -> httpx.Response:
    return httpx.post(server.url + "/v1/audio/transcriptions", headers=auth, timeout=60,
                      files={"file": (name, data, "application/octet-stream")},
                      data={"model": "whisper-1", **fields})


def test_random_bytes_415(server, auth):
    _error(_transcribe(server, auth, os.urandom(64 * 1024), "noise.mp3"), 415)
    _still_serving(server, auth)


def test_zero_length_415(server, auth):
    _error(_transcribe(server, auth, b""), 415, param="file")
    _still_serving(server, auth)


def test_truncated_wav_415(server, auth):
    _error(_transcribe(server, auth, _wav()[:30]), 415)
    _still_serving(server, auth)


def test_upload_over_limit_413(server, auth):
    big = _wav() + os.urandom(50 * 1024 * 1024)
    r = _transcribe(server, auth, big)
    _error(r, 413, code="upload_too_large")
    _still_serving(server, auth)


def test_decoded_audio_over_limit_413(server, auth, moonshine_assets):
    data = (moonshine_assets / "two_cities.wav").read_bytes()  # 44 s, 4 MB: under the byte limit
    assert len(data) < 10 * 1024 * 1024
    _error(_transcribe(server, auth, data), 413, code="audio_too_long")
    _still_serving(server, auth)


def test_upload_over_limit_via_sdk(server):
    client = server.openai(api_key=KEY)
    with pytest.raises(openai.APIStatusError) as exc:
        client.audio.transcriptions.create(model="whisper-1", file=("big.wav", b"\0" * (11 * 1024 * 1024)))
    assert exc.value.status_code == 413


def test_unknown_model_404(server, auth):
    client = server.openai(api_key=KEY)
    with pytest.raises(openai.NotFoundError) as exc:
        client.audio.speech.create(model="no-such-model", voice="alloy", input="Hi.")
    validate("ErrorResponse", exc.value.response.json())
    _error(_transcribe(server, auth, _wav(), model="nope"), 404, code="model_not_found")
    _error(httpx.get(server.url + "/v1/models/nope", headers=auth), 404)
    _still_serving(server, auth)


def test_unknown_voice_404(server, auth):
    client = server.openai(api_key=KEY)
    with pytest.raises(openai.NotFoundError) as exc:
        client.audio.speech.create(model="tts-1", voice="no-such-voice", input="Hi.")
    assert exc.value.response.json()["error"]["param"] == "voice"
    _still_serving(server, auth)


@pytest.mark.parametrize("body,param", [
    ({"voice": "alloy", "input": "Hi."}, "model"),
    ({"model": "tts-1", "voice": "alloy"}, "input"),
    ({"model": "tts-1", "input": "Hi."}, "voice"),
])
def test_missing_fields_400(server, auth, body, param):
    _error(httpx.post(server.url + "/v1/audio/speech", headers=auth, json=body), 400, param=param)


@pytest.mark.parametrize("patch,param", [
    ({"input": 123}, "input"),
    ({"speed": "fast"}, "speed"),
    ({"speed": 9.0}, "speed"),
    ({"response_format": "ogg-vorbis"}, "response_format"),
    ({"stream_format": "websocket"}, "stream_format"),
    ({"input": "   "}, "input"),
    ({"input": "x" * 5000}, "input"),
])
def test_wrong_types_400(server, auth, patch, param):
    body = {"model": "tts-1", "voice": "alloy", "input": "Hi.", **patch}
    _error(httpx.post(server.url + "/v1/audio/speech", headers=auth, json=body), 400, param=param)
    _still_serving(server, auth)


def test_speech_input_over_the_servers_limit_400(server, auth):
    """``max_speech_chars`` (300 here) bounds speech input below the schema's 4096: a clear 400."""
    body = {"model": "tts-1", "voice": "alloy", "input": "word " * 80}
    err = _error(httpx.post(server.url + "/v1/audio/speech", headers=auth, json=body), 400, param="input")
    assert "399 characters; the limit is 300" in err["error"]["message"], err
    ok = httpx.post(server.url + "/v1/audio/speech", headers=auth, json={**body, "input": "word " * 59})
    assert ok.status_code == 200 and len(ok.content) > 1000


def test_huge_json_body_413(server, auth):
    body = b'{"model": "tts-1", "voice": "alloy", "input": "' + b"a" * (2 * 1024 * 1024) + b'"}'
    r = httpx.post(server.url + "/v1/audio/speech", headers={**auth, "content-type": "application/json"},
                   content=body, timeout=30)
    _error(r, 413)
    _still_serving(server, auth)


def test_not_json_400(server, auth):
    r = httpx.post(server.url + "/v1/audio/speech", headers={**auth, "content-type": "application/json"},
                   content=b"{not json")
    _error(r, 400)


def test_transcription_bad_fields_400(server, auth):
    wav = _wav()
    _error(_transcribe(server, auth, wav, response_format="docx"), 400, param="response_format")
    _error(_transcribe(server, auth, wav, temperature="hot"), 400, param="temperature")
    _error(_transcribe(server, auth, wav, **{"timestamp_granularities[]": "char"}), 400,
           param="timestamp_granularities")
    r = httpx.post(server.url + "/v1/audio/transcriptions", headers=auth, data={"model": "whisper-1"},
                   files={"other": ("x", b"1")})
    _error(r, 400, param="file")
    r = httpx.post(server.url + "/v1/audio/transcriptions", headers=auth, json={"model": "whisper-1"})
    _error(r, 400)


def test_bad_api_key_401(server):
    bad = server.openai(api_key="wrong")
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()
    _error(httpx.get(server.url + "/v1/models"), 401, code="invalid_api_key")
    _error(httpx.get(server.url + "/v1/models", headers={"Authorization": "Bearer wrong"}), 401)
    _error(httpx.get(server.url + "/metrics"), 401)
    # health is exempt; the right key works
    assert httpx.get(server.url + "/health").status_code == 200
    assert httpx.get(server.url + "/health/ready").status_code == 200
    good = server.openai(api_key=KEY)
    assert any(m.id == "tts-1" for m in good.models.list())


def test_unknown_route_404_body(server, auth):
    _error(httpx.get(server.url + "/v1/nothing-here", headers=auth), 404)


def _request_count(server, auth, route: str, status: str) -> float:
    """voxbox_requests_total{route, status} as /metrics serves it (summed over methods)."""
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(server.url + "/metrics", headers=auth).text
    return sum(s.value for fam in text_string_to_metric_families(text) for s in fam.samples
               if s.name == "voxbox_requests_total" and s.labels.get("route") == route
               and s.labels.get("status") == status)


def test_errors_counted_by_status(server, auth):
    """Each error response adds one to its route/status counter (works alone: makes its own errors)."""
    t_route, s_route = "/v1/audio/transcriptions", "/v1/audio/speech"
    before = (_request_count(server, auth, t_route, "415"), _request_count(server, auth, s_route, "400"))
    _error(_transcribe(server, auth, b"not audio at all" * 64, "x.wav"), 415)
    _error(httpx.post(server.url + s_route, headers=auth, timeout=30,
                      json={"model": "tts-1", "voice": "alloy", "input": "hi", "speed": 99}), 400)
    after = (_request_count(server, auth, t_route, "415"), _request_count(server, auth, s_route, "400"))
    assert after == (before[0] + 1, before[1] + 1), (before, after)
