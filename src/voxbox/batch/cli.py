"""``voxbox batch transcribe`` and ``voxbox batch speak``: resumable batch jobs, in-process or on Ray Data.

Ray runs the job when ``--ray`` (a local Ray instance) or ``--address`` (a cluster; also
``RAY_ADDRESS``) is given; otherwise it runs in this process. Outputs and resume are the same.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import typer

__all__ = ["batch_app", "register"]

batch_app = typer.Typer(name="batch", help="Batch jobs: transcribe many files, synthesize a speech dataset "
                        "(resumable; in-process or on Ray).", no_args_is_help=True)

_RAY = typer.Option(False, "--ray", help="Run on Ray Data (a local Ray instance unless --address).")
_ADDRESS = typer.Option(
    None, "--address", help="Run on this Ray cluster ('auto' or HOST:PORT; default $RAY_ADDRESS with --ray)."
)
_ACTORS = typer.Option(None, "--actors", min=1, help="With Ray: engine workers (default: one per GPU, or the CPUs).")
_ACTOR_CPUS = typer.Option(
    None, "--actor-cpus", min=0.01, help="With Ray: CPUs per worker (default 1; also its threads)."
)
_ACTOR_GPUS = typer.Option(
    None, "--actor-gpus", min=0.0, help="With Ray: GPUs per worker (default from the plan; fractions share a GPU)."
)
_BATCH = typer.Option(None, "--batch-size", min=1, help="Inputs a worker runs at once (default from the plan).")
_DEVICE = typer.Option("auto", "--device", help="auto, cpu or cuda.")
_THREADS = typer.Option(None, "--threads", min=1, help="CPU threads per engine.")
_OPTION = typer.Option(None, "--option", help="An engine option NAME=VALUE (repeat; see `voxbox engines`).")


def _options(pairs: list[str] | None, **given: Any) -> dict[str, Any]:
    """--option NAME=VALUE pairs; VALUE is JSON when it parses (5, 0.5, true, [0, 0.2]), else text.
    The engine's Options dataclass checks names and types (see _check_options)."""
    import json

    from voxbox.errors import BadInputError

    out = {k: v for k, v in given.items() if v is not None}
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name.strip():
            raise BadInputError(f"--option takes NAME=VALUE, got {pair!r}", param="option")
        try:
            out[name.strip()] = json.loads(value)
        except ValueError:
            out[name.strip()] = value
    return out


def _use_ray(ray: bool, address: str | None) -> str | None:
    """None: in-process; otherwise the address to pass to ray.init ('' = start a local instance)."""
    if not ray and not address:
        return None
    from voxbox.ray_serve.cli import require_ray

    require_ray("batch")
    return address or os.environ.get("RAY_ADDRESS") or ""


def _model_job(task: str, engine: str | None, model: str | None, device: str, threads: int | None,
               batch: int | None) -> Any:
    from voxbox.batch.work import ModelJob, batch_size_for
    from voxbox.cli.common import cli_entry

    entry = cli_entry(task, engine, model)  # type: ignore[arg-type]
    return ModelJob(entry, device=device, threads=threads, concurrency=batch or batch_size_for(entry, device != "cpu"))


def _check_options(entry: Any, values: dict[str, Any]) -> None:
    """Unknown option names and bad values fail now, in one line, before any model loads."""
    from voxbox.engines.registry import get_spec

    get_spec(entry.engine).make_options(values)


def _run(console: Any, progress: Any, store: Any, body: Any) -> None:
    """Run ``body()``; on Ctrl-C (or SIGTERM) keep what was written and say how to continue."""
    import signal

    def on_term(*_: Any) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_term)
    try:
        with progress:
            body()
    except KeyboardInterrupt:
        store.close()
        console.print(f"interrupted: {progress.done} record(s) written this run; run the same command again "
                      f"to process the rest", soft_wrap=True)
        raise SystemExit(130) from None  # (typer.Exit's code is dropped by voxbox.cli.main)
    finally:
        signal.signal(signal.SIGTERM, previous)
    store.finish()
    console.print(progress.summary(), soft_wrap=True)


@batch_app.command("transcribe")
def transcribe(
    source: str = typer.Argument(
        ..., metavar="INPUT",
        help="A folder, a glob ('data/**/*.flac') or a manifest (.jsonl/.csv/.parquet with a path column).",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output records: .jsonl or .parquet (resumed if it exists)."),
    engine: str | None = typer.Option(None, "--engine", "-e", help="ASR engine (default faster-whisper)."),
    model: str | None = typer.Option(None, "--model", "-m", help="whisper-1, engine:model, or a model directory."),
    language: str | None = typer.Option(None, "--language", "-l", help="Spoken language (default: detect)."),
    task: str = typer.Option("transcribe", "--task", help="transcribe or translate."),
    prompt: str | None = typer.Option(None, "--prompt", help="Initial prompt."),
    word_timestamps: bool = typer.Option(False, "--word-timestamps", help="Words with times in each segment."),
    beam_size: int | None = typer.Option(None, "--beam-size", min=1, help="Beam size (engine default)."),
    vad: bool = typer.Option(True, "--vad/--no-vad", help="Skip silence and music with Silero VAD first (default on)."),
    path_column: str = typer.Option("path", "--path-column", help="The manifest column naming the audio files."),
    option: list[str] | None = _OPTION,
    device: str = _DEVICE,
    threads: int | None = _THREADS,
    batch_size: int | None = _BATCH,
    ray: bool = _RAY,
    address: str | None = _ADDRESS,
    actors: int | None = _ACTORS,
    actor_cpus: float | None = _ACTOR_CPUS,
    actor_gpus: float | None = _ACTOR_GPUS,
) -> None:
    """Transcribe many audio files into one Parquet/JSONL file (text, segments, language, timings)."""
    from voxbox.batch.inputs import audio_items
    from voxbox.batch.progress import JobProgress
    from voxbox.batch.store import ResultStore
    from voxbox.batch.work import TranscribeJob
    from voxbox.cli.common import stderr_console
    from voxbox.errors import BadInputError

    console = stderr_console()
    if task not in ("transcribe", "translate"):
        raise BadInputError(f"--task must be transcribe or translate, got {task!r}", param="task")
    store = ResultStore(out, "path")
    job = TranscribeJob(_model_job("asr", engine, model, device, threads, batch_size),
                        _options(option, beam_size=beam_size), language, prompt, task, word_timestamps,
                        vad=vad)
    _check_options(job.model.entry, job.options)
    ray_address = _use_ray(ray, address)
    items = audio_items(source, path_column=path_column)
    done = store.done()
    todo = [it for it in items if it.key not in done]
    progress = JobProgress(console, len(todo), len(items) - len(todo), "transcribed")

    def on_record(record: dict[str, Any]) -> None:
        store.write(record)
        progress.update(record)

    def body() -> None:
        if not todo:
            return
        if ray_address is None:
            from voxbox.batch.local import transcribe_local

            transcribe_local(todo, job, on_record)
        else:
            from voxbox.batch.ray_data import transcribe_ray

            plan = transcribe_ray(todo, job, on_record, address=ray_address or None, actors=actors,
                                  cpus=actor_cpus, gpus=actor_gpus, batch=batch_size)
            console.print(f"ray: {plan.describe()}", soft_wrap=True)

    _run(console, progress, store, body)


@batch_app.command("speak")
def speak(
    manifest: Path = typer.Argument(
        ..., metavar="MANIFEST",
        help="Rows with text (+ id, voice, reference, reference_text): .jsonl, .csv or .parquet.",
    ),
    out: Path = typer.Option(..., "--out", "-o", help="Output folder (created): audio files + manifest.jsonl."),
    engine: str | None = typer.Option(None, "--engine", "-e", help="TTS engine (default hibari)."),
    model: str | None = typer.Option(None, "--model", "-m", help="tts-1, engine:model, or a model directory."),
    fmt: str = typer.Option("wav", "--format", "-f", help="wav, flac, mp3, opus, aac or pcm."),
    speed: float | None = typer.Option(None, "--speed", help="0.25 to 4.0."),
    verify: bool = typer.Option(False, "--verify", help="Transcribe each file back and add a WER column."),
    verify_model: str = typer.Option("whisper-1", "--verify-model", help="ASR model for --verify."),
    option: list[str] | None = _OPTION,
    device: str = _DEVICE,
    threads: int | None = _THREADS,
    batch_size: int | None = _BATCH,
    ray: bool = _RAY,
    address: str | None = _ADDRESS,
    actors: int | None = _ACTORS,
    actor_cpus: float | None = _ACTOR_CPUS,
    actor_gpus: float | None = _ACTOR_GPUS,
) -> None:
    """Synthesize a manifest of texts into audio files and a manifest (durations, WER with --verify)."""
    from voxbox.audio.encode import FORMATS
    from voxbox.batch.inputs import speak_items
    from voxbox.batch.progress import JobProgress
    from voxbox.batch.store import ResultStore
    from voxbox.batch.work import SpeakJob, TranscribeJob
    from voxbox.cli.common import stderr_console
    from voxbox.errors import BadInputError

    console = stderr_console()
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise BadInputError(f"unsupported audio format {fmt!r}; choose one of: {', '.join(FORMATS)}", param="format")
    if out.exists() and not out.is_dir():
        raise BadInputError(f"--out {out} is a file; give a folder", param="out")
    ray_address = _use_ray(ray, address)
    items = speak_items(manifest)
    if not (out.parent if str(out.parent) else Path(".")).is_dir():
        raise BadInputError(f"cannot create {out}: folder {out.parent} does not exist", param="out")
    out.mkdir(exist_ok=True)
    store = ResultStore(out / "manifest.jsonl", "id")
    done = {k for k in store.done() if (out / str(store.rows[k].get("file") or "")).is_file()}
    todo = [it for it in items if it.id not in done]
    job = SpeakJob(_model_job("tts", engine, model, device, threads, batch_size), _options(option), speed=speed,
                   fmt=fmt)
    _check_options(job.model.entry, job.options)
    vjob = TranscribeJob(_model_job("asr", None, verify_model, device, threads, None)) if verify else None
    progress = JobProgress(console, len(todo), len(items) - len(todo), "synthesized")

    def on_result(record: dict[str, Any], data: bytes | None) -> None:
        if data is not None:
            _write_atomic(out / record["file"], data)
        store.write(record)
        progress.update(record)

    def body() -> None:
        if not todo:
            return
        if ray_address is None:
            from voxbox.batch.local import speak_local

            speak_local(todo, job, vjob, on_result)
        else:
            from voxbox.batch.ray_data import speak_ray

            plan = speak_ray(todo, job, vjob, on_result, address=ray_address or None, actors=actors,
                             cpus=actor_cpus, gpus=actor_gpus, batch=batch_size)
            console.print(f"ray: {plan.describe()}", soft_wrap=True)

    _run(console, progress, store, body)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def register(app: typer.Typer) -> None:
    app.add_typer(batch_app, name="batch")
