"""omnivoice engine on a tiny random checkpoint in the upstream layout: synthesis, placement,
streaming, validation, loading errors and the CLI.

The model directory is written by ``voxbox.engines.tts.omnivoice._random.write_random_model`` (the
helper the GPU benchmark uses at the real shapes) and loaded through the real loader; upstream
parity is ``test_omnivoice_parity.py``.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import wave

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytest.importorskip("safetensors")
if importlib.util.find_spec("omnivoice") is None:
    pytest.skip("omnivoice is not installed (pip install --no-deps omnivoice)", allow_module_level=True)

from voxbox.engines.base import EncodedVoice, TTSEngine  # noqa: E402 - after the importorskip guards
from voxbox.errors import (  # noqa: E402
    BadInputError,
    ModelLoadError,
    ModelNotFoundError,
    RequestCancelledError,
    VoiceNotFoundError,
)
from voxbox.types import Audio, CancelToken  # noqa: E402

RATE = 16000
TEXT = "Hello there. This is a test."


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Toy-sized ops: one intra-op thread is faster (and fair to a shared 2-core box); restored after."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    from voxbox.engines.tts.omnivoice._random import write_random_model

    return write_random_model(tmp_path_factory.mktemp("omnivoice") / "model", "tiny")


@pytest.fixture(scope="module")
def engine(model_dir):
    from voxbox.engines.registry import load_engine

    return load_engine("omnivoice", str(model_dir), device="cpu")


@pytest.fixture(scope="module")
def clip():
    t = np.arange(RATE, dtype=np.float32) / RATE
    return Audio((0.05 * np.sin(2 * np.pi * 200 * t) * (1.2 + np.sin(2 * np.pi * 2 * t))).astype(np.float32), RATE)


def test_engine_surface(engine):
    assert isinstance(engine, TTSEngine)
    assert [c.name for c in engine.components()] == ["backbone", "decoder", "encoder"]
    assert all(c.params > 0 for c in engine.components())
    assert engine.info.sample_rate == RATE and engine.info.supports_cloning
    assert "alloy" in engine.info.extra["openai_voices"]
    # the upstream package's __init__ (torchaudio, pydub, soundfile) never ran
    assert "omnivoice.models.omnivoice" not in sys.modules


def test_synthesize_seeded(engine):
    stream = engine.stream(TEXT, steps=4, seed=7)
    audio = stream.collect()
    assert audio.sample_rate == RATE and np.isfinite(audio.samples).all()
    assert np.abs(audio.samples).max() == pytest.approx(0.5, abs=1e-3)  # no reference: peak-normalised
    frames = stream.details["frames"]
    assert stream.details["pieces"] == 1 and frames[0] > 0
    assert {"prompt", "sample", "decode", "postprocess"} <= set(stream.timings.as_dict())
    again = engine.synthesize(TEXT, steps=4, seed=7)
    np.testing.assert_array_equal(again.samples, audio.samples)
    other = engine.synthesize(TEXT, steps=4, seed=8, postprocess=False)
    raw = engine.synthesize(TEXT, steps=4, seed=7, postprocess=False)
    assert len(raw.samples) == frames[0] * 320 + 2 * 1600  # frames x hop + 0.1 s pads
    assert not np.array_equal(other.samples, raw.samples)


def test_voice_design_and_openai_voice_names(engine):
    designed = engine.synthesize(
        TEXT, "alloy", steps=3, seed=1, voice_description="female, low pitch", postprocess=False
    )
    plain = engine.synthesize(TEXT, "auto", steps=3, seed=1, postprocess=False)
    assert designed.samples.shape == plain.samples.shape
    assert not np.array_equal(designed.samples, plain.samples)  # the description is in the prompt


def test_hybrid_placement_two_dtypes(model_dir):
    from voxbox.engines.tts import omnivoice

    eng = omnivoice.load(model_dir, device="cpu", placement={"backbone": "cpu:bfloat16", "decoder": ("cpu", "float32")})
    assert eng.info.extra["placement"]["backbone"] == ("cpu", "bfloat16")
    assert eng.info.extra["placement"]["decoder"] == ("cpu", "float32")
    assert eng.sampler.model.embed_tokens.weight.dtype == torch.bfloat16
    assert next(eng.codec.decoder.parameters()).dtype == torch.float32
    audio = eng.synthesize(TEXT, steps=2, seed=0)
    assert np.isfinite(audio.samples).all() and audio.samples.size > 0


def test_decoder_windows_join_to_one_call(engine, clip):
    """With a reference voice and no silence trimming the clean-up is elementwise, so a piece is
    decoded in windows (context on both sides): the windows join to the one-window decode."""
    voice = engine.encode_voice(clip, "A short reference")
    kw = dict(voice=voice, steps=2, seed=2, postprocess=False)
    chunks = [c.samples for c in engine.stream("Hi there.", window_frames=9, first_window_frames=3, **kw)]
    whole = engine.synthesize("Hi there.", window_frames=100_000, first_window_frames=100_000, **kw).samples
    assert len(chunks) >= 4
    joined = np.concatenate(chunks)
    assert joined.shape == whole.shape
    np.testing.assert_allclose(joined, whole, atol=1e-5, rtol=0)


def test_long_text_streams_piece_by_piece(engine):
    text = "One sentence here. Another sentence there. A third one now. And the last."
    stream = engine.stream(text, steps=2, seed=4, chunk_threshold=0.5, chunk_seconds=0.5)
    chunks = list(stream)
    assert stream.details["pieces"] == len(chunks) >= 3
    assert " ".join(c.text for c in chunks) == text
    assert [c.index for c in chunks] == list(range(len(chunks)))


def test_voice_cache_and_transcripts(engine, clip):
    hits = engine.voice_cache_hits
    v1 = engine.encode_voice(clip, "words")
    v2 = engine.encode_voice(clip, None)
    assert engine.voice_cache_hits >= hits + 1 and torch.equal(v1.data["codes"], v2.data["codes"])
    assert v1.key[0] == "omnivoice" and len(v1.key[2]) == 64
    with pytest.raises(BadInputError, match="transcript"):
        engine.stream(TEXT, voice=v2)  # cloning needs what the clip says
    audio = engine.synthesize(TEXT, voice=v2, reference_text="words", steps=2, seed=0)
    assert audio.samples.size > 0


def test_validation_before_streaming(engine, clip):
    for kwargs, err in [
        (dict(text="   "), BadInputError),
        (dict(nonsense=1), BadInputError),
        (dict(steps=0), BadInputError),
        (dict(language="klingonese"), BadInputError),
        (dict(voice_description="purple, sparkly"), BadInputError),
        (dict(voice_description="male, female"), BadInputError),
        (dict(voice="nobody"), VoiceNotFoundError),
        (dict(voice=clip), BadInputError),  # a raw clip without reference_text
        (dict(voice=EncodedVoice(("echo-tts", "m", "x"), {"latent": 0})), BadInputError),
        (dict(duration=-1.0), BadInputError),
        (dict(speed=9.0), BadInputError),
    ]:
        kwargs = {"text": TEXT, **kwargs}
        with pytest.raises(err):
            engine.stream(**kwargs)


def test_cancel_stops_the_stream(engine):
    token = CancelToken()
    stream = engine.stream(TEXT, steps=2, cancel=token)
    token.cancel("client went away")
    with pytest.raises(RequestCancelledError):
        next(iter(stream))


def _copy(model_dir, tmp_path):
    dst = tmp_path / "m"
    shutil.copytree(model_dir, dst)
    return dst


def test_loading_errors_are_one_clear_message(model_dir, tmp_path):
    from voxbox.engines.tts import omnivoice

    with pytest.raises(ModelNotFoundError, match="does not exist"):
        omnivoice.load(tmp_path / "nowhere", device="cpu")
    d = _copy(model_dir, tmp_path)
    (d / "tokenizer.json").unlink()
    (d / "audio_tokenizer" / "model.safetensors").unlink()
    with pytest.raises(ModelNotFoundError) as exc:
        omnivoice.load(d, device="cpu")
    msg = str(exc.value)
    assert "tokenizer.json" in msg and "audio_tokenizer/model.safetensors" in msg and "\n" not in msg

    d = _copy(model_dir, tmp_path / "shape")
    cfg = json.loads((d / "config.json").read_text())
    cfg["llm_config"]["intermediate_size"] = 96
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"has shape \(128, 64\), config.json implies \(96, 64\)"):
        omnivoice.load(d, device="cpu")

    d = _copy(model_dir, tmp_path / "corrupt")
    (d / "model.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all")
    with pytest.raises(ModelLoadError, match="not a valid safetensors"):
        omnivoice.load(d, device="cpu")

    d = _copy(model_dir, tmp_path / "truncated")
    data = (d / "audio_tokenizer" / "model.safetensors").read_bytes()
    (d / "audio_tokenizer" / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="audio_tokenizer"):
        omnivoice.load(d, device="cpu")


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "voxbox.cli", *args], capture_output=True, text=True, timeout=timeout)


def test_cli_engines_lists_omnivoice():
    proc = _cli("engines")
    assert proc.returncode == 0, proc.stderr
    line = next(ln for ln in proc.stdout.splitlines() if "omnivoice" in ln)
    assert "missing" not in line


def test_cli_speak_with_voice_description(model_dir, tmp_path):
    out = tmp_path / "designed.wav"
    proc = _cli("speak", TEXT, "--engine", "omnivoice", "--model-dir", str(model_dir), "--device", "cpu",
                "--voice-description", "male, british accent", "--threads", "1", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    with wave.open(str(out)) as w:
        assert w.getframerate() == RATE and w.getnframes() > RATE // 10
    bad = _cli("speak", TEXT, "--engine", "omnivoice", "--model-dir", str(tmp_path / "missing"), "--device", "cpu",
               "-o", str(tmp_path / "x.wav"))
    lines = [ln for ln in bad.stderr.splitlines() if ln.strip()]
    assert bad.returncode != 0 and len(lines) == 1 and "Traceback" not in bad.stderr
    wrong = _cli("speak", TEXT, "--voice-description", "female", "-o", str(tmp_path / "y.wav"))  # hibari: no design
    assert wrong.returncode != 0 and "voice_description" in wrong.stderr and "Traceback" not in wrong.stderr


def test_planner_places_components_per_quirks():
    """The spec's components through the planner: the seed's Strix Halo gets the backbone in fp16 on
    the iGPU (bf16 GEMMs hang gfx1151) and the conv codec on the CPU (MIOpen workspace)."""
    from pathlib import Path

    from voxbox.engines.tts.omnivoice import SPEC
    from voxbox.hardware.detect import load_machine

    try:  # the planner's entry point (one function since the planner merge)
        from voxbox.hardware.planner import plan as _plan

        def plan_engine(label, comps, machine):
            return _plan(comps, machine, None, None, label=label)
    except ImportError:
        from voxbox.hardware.plan import plan_engine

    data = Path(__file__).parents[1] / "data" / "machines"
    plan = plan_engine("omnivoice", list(SPEC.components), load_machine(data / "strix-halo-gfx1151.json"))
    bb, dec, enc = plan["backbone"], plan["decoder"], plan["encoder"]
    assert (bb.device, bb.dtype) == ("cuda", "float16") and "gfx1151-bf16-gemm-hang" in bb.reason
    assert dec.device == "cpu" and "gfx1151-miopen-conv" in dec.reason and enc.device == "cpu"
    plan = plan_engine("omnivoice", list(SPEC.components), load_machine(data / "rtx5090-sm120.json"))
    assert (plan["backbone"].device, plan["backbone"].dtype) == ("cuda", "bfloat16")
    assert plan["decoder"].device == "cuda"


def test_graph_path_buffers_match_eager(engine):
    """The CUDA-graph path's buffer handling (static prompt row, pre-drawn noise, token reset, one
    graph per shape) checked on the CPU with a recorder that replays the loop eagerly: two prompts
    of the same shape through one "graph" give what the eager loop gives for each."""
    from types import SimpleNamespace

    from voxbox.engines.spec import build_options
    from voxbox.engines.tts.omnivoice import OmniVoiceOptions
    from voxbox.engines.tts.omnivoice._sampler import SampleParams, Sampler

    graphed = Sampler(engine.sampler.model, torch.device("cpu"), torch.float32)
    graphed._record = lambda loop: SimpleNamespace(replay=loop)
    graphed.use_graphs = True
    params = SampleParams(steps=4)
    for text in ("Hello there, friend.", "Jello where, trends."):  # same byte length: same shape
        call = engine._parse(text, None, None, build_options(OmniVoiceOptions, {}))
        prompt = engine.prompt(call, text, None, None, 20)
        want = engine.sampler.sample(prompt, params, torch.Generator().manual_seed(5))
        got = graphed.sample(prompt, params, torch.Generator().manual_seed(5))
        assert torch.equal(got, want) and int((got == engine.c.mask_id).sum()) == 0
    assert len(graphed._graphs) == 1 and graphed.graph_error is None
