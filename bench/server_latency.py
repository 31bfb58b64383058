"""Server time to first audio and overhead versus calling the engine directly (hibari, piper).

    python bench/server_latency.py                 # both engines, 20 runs each after 3 warm-ups
    python bench/server_latency.py --runs 50 --json bench-results/server_latency.json

What is measured, per engine, on the same machine in the same run:

* direct: ``engine.stream(text)`` in this process — time to the first chunk (TTFA) and to the last
  chunk (total synthesis);
* server: ``voxbox serve`` started as a subprocess on 127.0.0.1, a client POSTs
  ``/v1/audio/speech`` (``response_format=wav`` at the engine's rate, chunked) over a kept-alive
  connection — time from sending the request to the first body byte (TTFA) and to the last byte.

Direct and server runs alternate so both see the same machine load. On a busy machine the paired
difference is noisy; the ``Server-Timing`` header gives a load-robust split of the server's own
share: its time to first audio minus the engine's first-chunk stages and encoding ("internal"),
and the client-measured TTFA minus the server's ("client gap"). Overhead per pair =
(server total - direct total) / direct total; the median over pairs is reported. The server's
figure includes HTTP, JSON validation, admission, the worker-pool hand-off per chunk, WAV encoding
and the socket. Warm-up runs are excluded; engines are loaded before timing starts (warm).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
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

PARAGRAPH = (
    "The weather today is mild, with a light breeze from the west. "
    "Later this afternoon, expect a few clouds and a chance of rain."
)

ENGINES = {"hibari": "hibari", "piper": "piper"}  # API model id -> registry engine name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _summary(xs: list[float]) -> dict[str, float]:
    return {"min": min(xs), "median": statistics.median(xs), "max": max(xs)}


def _direct_once(engine: Any, text: str) -> tuple[float, float, float]:
    t0 = time.perf_counter()
    first = None
    seconds = 0.0
    for chunk in engine.stream(text):
        if first is None:
            first = time.perf_counter() - t0
        seconds += len(chunk.samples) / chunk.sample_rate
    return first or 0.0, time.perf_counter() - t0, seconds


def _server_once(client: httpx.Client, url: str, model: str, text: str) -> tuple[float, float, int, str]:
    body = {"model": model, "voice": "alloy", "input": text, "response_format": "wav"}
    t0 = time.perf_counter()
    first = None
    n = 0
    with client.stream("POST", url + "/v1/audio/speech", json=body) as r:
        r.raise_for_status()
        for chunk in r.iter_raw():
            if chunk and first is None:
                first = time.perf_counter() - t0
            n += len(chunk)
        timing = r.headers.get("server-timing", "")
    return first or 0.0, time.perf_counter() - t0, n, timing


def bench(engine_name: str, model: str, url: str, text: str, runs: int, warmup: int) -> dict[str, Any]:
    """Direct and server runs interleaved (d, s, d, s...) so both see the same machine load."""
    from voxbox.engines.registry import load_engine

    engine = load_engine(engine_name, None)
    d_ttfa, d_total, s_ttfa, s_total, internal, gap = [], [], [], [], [], []
    audio = 0.0
    timing = ""
    with httpx.Client(timeout=60) as client:
        for i in range(warmup + runs):
            dt, dT, audio = _direct_once(engine, text)
            st, sT, _n, timing = _server_once(client, url, model, text)
            if i >= warmup:
                d_ttfa.append(dt)
                d_total.append(dT)
                s_ttfa.append(st)
                s_total.append(sT)
                stages = {k: float(v) / 1000 for k, v in re.findall(r"([\w.-]+);dur=([\d.]+)", timing)}
                engine_first = sum(
                    v for k, v in stages.items() if k not in ("load", "queue", "ttfa", "total", "encode", "voice")
                )
                internal.append(stages["ttfa"] - engine_first - stages.get("encode", 0.0))
                gap.append(st - stages["ttfa"])
    engine.close()
    overhead = [(s - d) / d for s, d in zip(s_total, d_total, strict=False)]
    return {
        "audio_s": audio,
        "direct": {"ttfa_s": _summary(d_ttfa), "total_s": _summary(d_total)},
        "server": {
            "ttfa_s": _summary(s_ttfa),
            "total_s": _summary(s_total),
            "server_timing_example": timing,
            # from Server-Timing: the server's own time to first audio minus the engine's
            # first-chunk stages and encoding (HTTP parsing, validation, admission, hand-off)
            "internal_overhead_to_first_audio_s": _summary(internal),
            # client-measured TTFA minus the server's: socket, HTTP framing, client
            "client_gap_s": _summary(gap),
        },
        "overhead_fraction": {
            "of_medians": (statistics.median(s_total) - statistics.median(d_total)) / statistics.median(d_total),
            "median_paired": statistics.median(overhead),
        },
    }


def start_server(port: int, data_dir: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "VOXBOX_DATA_DIR": data_dir,
        "VOXBOX_MODELS__PRELOAD_DEFAULTS": "false",
        "VOXBOX_MODELS__PRELOAD": json.dumps(list(ENGINES)),
        "VOXBOX_MODELS__TTL": "-1",
    }
    env.pop("VOXBOX_API_KEY", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "voxbox.cli", "serve", "--port", str(port), "--log-level", "warning"], env=env
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if proc.poll() is not None:
            raise SystemExit("server exited during start-up")
        time.sleep(0.2)
    proc.kill()
    raise SystemExit("server did not become ready")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--text", default=PARAGRAPH)
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()

    results: dict[str, Any] = {
        "machine": {"platform": platform.platform(), "python": platform.python_version(), "cpus": os.cpu_count()},
        "text_chars": len(args.text),
        "runs": args.runs,
        "warmup": args.warmup,
        "engines": {},
    }
    load_before = os.getloadavg()
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        proc = start_server(port, tmp)
        try:
            url = f"http://127.0.0.1:{port}"
            for model, engine in ENGINES.items():
                results["engines"][model] = bench(engine, model, url, args.text, args.runs, args.warmup)
        finally:
            proc.send_signal(signal.SIGTERM)
            rc = proc.wait(timeout=60)
            results["server_exit_code"] = rc
    results["loadavg"] = {"before": load_before, "after": os.getloadavg()}

    print(f"text: {args.text!r} ({len(args.text)} chars); {args.runs} runs after {args.warmup} warm-ups; medians\n")
    print(
        "| engine | audio s | direct TTFA ms | server TTFA ms | direct total ms | server total ms "
        "| overhead ms | overhead (paired median) | overhead (of medians) |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for model, r in results["engines"].items():
        d, s = r["direct"], r["server"]
        dm, sm = d["total_s"]["median"], s["total_s"]["median"]
        print(
            f"| {model} | {r['audio_s']:.2f} | {d['ttfa_s']['median'] * 1000:.1f} | "
            f"{s['ttfa_s']['median'] * 1000:.1f} | {dm * 1000:.1f} | {sm * 1000:.1f} | {(sm - dm) * 1000:+.1f} | "
            f"{r['overhead_fraction']['median_paired'] * 100:+.1f}% | "
            f"{r['overhead_fraction']['of_medians'] * 100:+.1f}% |"
        )
    print()
    for model, r in results["engines"].items():
        s = r["server"]
        print(
            f"{model}: server-internal overhead to first audio "
            f"{s['internal_overhead_to_first_audio_s']['median'] * 1000:.2f} ms, "
            f"client/socket gap {s['client_gap_s']['median'] * 1000:.2f} ms (medians, from Server-Timing)"
        )
    print(f"\nload average during the run: {results['loadavg']}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
