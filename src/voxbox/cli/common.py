"""What the CLI commands share: the runtime they run through, output-path rules, consoles."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Literal

from voxbox.errors import BadInputError

Task = Literal["tts", "asr"]


def stderr_console() -> Any:
    """Rich console on stderr with markup off: user-facing strings ([torch], paths) print as they are."""
    from rich.console import Console

    return Console(stderr=True, highlight=False, markup=False)


def check_output_file(path: Path) -> None:
    """One rule for every output file: its folder must exist (voxbox never creates folders)."""
    if path.is_dir():
        raise BadInputError(f"{path} is a directory; give a file name with -o", param="output")
    parent = path.parent if str(path.parent) else Path(".")
    if not parent.is_dir():
        raise BadInputError(f"cannot write {path}: folder {parent} does not exist", param="output")


def check_output_dir(path: Path) -> None:
    """Several outputs go into an existing folder."""
    if not path.is_dir():
        what = "is a file" if path.exists() else "does not exist"
        raise BadInputError(f"-o must be an existing folder when writing several files ({path} {what})",
                            param="output")


def cli_entry(task: Task, engine: str | None, model: str | None) -> Any:
    """The catalog entry for --engine/--model: a bundled name, ``engine:model``, or (CLI only) a
    path or model id for the engine. A bare model id or path goes to the task's default engine."""
    from voxbox.engines.registry import DEFAULT_ENGINE, resolve_model
    from voxbox.errors import ModelNotFoundError
    from voxbox.runtime import CatalogEntry

    try:
        name, sub = resolve_model(model, task, engine)
    except ModelNotFoundError:
        if engine is not None or not model:
            raise
        name, sub = DEFAULT_ENGINE[task], model
    label = name if sub is None else f"{name}:{sub}"
    return CatalogEntry(name=label, engine=name, task=task, model=sub, source="local")


@contextmanager
def cli_runtime(device: str, threads: int | None) -> Iterator[Any]:
    """A one-model runtime for one CLI command (same loading, workers and cancellation as the server)."""
    from voxbox.runtime import Catalog, RuntimeConfig
    from voxbox.runtime.sync import SyncRuntime

    config = RuntimeConfig(device=device, threads=threads, ttl=-1, max_loaded=1, queue_size=0,
                           request_timeout=7 * 24 * 3600.0)
    with SyncRuntime(Catalog(), config) as rt:
        yield rt


def print_timings(console: Any, label: str, timings: dict[str, float], wall: float, load: float) -> None:
    parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())
    console.print(f"{label}: {parts}; stages {sum(timings.values()) * 1000:.0f} ms of {wall * 1000:.0f} ms wall; "
                  f"model load {load * 1000:.0f} ms (outside the stages)")
