"""faster-whisper (tiny.en, CPU) through the server: batching across requests on vs off.

    python bench/batch_asr_cpu.py                       # c = 1, 2, 4; 3 rounds; beam 5 (the default)
    python bench/batch_asr_cpu.py --rounds 5 --greedy --json bench-results/batch_asr_cpu.json
    python bench/batch_asr_cpu.py --device cuda --levels 1,4,16   # the same on a GPU

Two ``voxbox serve`` subprocesses run side by side on loopback, one with
``admission.batching=true`` and one with it off, both with the bundled tiny.en and the server's
defaults otherwise (Silero VAD on, int8, CPU threads = cores up to 8). For every round and every
concurrency ``c`` both servers get the same load, one after the other, the order alternating from
round to round (interleaved, so both see the same machine load): ``c`` client threads post
``max(3, 2c)`` transcriptions of real speech (moonshine-voice's beckett 10 s, endgame 28 s,
clone-test 4 s in turn). Per level: throughput = seconds of audio / wall seconds, and the median
request latency. Reported: the median over rounds with min and max.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

CLIPS = (("beckett.wav", 9.963), ("endgame_nagg_nell.wav", 28.277), ("clone-test.wav", 4.110))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _assets() -> Path:
    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("moonshine-voice is not installed (pip install moonshine-voice)")
    return Path(list(spec.submodule_search_locations)[0]) / "assets"


def start(batching: bool, data_dir: str, window_ms: float, device: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    env = {**os.environ, "VOXBOX_DATA_DIR": data_dir, "VOXBOX_MODELS__PRELOAD_DEFAULTS": "false",
           "VOXBOX_MODELS__PRELOAD": json.dumps(["whisper-1"]), "VOXBOX_MODELS__TTL": "-1",
           "VOXBOX_MODELS__DEVICE": device, "VOXBOX_ADMISSION__BATCHING": "true" if batching else "false",
           "VOXBOX_ADMISSION__BATCH_WINDOW_MS": str(window_ms), "VOXBOX_ADMISSION__QUEUE_SIZE": "64"}
    env.pop("VOXBOX_API_KEY", None)
    proc = subprocess.Popen([sys.executable, "-m", "voxbox.cli", "serve", "--port", str(port),
                             "--log-level", "warning"], env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("server exited during start-up")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready")


def level(url: str, clips: list[tuple[bytes, float]], c: int, form: dict[str, str]) -> dict[str, float]:
    n = max(3, 2 * c)
    lat: list[float] = []
    audio = 0.0
    lock = threading.Lock()
    with httpx.Client(timeout=600, limits=httpx.Limits(max_connections=c + 2)) as client:
        def one(i: int) -> None:
            nonlocal audio
            data, seconds = clips[i % len(clips)]
            t0 = time.perf_counter()
            r = client.post(url + "/v1/audio/transcriptions", files={"file": ("a.wav", data, "audio/wav")},
                            data={"model": "whisper-1", **form})
            r.raise_for_status()
            with lock:
                lat.append(time.perf_counter() - t0)
                audio += seconds

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=c) as pool:
            list(pool.map(one, range(n)))
        wall = time.perf_counter() - t0
    return {"xrt": audio / wall, "latency_p50": statistics.median(lat), "wall": wall}


def _summary(xs: list[float]) -> dict[str, float]:
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--levels", default="1,2,4")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--window-ms", type=float, default=5.0)
    ap.add_argument("--greedy", action="store_true", help="beam_size=1, temperature=0 (default: the server's)")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda: the same comparison on a GPU")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    levels = [int(x) for x in args.levels.split(",")]
    assets = _assets()
    clips = [((assets / name).read_bytes(), seconds) for name, seconds in CLIPS]
    form = {"temperature": "0"} if args.greedy else {}
    if args.greedy:
        print("note: the OpenAI form has no beam_size; --greedy sets temperature=0 only", flush=True)
    servers: dict[str, tuple[subprocess.Popen, str]] = {}
    rows: dict[str, dict[int, list[dict[str, float]]]] = {"on": {c: [] for c in levels}, "off": {c: [] for c in levels}}
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for mode in ("on", "off"):
                servers[mode] = start(mode == "on", f"{tmp}/{mode}", args.window_ms, args.device)
                level(servers[mode][1], clips, 1, form)  # warm-up
            for r in range(args.rounds):
                for c in levels:
                    order = ("on", "off") if (r + c) % 2 == 0 else ("off", "on")
                    for mode in order:
                        row = level(servers[mode][1], clips, c, form)
                        rows[mode][c].append(row)
                        print(f"round {r + 1} c={c} batching={mode}: {row['xrt']:.2f} x real time, "
                              f"median latency {row['latency_p50']:.2f} s", flush=True)
        finally:
            for proc, _ in servers.values():
                proc.terminate()
                proc.wait(30)
    result: dict[str, Any] = {"levels": {}}
    print("\nc  batching  throughput x real time (median [min-max])  median latency s (median [min-max])")
    for c in levels:
        for mode in ("off", "on"):
            xrt = _summary([x["xrt"] for x in rows[mode][c]])
            lat = _summary([x["latency_p50"] for x in rows[mode][c]])
            result["levels"].setdefault(str(c), {})[mode] = {"xrt": xrt, "latency_p50": lat, "runs": rows[mode][c]}
            print(f"{c}  {mode:8s}  {xrt['median']:.2f} [{xrt['min']:.2f}-{xrt['max']:.2f}]"
                  f"                     {lat['median']:.2f} [{lat['min']:.2f}-{lat['max']:.2f}]")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
