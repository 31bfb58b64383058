"""A whole benchmark: scenarios -> jobs (voxbox target first, then its peers) -> report dict."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from voxbox.bench.metrics import library_versions, machine_description
from voxbox.bench.peers import applies_to, peer_class
from voxbox.bench.report import build_report
from voxbox.bench.runner import run_job, run_job_isolated, run_jobs_interleaved, target_id
from voxbox.bench.scenarios import materialize_clips

__all__ = ["run_suite"]

#: on_event(target_id, event): event is {"event": "start", "total": n} | {"event": "advance"} |
#: {"event": "done", "status": ...} | {"event": "stage", "description": ...}
OnEvent = Callable[[str, dict[str, Any]], None]


def _filter_targets(targets: list[dict[str, Any]], engines: list[str] | None, models: list[str] | None,
                    task: str) -> list[dict[str, Any]]:
    out = [dict(t) for t in targets]
    if engines:
        known = {t["engine"] for t in out}
        out = [t for t in out if t["engine"] in engines]
        # an engine named on the command line but absent from the scenarios still gets a row
        out += [{"engine": e, "peers": []} for e in engines if e not in known]
    if models:
        expanded = []
        for t in out:
            for m in models:
                expanded.append({**t, "model": m})
        seen = set()
        out = []
        for t in expanded:
            key = (t["engine"], t.get("model"))
            if key not in seen:
                seen.add(key)
                out.append(t)
    return out


def run_suite(
    task: str,
    scen: dict[str, Any],
    *,
    out_dir: Path,
    engines: list[str] | None = None,
    models: list[str] | None = None,
    peers: list[str] | None = None,
    runs: int | None = None,
    warmup: int | None = None,
    threads: int | None = None,
    device: str | None = None,
    steps: list[int] | None = None,
    texts: list[str] | None = None,
    clips: list[str] | None = None,
    isolate: bool = True,
    quick: bool = False,
    command: str | None = None,
    on_event: OnEvent | None = None,
    target_timeout: float | None = None,
) -> dict[str, Any]:
    """Run the in-process benchmark of ``task`` ("tts" or "asr") and return the report dict.

    ``target_timeout``: seconds one isolated, non-interleaved target may take before it is
    stopped and reported as an error (None: no limit).
    """
    on_event = on_event or (lambda tid, e: None)
    peer_override = peers
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    defaults = scen.get("defaults", {})
    n_runs = int(runs if runs is not None else defaults.get("runs", 3))
    n_warm = int(warmup if warmup is not None else defaults.get("warmup", 1))
    threads = threads if threads is not None else defaults.get("threads")
    section = scen.get(task, {})
    targets = _filter_targets(section.get("targets", []), engines, models, task)
    load_avg_start = machine_description()["load_average"]
    logs = out_dir / "logs"
    logs.mkdir(exist_ok=True)

    results: list[dict[str, Any]] = []
    settings: dict[str, Any] = {"runs": n_runs, "warmup": n_warm, "threads": threads, "device": device,
                                "isolated": isolate, "peer_limits": section.get("peer_limits") or {}}

    with tempfile.TemporaryDirectory(prefix="voxbox-bench-") as tmp:
        if task == "tts":
            all_texts: dict[str, str] = section.get("texts", {})
            names = texts or list(all_texts)
            step_list = steps or section.get("steps", [])
            settings.update({"texts": {n: " ".join(all_texts[n].split()) for n in names}, "steps": step_list,
                             "round_trip": section.get("round_trip")})

            def items_for(t: dict[str, Any]) -> list[dict[str, Any]]:
                out = []
                for n in names:
                    text = " ".join(all_texts[n].split())
                    own = t.get("steps") if isinstance(t.get("steps"), list) and not steps else None
                    for s in (own or (step_list if t.get("steps") else [None])):
                        out.append({"scenario": n, "text": text, "steps": s, "runs": n_runs})
                return out

            common = {"audio_dir": str(out_dir / "audio"), "round_trip": section.get("round_trip")}
        else:
            on_event("clips", {"event": "stage", "description": "preparing ASR clips"})
            skipped: dict[str, str] = {}
            clip_objs = materialize_clips(scen, clips, skipped=skipped)
            for name, why in skipped.items():
                on_event("clips", {"event": "stage", "description": f"clip {name} skipped: {why}"})
            decoding = dict(section.get("settings", {}))
            settings.update({"decoding": decoding, "clips_skipped": skipped,
                             "clips": {c.name: {"seconds": round(c.seconds, 3), "source": c.source,
                                                "reference": c.reference is not None} for c in clip_objs}})
            clip_items = []
            for c in clip_objs:
                path = Path(tmp) / f"{c.name}.npy"
                np.save(path, c.samples)
                clip_items.append({"scenario": c.name, "clip_path": str(path), "reference": c.reference,
                                   "runs": int(c.runs if (c.runs and runs is None) else n_runs),
                                   "audio_s": c.seconds})

            def items_for(t: dict[str, Any]) -> list[dict[str, Any]]:
                return [dict(i) for i in clip_items]

            common = {"audio_dir": None, "round_trip": None}

        def run(job: dict[str, Any]) -> dict[str, Any]:
            emit, log_path = emitter(job)
            if isolate:
                return run_job_isolated(job, emit, log_path=log_path, timeout=target_timeout)
            return run_job(job, emit)

        def emitter(job: dict[str, Any]) -> tuple[Any, Path]:
            tid = target_id(job["target"]["name"], job["target"].get("model"), job["target"]["kind"])
            on_event(tid, {"event": "queued", "total": sum(i["runs"] for i in job["items"]) + job["warmup"]})
            return (lambda e: on_event(tid, e)), logs / f"{tid.replace('/', '_').replace(':', '_')}.log"

        def done(res: dict[str, Any]) -> dict[str, Any]:
            t = res["target"]
            on_event(t["id"], {"event": "done", "status": t["status"], "reason": t["reason"]})
            return res

        limits = section.get("peer_limits") or {}
        for t in targets:
            model = t.get("model")
            t_settings: dict[str, Any] = {"device": device} if device else {}
            if task == "asr":
                t_settings["decoding"] = dict(section.get("settings", {}))
            vox_job = {"target": {"task": task, "kind": "voxbox", "name": t["engine"], "model": model,
                                  "threads": threads, "settings": t_settings},
                       "items": items_for(t), "warmup": n_warm, **common}
            vox_id = target_id(t["engine"], model, "voxbox")
            peer_names = t.get("peers", []) if peer_override is None else [
                p for p in peer_override if applies_to(p, t["engine"])]

            def peer_job(p: str, vinfo: dict[str, Any]) -> dict[str, Any]:
                items = items_for(t)
                lim = limits.get(p) or {}
                if lim.get("items"):
                    items = [i for i in items if i["scenario"] in lim["items"]] or items
                if lim.get("runs") and runs is None:
                    for i in items:
                        i["runs"] = min(i["runs"], int(lim["runs"]))
                p_settings = dict(t_settings)
                p_settings["voxbox"] = {"device": vinfo.get("device"), "dtype": vinfo.get("dtype"),
                                        "threads": vinfo.get("threads"), **(vinfo.get("extra") or {})}
                return {"target": {"task": task, "kind": "peer", "name": p, "model": model, "threads": threads,
                                   "settings": p_settings, "peer_of": vox_id},
                        "items": items, "warmup": n_warm, **common}

            # peers that measure voxbox's own overhead take turns with voxbox, run by run
            paired = [p for p in peer_names if isolate and getattr(peer_class(p), "interleave_with_voxbox", False)]
            if paired:
                def others(ready: dict[str, Any]) -> list[tuple[dict[str, Any], Any, Path]]:
                    jobs = [peer_job(p, ready) for p in paired]
                    return [(j, *emitter(j)) for j in jobs]

                group = run_jobs_interleaved((vox_job, *emitter(vox_job)), others)
                results.extend(done(r) for r in group)
                vrec = group[0]["target"]
            else:
                vox = done(run(vox_job))
                results.append(vox)
                vrec = vox["target"]
            for p in peer_names:
                if p in paired:
                    continue
                results.append(done(run(peer_job(p, vrec))))

    machine = machine_description()
    machine["load_average_start"] = load_avg_start
    return build_report(
        task=task, mode="in-process", results=results, settings=settings, machine=machine,
        libraries=library_versions(), quick=quick, command=command,
    )


def default_out_dir(task: str) -> Path:
    import time

    return Path(os.getcwd()) / "bench-results" / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"
