"""torch-whisper's Triton batch-1 decode step, run on the CPU by Triton's interpreter: the same
logits, cache writes and decoded tokens as ``Decoder.forward``; without a usable Triton the runner
keeps its own step and says why.

``TRITON_INTERPRET`` must be set before ``triton`` is first imported (``torch._dynamo`` imports it),
so the interpreter tests run in a child pytest process on this file; in the parent they show as
skipped and ``test_kernels_in_the_triton_interpreter`` reports the child's result. Without
``triton`` installed (it is not in the ``test`` extra: a 290 MB wheel) only the fallback test runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from whisper_steer import steer_weights

torch = pytest.importorskip("torch")

CHILD = os.environ.get("VOXBOX_TW_KERNEL_CHILD") == "1"
child_only = pytest.mark.skipif(not CHILD, reason="runs in the interpreter child process")


@pytest.mark.skipif(CHILD, reason="the parent's test")
def test_kernels_in_the_triton_interpreter():
    pytest.importorskip("triton")
    env = {**os.environ, "TRITON_INTERPRET": "1", "VOXBOX_TW_KERNEL_CHILD": "1"}
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", __file__],
                       env=env, cwd=root, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    last = r.stdout.strip().splitlines()[-1]
    # skipped there: only this test and the fallback test (Triton is "available" under the interpreter)
    assert " passed" in last and ("skipped" not in last or "2 skipped" in last), r.stdout[-2000:]


def _model(vocab: int, sources: int = 40, layers: int = 2, activation: str = "gelu"):
    from voxbox.engines.asr.torch_whisper.model import Whisper, WhisperDims

    dims = WhisperDims(n_mels=80, vocab_size=vocab, d_model=64, encoder_layers=1, encoder_heads=4, encoder_ffn=128,
                       decoder_layers=layers, decoder_heads=4, decoder_ffn=128, max_source_positions=sources,
                       max_target_positions=96, activation=activation)
    torch.manual_seed(0)
    model = Whisper(dims).eval()
    steer_weights(model, norms=True)
    model.fuse_for_decoding()
    return model


def _configs():
    """Wide tiles: few programs, so the interpreter stays fast (the GPU uses ``default_config``)."""
    from voxbox.engines.asr.torch_whisper.kernels import GemvConfig

    roles = ("qkv", "o", "cq", "co", "fc1", "fc2", "logits")
    return {r: GemvConfig(4096 if r == "logits" else 256, 64) for r in roles}


@child_only
@pytest.mark.parametrize(("activation", "sources"), [("gelu", 40), ("gelu_new", 42)])
def test_kernel_step_matches_decoder_forward(activation, sources):
    """42 encoder positions in 4 cross-attention splits: the last split is partly past the end."""
    from voxbox.engines.asr.torch_whisper.kernels import KernelStep
    from voxbox.engines.asr.torch_whisper.model import KVCache

    model = _model(vocab=300, sources=sources, activation=activation)
    step = KernelStep(model, _configs(), cross_splits=4, self_splits=4)
    g = torch.Generator().manual_seed(1)
    cache = model.new_cache(1)
    cache.cross_k.normal_(generator=g)
    cache.cross_v.normal_(generator=g)
    tokens = torch.randint(0, 300, (1, 96), generator=g)
    with torch.inference_mode():
        model.decoder(tokens[:, :7], 0, cache, 7)
        # position 7 in a 64 bucket (splits past the position are empty), then 40 in the same bucket
        for position, kv_len in ((7, 64), (40, 64)):
            if position > 7:
                model.decoder(tokens[:, 8:position], 8, cache, position)
            pos = torch.tensor([position])
            ref_cache = KVCache(cache.self_kv.clone(), cache.cross_k, cache.cross_v)
            ref = model.logits(model.decoder(tokens[:, position:position + 1], pos, ref_cache, kv_len)[:, -1])
            got = step(tokens, pos, cache, kv_len).clone()
            torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(cache.self_kv, ref_cache.self_kv, rtol=1e-5, atol=1e-5)  # fp32 sum order
            # the last split of each head combined it and re-armed its arrival counter for the next step
            assert not step.buf.self_cnt.any() and not step.buf.cross_cnt.any()
        assert step.check() < 1e-5
    assert step.bytes_per_step(64) > sum(t.numel() * 4 for t in step._weights())


@child_only
def test_runner_decodes_the_same_tokens_with_the_kernels():
    """Greedy decode, timestamps on, through Runner: Triton step vs the plain decoder."""
    from voxbox.engines.asr.torch_whisper.decoding import Rules, Runner
    from voxbox.engines.asr.whisper.tokens import WhisperTokenizer
    from voxbox.models.bundled import whisper_tiny_en_dir

    torch.set_num_threads(1)
    tok = WhisperTokenizer.from_dir(whisper_tiny_en_dir(), 51864)
    model = _model(vocab=51864, sources=40, layers=2)
    specials = tuple(range(tok.eot + 1, tok.timestamp_begin))
    rules = Rules(suppress=specials, begin_suppress=(tok.eot,), timestamps=True)
    prompt = tok.sot_sequence(None, "transcribe", True)
    feats = torch.randn(1, 80, 80)  # 40 encoder positions
    with torch.inference_mode():
        plain = Runner(model, tok, use_graphs=False, fast=False, kernels=False)
        fast = Runner(model, tok, use_graphs=False, fast=False, kernels=True, kernel_configs=_configs(),
                      kernel_splits=(2, 1))
        assert fast.kstep is not None, fast.kernel_error
        enc = plain.encode(feats)
        a = plain.decode(enc, prompt, rules, 16)
        b = fast.decode(enc, prompt, rules, 16)
    assert len(set(a[0].tokens)) > 3  # not a degenerate repeat of one token
    assert a[0].tokens == b[0].tokens
    assert a[0].sum_logprob == pytest.approx(b[0].sum_logprob, rel=1e-4)


@child_only
def test_kernel_step_refuses_what_it_cannot_run():
    from voxbox.engines.asr.torch_whisper.kernels import KernelStep, default_config

    model = _model(vocab=100)
    with pytest.raises(ValueError):
        KernelStep(model, cross_splits=3)
    step = KernelStep(model, _configs(), cross_splits=2, self_splits=2)
    with pytest.raises(ValueError):
        step(torch.zeros(2, 96, dtype=torch.long), torch.tensor([3]), model.new_cache(2), 64)
    big = default_config(51866, 1280, ln=True)  # the logits GEMV of large-v3: many programs, wide rows
    assert -(-51866 // big.block_n) >= 1000 and big.block_k >= 256


@pytest.mark.skipif(CHILD, reason="the parent's test: under the interpreter Triton is available")
def test_runner_without_triton_keeps_its_step_and_says_why(monkeypatch, caplog):
    """Kernels asked for but unavailable: a logged reason, ``kstep`` None, the same tokens as the plain step."""
    from voxbox.engines.asr.torch_whisper.decoding import Rules, Runner
    from voxbox.engines.asr.whisper.tokens import WhisperTokenizer
    from voxbox.models.bundled import whisper_tiny_en_dir

    tok = WhisperTokenizer.from_dir(whisper_tiny_en_dir(), 51864)
    model = _model(vocab=51864, sources=40, layers=2)
    rules = Rules(suppress=(), begin_suppress=(tok.eot,), timestamps=False)
    prompt = tok.sot_sequence(None, "transcribe", False)
    with caplog.at_level("WARNING", logger="voxbox.engines.asr.torch_whisper.decoding"), torch.inference_mode():
        asked = Runner(model, tok, use_graphs=False, fast=False, kernels=True)
        plain = Runner(model, tok, use_graphs=False, fast=False, kernels=False)
        enc = plain.encode(torch.randn(1, 80, 80))
        a, b = plain.decode(enc, prompt, rules, 8), asked.decode(enc, prompt, rules, 8)
    assert asked.kstep is None and plain.kstep is None and plain.kernel_error is None
    assert asked.kernel_error is not None and "Triton is not available" in asked.kernel_error
    assert any("Triton decode step unavailable" in r.getMessage() and asked.kernel_error in r.getMessage()
               for r in caplog.records)
    assert a[0].tokens == b[0].tokens and len(a[0].tokens) > 0
