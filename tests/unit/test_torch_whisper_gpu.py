"""torch-whisper on a CUDA/ROCm GPU: CUDA-graph replay decodes exactly what the eager step decodes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA/ROCm GPU"),
]


@pytest.mark.parametrize("timestamps", [False, True])
@pytest.mark.parametrize("batch", [1, 3])
def test_graph_replay_matches_eager(batch, timestamps):
    from voxbox.engines.asr.torch_whisper.decoding import Rules, Runner
    from voxbox.engines.asr.torch_whisper.model import Whisper, WhisperDims
    from voxbox.engines.asr.whisper.tokens import WhisperTokenizer
    from voxbox.models.bundled import whisper_tiny_en_dir

    tok = WhisperTokenizer.from_dir(whisper_tiny_en_dir(), 51864)
    dims = WhisperDims(n_mels=80, vocab_size=51864, d_model=128, encoder_layers=2, encoder_heads=4, encoder_ffn=256,
                       decoder_layers=2, decoder_heads=4, decoder_ffn=256)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = Whisper(dims).half().eval()
    model.fuse_for_decoding()
    rules = Rules(suppress=(), begin_suppress=(tok.eot,), timestamps=timestamps)
    prompt = tok.sot_sequence(None, "transcribe", timestamps)
    feats = torch.randn(batch, 80, 3000, device="cuda")
    with torch.inference_mode():
        eager = Runner(model, tok, use_graphs=False)
        graphed = Runner(model, tok, use_graphs=True)
        enc = eager.encode(feats)
        a = eager.decode(enc, prompt, rules, 150)
        b = graphed.decode(enc, prompt, rules, 150)
        c = graphed.decode(enc, prompt, rules, 150)  # replays the captured graphs
    assert [r.tokens for r in a] == [r.tokens for r in b] == [r.tokens for r in c]
    assert graphed.capture_seconds > 0
