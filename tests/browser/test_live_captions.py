"""Live captions in a real headless Chromium: the page's Realtime client (live.js) streams a fake
microphone (a human recording, through Chromium's fake capture device) over the websocket, with
the API key sent as a subprotocol, and shows the final lines the server transcribes."""

from __future__ import annotations

import re
import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser_harness import API_KEY, CHROMIUM_ARGS, chromium_path, new_page
from server_harness import RunningServer, make_settings

from voxbox.audio.decode import decode

pytestmark = pytest.mark.browser


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z ]", " ", text.lower()).split())


@pytest.fixture(scope="module")
def mic_file(tmp_path_factory, moonshine_assets) -> Path:
    """What the fake microphone plays: 1 s of silence, beckett, 4 s of silence (48 kHz s16 WAV)."""
    a = decode(str(moonshine_assets / "beckett.wav"), sample_rate=48000).samples
    x = np.concatenate([np.zeros(48000, np.float32), a, np.zeros(48000 * 4, np.float32)])
    path = tmp_path_factory.mktemp("mic") / "mic.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(48000)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return path


@pytest.fixture(scope="module")
def mic_browser(browser, mic_file) -> Any:
    """A second Chromium whose microphone is ``mic_file`` (the session's ``browser`` fixture checks
    that Chromium and Playwright are present)."""
    args = [*CHROMIUM_ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-audio-capture={mic_file}%noloop", "--autoplay-policy=no-user-gesture-required"]
    b = browser.browser_type.launch(executable_path=chromium_path(), args=args)  # same Playwright instance
    yield b
    b.close()


def test_live_captions_from_the_microphone(mic_browser, tmp_path, shots):
    srv = RunningServer(make_settings(tmp_path, api_key=API_KEY,
                                      models={"preload_defaults": False, "preload": ["whisper-1"]})).start()
    try:
        context, page, watch = new_page(mic_browser)
        context.grant_permissions(["microphone"], origin=srv.url)
        context.add_init_script(f"sessionStorage.setItem('voxbox.apiKey', {API_KEY!r})")
        page.goto(f"{srv.url}/#transcribe")
        page.wait_for_selector("#tr-live:not([hidden])")
        page.click("#tr-live")
        page.wait_for_selector("#tr-live[aria-pressed=true]")  # the microphone is open
        page.wait_for_function("() => /fail better/i.test(document.querySelector('#tr-live-box').textContent)",
                               timeout=120_000)
        lines = [_words(t) for t in page.locator("#tr-live-box p:not(.partial)").all_inner_texts()]
        heard = " ".join(lines)
        assert "ever tried" in heard and "fail better" in heard, lines
        assert page.locator("#tr-error").is_hidden() or not page.inner_text("#tr-error").strip()
        page.screenshot(path=str(shots / "live-captions.png"))
        page.click("#tr-live")  # stop
        assert page.get_attribute("#tr-live", "aria-pressed") == "false"
        watch.check()
        context.close()
    finally:
        srv.stop()
