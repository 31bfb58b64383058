"""Run benchmark jobs: one target (a voxbox engine or a peer) over a list of scenario items.

Discipline, the same for every target:

* each target runs in its own child process (``python -m voxbox.bench.runner JOB RESULT``, see
  :mod:`voxbox.bench.isolate`), so cold load time and peak memory are its own, and a crash or hang
  of one peer cannot take the bench down; ``isolate=False`` runs in this process (tests, debugging);
* voxbox's own targets load and run their engine through the runtime (:mod:`voxbox.bench.targets`);
* cold load (``load_s``) and warm-up calls (``first_call_s``; ``compile_s`` where the engine
  reports one) are measured and reported apart from the measured runs; ``warmup_each`` warms up
  every item (each text length, step count, batch size: CUDA graphs and compiled shapes are
  per shape) and keeps those times per row;
* every clock read is ``time.perf_counter()`` after the GPU is synchronised; each run also
  records the CPU seconds it used (all threads, and children for command-line peers);
* GPU memory: torch's allocation after load, its peak over load and warm-up, and its peak during
  the measured runs (what the calls need above the weights);
* quality is computed after the clocks stop and after memory peaks are read: ASR WER/CER
  against the reference, TTS round trip through an ASR engine (through the runtime as well).
"""

from __future__ import annotations

import json
import sys
import traceback
import wave
from pathlib import Path
from typing import Any, Callable

import numpy as np

from voxbox.bench.metrics import PeakMemory, cer, cpu_seconds, gpu_allocated, gpu_peak, reset_gpu_peak, wer
from voxbox.bench.peers import peer_class
from voxbox.bench.peers.base import NotInstalled, RunResult, Target

__all__ = ["PROGRESS_MARK", "Emit", "empty_record", "make_target", "run_job", "target_id"]

PROGRESS_MARK = "@@voxbox-bench@@ "
Emit = Callable[[dict[str, Any]], None]


def target_id(name: str, model: str | None, kind: str, label: str | None = None) -> str:
    """``voxbox/ENGINE:MODEL#LABEL`` for voxbox targets, ``PEER:MODEL#LABEL`` for peers."""
    base = f"voxbox/{name}" if kind == "voxbox" else name
    base = f"{base}:{model}" if model else base
    return f"{base}#{label}" if label else base


def empty_record(spec: dict[str, Any]) -> dict[str, Any]:
    kind = spec.get("kind", "voxbox")
    return {
        "id": target_id(spec["name"], spec.get("model"), kind, spec.get("label")),
        "name": spec["name"],
        "kind": kind,
        "task": spec["task"],
        "model": spec.get("model"),
        "label": spec.get("label"),
        "peer_of": spec.get("peer_of"),
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
        "extra": {},
    }


class _Missing(Target):
    """A peer this build has no adapter for: reported as not installed."""

    def check(self) -> None:
        raise NotInstalled(f"not installed: no bench adapter for peer {self.name!r} in this voxbox build")


def make_target(spec: dict[str, Any]) -> Target:
    from voxbox.bench.targets import VoxboxASR, VoxboxTTS

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


def _call_options(item: dict[str, Any]) -> dict[str, Any]:
    if item.get("options") is not None:
        return dict(item["options"])
    return {"steps": item["steps"]} if item.get("steps") is not None else {}


_REASON_CHARS = 400


def _one_line(exc: BaseException) -> str:
    """``Type: message`` on one line, cut to a table cell's worth (the child's log keeps it all)."""
    text = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"


def _measured(target: Target, payload: Any, item: dict[str, Any]) -> tuple[RunResult, dict[str, Any]]:
    c0 = cpu_seconds()
    r = target.run(payload, **_call_options(item))
    run = {
        "total_s": r.total_s,
        "audio_s": r.audio_s,
        "rtf": r.total_s / r.audio_s if r.audio_s > 0 else None,
        "xrt": r.audio_s / r.total_s if r.total_s > 0 else None,
        "ttfa_s": r.ttfa_s,
        "stages": dict(r.stages),
        "cpu_s": max(0.0, cpu_seconds() - c0),
    }
    if r.details:
        run["details"] = dict(r.details)
    return r, run


def _warm_up(target: Target, job: dict[str, Any], record: dict[str, Any], emit: Emit) -> dict[int, list[float]]:
    """Warm-up calls before any measured run: on the first item, or on every item (``warmup_each``)."""
    items, n = job["items"], int(job.get("warmup", 1))
    which = range(len(items)) if job.get("warmup_each") else range(min(1, len(items)))
    times: dict[int, list[float]] = {}
    for idx in which if n else ():
        payload = _load_item(items[idx])
        for _ in range(n):
            r = target.run(payload, **_call_options(items[idx]))
            times.setdefault(idx, []).append(r.total_s)
            if record["first_call_s"] is None:
                record["first_call_s"] = r.total_s
            record["warmup_calls"] += 1
            emit({"event": "advance"})
    return times


def _new_row(record: dict[str, Any], item: dict[str, Any], warm: list[float] | None) -> dict[str, Any]:
    return {
        "target": record["id"],
        "scenario": item["scenario"],
        "steps": item.get("steps"),
        "variant": item.get("variant"),
        "options": item.get("options") or None,
        "concurrency": None,
        "status": "ok",
        "error": None,
        "runs": [],
        "audio_path": None,
        "warmup_s": warm,
        "text_chars": len(item["text"]) if item.get("text") else None,
    }


def _measure_items(
    target: Target,
    job: dict[str, Any],
    record: dict[str, Any],
    warm: dict[int, list[float]],
    emit: Emit,
    turn: Callable[[], None] | None,
) -> tuple[list[dict[str, Any]], list[RunResult | None]]:
    rows: list[dict[str, Any]] = []
    outputs: list[RunResult | None] = []
    for idx, item in enumerate(job["items"]):
        payload = _load_item(item)
        row = _new_row(record, item, warm.get(idx))
        last: RunResult | None = None
        for _ in range(int(item["runs"])):
            if turn is not None:
                turn()
            if row["status"] == "ok":  # after an error, keep taking turns so the interleaving stays in step
                try:
                    last, run = _measured(target, payload, item)
                    row["runs"].append(run)
                except Exception as exc:  # noqa: BLE001 - reported on the row
                    row["status"], row["error"] = "error", _one_line(exc)
                emit({"event": "advance"})
            if turn is not None:
                emit({"event": "turn_done"})
        rows.append(row)
        outputs.append(last)
    return rows, outputs


def _load(target: Target, record: dict[str, Any]) -> str | None:
    """Load, timed after a device sync (asynchronous uploads count); an error's reason or None."""
    try:
        t0 = target.now()
        target.load()
        record["load_s"] = target.now() - t0
    except NotInstalled as exc:
        record["status"] = "not_installed"
        return str(exc)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        record["status"] = "error"
        traceback.print_exc()  # the whole of it goes to the target's log (logs/ in the output folder)
        return f"load failed: {_one_line(exc)}"
    after = gpu_allocated()
    if after is not None:
        target.extra["gpu_after_load_bytes"] = after
    return None


def run_job(job: dict[str, Any], emit: Emit | None = None, turn: Callable[[], None] | None = None) -> dict[str, Any]:
    """Measure one target over the job's items. Never raises for the target's own failures.

    ``turn``, when given, is called before every measured run and blocks until this target may
    run (interleaved jobs: the parent alternates runs between processes); a ``ready`` event is
    emitted once warm-up is over and a ``turn_done`` event after each measured run.
    """
    emit = emit or (lambda e: None)
    spec = job["target"]
    target = make_target(spec)
    record = empty_record(spec)
    rows: list[dict[str, Any]] = []

    def finish(status: str, reason: str | None) -> dict[str, Any]:
        record["status"], record["reason"] = status, reason
        return {"target": record, "rows": rows}

    try:
        target.check()
    except NotInstalled as exc:
        return finish("skipped" if str(exc).startswith("skipped") else "not_installed", str(exc))
    n_warm = int(job.get("warmup", 1)) * (len(job["items"]) if job.get("warmup_each") else min(1, len(job["items"])))
    emit({"event": "start", "total": sum(int(it["runs"]) for it in job["items"]) + n_warm, "target": record["id"]})
    mem = PeakMemory().start()
    reason = _load(target, record)
    if reason is not None:
        mem.stop()
        try:
            target.close()
        except Exception:  # noqa: BLE001 - a half-loaded target; its load error is what is reported
            pass
        return finish(record["status"], reason)
    try:
        warm = _warm_up(target, job, record, emit)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc()
        mem.stop()
        target.close()
        return finish("error", f"warm-up failed: {_one_line(exc)}")
    if turn is not None:
        emit(
            {
                "event": "ready",
                "device": target.device,
                "dtype": target.dtype,
                "threads": target.threads,
                "extra": {k: v for k, v in target.extra.items() if isinstance(v, (str, int, float, bool))},
            }
        )
    load_peak = gpu_peak()
    reset_gpu_peak()
    rows, outputs = _measure_items(target, job, record, warm, emit, turn)
    _finish_record(target, record, mem, load_peak, isolated=bool(job.get("isolated")), interleaved=turn is not None)
    target.close()
    _quality(job, spec["task"], job["items"], rows, outputs)  # after the clocks and memory peaks
    return finish("ok", None)


def _finish_record(
    target: Target, record: dict[str, Any], mem: PeakMemory, load_peak: int | None, *, isolated: bool, interleaved: bool
) -> None:
    run_peak = gpu_peak()
    peaks = mem.stop()
    record["peak_rss_bytes"] = peaks["process_max_rss_bytes"] if isolated else peaks["peak_rss_bytes"]
    if run_peak is not None:
        target.extra["gpu_peak_runs_bytes"] = run_peak
        record["peak_gpu_bytes"] = max(run_peak, load_peak or 0)
    if getattr(target, "child_peak_rss", None):  # a command-line peer: its process's peak, not ours
        record["peak_rss_bytes"] = int(target.child_peak_rss)  # type: ignore[attr-defined]
    record["device"], record["dtype"], record["threads"] = target.device, target.dtype, target.threads
    record["compile_s"] = target.compile_s
    record["extra"] = {k: v for k, v in target.extra.items() if isinstance(v, (str, int, float, bool, type(None)))}
    if interleaved:
        record["extra"]["interleaved"] = True


def _round_trip_target(rt: dict[str, Any]) -> Target:
    from voxbox.bench.targets import VoxboxASR

    asr = VoxboxASR(
        str(rt.get("engine", "faster-whisper")),
        rt.get("model"),
        {"decoding": {"language": "en", "beam_size": 5, "temperature": 0.0}, "device": rt.get("device")},
        None,
    )
    asr.check()
    asr.load()
    return asr


def _quality(
    job: dict[str, Any],
    task: str,
    items: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    outputs: list[RunResult | None],
) -> None:
    audio_dir = Path(job["audio_dir"]) if job.get("audio_dir") else None
    rt, asr = job.get("round_trip"), None
    for item, row, out in zip(items, rows, outputs, strict=False):
        if out is None:
            continue
        if task == "asr":
            row["hypothesis"] = out.text
            ref = item.get("reference")
            if ref:
                row["quality"] = {
                    "wer": wer(ref, out.text or "", clip=True),
                    "cer": cer(ref, out.text or "", clip=True),
                    "method": "reference",
                }
            continue
        if audio_dir is not None and out.samples is not None:  # TTS: keep the audio, then the round trip
            tag = "".join(
                f"-{p}" for p in (item.get("variant"), f"{item['steps']}steps" if item.get("steps") else None) if p
            )
            path = audio_dir / f"{_safe(row['target'])}-{_safe(item['scenario'])}{_safe(tag)}.wav"
            _write_wav(path, out.samples, int(out.sample_rate or 16000))
            row["audio_path"] = str(path)
        if not rt or out.samples is None or out.samples.size == 0:
            continue
        method = f"round-trip:{rt.get('engine', 'faster-whisper')}:{rt.get('model') or 'default'}"
        try:
            from voxbox.audio.resample import resample

            asr = asr or _round_trip_target(rt)
            hyp = asr.run(resample(out.samples, int(out.sample_rate or 16000), 16000)).text or ""
            row["hypothesis"] = hyp
            row["quality"] = {
                "wer": wer(item["text"], hyp, clip=True),
                "cer": cer(item["text"], hyp, clip=True),
                "method": method,
            }
        except Exception as exc:  # noqa: BLE001
            row["quality"] = {"wer": None, "cer": None, "method": method, "error": _one_line(exc)}
    if asr is not None:
        asr.close()


# --------------------------------------------------------------------------------------------
# the child process's side (the parent's is voxbox.bench.isolate)


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
