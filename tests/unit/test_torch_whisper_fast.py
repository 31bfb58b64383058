"""torch-whisper's FastStep (the GPU single-token step, eager here): same tokens as Decoder.forward."""

from __future__ import annotations

import pytest
from whisper_steer import steer_weights

torch = pytest.importorskip("torch")


@pytest.mark.parametrize("timestamps", [False, True])
def test_fast_step_decodes_like_decoder_forward(timestamps):
    from voxbox.engines.asr.torch_whisper.decoding import Rules, Runner
    from voxbox.engines.asr.torch_whisper.fast import FastStep
    from voxbox.engines.asr.torch_whisper.model import Whisper, WhisperDims
    from voxbox.engines.asr.whisper.tokens import WhisperTokenizer
    from voxbox.models.bundled import whisper_tiny_en_dir

    torch.set_num_threads(1)
    tok = WhisperTokenizer.from_dir(whisper_tiny_en_dir(), 51864)
    dims = WhisperDims(n_mels=80, vocab_size=51864, d_model=64, encoder_layers=1, encoder_heads=4, encoder_ffn=128,
                       decoder_layers=3, decoder_heads=4, decoder_ffn=128)
    torch.manual_seed(0)
    model = Whisper(dims).eval()
    steer_weights(model)
    model.fuse_for_decoding()
    specials = tuple(range(tok.eot + 1, tok.timestamp_begin))
    rules = Rules(suppress=specials, begin_suppress=(tok.eot,), timestamps=timestamps)
    prompt = tok.sot_sequence(None, "transcribe", timestamps)
    feats = torch.randn(2, 80, 3000)
    with torch.inference_mode():
        plain = Runner(model, tok, use_graphs=False, fast=False)
        fast = Runner(model, tok, use_graphs=False, fast=True, compile=False)
        assert isinstance(fast.fast, FastStep) and not fast.fast.compiled and plain.fast is None
        enc = plain.encode(feats)
        a = plain.decode(enc, prompt, rules, 70)  # up to 70 new tokens: may cross a KV_BUCKET boundary
        b = fast.decode(enc, prompt, rules, 70)
        # the step outputs themselves agree (fp32): compare hidden states at one position
        st = fast._state(2)
        h_fast = fast.fast(st.tokens[:, 5:6], torch.tensor([5]), st.cache, 64)
        h_ref = model.decoder(st.tokens[:, 5:6], torch.tensor([5]), st.cache, 64)
        math = Runner(model, tok, use_graphs=False, fast=True, compile=False, self_attn="math")
        h_math = math.fast(st.tokens[:, 5:6], torch.tensor([5]), st.cache, 64)
    assert [r.tokens for r in a] == [r.tokens for r in b]
    assert len(set(a[0].tokens)) > 3  # not a degenerate repeat of one token
    assert [r.sum_logprob for r in a] == pytest.approx([r.sum_logprob for r in b], rel=1e-5)
    torch.testing.assert_close(h_fast, h_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h_math, h_ref, rtol=1e-4, atol=1e-4)


def test_fast_step_needs_fused_layout():
    from voxbox.engines.asr.torch_whisper.fast import FastStep, compile_available
    from voxbox.engines.asr.torch_whisper.model import Whisper, WhisperDims

    dims = WhisperDims(n_mels=80, vocab_size=100, d_model=32, encoder_layers=1, encoder_heads=2, encoder_ffn=64,
                       decoder_layers=1, decoder_heads=2, decoder_ffn=64)
    with pytest.raises(ValueError):
        FastStep(Whisper(dims))
    assert compile_available(torch.device("cpu")) is False
