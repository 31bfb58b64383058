"""The ``voxbox`` command line (typer + rich).

Core commands (speak, transcribe, engines) live here; each other area contributes its commands
through a ``register(app)`` function in its own ``cli`` module (``voxbox.server.cli`` adds
``serve``, ``voxbox.hardware.cli`` adds ``doctor``, ``voxbox.bench.cli`` adds ``bench``,
``voxbox.convert.cli`` adds ``convert``), imported at start-up but free of heavy imports.

Errors print one line to stderr and exit non-zero; ``--debug`` shows the traceback.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any, List, Optional

import typer

app = typer.Typer(
    name="voxbox",
    help="Local text-to-speech and speech-to-text that runs fast on the hardware you have.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

_STATE = {"debug": False}

_AREA_CLIS = ("voxbox.server.cli", "voxbox.hardware.cli", "voxbox.bench.cli", "voxbox.convert.cli")


@app.callback()
def _root(debug: bool = typer.Option(False, "--debug", help="Show full tracebacks on errors.")) -> None:
    _STATE["debug"] = debug


def _register_areas() -> None:
    for name in _AREA_CLIS:
        try:
            mod = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue  # area not built yet
            raise
        mod.register(app)


# --- core commands: speak, transcribe, engines -------------------------------------------------

_DEFAULT_TTS_ENGINE = "hibari"
_DEFAULT_ASR_ENGINE = "faster-whisper"
_LONG_AUDIO_S = 30.0  # transcriptions at least this long get a progress bar


def _stderr_console() -> "Any":
    from rich.console import Console

    return Console(stderr=True, highlight=False)


def _resolve_engine(task: str, engine: str | None, model: str | None) -> tuple[str, str | None]:
    """(engine name, model for its load()) from --engine/--model; a bare model id goes to the default engine."""
    from voxbox.engines.registry import resolve_model
    from voxbox.errors import ModelNotFoundError

    try:
        return resolve_model(model, task, engine)  # type: ignore[arg-type]
    except ModelNotFoundError:
        if engine is None and model:
            return (_DEFAULT_TTS_ENGINE if task == "tts" else _DEFAULT_ASR_ENGINE), model
        raise


def _load(task: str, engine: str | None, model: str | None, device: str, threads: int | None) -> "Any":
    from voxbox.engines.registry import load_engine

    name, sub = _resolve_engine(task, engine, model)
    kwargs: dict[str, Any] = {"device": device}
    if threads:
        kwargs["threads"] = threads
    return load_engine(name, sub, **kwargs)


def _print_timings(console: "Any", label: str, timings: dict[str, float], wall: float) -> None:
    parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in timings.items())
    console.print(f"[dim]{label}: {parts}; stages {sum(timings.values()) * 1000:.0f} ms of {wall * 1000:.0f} ms wall[/]")


def _patch_wav_sizes(path: "Path", total_bytes: int) -> None:
    """A streamed WAV has 'unknown length' sizes; a finished file gets the real ones."""
    import struct

    if total_bytes < 44:
        return
    with open(path, "r+b") as f:
        f.seek(4)
        f.write(struct.pack("<I", min(total_bytes - 8, 0xFFFFFFFF)))
        f.seek(40)
        f.write(struct.pack("<I", min(total_bytes - 44, 0xFFFFFFFF)))


@app.command()
def speak(
    text: str = typer.Argument(..., help="Text to speak, or '-' to read it from stdin."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file ('-' for stdout). Default: speech.<format>."),
    fmt: Optional[str] = typer.Option(None, "--format", "-f", help="wav, mp3, flac, opus, aac or pcm (default: from -o's suffix, else wav)."),
    engine: Optional[str] = typer.Option(None, "--engine", "-e", help="TTS engine (default hibari; see `voxbox engines`)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", "--model-dir", help="Model id or path (a local model directory) for the engine."),
    voice: Optional[str] = typer.Option(None, "--voice", "-v", help="Voice name (engine voices or OpenAI names like alloy)."),
    speed: Optional[float] = typer.Option(None, "--speed", help="0.25 to 4.0 (1.0 = normal)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the engine."),
    timings: bool = typer.Option(False, "--timings", help="Print per-stage timings to stderr."),
    normalize: bool = typer.Option(True, "--normalize/--no-normalize",
                                   help="Write out numbers, money, dates, units... before speaking (English hibari/piper)."),
) -> None:
    """Speak TEXT into an audio file, writing each sentence as soon as it is synthesized."""
    import time

    from voxbox.audio.encode import FORMATS, StreamEncoder
    from voxbox.errors import BadInputError

    console = _stderr_console()
    t0 = time.perf_counter()
    if text == "-":
        text = sys.stdin.read()
    to_stdout = output is not None and str(output) == "-"
    if fmt is None:
        suffix = output.suffix.lower().lstrip(".") if output is not None and not to_stdout else ""
        fmt = {"ogg": "opus", "m4a": "aac", "raw": "pcm"}.get(suffix, suffix) or "wav"
        if fmt not in FORMATS:
            raise BadInputError(f"cannot tell the audio format from {output}; pass --format ({', '.join(FORMATS)})",
                                param="format")
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise BadInputError(f"unsupported audio format {fmt!r}; choose one of: {', '.join(FORMATS)}", param="format")
    if output is None:
        output = Path(f"speech.{fmt}")
    if not to_stdout and output.is_dir():
        raise BadInputError(f"{output} is a directory; give a file name with -o", param="output")

    tts = _load("tts", engine, model, device, threads)
    extra = {} if normalize else {"normalize": False}
    stream = tts.stream(text, voice=voice, speed=speed, **extra)  # validates before any output is opened
    encoder = StreamEncoder(fmt, stream.sample_rate)
    total = 0
    n_samples = 0
    ok = False
    out = sys.stdout.buffer if to_stdout else open(output, "wb")
    try:
        for chunk in stream:
            data = encoder.feed(chunk.samples)
            n_samples += len(chunk.samples)
            if data:
                out.write(data)
                out.flush()
                total += len(data)
        tail = encoder.close()
        if tail:
            out.write(tail)
            total += len(tail)
        out.flush()
        ok = True
    finally:
        if not to_stdout:
            out.close()
            if not ok:
                try:
                    output.unlink()
                except OSError:
                    pass
        stream.close()
    if fmt == "wav" and not to_stdout:
        _patch_wav_sizes(output, total)
    wall = time.perf_counter() - t0
    secs = n_samples / stream.sample_rate
    where = "stdout" if to_stdout else str(output)
    console.print(f"wrote {where}: {secs:.2f} s of audio ({fmt}, {stream.sample_rate} Hz, {tts.info.name}) in {wall:.2f} s")
    if timings:
        _print_timings(console, "stages", stream.timings.as_dict(), wall)
    tts.close()


@app.command()
def transcribe(
    files: List[Path] = typer.Argument(..., help="Audio files (wav, mp3, flac, ogg, m4a, webm...)."),
    fmt: str = typer.Option("text", "--format", "-f", help="text, json, verbose_json, srt or vtt."),
    output: Optional[Path] = typer.Option(None, "-o", "--output", help="Output file (one input) or directory (several). Default: stdout."),
    word_timestamps: bool = typer.Option(False, "--word-timestamps", help="Word-level timestamps (verbose_json words)."),
    language: Optional[str] = typer.Option(None, "--language", "-l", help="Spoken language code (default: detect)."),
    engine: Optional[str] = typer.Option(None, "--engine", "-e", help="ASR engine (default faster-whisper)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="tiny.en (bundled), base, or a model directory."),
    task: str = typer.Option("transcribe", "--task", help="transcribe or translate (to English)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Initial prompt (spellings, context)."),
    beam_size: Optional[int] = typer.Option(None, "--beam-size", help="Beam size (default 5)."),
    temperature: Optional[float] = typer.Option(None, "--temperature", help="Fixed temperature (default: 0 with fallback)."),
    vad: bool = typer.Option(False, "--vad/--no-vad", help="Skip silence with the Silero VAD filter."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", help="Batched pipeline for long audio (>1)."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", help="CPU threads for the engine."),
    timings: bool = typer.Option(False, "--timings", help="Print per-stage timings to stderr."),
) -> None:
    """Transcribe audio files to text, JSON or subtitles."""
    import time

    from voxbox.audio.decode import decode
    from voxbox.errors import BadInputError
    from voxbox.formats import FORMATS, format_transcript

    console = _stderr_console()
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise BadInputError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}", param="format")
    for f in files:
        if not f.is_file():
            raise BadInputError(f"no such file: {f}", param="file")
    several = len(files) > 1
    if output is not None and several:
        if output.exists() and not output.is_dir():
            raise BadInputError(f"-o must be a directory when transcribing several files ({output} is a file)",
                                param="output")
        output.mkdir(parents=True, exist_ok=True)
    ext = {"verbose_json": "json"}.get(fmt, "txt" if fmt == "text" else fmt)

    options: dict[str, Any] = {}
    if beam_size is not None:
        options["beam_size"] = beam_size
    if temperature is not None:
        options["temperature"] = temperature
    if vad:
        options["vad_filter"] = True
    if batch_size is not None:
        options["batch_size"] = batch_size

    asr = _load("asr", engine, model, device, threads)
    rate = asr.info.sample_rate or 16000
    for path in files:
        t0 = time.perf_counter()
        audio = decode(str(path), sample_rate=rate)
        decode_s = time.perf_counter() - t0
        segments, info = asr.transcribe(audio, language=language, prompt=prompt, word_timestamps=word_timestamps,
                                        task=task, **options)
        collected = []
        if info.duration >= _LONG_AUDIO_S:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                          TimeElapsedColumn(), console=console, transient=True) as bar:
                job = bar.add_task(path.name, total=info.duration)
                for seg in segments:
                    collected.append(seg)
                    bar.update(job, completed=min(seg.end, info.duration))
        else:
            collected = list(segments)
        body = format_transcript(collected, info, fmt, words=word_timestamps)
        wall = time.perf_counter() - t0
        if output is None:
            if several:
                sys.stdout.write(f"==> {path} <==\n")
            sys.stdout.write(body)
            sys.stdout.flush()
        else:
            dest = output / f"{path.stem}.{ext}" if several else output
            dest.write_text(body, encoding="utf-8")
            console.print(f"wrote {dest} ({info.duration:.1f} s of audio in {wall:.2f} s)")
        if timings:
            _print_timings(console, f"{path.name} stages", {"decode_audio": decode_s, **info.timings.as_dict()}, wall)
    asr.close()


@app.command()
def engines(
    as_json: bool = typer.Option(False, "--json", help="Print JSON instead of a table."),
) -> None:
    """List engines with their models, voices, availability and the reason when unavailable."""
    import importlib as _importlib
    import importlib.util
    import json as _json

    from voxbox.engines.registry import ENGINES, available

    rows = []
    for spec in ENGINES.values():
        ok, reason = available(spec)
        models: list[str] = []
        voices: list[str] = []
        if ok and spec.default_model is None:
            # Engines that need a local model directory: do not import their (heavy) backends here.
            try:
                built = _importlib.util.find_spec(spec.module) is not None
            except (ImportError, ValueError):
                built = False
            if not built:
                ok, reason = False, f"not built yet ({spec.module})"
        elif ok:
            try:
                mod = _importlib.import_module(spec.module)
                if hasattr(mod, "models"):
                    models = list(mod.models())
                if hasattr(mod, "voices"):
                    voices = list(mod.voices())
                if spec.default_model and not models:
                    ok, reason = False, "installed, but its bundled model is missing"
            except ModuleNotFoundError as exc:
                ok, reason = False, f"not built yet ({exc.name})" if exc.name == spec.module else f"missing {exc.name}"
            except Exception as exc:  # noqa: BLE001 - one broken engine must not hide the others
                ok, reason = False, f"{type(exc).__name__}: {' '.join(str(exc).split())}"
        rows.append({
            "engine": spec.name, "task": spec.task, "available": ok, "reason": reason,
            "default_model": spec.default_model, "models": models, "voices": voices,
            "aliases": list(spec.aliases), "description": spec.description,
        })
    if as_json:
        print(_json.dumps(rows, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="voxbox engines")
    for col in ("engine", "task", "models", "voices", "available", "reason"):
        table.add_column(col, overflow="fold")
    for r in rows:
        table.add_row(r["engine"], r["task"], ", ".join(r["models"]) or "-", ", ".join(r["voices"]) or "-",
                      "[green]yes[/]" if r["available"] else "[red]no[/]", r["reason"])
    Console().print(table)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point: run the app, turning VoxboxError into one line + exit 1."""
    from voxbox.errors import VoxboxError

    _register_areas()
    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    try:
        app(args=argv, standalone_mode=False)
    except VoxboxError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        raise SystemExit(1) from None
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        raise SystemExit(130) from None
    except SystemExit:
        raise
    except Exception as exc:  # click usage errors and unexpected failures: still one line
        import click

        if isinstance(exc, click.exceptions.Exit):
            raise SystemExit(exc.exit_code) from None
        if isinstance(exc, click.ClickException):
            exc.show()
            raise SystemExit(exc.exit_code) from None
        if isinstance(exc, click.exceptions.Abort):
            print("error: aborted", file=sys.stderr)
            raise SystemExit(1) from None
        if debug:
            raise
        print(f"error: {type(exc).__name__}: {' '.join(str(exc).split())}", file=sys.stderr)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
