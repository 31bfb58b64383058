"""Per-request latency through ``voxbox serve --ray`` vs the plain server, interleaved, same run.

Starts a local Ray cluster (``ray start --head``, 2 CPUs, as tests/ray do), ``voxbox serve --ray``
on it (model replicas of 0.5 CPU) and a plain in-process server, warms both, then sends
``--requests`` requests of each kind to each server alternately::

    python bench/ray_serve_latency.py [--requests 12]

Prints median (min-max) wall time per request: a short speech request (pcm) and the transcription
of ``beckett.wav`` (10 s).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "ray"))
sys.path.insert(0, str(ROOT / "tests" / "integration"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=12)
    args = ap.parse_args()
    import moonshine_voice
    from ray_harness import LocalCluster, RayServer
    from server_harness import RunningServer, make_settings

    clip = (Path(moonshine_voice.__file__).parent / "assets" / "beckett.wav").read_bytes()

    def speech(url: str) -> float:
        t = time.perf_counter()
        r = httpx.post(url + "/v1/audio/speech", timeout=60, json={
            "model": "tts-1", "input": "Hello there.", "voice": "alloy", "response_format": "pcm"})
        assert r.status_code == 200, r.text
        return time.perf_counter() - t

    def asr(url: str) -> float:
        t = time.perf_counter()
        r = httpx.post(url + "/v1/audio/transcriptions", files={"file": ("b.wav", clip)},
                       data={"model": "whisper-1"}, timeout=60)
        assert r.status_code == 200, r.text
        return time.perf_counter() - t

    cluster = LocalCluster(cpus=2)
    cluster.connect()
    ray_srv = RayServer(cluster, "--replica-cpus", "0.5").wait_ready()
    plain = RunningServer(make_settings(Path(tempfile.mkdtemp()))).start()
    try:
        for name, fn in (("speech", speech), ("asr", asr)):
            urls = {"plain": plain.url, "ray": ray_srv.url}
            for url in urls.values():
                fn(url)  # warm-up
            times: dict[str, list[float]] = {k: [] for k in urls}
            for _ in range(args.requests):
                for label, url in urls.items():
                    times[label].append(fn(url))
            for label, v in times.items():
                print(f"{name} {label}: median {1000 * statistics.median(v):.1f} ms "
                      f"({1000 * min(v):.1f}-{1000 * max(v):.1f})", flush=True)
    finally:
        plain.stop()
        ray_srv.stop()
        cluster.stop()


if __name__ == "__main__":
    main()
