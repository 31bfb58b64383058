"""torch-whisper vs transformers' WhisperForConditionalGeneration.generate: token-exact greedy parity.

Random-weight tiny configs (fp32, CPU) with the real Whisper vocabularies (bundled tokenizer.json),
English-only and multilingual, with and without timestamps, batch 1 and 4. The engine loads the same
weights from an HF checkpoint directory (config.json + model.safetensors + tokenizer.json).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from whisper_steer import steer_weights  # noqa: E402

from voxbox.models.bundled import BUNDLES, package_dir, whisper_tiny_en_dir  # noqa: E402

MAX_NEW = 24


def _tokenizer_json(multilingual: bool) -> Path:
    if multilingual:
        return package_dir(BUNDLES["whisper-base.part1"]) / "tokenizer.json"
    return whisper_tiny_en_dir() / "tokenizer.json"


def _build(tmp: Path, multilingual: bool):
    """A random tiny Whisper saved as an HF checkpoint; returns (hf model, generation config, engine)."""
    from safetensors.torch import save_file
    from transformers import GenerationConfig, WhisperConfig, WhisperForConditionalGeneration

    from voxbox.engines.asr.torch_whisper import load
    from voxbox.engines.asr.whisper.tokens import WhisperTokenizer

    vocab = 51865 if multilingual else 51864
    tok = WhisperTokenizer.from_dir(_tokenizer_json(multilingual).parent, vocab)
    assert tok.multilingual is multilingual
    cfg = WhisperConfig(
        vocab_size=vocab, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, num_mel_bins=80,
        max_source_positions=1500, max_target_positions=448,
        decoder_start_token_id=tok.sot, eos_token_id=tok.eot, pad_token_id=tok.eot, bos_token_id=tok.eot,
    )
    torch.manual_seed(1234 + multilingual)
    hf = WhisperForConditionalGeneration(cfg).eval()
    steer_weights(hf)
    ckpt = tmp / ("multi" if multilingual else "en")
    ckpt.mkdir()
    state = {k: v.contiguous() for k, v in hf.state_dict().items() if k != "proj_out.weight"}
    save_file(state, str(ckpt / "model.safetensors"))
    shutil.copy(_tokenizer_json(multilingual), ckpt / "tokenizer.json")
    (ckpt / "config.json").write_text(json.dumps(cfg.to_dict()))
    engine = load(str(ckpt), device="cpu")
    gen = dict(
        decoder_start_token_id=tok.sot, eos_token_id=tok.eot, pad_token_id=tok.eot, bos_token_id=tok.eot,
        no_timestamps_token_id=tok.no_timestamps, max_initial_timestamp_index=50, max_length=448,
        suppress_tokens=list(engine.suppress), begin_suppress_tokens=list(engine.begin_suppress),
        is_multilingual=multilingual,
    )
    if multilingual:
        gen["lang_to_id"] = {f"<|{c}|>": i for c, i in tok.language_ids.items()}
        gen["task_to_id"] = {"transcribe": tok.transcribe, "translate": tok.translate}
    hf.generation_config = GenerationConfig(**gen)
    return hf, engine


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.set_num_threads(1)  # the CI box has 2 shared cores; threads only add contention here
    tmp = tmp_path_factory.mktemp("tw_parity")
    return {m: _build(tmp, m) for m in (False, True)}


def _features(batch: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 80, 3000, generator=g)


def _hf_tokens(hf, feats, timestamps: bool, **kw) -> list[list[int]]:
    out = hf.generate(
        feats, max_new_tokens=MAX_NEW, return_timestamps=timestamps, force_unique_generate_call=True,
        return_dict_in_generate=True, **kw,
    )
    eot = hf.generation_config.eos_token_id
    rows = []
    for row in out.sequences.tolist():
        sot = row.index(hf.generation_config.decoder_start_token_id)
        n_prompt = 1 + (2 if hf.generation_config.is_multilingual else 0) + (0 if timestamps else 1)
        gen = row[sot + n_prompt :]
        rows.append(gen[: gen.index(eot)] if eot in gen else gen)
    return rows


def _ours(engine, feats, timestamps: bool, language=None, task="transcribe") -> list[list[int]]:
    from voxbox.engines.asr.torch_whisper.engine import TranscribeOptions

    opts = TranscribeOptions(without_timestamps=not timestamps)
    with torch.inference_mode():
        enc = engine.runner.encode(feats)
        prompt = engine.tokenizer.sot_sequence(language, task, timestamps)
        res = engine.runner.decode(enc, prompt, engine._rules(opts), MAX_NEW)
    return [r.tokens for r in res]


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize("timestamps", [False, True])
def test_greedy_parity_english_only(models, batch, timestamps):
    hf, engine = models[False]
    feats = _features(batch, seed=10 + batch + 2 * timestamps)
    ref = _hf_tokens(hf, feats, timestamps)
    ours = _ours(engine, feats, timestamps)
    assert ours == ref
    if timestamps:
        assert any(t >= engine.tokenizer.timestamp_begin for row in ours for t in row)
    if batch > 1:
        assert len({tuple(r) for r in ours}) > 1, "rows should differ (audio must steer the decoder)"


@pytest.mark.parametrize("batch", [1, 4])
@pytest.mark.parametrize(
    "timestamps,task,language", [(False, "transcribe", "de"), (True, "translate", "fr"), (True, "transcribe", "en")]
)
def test_greedy_parity_multilingual(models, batch, timestamps, task, language):
    hf, engine = models[True]
    feats = _features(batch, seed=20 + batch + 3 * timestamps)
    ref = _hf_tokens(hf, feats, timestamps, language=language, task=task)
    assert _ours(engine, feats, timestamps, language, task) == ref


def test_language_detection_matches(models):
    hf, engine = models[True]
    feats = _features(4, seed=5)
    ref = hf.detect_language(feats).tolist()
    with torch.inference_mode():
        probs = engine.runner.detect_language(engine.runner.encode(feats))
    ours = [engine.tokenizer.language_ids[max(p, key=p.get)] for p in probs]
    assert ours == ref


def test_fused_decoding_layout_gives_same_tokens(models):
    """The GPU layout (one Q/K/V GEMM, query scale folded into the weights) decodes the same."""
    import copy

    hf, engine = models[True]
    feats = _features(2, seed=7)
    ref = _ours(engine, feats, True, "en")
    fused = copy.copy(engine)
    fused.model = copy.deepcopy(engine.model)
    fused.model.fuse_for_decoding()
    from voxbox.engines.asr.torch_whisper.decoding import Runner

    fused.runner = Runner(fused.model, engine.tokenizer, use_graphs=False)
    assert fused.model.decoder.layers[0].self_attn.q_proj is None
    assert _ours(fused, feats, True, "en") == ref
