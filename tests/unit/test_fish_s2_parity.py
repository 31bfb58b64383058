"""Numerical parity between voxbox's fish-s2 modules and sglang-omni's S2-Pro modules (same weights).

What of sglang-omni 0.1.9 imports on a CPU without its serving stack (sglang, flashinfer, sgl_kernel):

* ``sglang_omni.models.fishaudio_s2_pro.fish_speech.models.text2semantic`` (the fast decoder
  ``FishQwen3AudioDecoder``, its config, RoPE helpers), given the wheel's pure-Python deps
  ``msgspec`` and ``msgpack`` (pulled in by the package ``__init__``). Its attention is a custom op
  with CUDA/NPU kernels only (``mylib::flash_attn_kvcache``); the test registers a CPU kernel for it
  (plain softmax attention over the written cache), so the rest of upstream's layer (fused QKV
  split, q/k RMSNorm, interleaved RoPE on a bf16 table, SwiGLU, norms, projection, codebook
  embeddings) runs as published. The slow model shares this layer design.
* ``fish_speech/models/dac/{modded_dac,rvq}.py`` (the codec) import ``audiotools`` and
  descript-audio-codec's ``dac``; their package ``__init__``s pull a large audio stack, so the test
  loads ``dac.nn.layers``/``dac.nn.quantize`` from an unpacked descript-audio-codec wheel and stands
  in only for two base classes (see ``upstream_codec``).
* Not importable: ``sglang_model.py`` (the slow model's serving class, and the semantic sampler
  ``decode_codebooks``): it imports ``sglang``. Those are compared by reading, not numerically.

Run with ``VOXBOX_SGLANG_OMNI_PATH`` (an unpacked wheel plus msgspec/msgpack) and, for the codec,
``VOXBOX_DAC_PATH`` (an unpacked descript-audio-codec 1.0.0 wheel), e.g.::

    unzip sglang_omni-0.1.9-py3-none-any.whl -d /tmp/sgl/w; pip install --target /tmp/sgl/d msgspec msgpack
    pip download --no-deps descript-audio-codec==1.0.0 -d /tmp/sgl
    unzip /tmp/sgl/descript_audio_codec-*.whl -d /tmp/sgl/dac
    VOXBOX_SGLANG_OMNI_PATH=/tmp/sgl/w:/tmp/sgl/d VOXBOX_DAC_PATH=/tmp/sgl/dac pytest tests/unit/test_fish_s2_parity.py

Skipped when the modules are not importable.
"""

from __future__ import annotations

import importlib
import math
import os
import sys

import pytest

torch = pytest.importorskip("torch")

from voxbox.engines.tts.fish_s2.config import DualARConfig, TransformerConfig  # noqa: E402
from voxbox.engines.tts.fish_s2.loader import _to_voxbox  # noqa: E402
from voxbox.engines.tts.fish_s2.model import DualARRunner  # noqa: E402
from voxbox.engines.tts.fish_s2.ops import apply_rope, rope_table  # noqa: E402
from voxbox.engines.tts.fish_s2.transformer import FastAR, SlowAR, run_layers  # noqa: E402

_PKG = "sglang_omni.models.fishaudio_s2_pro.fish_speech.models.text2semantic"


@pytest.fixture(scope="module")
def upstream():
    extra = os.environ.get("VOXBOX_SGLANG_OMNI_PATH")
    if extra:
        for p in reversed(extra.split(os.pathsep)):
            if p and p not in sys.path:
                sys.path.insert(0, p)
    try:
        dec = importlib.import_module(f"{_PKG}.audio_decoder")
        cfg = importlib.import_module(f"{_PKG}.configuration")
        utils = importlib.import_module(f"{_PKG}.utils")
    except Exception as exc:  # noqa: BLE001 - any import failure means "not available here"
        pytest.skip(f"sglang-omni S2-Pro modules not importable on this machine: {type(exc).__name__}: {exc}")

    def cpu_kvcache_attention(q, k_cache, v_cache, k=None, v=None, cache_seqlens=None, causal=False,
                              num_splits=0, cache_position=-1):
        end = cache_position + k.shape[1]
        k_cache[:, cache_position:end].copy_(k)
        v_cache[:, cache_position:end].copy_(v)
        keys, vals = k_cache[:, :end], v_cache[:, :end]  # (B, S, G, D)
        rep = q.shape[2] // keys.shape[2]
        keys, vals = keys.repeat_interleave(rep, 2), vals.repeat_interleave(rep, 2)
        scores = torch.einsum("bthd,bshd->bhts", q.float(), keys.float()) / math.sqrt(q.shape[-1])
        t = torch.arange(q.shape[1])[:, None] + cache_position
        s = torch.arange(end)[None, :]
        scores = scores.masked_fill(s > t, float("-inf")) if causal else scores
        return torch.einsum("bhts,bshd->bthd", scores.softmax(-1), vals.float()).to(q.dtype)

    dec.flash_attn_kvcache_op.register_kernel("cpu")(cpu_kvcache_attention)
    return dec, cfg, utils


FAST = dict(vocab_size=32, n_layer=2, n_head=4, n_local_heads=2, head_dim=8, dim=32, text_dim=48, num_codebooks=5,
            intermediate_size=64, rope_base=1000000.0, norm_eps=1e-6, attention_qk_norm=True, tie_word_embeddings=False)


def _fast_pair(upstream, **over):
    dec, cfgmod, _ = upstream
    torch.manual_seed(0)
    their_cfg = cfgmod.FishQwen3AudioDecoderConfig(**{**FAST, **over})
    theirs = dec.FishQwen3AudioDecoder(their_cfg).eval()
    with torch.no_grad():
        for name, p in theirs.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)  # non-trivial norm weights, so a mix-up shows
    mine_cfg = TransformerConfig.from_dict({**FAST, **over}, fast=True)
    with torch.device("meta"):
        mine = FastAR(mine_cfg)
    mine.load_state_dict(_to_voxbox({k: v.clone() for k, v in theirs.state_dict().items()}), strict=True, assign=True)
    return theirs, mine.eval(), mine_cfg


def _run_mine(mine: FastAR, cfg: TransformerConfig, first: torch.Tensor, codes: list[int]) -> list[torch.Tensor]:
    n = cfg.num_codebooks
    caches = [torch.zeros(2, 1, cfg.n_local_heads, n, cfg.head_dim) for _ in range(cfg.n_layer)]
    table = rope_table(n, cfg.head_dim, cfg.rope_base)
    x = mine.project_in(first)
    outs = []
    for i in range(n):
        pos = torch.tensor([i])
        mask = torch.arange(n) <= i
        h = run_layers(mine.layers, caches, x, table[i : i + 1], pos, n, mask, mine.norm.weight, cfg.norm_eps)
        outs.append(mine.output(h))
        if i + 1 < n:
            x = mine.embeddings(torch.tensor([[codes[i]]]))
    return outs


@pytest.mark.parametrize("qk_norm", [True, False])
def test_fast_decoder_matches_upstream(upstream, qk_norm):
    theirs, mine, cfg = _fast_pair(upstream, attention_qk_norm=qk_norm)
    theirs.setup_caches(1, dtype=torch.float32)
    theirs.reset_caches()
    first = torch.randn(1, 1, FAST["text_dim"])
    codes = [3, 17, 0, 31]
    with torch.no_grad():
        ref = []
        x = theirs.project_in(first)
        for i in range(cfg.num_codebooks):
            ref.append(theirs.forward_kvcached(x, codebook_idx=i))
            if i + 1 < cfg.num_codebooks:
                x = theirs.embeddings(torch.tensor([[codes[i]]]))
        got = _run_mine(mine, cfg, first, codes)
    for i, (a, b) in enumerate(zip(ref, got, strict=True)):
        assert a.shape == b.shape == (1, 1, FAST["vocab_size"])
        torch.testing.assert_close(b, a, atol=2e-5, rtol=2e-5, msg=f"codebook position {i}")


def test_rope_matches_upstream_bf16_table(upstream):
    _, _, utils = upstream
    head_dim, base, n = 128, 1000000.0, 300
    theirs = utils.precompute_freqs_cis(n, head_dim, base)  # (n, D/2, 2) in bf16, as upstream keeps it
    mine = rope_table(n, head_dim, base)
    assert torch.equal(mine, theirs.float())
    x = torch.randn(1, n, 4, head_dim)
    torch.testing.assert_close(apply_rope(x, mine), utils.apply_rotary_emb(x, theirs), atol=1e-6, rtol=1e-6)


def test_reference_code_injection_matches_upstream(upstream):
    theirs, mine, fcfg = _fast_pair(upstream)
    text = TransformerConfig(vocab_size=100, dim=FAST["text_dim"], n_layer=1, n_head=4, n_local_heads=2, head_dim=12,
                             intermediate_size=64, max_seq_len=64)
    slow = SlowAR(text).eval()
    cfg = DualARConfig(text=text, fast=fcfg, eos_token_id=5, pad_token_id=None, semantic_start_token_id=60,
                       semantic_end_token_id=60 + FAST["vocab_size"] - 1)
    runner = DualARRunner(cfg, slow, mine, device=torch.device("cpu"), max_context=64, max_frames=8)
    codes = torch.randint(0, FAST["vocab_size"], (fcfg.num_codebooks, 7))
    ids = torch.cat([torch.tensor([1, 2, 3]), codes[0] + 60, torch.tensor([4, 5])])
    mask = torch.zeros(ids.shape[0], dtype=torch.bool)
    mask[3:10] = True
    got = runner.prompt_embeddings(ids, mask, codes)
    with torch.no_grad():
        x = slow.embeddings(ids)
        want = x.clone()
        want[mask] = theirs.embed_text_dim(x[None], codes.T, mask[None]).to(x.dtype)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    assert torch.equal(got[~mask], x[~mask])


# ---------------------------------------------------------------------- codec
@pytest.fixture(scope="module")
def upstream_codec(upstream):
    """fish-speech's modded DAC as vendored in sglang-omni, with descript-audio-codec's real
    ``dac.nn.layers``/``dac.nn.quantize`` (``VOXBOX_DAC_PATH``: an unpacked descript-audio-codec
    wheel). Only two base classes are stood in for, because their packages' ``__init__`` pulls a
    large audio stack: ``audiotools.ml.BaseModel`` (save/load helpers) becomes ``nn.Module`` and
    ``dac.model.base.CodecMixin`` (chunked-compression helpers) gets a ``get_delay`` returning 0.
    Neither takes part in encode/decode."""
    import types

    from torch import nn

    dac_path = os.environ.get("VOXBOX_DAC_PATH")
    if not dac_path or not os.path.isdir(os.path.join(dac_path, "dac", "nn")):
        pytest.skip("set VOXBOX_DAC_PATH to an unpacked descript-audio-codec wheel to run the codec parity test")
    saved = {
        k: sys.modules.get(k) for k in ("audiotools", "audiotools.ml", "dac", "dac.nn", "dac.model", "dac.model.base")
    }
    audiotools = types.ModuleType("audiotools")
    ml = types.ModuleType("audiotools.ml")
    ml.BaseModel = type("BaseModel", (nn.Module,), {})
    audiotools.ml = ml
    dac = types.ModuleType("dac")
    dac.__path__ = [os.path.join(dac_path, "dac")]
    dac_nn = types.ModuleType("dac.nn")
    dac_nn.__path__ = [os.path.join(dac_path, "dac", "nn")]
    dac_model = types.ModuleType("dac.model")
    dac_model.__path__ = []
    base = types.ModuleType("dac.model.base")
    base.CodecMixin = type("CodecMixin", (), {"get_delay": lambda self: 0})
    sys.modules.update({"audiotools": audiotools, "audiotools.ml": ml, "dac": dac, "dac.nn": dac_nn,
                        "dac.model": dac_model, "dac.model.base": base})
    try:
        pkg = "sglang_omni.models.fishaudio_s2_pro.fish_speech.models.dac"
        modded = importlib.import_module(f"{pkg}.modded_dac")
        rvq = importlib.import_module(f"{pkg}.rvq")
    except Exception as exc:  # noqa: BLE001
        pytest.skip(f"upstream codec modules not importable: {type(exc).__name__}: {exc}")
    yield modded, rvq
    for k, v in saved.items():
        if v is None:
            sys.modules.pop(k, None)
        else:
            sys.modules[k] = v


def test_codec_matches_upstream(upstream_codec, tmp_path):
    import functools
    from pathlib import Path

    from voxbox.engines.tts.fish_s2.config import CodecConfig, CodecTransformerConfig
    from voxbox.engines.tts.fish_s2.loader import ModelFiles, load_codec

    modded, rvq = upstream_codec
    torch.manual_seed(0)
    qt = dict(n_layer=1, n_head=2, dim=64, intermediate_size=96, head_dim=32, rope_base=10000, norm_eps=1e-5)
    general = functools.partial(modded.ModelArgs, block_size=8192, n_local_heads=-1, head_dim=64, rope_base=10000,
                                norm_eps=1e-5, dropout_rate=0.1, attn_dropout_rate=0.1, channels_first=True)

    def module():
        return modded.WindowLimitedTransformer(causal=True, window_size=4, input_dim=64,
                                               config=modded.ModelArgs(block_size=2048, n_local_heads=-1, **qt))

    quant = rvq.DownsampleResidualVectorQuantize(input_dim=64, n_codebooks=3, codebook_size=16, codebook_dim=4,
                                                 quantizer_dropout=0.0, semantic_codebook_size=32,
                                                 downsample_factor=[2], pre_module=module(), post_module=module())
    theirs = modded.DAC(encoder_dim=16, encoder_rates=[2, 4], decoder_dim=32, decoder_rates=[4, 2], quantizer=quant,
                        sample_rate=44100, causal=True, encoder_transformer_layers=[0, 1],
                        decoder_transformer_layers=[0, 0], transformer_general_config=general).eval()
    with torch.no_grad():  # move every scale off its init value so a mix-up shows
        for name, p in theirs.named_parameters():
            if name.endswith(("alpha", "gamma")) or "norm" in name:
                p.uniform_(0.5, 1.5)
            elif name.endswith("codebook.weight"):
                p.normal_()
    state = theirs.state_dict()
    assert any(k.endswith("parametrizations.weight.original0") for k in state)
    assert any(k.endswith("weight_g") for k in state)
    torch.save(state, tmp_path / "codec.pth")
    cfg = CodecConfig(encoder_dim=16, encoder_rates=(2, 4), decoder_dim=32, decoder_rates=(4, 2),
                      encoder_transformer_layers=(0, 1), encoder_transformer_window=512, n_codebooks=3,
                      codebook_size=16, codebook_dim=4, semantic_codebook_size=32, downsample_factor=(2,),
                      quantizer_transformer=CodecTransformerConfig(window_size=4, **qt))
    files = ModelFiles(Path(tmp_path), Path(tmp_path) / "config.json", (), Path(tmp_path / "codec.pth"),
                       Path(tmp_path) / "tokenizer.json")
    mine = load_codec(files, cfg, device=torch.device("cpu"), dtype=torch.float32)

    audio = 0.3 * torch.randn(3000)
    with torch.no_grad():
        ref_codes, _ = theirs.encode(audio[None])
        got_codes = mine.encode(audio)
        assert got_codes.shape == ref_codes[0].shape
        agree = (got_codes == ref_codes[0]).float().mean().item()
        assert agree >= 0.98, f"codes agree on {agree:.1%}"
        codes = torch.randint(0, 16, (4, 12))
        codes[0] = torch.randint(0, 32, (12,))
        ref_audio = theirs.from_indices(codes[None].clone())[0, 0]
        got_audio = mine.decode(codes)
    assert got_audio.shape == ref_audio.shape == (12 * cfg.frame_length,)
    torch.testing.assert_close(got_audio, ref_audio, atol=1e-4, rtol=1e-4)
