"""Silero VAD: bundled model, whole-file regions, the live stream, and transcription above engines."""

from __future__ import annotations

import itertools
import shutil

import numpy as np
import pytest

from voxbox.audio.decode import decode
from voxbox.audio.vad import (
    FRAME,
    VAD_RATE,
    SpeechChunks,
    SpeechSpan,
    VadOptions,
    VadStream,
    load_vad,
    speech_chunks,
    speech_probabilities,
    speech_timestamps,
)
from voxbox.errors import BadInputError, ChecksumMismatchError
from voxbox.models import bundled
from voxbox.runtime.vad import transcribe_speech
from voxbox.text import wer
from voxbox.types import Audio

BECKETT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."


@pytest.fixture(scope="module")
def beckett(moonshine_assets):
    return decode(str(moonshine_assets / "beckett.wav"), sample_rate=16000)


@pytest.fixture(scope="module")
def asr():
    from voxbox.engines.registry import load_engine

    engine = load_engine("faster-whisper")
    yield engine
    engine.close()


def _silence(seconds: float, rate: int = 16000) -> np.ndarray:
    return np.zeros(int(seconds * rate), np.float32)


def test_bundle_verified_and_tamper_detected(tmp_path):
    ok, reason = bundled.bundle_status("silero-vad")
    assert ok, reason
    path = bundled.silero_vad_path()
    b = bundled.BUNDLES["silero-vad"]
    copy = tmp_path / path.name
    shutil.copyfile(path, copy)
    data = bytearray(copy.read_bytes())
    data[1000] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatchError):
        bundled.verify_file(copy, b.files[path.name])


def test_silence_and_quiet_noise_have_no_speech():
    assert speech_timestamps(Audio(_silence(3.0), 16000)) == []
    noise = 0.01 * np.random.default_rng(0).standard_normal(48000).astype(np.float32)
    assert speech_timestamps(Audio(noise, 16000)) == []
    assert speech_timestamps(Audio(np.zeros(0, np.float32), 16000)) == []


def test_recording_regions_cover_the_words(beckett):
    spans = speech_timestamps(beckett)
    assert spans, "no speech found in a human recording"
    assert spans[0].start < 0.5 and spans[-1].end > 8.5  # the words run from ~0.1 s to ~9 s
    speech = sum(s.duration for s in spans)
    assert 6.0 < speech <= beckett.duration
    assert all(a.end < b.start for a, b in itertools.pairwise(spans))  # sorted, disjoint


def test_regions_move_with_the_audio(beckett):
    """The same recording after 2 s of silence: the regions shift by 2 s (same timeline rules)."""
    shifted = Audio(np.concatenate([_silence(2.0), beckett.samples]), 16000)
    a, b = speech_timestamps(beckett), speech_timestamps(shifted)
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert abs((y.start - x.start) - (2.0 if x.start > 0 else y.start)) < 0.1
        assert abs(y.end - x.end - 2.0) < 0.1


def test_other_sample_rates_are_resampled(beckett):
    from voxbox.audio.resample import resample

    at_24k = Audio(resample(beckett.samples, 16000, 24000), 24000)
    a, b = speech_timestamps(beckett), speech_timestamps(at_24k)
    assert len(a) == len(b)
    assert all(abs(x.start - y.start) < 0.1 and abs(x.end - y.end) < 0.1 for x, y in zip(a, b, strict=True))


def test_options_are_checked():
    with pytest.raises(BadInputError) as ei:
        VadOptions(threshold=1.5).check()
    assert ei.value.param == "threshold"
    with pytest.raises(BadInputError):
        VadOptions(min_silence_ms=-1).check()


def test_timeline_mapping():
    cut = SpeechChunks(Audio(np.zeros(16000 * 3, np.float32), 16000),
                       [SpeechSpan(1.0, 2.0), SpeechSpan(5.0, 7.0)], 10.0)
    assert cut.to_original(0.0) == 1.0
    assert cut.to_original(0.5) == 1.5
    assert cut.to_original(1.0) == 5.0  # a start on the seam belongs to the next span
    assert cut.to_original(1.0, end=True) == 2.0  # an end on the seam to the span it ends
    assert cut.to_original(2.5) == 6.5
    assert cut.to_original(9.0, end=True) == 7.0  # clamped to the last span


def test_speech_chunks_keep_only_speech(beckett):
    padded = Audio(np.concatenate([_silence(3.0), beckett.samples, _silence(4.0)]), 16000)
    cut = speech_chunks(padded)
    assert cut.audio.duration < beckett.duration + 1.0
    assert cut.original_duration == pytest.approx(padded.duration)


def test_stream_matches_whole_file(beckett):
    """Frame by frame in odd block sizes gives the same probabilities as one batched call."""
    model = load_vad()
    probs = speech_probabilities(beckett, model)
    stream = VadStream(model=model)
    seen = []
    x = beckett.samples
    for i in range(0, len(x), 777):
        stream.feed(x[i : i + 777])
        seen.append(stream.last_prob)
    n = len(x) // FRAME
    assert stream.frames == n
    assert abs(stream.last_prob - probs[n - 1]) < 1e-4


def test_stream_turn_events(beckett):
    """Speech, 1.5 s of silence, speech again: start, stop, start, stop, in order, with the
    stop decided silence_ms after the speech ended."""
    x = np.concatenate([_silence(0.5), beckett.samples[: 16000 * 3], _silence(1.5), beckett.samples[16000 * 6:],
                        _silence(1.0)])
    stream = VadStream(silence_ms=500, prefix_ms=300)
    events = []
    for i in range(0, len(x), 480):  # 30 ms blocks, like a microphone
        events += stream.feed(x[i : i + 480])
    kinds = [e.kind for e in events]
    assert kinds[0] == "start" and kinds[-1] == "stop"
    assert all(a != b for a, b in itertools.pairwise(kinds))  # alternating
    first_start = events[0].sample / VAD_RATE
    assert 0.1 < first_start < 0.6  # speech begins at 0.5 s; prefix padding goes back up to 300 ms
    for e in events:
        if e.kind == "stop":
            assert e.speech_end is not None and e.sample - e.speech_end >= 500 * 16
    # the long pause (3.5 s .. 5.0 s) ends a turn
    stops = [e.speech_end / VAD_RATE for e in events if e.kind == "stop" and e.speech_end is not None]
    assert any(3.0 < s < 3.7 for s in stops)
    assert not stream.speaking


def test_transcribe_speech_maps_times_back(asr, beckett):
    """Silence + recording + silence + recording: the engine sees speech only; segment times land
    in the original timeline; the text is the recording twice."""
    x = np.concatenate([_silence(2.0), beckett.samples, _silence(3.0), beckett.samples, _silence(2.0)])
    audio = Audio(x, 16000)
    segments, info = transcribe_speech(asr, audio, "en", None, True, "transcribe")
    segs = list(segments)
    assert info.duration == pytest.approx(audio.duration)
    assert "vad" in info.timings.as_dict() and info.options["vad"]["speech_seconds"] < 21
    text = " ".join(s.text for s in segs)
    assert wer(f"{BECKETT} {BECKETT}", text) <= 0.05
    words = [w for s in segs for w in (s.words or [])]
    second = 2.0 + beckett.duration + 3.0
    assert 1.9 <= words[0].start <= 2.6  # "Ever" at ~2.1 s, not ~0.1 s of the cut
    late = [w for w in words if w.start >= second - 0.3]
    assert late and late[0].word.strip().lower().startswith("ever")
    assert all(w.end <= audio.duration for w in words)
    assert [s.start for s in segs] == sorted(s.start for s in segs)


def test_pure_silence_gives_no_segments(asr):
    """Whisper hears "You" in 3 s of digital silence; with VAD first there is nothing to hear."""
    audio = Audio(_silence(3.0), 16000)
    segments, info = transcribe_speech(asr, audio, None, None, False, "transcribe")
    assert list(segments) == [] and info.duration == pytest.approx(3.0)
    raw, _ = asr.transcribe(audio, None, None, False, "transcribe")  # negative control: without VAD
    assert "".join(s.text for s in raw).strip() != ""
