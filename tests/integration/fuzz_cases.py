"""Malformed inputs for the server, built deterministically (fixed seeds), plus a `voxbox serve`
process to throw them at.

Used by ``test_fuzz_inputs.py`` (asserts no 5xx, bounded RSS) and ``bench/bad_inputs.py`` (counts
statuses for BENCHMARKS.md). Every case is a plain description of one HTTP request:

* ``Upload``: multipart body for /v1/audio/transcriptions or /v1/voices — random bytes, every
  truncation of a WAV header and the first bytes of FLAC/MP3/Ogg/AAC files, headers that lie about
  rate/channels/bits/size/codec, seeded byte flips in headers, wrong MIME types and odd fields;
* ``Body``: raw bytes for /v1/audio/speech — wrong types and huge/NaN numbers in every field,
  nested junk, invalid UTF-8, every truncation of a valid body, and hostile texts (37+ digit
  numbers, NUL and control characters, lone surrogates, 4,096 emoji, RTL) for hibari and piper.
"""

from __future__ import annotations

import io
import json
import os
import signal
import struct
import subprocess
import sys
import time
import wave
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

__all__ = ["Body", "ServeProcess", "Upload", "one_hz_wav", "send_body", "send_upload", "speech_cases", "upload_cases",
           "wav_bytes"]


@dataclass(frozen=True)
class Upload:
    """One multipart upload. ``file`` None sends no file part; ``fields`` are extra text fields."""

    id: str
    file: bytes | None
    filename: str = "audio.wav"
    mime: str = "application/octet-stream"
    fields: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Body:
    """One raw request body for /v1/audio/speech."""

    id: str
    data: bytes
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = field(default_factory=tuple)


# ---------------------------------------------------------------------------------------------
# audio seeds

def wav_bytes(*, rate: int = 16000, channels: int = 1, bits: int = 16, tag: int = 1, frames: int = 4000,
              data: bytes | None = None, ext: bytes | None = None, fmt_size: int | None = None,
              data_size: int | None = None, riff_size: int | None = None, byte_rate: int | None = None,
              block_align: int | None = None) -> bytes:
    """A RIFF/WAVE file written by hand so every header field can lie."""
    if data is None:
        width = max(1, bits // 8) if bits else 2
        rng = np.random.default_rng(0)
        data = (rng.standard_normal(frames * max(channels, 1)) * 2000).astype("<i2").tobytes()
        data = data[: frames * max(channels, 1) * width].ljust(frames * max(channels, 1) * width, b"\0")
    ba = block_align if block_align is not None else (channels * bits // 8) & 0xFFFF
    br = byte_rate if byte_rate is not None else (rate * ba) & 0xFFFFFFFF
    fmt = struct.pack("<HHIIHH", tag & 0xFFFF, channels & 0xFFFF, rate & 0xFFFFFFFF, br, ba, bits & 0xFFFF)
    if ext is not None:
        fmt += ext
    fs = len(fmt) if fmt_size is None else fmt_size
    ds = len(data) if data_size is None else data_size
    body = (
        b"WAVE"
        + b"fmt "
        + struct.pack("<I", fs & 0xFFFFFFFF)
        + fmt
        + b"data"
        + struct.pack("<I", ds & 0xFFFFFFFF)
        + data
    )
    rs = len(body) if riff_size is None else riff_size
    return b"RIFF" + struct.pack("<I", rs & 0xFFFFFFFF) + body


def one_hz_wav(frames: int = 3500) -> bytes:
    """The issue's memory bomb: 7 KB that declares 1 Hz, i.e. ~an hour of audio once upsampled."""
    return wav_bytes(rate=1, frames=frames)


def _tone(n: int, rate: int) -> np.ndarray:
    t = np.arange(n) / rate
    return (0.3 * np.sin(2 * np.pi * 330 * t)).astype(np.float32)


def _seeds() -> dict[str, bytes]:
    """Short (0.25 s) valid files in each container voxbox reads."""
    from voxbox.audio.encode import encode
    from voxbox.types import Audio

    audio = Audio(_tone(6000, 24000), 24000)
    out = {fmt: encode(audio, fmt) for fmt in ("wav", "flac", "mp3", "opus", "aac")}
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(1)
        w.setframerate(8000)
        w.writeframes(bytes(range(256)) * 16)
    out["wav_u8_stereo"] = buf.getvalue()
    return out


def _flac_lie(flac: bytes, *, rate: int | None = None, channels: int | None = None, bps: int | None = None,
              total: int | None = None) -> bytes:
    """Rewrite STREAMINFO fields (the first metadata block after 'fLaC')."""
    assert flac[:4] == b"fLaC"
    b = bytearray(flac)
    si = 8  # 'fLaC' + 4-byte block header
    bits = int.from_bytes(b[si + 10: si + 18], "big")  # rate(20) ch-1(3) bps-1(5) total(36)
    r = (bits >> 44) & 0xFFFFF
    ch = ((bits >> 41) & 0x7) + 1
    bp = ((bits >> 36) & 0x1F) + 1
    tot = bits & 0xFFFFFFFFF
    r = r if rate is None else rate
    ch = ch if channels is None else channels
    bp = bp if bps is None else bps
    tot = tot if total is None else total
    bits = (r & 0xFFFFF) << 44 | ((ch - 1) & 0x7) << 41 | ((bp - 1) & 0x1F) << 36 | (tot & 0xFFFFFFFFF)
    b[si + 10: si + 18] = bits.to_bytes(8, "big")
    return bytes(b)


def _flip(data: bytes, rng: np.random.Generator, span: int = 64, n: int = 3) -> bytes:
    b = bytearray(data)
    for _ in range(n):
        i = int(rng.integers(0, min(span, len(b))))
        b[i] = int(rng.integers(0, 256))
    return bytes(b)


def _wav_lies() -> list[tuple[str, bytes]]:
    lies: list[tuple[str, bytes]] = []
    for rate in (0, 1, 100, 7999, 400_000, 2**31, 2**32 - 1):
        lies.append((f"wav-rate-{rate}", wav_bytes(rate=rate)))
    for ch in (0, 3, 64, 255, 65535):
        lies.append((f"wav-channels-{ch}", wav_bytes(channels=ch, frames=64)))
    for bits in (0, 1, 7, 12, 64, 65535):
        lies.append((f"wav-bits-{bits}", wav_bytes(bits=bits, data=bytes(8000))))
    for tag in (0, 2, 3, 6, 7, 0x11, 0x55, 0x1234, 0xFFFE):
        lies.append((f"wav-tag-{tag:#x}", wav_bytes(tag=tag)))
    lies.append(("wav-float-16bit", wav_bytes(tag=3, bits=16)))
    lies.append(("wav-extensible-short-ext", wav_bytes(tag=0xFFFE, ext=b"\x02\x00\x10\x00")))
    lies.append(("wav-extensible-bad-guid", wav_bytes(tag=0xFFFE, ext=struct.pack("<HHI", 22, 16, 4) + bytes(16))))
    lies.append(("wav-extensible-cbsize-huge", wav_bytes(tag=0xFFFE, ext=struct.pack("<H", 0xFFFF))))
    for ds in (0, 1, 8001, 0x7FFFFFFF, 0xFFFFFFFF):
        lies.append((f"wav-data-size-{ds}", wav_bytes(data_size=ds)))
    for fs in (0, 2, 14, 0xFFFF, 0xFFFFFFFF):
        lies.append((f"wav-fmt-size-{fs}", wav_bytes(fmt_size=fs)))
    for rs in (0, 4, 0xFFFFFFFF):
        lies.append((f"wav-riff-size-{rs}", wav_bytes(riff_size=rs)))
    for ba in (0, 1, 3, 0xFFFF):
        lies.append((f"wav-block-align-{ba}", wav_bytes(block_align=ba)))
    lies.append(("wav-byte-rate-0", wav_bytes(byte_rate=0)))
    lies.append(("wav-byte-rate-max", wav_bytes(byte_rate=0xFFFFFFFF)))
    lies.append(("wav-no-data-chunk", wav_bytes()[:36]))
    lies.append(("wav-two-fmt-chunks", wav_bytes()[:36] + wav_bytes(rate=1)[12:]))
    lies.append(("wav-rifx", b"RIFX" + wav_bytes()[4:]))
    lies.append(("wav-rf64-no-ds64", b"RF64" + wav_bytes()[4:]))
    return lies


def upload_cases() -> list[Upload]:
    """Over 250 malformed uploads (deterministic)."""
    seeds = _seeds()
    cases: list[Upload] = []
    rng = np.random.default_rng(1234)
    # random bytes, bare and behind real magic numbers
    for n in (1, 2, 3, 4, 7, 12, 44, 100, 512, 4096, 65536, 300_000):
        cases.append(Upload(f"random-{n}", rng.bytes(n), "noise.wav"))
    for magic in (b"RIFF", b"RIFF\x00\x00\x00\x00WAVE", b"fLaC", b"ID3\x04\x00", b"\xff\xfb", b"OggS\x00\x02",
                  b"\xff\xf1", b"\x1aE\xdf\xa3", b"\x00\x00\x00\x20ftypM4A ", b"#!AMR\n", b"MThd", b"caff"):
        cases.append(Upload(f"magic-{magic[:12].hex()}-random", magic + rng.bytes(2048), "x.bin"))
    # truncations: every offset of the WAV header, and into the data; first bytes of other formats
    wav = seeds["wav"]
    for cut in list(range(45)) + [46, 48, 100, 1000]:
        cases.append(Upload(f"wav-cut-{cut}", wav[:cut] or b"\0"))
    for fmt in ("flac", "mp3", "opus", "aac"):
        data = seeds[fmt]
        for cut in (1, 2, 3, 4, 5, 8, 12, 16, 24, 32, 42, 48, 64, 100, 200, len(data) // 2):
            cases.append(Upload(f"{fmt}-cut-{cut}", data[:cut], f"a.{fmt}"))
    # headers that lie
    cases += [Upload(name, data) for name, data in _wav_lies()]
    flac = seeds["flac"]
    for kw in ({"rate": 1}, {"rate": 0}, {"rate": 7999}, {"rate": 655350}, {"channels": 8}, {"bps": 32},
               {"bps": 4}, {"total": 2**36 - 1}, {"rate": 1, "total": 2**36 - 1}):
        name = "flac-" + "-".join(f"{k}{v}" for k, v in kw.items())
        cases.append(Upload(name, _flac_lie(flac, **kw), "a.flac"))
    u8 = seeds["wav_u8_stereo"]
    cases.append(Upload("wav-u8-stereo-rate-1", u8[:24] + struct.pack("<I", 1) + u8[28:]))
    # seeded byte flips in the first 64 bytes of every seed
    for fmt, data in seeds.items():
        for k in range(12):
            cases.append(Upload(f"{fmt}-flip-{k}", _flip(data, rng), f"a.{fmt}"))
    # wrong MIME types, names and fields
    good = seeds["wav"]
    for mime in ("image/png", "text/plain", "application/json", "audio/mpeg", "", "x/" + "y" * 300):
        cases.append(Upload(f"mime-{mime[:12] or 'empty'}", good, "a.wav", mime))
    cases.append(Upload("mime-random-as-wav", rng.bytes(3000), "a.wav", "audio/wav"))
    cases.append(Upload("name-exe", good, "a.exe"))
    cases.append(Upload("name-empty", good, ""))
    cases.append(Upload("name-long", good, "a" * 5000 + ".wav"))
    cases.append(Upload("name-traversal", good, "../../etc/passwd"))
    cases.append(Upload("file-empty", b""))
    cases.append(Upload("no-file-part", None))
    cases.append(Upload("file-as-text-field", None, fields=(("file", "not a file"),)))
    return cases


# ---------------------------------------------------------------------------------------------
# speech bodies

#: Texts that broke engine front-ends (or might): each goes to hibari (tts-1) and piper (tts-1-hd).
HOSTILE_TEXTS: dict[str, str] = {
    "digits-37": "1" * 37,
    "digits-40-in-sentence": "Call 1234567890123456789012345678901234567890 now.",
    "digits-300": "9" * 300,
    "negative-digits": "-" + "1" * 40,
    "currency-digits": "$" + "9" * 40,
    "ordinal-digits": "1" * 40 + "th",
    "percent-digits": "1" * 40 + "%",
    "decimal-digits": "3." + "1" * 60,
    "nul": "hello\x00world",
    "only-nul": "\x00" * 10,
    "controls": "he\x01\x02\x1b[31mllo\x7f\x9b",
    "lone-surrogate": "hello \ud800 world",
    "lone-low-surrogate": "\udfff abc",
    "emoji-4096": "\U0001F600" * 4096,
    "emoji-and-word": "a" + "\U0001F600" * 100,
    "rtl": "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd",
    "bidi-overrides": "\u202a\u202b\u202c\u202d\u202e abc \u2066\u2069",
    "zero-width": "a\u200b\u200c\u200d\ufeffb",
    "combining-3000": "a" + "\u0301" * 3000,
    "private-use": "\ue000\uf8ff abc",
    "noncharacters": "\ufffe\uffff abc",
    "han": "\u4e2d\u6587" * 50,
    "tabs-newlines": "a\tb\nc\rd\x0b\x0ce",
    "long-word": "a" * 4000,
    "dots": "." * 4000 + "a",
    "url": "http://" + "a" * 1000 + ".com",
    "roman": "Chapter MMMMMMMMMMMMMMMMMMMMMMMMMMMMMMMM",
    "fraction": "1/" + "0" * 40,
    "sci": "1e999999 and 1E-999999",
    "time": "12:34:56:78:90:12:34",
}

_GOOD = {"model": "tts-1", "input": "Hi.", "voice": "alloy", "response_format": "pcm"}

_BAD_VALUES: dict[str, Any] = {
    "null": None, "true": True, "zero": 0, "neg": -1, "big-int": 2**64, "huge-int": 10**400,
    "float-max": 1.7976931348623157e308, "tiny": 5e-324, "empty": "", "long-str": "x" * 100_000,
    "list": [1, "a"], "dict": {"a": 1}, "nested-list": [[[[[[[[[[1]]]]]]]]]],
    "nested-dict": {"a": {"a": {"a": {"a": {"a": {}}}}}}, "nul-str": "\x00", "nan-str": "NaN",
}
#: Raw JSON tokens that are not JSON values (Python's json accepts some of them).
_RAW_TOKENS = {"NaN": "NaN", "Infinity": "Infinity", "-Infinity": "-Infinity", "1e309": "1e309",
               "-1e309": "-1e309", "hex": "0x10", "undefined": "undefined"}


def _dump(obj: Any) -> bytes:
    return json.dumps(obj, ensure_ascii=False).encode("utf-8", "surrogatepass")


def speech_cases() -> list[Body]:
    """Over 250 malformed or hostile /v1/audio/speech bodies (deterministic)."""
    cases: list[Body] = []
    fields = ("model", "input", "voice", "response_format", "speed", "stream_format", "instructions")
    for f in fields:
        for name, value in _BAD_VALUES.items():
            cases.append(Body(f"{f}={name}", _dump({**_GOOD, f: value})))
        for name, token in _RAW_TOKENS.items():
            raw = json.dumps({**_GOOD, f: "@@"}).replace('"@@"', token)
            cases.append(Body(f"{f}=raw-{name}", raw.encode()))
    # body-level junk
    good = json.dumps(_GOOD).encode()
    for cut in range(0, len(good), 3):
        cases.append(Body(f"truncated-{cut}", good[:cut]))
    for name, data in {
        "array": b"[1, 2]",
        "string": b'"hello"',
        "number": b"42",
        "null": b"null",
        "empty": b"",
        "spaces": b"   ",
        "deep-array-10000": b"[" * 10000 + b"]" * 10000,
        "deep-object-5000": b'{"a":' * 5000 + b"1" + b"}" * 5000,
        "invalid-utf8": b'{"model": "tts-1", "input": "\xff\xfe\xfa", "voice": "alloy"}',
        "latin1": '{"model": "tts-1", "input": "caf\xe9", "voice": "alloy"}'.encode("latin-1"),
        "utf16": json.dumps(_GOOD).encode("utf-16"),
        "bom-utf8": b"\xef\xbb\xbf" + good,
        "duplicate-keys": b'{"model": "tts-1", "input": "a", "input": 5, "voice": "alloy"}',
        "long-key": _dump({**_GOOD, "k" * 100_000: 1}),
        "many-keys": _dump({**_GOOD, **{f"k{i}": i for i in range(5000)}}),
        "escaped-surrogate-pair-half": b'{"model": "tts-1", "input": "\\ud83d", "voice": "alloy"}',
        "escaped-nul": b'{"model": "tts-1", "input": "a\\u0000b", "voice": "alloy"}',
        "trailing-garbage": good + b"garbage",
        "two-objects": good + good,
        "nul-bytes": good.replace(b" ", b"\x00"),
        "voice-ref-junk": _dump({**_GOOD, "voice": {"id": 5}}),
        "voice-ref-extra": _dump({**_GOOD, "voice": {"id": "a", "x": 1}}),
    }.items():
        cases.append(Body(f"body-{name}", data))
    for ctype in (
        "text/plain", "application/x-www-form-urlencoded", "multipart/form-data", "",
        "application/json; charset=latin-1",
    ):
        cases.append(Body(f"ctype-{ctype[:24] or 'none'}", good, content_type=ctype))
    # hostile texts, both bundled speech engines, whole body read
    for model in ("tts-1", "tts-1-hd"):
        for name, text in HOSTILE_TEXTS.items():
            cases.append(Body(f"text-{name}-{model}", _dump({**_GOOD, "model": model, "input": text})))
    return cases


# ---------------------------------------------------------------------------------------------
# a real server process

def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServeProcess:
    """`python -m voxbox.cli serve` on 127.0.0.1 in its own process, so its RSS is its own."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {**os.environ, "VOXBOX_DATA_DIR": str(data_dir), **(env or {})}
        full_env.pop("VOXBOX_API_KEY", None)
        self.log_path = data_dir / "serve.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen([sys.executable, "-m", "voxbox.cli", "serve", "--port", str(self.port), *args],
                                     env=full_env, stdout=self._log, stderr=subprocess.STDOUT, cwd=data_dir)

    def wait_ready(self, timeout: float = 180.0) -> ServeProcess:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"voxbox serve exited: {self.log_path.read_text(errors='replace')[-2000:]}")
            try:
                if httpx.get(self.url + "/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError("voxbox serve did not become ready")

    def warm_up(self, client: httpx.Client) -> None:
        """Bring every preloaded model to its steady state: one longest single call per speech
        engine (a 400-character sentence: engines split longer text) and one 30 s transcription."""
        sentence = ("The quick brown fox jumps over the lazy dog while the rain in Spain stays mainly in the plain, "
                    "and everyone agrees that this sentence is long enough to be realistic. ") * 3
        for model in ("tts-1", "tts-1-hd"):
            r = client.post(self.url + "/v1/audio/speech",
                            json={"model": model, "input": sentence[:399], "voice": "alloy", "response_format": "pcm"})
            r.raise_for_status()
        # real speech: VAD (on by default) passes it to the model, so the decoder reaches its steady state
        from voxbox.audio.decode import decode
        from voxbox.bench.scenarios import moonshine_assets

        speech = decode(moonshine_assets() / "beckett.wav", sample_rate=16000).samples
        speech = np.tile(speech, int(np.ceil(16000 * 30 / len(speech))))[: 16000 * 30]
        speechy = (np.clip(speech, -1, 1) * 32767).astype("<i2").tobytes()
        r = client.post(self.url + "/v1/audio/transcriptions", data={"model": "whisper-1"},
                        files={"file": ("warm.wav", wav_bytes(frames=16000 * 30, data=speechy), "audio/wav")})
        r.raise_for_status()

    def rss(self) -> int:
        import psutil

        return int(psutil.Process(self.proc.pid).memory_info().rss)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def send_upload(client: httpx.Client, url: str, case: Upload, route: str, name: str | None = None) -> httpx.Response:
    """POST one upload case to ``route`` (transcriptions: model=whisper-1; voices: ``name``)."""
    data = {"model": "whisper-1"} if route.endswith("transcriptions") else {"name": name or "fuzz"}
    data.update(dict(case.fields))
    files = None if case.file is None else {"file": (case.filename, case.file, case.mime)}
    if files is None:  # still multipart: one text field at least
        import uuid

        boundary = uuid.uuid4().hex
        parts = b"".join(f'--{boundary}\r\nContent-Disposition: form-data; name="{k}"\r\n\r\n{v}\r\n'.encode()
                         for k, v in data.items())
        return client.post(url + route, content=parts + f"--{boundary}--\r\n".encode(),
                           headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    return client.post(url + route, data=data, files=files)


def send_body(client: httpx.Client, url: str, case: Body, max_bytes: int = 256 * 1024) -> tuple[int, bytes]:
    """POST one speech body; read at most ``max_bytes`` of the answer (the rest of a long synthesis is
    cancelled by closing the stream). Returns (status, body read)."""
    headers = dict(case.headers)
    if case.content_type:
        headers["Content-Type"] = case.content_type
    with client.stream("POST", url + "/v1/audio/speech", content=case.data, headers=headers) as r:
        data = b""
        for chunk in r.iter_raw():
            data += chunk
            if len(data) >= max_bytes:
                break
        return r.status_code, data
