"""The web page in a real headless Chromium against a real server: speak (streamed, played, decodable,
the right words), transcribe an uploaded human recording, upload/play/delete a voice, load and
unload a model, the machine report and benchmarks, errors from the server shown, a phone-width
layout, labelled controls, and the API-key flow."""

from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from browser_harness import API_KEY, CHROMIUM_ARGS, PHONE, chromium_path, new_page
from server_harness import RunningServer, decode_bytes, make_settings

pytestmark = pytest.mark.browser

SENTENCE = "The quick brown fox jumps over the lazy dog."


def _words(text: str) -> str:
    return " ".join(re.sub(r"[^a-z ]", " ", text.lower()).split())


def _goto(page: Any, srv: RunningServer, name: str) -> None:
    page.goto(f"{srv.url}/#{name}")
    page.wait_for_selector(f"#page-{name}:not([hidden])")


def _unlabelled_controls(page: Any) -> list[str]:
    """Visible inputs/selects/textareas/buttons without an accessible name."""
    return page.evaluate("""() => [...document.querySelectorAll('input, select, textarea, button')]
      .filter((el) => el.offsetParent !== null && el.type !== 'hidden')
      .filter((el) => !(el.labels && el.labels.length) && !el.getAttribute('aria-label')
                      && !(el.tagName === 'BUTTON' && el.textContent.trim()))
      .map((el) => el.id || el.outerHTML.slice(0, 80))""")


def _transcribe(srv: RunningServer, audio: bytes, name: str) -> str:
    r = httpx.post(srv.url + "/v1/audio/transcriptions", data={"model": "whisper-1"},
                   files={"file": (name, audio)}, timeout=120)
    assert r.status_code == 200, r.text
    return _words(r.json()["text"])


def test_speak_streams_plays_and_downloads(browser, server, shots, tmp_path):
    context, page, watch = new_page(browser)
    _goto(page, server, "speak")
    page.wait_for_selector("#speak-form[data-ready]")
    assert page.locator("#speak-voice option").count() >= 1
    page.fill("#speak-text", SENTENCE)
    page.select_option("#speak-format", "wav")
    page.focus("#speak-text")
    page.keyboard.press("Control+Enter")  # the keyboard shortcut starts speech
    page.wait_for_selector("#speak-result[data-state=done]")
    audio = page.eval_on_selector("#speak-audio", "a => ({...a.dataset})")
    seconds = float(audio["seconds"])
    assert 1.5 < seconds < 8.0, audio  # nine words
    assert int(audio["chunks"]) >= 1 and float(audio["ttfaMs"]) > 0
    assert audio["firstPlayMs"], "audio was never handed to Web Audio"
    assert float(audio["firstPlayMs"]) < float(audio["totalMs"])  # playing began before the stream ended
    # The <audio> element decoded the result itself and agrees on the length.
    page.wait_for_function("() => document.querySelector('#speak-audio').readyState >= 1")
    assert abs(page.eval_on_selector("#speak-audio", "a => a.duration") - seconds) < 0.05
    stats = page.inner_text("#speak-stats")
    assert "Time to first audio" in stats and "Server TTFA" in stats
    stages = page.inner_text("#speak-timing")
    assert "ttfa" in stages and "synthesize" in stages and "total" in stages
    page.screenshot(path=str(shots / "speak.png"))

    with page.expect_download() as dl:
        page.click("#speak-download")
    wav = Path(dl.value.path()).read_bytes()
    samples, rate = decode_bytes(wav)
    assert rate == 24000 and abs(len(samples) / rate - seconds) < 0.01
    assert np.sqrt(np.mean(samples ** 2)) > 0.01  # not silence
    heard = _transcribe(server, wav, "speech.wav")
    assert "quick brown fox" in heard and "lazy dog" in heard, heard

    page.select_option("#speak-format", "mp3")  # other formats come from the server
    with page.expect_download() as dl:
        page.click("#speak-download")
    assert dl.value.suggested_filename == "speech.mp3"
    mp3, rate = decode_bytes(Path(dl.value.path()).read_bytes())
    assert rate == 24000 and abs(len(mp3) / rate - seconds) < 0.2
    assert page.locator("#speak-curl").text_content().startswith("curl")
    assert _unlabelled_controls(page) == []
    watch.check()
    context.close()


def test_transcribe_an_uploaded_recording(browser, server, shots, moonshine_assets):
    context, page, watch = new_page(browser)
    _goto(page, server, "transcribe")
    page.wait_for_selector("#tr-model option", state="attached")
    page.wait_for_selector("#tr-live:not([hidden])")  # the server has the Realtime route: the live button shows
    page.set_input_files("#tr-file", str(moonshine_assets / "beckett.wav"))  # choosing a file starts it
    page.wait_for_selector("#tr-result[data-state=done]")
    text = _words(page.inner_text("#tr-text"))
    assert "ever tried" in text and "fail better" in text, text
    assert "Transcribed in" in page.inner_text("#tr-stats")

    page.check("input[name=tr-out][value=segments]")
    page.click("#tr-go")
    page.wait_for_selector("#tr-segments tbody tr")
    page.wait_for_selector("#tr-result[data-state=done]")
    rows = page.locator("#tr-segments tbody tr")
    assert rows.count() >= 1
    assert re.match(r"0:\d\d\.\d\d", rows.first.locator("td").first.inner_text())
    page.screenshot(path=str(shots / "transcribe.png"))

    # Dropping a file onto the drop zone transcribes it too (here as SRT).
    page.check("input[name=tr-out][value=srt]")
    data = base64.b64encode((moonshine_assets / "beckett.wav").read_bytes()).decode()
    transfer = page.evaluate_handle("""(b64) => {
      const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
      const dt = new DataTransfer();
      dt.items.add(new File([bytes], 'dropped.wav', {type: 'audio/wav'}));
      return dt;
    }""", data)
    page.dispatch_event("#tr-drop", "drop", {"dataTransfer": transfer})
    page.wait_for_selector("#tr-srt")
    assert "dropped.wav" in page.inner_text("#tr-state")
    srt = page.inner_text("#tr-srt")
    assert "00:00:00,000 -->" in srt and "fail better" in _words(srt)

    # A file that is not audio: the server's own message is shown, and the page keeps working.
    junk = b"this is not audio"
    page.set_input_files("#tr-file", {"name": "notes.wav", "mimeType": "audio/wav", "buffer": junk})
    page.wait_for_selector("#tr-error:not([hidden])")
    expected = httpx.post(server.url + "/v1/audio/transcriptions", data={"model": "whisper-1"},
                          files={"file": ("notes.wav", junk)}).json()["error"]
    err = page.inner_text("#tr-error")
    assert "415" in err and expected["message"] in err and expected["code"] in err, err
    assert _unlabelled_controls(page) == []
    watch.check()
    context.close()


def test_record_from_the_microphone(browser, server, moonshine_assets):
    """Chromium's fake microphone plays a human recording; the page records it and transcribes it."""
    wav = moonshine_assets / "beckett.wav"
    mic = browser.browser_type.launch(executable_path=chromium_path(), args=[
        *CHROMIUM_ARGS, "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={wav}"])
    try:
        context, page, watch = new_page(mic)
        _goto(page, server, "transcribe")
        page.wait_for_selector("#tr-model option", state="attached")
        page.click("#tr-record")
        page.wait_for_function("() => /recording… [3-9]/.test(document.querySelector('#tr-rec-state').textContent)")
        page.click("#tr-record")
        page.wait_for_selector("#tr-result[data-state=done]")
        assert re.match(r"recording\.(webm|ogg|m4a)", page.inner_text("#tr-state").removeprefix("done: "))
        text = _words(page.inner_text("#tr-text"))
        assert "ever tried" in text or "ever failed" in text, text
        watch.check()
        context.close()
    finally:
        mic.close()


def test_voice_upload_list_play_delete(browser, server, shots, moonshine_assets):
    context, page, watch = new_page(browser)
    _goto(page, server, "voices")
    page.wait_for_selector("#vo-table tbody tr")
    assert "echo-tts" in page.inner_text("#vo-cloners")  # which engines can use an uploaded voice
    page.fill("#vo-name", "narrator")
    page.set_input_files("#vo-file", str(moonshine_assets / "beckett.wav"))
    page.fill("#vo-transcript", "Ever tried. Ever failed.")
    page.click("#vo-go")
    row = page.locator("#vo-table tr[data-voice=narrator]")
    row.wait_for()
    assert "uploaded" in row.inner_text() and "Ever tried" in row.inner_text()
    assert re.search(r"\d+\.\d s", row.inner_text())
    names = [v["name"] for v in httpx.get(server.url + "/v1/voices").json()["data"]]
    assert "narrator" in names
    row.get_by_role("button", name="Play narrator").click()
    page.wait_for_function("() => document.querySelector('#vo-audio').readyState >= 1")
    assert page.eval_on_selector("#vo-audio", "a => a.duration") > 5
    page.screenshot(path=str(shots / "voices.png"))

    # The speak page offers it, marked as needing a cloning model (hibari cannot clone).
    _goto(page, server, "speak")
    page.wait_for_selector("#speak-form[data-ready]")
    option = page.locator("#speak-voice option[value=narrator]")
    assert option.count() == 1 and option.is_disabled()

    _goto(page, server, "voices")
    row = page.locator("#vo-table tr[data-voice=narrator]")
    button = row.get_by_role("button", name="Delete narrator")
    button.click()
    assert button.inner_text() == "Really delete?"  # two steps, no dialog
    button.click()
    row.wait_for(state="detached")
    assert "narrator" not in [v["name"] for v in httpx.get(server.url + "/v1/voices").json()["data"]]
    watch.check()
    context.close()


def test_models_load_unload_and_engines(browser, server, shots, monkeypatch):
    from playwright.sync_api import expect

    from voxbox.engines import registry
    from voxbox.engines.spec import EngineSpec, NoOptions

    def _never(req):  # the backend is missing: the factory is never called
        raise AssertionError("not installed")

    # An engine whose backend is not installed here: listed with why and how to install it.
    missing = EngineSpec(name="absent-tts", task="tts", factory=_never, options=NoOptions,
                                  requires=("voxbox_absent_backend",), install_hint="pip install absent-backend",
                                  description="an optional engine that is not installed", default_model="x",
                                  aliases=("absent-tts",))
    monkeypatch.setitem(registry.ENGINES, missing.name, missing)
    context, page, watch = new_page(browser)
    _goto(page, server, "models")
    page.wait_for_selector("#mo-table tr[data-model=whisper-1]")
    assert "loaded" in page.inner_text("#mo-table tr[data-model=tts-1]")
    engines = page.inner_text("#mo-engines")
    for name in ("hibari", "piper", "faster-whisper", "echo-tts", "fish-s2"):
        assert name in engines
    absent = page.inner_text("#mo-engines tr[data-engine=absent-tts]")
    assert "not installed" in absent and "pip install absent-backend" in absent
    assert page.locator("#mo-table tr[data-model=absent-tts]").count() == 0  # not offered as a model
    row = page.locator("#mo-table tr[data-model=tts-1-hd]")
    assert "not loaded" in row.inner_text()
    expect(row).to_contain_text(re.compile(r"[KMG]iB on \w+"))  # planned memory, from the doctor's plan
    row.get_by_role("button", name="Load tts-1-hd").click()
    state = "document.querySelector('#mo-table tr[data-model=\"tts-1-hd\"] td:nth-child(4)').textContent"
    page.wait_for_function(f"() => /\\bloaded/.test({state}) && !/not/.test({state})")
    assert any(m["id"] == "tts-1-hd" and m["loaded"] for m in httpx.get(server.url + "/v1/models").json()["data"])
    page.screenshot(path=str(shots / "models.png"))
    page.locator("#mo-table tr[data-model=tts-1-hd]").get_by_role("button", name="Unload tts-1-hd").click()
    page.wait_for_function(
        "() => /not loaded/.test(document.querySelector('#mo-table tr[data-model=\"tts-1-hd\"]').textContent)"
    )
    assert not any(m["id"] == "tts-1-hd" and m["loaded"] for m in httpx.get(server.url + "/v1/models").json()["data"])
    queued = page.locator("#mo-table tr[data-model=tts-1] td").nth(5).inner_text()
    assert queued == "0"  # from /metrics
    watch.check()
    context.close()


def test_machine_page_shows_the_cpu_plan_and_bench(browser, server, shots):
    context, page, watch = new_page(browser)
    _goto(page, server, "machine")
    page.wait_for_selector("#ma-hardware")
    cpu = httpx.get(server.url + "/v1/doctor", timeout=60).json()["machine"]["cpu"]
    hardware = page.inner_text("#ma-hardware")
    assert cpu["model"] in hardware and f"{cpu['logical_cores']} logical cores" in hardware
    assert "faster-whisper" in page.inner_text("#ma-plan")
    page.wait_for_selector("section[data-bench=tts] img")
    page.wait_for_selector("section[data-bench=asr] img")
    page.wait_for_function(
        "() => [...document.querySelectorAll('#ma-bench img')].every((i) => i.complete && i.naturalWidth > 0)"
    )
    assert page.locator("#ma-bench img").count() >= 4
    assert "voxbox/hibari" in page.inner_text("section[data-bench=tts]")
    page.screenshot(path=str(shots / "machine.png"))
    page.evaluate("() => window.scrollTo(0, 0)")  # page coordinates = viewport ones: clip below the sticky header
    page.screenshot(path=str(shots / "bench.png"), full_page=True,
                    clip=page.locator("section[data-bench=tts]").bounding_box())
    page.screenshot(path=str(shots / "machine-full.png"), full_page=True)
    watch.check()
    context.close()


@pytest.mark.parametrize("name", ["speak", "transcribe", "voices", "models", "machine"])
def test_phone_width_fits(browser, server, shots, name):
    context, page, watch = new_page(browser, PHONE)
    _goto(page, server, name)
    page.wait_for_load_state("networkidle")
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 1, f"{name} page is {overflow}px wider than a phone"
    assert page.locator(f"[data-nav={name}]").is_visible()
    assert _unlabelled_controls(page) == []
    if name == "speak":  # the main action works at phone width too
        page.wait_for_selector("#speak-form[data-ready]")
        page.click("#speak-go")
        page.wait_for_selector("#speak-result[data-state=done]")
        assert page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth") <= 1
    page.screenshot(path=str(shots / f"{name}-phone.png"), full_page=name == "speak")
    watch.check()
    context.close()


def test_keyboard_navigation_reaches_every_page(browser, server):
    context, page, watch = new_page(browser)
    _goto(page, server, "speak")
    page.focus("[data-nav=speak]")
    for name in ("transcribe", "voices", "models", "machine"):
        page.keyboard.press("Tab")
        assert page.evaluate("() => document.activeElement.dataset.nav") == name
    page.keyboard.press("Enter")
    page.wait_for_selector("#page-machine:not([hidden])")
    assert page.evaluate("() => document.activeElement.id") == "ma-h"  # focus moves to the new page
    watch.check()
    context.close()


def test_api_key_is_asked_for_then_used(browser, shots, tmp_path):
    srv = RunningServer(make_settings(tmp_path, api_key=API_KEY, models={"preload_defaults": False})).start()
    try:
        context, page, watch = new_page(browser)
        _goto(page, srv, "models")
        page.wait_for_selector("#key-panel:not([hidden])")
        assert "API key" in page.inner_text("#key-msg")
        assert page.evaluate("() => document.activeElement.id") == "key-input"
        page.screenshot(path=str(shots / "api-key.png"))

        page.fill("#key-input", "wrong-key")
        page.press("#key-input", "Enter")
        page.wait_for_selector("#key-panel:not([hidden])")
        page.wait_for_function("() => /refused/.test(document.querySelector('#key-msg').textContent)")

        page.fill("#key-input", API_KEY)
        page.press("#key-input", "Enter")
        page.wait_for_selector("#mo-table tr[data-model=tts-1]")
        assert page.locator("#key-panel").is_hidden()
        assert page.evaluate("() => sessionStorage.getItem('voxbox.apiKey')") == API_KEY
        page.reload()  # the key survives a reload of the tab
        _goto(page, srv, "machine")
        page.wait_for_selector("#ma-hardware")
        assert "required" in page.inner_text("#ma-doctor")
        _goto(page, srv, "speak")
        page.wait_for_selector("#speak-form[data-ready]")
        page.click("#speak-go")
        page.wait_for_selector("#speak-result[data-state=done]")
        assert float(page.eval_on_selector("#speak-audio", "a => a.dataset.seconds")) > 1.0
        assert page.locator("#key-panel").is_hidden()
        watch.check()
        context.close()
    finally:
        srv.stop()
