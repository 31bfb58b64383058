"""Run benchmark jobs: one target (a voxbox engine or a peer) over a list of scenario items.

Discipline, the same for every target:

* each target runs in its own child process (``python -m voxbox.bench.runner JOB RESULT``), so
  cold load time and peak memory are its own, and a crash or hang of one peer cannot take the
  bench down; ``isolate=False`` runs in this process (tests, debugging);
* cold load (``load_s``) and warm-up calls (``first_call_s``; ``compile_s`` where the engine
  reports one) are measured and reported apart from the measured runs;
* every clock read is ``time.perf_counter()`` after the device is synchronised;
* each item runs ``runs`` times; the report keeps every run and summarises min/median/max;
* quality is computed after the clocks stop and after memory peaks are read: ASR WER/CER
  against the reference, TTS round trip through the default ASR engine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import traceback
import wave
from pathlib import Path
from typing import Any, Callable

import numpy as np

from voxbox.bench.metrics import PeakMemory, cer, wer
from voxbox.bench.peers import peer_class
from voxbox.bench.peers.base import NotInstalled, RunResult, Target

__all__ = ["VoxboxASR", "VoxboxTTS", "make_target", "run_job", "run_job_isolated", "run_jobs_interleaved", "target_id"]

PROGRESS_MARK = "@@voxbox-bench@@ "
Emit = Callable[[dict[str, Any]], None]


# --------------------------------------------------------------------------------------------
# voxbox's own targets


class _VoxboxTarget(Target):
    kind = "voxbox"

    def check(self) -> None:
        from voxbox.engines.registry import get_spec

        spec = get_spec(self.name)
        missing = spec.missing()
        if missing:
            raise NotInstalled(f"not installed: missing {', '.join(missing)} ({spec.install_hint})")
        if spec.default_model is None and not self.model:
            raise NotInstalled(f"skipped: engine {self.name!r} has no bundled weights; pass a local model directory")

    def load(self) -> None:
        from voxbox.engines.registry import load_engine

        kwargs: dict[str, Any] = {}
        if self.settings.get("device"):
            kwargs["device"] = self.settings["device"]
        if self.settings.get("dtype"):
            kwargs["dtype"] = self.settings["dtype"]
        if self.threads:
            kwargs["threads"] = self.threads
        self.engine = load_engine(self.name, self.model, **kwargs)
        info = self.engine.info
        self.device = info.device
        self.dtype = info.dtype
        extra = dict(info.extra or {})
        self.threads = self.threads or extra.get("threads") or extra.get("cpu_threads")
        self.compile_s = extra.get("compile_seconds")
        for key in ("model_dir", "model_path"):
            if key in extra:
                self.extra[key] = extra[key]
        self.extra["model"] = info.model

    def close(self) -> None:
        eng = getattr(self, "engine", None)
        if eng is not None and hasattr(eng, "close"):
            eng.close()


class VoxboxTTS(_VoxboxTarget):
    task = "tts"

    def run(self, item: Any, **options: Any) -> RunResult:
        opts = {k: v for k, v in options.items() if v is not None}
        parts: list[np.ndarray] = []
        ttfa = None
        t0 = self.now()
        stream = self.engine.stream(str(item), **opts)
        for chunk in stream:
            if ttfa is None:
                ttfa = self.now() - t0
            parts.append(np.asarray(chunk.samples, np.float32))
        total = self.now() - t0
        samples = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        rate = int(stream.sample_rate)
        return RunResult(total_s=total, audio_s=len(samples) / rate, ttfa_s=ttfa, stages=stream.timings.as_dict(),
                         samples=samples, sample_rate=rate)


class VoxboxASR(_VoxboxTarget):
    task = "asr"

    def run(self, item: Any, **options: Any) -> RunResult:
        from voxbox.types import Audio

        d = dict(self.settings.get("decoding") or {})
        language = d.pop("language", None)
        audio = Audio(np.asarray(item, np.float32), 16000)
        t0 = self.now()
        segments, info = self.engine.transcribe(audio, language=language, **d)
        text = " ".join(s.text.strip() for s in segments)
        total = self.now() - t0
        return RunResult(total_s=total, audio_s=audio.duration, stages=info.timings.as_dict(), text=text)


def target_id(name: str, model: str | None, kind: str) -> str:
    base = f"voxbox/{name}" if kind == "voxbox" else name
    return f"{base}:{model}" if model else base


class _Missing(Target):
    """A peer this build has no adapter for: reported as not installed."""

    def check(self) -> None:
        raise NotInstalled(f"not installed: no bench adapter for peer {self.name!r} in this voxbox build")


def make_target(spec: dict[str, Any]) -> Target:
    kind, task = spec.get("kind", "voxbox"), spec["task"]
    args = (spec["name"], spec.get("model"), spec.get("settings") or {}, spec.get("threads"))
    if kind == "voxbox":
        return (VoxboxTTS if task == "tts" else VoxboxASR)(*args)
    cls = peer_class(spec["name"])
    return (cls or _Missing)(*args)


# --------------------------------------------------------------------------------------------
# one job, in this process


def _write_wav(path: Path, samples: np.ndarray, rate: int) -> None:
    pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2")
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm.tobytes())


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-._" else "_" for c in name)


def _load_item(item: dict[str, Any]) -> Any:
    if item.get("clip_path"):
        return np.load(item["clip_path"])
    return item["text"]


def run_job(job: dict[str, Any], emit: Emit | None = None, turn: Callable[[], None] | None = None) -> dict[str, Any]:
    """Measure one target over the job's items. Never raises for the target's own failures.

    ``turn``, when given, is called before every measured run and blocks until this target may
    run (interleaved jobs: the parent alternates runs between processes); an ``ready`` event is
    emitted once warm-up is over and a ``turn_done`` event after each measured run.
    """
    emit = emit or (lambda e: None)
    spec = job["target"]
    task = spec["task"]
    target = make_target(spec)
    record: dict[str, Any] = {
        "id": target_id(spec["name"], spec.get("model"), spec.get("kind", "voxbox")),
        "name": spec["name"], "kind": spec.get("kind", "voxbox"), "task": task, "model": spec.get("model"),
        "peer_of": spec.get("peer_of"), "status": "ok", "reason": None,
        "device": None, "dtype": None, "threads": None, "load_s": None, "first_call_s": None, "compile_s": None,
        "warmup_calls": 0, "peak_rss_bytes": None, "peak_gpu_bytes": None, "extra": {},
    }
    rows: list[dict[str, Any]] = []
    items = job["items"]
    n_total = sum(int(it["runs"]) for it in items) + int(job.get("warmup", 1))

    def finish(status: str, reason: str | None) -> dict[str, Any]:
        record["status"], record["reason"] = status, reason
        return {"target": record, "rows": rows}

    try:
        target.check()
    except NotInstalled as exc:
        msg = str(exc)
        return finish("skipped" if msg.startswith("skipped") else "not_installed", msg)

    emit({"event": "start", "total": n_total, "target": record["id"]})
    mem = PeakMemory().start()
    try:
        t0 = target.now()
        target.load()
        record["load_s"] = target.now() - t0  # after a device sync: asynchronous uploads count
    except NotInstalled as exc:
        mem.stop()
        return finish("not_installed", str(exc))
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        mem.stop()
        return finish("error", f"load failed: {type(exc).__name__}: {' '.join(str(exc).split())}")

    # warm-up: the first item, reported separately
    warm = int(job.get("warmup", 1))
    if items and warm:
        first = items[0]
        payload = _load_item(first)
        try:
            for i in range(warm):
                r = target.run(payload, **_call_options(first))
                if i == 0:
                    record["first_call_s"] = r.total_s
                record["warmup_calls"] = i + 1
                emit({"event": "advance"})
        except Exception as exc:  # noqa: BLE001
            mem.stop()
            return finish("error", f"warm-up failed: {type(exc).__name__}: {' '.join(str(exc).split())}")

    if turn is not None:
        emit({"event": "ready", "device": target.device, "dtype": target.dtype, "threads": target.threads,
              "extra": {k: v for k, v in target.extra.items() if isinstance(v, (str, int, float, bool))}})
    last_outputs: list[RunResult | None] = []
    for item in items:
        payload = _load_item(item)
        row: dict[str, Any] = {"target": record["id"], "scenario": item["scenario"], "steps": item.get("steps"),
                               "concurrency": None, "status": "ok", "error": None, "runs": [],
                               "audio_path": None, "text_chars": len(item["text"]) if item.get("text") else None}
        last: RunResult | None = None
        for _ in range(int(item["runs"])):
            if turn is not None:
                turn()
            if row["status"] != "ok":  # keep taking turns so the interleaving stays in step
                emit({"event": "turn_done"})
                continue
            try:
                r = target.run(payload, **_call_options(item))
            except Exception as exc:  # noqa: BLE001
                row["status"], row["error"] = "error", f"{type(exc).__name__}: {' '.join(str(exc).split())}"
                emit({"event": "advance"})
                if turn is not None:
                    emit({"event": "turn_done"})
                continue
            row["runs"].append({
                "total_s": r.total_s, "audio_s": r.audio_s,
                "rtf": r.total_s / r.audio_s if r.audio_s > 0 else None,
                "xrt": r.audio_s / r.total_s if r.total_s > 0 else None,
                "ttfa_s": r.ttfa_s, "stages": dict(r.stages),
            })
            last = r
            emit({"event": "advance"})
            if turn is not None:
                emit({"event": "turn_done"})
        rows.append(row)
        last_outputs.append(last)

    peaks = mem.stop()
    record["peak_rss_bytes"] = peaks["process_max_rss_bytes"] if job.get("isolated") else peaks["peak_rss_bytes"]
    record["peak_gpu_bytes"] = peaks["peak_gpu_bytes"]
    if getattr(target, "child_peak_rss", None):  # a command-line peer: its process's peak, not ours
        record["peak_rss_bytes"] = int(target.child_peak_rss)
    record["device"], record["dtype"], record["threads"] = target.device, target.dtype, target.threads
    record["compile_s"] = target.compile_s
    record["extra"] = {k: v for k, v in target.extra.items() if isinstance(v, (str, int, float, bool, type(None)))}
    if turn is not None:
        record["extra"]["interleaved"] = True
    target.close()

    # quality and saved audio, after the clocks and memory peaks
    _quality(job, task, items, rows, last_outputs, emit)
    return finish("ok", None)


def _call_options(item: dict[str, Any]) -> dict[str, Any]:
    return {"steps": item["steps"]} if item.get("steps") is not None else {}


def _quality(job: dict[str, Any], task: str, items: list[dict[str, Any]], rows: list[dict[str, Any]],
             outputs: list[RunResult | None], emit: Emit) -> None:
    audio_dir = Path(job["audio_dir"]) if job.get("audio_dir") else None
    asr = None
    for item, row, out in zip(items, rows, outputs):
        if out is None:
            continue
        if task == "asr":
            row["hypothesis"] = out.text
            ref = item.get("reference")
            if ref:
                row["quality"] = {"wer": wer(ref, out.text or "", clip=True), "cer": cer(ref, out.text or "", clip=True), "method": "reference"}
            continue
        # TTS: keep the audio, then the round trip through the default ASR engine
        if audio_dir is not None and out.samples is not None:
            suffix = f"-{item['steps']}steps" if item.get("steps") is not None else ""
            path = audio_dir / f"{_safe(row['target'])}-{_safe(item['scenario'])}{suffix}.wav"
            _write_wav(path, out.samples, int(out.sample_rate or 16000))
            row["audio_path"] = str(path)
        rt = job.get("round_trip")
        if not rt or out.samples is None or out.samples.size == 0:
            continue
        try:
            if asr is None:
                from voxbox.engines.registry import load_engine

                asr = load_engine(rt.get("engine", "faster-whisper"), rt.get("model"))
            from voxbox.types import Audio

            segs, _ = asr.transcribe(Audio(out.samples, int(out.sample_rate)), language="en", beam_size=5,
                                     temperature=0.0)
            hyp = " ".join(s.text.strip() for s in segs)
            row["hypothesis"] = hyp
            row["quality"] = {"wer": wer(item["text"], hyp, clip=True), "cer": cer(item["text"], hyp, clip=True),
                              "method": f"round-trip:{rt.get('engine', 'faster-whisper')}:{rt.get('model') or 'default'}"}
        except Exception as exc:  # noqa: BLE001
            row["quality"] = {"wer": None, "cer": None, "method": "round-trip", "error": f"{type(exc).__name__}: {exc}"}


# --------------------------------------------------------------------------------------------
# one job, in a child process


def _error_result(job: dict[str, Any], reason: str) -> dict[str, Any]:
    spec = job["target"]
    return {"target": {
        "id": target_id(spec["name"], spec.get("model"), spec.get("kind", "voxbox")), "name": spec["name"],
        "kind": spec.get("kind", "voxbox"), "task": spec["task"], "model": spec.get("model"),
        "peer_of": spec.get("peer_of"), "status": "error", "reason": reason,
        "device": None, "dtype": None, "threads": None, "load_s": None, "first_call_s": None, "compile_s": None,
        "warmup_calls": 0, "peak_rss_bytes": None, "peak_gpu_bytes": None, "extra": {},
    }, "rows": []}


class _Worker:
    """One job in a child process; its progress events go to ``emit``, control events to a queue."""

    CONTROL = ("ready", "turn_done")

    def __init__(self, job: dict[str, Any], emit: Emit, log_path: Path | None, interleaved: bool) -> None:
        import queue
        import threading

        self.job = job
        self.emit = emit
        self.log_path = log_path
        self.dead = False
        self.tmp = tempfile.TemporaryDirectory(prefix="voxbox-bench-job-")
        self.job_path = Path(self.tmp.name) / "job.json"
        self.result_path = Path(self.tmp.name) / "result.json"
        self.job_path.write_text(json.dumps({**job, "isolated": True, "interleaved": interleaved}), encoding="utf-8")
        self.log = open(log_path, "wb") if log_path else None
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxbox.bench.runner", str(self.job_path), str(self.result_path)],
            stdin=subprocess.PIPE if interleaved else subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=self.log or subprocess.DEVNULL, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.control: "queue.Queue[dict[str, Any] | None]" = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            line = raw.decode(errors="replace")
            if line.startswith(PROGRESS_MARK):
                try:
                    event = json.loads(line[len(PROGRESS_MARK):])
                except json.JSONDecodeError:
                    continue
                if event.get("event") in self.CONTROL:
                    self.control.put(event)
                else:
                    self.emit(event)
            elif self.log:
                self.log.write(raw)
        self.control.put(None)

    def wait_for(self, kind: str) -> dict[str, Any] | None:
        while not self.dead:
            event = self.control.get()
            if event is None:
                self.dead = True
            elif event.get("event") == kind:
                return event
        return None

    def go(self) -> None:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(b"go\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            self.dead = True

    def finish(self, timeout: float | None = None) -> dict[str, Any]:
        if self.proc.stdin:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            self.reader.join(timeout=5)
            if self.log:
                self.log.close()
            self.tmp.cleanup()
            return _error_result(self.job, f"timed out after {timeout:.0f} s (target timeout); no rows kept")
        self.reader.join(timeout=5)
        if self.log:
            self.log.close()
        try:
            if self.result_path.exists():
                return json.loads(self.result_path.read_text(encoding="utf-8"))
            tail = ""
            if self.log_path and self.log_path.exists():
                lines = self.log_path.read_text(errors="replace").strip().splitlines()
                tail = lines[-1] if lines else ""
            return _error_result(self.job, f"bench worker exited with code {rc}" + (f": {tail}" if tail else ""))
        finally:
            self.tmp.cleanup()


def run_job_isolated(job: dict[str, Any], emit: Emit | None = None, log_path: Path | None = None,
                     timeout: float | None = None) -> dict[str, Any]:
    """``run_job`` in a fresh ``python -m voxbox.bench.runner`` process; progress comes back as events."""
    return _Worker(job, emit or (lambda e: None), log_path, interleaved=False).finish(timeout)


def run_jobs_interleaved(
    first: tuple[dict[str, Any], Emit, Path | None],
    others: Callable[[dict[str, Any]], list[tuple[dict[str, Any], Emit, Path | None]]],
) -> list[dict[str, Any]]:
    """Jobs over the same items, each in its own process, taking turns run by run.

    ``first`` (voxbox) loads and warms up alone; ``others(ready)`` then builds the other jobs
    from what it reported (device, dtype, threads, model directory), and each loads and warms up
    in turn, so cold loads do not contend. Measured runs then alternate A, B, A, B ... so a
    change in machine load between minutes hits every target alike. Used to compare voxbox
    with the library it wraps.
    """
    job, emit, log_path = first
    lead = _Worker(job, emit, log_path, interleaved=True)
    ready = lead.wait_for("ready") or {}
    workers = [lead]
    for job, emit, log_path in others(ready):
        w = _Worker(job, emit, log_path, interleaved=True)
        w.wait_for("ready")  # None: it failed or is not installed; finish() reports why
        workers.append(w)
    turns = [sum(int(i["runs"]) for i in w.job["items"]) for w in workers]
    for k in range(max(turns, default=0)):
        for w, n in zip(workers, turns):
            if not w.dead and k < n:
                w.go()
                w.wait_for("turn_done")
    return [w.finish() for w in workers]


def _stdin_turn() -> None:
    """Block until the parent says "go" (interleaved jobs); stop if the parent has gone."""
    if not sys.stdin.readline():
        raise SystemExit(1)


def _worker_main(argv: list[str]) -> int:
    job_path, result_path = argv
    job = json.loads(Path(job_path).read_text(encoding="utf-8"))

    def emit(event: dict[str, Any]) -> None:
        sys.stdout.write(PROGRESS_MARK + json.dumps(event) + "\n")
        sys.stdout.flush()

    try:
        result = run_job(job, emit, _stdin_turn if job.get("interleaved") else None)
    except Exception:  # noqa: BLE001 - last resort: the parent reports it
        traceback.print_exc()
        return 1
    Path(result_path).write_text(json.dumps(result), encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(_worker_main(sys.argv[1:]))
