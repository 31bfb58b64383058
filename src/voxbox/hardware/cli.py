"""``voxbox doctor`` (registered on the main app by ``register(app)``; no heavy imports here)."""

from __future__ import annotations

import typer


def doctor(
    json_out: bool = typer.Option(False, "--json", help="Print the report as JSON."),
    probe: bool | None = typer.Option(
        None, "--probe/--no-probe",
        help="--probe runs real probes now (child processes with a watchdog) and caches them; "
             "--no-probe uses detection and quirks only. Default: use cached probe verdicts."),
    machine: str | None = typer.Option(
        None, "--machine", help="Plan for a recorded machine description, or replay a saved `doctor --json` report."),
    timeout: float = typer.Option(90.0, "--timeout", help="Watchdog seconds per probe."),
) -> None:
    """Check this machine: GPUs, what each backend sees, probes, the plan per engine, env vars, warnings."""
    import sys

    from voxbox.engines.registry import ENGINES
    from voxbox.hardware.doctor import build_report, render_report, report_to_json

    progress = None if json_out else (lambda msg: print(f"... {msg}", file=sys.stderr, flush=True))
    report = build_report(ENGINES.values(), probe=probe, machine_path=machine, timeout_s=timeout, progress=progress)
    if json_out:
        print(report_to_json(report))
    else:
        render_report(report)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
