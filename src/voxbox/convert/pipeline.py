"""The ``voxbox convert`` pipeline: validate -> convert -> manifest -> verify.

Every argument is checked before anything heavy is imported or written, so a wrong target,
quantization, source directory or an existing output directory fails in well under a second
with one line.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from voxbox.convert.manifest import (
    checkpoint_sha256,
    dir_size,
    read_manifest,
    update_manifest,
    write_manifest,
)
from voxbox.convert.whisper import (
    CT2_QUANTIZATIONS,
    convert_ct2,
    inspect_checkpoint,
    prepare_output_dir,
)
from voxbox.errors import BadInputError

__all__ = ["ONNX_CHOICES", "TARGETS", "run_convert"]

TARGETS = ("ct2", "onnx", "ggml")
ONNX_CHOICES = ("float32", "int8")
GGML_CHOICES = ("float16", "float32")
GGML_FILE = "ggml-model.bin"
DEFAULT_CT2 = "float16"


def _say(msg: str) -> None:
    print(f"... {msg}", file=sys.stderr, flush=True)


def check_args(to: str, quantization: str | None, max_wer: float) -> tuple[str, str]:
    target = (to or "").strip().lower()
    if target in ("ctranslate2", "faster-whisper"):
        target = "ct2"
    if target in ("whisper.cpp", "whisper-cpp", "whispercpp"):
        target = "ggml"
    if target not in TARGETS:
        raise BadInputError(f"unknown target {to!r}; use --to ct2, --to onnx or --to ggml", param="to")
    q = (quantization or "").strip().lower() or None
    if target == "ggml":
        q = {"f16": "float16", "fp16": "float16", "f32": "float32", "fp32": "float32"}.get(q or "", q) or "float16"
        if q not in GGML_CHOICES:
            raise BadInputError(f"unknown quantization {quantization!r} for --to ggml; use float16 (default) or "
                                "float32 (whisper.cpp's quantize tool makes q5/q8 files from these)",
                                param="quantization")
    elif target == "ct2":
        q = q or DEFAULT_CT2
        if q not in CT2_QUANTIZATIONS:
            raise BadInputError(f"unknown quantization {quantization!r} for --to ct2; choose one of "
                                f"{', '.join(CT2_QUANTIZATIONS)}", param="quantization")
    else:
        q = q or "float32"
        if q in ("fp32", "none"):
            q = "float32"
        if q not in ONNX_CHOICES:
            raise BadInputError(f"unknown quantization {quantization!r} for --to onnx; use --quantize int8 "
                                "(or float32, the default)", param="quantization")
    if not max_wer >= 0.0:  # also rejects NaN; WER can exceed 1 (insertions), so no upper bound
        raise BadInputError(f"--max-wer must be 0 or more, got {max_wer}", param="max_wer")
    return target, q


def _quiet_transformers() -> None:
    """No transformers progress bars or advisory warnings (for one-line CLI output)."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _convert_onnx(ckpt, out: Path, quantization: str) -> dict[str, Any]:
    from voxbox.convert.onnx_export import (
        copy_files,
        export_onnx,
        quantize_onnx_dir,
        write_onnx_config,
    )

    if quantization == "int8":
        with tempfile.TemporaryDirectory(prefix="voxbox-onnx-") as tmp:
            info = export_onnx(ckpt.path, Path(tmp))
            out.mkdir(parents=True)
            quantize_onnx_dir(Path(tmp), out)
    else:
        info = export_onnx(ckpt.path, out)
    write_onnx_config(out, info, ckpt.config, ckpt.generation_config, ckpt.special_ids, quantization)
    copy_files(ckpt.tokenizer_files, out)
    gen = ckpt.path / "generation_config.json"
    if gen.is_file():
        shutil.copy2(gen, out / "generation_config.json")
    return info


def _convert(ckpt: Any, out: Path, target: str, quantization: str) -> dict[str, Any]:
    """Write the converted model to ``out`` (removed again on any failure); returns manifest extras."""
    t0 = time.perf_counter()
    extra: dict[str, Any] = {}
    try:
        if target == "ct2":
            convert_ct2(ckpt, out, quantization)
        elif target == "ggml":
            from voxbox.convert.ggml import ggml_from_hf

            out.mkdir(parents=True)
            ggml_from_hf(ckpt.path, out / GGML_FILE, use_f16=quantization == "float16")
            for f in ckpt.tokenizer_files:
                if f.name == "tokenizer.json":
                    shutil.copy2(f, out / f.name)
        else:
            info = _convert_onnx(ckpt, out, quantization)
            extra["onnx"] = {k: info[k] for k in ("n_layers", "n_heads", "d_model", "n_mels", "vocab_size")}
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    extra["convert_seconds"] = round(time.perf_counter() - t0, 2)
    return extra


def run_convert(src: Path, out: Path, *, to: str, quantization: str | None = None, force: bool = False,
                verify: bool = True, verify_audio: list[Path] | None = None, max_wer: float = 0.05,
                device: str = "cpu", json_out: bool = False, log=_say, quiet_transformers: bool = False
                ) -> dict[str, Any]:
    """Check, convert, write the manifest, verify. ``quiet_transformers``: silence transformers'
    logging and progress bars once the arguments are checked (the CLI asks for it; the library
    leaves transformers' settings to its caller otherwise)."""
    target, q = check_args(to, quantization, max_wer)
    ckpt = inspect_checkpoint(src)
    out = prepare_output_dir(out, force=force, src=ckpt.path)
    if verify and verify_audio:
        for f in verify_audio:
            if not Path(f).is_file():
                raise BadInputError(f"verification audio {f} does not exist", param="verify_audio")
    if verify and not verify_audio:
        from voxbox.convert.verify import default_verify_audio

        verify_audio = default_verify_audio()

    log(f"hashing {ckpt.path}")
    files = ckpt.files_for_hash()
    digest = checkpoint_sha256(ckpt.path, files)
    log(f"converting to {target} ({q})")
    if quiet_transformers:
        _quiet_transformers()
    extra = _convert(ckpt, out, target, q)
    source_size = sum(f.stat().st_size for f in files)
    extra["source_size_bytes"] = source_size
    write_manifest(out, source=ckpt.path, source_sha256=digest, source_files=len(files), target=target,
                   quantization=q, extra=extra)
    target_size = dir_size(out)
    print(f"converted {ckpt.path} -> {out} ({target}, {q}) in {extra['convert_seconds']:.1f} s; "
          f"{_mb(source_size)} -> {_mb(target_size)}")

    report = None
    if verify:
        from voxbox.convert.verify import VerificationFailedError
        from voxbox.convert.verify import verify as run_verify

        report = run_verify(ckpt.path, out, target=target, quantization=q, audio_files=verify_audio, max_wer=max_wer,
                            device=device, source_size=source_size, target_size=target_size, log=log)
        update_manifest(out, verification=report.as_dict())
        _print_report(report)
    manifest = read_manifest(out)
    if json_out:
        print(json.dumps(manifest, indent=2))
    if report is not None and not report.passed:
        raise VerificationFailedError(
            f"verification failed: WER {report.wer:.3f} between source and {target} exceeds --max-wer {max_wer:g} "
            f"(the converted model is kept in {out}; its manifest has the transcripts)"
        )
    return manifest


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _print_report(r) -> None:
    s, t = r.source, r.target
    print(f"verification on {len(r.files)} file(s), {s.audio_seconds:.1f} s of audio:")
    print(
        f"  source  {s.engine:<15} {s.device:<8} {s.dtype!s:<14} {s.seconds:7.2f} s  "
        f"RTF {s.rtf:.3f}  {_mb(s.size_bytes)}"
    )
    print(
        f"  target  {t.engine:<15} {t.device:<8} {t.dtype!s:<14} {t.seconds:7.2f} s  "
        f"RTF {t.rtf:.3f}  {_mb(t.size_bytes)}"
    )
    ratio = t.size_bytes / s.size_bytes if s.size_bytes else 0.0
    print(f"  WER target vs source: {r.wer:.4f} (max {r.max_wer:g}) -> {'PASS' if r.passed else 'FAIL'}; "
          f"speed x{r.speedup:.2f} vs source; size x{ratio:.2f}")
