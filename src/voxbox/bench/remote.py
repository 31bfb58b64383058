"""``--url`` mode: benchmark a running OpenAI-compatible speech server over HTTP.

For each model, item (text or clip) and concurrency level, ``max(runs, concurrency x
requests_per_worker)`` requests are sent by ``concurrency`` worker threads sharing one httpx
client. Reported per level: every request's latency (p50/p95/p99), time to first audio byte
(TTS, streamed), throughput in audio seconds per wall second, and the server's per-stage times
from its ``Server-Timing`` header where it sends one.
"""

from __future__ import annotations

import functools
import io
import threading
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import numpy as np

from voxbox.bench.metrics import clock, library_versions, machine_description, percentiles
from voxbox.bench.report import build_report
from voxbox.bench.scenarios import materialize_clips

__all__ = ["parse_server_timing", "run_http"]

OnEvent = Callable[[str, dict[str, Any]], None]
_NOT_STAGES = {"total", "ttfa"}


def parse_server_timing(header: str | None) -> dict[str, float]:
    """``Server-Timing: a;dur=12.5, b;dur=3`` -> {"a": 0.0125, "b": 0.003}.

    ``total`` and ``ttfa`` are spans over other stages, not stages, and are left out so stage
    times still add up to at most the request's time.
    """
    out: dict[str, float] = {}
    for part in (header or "").split(","):
        name, _, rest = part.strip().partition(";")
        if not name or name in _NOT_STAGES:
            continue
        for attr in rest.split(";"):
            k, _, v = attr.strip().partition("=")
            if k == "dur":
                try:
                    out[name] = out.get(name, 0.0) + float(v) / 1000.0
                except ValueError:
                    pass
    return out


def _wav_bytes(samples: np.ndarray, rate: int = 16000) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buf.getvalue()


def _audio_seconds(data: bytes) -> float:
    from voxbox.audio.decode import decode

    return decode(data, max_duration=None).duration


def _default_models(task: str, scen: dict[str, Any]) -> list[str]:
    from voxbox.engines.registry import ENGINES, available

    out = []
    for t in scen.get(task, {}).get("targets", []):
        spec = ENGINES.get(t["engine"])
        if spec is None or spec.default_model is None or not available(spec)[0]:
            continue
        mid = f"{t['engine']}:{t['model']}" if t.get("model") else t["engine"]
        if mid not in out:
            out.append(mid)
    return out or (["tts-1"] if task == "tts" else ["whisper-1"])


def run_http(
    task: str,
    scen: dict[str, Any],
    *,
    url: str,
    out_dir: Path,
    models: list[str] | None = None,
    concurrency: list[int] | None = None,
    runs: int | None = None,
    warmup: int | None = None,
    texts: list[str] | None = None,
    clips: list[str] | None = None,
    quick: bool = False,
    command: str | None = None,
    on_event: OnEvent | None = None,
) -> dict[str, Any]:
    import httpx

    on_event = on_event or (lambda tid, e: None)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    defaults = scen.get("defaults", {})
    http_cfg = scen.get("http", {})
    n_runs = int(runs if runs is not None else defaults.get("runs", 3))
    n_warm = int(warmup if warmup is not None else defaults.get("warmup", 1))
    levels = concurrency or [int(c) for c in http_cfg.get("concurrency", [1, 4, 16])]
    per_worker = int(http_cfg.get("requests_per_worker", 2))
    timeout = float(http_cfg.get("timeout_seconds", 600))
    voice = str(http_cfg.get("voice", "alloy"))  # an OpenAI voice name: every voxbox TTS engine maps it
    base = url.rstrip("/")
    if not base.endswith("/v1"):
        base += "/v1"
    model_ids = models or _default_models(task, scen)
    load_start = machine_description()["load_average"]

    if task == "tts":
        all_texts = scen.get("tts", {}).get("texts", {})
        items = [{"scenario": n, "text": " ".join(all_texts[n].split())} for n in (texts or list(all_texts))]
    else:
        skipped: dict[str, str] = {}
        items = [
            {"scenario": c.name, "clip": c, "wav": _wav_bytes(c.samples)}
            for c in materialize_clips(scen, clips, skipped=skipped)
        ]

    client = httpx.Client(
        timeout=timeout, limits=httpx.Limits(max_connections=max(levels) + 2, max_keepalive_connections=max(levels) + 2)
    )

    def one(model: str, item: dict[str, Any]) -> dict[str, Any]:
        t0 = clock()
        ttfa = None
        if task == "tts":
            body = {"model": model, "input": item["text"], "voice": voice, "response_format": "wav"}
            chunks = []
            with client.stream("POST", f"{base}/audio/speech", json=body) as resp:
                for chunk in resp.iter_bytes():
                    if ttfa is None and chunk:
                        ttfa = clock() - t0
                    chunks.append(chunk)
                status = resp.status_code
                timing = resp.headers.get("server-timing")
            total = clock() - t0
            data = b"".join(chunks)
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {data[:200].decode(errors='replace')}")
            audio_s = _audio_seconds(data)
        else:
            files = {"file": (f"{item['scenario']}.wav", item["wav"], "audio/wav")}
            d = scen.get("asr", {}).get("settings", {})
            form = {"model": model, "response_format": "json"}
            if d.get("language"):
                form["language"] = d["language"]
            resp = client.post(f"{base}/audio/transcriptions", files=files, data=form)
            total = clock() - t0
            status = resp.status_code
            timing = resp.headers.get("server-timing")
            if status != 200:
                raise RuntimeError(f"HTTP {status}: {resp.text[:200]}")
            audio_s = item["clip"].seconds
            item.setdefault("_text", resp.json().get("text", ""))
        return {
            "total_s": total,
            "audio_s": audio_s,
            "rtf": total / audio_s if audio_s else None,
            "xrt": audio_s / total if total > 0 else None,
            "ttfa_s": ttfa,
            "stages": parse_server_timing(timing),
            "status_code": status,
        }

    results = []
    for model in model_ids:
        tid = f"http:{model}"
        for it in items:
            it.pop("_text", None)
        total_reqs = sum(max(n_runs, c * per_worker) for c in levels) * len(items) + n_warm
        on_event(tid, {"event": "queued", "total": total_reqs})
        record: dict[str, Any] = {
            "id": tid,
            "name": model,
            "kind": "voxbox",
            "task": task,
            "model": model,
            "peer_of": None,
            "status": "ok",
            "reason": None,
            "device": None,
            "dtype": None,
            "threads": None,
            "load_s": None,
            "first_call_s": None,
            "compile_s": None,
            "warmup_calls": 0,
            "peak_rss_bytes": None,
            "peak_gpu_bytes": None,
            "extra": {"url": url},
        }
        rows: list[dict[str, Any]] = []
        try:
            for i in range(n_warm):
                r = one(model, dict(items[0]))
                if i == 0:
                    record["first_call_s"] = r["total_s"]
                record["warmup_calls"] = i + 1
                on_event(tid, {"event": "advance"})
        except Exception as exc:  # noqa: BLE001
            record["status"], record["reason"] = "error", f"warm-up request failed: {exc}"
            results.append({"target": record, "rows": rows})
            on_event(tid, {"event": "done", "status": "error", "reason": record["reason"]})
            continue
        for item in items:
            for c in levels:
                n = max(n_runs, c * per_worker)
                runs_out: list[dict[str, Any]] = []
                errors: list[str] = []
                lock = threading.Lock()

                def work(
                    model: Any,
                    item: Any,
                    lock: Any,
                    runs_out: list[dict[str, Any]],
                    errors: list[str],
                    tid: str,
                    _: int,
                ) -> None:
                    try:
                        r = one(model, item)
                        with lock:
                            runs_out.append(r)
                    except Exception as exc:  # noqa: BLE001
                        with lock:
                            errors.append(str(exc))
                    on_event(tid, {"event": "advance"})

                w0 = clock()
                with ThreadPoolExecutor(max_workers=c) as pool:
                    list(pool.map(functools.partial(work, model, item, lock, runs_out, errors, tid), range(n)))
                wall = clock() - w0
                lat = [r["total_s"] for r in runs_out]
                row: dict[str, Any] = {
                    "target": tid,
                    "scenario": item["scenario"],
                    "steps": None,
                    "concurrency": c,
                    "status": "ok" if runs_out else "error",
                    "error": errors[0] if errors else None,
                    "runs": runs_out,
                    "audio_path": None,
                    "text_chars": len(item["text"]) if task == "tts" else None,
                    "latencies_s": lat,
                    "latency": percentiles(lat),
                    "requests": n,
                    "failed_requests": len(errors),
                    "wall_s": wall,
                    "throughput_xrt": (sum(r["audio_s"] for r in runs_out) / wall) if wall > 0 and runs_out else None,
                }
                if task == "asr" and item["clip"].reference and item.get("_text") is not None:
                    from voxbox.bench.metrics import cer, wer

                    row["hypothesis"] = item["_text"]
                    row["quality"] = {
                        "wer": wer(item["clip"].reference, item["_text"], clip=True),
                        "cer": cer(item["clip"].reference, item["_text"], clip=True),
                        "method": "reference",
                    }
                rows.append(row)
        results.append({"target": record, "rows": rows})
        on_event(tid, {"event": "done", "status": "ok", "reason": None})
    client.close()

    machine = machine_description()
    machine["load_average_start"] = load_start
    settings: dict[str, Any] = {
        "runs": n_runs,
        "warmup": n_warm,
        "threads": None,
        "device": None,
        "concurrency": levels,
    }
    if task == "tts":
        settings["texts"] = {i["scenario"]: i["text"] for i in items}
    else:
        settings["decoding"] = scen.get("asr", {}).get("settings", {})
        settings["clips_skipped"] = skipped
    report = build_report(
        task=task,
        mode="http",
        results=results,
        settings=settings,
        machine=machine,
        libraries=library_versions(),
        quick=quick,
        command=command,
    )
    report["url"] = url
    return report
