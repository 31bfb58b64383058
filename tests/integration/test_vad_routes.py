"""VAD on by default for file transcription (server and CLI), the speech-timestamps route, ``voxbox vad``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_harness import RunningServer, make_settings


def _wav(samples: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


SILENCE = _wav(np.zeros(16000 * 3, np.float32))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = RunningServer(make_settings(tmp_path_factory.mktemp("vad"),
                                      models={"preload_defaults": False, "preload": ["whisper-1"]})).start()
    yield srv
    srv.stop()


def test_silence_transcribes_to_nothing(server):
    """3 s of digital silence: "" with VAD (the default); Whisper's "You" without it."""
    client = server.openai()
    t = client.audio.transcriptions.create(model="whisper-1", file=("silence.wav", SILENCE))
    assert t.text == ""
    raw = client.audio.transcriptions.create(model="whisper-1", file=("silence.wav", SILENCE),
                                             extra_body={"vad": "false"})
    assert raw.text.strip() != ""  # negative control: the hallucination VAD prevents


def test_times_stay_in_the_original_timeline(server, moonshine_assets):
    from voxbox.audio.decode import decode

    beckett = decode(str(moonshine_assets / "beckett.wav"), sample_rate=16000).samples
    padded = _wav(np.concatenate([np.zeros(16000 * 4, np.float32), beckett]))
    r = httpx.post(server.url + "/v1/audio/transcriptions", timeout=120,
                   files={"file": ("padded.wav", padded)},
                   data={"model": "whisper-1", "response_format": "verbose_json", "timestamp_granularities[]": "word"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert abs(body["duration"] - (4.0 + len(beckett) / 16000)) < 0.05
    assert 3.9 <= body["words"][0]["start"] <= 4.6  # "Ever" ~0.1 s into the recording, after 4 s of silence
    assert body["segments"][0]["start"] >= 3.5
    assert "fail better" in body["text"].lower()


def test_speech_timestamps_route(server, moonshine_assets):
    data = (moonshine_assets / "beckett.wav").read_bytes()
    r = httpx.post(server.url + "/v1/audio/speech/timestamps", files={"file": ("b.wav", data)}, timeout=60)
    assert r.status_code == 200, r.text
    regions = r.json()
    assert regions and all(set(x) == {"start", "end"} and x["start"] < x["end"] for x in regions)
    assert regions[0]["start"] < 500 and regions[-1]["end"] > 8500  # milliseconds
    r = httpx.post(server.url + "/v1/audio/speech/timestamps", files={"file": ("s.wav", SILENCE)}, timeout=60)
    assert r.status_code == 200 and r.json() == []
    r = httpx.post(server.url + "/v1/audio/speech/timestamps", files={"file": ("b.wav", data)},
                   data={"threshold": "2"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "threshold"
    r = httpx.post(server.url + "/v1/audio/speech/timestamps", files={"file": ("x.wav", b"not audio")}, timeout=60)
    assert r.status_code in (400, 415) and r.json()["error"]["param"] == "file"


def test_cli_vad_and_transcribe_silence(tmp_path, moonshine_assets):
    silence = tmp_path / "silence.wav"
    silence.write_bytes(SILENCE)
    cmd = [sys.executable, "-m", "voxbox.cli"]
    r = subprocess.run([*cmd, "vad", str(moonshine_assets / "beckett.wav"), "-f", "json"], check=False,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    regions = json.loads(r.stdout)
    assert regions and regions[0]["start"] < 500
    r = subprocess.run([*cmd, "transcribe", str(silence), "-f", "json"], check=False, capture_output=True,
                       text=True, timeout=180)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["text"] == ""
