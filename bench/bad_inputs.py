"""Bad input against a real `voxbox serve`: status counts and server RSS (issue #12, parts 2 and 3).

Starts `python -m voxbox.cli serve` on 127.0.0.1 (default models + tts-1-hd preloaded), warms it up,
then sends every case of tests/integration/fuzz_cases.py once — uploads to /v1/audio/transcriptions
and /v1/voices, bodies to /v1/audio/speech — one at a time on one keep-alive connection, and
counts responses by status (a dropped connection counts as "reset"). RSS of the server process is
read after the warm-up and after the run. Then the 1 Hz WAV case: eight concurrent uploads of a
7 KB WAV that declares a 1 Hz sample rate, with the server's RSS sampled every 20 ms.

    python bench/bad_inputs.py [--json out.json] [--skip-one-hz]
"""

from __future__ import annotations

import argparse
import collections
import concurrent.futures
import json
import os
import platform
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "integration"))
from fuzz_cases import (  # noqa: E402
    ServeProcess,
    one_hz_wav,
    send_body,
    send_upload,
    speech_cases,
    upload_cases,
)

MB = 1024 * 1024


def _status(send: Callable[[], Any]) -> str:
    try:
        r = send()
        return str(r[0] if isinstance(r, tuple) else r.status_code)
    except httpx.HTTPError as exc:
        return f"reset ({type(exc).__name__})"


def run_cases(srv: ServeProcess) -> dict:
    uploads, bodies = upload_cases(), speech_cases()
    counts: dict[str, collections.Counter] = {k: collections.Counter() for k in ("transcriptions", "voices", "speech")}
    fives: list[str] = []
    with httpx.Client(timeout=120) as client:
        srv.warm_up(client)
        time.sleep(1.0)
        rss0 = srv.rss()
        t0 = time.monotonic()
        for i, case in enumerate(uploads):
            for route, key in (("/v1/audio/transcriptions", "transcriptions"), ("/v1/voices", "voices")):
                st = _status(lambda c=case, r=route, n=f"fz{i}": send_upload(client, srv.url, c, r, name=n))
                counts[key][st] += 1
                if not st.startswith("4") and not st.startswith("2"):
                    fives.append(f"{key}:{case.id}:{st}")
        for case in bodies:
            st = _status(lambda c=case: send_body(client, srv.url, c))
            counts["speech"][st] += 1
            if not st.startswith("4") and not st.startswith("2"):
                fives.append(f"speech:{case.id}:{st}")
        wall = time.monotonic() - t0
    time.sleep(1.0)
    rss1 = srv.rss()
    return {
        "cases": {"uploads": len(uploads), "bodies": len(bodies)},
        "counts": {k: dict(v) for k, v in counts.items()},
        "not_4xx_or_2xx": fives,
        "rss_before_mb": rss0 / MB,
        "rss_after_mb": rss1 / MB,
        "wall_s": wall,
    }


def run_one_hz(srv: ServeProcess, n: int = 8) -> dict:
    data = one_hz_wav()
    peak = [srv.rss()]
    base = peak[0]
    stop = threading.Event()

    def sample() -> None:
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], srv.rss())
            except Exception:  # noqa: BLE001 - the process may be gone
                return
            time.sleep(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    def upload(_: int) -> str:
        with httpx.Client(timeout=600) as c:
            return _status(
                lambda: c.post(
                    srv.url + "/v1/audio/transcriptions",
                    data={"model": "whisper-1"},
                    files={"file": ("bomb.wav", data, "audio/wav")},
                )
            )

    t0 = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(n) as ex:
        statuses = list(ex.map(upload, range(n)))
    wall = time.monotonic() - t0
    time.sleep(2.0)
    stop.set()
    sampler.join()
    return {
        "bytes": len(data),
        "uploads": n,
        "statuses": dict(collections.Counter(statuses)),
        "wall_s": wall,
        "rss_before_mb": base / MB,
        "rss_peak_mb": peak[0] / MB,
        "rss_after_mb": srv.rss() / MB,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", type=Path, help="write the results here too")
    ap.add_argument("--skip-one-hz", action="store_true")
    ap.add_argument(
        "--timeout", type=float, default=600.0, help="server request timeout, s (VOXBOX_ADMISSION__REQUEST_TIMEOUT)"
    )
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        srv = ServeProcess(
            Path(tmp),
            "--preload",
            "tts-1-hd",
            env={"VOXBOX_ADMISSION__REQUEST_TIMEOUT": str(args.timeout), "VOXBOX_LOG_LEVEL": "warning"},
        )
        try:
            srv.wait_ready()
            result = {
                "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
                "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                "fuzz": run_cases(srv),
            }
            if not args.skip_one_hz:
                result["one_hz"] = run_one_hz(srv)
        finally:
            srv.stop()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
