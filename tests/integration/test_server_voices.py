"""Voice cloning through the server with a real cloning engine: Echo-TTS's own loading and inference
code on tiny random weights written in the upstream layout (its real weights are not reachable here).

Checks that an uploaded reference is encoded once per (engine, model, clip), then served from the
in-memory LRU (second use) and from disk after a restart, and that preloaded voices are warm."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_harness import RunningServer, decode_bytes, make_settings  # noqa: E402

from voxbox.engines import registry


def _echo_usable() -> bool:
    ok, _ = registry.available(registry.get_spec("echo-tts"))
    return ok


pytestmark = pytest.mark.skipif(not _echo_usable(), reason="echo-tts engine dependencies not installed")


ECHO = "echo"  # the catalog name the operator gives the local Echo-TTS directory


@pytest.fixture(scope="module")
def echo_local(tmp_path_factory) -> dict[str, str]:
    """``models.local`` for the settings: clients name the model, never its path."""
    from voxbox.engines.tts.echo._random import write_random_model

    root = write_random_model(tmp_path_factory.mktemp("echo") / "model", "tiny")
    return {ECHO: f"echo-tts:{root}"}


def _speak(srv: RunningServer, model: str, voice: str) -> httpx.Response:
    r = httpx.post(srv.url + "/v1/audio/speech", timeout=300,
                   json={"model": model, "voice": voice, "input": "Hello there.", "response_format": "wav"})
    assert r.status_code == 200, r.text
    samples, rate = decode_bytes(r.content, "wav")
    assert rate == 44100 and len(samples) > 0
    return r


def test_uploaded_voice_cached_in_memory_then_on_disk(tmp_path, echo_local, moonshine_assets):
    data_dir = tmp_path / "data"
    clip = (moonshine_assets / "clone-test.wav").read_bytes()
    srv = RunningServer(make_settings(data_dir, models={"preload_defaults": False, "local": echo_local})).start()
    try:
        assert httpx.post(srv.url + "/v1/voices", data={"name": "ref", "transcript": "A reference clip."},
                          files={"file": ("ref.wav", clip, "audio/wav")}).status_code == 201
        first = _speak(srv, ECHO, "ref")
        assert srv.metric("voxbox_voice_cache_total", result="miss") == 1
        second = _speak(srv, ECHO, "ref")
        assert srv.metric("voxbox_voice_cache_total", result="memory") == 1
        assert srv.metric("voxbox_voice_cache_total", result="miss") == 1  # not encoded again
        assert "voice;dur=" in first.headers["server-timing"] and "voice;dur=" in second.headers["server-timing"]
        # the same clip under another name is the same content: no new encoding
        httpx.post(srv.url + "/v1/voices", data={"name": "ref2"}, files={"file": ("r.wav", clip, "audio/wav")})
        _speak(srv, ECHO, "ref2")
        assert srv.metric("voxbox_voice_cache_total", result="miss") == 1
        assert srv.metric("voxbox_voice_cache_total", result="memory") == 2
        assert list((data_dir / "voices" / "encodings" / "echo-tts").glob("*/*.pkl"))
    finally:
        srv.stop()

    # restart on the same data dir: the encoding comes from disk, then memory
    srv = RunningServer(make_settings(data_dir, models={"preload_defaults": False, "local": echo_local})).start()
    try:
        _speak(srv, ECHO, "ref")
        assert srv.metric("voxbox_voice_cache_total", result="disk") == 1
        assert srv.metric("voxbox_voice_cache_total", result="miss") == 0
        _speak(srv, ECHO, "ref")
        assert srv.metric("voxbox_voice_cache_total", result="memory") == 1
    finally:
        srv.stop()

    # voices listed for preload are encoded at start-up for the default speech model
    srv = RunningServer(make_settings(data_dir, models={"tts": ECHO, "asr": "whisper-1", "local": echo_local},
                                      voices={"preload": ["ref"]})).start()
    try:
        assert srv.state.voices.cache.stats["disk"] == 1  # warmed before the first request
        _speak(srv, ECHO, "ref")
        assert srv.metric("voxbox_voice_cache_total", result="memory") == 1
        # deleting the voice removes its clip and encodings
        assert httpx.delete(srv.url + "/v1/voices/ref").status_code == 200
        assert httpx.delete(srv.url + "/v1/voices/ref2").status_code == 200
        assert not list((data_dir / "voices" / "encodings").glob("*/*/*.pkl"))
        r = httpx.post(srv.url + "/v1/audio/speech", timeout=60,
                       json={"model": ECHO, "voice": "ref", "input": "Hi.", "response_format": "wav"})
        assert r.status_code in (400, 404)
    finally:
        srv.stop()
