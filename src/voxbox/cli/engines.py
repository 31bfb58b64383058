"""``voxbox engines``: every engine, its models and voices, whether it is usable here and why not."""

from __future__ import annotations

import json
from typing import Any

import typer


def _row(spec: Any) -> dict[str, Any]:
    ok, reason = spec.available()
    models: list[str] = []
    voices: list[str] = []
    if ok and spec.default_model is not None:
        try:
            models = list(spec.bundled_models()) if spec.bundled_models else [spec.default_model]
            voices = list(spec.bundled_voices()) if spec.bundled_voices else []
            if spec.default_model not in models:
                ok, reason = False, "installed, but its bundled model is missing"
        except Exception as exc:  # noqa: BLE001 - one broken engine must not hide the others
            ok, reason = False, f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    caps = spec.capabilities
    return {
        "engine": spec.name, "task": spec.task, "available": ok, "reason": reason,
        "default_model": spec.default_model, "models": models, "voices": voices,
        "aliases": list(spec.aliases), "description": spec.description,
        "capabilities": {k: getattr(caps, k) for k in caps.__dataclass_fields__},
    }


def engines(as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table.")) -> None:
    """List engines with their models, voices, availability and the reason when unavailable."""
    from voxbox.engines.registry import ENGINES

    rows = [_row(spec) for spec in ENGINES.values()]
    if as_json:
        print(json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    table = Table(title="voxbox engines")
    for col in ("engine", "task", "models", "voices", "available", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(escape(r["engine"]), r["task"], escape(", ".join(r["models"]) or "-"),
                      escape(", ".join(r["voices"]) or "-"), "[green]yes[/]" if r["available"] else "[red]no[/]",
                      escape(r["reason"]))
    Console().print(table)


def register(app: typer.Typer) -> None:
    app.command()(engines)
