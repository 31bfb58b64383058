"""Through the real server and the openai SDK: unspeakable text is a 400, speed is delivered,
and numbers/abbreviations reach the engines written out (issues #12 and #22)."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import openai
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_harness import RunningServer, decode_bytes, make_settings  # noqa: E402

TEXT = "Dr. Alice Nguyen moved to St. Louis in 1776. She paid $1,249.99 for the move."


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("text"), models={"preload_defaults": False, "ttl": -1})
    srv = RunningServer(settings).start()
    yield openai.OpenAI(base_url=srv.url + "/v1", api_key="unused", max_retries=0)
    srv.stop()


@pytest.mark.parametrize("model", ["tts-1", "tts-1-hd"])
@pytest.mark.parametrize("text", ["שלום עולם", "你好，世界。", "😀" * 20])
def test_unspeakable_text_is_a_400(client, model: str, text: str) -> None:
    with pytest.raises(openai.BadRequestError) as exc:
        client.audio.speech.create(model=model, voice="alloy", input=text, response_format="wav")
    err = exc.value.body
    assert "nothing speakable" in err["message"] and err["param"] == "input"  # the engine's "text", in OpenAI's name
    if any(ch.isalpha() for ch in text):  # letters of a script the English voice cannot say
        assert "for this engine/voice" in err["message"]


@pytest.mark.parametrize("model", ["tts-1", "tts-1-hd"])
def test_speed_four_is_four_times_faster(client, model: str) -> None:
    def seconds(speed: float) -> float:
        data = client.audio.speech.create(model=model, voice="alloy", input=TEXT, response_format="wav",
                                          speed=speed).content
        samples, rate = decode_bytes(data, "wav")
        return samples.size / rate

    normal, fast = seconds(1.0), seconds(4.0)
    assert normal / fast == pytest.approx(4.0, rel=0.10)


def test_long_digit_strings_are_spoken(client) -> None:
    data = client.audio.speech.create(model="tts-1", voice="alloy", input="Code " + "9" * 40 + ".",
                                      response_format="wav").content
    samples, rate = decode_bytes(data, "wav")
    assert samples.size / rate > 5.0 and np.isfinite(samples).all()  # forty digits, one by one
