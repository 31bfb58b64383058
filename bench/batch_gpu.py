"""Batching across requests on one GPU: a real ``voxbox serve`` per engine, batching on and off, in one run.

For each engine (fish-s2, echo-tts, torch-whisper: random weights at the published shapes, written
or built by this script) the server is started twice: with batching (``VOXBOX_ADMISSION__BATCHING=true``) and
without (one call at a time, the engine's own ``max_concurrency``). A reference voice is uploaded
(``POST /v1/voices``: voice cloning, as the published sglang-omni anchor), then clients stream
``POST /v1/audio/speech`` (wav) from ``c`` threads for each concurrency level. Per level: requests,
wall time, aggregate throughput (audio seconds per second, and x of c=1 in the same mode), request
latency and time to first audio (p50/p95), per-request RTF (wall / audio). Output under ``--out``:
``batch_gpu.json``, ``batch_<engine>.png`` (latency-throughput chart: batched vs unbatched, points
labelled by c) and ``servers.log`` (the servers' own log lines: capture/compile times, errors).

    python bench/batch_gpu.py --out $OUT                     # both engines; about 6-7 min on an H200
    python bench/batch_gpu.py --tiny --device cpu --out /tmp/b --levels 1,2 --off-levels 1,2   # CPU smoke
    python bench/batch_gpu.py --engines torch-whisper --out $OUT    # large-v3 shape, c = 1, 4, 16, 64

torch-whisper: each request is 30 s of noise (one window; ``vad=false``, ``language=en``,
``temperature=0``), the model decodes exactly ``max_new_tokens`` = 100 tokens per window (its
end-of-text token is suppressed in the random checkpoint; timestamps off, so one window per
request). Besides the servers, the engine's own offline throughput at batch 64 is measured in
this process (one 32-minute file, ``batch_size=64``): the bar for the HTTP path at c=64.

Timing does not depend on weight values once the lengths are fixed: fish-s2 stops at the load
option ``max_frames`` (with random weights the end token is practically never drawn earlier; the
audio actually returned is what is counted), echo-tts samples a fixed bucket with ``preset``.
Warm-up requests (excluded) run before each mode's levels; when batching, the bench then waits for
the server's idle-time warm-up (torch-whisper's graph captures, ``warm_graphs`` in ``/metrics``) and
runs ``--warm-rounds`` (default 3) rounds at each level, so every batch size's CUDA graphs exist
before timing (``--warm-rounds 0`` shows what the idle warm-up alone leaves to capture). Needs, besides torch: fastapi,
starlette, pydantic(+core, -settings), uvicorn, python-multipart, python-dotenv, annotated-types,
typing-inspection, av (PyAV), httpx, typer, rich, matplotlib, safetensors, tokenizers, einops and
echo-tts (``bench/batch_wheels.sh`` downloads the ones a bare CUDA image lacks).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import httpx  # noqa: E402
import numpy as np  # noqa: E402

FISH_TEXT = ("The old lighthouse keeper climbed the spiral stairs every evening, counting each of the steps "
             "as his father had taught him.")
ECHO_TEXT = "The old lighthouse keeper climbed the spiral stairs every evening, counting each step as he went."
REF_TRANSCRIPT = "This is the reference speech."
SAMPLE_RATE = 44100


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ref_wav(seconds: float) -> bytes:
    return _noise_wav(seconds, SAMPLE_RATE, seed=0)


def prepare(root: Path, engines: list[str], tiny: bool, device: str, fish_frames: int) -> dict[str, dict[str, Any]]:
    """Model directories and the catalog entries (``models.local``) that serve them."""
    out: dict[str, dict[str, Any]] = {}
    if "fish-s2" in engines:
        from voxbox.bench.shapes.fish import write_fish_dir  # upstream-shaped config.json + stand-in tokenizer

        d = write_fish_dir(root / "fish", tiny=tiny)
        out["fish-s2"] = {"engine": "fish-s2", "path": str(d),
                          "options": {"weights": "random", "max_context": 512 if tiny else 1024,
                                      "max_frames": fish_frames}}
    if "echo-tts" in engines:
        from voxbox.engines.tts.echo._random import write_random_model

        t0 = time.perf_counter()
        d = write_random_model(root / "echo", "tiny" if tiny else "real", device=device if device != "cpu" else "cpu")
        print(f"echo-tts: random weights written in {time.perf_counter() - t0:.1f} s", flush=True)
        out["echo-tts"] = {"engine": "echo-tts", "path": str(d), "options": {"preset": "fast"}}
    if "torch-whisper" in engines:
        from voxbox.bench.shapes.whisper import write_whisper

        t0 = time.perf_counter()
        d = write_whisper(root / "tw", "tiny" if tiny else "large-v3", device=device)
        print(f"torch-whisper: random weights written in {time.perf_counter() - t0:.1f} s", flush=True)
        out["torch-whisper"] = {"engine": "torch-whisper", "path": str(d),
                                "options": {"max_new_tokens": ASR_TOKENS, "without_timestamps": True}}
    return out


def _noise_wav(seconds: float, rate: int = 16000, seed: int = 1) -> bytes:
    """Mono 16-bit WAV of Gaussian noise (amplitude 0.1)."""
    rng = np.random.default_rng(seed)
    samples = np.clip(0.1 * rng.standard_normal(int(seconds * rate)), -1, 1)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((samples * 32767).astype("<i2").tobytes())
    return buf.getvalue()


ASR_SECONDS = 30.0
ASR_TOKENS = 100
ASR_WAV = _noise_wav(ASR_SECONDS)


def transcribe(client: httpx.Client, url: str, model: str, text: str) -> dict[str, Any]:
    """One 30-s transcription (``text`` unused: the same signature as :func:`speak`)."""
    t0 = time.perf_counter()
    resp = client.post(url + "/v1/audio/transcriptions", files={"file": ("noise.wav", ASR_WAV, "audio/wav")},
                       data={"model": model, "language": "en", "temperature": "0", "vad": "false",
                             "response_format": "json"})
    total = time.perf_counter() - t0
    if resp.status_code != 200:
        raise RuntimeError(f"HTTP {resp.status_code}: {resp.text[:300]}")
    return {"total_s": total, "ttfa_s": None, "audio_s": ASR_SECONDS, "rtf": total / ASR_SECONDS,
            "stages": server_timing(resp.headers.get("server-timing", ""))}


def server_timing(header: str) -> dict[str, float]:
    """``Server-Timing`` (``name;dur=ms, ...``) as stage -> seconds."""
    out: dict[str, float] = {}
    for part in header.split(","):
        name, _, rest = part.strip().partition(";")
        if rest.startswith("dur="):
            try:
                out[name] = float(rest[4:]) / 1000
            except ValueError:
                pass
    return out


def scrape_batching(url: str) -> dict[str, float]:
    """The server's batch-scheduler counters (``/metrics``), summed over models: name -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, float] = {}
    try:
        text = httpx.get(url + "/metrics", timeout=30).text
    except httpx.HTTPError:
        return out
    for fam in text_string_to_metric_families(text):
        if not fam.name.startswith(("voxbox_batch_", "voxbox_batcher_")):
            continue
        for sample in fam.samples:
            key = sample.labels.get("stat") or sample.name.removeprefix("voxbox_")
            out[key] = out.get(key, 0.0) + float(sample.value)
    return out


def batching_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Counter deltas over one level, with the derived mean batch and per-step / per-admission costs."""
    d = {k: round(after[k] - before.get(k, 0.0), 4) for k in after if not k.endswith(("_active", "_pending", "_slots"))}
    steps = d.get("batch_steps_total") or d.get("steps") or 0
    if steps:
        d["mean_batch"] = round(d.get("batch_rows_total", 0.0) / steps, 2)
    if d.get("steps"):
        d["ms_per_step"] = round(1000 * d.get("step_s", 0.0) / d["steps"], 3)
    if d.get("admits"):
        d["ms_per_admit"] = round(1000 * d.get("admit_s", 0.0) / d["admits"], 2)
        d["windows_per_admit"] = round(d.get("batch_admitted_total", 0.0) / d["admits"], 2)
    if d.get("batch_admitted_total") and "encode_gpu_s" in d:  # GPU time of the admissions' encoder passes
        d["encode_gpu_ms_per_window"] = round(1000 * d["encode_gpu_s"] / d["batch_admitted_total"], 2)
    return d


def offline_batch(entry: dict[str, Any], device: str, windows: int = 64, runs: int = 3) -> dict[str, Any]:
    """The engine's own throughput with ``batch_size=windows`` on one long file, in this process."""
    import torch

    from voxbox.engines.registry import load_engine
    from voxbox.types import Audio

    engine = load_engine("torch-whisper", entry["path"], device=device, **entry["options"])
    audio = Audio(np.random.default_rng(2).standard_normal(int(16000 * ASR_SECONDS * windows)).astype(np.float32)
                  * 0.1, 16000)
    opts = {"batch_size": windows, "temperature": (0.0,)}
    walls = []
    try:
        for i in range(runs + 1):
            t0 = time.perf_counter()
            segs, _ = engine.transcribe(audio, language="en", options=opts)
            list(segs)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            if i:  # the first run captures graphs
                walls.append(time.perf_counter() - t0)
    finally:
        engine.close()
        del engine
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    xrt = sorted(ASR_SECONDS * windows / w for w in walls)
    return {"windows": windows, "runs": runs, "throughput_xrt": {"median": xrt[len(xrt) // 2], "min": xrt[0],
                                                                  "max": xrt[-1]}}


class Server:
    """``voxbox serve`` in a child process, one catalog model preloaded, batching on or off."""

    def __init__(self, name: str, entry: dict[str, Any], *, batching: bool, batch_max: int, device: str,
                 data_dir: Path, log: Any) -> None:
        task = "ASR" if entry["engine"] == "torch-whisper" else "TTS"
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "VOXBOX_DATA_DIR": str(data_dir), "VOXBOX_MODELS__PRELOAD_DEFAULTS": "false",
               "VOXBOX_MODELS__PRELOAD": json.dumps([name]), "VOXBOX_MODELS__LOCAL": json.dumps({name: entry}),
               f"VOXBOX_MODELS__{task}": name, "VOXBOX_MODELS__TTL": "-1", "VOXBOX_MODELS__DEVICE": device,
               "VOXBOX_ADMISSION__BATCHING": "true" if batching else "false",
               "VOXBOX_ADMISSION__BATCH_MAX": str(batch_max), "VOXBOX_ADMISSION__QUEUE_SIZE": "1024",
               "VOXBOX_ADMISSION__REQUEST_TIMEOUT": "900", "PYTHONUNBUFFERED": "1"}
        env.pop("VOXBOX_API_KEY", None)
        env["PYTHONPATH"] = os.pathsep.join([str(HERE.parent / "src"), env.get("PYTHONPATH", "")])
        self.proc = subprocess.Popen([sys.executable, "-m", "voxbox.cli", "serve", "--port", str(self.port),
                                      "--log-level", "info"], env=env, stdout=log, stderr=log)

    def wait_ready(self, timeout: float) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            try:
                if httpx.get(self.url + "/health/ready", timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            if self.proc.poll() is not None:
                raise RuntimeError(f"server exited during start-up (code {self.proc.returncode}); see servers.log")
            time.sleep(0.25)
        raise RuntimeError("server did not become ready in time; see servers.log")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def speak(client: httpx.Client, url: str, model: str, text: str) -> dict[str, Any]:
    t0 = time.perf_counter()
    ttfa = None
    parts = []
    body = {"model": model, "input": text, "voice": "ref", "response_format": "wav"}
    with client.stream("POST", url + "/v1/audio/speech", json=body) as resp:
        for chunk in resp.iter_bytes():
            if ttfa is None and chunk:
                ttfa = time.perf_counter() - t0
            parts.append(chunk)
        status = resp.status_code
    total = time.perf_counter() - t0
    data = b"".join(parts)
    if status != 200:
        raise RuntimeError(f"HTTP {status}: {data[:300].decode(errors='replace')}")
    at = data.find(b"data")
    audio_s = (len(data) - (at + 8)) / 2 / SAMPLE_RATE if at >= 0 else 0.0
    return {"total_s": total, "ttfa_s": ttfa, "audio_s": audio_s, "rtf": total / audio_s if audio_s else None}


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(np.asarray(values), q)) if values else None


def run_level(url: str, model: str, text: str, c: int, n: int, call: Any = None) -> dict[str, Any]:
    runs: list[dict[str, Any]] = []
    errors: list[str] = []
    lock = threading.Lock()
    limits = httpx.Limits(max_connections=c + 4, max_keepalive_connections=c + 4)
    with httpx.Client(timeout=900, limits=limits) as client:
        def one(_: int) -> None:
            try:
                r = (call or speak)(client, url, model, text)
                with lock:
                    runs.append(r)
            except Exception as exc:  # noqa: BLE001 - counted and reported
                with lock:
                    errors.append(str(exc)[:300])

        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=c) as pool:
            list(pool.map(one, range(n)))
        wall = time.perf_counter() - t0
    lat = [r["total_s"] for r in runs]
    ttfa = [r["ttfa_s"] for r in runs if r["ttfa_s"] is not None]
    rtf = [r["rtf"] for r in runs if r["rtf"] is not None]
    audio = sum(r["audio_s"] for r in runs)
    stage_names = sorted({k for r in runs for k in r.get("stages", {})})
    per_stage = {k: [r["stages"][k] for r in runs if k in r.get("stages", {})] for k in stage_names}
    stages = {k: {"p50": _pct(v, 50), "p95": _pct(v, 95)} for k, v in per_stage.items()}
    return {"server_timing_s": stages,
            "concurrency": c, "requests": n, "failed": len(errors), "errors": errors[:3], "wall_s": wall,
            "audio_s": audio, "throughput_xrt": audio / wall if wall > 0 else None,
            "requests_per_s": len(runs) / wall if wall > 0 else None,
            "latency_s": {"p50": _pct(lat, 50), "p95": _pct(lat, 95), "max": max(lat) if lat else None},
            "ttfa_s": {"p50": _pct(ttfa, 50), "p95": _pct(ttfa, 95), "max": max(ttfa) if ttfa else None},
            "rtf": {"p50": _pct(rtf, 50), "p95": _pct(rtf, 95)},
            "audio_s_per_request": audio / len(runs) if runs else None}


def py_spy(pid: int, out: Path, tag: str, seconds: int = 3) -> None:
    """Two py-spy samples of the server while the top level runs (collapsed stacks, one line each):
    the thread holding the GIL (``--gil``), then every thread, idle or not (``--idle``: where the
    scheduler thread waits)."""
    import shutil

    exe = shutil.which("py-spy")
    if exe is None:
        return
    time.sleep(1.0)  # into the level's steady state
    for kind, extra in (("gil", ["--gil"]), ("all", ["--idle"])):
        path = out / f"pyspy_{tag}_{kind}.txt"
        proc = subprocess.run([exe, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200",
                               "--format", "raw", "--nonblocking", "--threads", "--output", str(path), *extra],
                              capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            path.write_text(f"py-spy failed ({proc.returncode}): {proc.stderr[-2000:]}\n")


def wait_idle_warm(url: str, timeout: float = 180.0) -> dict[str, float]:
    """Wait until the model's idle-time warm-up (``warm_graphs`` in ``/metrics``, where the
    batcher has one) stops growing; its graphs and seconds."""
    last, deadline = -1.0, time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = scrape_batching(url)
        if "warm_graphs" not in st:
            return {}
        if st["warm_graphs"] == last:
            return {"graphs": st["warm_graphs"], "seconds": st.get("warm_s", 0.0)}
        last = st["warm_graphs"]
        time.sleep(1.0)
    return {"graphs": last, "timed_out": 1.0}


def bench_mode(name: str, entry: dict[str, Any], text: str, *, batching: bool, levels: list[int], per_worker: int,
               batch_max: int, device: str, root: Path, log: Any, ref_seconds: float,
               profile: Path | None = None, warm_rounds: int = 3) -> dict[str, Any]:
    tag = f"{name} batching={'on' if batching else 'off'}"
    log.write(f"\n===== {tag} =====\n".encode())
    log.flush()
    srv = Server(name, entry, batching=batching, batch_max=batch_max, device=device,
                 data_dir=root / f"data-{name}-{int(batching)}", log=log)
    out: dict[str, Any] = {"batching": batching, "levels": []}
    call = transcribe if entry["engine"] == "torch-whisper" else speak
    try:
        out["ready_s"] = srv.wait_ready(900)
        print(f"{tag}: ready in {out['ready_s']:.1f} s", flush=True)
        if call is speak:
            r = httpx.post(srv.url + "/v1/voices", data={"name": "ref", "transcript": REF_TRANSCRIPT},
                           files={"file": ("ref.wav", _ref_wav(ref_seconds), "audio/wav")}, timeout=120)
            if r.status_code != 201:
                raise RuntimeError(f"voice upload: HTTP {r.status_code}: {r.text[:300]}")
        t0 = time.perf_counter()
        run_level(srv.url, name, text, 1, 2, call)
        if batching:
            out["idle_warm"] = wait_idle_warm(srv.url)
            if out["idle_warm"]:
                print(f"{tag}: idle warm-up {out['idle_warm']}", flush=True)
        if batching and warm_rounds:  # graphs the idle warm-up did not capture: warm_rounds rounds a level
            for c in levels:
                if c > 1:
                    run_level(srv.url, name, text, c, warm_rounds * c, call)
        out["warmup_s"] = time.perf_counter() - t0
        models = httpx.get(srv.url + "/v1/models", timeout=30).json()
        out["model_info"] = next((m for m in models.get("data", []) if m.get("id") == name), None)
        for c in levels:
            before = scrape_batching(srv.url)
            spy = None
            if profile and batching and c == max(levels):
                spy = threading.Thread(target=py_spy, args=(srv.proc.pid, profile, f"{name}_c{c}"), daemon=True)
                spy.start()
            row = run_level(srv.url, name, text, c, max(3, per_worker * c), call)
            if spy is not None:
                spy.join()
            row["batching"] = batching_delta(before, scrape_batching(srv.url)) if batching else {}
            out["levels"].append(row)
            ttfa = row["ttfa_s"]["p95"]
            print(f"{tag} c={c}: {row['throughput_xrt']:.3g} x real time, p95 latency "
                  f"{row['latency_s']['p95']:.2f} s, p95 TTFA {ttfa if ttfa is None else round(ttfa, 3)} s, "
                  f"failed {row['failed']}", flush=True)
            st = {k: round(v["p50"] * 1000, 1) for k, v in row["server_timing_s"].items() if v["p50"] is not None}
            if st:
                print(f"    server-timing p50 ms: {st}", flush=True)
            if row["batching"]:
                print(f"    batching: {row['batching']}", flush=True)
    except Exception as exc:  # noqa: BLE001 - partial results are kept
        out["error"] = f"{type(exc).__name__}: {exc}"[:500]
        print(f"{tag}: {out['error']}", flush=True)
    finally:
        srv.stop()
    base = next((lv for lv in out["levels"] if lv["concurrency"] == 1), None)
    for lv in out["levels"]:
        if base and base["throughput_xrt"] and lv["throughput_xrt"]:
            lv["x_of_c1"] = lv["throughput_xrt"] / base["throughput_xrt"]
    return out


def chart(name: str, modes: dict[str, Any], path: Path, where: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for key, marker, color in (("batched", "o", "tab:blue"), ("unbatched", "s", "tab:orange")):
        levels = [lv for lv in modes.get(key, {}).get("levels", []) if lv["throughput_xrt"]]
        if not levels:
            continue
        x = [lv["throughput_xrt"] for lv in levels]
        y = [lv["latency_s"]["p95"] for lv in levels]
        ax.plot(x, y, marker=marker, linestyle="-", color=color, label=f"{key}: p95 latency")
        t = [lv["ttfa_s"]["p95"] for lv in levels]
        if all(v is not None for v in t):
            ax.plot(x, t, marker=marker, linestyle=":", color=color, alpha=0.6, label=f"{key}: p95 time to first audio")
        for lv, xi, yi in zip(levels, x, y, strict=False):
            ax.annotate(f"c={lv['concurrency']}", (xi, yi), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xlabel("aggregate throughput (audio seconds per second)")
    ax.set_ylabel("seconds")
    ax.set_yscale("log")
    what = "30-s transcriptions" if name == "torch-whisper" else "voice cloning"
    ax.set_title(f"{name}: latency vs throughput ({where}), {what}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--engines", default="fish-s2,echo-tts")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="tiny random models (a CPU smoke test of the script)")
    ap.add_argument("--levels", default=None, help="batched concurrency levels (default fish 1,4,16,64; echo 1,4,8,16)")
    ap.add_argument("--off-levels", default=None,
                    help="unbatched levels (default fish 1,4,16; echo 1,4,8; none: no unbatched server)")
    ap.add_argument("--per-worker", type=int, default=2, help="requests per client thread and level (batched)")
    ap.add_argument("--batch-max", type=int, default=64)
    ap.add_argument("--warm-rounds", type=int, default=3,
                    help="untimed rounds per batched level before timing (after the server's idle warm-up)")
    ap.add_argument("--py-spy", action="store_true",
                    help="profile the batched server at the top level with py-spy, if on PATH (pyspy_*.txt)")
    ap.add_argument("--fish-frames", type=int, default=128, help="frames per fish-s2 request (21.5 per second)")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    engines = [e.strip() for e in args.engines.split(",") if e.strip()]
    defaults = {"fish-s2": ([1, 4, 16, 64], [1, 4, 16]), "echo-tts": ([1, 4, 8, 16], [1, 4, 8]),
                "torch-whisper": ([1, 4, 16, 64], [1, 4, 16])}
    result: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "machine": platform.node(),
                              "command": "python bench/batch_gpu.py " + " ".join(sys.argv[1:]), "engines": {}}
    try:
        import torch

        result["torch"] = torch.__version__
        result["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass

    def dump() -> None:
        (out / "batch_gpu.json").write_text(json.dumps(result, indent=1, default=str))

    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, open(out / "servers.log", "wb") as log:
        root = Path(tmp)
        entries = prepare(root, engines, args.tiny, args.device, args.fish_frames)
        for name in engines:
            on = [int(c) for c in args.levels.split(",")] if args.levels else defaults[name][0]
            off = ([] if args.off_levels == "none" else [int(c) for c in args.off_levels.split(",")]) \
                if args.off_levels else defaults[name][1]
            text = FISH_TEXT if name == "fish-s2" else ECHO_TEXT
            # a 10 s reference (the tiny fish codec makes 2756 frames a second: keep its prompt small)
            ref_seconds = 10.0 if not args.tiny else (0.05 if name == "fish-s2" else 0.25)
            modes: dict[str, Any] = {}
            result["engines"][name] = {"catalog": entries[name], "text": text, "modes": modes}
            for key, batching, levels, per_worker in (("batched", True, on, args.per_worker),
                                                      ("unbatched", False, off, 1)):
                if not levels:  # --off-levels none: no unbatched server
                    continue
                modes[key] = bench_mode(name, entries[name], text, batching=batching, levels=levels,
                                        per_worker=per_worker, batch_max=args.batch_max, device=args.device,
                                        root=root, log=log, ref_seconds=ref_seconds,
                                        profile=out if args.py_spy else None, warm_rounds=args.warm_rounds)
                dump()
            if name == "torch-whisper":
                try:
                    modes["offline_batch64"] = offline_batch(entries[name], args.device, 64 if not args.tiny else 4)
                except Exception as exc:  # noqa: BLE001 - reported
                    modes["offline_batch64"] = {"error": f"{type(exc).__name__}: {exc}"[:500]}
            chart(name, modes, out / f"batch_{name.split('-')[0]}.png", result.get("gpu") or args.device)
            result["engines"][name]["targets"] = targets(name, modes)
            dump()
    result["elapsed_s"] = time.perf_counter() - t_all
    dump()
    print(json.dumps({n: e.get("targets") for n, e in result["engines"].items()}, indent=1))
    return 0


def targets(name: str, modes: dict[str, Any]) -> dict[str, Any]:
    """The issue's bars: fish-s2 c=16 >= 8x c=1 with p95 TTFA <= 300 ms; echo-tts c=8 >= 3x c=1."""
    lv = {x["concurrency"]: x for x in modes.get("batched", {}).get("levels", [])}
    off = {x["concurrency"]: x for x in modes.get("unbatched", {}).get("levels", [])}
    c = {"fish-s2": 16, "torch-whisper": 64}.get(name, 8)
    got = lv.get(c, {})
    ratio = None
    if got.get("throughput_xrt") and off.get(c, {}).get("throughput_xrt"):
        ratio = got["throughput_xrt"] / off[c]["throughput_xrt"]
    out: dict[str, Any] = {"concurrency": c, "x_of_c1": got.get("x_of_c1"),
                           "p95_ttfa_s": got.get("ttfa_s", {}).get("p95"), "rtf_p50": got.get("rtf", {}).get("p50"),
                           "vs_unbatched_same_c": ratio}
    if name == "fish-s2":
        out["requests_per_s"] = got.get("requests_per_s")
        out["met"] = bool(out["x_of_c1"] and out["x_of_c1"] >= 8 and out["p95_ttfa_s"] is not None
                          and out["p95_ttfa_s"] <= 0.3)
    elif name == "torch-whisper":
        offline = modes.get("offline_batch64", {}).get("throughput_xrt", {}).get("median")
        out["offline_batch64_xrt"] = offline
        out["of_offline"] = got["throughput_xrt"] / offline if offline and got.get("throughput_xrt") else None
        out["met"] = bool(out["x_of_c1"] and out["x_of_c1"] >= 10 and out["of_offline"] and out["of_offline"] >= 0.7)
    else:
        out["met"] = bool(out["x_of_c1"] and out["x_of_c1"] >= 3)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
