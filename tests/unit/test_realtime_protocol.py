"""Realtime protocol: both session-update dialects, G.711 decoding, event shapes the SDK parses."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from voxbox.realtime.protocol import (
    ProtocolError,
    SessionConfig,
    TurnDetection,
    apply_update,
    decode_audio,
    error_event,
    session_object,
)


def test_ga_update():
    cfg = apply_update(SessionConfig(), {"type": "session.update", "session": {"type": "transcription", "audio": {
        "input": {"format": {"type": "audio/pcmu"}, "transcription": {"model": "tiny", "language": "de", "prompt": "x"},
                  "turn_detection": {"type": "server_vad", "threshold": 0.7, "prefix_padding_ms": 100,
                                     "silence_duration_ms": 300}}}}})
    assert cfg.input_format == "g711_ulaw" and cfg.rate == 8000
    assert (cfg.model, cfg.language, cfg.prompt) == ("tiny", "de", "x")
    assert cfg.turn_detection == TurnDetection(0.7, 100, 300)
    manual = apply_update(cfg, {"type": "session.update", "session": {"type": "transcription", "audio": {
        "input": {"turn_detection": None}}}})
    assert manual.turn_detection is None and manual.model == "tiny"  # fields not sent are kept


def test_beta_update():
    cfg = apply_update(SessionConfig(), {"type": "transcription_session.update", "session": {
        "input_audio_format": "g711_alaw", "input_audio_transcription": {"model": "whisper-1"},
        "turn_detection": {"type": "server_vad", "silence_duration_ms": 800}}})
    assert cfg.input_format == "g711_alaw" and cfg.turn_detection is not None
    assert cfg.turn_detection.silence_duration_ms == 800 and cfg.turn_detection.threshold == 0.5


@pytest.mark.parametrize("event, param", [
    ({"type": "session.update", "session": {"type": "realtime"}}, "session.type"),
    ({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
        "format": {"type": "audio/pcm", "rate": 16000}}}}}, "session.audio.input.format.rate"),
    ({"type": "transcription_session.update", "session": {"turn_detection": {"threshold": 3}}},
     "session.turn_detection.threshold"),
    ({"type": "transcription_session.update", "session": {"input_audio_format": "opus"}}, "session.input_audio_format"),
    ({"type": "transcription_session.update", "session": "nope"}, "session"),
])
def test_bad_updates_name_the_field(event, param):
    with pytest.raises(ProtocolError) as ei:
        apply_update(SessionConfig(), event)
    assert ei.value.param == param
    body = error_event(ei.value)
    assert body["type"] == "error" and body["error"]["param"] == param
    assert body["error"]["type"] == "invalid_request_error"


def test_pcm16_and_g711_decoding():
    x = (np.sin(np.linspace(0, 40, 2400)) * 0.5).astype(np.float32)
    pcm = (x * 32767).astype("<i2").tobytes()
    assert np.allclose(decode_audio(base64.b64encode(pcm).decode(), "pcm16"), x, atol=1e-4)
    audioop = pytest.importorskip("audioop")
    for fmt, enc in (("g711_ulaw", audioop.lin2ulaw), ("g711_alaw", audioop.lin2alaw)):
        coded = enc(pcm, 2)
        reference = np.frombuffer(audioop.ulaw2lin(coded, 2) if fmt == "g711_ulaw" else audioop.alaw2lin(coded, 2),
                                  dtype="<i2") / 32768.0
        assert np.allclose(decode_audio(base64.b64encode(coded).decode(), fmt), reference, atol=1e-6), fmt
    with pytest.raises(ProtocolError):
        decode_audio("***", "pcm16")


def test_session_objects_parse_in_the_sdk():
    from openai.types.realtime import SessionUpdatedEvent

    cfg = SessionConfig(model="whisper-1", language="en")
    ga = SessionUpdatedEvent.model_validate({"type": "session.updated", "event_id": "event_1",
                                             "session": session_object(cfg, "sess_1", beta=False)})
    assert ga.session.type == "transcription"
    assert ga.session.audio.input.transcription.model == "whisper-1"
    assert ga.session.audio.input.turn_detection.silence_duration_ms == 500
    beta = session_object(SessionConfig(turn_detection=None), "sess_1", beta=True)
    assert beta["turn_detection"] is None and beta["input_audio_format"] == "pcm16"
    assert beta["object"] == "realtime.transcription_session"


def test_local_agreement():
    from voxbox.realtime.agreement import Agreement

    a = Agreement()
    assert a.update("It was") == ""  # one hypothesis: nothing agreed yet
    assert a.update("It was the best.") == "It was"
    assert a.update("it was the best of times.") == " the best"  # case and punctuation do not break agreement
    assert a.update("It was the worst") == ""  # disagreement: nothing taken back, nothing added
    assert a.final("It was the best of times, it was the worst of times.") == " of times, it was the worst of times."
    assert a.final("Something else entirely.") == ""  # a final that does not extend what was shown adds nothing
