"""``voxbox speak``: text to an audio file (or stdout), written chunk by chunk as it is synthesized."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, Optional

import typer

from voxbox.cli.common import check_output_file, cli_entry, cli_runtime, print_timings, stderr_console

#: Output suffixes that name another format than their own.
_SUFFIX_FORMATS = {"ogg": "opus", "raw": "pcm", "mp4": "m4a"}


def _format_for(output: Optional[Path], fmt: Optional[str], to_stdout: bool) -> str:
    from voxbox.audio.encode import FILE_FORMATS, FORMATS
    from voxbox.errors import BadInputError

    allowed = FORMATS if to_stdout else FILE_FORMATS  # m4a needs a seekable file

    suffix = output.suffix.lower().lstrip(".") if output is not None and not to_stdout else ""
    implied = _SUFFIX_FORMATS.get(suffix, suffix) or None
    if fmt is None:
        fmt = implied or "wav"
        if fmt not in allowed:
            raise BadInputError(f"cannot tell the audio format from {output}; pass --format ({', '.join(allowed)})",
                                param="format")
    fmt = fmt.lower()
    if fmt not in allowed:
        raise BadInputError(f"unsupported audio format {fmt!r}; choose one of: {', '.join(allowed)}", param="format")
    if implied in FILE_FORMATS and implied != fmt:
        raise BadInputError(f"{output} says {implied} but --format is {fmt}; rename the file or drop --format",
                            param="format")
    return fmt


def speak(
    text: str = typer.Argument(..., help="Text to speak, or '-' to read it from stdin."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Output file ('-' for stdout). Default: speech.<format>."
    ),
    fmt: Optional[str] = typer.Option(
        None, "--format", "-f", help="wav, mp3, flac, opus, aac or pcm (default: from -o's suffix, else wav)."
    ),
    engine: Optional[str] = typer.Option(
        None, "--engine", "-e", help="TTS engine (default hibari; see `voxbox engines`)."
    ),
    model: Optional[str] = typer.Option(
        None, "--model", "-m", "--model-dir", help="Model id or path (a local model directory) for the engine."
    ),
    voice: Optional[str] = typer.Option(
        None, "--voice", "-v", help="Voice name (engine voices or OpenAI names like alloy)."
    ),
    speed: Optional[float] = typer.Option(None, "--speed", help="0.25 to 4.0 (1.0 = normal)."),
    voice_description: Optional[str] = typer.Option(
        None,
        "--voice-description",
        help="Design a voice from a description, e.g. 'female, british accent' "
        "(engines with voice design, such as omnivoice).",
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for the engine."),
    timings: bool = typer.Option(False, "--timings", help="Print per-stage timings to stderr."),
    normalize: bool = typer.Option(
        True, "--normalize/--no-normalize",
        help="Write out numbers, money, dates, units... before speaking (English hibari/piper).",
    ),
) -> None:
    """Speak TEXT into an audio file, writing each sentence as soon as it is synthesized."""
    console = stderr_console()
    t0 = time.perf_counter()
    if text == "-":
        text = sys.stdin.read()
    to_stdout = output is not None and str(output) == "-"
    fmt = _format_for(output, fmt, to_stdout)
    if output is None:
        output = Path(f"speech.{fmt}")
    if not to_stdout:
        check_output_file(output)
    entry = cli_entry("tts", engine, model)
    with cli_runtime(device, threads) as rt, rt.acquire(entry) as work:
        values: dict = {} if normalize else {"normalize": False}
        if voice_description:
            values["voice_description"] = voice_description
        options = work.spec.make_options(values)
        stream = work.engine.stream(text, voice, speed, options, cancel=work.cancel)  # validates before any output
        n_samples, total = _write(rt, work, stream, fmt, output, to_stdout, console)
        load = work.load_seconds
        name = work.engine.info.name
    wall = time.perf_counter() - t0
    where = "stdout" if to_stdout else str(output)
    console.print(f"wrote {where}: {n_samples / stream.sample_rate:.2f} s of audio ({fmt}, {stream.sample_rate} Hz, "
                  f"{name}) in {wall:.2f} s")
    if timings:
        print_timings(console, "stages", stream.timings.as_dict(), wall, load)


def _write(rt: Any, work: Any, stream: Any, fmt: str, output: Path, to_stdout: bool, console: Any) -> tuple[int, int]:
    """Encode and write every chunk as it comes; progress on stderr for long inputs."""
    from rich.progress import Progress, TextColumn, TimeElapsedColumn

    from voxbox.audio.encode import StreamEncoder

    n_samples = total = 0
    ok = False
    out: Any = sys.stdout.buffer if to_stdout else open(output, "w+b")
    # to a file, the muxer seeks back at the end (WAV sizes, FLAC totals, mp3 LAME header, m4a index)
    encoder = StreamEncoder(fmt, stream.sample_rate, file=None if to_stdout else out)
    try:
        with Progress(TextColumn("{task.description}"), TimeElapsedColumn(), console=console, transient=True,
                      disable=not console.is_terminal) as bar:
            job = bar.add_task("speaking...", total=None)
            for chunk in rt.iterate(work, lambda: stream):
                n_samples += len(chunk.samples)
                bar.update(
                    job, description=f"{chunk.index + 1} sentence(s), {n_samples / stream.sample_rate:.1f} s of audio"
                )
                data = encoder.feed(chunk.samples)
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
        if not ok:
            encoder.abort()
        if not to_stdout:
            out.close()
            if not ok:
                output.unlink(missing_ok=True)
    return n_samples, total


def register(app: typer.Typer) -> None:
    app.command()(speak)
