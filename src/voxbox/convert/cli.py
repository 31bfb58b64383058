"""``voxbox convert`` (registered on the main app by ``register(app)``; no heavy imports here)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def convert(
    src: Annotated[
        Path, typer.Argument(help="Hugging Face Whisper checkpoint directory (config.json, *.safetensors, tokenizer).")
    ],
    out: Annotated[Path, typer.Argument(help="Output directory for the converted model.")],
    to: Annotated[
        str,
        typer.Option(
            "--to", help="Target format: ct2 (CTranslate2 / faster-whisper), onnx (ONNX Runtime) or ggml (whisper.cpp)."
        ),
    ],
    quantization: Annotated[
        str | None,
        typer.Option(
            "--quantization",
            "--quantize",
            "-q",
            help="ct2: int8, int8_float16, int8_bfloat16, float16 (default), bfloat16, float32. "
            "onnx: float32 (default) or int8 (dynamic int8 quantization). ggml: float16 (default) or float32.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite OUT if it exists.")] = False,
    verify_: Annotated[
        bool,
        typer.Option("--verify/--no-verify", help="Transcribe a verification set with source and target (default on)."),
    ] = True,
    verify_audio: Annotated[
        list[Path] | None,
        typer.Option(
            "--verify-audio", help="Audio file for verification (repeatable); default: the bundled recordings."
        ),
    ] = None,
    max_wer: Annotated[
        float, typer.Option("--max-wer", help="Fail (exit 1) when the WER between source and target exceeds this.")
    ] = 0.05,
    device: Annotated[
        str, typer.Option("--device", help="Device for verification: cpu, cuda[:N], rocm, auto.")
    ] = "cpu",
    json_out: Annotated[
        bool, typer.Option("--json", help="Print the manifest (with the verification report) as JSON.")
    ] = False,
) -> None:
    """Convert a fine-tuned Whisper to CTranslate2, ONNX or ggml, then verify it transcribes like the source."""
    from voxbox.convert.pipeline import run_convert

    run_convert(src, out, to=to, quantization=quantization, force=force, verify=verify_,
                verify_audio=verify_audio or None, max_wer=max_wer, device=device, json_out=json_out,
                quiet_transformers=True)


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)
