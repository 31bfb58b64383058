"""``voxbox transcribe``: audio files (or stdin) to text, JSON or subtitles."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, List, Optional

import typer

from voxbox.cli.common import check_output_dir, check_output_file, cli_entry, cli_runtime, print_timings, stderr_console

_LONG_AUDIO_S = 30.0  # transcriptions at least this long get a progress bar
_RAW_SUFFIXES = (".pcm", ".raw")


def _read_input(src: str, rate: int, input_rate: int | None) -> Any:
    """Decode one input: a file, '-' (stdin bytes), or raw 16-bit mono PCM with --input-rate."""
    from voxbox.audio.decode import decode
    from voxbox.errors import AudioDecodeError, BadInputError
    from voxbox.types import Audio

    name = "stdin" if src == "-" else src
    if src != "-":
        p = Path(src)
        if p.is_dir():
            raise BadInputError(f"{src} is a directory; give audio files", param="file")
        if not p.is_file():
            raise BadInputError(f"no such file: {src}", param="file")
    data: bytes | str = sys.stdin.buffer.read() if src == "-" else src
    raw = input_rate is not None or (src != "-" and Path(src).suffix.lower() in _RAW_SUFFIXES)
    if raw:
        if input_rate is None:
            raise BadInputError(f"{name} looks like raw PCM: pass --input-rate HZ (16-bit mono)", param="input_rate")
        import numpy as np

        buf = data if isinstance(data, bytes) else Path(src).read_bytes()
        samples = np.frombuffer(buf[: len(buf) // 2 * 2], dtype="<i2").astype(np.float32) / 32768.0
        if samples.size == 0:
            raise AudioDecodeError(f"{name}: no samples", param="file")
        from voxbox.audio.resample import resample

        return Audio(resample(samples, input_rate, rate) if input_rate != rate else samples, rate)
    try:
        return decode(data, sample_rate=rate)
    except AudioDecodeError as exc:
        hint = " (raw PCM? pass --input-rate HZ)" if "recognised" in str(exc) else ""
        raise type(exc)(f"{name}: {exc}{hint}", param="file") from exc


def transcribe(
    files: List[str] = typer.Argument(..., help="Audio files (wav, mp3, flac, ogg, m4a, webm...), or '-' for stdin."),
    fmt: str = typer.Option("text", "--format", "-f", help="text, json, verbose_json, srt or vtt."),
    output: Optional[Path] = typer.Option(
        None, "-o", "--output", help="Output file (one input) or existing folder (several). Default: stdout."
    ),
    word_timestamps: bool = typer.Option(
        False, "--word-timestamps", help="Word-level timestamps (verbose_json words)."
    ),
    language: Optional[str] = typer.Option(None, "--language", "-l", help="Spoken language code (default: detect)."),
    engine: Optional[str] = typer.Option(None, "--engine", "-e", help="ASR engine (default faster-whisper)."),
    model: Optional[str] = typer.Option(None, "--model", "-m", help="tiny.en (bundled), base, or a model directory."),
    task: str = typer.Option("transcribe", "--task", help="transcribe or translate (to English)."),
    prompt: Optional[str] = typer.Option(None, "--prompt", help="Initial prompt (spellings, context)."),
    beam_size: Optional[int] = typer.Option(None, "--beam-size", min=1, help="Beam size (default 5)."),
    temperature: Optional[float] = typer.Option(
        None, "--temperature", help="Fixed temperature (default: 0 with fallback)."
    ),
    vad: bool = typer.Option(True, "--vad/--no-vad", help="Skip silence and music with Silero VAD first (default on)."),
    batch_size: Optional[int] = typer.Option(None, "--batch-size", min=1, help="Batched pipeline for long audio (>1)."),
    input_rate: Optional[int] = typer.Option(
        None, "--input-rate", min=1000, help="Input is raw 16-bit mono PCM at this rate."
    ),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    threads: Optional[int] = typer.Option(None, "--threads", min=1, help="CPU threads for the engine."),
    timings: bool = typer.Option(False, "--timings", help="Print per-stage timings to stderr."),
) -> None:
    """Transcribe audio files to text, JSON or subtitles."""
    from voxbox.errors import BadInputError
    from voxbox.formats import FORMATS

    console = stderr_console()
    fmt = fmt.lower()
    if fmt not in FORMATS:
        raise BadInputError(f"unknown format {fmt!r}; choose one of: {', '.join(FORMATS)}", param="format")
    for f in files:
        if f != "-" and Path(f).is_dir():
            raise BadInputError(f"{f} is a directory; give audio files", param="file")
        if f != "-" and not Path(f).is_file():
            raise BadInputError(f"no such file: {f}", param="file")
    if files.count("-") > 1:
        raise BadInputError("stdin ('-') can be read once", param="file")
    several = len(files) > 1
    if output is not None:
        (check_output_dir if several else check_output_file)(output)
    values: dict[str, Any] = {"beam_size": beam_size, "temperature": temperature, "batch_size": batch_size}
    entry = cli_entry("asr", engine, model)
    docs: list[Any] = []
    with cli_runtime(device, threads) as rt, rt.acquire(entry) as work:
        options = work.spec.make_options({k: v for k, v in values.items() if v is not None})
        rate = work.engine.info.sample_rate or 16000
        for src in files:
            body, parsed = _one(rt, work, src, rate, input_rate, options, fmt, language, prompt, word_timestamps,
                                task, timings, console, vad)
            if output is None and several and fmt in ("json", "verbose_json"):
                docs.append({"file": "stdin" if src == "-" else src, **parsed})
            elif output is None:
                if several:
                    sys.stdout.write(f"==> {src} <==\n")
                sys.stdout.write(body)
                sys.stdout.flush()
            else:
                ext = {"verbose_json": "json", "text": "txt"}.get(fmt, fmt)
                dest = output / f"{Path(src).stem if src != '-' else 'stdin'}.{ext}" if several else output
                dest.write_text(body, encoding="utf-8")
                console.print(f"wrote {dest}")
    if docs:
        sys.stdout.write(json.dumps(docs, ensure_ascii=False, indent=2) + "\n")


def _one(rt: Any, work: Any, src: str, rate: int, input_rate: int | None, options: Any, fmt: str,
         language: str | None, prompt: str | None, words: bool, task: str, timings: bool,
         console: Any, vad: bool) -> tuple[str, Any]:
    """Transcribe one input; (formatted body, parsed JSON body or None)."""
    from voxbox.formats import format_transcript
    from voxbox.runtime.vad import transcribe_speech

    t0 = time.perf_counter()
    audio = _read_input(src, rate, input_rate)
    decode_s = time.perf_counter() - t0
    if vad:
        segments, info = transcribe_speech(work.engine, audio, language, prompt, words, task, options,
                                           cancel=work.cancel)
    else:
        segments, info = work.engine.transcribe(audio, language, prompt, words, task, options, cancel=work.cancel)
    collected = []
    if info.duration >= _LONG_AUDIO_S:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.percentage:>3.0f}%"),
                      TimeElapsedColumn(), console=console, transient=True, disable=not console.is_terminal) as bar:
            job = bar.add_task(Path(src).name if src != "-" else "stdin", total=info.duration)
            for seg in rt.iterate(work, lambda: segments):
                collected.append(seg)
                bar.update(job, completed=min(seg.end, info.duration))
    else:
        collected = list(rt.iterate(work, lambda: segments))
    body = format_transcript(collected, info, fmt, words=words)
    if timings:
        print_timings(console, f"{src} stages", {"decode_audio": decode_s, **info.timings.as_dict()},
                      time.perf_counter() - t0, work.load_seconds)
    return body, (json.loads(body) if fmt in ("json", "verbose_json") else None)


def vad(
    file: str = typer.Argument(..., help="Audio file (wav, mp3, flac, ogg, m4a, webm...), or '-' for stdin."),
    fmt: str = typer.Option("text", "--format", "-f", help="text (one region a line) or json (milliseconds)."),
    threshold: float = typer.Option(0.5, "--threshold", help="Speech probability threshold (0-1)."),
    min_silence_ms: int = typer.Option(1000, "--min-silence-ms", min=0, help="Silence that ends a region, ms."),
    min_speech_ms: int = typer.Option(250, "--min-speech-ms", min=0, help="Shorter speech is dropped, ms."),
    speech_pad_ms: int = typer.Option(400, "--speech-pad-ms", min=0, help="Audio kept around each region, ms."),
    input_rate: Optional[int] = typer.Option(None, "--input-rate", min=1000,
                                             help="Input is raw 16-bit mono PCM at this rate."),
) -> None:
    """Print where the speech is in an audio file (Silero VAD)."""
    from voxbox.audio.vad import VadOptions, speech_timestamps
    from voxbox.errors import BadInputError

    if fmt not in ("text", "json"):
        raise BadInputError(f"unknown format {fmt!r}; choose text or json", param="format")
    opts = VadOptions(threshold=threshold, min_silence_ms=min_silence_ms, min_speech_ms=min_speech_ms,
                      speech_pad_ms=speech_pad_ms).check()
    audio = _read_input(file, 16000, input_rate)
    spans = speech_timestamps(audio, opts)
    if fmt == "json":
        regions = [{"start": int(round(s.start * 1000)), "end": int(round(s.end * 1000))} for s in spans]
        sys.stdout.write(json.dumps(regions) + "\n")
        return
    for s in spans:
        sys.stdout.write(f"{s.start:.3f}\t{s.end:.3f}\n")
    speech = sum(s.duration for s in spans)
    stderr_console().print(f"{len(spans)} speech region(s), {speech:.2f} s of {audio.duration:.2f} s")


def register(app: typer.Typer) -> None:
    app.command()(transcribe)
    app.command()(vad)
