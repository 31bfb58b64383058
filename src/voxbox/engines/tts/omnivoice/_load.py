"""Loading OmniVoice from a local directory in the upstream (Hugging Face ``k2-fsa/OmniVoice``) layout.

Layout::

    MODEL_DIR/config.json                       OmniVoiceConfig: audio vocab, codebooks, qwen3 llm_config
    MODEL_DIR/model.safetensors                 llm.* (Qwen3), audio_embeddings, audio_heads
        (or model.safetensors.index.json + shards)
    MODEL_DIR/tokenizer.json                    the text tokenizer (Qwen's, with OmniVoice's special tokens)
    MODEL_DIR/audio_tokenizer/config.json       HiggsAudioV2TokenizerConfig
    MODEL_DIR/audio_tokenizer/model.safetensors the codec (DAC encoder/decoder, HuBERT, quantizer)

Nothing is downloaded: a missing file is one clear error naming what was expected. Tensor shapes
are checked against ``config.json`` before anything is built; modules are built on the meta device
and each tensor is read once onto its component's device and dtype.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from voxbox.errors import ModelLoadError, ModelNotFoundError

from ._backbone import Backbone, LMConfig, upstream_state
from ._codec import Decoder, Encoder, build_decoder, build_encoder, fold_weight_norm

__all__ = [
    "ModelFiles",
    "codec_config",
    "count_params",
    "lm_config",
    "load_backbone",
    "load_decoder",
    "load_encoder",
    "resolve_files",
]

REQUIRED = ("config.json", "tokenizer.json", "audio_tokenizer/config.json", "audio_tokenizer/model.safetensors")
DECODER_PREFIXES = ("quantizer.", "fc2.", "acoustic_decoder.")
ENCODER_PREFIXES = ("semantic_model.", "encoder_semantic.", "acoustic_encoder.", "fc.", "quantizer.")


@dataclass(frozen=True)
class ModelFiles:
    root: Path
    config: Path
    weights: tuple[Path, ...]
    tokenizer: Path
    codec_config: Path
    codec: Path


def resolve_files(model_dir: str | Path) -> ModelFiles:
    root = Path(model_dir).expanduser()
    if not root.is_dir():
        raise ModelNotFoundError(f"omnivoice model directory {str(root)!r} does not exist", param="model")
    missing = [name for name in REQUIRED if not (root / name).is_file()]
    index = root / "model.safetensors.index.json"
    weights: tuple[Path, ...] = ()
    if (root / "model.safetensors").is_file():
        weights = (root / "model.safetensors",)
    elif index.is_file():
        try:
            shard_names = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, AttributeError) as exc:
            raise ModelLoadError(f"cannot read {str(index)!r}: {exc}") from exc
        weights = tuple(root / s for s in shard_names)
        missing += [s for s in shard_names if not (root / s).is_file()]
    else:
        missing.append("model.safetensors")
    if missing:
        raise ModelNotFoundError(
            f"omnivoice model directory {str(root)!r} is incomplete: missing {', '.join(missing)} (expected the "
            f"upstream layout: {', '.join(('model.safetensors',) + REQUIRED)})", param="model")
    return ModelFiles(
        root, root / "config.json", weights, root / "tokenizer.json", root / "audio_tokenizer/config.json",
        root / "audio_tokenizer/model.safetensors",
    )


def _json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"cannot read {str(path)!r}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{str(path)!r} is not a JSON object")
    return data


def lm_config(files: ModelFiles) -> LMConfig:
    return LMConfig.from_json(_json(files.config))


def codec_config(files: ModelFiles) -> Any:
    """transformers' ``HiggsAudioV2TokenizerConfig`` (its derived sizes are upstream's)."""
    try:
        from transformers.models.higgs_audio_v2_tokenizer.configuration_higgs_audio_v2_tokenizer import (
            HiggsAudioV2TokenizerConfig,
        )
    except ImportError as exc:
        from voxbox.errors import EngineUnavailableError

        raise EngineUnavailableError(f"omnivoice needs transformers >= 5.3 (Higgs audio tokenizer config): {exc}",
                                     install_hint="pip install -U 'transformers>=5.3'") from exc
    raw = _json(files.codec_config)
    try:
        return HiggsAudioV2TokenizerConfig(
            **{k: v for k, v in raw.items() if k not in ("architectures", "transformers_version")}
        )
    except Exception as exc:
        raise ModelLoadError(f"{str(files.codec_config)!r} is not a Higgs audio tokenizer config: {exc}") from exc


def _headers(paths: Iterable[Path]) -> dict[str, tuple[tuple[int, ...], Path]]:
    from safetensors import safe_open

    out: dict[str, tuple[tuple[int, ...], Path]] = {}
    for path in paths:
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for k in f.keys():
                    out[k] = (tuple(f.get_slice(k).get_shape()), path)
        except Exception as exc:
            raise ModelLoadError(f"cannot read {str(path)!r} (not a valid safetensors file: {exc})") from exc
    return out


def _read(names: Iterable[str], where: dict[str, tuple[tuple[int, ...], Path]]) -> dict[str, torch.Tensor]:
    from safetensors import safe_open

    by_file: dict[Path, list[str]] = {}
    for n in names:
        by_file.setdefault(where[n][1], []).append(n)
    out: dict[str, torch.Tensor] = {}
    for path, keys in by_file.items():
        try:
            with safe_open(str(path), framework="pt", device="cpu") as f:
                for k in keys:
                    out[k] = f.get_tensor(k)
        except Exception as exc:
            raise ModelLoadError(f"cannot read tensors from {str(path)!r}: {exc}") from exc
    return out


def _check_shapes(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[tuple[int, ...], Path]], what: str
) -> None:
    for name, shape in expected.items():
        got = found.get(name)
        if got is None:
            raise ModelLoadError(f"{what} checkpoint lacks {name!r}")
        if tuple(got[0]) != tuple(shape):
            raise ModelLoadError(
                f"{what} tensor {name!r} has shape {tuple(got[0])}, config.json implies {tuple(shape)}"
            )


def _lm_shapes(c: LMConfig) -> dict[str, tuple[int, ...]]:
    q, kv = c.heads * c.head_dim, c.kv_heads * c.head_dim
    out = {
        "llm.embed_tokens.weight": (c.vocab, c.hidden),
        "audio_embeddings.weight": (c.codebooks * c.audio_vocab, c.hidden),
        "audio_heads.weight": (c.codebooks * c.audio_vocab, c.hidden), "llm.norm.weight": (c.hidden,),
    }
    for i in range(c.layers):
        a, p = f"llm.layers.{i}.self_attn.", f"llm.layers.{i}."
        out.update(
            {
                a + "q_proj.weight": (q, c.hidden), a + "k_proj.weight": (kv, c.hidden),
                a + "v_proj.weight": (kv, c.hidden), a + "o_proj.weight": (c.hidden, q),
                a + "q_norm.weight": (c.head_dim,), a + "k_norm.weight": (c.head_dim,),
                p + "mlp.gate_proj.weight": (c.intermediate, c.hidden),
                p + "mlp.up_proj.weight": (c.intermediate, c.hidden),
                p + "mlp.down_proj.weight": (c.hidden, c.intermediate), p + "input_layernorm.weight": (c.hidden,),
                p + "post_attention_layernorm.weight": (c.hidden,),
            }
        )
    return out


def load_backbone(files: ModelFiles, c: LMConfig, device: torch.device, dtype: torch.dtype) -> Backbone:
    expected = _lm_shapes(c)
    found = _headers(files.weights)
    _check_shapes(expected, found, "OmniVoice")
    names = list(expected) + [k for k in found if k.startswith("llm.layers.") and k.endswith("_proj.bias")]
    state = {k: v.to(device=device, dtype=dtype) for k, v in upstream_state(c, _read(names, found)).items()}
    with torch.device("meta"):
        model = Backbone(c)
    missing, _ = model.load_state_dict(state, strict=False, assign=True)
    missing = [k for k in missing if k not in ("offsets", "inv_freq")]
    if missing:
        raise ModelLoadError(f"OmniVoice checkpoint lacks {missing[:3]}")
    model.offsets = torch.arange(c.codebooks, device=device) * c.audio_vocab
    model.inv_freq = 1.0 / (c.rope_theta ** (torch.arange(0, c.head_dim, 2, dtype=torch.int64, device=device).float()
                                             / c.head_dim))
    return model.eval().requires_grad_(False)


def _load_part(build: Any, cfg: Any, files: ModelFiles, prefixes: tuple[str, ...], device: torch.device,
               dtype: torch.dtype, what: str) -> Any:
    from torch.nn.utils import parametrize

    with torch.device("meta"):
        module = build(cfg)
    for mod in module.modules():  # HuBERT's positional conv is weight-normed: plain weight instead
        if parametrize.is_parametrized(mod, "weight"):
            parametrize.remove_parametrizations(mod, "weight", leave_parametrized=True)
    found = _headers([files.codec])
    wanted = [k for k in found if k.startswith(prefixes)]
    state = fold_weight_norm(_read(wanted, found))
    own = module.state_dict()
    shaped = {}
    for k, v in state.items():
        if k in own:
            if tuple(v.shape) != tuple(own[k].shape):
                raise ModelLoadError(f"{what} tensor {k!r} has shape {tuple(v.shape)}, "
                                     f"audio_tokenizer/config.json implies {tuple(own[k].shape)}")
            shaped[k] = v.to(device=device, dtype=dtype if v.is_floating_point() else v.dtype)
    missing = [k for k in own if k not in shaped and not k.endswith("masked_spec_embed")]
    if missing:
        raise ModelLoadError(f"{what} checkpoint lacks {missing[:3]}")
    module.load_state_dict(shaped, strict=False, assign=True)
    for name, p in list(module.named_parameters()):
        if p.is_meta:  # masked_spec_embed (training only): an empty stand-in, never read in eval
            parent = module.get_submodule(name.rpartition(".")[0]) if "." in name else module
            setattr(
                parent, name.rpartition(".")[2],
                torch.nn.Parameter(torch.zeros(p.shape, device=device, dtype=dtype), requires_grad=False),
            )
    return module.eval().requires_grad_(False)


def load_decoder(files: ModelFiles, cfg: Any, device: torch.device, dtype: torch.dtype) -> Decoder:
    return _load_part(build_decoder, cfg, files, DECODER_PREFIXES, device, dtype, "audio decoder")


def load_encoder(files: ModelFiles, cfg: Any, device: torch.device, dtype: torch.dtype) -> Encoder:
    return _load_part(build_encoder, cfg, files, ENCODER_PREFIXES, device, dtype, "audio encoder")


def count_params(files: ModelFiles) -> dict[str, int]:
    """Parameters per planner component, from the safetensors headers (nothing loaded)."""
    import math

    counts = {"backbone": 0, "decoder": 0, "encoder": 0}
    for k, (shape, _) in _headers(files.weights).items():
        if k != "codebook_layer_offsets":
            counts["backbone"] += math.prod(shape)
    for k, (shape, _) in _headers([files.codec]).items():
        n = math.prod(shape)
        if k.startswith(DECODER_PREFIXES):
            counts["decoder"] += n
        if k.startswith(ENCODER_PREFIXES) and not k.startswith("quantizer."):
            counts["encoder"] += n
    return counts
