"""Whisper checkpoints: recognise a Hugging Face Whisper directory and convert it to CTranslate2.

The CTranslate2 conversion is CTranslate2's own ``TransformersConverter`` (the same code path as
``ct2-transformers-converter``); voxbox only validates the source, picks the files the runtime
needs next to ``model.bin`` and writes a manifest.

Heavy imports (transformers, torch, ctranslate2) happen inside functions, never at import time.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from voxbox.errors import (
    BadInputError,
    EngineUnavailableError,
    ModelLoadError,
    NotFoundError,
)

__all__ = [
    "CT2_QUANTIZATIONS",
    "TOKENIZER_FILES",
    "WhisperCheckpoint",
    "convert_ct2",
    "inspect_checkpoint",
    "prepare_output_dir",
]

#: Quantizations ``--to ct2`` accepts (CTranslate2 compute types stored in model.bin).
CT2_QUANTIZATIONS = ("int8", "int8_float16", "int8_bfloat16", "float16", "bfloat16", "float32")

#: Tokenizer / preprocessor files copied next to a converted model when the source has them.
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "vocab.json",
    "merges.txt",
    "normalizer.json",
    "added_tokens.json",
    "special_tokens_map.json",
    "preprocessor_config.json",
)

_WEIGHT_PATTERNS = (
    "*.safetensors", "pytorch_model*.bin", "model*.safetensors.index.json", "pytorch_model.bin.index.json",
)

CONVERT_HINT = "pip install 'voxbox[convert]' (transformers, onnx, onnxruntime) and torch"


class NotAWhisperCheckpointError(BadInputError):
    """The source directory is not a Hugging Face Whisper checkpoint."""


@dataclass
class WhisperCheckpoint:
    """What voxbox needs to know about a source checkpoint, read from its JSON files only."""

    path: Path
    config: dict[str, Any]
    generation_config: dict[str, Any]
    weight_files: list[Path]
    tokenizer_files: list[Path]
    has_fast_tokenizer: bool
    special_ids: dict[str, int] = field(default_factory=dict)

    @property
    def vocab_size(self) -> int:
        return int(self.config.get("vocab_size", 0))

    @property
    def num_mel_bins(self) -> int:
        return int(self.config.get("num_mel_bins", 80))

    @property
    def is_multilingual(self) -> bool:
        return self.vocab_size >= 51865  # as openai-whisper decides; English-only models have 51864

    def files_for_hash(self) -> list[Path]:
        names = {"config.json", "generation_config.json", "preprocessor_config.json"}
        files = [self.path / n for n in sorted(names) if (self.path / n).is_file()]
        return sorted(set(files) | set(self.weight_files) | set(self.tokenizer_files))


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise NotAWhisperCheckpointError(f"{path} is not readable JSON: {exc}") from None
    if not isinstance(data, dict):
        raise NotAWhisperCheckpointError(f"{path} does not hold a JSON object")
    return data


def _special_ids_from_tokenizer_json(path: Path) -> dict[str, int]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {t["content"]: int(t["id"]) for t in data.get("added_tokens", []) if isinstance(t, dict) and "content" in t}


def inspect_checkpoint(src: str | Path) -> WhisperCheckpoint:
    """Validate ``src`` as a Hugging Face Whisper checkpoint directory (config + weights + tokenizer).

    Raises one-line errors: :class:`NotFoundError` (no such directory),
    :class:`NotAWhisperCheckpointError` (no config.json, not ``model_type: whisper``, no weights)
    and :class:`BadInputError` (no tokenizer files).
    """
    path = Path(src).expanduser()
    if not path.exists():
        raise NotFoundError(f"source checkpoint {path} does not exist")
    if not path.is_dir():
        raise NotAWhisperCheckpointError(
            f"{path} is not a directory; expected a Hugging Face Whisper checkpoint directory"
        )
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        hint = " (it looks like a CTranslate2 model already)" if (path / "model.bin").is_file() else ""
        raise NotAWhisperCheckpointError(f"{path} is not a Whisper checkpoint: no config.json{hint}")
    config = _read_json(cfg_path)
    model_type = config.get("model_type")
    if model_type != "whisper":
        raise NotAWhisperCheckpointError(
            f"{path} is not a Whisper checkpoint: config.json has model_type {model_type!r}, expected 'whisper'"
        )
    weights: list[Path] = []
    for pattern in _WEIGHT_PATTERNS:
        weights.extend(p for p in path.glob(pattern) if p.is_file())
    weights = sorted(set(weights))
    if not any(p.suffix in (".safetensors", ".bin") for p in weights):
        raise NotAWhisperCheckpointError(
            f"{path} is not a Whisper checkpoint: no model*.safetensors or pytorch_model*.bin weights"
        )
    tok_files = [path / n for n in TOKENIZER_FILES if (path / n).is_file()]
    has_fast = (path / "tokenizer.json").is_file()
    has_slow = (path / "vocab.json").is_file() and (path / "merges.txt").is_file()
    if not (has_fast or has_slow):
        raise BadInputError(
            f"{path} has no tokenizer: expected tokenizer.json (or vocab.json + merges.txt); "
            "save it next to the weights with processor.save_pretrained(dir)"
        )
    gen_path = path / "generation_config.json"
    gen = _read_json(gen_path) if gen_path.is_file() else {}
    special = _special_ids_from_tokenizer_json(path / "tokenizer.json") if has_fast else {}
    return WhisperCheckpoint(path, config, gen, weights, tok_files, has_fast, special)


def prepare_output_dir(out: str | Path, *, force: bool, src: Path | None = None) -> Path:
    """Check ``out`` is free (or ``force``), remove it when forced, and return it (not yet created)."""
    out = Path(out).expanduser()
    if src is not None:
        s, o = src.resolve(), out.resolve()
        if s == o or s.is_relative_to(o) or o.is_relative_to(s):
            raise BadInputError(
                f"output directory {out} must not be, contain or sit inside the source checkpoint {src}"
            )
    if out.exists():
        if not force:
            raise BadInputError(f"output directory {out} already exists; pass --force to overwrite it")
        if out.is_dir():
            shutil.rmtree(out)
        else:
            out.unlink()
    return out


def _import_ct2():
    try:
        import ctranslate2  # noqa: F401
        from ctranslate2.converters import TransformersConverter
    except ImportError as exc:
        raise EngineUnavailableError(f"CTranslate2 conversion needs ctranslate2, transformers and torch ({exc})",
                                     install_hint=CONVERT_HINT) from None
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except ImportError as exc:
        raise EngineUnavailableError(f"CTranslate2 conversion needs transformers and torch ({exc.name} missing)",
                                     install_hint=CONVERT_HINT) from None
    return TransformersConverter


def convert_ct2(ckpt: WhisperCheckpoint, out: Path, quantization: str) -> list[str]:
    """Convert with CTranslate2's TransformersConverter; return the files copied next to model.bin."""
    if quantization not in CT2_QUANTIZATIONS:
        raise BadInputError(
            f"unknown quantization {quantization!r} for --to ct2; choose one of {', '.join(CT2_QUANTIZATIONS)}",
            param="quantization",
        )
    converter_cls = _import_ct2()
    copy = [p.name for p in ckpt.tokenizer_files]
    # CTranslate2 writes its own config.json; the HF one must not overwrite it.
    converter = converter_cls(
        str(ckpt.path), copy_files=copy or None, load_as_float16=quantization in ("float16", "int8_float16")
    )
    try:
        converter.convert(str(out), quantization=quantization, force=True)
    except (ValueError, RuntimeError, OSError) as exc:
        shutil.rmtree(out, ignore_errors=True)
        raise ModelLoadError(f"CTranslate2 conversion of {ckpt.path} failed: {' '.join(str(exc).split())}") from exc
    return copy
