"""`voxbox speak`, `voxbox transcribe` and `voxbox engines` through real subprocesses."""

from __future__ import annotations

import json
import subprocess
import sys
import wave

import pytest

from voxbox.text import wer

TEXT = "Good morning. The meeting starts at ten, so please bring your notes. Thank you!"


def run(*args: str, input: str | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxbox.cli", *args], capture_output=True, text=True, input=input,
                          timeout=timeout)


def one_line_error(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    return lines[0]


@pytest.fixture(scope="module")
def spoken(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "speech.wav"
    proc = run("speak", TEXT, "-o", str(out), "--timings")
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stderr and "stages:" in proc.stderr
    return out


def test_speak_writes_valid_wav(spoken):
    with wave.open(str(spoken)) as w:
        assert w.getframerate() == 24000 and w.getnchannels() == 1 and w.getsampwidth() == 2
        assert 3.0 < w.getnframes() / 24000 < 15.0
    size = spoken.stat().st_size
    assert size == 44 + 2 * wave.open(str(spoken)).getnframes()  # header sizes patched after streaming


def test_transcribe_text(spoken):
    proc = run("transcribe", str(spoken))
    assert proc.returncode == 0, proc.stderr
    assert wer(TEXT, proc.stdout) <= 0.10, proc.stdout


@pytest.mark.slow
def test_speak_piper_stdin_mp3_then_verbose_json(tmp_path):
    mp3 = tmp_path / "p.mp3"
    proc = run("speak", "-", "-o", str(mp3), "--engine", "piper", "--voice", "onyx", "--speed", "1.1",
               input="Piper reads this from standard input.")
    assert proc.returncode == 0, proc.stderr
    assert mp3.stat().st_size > 1000
    proc = run("transcribe", str(mp3), "--format", "verbose_json", "--word-timestamps", "--language", "en")
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    assert body["language"] == "english" and body["task"] == "transcribe"
    assert body["segments"] and body["words"]
    assert wer("Piper reads this from standard input.", body["text"]) <= 0.2


@pytest.mark.slow
def test_transcribe_several_files_to_dir_srt_vtt(spoken, moonshine_assets, tmp_path):
    out = tmp_path / "subs"
    proc = run("transcribe", str(spoken), str(moonshine_assets / "beckett.wav"), "-f", "srt", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    srt = (out / "beckett.srt").read_text()
    assert srt.startswith("1\n00:00:") and " --> " in srt
    assert (out / "speech.srt").is_file()
    vtt_path = tmp_path / "b.vtt"
    proc = run("transcribe", str(moonshine_assets / "beckett.wav"), "--format", "vtt", "-o", str(vtt_path))
    assert proc.returncode == 0, proc.stderr
    assert vtt_path.read_text().startswith("WEBVTT\n\n")


def test_engines_table_and_json():
    proc = run("engines", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = {r["engine"]: r for r in json.loads(proc.stdout)}
    for name in ("hibari", "piper", "faster-whisper"):
        assert rows[name]["available"], rows[name]
    assert "tiny.en" in rows["faster-whisper"]["models"]
    assert "heart" in rows["hibari"]["voices"] and "joe" in rows["piper"]["voices"]
    proc = run("engines")
    assert proc.returncode == 0 and "faster-whisper" in proc.stdout


@pytest.mark.parametrize(
    "args, needle",
    [
        (("transcribe", "/no/such/file.wav"), "no such file"),
        (("speak", "", "-o", "{tmp}/x.wav"), "empty"),
        (("speak", "hello", "-o", "{tmp}/x.wav", "--voice", "nobody"), "voice"),
        (("speak", "hello", "-o", "{tmp}/x.wav", "--speed", "9"), "speed"),
        (("speak", "hello", "-o", "{tmp}/x.xyz"), "format"),
        (("speak", "hello", "-o", "{tmp}/x.wav", "--engine", "nope"), "unknown engine"),
        (("transcribe", "{garbage}"), "audio"),
        (("transcribe", "{garbage}", "--format", "docx"), "format"),
        (("transcribe", "{beckett}", "--task", "translate"), "English-only"),
        (("transcribe", "{beckett}", "--language", "fr"), "English-only"),
        (("transcribe", "{beckett}", "--model", "large-v9"), "unknown"),
    ],
)
def test_bad_input_one_line(args, needle, tmp_path, moonshine_assets):
    garbage = tmp_path / "garbage.wav"
    garbage.write_bytes(b"this is not audio at all" * 10)
    subs = {"tmp": str(tmp_path), "garbage": str(garbage), "beckett": str(moonshine_assets / "beckett.wav")}
    proc = run(*(a.format(**subs) for a in args))
    line = one_line_error(proc)
    assert needle.lower() in line.lower(), line
    assert not (tmp_path / "x.wav").exists()  # nothing half-written


def test_debug_shows_traceback():
    proc = run("--debug", "transcribe", "/no/such/file.wav")
    assert proc.returncode != 0
    assert "Traceback" in proc.stderr
