"""torch-whisper on a CUDA/ROCm GPU: the GPU paths decode exactly what the eager step decodes.

The checkpoint's weights are scaled so that the audio steers the decoder (as the CPU parity
tests do): a random checkpoint at the default init decodes one token over and over, which any
step, right or wrong, reproduces. Each test checks the eager tokens are not such a repeat.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import pytest
from whisper_steer import steer_weights

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA/ROCm GPU"),
]


@pytest.fixture(autouse=True)
def _no_tf32():
    """fp32 means fp32: the batched and unbatched GEMMs then differ only in summation order."""
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def _tokenizer_dir():
    """The tiny.en tokenizer, or the multilingual one of the base parts (a GPU image may carry only those)."""
    from voxbox.convert.tiny import bundled_tokenizer_dir

    d = bundled_tokenizer_dir(False) or bundled_tokenizer_dir(True)
    if d is None:
        pytest.skip("no bundled Whisper tokenizer")
    return d


def _vocab():
    from voxbox.convert.tiny import bundled_tokenizer_dir

    return 51864 if bundled_tokenizer_dir(False) is not None else 51865


def _model(dtype=None):
    from voxbox.engines.asr.torch_whisper.model import Whisper, WhisperDims

    dims = WhisperDims(n_mels=80, vocab_size=_vocab(), d_model=128, encoder_layers=2, encoder_heads=4, encoder_ffn=256,
                       decoder_layers=3, decoder_heads=4, decoder_ffn=256)
    torch.manual_seed(0)
    model = Whisper(dims).eval()
    steer_weights(model)
    model = model.to("cuda", dtype or torch.float16)
    model.fuse_for_decoding()
    return model


def _tok():
    from voxbox.engines.asr.whisper.tokens import WhisperTokenizer

    return WhisperTokenizer.from_dir(_tokenizer_dir(), _vocab())


def _rules(tok, timestamps):
    from voxbox.engines.asr.torch_whisper.decoding import Rules

    return Rules(suppress=tuple(range(tok.eot + 1, tok.timestamp_begin)), begin_suppress=(tok.eot,),
                 timestamps=timestamps)


def _not_degenerate(results):
    for r in results:
        assert len(set(r.tokens)) > 3, r.tokens  # the audio steers the decoder: not one repeated token


@pytest.mark.parametrize("timestamps", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_graph_replay_matches_eager(batch, timestamps):
    from voxbox.engines.asr.torch_whisper.decoding import Runner

    # fp32: the graph is captured on a side stream, where cuBLAS may pick another algorithm for a
    # GEMM than on the default stream; in fp16 that rounding once flipped a near-tie in the timestamp
    # rules of one window (H200, batch 3) — a difference of summation order, not of the graph
    tok, model = _tok(), _model(torch.float32)
    rules, prompt = _rules(tok, timestamps), tok.sot_sequence(None, "transcribe", timestamps)
    torch.manual_seed(1)
    feats = torch.randn(batch, 80, 3000, device="cuda")
    with torch.inference_mode():
        eager = Runner(model, tok, use_graphs=False, fast=False, compile=False)
        graphed = Runner(model, tok, use_graphs=True, fast=False, compile=False)
        enc = eager.encode(feats)
        a = eager.decode(enc, prompt, rules, 100)
        b = graphed.decode(enc, prompt, rules, 100)
        c = graphed.decode(enc, prompt, rules, 100)  # replays the captured graphs
    _not_degenerate(a)
    assert [r.tokens for r in a] == [r.tokens for r in b] == [r.tokens for r in c]
    assert graphed.capture_seconds > 0


def test_single_stream_steps_match_eager():
    """The batch-1 fast step (compiled when Triton is there) and the Triton kernel step, in fp32
    so that a different summation order cannot flip a near-tie."""
    from voxbox.engines.asr.torch_whisper.decoding import Runner

    tok, model = _tok(), _model(torch.float32)
    rules, prompt = _rules(tok, True), tok.sot_sequence(None, "transcribe", True)
    torch.manual_seed(2)
    feats = torch.randn(1, 80, 3000, device="cuda")
    with torch.inference_mode():
        eager = Runner(model, tok, use_graphs=False, fast=False, compile=False)
        enc = eager.encode(feats)
        a = eager.decode(enc, prompt, rules, 100)
        fast = Runner(model, tok, use_graphs=True, kernels=False)
        b = fast.decode(enc, prompt, rules, 100)
        kern = Runner(model, tok, use_graphs=True, kernels=True)
        c = kern.decode(enc, prompt, rules, 100) if kern.kstep is not None else None
    _not_degenerate(a)
    assert fast.fast is not None
    assert a[0].tokens == b[0].tokens
    assert a[0].sum_logprob == pytest.approx(b[0].sum_logprob, rel=1e-3)
    if c is not None:
        assert a[0].tokens == c[0].tokens
        assert kern.kstep.pdl == (torch.cuda.get_device_capability()[0] >= 9)  # PDL launches where they exist
        from voxbox.engines.asr.torch_whisper.kernels import kernels_preferred

        default = Runner(model, tok, use_graphs=True)  # the Triton step by default where it is the faster one
        assert (default.kstep is not None) == kernels_preferred(torch.device("cuda")), default.kernel_error
    else:
        assert kern.kernel_error  # the kernel step was refused at load, and says why
        assert importlib.util.find_spec("triton") is None, kern.kernel_error  # with Triton it must load


def test_batched_windows_on_graphs_match_eager():
    """WindowBatcher's CUDA-graph prefills and steps (per-row positions, windows joining
    mid-decode; the third admission replays a prefill graph captured by the first) give each window
    the unbatched eager decoder's tokens and no-speech probability (fp32: batched and single-row
    GEMMs sum in different orders, which in fp16 can flip a near-tie)."""
    import threading

    from voxbox.engines.asr.torch_whisper.batcher import WindowBatcher, WindowRequest
    from voxbox.engines.asr.torch_whisper.decoding import Runner

    tok, model = _tok(), _model(torch.float32)
    torch.manual_seed(3)
    feats = torch.randn(5, 80, 3000, device="cuda")
    with torch.inference_mode():
        eager = Runner(model, tok, use_graphs=False, fast=False, compile=False)
        enc = eager.encode(feats)
        ts = [i % 2 == 0 for i in range(5)]
        ref = [eager.decode(enc[i : i + 1], tok.sot_sequence(None, "transcribe", ts[i]), _rules(tok, ts[i]),
                            40 + 10 * i)[0] for i in range(5)]
        want = [r.tokens for r in ref]
        graphed = Runner(model, tok, use_graphs=True, fast=False, compile=False)
        b = WindowBatcher(graphed, 8, threading.Lock())

        def req(i):
            return WindowRequest(tok.sot_sequence(None, "transcribe", ts[i]), _rules(tok, ts[i]), 40 + 10 * i,
                                 mel=feats[i])

        got: dict[int, Any] = {}
        handles = {id(h): i for i, h in enumerate(b.admit([req(0), req(1), req(2)]))}
        steps = 0
        while len(got) < 5:
            if steps == 7:  # two more join mid-decode
                handles.update({id(h): i + 3 for i, h in enumerate(b.admit([req(3)]))})
            if steps == 9:
                handles.update({id(h): i + 4 for i, h in enumerate(b.admit([req(4)]))})
            for h, outs, fin in b.step():
                if fin:
                    got[handles[id(h)]] = outs[0].result
                    b.drop(h)
            steps += 1
            assert steps < 500
    for w in want:
        assert len(set(w)) > 3, w
    assert [got[i].tokens for i in range(5)] == want
    assert [got[i].no_speech_prob for i in range(5)] == pytest.approx([r.no_speech_prob for r in ref], rel=1e-4)
    assert len(b._graphs) > 0
    assert b.prefill_graph_error is None
    # keys (windows, prompt length, timestamps): windows 0+2 together, 1, 3 (replays 1's), 4
    n_ts, n_plain = (len(tok.sot_sequence(None, "transcribe", t)) for t in (True, False))
    assert sorted(b._pf_graphs) == sorted({(2, n_ts, True), (1, n_plain, False), (1, n_ts, True)})


def test_idle_warm_up_captures_what_traffic_then_replays():
    """WindowBatcher.warm (called by the scheduler while idle) captures the default prompts'
    prefills and the greedy step buckets one per call; windows decoded afterwards replay them
    (no capture while the batch runs) and still give the eager decoder's tokens."""
    import threading

    from voxbox.engines.asr.torch_whisper.batcher import WindowBatcher, WindowRequest
    from voxbox.engines.asr.torch_whisper.decoding import KV_BUCKET, Runner
    from voxbox.engines.asr.torch_whisper.warm import WARM_KV_LEN

    tok, model = _tok(), _model(torch.float32)
    torch.manual_seed(5)
    feats = torch.randn(4, 80, 3000, device="cuda")
    prompts = {t: tok.sot_sequence(None, "transcribe", t) for t in (False, True)}
    ts = [False, True, False, False]
    with torch.inference_mode():
        eager = Runner(model, tok, use_graphs=False, fast=False, compile=False)
        enc = eager.encode(feats)
        want = [eager.decode(enc[i : i + 1], prompts[ts[i]], _rules(tok, ts[i]), 60)[0].tokens for i in range(4)]
        b = WindowBatcher(Runner(model, tok, use_graphs=True, fast=False, compile=False), 8, threading.Lock(),
                          warm_prompts=prompts)
        calls = 1
        while b.warm():
            calls += 1
            assert calls < 100
        assert b.warm() is False
        per_ts = 4 + 4 * (WARM_KV_LEN // KV_BUCKET)  # prefills of 1/2/4/8 windows; steps: 4 buckets x kv lengths
        assert b.warm_graphs == calls == 4 + 2 * per_ts  # first the encoder's pieces of 1, 2, 4, 8 windows
        assert sorted(b.runner._enc_graphs) == [1, 2, 4, 8] and b.runner.encoder_graph_error is None
        assert b.prefill_graph_error is None
        graphs, prefills = set(b._graphs), set(b._pf_graphs)
        got: dict[int, Any] = {}
        handles = {id(h): i for i, h in enumerate(b.admit([WindowRequest(prompts[ts[i]], _rules(tok, ts[i]), 60,
                                                                          mel=feats[i]) for i in range(4)]))}
        steps = 0
        while len(got) < 4:
            for h, outs, fin in b.step():
                if fin:
                    got[handles[id(h)]] = outs[0].result.tokens
                    b.drop(h)
            steps += 1
            assert steps < 200
    for w in want:
        assert len(set(w)) > 3, w  # the audio steers the decoder: not one repeated token
    assert [got[i] for i in range(4)] == want
    assert set(b._graphs) == graphs and set(b._pf_graphs) == prefills  # nothing captured during the batch


def test_a_solo_window_moved_into_the_batch_matches_eager():
    """A window decoded alone on the runner's graphed single-stream step, moved into a slot after 8
    tokens when another arrives (``waiting``), then stepped by the batch graphs beside the newcomer:
    both give the unbatched eager tokens."""
    import threading

    from voxbox.engines.asr.torch_whisper.batcher import WindowBatcher, WindowRequest
    from voxbox.engines.asr.torch_whisper.decoding import Runner

    tok, model = _tok(), _model(torch.float32)
    torch.manual_seed(4)
    feats = torch.randn(2, 80, 3000, device="cuda")
    prompt = tok.sot_sequence(None, "transcribe", True)
    with torch.inference_mode():
        eager = Runner(model, tok, use_graphs=False, fast=False, compile=False)
        enc = eager.encode(feats)
        want = [eager.decode(enc[i : i + 1], prompt, _rules(tok, True), 60)[0].tokens for i in range(2)]
        graphed = Runner(model, tok, use_graphs=True, fast=False, compile=False)
        b = WindowBatcher(graphed, 4, threading.Lock())
        b.solo_fast = True
        asked = [0]

        def waiting() -> int:
            asked[0] += 1
            return int(asked[0] >= 2)  # someone waits from the second end check on

        b.waiting = waiting
        first = b.admit([WindowRequest(prompt, _rules(tok, True), 60, mel=feats[0])])[0]
        assert first.done is None and first.slots and b.solo_moved == 1
        assert first.steps == 2 * graphed.check_every  # tokens chosen when it moved
        b.admit([WindowRequest(prompt, _rules(tok, True), 60, mel=feats[1])])[0]
        got: dict[int, list[int]] = {}
        for _ in range(200):
            for h, outs, fin in b.step():
                if fin:
                    got[0 if h is first else 1] = outs[0].result.tokens
                    b.drop(h)
            if len(got) == 2:
                break
    for w in want:
        assert len(set(w)) > 3, w
    assert [got[0], got[1]] == want


def test_encoder_graphs_match_eager():
    """Encoder CUDA graphs (a batch of 37 replays the 32-, 4- and 1-window graphs): the eager
    encoder's output on the same pieces bit for bit (and the one-batch eager output within fp16
    rounding: GEMMs of another size may sum in another order); outside inference mode, eager."""
    from voxbox.engines.asr.torch_whisper.decoding import ENCODER_GRAPH_MAX, Runner

    tok, model = _tok(), _model()
    torch.manual_seed(4)
    feats = torch.randn(ENCODER_GRAPH_MAX + 5, 80, 3000, device="cuda")
    eager = Runner(model, tok, use_graphs=False, fast=False, compile=False)
    graphed = Runner(model, tok, use_graphs=True, fast=False, compile=False)
    m = ENCODER_GRAPH_MAX
    with torch.inference_mode():
        whole = eager.encode(feats)
        a = torch.cat([eager.encode(feats[:m]), eager.encode(feats[m : m + 4]), eager.encode(feats[m + 4 :])])
        b = graphed.encode(feats)
        c = graphed.encode(feats[:3])  # replays the 2- and 1-window graphs
        c_ref = torch.cat([eager.encode(feats[:2]), eager.encode(feats[2:3])])
    assert graphed.encoder_graph_error is None
    assert sorted(graphed._enc_graphs) == [1, 2, 4, m]
    assert torch.equal(a, b) and torch.equal(c_ref, c)
    torch.testing.assert_close(b, whole, rtol=2e-2, atol=2e-2)
    assert b.abs().max() > 0.1  # not a blank output
    with torch.no_grad():
        assert torch.equal(graphed.encode(feats[:2]), eager.encode(feats[:2]))
        assert not graphed._enc_graphs.get(3)
