"""A whole benchmark: scenarios -> jobs (voxbox target first, then its peers) -> report dict.

A target in the scenarios names an engine and its weights (a bundled name, a local directory, or
``random:SHAPE`` — random weights at real shapes, :mod:`voxbox.bench.shapes`) and may add:

* ``label``: tells apart two targets of one engine and model (e.g. ``compile=False``);
* ``device`` / ``dtype`` / ``placement`` / ``load_options``: how the engine is loaded;
* ``options``: per-call engine options for every item (forced token/frame counts, seeds ...);
* ``steps`` (``true`` = the section's list, or the target's own list; ``steps_option`` names the
  engine's option when it is not ``steps``);
* ``sweep``: a list of ``{label, options, items}`` points; each item runs once per point that
  lists it (or every point, without ``items``), e.g. batch sizes each on its own clip;
* ``items``: the texts or clips this target runs (default: all);
* ``voice`` (``{seconds, transcript}``: a synthetic reference encoded once and cloned) or
  ``voice_name``; ``decoding`` (ASR: replaces ``asr.settings`` for this target);
* ``batching``: let the runtime batch across requests (off by default: one stream measured);
* ``peers``: what runs beside it on the same items, options and files.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

from voxbox.bench.isolate import run_job_isolated, run_jobs_interleaved
from voxbox.bench.metrics import library_versions, machine_description
from voxbox.bench.peers import applies_to, peer_class
from voxbox.bench.report import build_report
from voxbox.bench.runner import run_job, target_id
from voxbox.bench.scenarios import materialize_clips

__all__ = ["default_out_dir", "expand_items", "machine_label", "run_suite"]

#: on_event(target_id, event): event is {"event": "start", "total": n} | {"event": "advance"} |
#: {"event": "done", "status": ...} | {"event": "stage", "description": ...}
OnEvent = Callable[[str, dict[str, Any]], None]
_SETTING_KEYS = ("dtype", "placement", "load_options", "batching", "voice", "voice_name")


def _filter_targets(
    targets: list[dict[str, Any]], engines: list[str] | None, models: list[str] | None
) -> list[dict[str, Any]]:
    out = [dict(t) for t in targets]
    if engines:
        known = {t["engine"] for t in out}
        out = [t for t in out if t["engine"] in engines]
        # an engine named on the command line but absent from the scenarios still gets a row
        out += [{"engine": e, "peers": []} for e in engines if e not in known]
    if models:
        seen: set[tuple[Any, ...]] = set()
        expanded = []
        for t in out:
            for m in models:
                key = (t["engine"], m, t.get("label"))
                if key not in seen:
                    seen.add(key)
                    expanded.append({**t, "model": m})
        out = expanded
    return out


def expand_items(
    t: dict[str, Any], base_items: list[dict[str, Any]], section_steps: list[int], steps_override: list[int] | None
) -> list[dict[str, Any]]:
    """The items one target runs: its texts/clips x sweep points x step counts, with call options."""
    if isinstance(t.get("steps"), list) and not steps_override:
        steps: list[int | None] = list(t["steps"])
    elif t.get("steps"):
        steps = list(steps_override or section_steps)
    else:
        steps = [None]
    step_key = str(t.get("steps_option") or "steps")
    points = t.get("sweep") or [{}]
    wanted = t.get("items")
    out = []
    for base in base_items:
        if wanted and base["scenario"] not in wanted:
            continue
        for point in points:
            if point.get("items") and base["scenario"] not in point["items"]:
                continue
            for s in steps:
                opts = {**(t.get("options") or {}), **(point.get("options") or {})}
                if s is not None:
                    opts[step_key] = s
                out.append({**base, "steps": s, "variant": point.get("label"), "options": opts})
    return out


def _tts_items(
    section: dict[str, Any], texts: list[str] | None, n_runs: int, settings: dict[str, Any]
) -> list[dict[str, Any]]:
    from voxbox.errors import BadInputError

    all_texts: dict[str, str] = section.get("texts", {})
    names = texts or list(all_texts)
    unknown = [n for n in names if n not in all_texts]
    if unknown:
        raise BadInputError(f"unknown text(s) {', '.join(unknown)}; known: {', '.join(all_texts)}", param="texts")
    settings["texts"] = {n: " ".join(all_texts[n].split()) for n in names}
    return [{"scenario": n, "text": settings["texts"][n], "runs": n_runs} for n in names]


def _asr_items(
    scen: dict[str, Any],
    clips: list[str] | None,
    n_runs: int,
    runs_given: bool,
    tmp: Path,
    settings: dict[str, Any],
    on_event: OnEvent,
) -> list[dict[str, Any]]:
    on_event("clips", {"event": "stage", "description": "preparing ASR clips"})
    skipped: dict[str, str] = {}
    clip_objs = materialize_clips(scen, clips, skipped=skipped)
    for name, why in skipped.items():
        on_event("clips", {"event": "stage", "description": f"clip {name} skipped: {why}"})
    settings.update(
        {
            "decoding": dict(scen.get("asr", {}).get("settings") or {}),
            "clips_skipped": skipped,
            "clips": {
                c.name: {"seconds": round(c.seconds, 3), "source": c.source, "reference": c.reference is not None}
                for c in clip_objs
            },
        }
    )
    items = []
    for c in clip_objs:
        path = tmp / f"{c.name}.npy"
        np.save(path, c.samples)
        items.append(
            {
                "scenario": c.name,
                "clip_path": str(path),
                "reference": c.reference,
                "runs": int(c.runs if (c.runs and not runs_given) else n_runs),
                "audio_s": c.seconds,
            }
        )
    return items


def _target_settings(t: dict[str, Any], task: str, section: dict[str, Any], device: str | None) -> dict[str, Any]:
    s: dict[str, Any] = {k: t[k] for k in _SETTING_KEYS if t.get(k) is not None}
    if device or t.get("device"):
        s["device"] = device or t.get("device")
    if task == "asr":
        s["decoding"] = dict(t["decoding"] if "decoding" in t else section.get("settings") or {})
    return s


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
    out_dir = Path(out_dir)
    (out_dir / "logs").mkdir(parents=True, exist_ok=True)
    defaults = scen.get("defaults", {})
    n_runs = int(runs if runs is not None else defaults.get("runs", 3))
    n_warm = int(warmup if warmup is not None else defaults.get("warmup", 1))
    threads = threads if threads is not None else defaults.get("threads")
    device = device or defaults.get("device")
    section = scen.get(task, {})
    targets = _filter_targets(section.get("targets", []), engines, models)
    load_avg_start = machine_description()["load_average"]
    settings: dict[str, Any] = {
        "runs": n_runs,
        "warmup": n_warm,
        "warmup_each": bool(defaults.get("warmup_each")),
        "threads": threads,
        "device": device,
        "isolated": isolate,
        "peer_limits": section.get("peer_limits") or {},
    }
    runner = _Runner(on_event, out_dir, isolate, target_timeout)
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="voxbox-bench-") as tmp:
        if task == "tts":
            base = _tts_items(section, texts, n_runs, settings)
            settings.update(steps=steps or section.get("steps", []), round_trip=section.get("round_trip"))
            common = {"audio_dir": str(out_dir / "audio"), "round_trip": section.get("round_trip")}
        else:
            base = _asr_items(scen, clips, n_runs, runs is not None, Path(tmp), settings, on_event)
            common = {"audio_dir": None, "round_trip": None}
        common.update(warmup=n_warm, warmup_each=settings["warmup_each"])
        for t in targets:
            items = expand_items(t, base, list(section.get("steps", [])), steps)
            spec = {
                "task": task,
                "kind": "voxbox",
                "name": t["engine"],
                "model": t.get("model"),
                "label": t.get("label"),
                "threads": threads,
                "settings": _target_settings(t, task, section, device),
            }
            peer_names = t.get("peers", []) if peers is None else [p for p in peers if applies_to(p, t["engine"])]
            results.extend(
                runner.target_and_peers(
                    {"target": spec, "items": items, **common},
                    peer_names,
                    section.get("peer_limits") or {},
                    runs is not None,
                )
            )
    machine = machine_description()
    machine["load_average_start"] = load_avg_start
    return build_report(
        task=task,
        mode="in-process",
        results=results,
        settings=settings,
        machine=machine,
        libraries=library_versions(),
        quick=quick,
        command=command,
    )


class _Runner:
    """Runs a voxbox job and its peers' jobs (isolated or not, interleaved where a peer asks)."""

    def __init__(self, on_event: OnEvent, out_dir: Path, isolate: bool, timeout: float | None) -> None:
        self.on_event, self.logs, self.isolate, self.timeout = on_event, out_dir / "logs", isolate, timeout

    def emitter(self, job: dict[str, Any]) -> tuple[Any, Path]:
        t = job["target"]
        tid = target_id(t["name"], t.get("model"), t["kind"], t.get("label"))
        n_warm = job["warmup"] * (len(job["items"]) if job.get("warmup_each") else min(1, len(job["items"])))
        self.on_event(tid, {"event": "queued", "total": sum(i["runs"] for i in job["items"]) + n_warm})
        safe = "".join(c if c.isalnum() or c in "-._" else "_" for c in tid)
        return (lambda e: self.on_event(tid, e)), self.logs / f"{safe}.log"

    def run(self, job: dict[str, Any]) -> dict[str, Any]:
        emit, log_path = self.emitter(job)
        if self.isolate:
            return self.done(run_job_isolated(job, emit, log_path=log_path, timeout=self.timeout))
        return self.done(run_job(job, emit))

    def done(self, res: dict[str, Any]) -> dict[str, Any]:
        t = res["target"]
        self.on_event(t["id"], {"event": "done", "status": t["status"], "reason": t["reason"]})
        return res

    def target_and_peers(
        self, vox_job: dict[str, Any], peer_names: list[str], limits: dict[str, Any], runs_given: bool
    ) -> list[dict[str, Any]]:
        spec = vox_job["target"]
        vox_id = target_id(spec["name"], spec.get("model"), "voxbox", spec.get("label"))

        def peer_job(p: str, vinfo: dict[str, Any]) -> dict[str, Any]:
            items = [dict(i) for i in vox_job["items"]]
            lim = limits.get(p) or {}
            if lim.get("items"):
                items = [i for i in items if i["scenario"] in lim["items"]] or items
            if lim.get("runs") and not runs_given:
                for i in items:
                    i["runs"] = min(i["runs"], int(lim["runs"]))
            p_settings = {k: v for k, v in spec["settings"].items() if k in ("device", "decoding")}
            p_settings["voxbox"] = {
                "device": vinfo.get("device"),
                "dtype": vinfo.get("dtype"),
                "threads": vinfo.get("threads"),
                **(vinfo.get("extra") or {}),
            }
            return {
                **vox_job,
                "items": items,
                "target": {
                    "task": spec["task"],
                    "kind": "peer",
                    "name": p,
                    "model": spec.get("model"),
                    "label": spec.get("label"),
                    "threads": spec.get("threads"),
                    "settings": p_settings,
                    "peer_of": vox_id,
                },
            }

        # peers that measure voxbox's own overhead take turns with voxbox, run by run
        paired = [p for p in peer_names if self.isolate and getattr(peer_class(p), "interleave_with_voxbox", False)]
        out: list[dict[str, Any]] = []
        if paired:

            def others(ready: dict[str, Any]) -> list[tuple[dict[str, Any], Any, Path]]:
                return [(j, *self.emitter(j)) for j in (peer_job(p, ready) for p in paired)]

            group = run_jobs_interleaved((vox_job, *self.emitter(vox_job)), others)
            out.extend(self.done(r) for r in group)
            vrec = group[0]["target"]
        else:
            vox = self.run(vox_job)
            out.append(vox)
            vrec = vox["target"]
        out.extend(self.run(peer_job(p, vrec)) for p in peer_names if p not in paired)
        return out


def machine_label(machine: dict[str, Any] | None = None) -> str:
    """A short name for where results were measured: the GPU model (``h200``) or ``cpu-<N>c``."""
    m = machine or machine_description()
    gpus = m.get("gpus") or []
    if gpus:
        words = [
            w
            for w in str(gpus[0].get("name", "gpu")).lower().replace("-", " ").split()
            if w not in ("nvidia", "amd", "radeon", "geforce", "tesla")
        ]
        name = "-".join(words) or "gpu"
        return name if len(gpus) == 1 else f"{name}-x{len(gpus)}"
    return f"cpu-{m.get('cpu_affinity') or m.get('cpu_count') or 0}c"


def default_out_dir(task: str, name: str | None = None) -> Path:
    """``./bench-results/<machine>/<date>-<name or task>-<HHMMSS>``: the layout results are kept in
    (the repository's own are under ``bench/results/<machine>/<date>-<name>/``)."""
    import time

    return (
        Path(os.getcwd())
        / "bench-results"
        / machine_label()
        / f"{time.strftime('%Y-%m-%d')}-{name or task}-{time.strftime('%H%M%S')}"
    )
