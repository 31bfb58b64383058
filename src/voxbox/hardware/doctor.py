"""``voxbox doctor``: the machine, what each backend sees, probe verdicts, the plan and its reasons,
the environment to export and the warnings, as a rich report or JSON.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict
from typing import Any

from voxbox.hardware.detect import BackendInfo, GiB, MachineInfo, detect, load_machine
from voxbox.hardware.machine_plan import PlannedEngine, plan_machine
from voxbox.hardware.probe import ProbeCache, ProbeResult, run_probe
from voxbox.hardware.probe_sets import standard_probes
from voxbox.hardware.quirks import machine_quirks

__all__ = ["build_report", "render_report", "standard_probes"]


def _recorded(machine_path: str) -> tuple[MachineInfo, list[ProbeResult], str]:
    """A recorded machine description, or a saved ``doctor --json`` report (its machine and probes)."""
    import json
    from pathlib import Path

    data = json.loads(Path(machine_path).read_text())
    if "machine" in data:
        probes = [ProbeResult.from_dict(p) for p in data.get("probes") or []]
        return MachineInfo.from_dict(data["machine"]), probes, "recorded" if probes else "none"
    return load_machine(machine_path), [], "none"


def _live_probes(machine: MachineInfo, probe: bool | None, timeout_s: float,
                 progress: Callable[[str], None] | None) -> tuple[list[ProbeResult], str]:
    if probe is False:
        return [], "none"
    if not probe:
        try:
            return ProbeCache().results(machine.fingerprint_key()), "cached"
        except Exception:  # noqa: BLE001 - an unreadable cache means no verdicts
            return [], "cached"
    probes: list[ProbeResult] = []
    for item in standard_probes(machine, timeout_s):
        if isinstance(item, ProbeResult):
            probes.append(item)
            continue
        if progress:
            progress(f"probing {item.engine} {item.component} on {item.device} {item.dtype or ''}".rstrip())
        probes.append(run_probe(item, machine=machine, refresh=True))
    return probes, "run"


def build_report(engines: Iterable[PlannedEngine], *, probe: bool | None = None, machine: MachineInfo | None = None,
                 machine_path: str | None = None, timeout_s: float = 90.0,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The doctor report as plain data, planning each of ``engines`` (the registry's specs, in order
    of preference; the CLI passes them).

    ``probe=True`` runs the standard probes now (and caches them); ``False`` uses detection and
    quirks only; ``None`` (default) uses cached verdicts for this machine, if any.
    A recorded ``machine``/``machine_path`` is never probed (it is not this machine).
    """
    from voxbox import __version__

    probes: list[ProbeResult] = []
    mode = "none"
    if machine_path is not None:
        machine, probes, mode = _recorded(machine_path)
    elif machine is None:
        machine = detect()
        probes, mode = _live_probes(machine, probe, timeout_s, progress)
    mp = plan_machine(engines, machine, probes)
    startup: dict[str, str] = {}
    if machine_path is None and machine.source == "detected":  # this machine's, not a recorded one's
        from voxbox.engines.compile_cache import startup_caches

        startup = startup_caches()
    quirks = [{"id": q.id, "gpu": g.index if g else None, "severity": q.severity, "title": q.title,
               "remedy": q.remedy, "source": q.source} for q, g in machine_quirks(machine)]
    return {
        "voxbox": __version__,
        "machine": machine.to_dict(),
        "fingerprint": machine.fingerprint_key(),
        "probe_mode": mode,
        "probes": [p.to_dict() for p in probes],
        "quirks": quirks,
        "startup": startup,
        **mp.to_dict(),
    }


# ------------------------------------------------------------------------------------------------
# rendering
# ------------------------------------------------------------------------------------------------

def _gib(n: int | None) -> str:
    return "?" if n is None else f"{n / GiB:.1f} GiB"


def _render_machine(c: Any, m: MachineInfo) -> None:
    from rich.table import Table

    c.print(f"[bold]CPU[/bold]  {m.cpu.model} ({m.cpu.arch}), {m.cpu.usable_cores} usable of {m.cpu.logical_cores} "
            f"logical cores; {', '.join(m.cpu.features) or 'no SIMD flags read'}")
    c.print(f"[bold]RAM[/bold]  {_gib(m.ram_total)} total, {_gib(m.ram_available)} available; "
            f"{m.os}, Python {m.python}")
    drv = ", ".join(f"{k} {v}" for k, v in m.drivers.items() if v)
    if drv:
        c.print(f"[bold]Drivers[/bold]  {drv}")
    if not m.gpus:
        c.print("[bold]GPUs[/bold]  none found")
        return
    t = Table(title="GPUs", title_justify="left", show_lines=False)
    for col in ("#", "vendor", "name", "arch", "memory (free/total)", "unified", "torch sees it"):
        t.add_column(col)
    for g in m.gpus:
        t.add_row(str(g.index), g.vendor, g.name, g.arch or "?", f"{_gib(g.free_memory)} / {_gib(g.total_memory)}",
                  "yes" if g.unified_memory else "no", "yes" if g.torch_visible else f"no ({g.source})")
    c.print(t)


def _backend_sees(name: str, b: BackendInfo) -> str:
    if name == "torch":
        sees = f"{b.get('device_count', 0)} GPU(s)"
        if b.get("cuda_version"):
            sees += f", CUDA {b.get('cuda_version')}"
        if b.get("hip_version"):
            sees += f", HIP {b.get('hip_version')}"
        return sees
    if name == "ctranslate2":
        n = int(b.get("cuda_device_count") or 0)
        sees = f"{n} CUDA device(s); CPU: {', '.join(b.get('cpu_compute_types') or [])}"
        if n:
            sees += f"; CUDA: {', '.join((b.get('cuda_compute_types') or [[]])[0])}"
            if b.get("libcublas12") is not None:
                sees += f"; libcublas.so.12 {'found' if b.get('libcublas12') else 'NOT found'}"
        return sees
    if name == "ggml":
        gpu = ", ".join(b.get("gpu_backends") or [])
        return f"{b.get('library', 'ggml')}: " + (
            f"GPU backends {gpu}" if gpu else "CPU only (no GPU backend built in)"
        )
    return ", ".join(b.get("providers") or [])


def _render_backends(c: Any, m: MachineInfo) -> None:
    from rich.table import Table

    t = Table(title="Backends (what each really sees)", title_justify="left")
    for col in ("backend", "version", "build", "sees"):
        t.add_column(col)
    for name, b in m.backends.items():
        if not b.installed:
            t.add_row(name, "-", "-", "[dim]not installed[/dim]")
            continue
        sees = _backend_sees(name, b) + (f" [red]({b.error})[/red]" if b.error else "")
        t.add_row(name, b.version or "?", b.build or "?", sees)
    c.print(t)


def _render_startup(c: Any, report: dict[str, Any]) -> None:
    """What a second start reuses (compiled kernels, Python bytecode) and how weights are read."""
    items = report.get("startup") or {}
    if items:
        c.print("[bold]Start-up[/bold]  " + "; ".join(f"{k}: {v}" for k, v in items.items()))


def _render_probes(c: Any, report: dict[str, Any], m: MachineInfo) -> None:
    from rich.table import Table

    probes = report.get("probes") or []
    if not probes:
        if report["probe_mode"] == "cached":
            c.print("[bold]Probes[/bold]  none cached for this machine yet: run `voxbox doctor --probe`")
        elif m.source == "detected":
            c.print("[bold]Probes[/bold]  not run (--no-probe): detection and quirks only")
        else:
            c.print("[bold]Probes[/bold]  none (a recorded machine description is never probed)")
        return
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


def _render_plan(c: Any, report: dict[str, Any]) -> None:
    from rich.table import Table

    if report.get("quirks"):
        c.print("[bold]Quirks that concern this machine[/bold]")
        for q in report["quirks"]:
            c.print(f"  - [cyan]{q['id']}[/cyan] ({q['severity']}, GPU {q['gpu']}): {q['title']}. {q['remedy']}")
    choices = report.get("choices") or ({"asr": report["asr_engine"]} if "asr_engine" in report else {})
    for task, choice in choices.items():
        c.print(f"[bold]{task.upper()} engine[/bold]  {choice['engine']}: {choice['reason']}")
    t = Table(title="Plan", title_justify="left", show_lines=True)
    for col in ("engine", "component", "device", "dtype", "reason"):
        t.add_column(col, overflow="fold")
    for name, plan in report["plans"].items():
        for p in plan["placements"]:
            t.add_row(name, p["component"], p["device"] or "[red]not planned[/red]", p["dtype"] or "", p["reason"])
    c.print(t)
    for n in sorted({n for plan in report["plans"].values() for n in plan.get("notes", [])}):
        c.print(f"[bold]Note[/bold]  {n}")


def _render_env(c: Any, report: dict[str, Any]) -> None:
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


def render_report(report: dict[str, Any], console: Any = None) -> None:
    """The report as rich text: machine, backends, probes, quirks, choices and plan, env, warnings."""
    from rich.console import Console

    c = console or Console()
    m = MachineInfo.from_dict(report["machine"])
    c.print(f"[bold]voxbox doctor[/bold] {report['voxbox']} - {m.source}"
            + (f" (detected in {m.detect_seconds:.2f} s)" if m.detect_seconds else ""))
    _render_machine(c, m)
    _render_backends(c, m)
    _render_startup(c, report)
    _render_probes(c, report, m)
    _render_plan(c, report)
    _render_env(c, report)


def report_to_json(report: dict[str, Any]) -> str:
    import json

    return json.dumps(report, indent=2, default=lambda o: asdict(o) if hasattr(o, "__dataclass_fields__") else str(o))
