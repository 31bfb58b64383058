"""OmniVoice and VoxCPM2 behind the real server, driven by the official openai SDK: OpenAI's
``instructions`` become OmniVoice's voice description, an uploaded voice (clip + transcript) is
cloned through the voice store, and bad input is a 400 naming the OpenAI field. Tiny random
checkpoints in the upstream layout; the operator maps catalog names to their directories."""

from __future__ import annotations

import io
import sys
import wave
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_harness import RunningServer, decode_bytes, make_settings  # noqa: E402

from voxbox.engines import registry  # noqa: E402

pytestmark = pytest.mark.skipif(
    not (registry.available(registry.get_spec("omnivoice"))[0] and registry.available(registry.get_spec("voxcpm2"))[0]),
    reason="omnivoice/voxcpm2 engine dependencies not installed")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    from voxbox.engines.tts.omnivoice._random import write_random_model as omni
    from voxbox.engines.tts.voxcpm2._random import write_random_model as vox

    tmp = tmp_path_factory.mktemp("omnivox")
    local = {"omni": f"omnivoice:{omni(tmp / 'omni', 'tiny')}", "vox": f"voxcpm2:{vox(tmp / 'vox', 'tiny')}"}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    srv = RunningServer(make_settings(tmp / "data", models={"preload_defaults": False, "local": local,
                                                             "device": "cpu"})).start()
    yield srv
    srv.stop()
    torch.set_num_threads(before)


def _wav(seconds: float = 1.0, rate: int = 16000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    x = (0.2 * np.sin(2 * np.pi * 190 * t) * (1 + np.sin(2 * np.pi * 3 * t)) * 16000).astype("<i2")
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(x.tobytes())
    return buf.getvalue()


def test_instructions_design_the_voice(server):
    client = server.openai()
    a = client.audio.speech.create(model="omni", voice="alloy", input="Hello there.", response_format="wav",
                                   instructions="female, british accent").content
    samples, rate = decode_bytes(a, "wav")
    assert rate == 16000 and len(samples) > 1600
    r = httpx.post(server.url + "/v1/audio/speech", timeout=120,
                   json={"model": "omni", "voice": "alloy", "input": "Hello there.", "instructions": "purple, sparkly"})
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == "instructions" and "voice description" in err["message"]


def test_uploaded_voice_is_cloned_by_both_engines(server):
    r = httpx.post(server.url + "/v1/voices", data={"name": "ref", "transcript": "A reference clip."},
                   files={"file": ("ref.wav", _wav(), "audio/wav")})
    assert r.status_code == 201, r.text
    client = server.openai()
    for model, rate in (("omni", 16000), ("vox", 48000)):
        audio = client.audio.speech.create(model=model, voice="ref", input="Hello there.", response_format="wav")
        samples, got = decode_bytes(audio.content, "wav")
        assert got == rate and len(samples) > 0
