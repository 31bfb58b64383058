"""Reading an HF Whisper checkpoint directory: config.json, model.safetensors (single or sharded),
tokenizer.json and generation_config.json; weights go straight onto the device (built on the meta
device, assigned once)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from voxbox.engines.asr.torch_whisper.model import Whisper, WhisperDims, load_weights
from voxbox.engines.asr.whisper.tokens import WhisperTokenizer
from voxbox.errors import ModelLoadError, ModelNotFoundError

__all__ = ["load_checkpoint"]


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} is not a JSON object")
    return data


def _load_state(directory: Path, device: torch.device) -> dict[str, torch.Tensor]:
    from voxbox.engines.weights import read_tensors  # threaded pinned reads to a GPU; safetensors' own on a CPU

    single = directory / "model.safetensors"
    if single.is_file():
        files = [single]
    else:
        index = _read_json(directory / "model.safetensors.index.json")
        files = sorted({directory / f for f in index.get("weight_map", {}).values()})
    if not files:
        raise ModelLoadError(f"{directory} has no model.safetensors")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(read_tensors(f, device))
    return state


def load_checkpoint(path: str | Path, device: torch.device, dtype: torch.dtype
                    ) -> tuple[Whisper, WhisperTokenizer, dict[str, Any]]:
    """(model, tokenizer, generation config) from an HF checkpoint directory.

    The generation config falls back to config.json for the suppression lists (older checkpoints
    keep them there)."""
    directory = Path(path)
    if not directory.is_dir():
        raise ModelNotFoundError(f"torch-whisper needs a local checkpoint directory; {str(path)!r} is not one",
                                 param="model")
    config = _read_json(directory / "config.json")
    if not config:
        raise ModelLoadError(f"{directory} has no config.json")
    if not (directory / "tokenizer.json").is_file():
        raise ModelLoadError(f"{directory} has no tokenizer.json")
    try:
        dims = WhisperDims.from_config(config)
        with torch.device("meta"):
            model = Whisper(dims)
        load_weights(model, _load_state(directory, device), dtype, device)
        tokenizer = WhisperTokenizer.from_dir(directory, dims.vocab_size)
    except ModelLoadError:
        raise
    except Exception as exc:  # noqa: BLE001 - safetensors/tokenizers raise their own types for corrupt files
        raise ModelLoadError(f"could not load Whisper checkpoint {directory}: {exc}") from exc
    gen = _read_json(directory / "generation_config.json")
    for key in ("suppress_tokens", "begin_suppress_tokens"):
        if key not in gen and config.get(key) is not None:
            gen[key] = config[key]
    return model.eval(), tokenizer, gen
