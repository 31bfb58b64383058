"""``voxbox bench tts|asr|compare`` (registered on the main app by ``register(app)``; light imports only)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Any, Optional

import typer

bench_app = typer.Typer(
    name="bench",
    help="Benchmark TTS and ASR engines (in-process or against a server) side by side with peers.",
    no_args_is_help=True,
)


def _csv(value: Optional[str]) -> Optional[list[str]]:
    if value is None:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


def _ints(value: Optional[str], what: str) -> Optional[list[int]]:
    items = _csv(value)
    if items is None:
        return None
    try:
        out = [int(v) for v in items]
    except ValueError:
        from voxbox.errors import BadInputError

        raise BadInputError(f"{what} must be a comma-separated list of integers, got {value!r}", param=what) from None
    return out


class _Progress:
    """Rich progress bars: one per target, fed by the runner's events."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[status]}"),
            console=self.console,
        )
        self.tasks: dict[str, Any] = {}

    def __enter__(self) -> "_Progress":
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.progress.__exit__(*exc)

    def __call__(self, tid: str, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "stage":
            self.console.print(f"[dim]... {event.get('description')}[/dim]")
            return
        if kind == "queued" or tid not in self.tasks:
            if tid not in self.tasks:
                self.tasks[tid] = self.progress.add_task(tid, total=event.get("total") or 1, status="")
        task = self.tasks[tid]
        if kind == "start":
            self.progress.update(task, total=event.get("total"), status="running")
        elif kind == "advance":
            self.progress.advance(task)
        elif kind == "done":
            status = event.get("status")
            label = "[green]ok[/green]" if status == "ok" else f"[yellow]{status}[/yellow]: {event.get('reason') or ''}"
            t = self.progress.tasks[[x.id for x in self.progress.tasks].index(task)]
            self.progress.update(task, completed=t.total if status == "ok" else t.completed, status=label[:120])


def _run(
    task: str,
    *,
    quick: bool,
    scenarios: Optional[Path],
    out: Optional[Path],
    engine: Optional[str],
    model: Optional[str],
    peers: Optional[str],
    no_peers: bool,
    runs: Optional[int],
    warmup: Optional[int],
    threads: Optional[int],
    device: Optional[str],
    steps: Optional[str],
    items: Optional[str],
    url: Optional[str],
    concurrency: Optional[str],
    isolate: bool,
    charts: bool,
    target_timeout: Optional[float] = None,
) -> None:
    from voxbox.bench.report import render_markdown, write_outputs
    from voxbox.bench.scenarios import load_scenarios
    from voxbox.bench.suite import default_out_dir

    scen = load_scenarios(scenarios, quick=quick)
    out_dir = out or default_out_dir(task)
    command = (
        "voxbox bench " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index("bench") + 1 :])
        if "bench" in sys.argv
        else f"voxbox bench {task}"
    )
    item_list = _csv(items)
    with _Progress() as progress:
        if url:
            from voxbox.bench.remote import run_http

            report = run_http(
                task,
                scen,
                url=url,
                out_dir=out_dir,
                models=_csv(model) or _csv(engine),
                concurrency=_ints(concurrency, "concurrency"),
                runs=runs,
                warmup=warmup,
                texts=item_list if task == "tts" else None,
                clips=item_list if task == "asr" else None,
                quick=quick,
                command=command,
                on_event=progress,
            )
        else:
            from voxbox.bench.suite import run_suite

            report = run_suite(
                task,
                scen,
                out_dir=out_dir,
                engines=_csv(engine),
                models=_csv(model),
                peers=[] if no_peers else _csv(peers),
                runs=runs,
                warmup=warmup,
                threads=threads,
                device=device,
                steps=_ints(steps, "steps"),
                texts=item_list if task == "tts" else None,
                clips=item_list if task == "asr" else None,
                isolate=isolate,
                quick=quick,
                command=command,
                on_event=progress,
                target_timeout=target_timeout,
            )
    paths = write_outputs(report, out_dir, charts=charts)
    print(render_markdown(report))
    print("written: " + ", ".join(str(p) for p in paths.values()), file=sys.stderr)
    if charts and "rtf_png" not in paths:
        print("charts skipped: matplotlib is not installed (pip install 'voxbox[bench]')", file=sys.stderr)


_QUICK = typer.Option(False, "--quick", help="One-minute smoke run: one short item, one run, fewer peers.")
_SCEN = typer.Option(
    None,
    "--scenarios",
    help="YAML file, or a shipped profile (gpu, gpu-variants, cpu-shapes), merged over "
    "the shipped scenarios (voxbox/bench/scenarios.yaml).",
)
_OUT = typer.Option(None, "--out", "-o", help="Output directory (default ./bench-results/MACHINE/DATE-TASK-TIME).")
_PEERS = typer.Option(None, "--peers", help="Comma-separated peers to run beside voxbox (default: from the scenarios).")
_NOPEERS = typer.Option(False, "--no-peers", help="Measure voxbox only.")
_RUNS = typer.Option(None, "--runs", min=1, help="Measured runs per scenario (default 3).")
_WARM = typer.Option(None, "--warmup", min=0, help="Warm-up calls, reported separately (default 1).")
_THREADS = typer.Option(None, "--threads", min=1, help="Threads for engines and peers (default: engine's choice).")
_DEVICE = typer.Option(None, "--device", help="Device for voxbox engines (auto, cpu, cuda...).")
_URL = typer.Option(None, "--url", help="Benchmark a running voxbox/OpenAI-compatible server instead of in-process.")
_CONC = typer.Option(None, "--concurrency", help="With --url: comma-separated concurrency levels (default 1,4,16).")
_ISO = typer.Option(True, "--isolate/--no-isolate", help="Run each target in its own process (default) or in this one.")
_CHARTS = typer.Option(True, "--charts/--no-charts", help="Write PNG charts (needs matplotlib).")
_TTO = typer.Option(
    None,
    "--target-timeout",
    min=1,
    help="Stop a (non-interleaved) target after this many seconds and report it as an error.",
)


@bench_app.command("tts")
def bench_tts(
    quick: bool = _QUICK,
    engine: Optional[str] = typer.Option(
        None, "--engine", "-e", help="Comma-separated TTS engines (default: from the scenarios)."
    ),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", help="Model for the engine(s); with --url the server's model ids."
    ),
    texts: Optional[str] = typer.Option(None, "--texts", help="Comma-separated text names (short, medium, long)."),
    steps: Optional[str] = typer.Option(
        None, "--steps", help="Diffusion step counts, e.g. 10,20,40 (diffusion engines only)."
    ),
    peers: Optional[str] = _PEERS,
    no_peers: bool = _NOPEERS,
    runs: Optional[int] = _RUNS,
    warmup: Optional[int] = _WARM,
    threads: Optional[int] = _THREADS,
    device: Optional[str] = _DEVICE,
    scenarios: Optional[Path] = _SCEN,
    out: Optional[Path] = _OUT,
    url: Optional[str] = _URL,
    concurrency: Optional[str] = _CONC,
    isolate: bool = _ISO,
    charts: bool = _CHARTS,
    target_timeout: Optional[float] = _TTO,
) -> None:
    """Benchmark text-to-speech: RTF, time to first audio, stages, memory, round-trip WER."""
    _run(
        "tts",
        quick=quick,
        scenarios=scenarios,
        out=out,
        engine=engine,
        model=model,
        peers=peers,
        no_peers=no_peers,
        runs=runs,
        warmup=warmup,
        threads=threads,
        device=device,
        steps=steps,
        items=texts,
        url=url,
        concurrency=concurrency,
        isolate=isolate,
        charts=charts,
        target_timeout=target_timeout,
    )


@bench_app.command("asr")
def bench_asr(
    quick: bool = _QUICK,
    engine: Optional[str] = typer.Option(
        None, "--engine", "-e", help="Comma-separated ASR engines (default: from the scenarios)."
    ),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="Comma-separated models, e.g. tiny.en,base."),
    clips: Optional[str] = typer.Option(None, "--clips", help="Comma-separated clip names from the scenarios."),
    peers: Optional[str] = _PEERS,
    no_peers: bool = _NOPEERS,
    runs: Optional[int] = _RUNS,
    warmup: Optional[int] = _WARM,
    threads: Optional[int] = _THREADS,
    device: Optional[str] = _DEVICE,
    scenarios: Optional[Path] = _SCEN,
    out: Optional[Path] = _OUT,
    url: Optional[str] = _URL,
    concurrency: Optional[str] = _CONC,
    isolate: bool = _ISO,
    charts: bool = _CHARTS,
    target_timeout: Optional[float] = _TTO,
) -> None:
    """Benchmark speech-to-text: RTF, x realtime, stages, memory, WER/CER against references."""
    _run(
        "asr",
        quick=quick,
        scenarios=scenarios,
        out=out,
        engine=engine,
        model=model,
        peers=peers,
        no_peers=no_peers,
        runs=runs,
        warmup=warmup,
        threads=threads,
        device=device,
        steps=None,
        items=clips,
        url=url,
        concurrency=concurrency,
        isolate=isolate,
        charts=charts,
        target_timeout=target_timeout,
    )


@bench_app.command("compare")
def bench_compare(
    a: Path = typer.Argument(..., exists=True, dir_okay=False, help="Baseline results.json."),
    b: Path = typer.Argument(..., exists=True, dir_okay=False, help="New results.json."),
) -> None:
    """Print the change from A to B for every row both result files have."""
    import json

    from rich.console import Console
    from rich.table import Table

    from voxbox.bench.report import compare_reports
    from voxbox.errors import BadInputError

    docs = []
    for p in (a, b):
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise BadInputError(f"{p} is not a bench result file: {exc}") from exc
        if not isinstance(doc, dict) or doc.get("tool") != "voxbox bench":
            raise BadInputError(f"{p} is not a voxbox bench result file")
        docs.append(doc)
    if docs[0].get("task") != docs[1].get("task"):
        raise BadInputError(
            f"{a} is a {docs[0].get('task')} run and {b} a {docs[1].get('task')} run; compare runs of one task"
        )
    rows = compare_reports(docs[0], docs[1])
    title_a = str(a) if a.name == b.name else a.name
    title_b = str(b) if a.name == b.name else b.name
    table = Table(title=f"{title_a} -> {title_b} ({docs[0].get('task')})")
    for col in ("target", "scenario", "A total s", "B total s", "change", "A RTF", "B RTF", "A WER", "B WER"):
        table.add_column(col)

    def f(x: Any, fmt: str = "{:.3f}") -> str:
        return "–" if x is None else fmt.format(x)

    for r in rows:
        label = (
            r["scenario"]
            + (f" {r['steps']}st" if r.get("steps") else "")
            + (f" c{r['concurrency']}" if r.get("concurrency") else "")
        )
        ch = r["change_pct"]
        color = "green" if ch is not None and ch < -5 else "red" if ch is not None and ch > 5 else "white"
        table.add_row(
            r["target"],
            label,
            f(r["a_total_s"]),
            f(r["b_total_s"]),
            f"[{color}]{f(ch, '{:+.1f}%')}[/{color}]",
            f(r["a_rtf"], "{:.4f}"),
            f(r["b_rtf"], "{:.4f}"),
            f(r["a_wer"]),
            f(r["b_wer"]),
        )
    Console(width=None if sys.stdout.isatty() else 200).print(table)
    if not rows:
        raise BadInputError("the two runs have no target and scenario in common")


def register(app: typer.Typer) -> None:
    app.add_typer(bench_app, name="bench")
