"""``voxbox doctor``: the machine, what each backend sees, probe verdicts, the plan and its reasons,
the environment to export and the warnings, as a rich report or JSON.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable

from voxbox.hardware.detect import GiB, MachineInfo, detect, load_machine
from voxbox.hardware.probe import ProbeCache, ProbeResult, ProbeSpec, run_probe
from voxbox.hardware.quirks import machine_quirks, match_quirks

__all__ = ["build_report", "render_report", "standard_probes"]

T = "voxbox.hardware.targets:"


def standard_probes(machine: MachineInfo, timeout_s: float = 90.0) -> list[ProbeSpec | ProbeResult]:
    """The probes ``doctor --probe`` runs here; a hard quirk turns a probe into a ``skipped`` result."""
    out: list[ProbeSpec | ProbeResult] = []
    torch, ct2, ort = machine.backend("torch"), machine.backend("ctranslate2"), machine.backend("onnxruntime")
    if torch.installed:
        out.append(ProbeSpec(T + "torch_matmul", "cpu", "float32", engine="torch", component="matmul", timeout_s=timeout_s))
    if ct2.installed:
        out.append(ProbeSpec(T + "ct2_whisper", "cpu", "int8", engine="ctranslate2", component="whisper", timeout_s=timeout_s))
    if ort.installed:
        out.append(ProbeSpec(T + "ort_session", "cpu", None, engine="onnxruntime", component="session", timeout_s=timeout_s))
    for g in machine.gpus:
        dev = g.torch_device
        if torch.installed and g.torch_visible and torch.build in ("cuda", "rocm"):
            for comp, target, dtypes in (("matmul", "torch_matmul", ("float16", "bfloat16")),
                                         ("conv", "torch_conv", ("float16", "float32"))):
                kind = "conv" if comp == "conv" else "transformer"
                for dt in dtypes:
                    hard = [q for q in match_quirks(machine, g, backend="torch", component_kind=kind, dtype=dt)
                            if q.severity == "hard" and (dt in q.avoid_dtypes or kind in q.cpu_for_kinds)]
                    kwargs = {"m": 2048, "n": 5888, "k": 2048} if comp == "matmul" else {}
                    if hard:
                        out.append(ProbeResult("skipped", T + target, dev, dt, "torch", comp,
                                               message=f"not probed: {hard[0].cite()} ({hard[0].title})"))
                    else:
                        out.append(ProbeSpec(T + target, dev, dt, engine="torch", component=comp, kwargs=kwargs,
                                             timeout_s=timeout_s))
        if ct2.installed and g.vendor == "nvidia" and int(ct2.get("cuda_device_count") or 0) > g.index:
            for dt in ("float16", "int8_float16"):
                out.append(ProbeSpec(T + "ct2_whisper", dev, dt, engine="ctranslate2", component="whisper",
                                     timeout_s=timeout_s))
        if ort.installed:
            provs = set(ort.get("providers") or [])
            if g.vendor == "nvidia" and "CUDAExecutionProvider" in provs:
                out.append(ProbeSpec(T + "ort_session", dev, None, engine="onnxruntime", component="session",
                                     timeout_s=timeout_s))
            if g.vendor == "amd" and provs & {"ROCMExecutionProvider", "MIGraphXExecutionProvider"}:
                prov = "ROCMExecutionProvider" if "ROCMExecutionProvider" in provs else "MIGraphXExecutionProvider"
                out.append(ProbeSpec(T + "ort_session", "rocm" + dev[4:], None, engine="onnxruntime", component="session",
                                     kwargs={"provider": prov}, timeout_s=timeout_s))
    return out


def build_report(*, probe: bool | None = None, machine: MachineInfo | None = None, machine_path: str | None = None,
                 timeout_s: float = 90.0, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The doctor report as plain data.

    ``probe=True`` runs the standard probes now (and caches them); ``False`` uses detection and
    quirks only; ``None`` (default) uses cached verdicts for this machine, if any.
    A recorded ``machine``/``machine_path`` is never probed (it is not this machine).
    """
    from voxbox import __version__
    from voxbox.hardware.plan import plan_machine

    recorded = machine is not None or machine_path is not None
    probes: list[ProbeResult] = []
    mode = "none"
    if machine_path is not None:
        import json
        from pathlib import Path

        data = json.loads(Path(machine_path).read_text())
        if "machine" in data:  # a saved `doctor --json` report: replay its machine and probe verdicts
            machine = MachineInfo.from_dict(data["machine"])
            probes = [ProbeResult.from_dict(p) for p in data.get("probes") or []]
            mode = "recorded" if probes else "none"
        else:
            machine = load_machine(machine_path)
    if machine is None:
        machine = detect()
    if not recorded and probe is not False:
        if probe:
            mode = "run"
            for item in standard_probes(machine, timeout_s):
                if isinstance(item, ProbeResult):
                    probes.append(item)
                    continue
                if progress:
                    progress(f"probing {item.engine} {item.component} on {item.device} {item.dtype or ''}".rstrip())
                probes.append(run_probe(item, machine=machine, refresh=True))
        else:
            mode = "cached"
            try:
                probes = ProbeCache().results(machine.fingerprint_key())
            except Exception:
                probes = []
    mp = plan_machine(machine, probes)
    quirks = [{"id": q.id, "gpu": g.index if g else None, "severity": q.severity, "title": q.title,
               "remedy": q.remedy, "source": q.source} for q, g in machine_quirks(machine)]
    return {
        "voxbox": __version__,
        "machine": machine.to_dict(),
        "fingerprint": machine.fingerprint_key(),
        "probe_mode": mode,
        "probes": [p.to_dict() for p in probes],
        "quirks": quirks,
        **mp.to_dict(),
    }


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------

def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GiB:.1f} GiB"


def render_report(report: dict[str, Any], console: Any = None) -> None:
    from rich.console import Console
    from rich.table import Table

    c = console or Console()
    m = MachineInfo.from_dict(report["machine"])
    c.print(f"[bold]voxbox doctor[/bold] {report['voxbox']} - {m.source}"
            + (f" (detected in {m.detect_seconds:.2f} s)" if m.detect_seconds else ""))
    c.print(f"[bold]CPU[/bold]  {m.cpu.model} ({m.cpu.arch}), {m.cpu.usable_cores} usable of {m.cpu.logical_cores} "
            f"logical cores; {', '.join(m.cpu.features) or 'no SIMD flags read'}")
    c.print(f"[bold]RAM[/bold]  {_gib(m.ram_total)} total, {_gib(m.ram_available)} available; "
            f"{m.os}, Python {m.python}")
    drv = ", ".join(f"{k} {v}" for k, v in m.drivers.items() if v)
    if drv:
        c.print(f"[bold]Drivers[/bold]  {drv}")

    t = Table(title="GPUs", title_justify="left", show_lines=False)
    for col in ("#", "vendor", "name", "arch", "memory (free/total)", "unified", "torch sees it"):
        t.add_column(col)
    for g in m.gpus:
        t.add_row(str(g.index), g.vendor, g.name, g.arch or "?", f"{_gib(g.free_memory)} / {_gib(g.total_memory)}",
                  "yes" if g.unified_memory else "no", "yes" if g.torch_visible else f"no ({g.source})")
    if m.gpus:
        c.print(t)
    else:
        c.print("[bold]GPUs[/bold]  none found")

    t = Table(title="Backends (what each really sees)", title_justify="left")
    for col in ("backend", "version", "build", "sees"):
        t.add_column(col)
    for name, b in m.backends.items():
        if not b.installed:
            t.add_row(name, "-", "-", "[dim]not installed[/dim]")
            continue
        if name == "torch":
            sees = f"{b.get('device_count', 0)} GPU(s)"
            if b.get("cuda_version"):
                sees += f", CUDA {b.get('cuda_version')}"
            if b.get("hip_version"):
                sees += f", HIP {b.get('hip_version')}"
        elif name == "ctranslate2":
            n = int(b.get("cuda_device_count") or 0)
            sees = f"{n} CUDA device(s); CPU: {', '.join(b.get('cpu_compute_types') or [])}"
            if n:
                sees += f"; CUDA: {', '.join((b.get('cuda_compute_types') or [[]])[0])}"
                if b.get("libcublas12") is not None:
                    sees += f"; libcublas.so.12 {'found' if b.get('libcublas12') else 'NOT found'}"
        else:
            sees = ", ".join(b.get("providers") or [])
        if b.error:
            sees += f" [red]({b.error})[/red]"
        t.add_row(name, b.version or "?", b.build or "?", sees)
    c.print(t)

    probes = report.get("probes") or []
    if probes:
        t = Table(title=f"Probes ({report['probe_mode']})", title_justify="left")
        for col in ("backend", "probe", "device", "dtype", "verdict", "time", "detail"):
            t.add_column(col)
        colour = {"ok": "green", "slow": "yellow", "skipped": "dim"}
        for p in probes:
            st = p["status"]
            sec = p.get("seconds")
            tm = "" if sec is None or st not in ("ok", "slow") else (
                f"{sec * 1e6:.0f} us" if sec < 1e-3 else f"{sec * 1000:.1f} ms")
            t.add_row(p.get("engine") or "", p.get("component") or "", p["device"], p.get("dtype") or "",
                      f"[{colour.get(st, 'red')}]{st}[/]" + (" (cached)" if p.get("cached") else ""), tm,
                      (p.get("message") or "")[:120])
        c.print(t)
    else:
        if report["probe_mode"] == "cached":
            c.print("[bold]Probes[/bold]  none cached for this machine yet: run `voxbox doctor --probe`")
        elif m.source == "detected":
            c.print("[bold]Probes[/bold]  not run (--no-probe): detection and quirks only")
        else:
            c.print("[bold]Probes[/bold]  none (a recorded machine description is never probed)")

    if report.get("quirks"):
        c.print("[bold]Quirks that concern this machine[/bold]")
        for q in report["quirks"]:
            c.print(f"  - [cyan]{q['id']}[/cyan] ({q['severity']}, GPU {q['gpu']}): {q['title']}. {q['remedy']}")

    asr = report["asr_engine"]
    c.print(f"[bold]ASR engine[/bold]  {asr['engine']}: {asr['reason']}")
    t = Table(title="Plan", title_justify="left", show_lines=True)
    for col in ("engine", "component", "device", "dtype", "reason"):
        t.add_column(col, overflow="fold")
    for name, plan in report["plans"].items():
        for p in plan["placements"]:
            t.add_row(name, p["component"], p["device"] or "[red]not planned[/red]", p["dtype"] or "", p["reason"])
    c.print(t)
    notes = sorted({n for plan in report["plans"].values() for n in plan.get("notes", [])})
    for n in notes:
        c.print(f"[bold]Note[/bold]  {n}")

    if report["env"]:
        c.print("[bold]Environment to export[/bold]")
        for e in report["env"]:
            c.print(f"  export {e['name']}={e['value']}" + ("   [dim](optional)[/dim]" if e["optional"] else ""))
            c.print(f"      [dim]# {e['why']}[/dim]")
    else:
        c.print("[bold]Environment to export[/bold]  nothing needed")
    if report["warnings"]:
        c.print("[bold yellow]Warnings[/bold yellow]")
        for w in report["warnings"]:
            c.print(f"  ! {w}")


def report_to_json(report: dict[str, Any]) -> str:
    import json

    return json.dumps(report, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
