"""Realtime transcription latency: end of speech -> ``completed``, and partial-delta cadence.

    python bench/realtime_latency.py                       # starts voxbox serve (tiny.en), 3 runs
    python bench/realtime_latency.py --url http://127.0.0.1:8000 --api-key KEY --runs 5
    python bench/realtime_latency.py --silence-ms 300 --partial-ms 500 --sessions 2 --json out.json

A client streams human recordings (moonshine-voice's ``beckett.wav`` and ``two_cities.wav``, 24 kHz
pcm16) to ``/v1/realtime?intent=transcription`` in 100 ms chunks at real-time pace, with server
VAD, and timestamps every event it receives. Per committed turn:

* **end of speech -> completed**: from the moment the client sent the chunk holding the last
  speech sample (the server's ``audio_end_ms`` minus ``silence_duration_ms``) to the ``completed``
  event. It includes the silence the server must hear before it knows the turn is over.
* **speech_stopped -> completed**: from the turn's ``speech_stopped`` event to its ``completed``:
  what the server adds once the turn is known to be over (0 when the transcript was decoded
  during the pause).
* **delta cadence**: the interval between consecutive ``delta`` events of a turn while the user
  is still speaking, and the time from speech start to the first delta.

Without ``--url`` a ``voxbox serve`` subprocess is started on a free port (whisper-1 = tiny.en,
``VOXBOX_REALTIME__PARTIAL_INTERVAL_MS`` from ``--partial-ms``) and stopped at the end.
Runs are repeated; medians over all turns are printed with p95, min and max, plus the load
average before and after (other processes on the machine skew these figures).
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import itertools
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

CHUNK_S = 0.1
RATE = 24000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _recordings() -> dict[str, np.ndarray]:
    import importlib.util

    from voxbox.audio.decode import decode

    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        sys.exit("moonshine-voice is not installed (pip install -e '.[bench]')")
    assets = Path(next(iter(spec.submodule_search_locations))) / "assets"
    return {n: decode(str(assets / f"{n}.wav"), sample_rate=RATE).samples for n in ("beckett", "two_cities")}


def _pct(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def _stats(xs: list[float]) -> dict[str, float | int]:
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "p50": statistics.median(xs), "p95": _pct(xs, 0.95), "min": min(xs), "max": max(xs)}


async def _session(url: str, key: str | None, samples: np.ndarray, silence_ms: int, model: str) -> dict[str, Any]:
    import websockets

    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()
    step = int(RATE * CHUNK_S) * 2
    chunks = [pcm[i : i + step] for i in range(0, len(pcm), step)]
    sent_at: list[float] = []
    events: list[tuple[float, dict[str, Any]]] = []
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    ws_url = url.replace("http://", "ws://").replace("https://", "wss://") + "/v1/realtime?intent=transcription"
    async with websockets.connect(ws_url, additional_headers=headers, max_size=None) as ws:
        async def reader() -> None:
            async for message in ws:
                events.append((time.monotonic(), json.loads(message)))

        task = asyncio.create_task(reader())
        await ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription", "audio": {"input": {
            "format": {"type": "audio/pcm", "rate": RATE}, "transcription": {"model": model, "language": "en"},
            "turn_detection": {"type": "server_vad", "silence_duration_ms": silence_ms, "prefix_padding_ms": 300}}}}}))
        t0 = time.monotonic()
        for i, c in enumerate(chunks):
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": base64.b64encode(c).decode()}))
            sent_at.append(time.monotonic())
            delay = t0 + (i + 1) * CHUNK_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            committed = sum(e["type"] == "input_audio_buffer.committed" for _, e in events)
            done = sum(e["type"].endswith(("transcription.completed", "transcription.failed")) for _, e in events)
            if committed and done >= committed:
                break
            await asyncio.sleep(0.05)
        task.cancel()
    return {"sent_at": sent_at, "events": events}


def _turns(run: dict[str, Any], silence_ms: int) -> list[dict[str, Any]]:
    sent_at, events = run["sent_at"], run["events"]
    chunk_ms = CHUNK_S * 1000

    def sent(ms: float) -> float:
        return sent_at[min(len(sent_at) - 1, max(0, int(ms // chunk_ms)))]

    out = []
    by_item: dict[str, dict[str, Any]] = {}
    for t, e in events:
        item = e.get("item_id")
        if item is None:
            continue
        d = by_item.setdefault(item, {"deltas": []})
        if e["type"] == "input_audio_buffer.speech_started":
            d["started"] = t
        elif e["type"] == "input_audio_buffer.speech_stopped":
            d["stopped"], d["audio_end_ms"] = t, e["audio_end_ms"]
        elif e["type"].endswith("transcription.delta"):
            d["deltas"].append(t)
        elif e["type"].endswith("transcription.completed"):
            d["completed"], d["text"] = t, e["transcript"]
    for d in by_item.values():
        if "completed" not in d or "stopped" not in d:
            continue
        eos_sent = sent(d["audio_end_ms"] - silence_ms)
        live = [t for t in d["deltas"] if t < d["stopped"]]
        out.append({"eos_to_completed": d["completed"] - eos_sent,
                    "stopped_to_completed": d["completed"] - d["stopped"],
                    "delta_intervals": [b - a for a, b in itertools.pairwise(live)],
                    "first_delta": (live[0] - d["started"]) if live and "started" in d else None,
                    "text": d["text"]})
    return out


def _decode_floor(samples: np.ndarray, repeats: int = 5) -> dict[str, float | int]:
    """The engine alone: greedy decodes of the first 3 s turn of beckett (what a final costs)."""
    import dataclasses

    from voxbox.audio.resample import resample
    from voxbox.engines.registry import get_spec, load_engine
    from voxbox.types import Audio

    engine = load_engine("faster-whisper")
    spec = get_spec("faster-whisper")
    names = {f.name for f in dataclasses.fields(spec.options)}
    wanted = {"beam_size": 1, "without_timestamps": True, "condition_on_previous_text": False}
    options = spec.make_options({k: v for k, v in wanted.items() if k in names})
    clip = Audio(resample(samples[: RATE * 3], RATE, 16000), 16000)
    times = []
    for _ in range(repeats + 1):
        t0 = time.perf_counter()
        segments, _ = engine.transcribe(clip, "en", None, False, "transcribe", options)
        list(segments)
        times.append((time.perf_counter() - t0) * 1000)
    engine.close()
    return _stats(times[1:])


def _start_server(partial_ms: int) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    env = {**os.environ, "VOXBOX_REALTIME__PARTIAL_INTERVAL_MS": str(partial_ms), "VOXBOX_API_KEY": ""}
    data = tempfile.mkdtemp(prefix="voxbox-rt-bench-")
    proc = subprocess.Popen([sys.executable, "-m", "voxbox.cli", "serve", "--port", str(port), "--no-preload",
                             "--preload", "whisper-1", "--data-dir", data, "--log-level", "info"],
                            env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGTERM)
    sys.exit("the server did not become ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", help="a running server (default: start voxbox serve)")
    ap.add_argument("--api-key")
    ap.add_argument("--model", default="whisper-1")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--sessions", type=int, default=1, help="concurrent sessions per run")
    ap.add_argument("--silence-ms", type=int, default=500)
    ap.add_argument("--partial-ms", type=int, default=500, help="server setting when this script starts it")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    recordings = _recordings()
    stream = np.concatenate([np.zeros(RATE // 2, np.float32), recordings["beckett"], np.zeros(RATE, np.float32),
                             recordings["two_cities"], np.zeros(RATE, np.float32)])
    floor = _decode_floor(recordings["beckett"]) if args.url is None else None
    proc = None
    url = args.url
    if url is None:
        proc, url = _start_server(args.partial_ms)
    load_before = os.getloadavg()
    turns: list[dict[str, Any]] = []
    try:
        # warm-up: one short session (first decode, VAD load)
        asyncio.run(_session(url, args.api_key, recordings["beckett"][: RATE * 3], args.silence_ms, args.model))
        for _ in range(args.runs):
            async def runs() -> list[dict[str, Any]]:
                return await asyncio.gather(*[_session(url, args.api_key, stream, args.silence_ms, args.model)
                                              for _ in range(args.sessions)])
            for run in asyncio.run(runs()):
                turns += _turns(run, args.silence_ms)
    finally:
        if proc is not None:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
    load_after = os.getloadavg()
    report = {
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "load_before": load_before, "load_after": load_after},
        "settings": {"runs": args.runs, "sessions": args.sessions, "silence_ms": args.silence_ms,
                     "partial_ms": args.partial_ms if args.url is None else None, "model": args.model},
        "turns": len(turns),
        "engine_decode_3s_turn_ms": floor,
        "eos_to_completed_ms": _stats([t["eos_to_completed"] * 1000 for t in turns]),
        "stopped_to_completed_ms": _stats([t["stopped_to_completed"] * 1000 for t in turns]),
        "delta_interval_ms": _stats([x * 1000 for t in turns for x in t["delta_intervals"]]),
        "first_delta_ms": _stats([t["first_delta"] * 1000 for t in turns if t["first_delta"] is not None]),
        "turns_with_live_deltas": sum(1 for t in turns if t["first_delta"] is not None),
        "transcripts": [t["text"] for t in turns[: len(turns) // max(1, args.runs * args.sessions)]],
    }
    for key in ("eos_to_completed_ms", "stopped_to_completed_ms", "delta_interval_ms", "first_delta_ms"):
        s = report[key]
        if s.get("n"):
            print(f"{key:26s} n={s['n']:3d}  p50 {s['p50']:7.0f}  p95 {s['p95']:7.0f}  "
                  f"min {s['min']:7.0f}  max {s['max']:7.0f}")
    if floor:
        print(f"{'engine decode, 3 s turn':26s} n={floor['n']:3d}  p50 {floor['p50']:7.0f}  min {floor['min']:7.0f}  "
              f"max {floor['max']:7.0f}  (in-process, before the server starts)")
    print(f"turns {len(turns)}, with deltas while speaking {report['turns_with_live_deltas']}; "
          f"load average before {load_before[0]:.1f}, after {load_after[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
