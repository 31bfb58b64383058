"""fish-s2 on a CUDA GPU (skipped elsewhere): the codec's windows decoded from CUDA graphs.

The tiny random checkpoint of ``test_fish_s2_engine`` loaded on the GPU; run on the GPU machine
with ``pytest tests/unit/test_fish_s2_gpu.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")
if not torch.cuda.is_available():
    pytest.skip("needs a CUDA GPU", allow_module_level=True)

from voxbox.engines.tts import fish_s2  # noqa: E402
from voxbox.engines.tts.fish_s2.codec import DecodeGraphs  # noqa: E402


@pytest.fixture(autouse=True)
def _no_tf32():
    """Exact float32 (cuDNN convolutions default to TF32): graphs and eager calls of different
    shapes would otherwise differ by TF32 rounding, hiding whether the graphs are right."""
    conv, mm = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = conv, mm


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from test_fish_s2_engine import build_tiny

    root = tmp_path_factory.mktemp("fish_s2_gpu")
    build_tiny(root)
    eng = fish_s2.load(root, device="cuda", dtype="float32", compile=False, max_voices=2, eos_check=4)
    yield eng
    eng.close()


def test_codec_graphs_equal_eager_decode(engine):
    codec = engine.codec
    graphs = DecodeGraphs(codec, limit=2)
    gen = torch.Generator().manual_seed(0)
    nq = engine.cfg.num_codebooks
    for shape in [(1, nq, 4), (3, nq, 9), (1, nq, 4), (2, nq, 5)]:  # a repeat; a third shape beyond the limit
        codes = torch.randint(0, 64, shape, generator=gen).cuda()
        want = codec.decode_batch(codes)
        got = graphs.decode(codes)
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=5e-5)  # padded calls: another summation order
    assert graphs.error is None
    assert sorted(graphs.graphs) == [(1, nq, 4), (4, nq, 16)]  # 3 x 9 padded; the third shape decoded eagerly


def test_batcher_warms_padded_codec_shapes_and_streams_match_unbatched(engine):
    """FishBatcher.warm captures the padded codec shapes and prefills while idle; streams through
    the runtime's scheduler then give the unbatched engine's codes and audio (greedy, float32),
    their prefill and codec calls replayed from graphs."""
    from voxbox.engines.tts.fish_s2.batcher import FishBatcher
    from voxbox.runtime.batching import BatchConfig, Scheduler

    kw = dict(temperature=0, max_frames=20, logit_bias={engine.cfg.eos_token_id: -1e4}, first_window=3, window=5,
              context_frames=40)  # the batch cuts windows elsewhere: enough left context makes that exact
    texts = ["One voice, one sentence.", "A second, slightly longer sentence here.", "Third."]
    streams = [engine.stream(t, seed=11 + i, **kw) for i, t in enumerate(texts)]
    want = [np.concatenate([c.samples for c in st]) for st in streams]
    want_codes = [st.details["codes"] for st in streams]
    b = FishBatcher(engine, 4)
    calls = 1
    while b.warm():
        calls += 1
        assert calls < 100
    warmed = set(engine.codec_graphs.graphs)
    assert len(warmed) >= 2 * len(b._codec_rows)  # the first window's frames and more, for 1/2/4/8 windows
    assert {k[1] for k in b.runner._graphs if k[0] == "prefill"} == {1, 2, 4}  # rows; 4 slots
    sched = Scheduler(b, BatchConfig(max_batch=4, window_ms=20), name="fish")
    engine.use_scheduler(sched)
    try:
        import threading

        got: list[Any] = [None] * 3
        codes: list[Any] = [None] * 3

        def go(i: int) -> None:
            st = engine.stream(texts[i], seed=11 + i, **kw)
            got[i] = np.concatenate([c.samples for c in st])
            codes[i] = st.details["codes"]

        threads = [threading.Thread(target=go, args=(i,)) for i in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
    finally:
        engine.use_scheduler(None)
        sched.close()
    st = b.stats()
    assert st["static_prefills"] >= 1 and st["prefill_graph_error"] is None and st["codec_graph_error"] is None
    for c, w in zip(codes, want_codes, strict=True):
        assert torch.equal(c, w)
    for g, w in zip(got, want, strict=True):
        assert g.shape == w.shape
        np.testing.assert_allclose(g, w, atol=1e-4)


def test_streamed_windows_from_graphs_equal_the_whole_decode(engine):
    kw = dict(seed=7, max_frames=24, logit_bias={engine.cfg.eos_token_id: -1e4}, first_window=3, window=5)
    stream = engine.stream("Streaming should not change the audio.", context_frames=40, **kw)
    streamed = np.concatenate([c.samples for c in stream])
    whole = engine.codec.decode(stream.details["codes"]).cpu().numpy()
    assert streamed.shape == whole.shape
    np.testing.assert_allclose(streamed, whole, atol=1e-4)
    assert engine.codec_graphs.graphs and engine.codec_graphs.error is None
