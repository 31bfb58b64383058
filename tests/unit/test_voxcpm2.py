"""voxcpm2 engine on a tiny random checkpoint in the upstream layout: synthesis, placement, the
graph-path bookkeeping, streaming, validation, loading errors and the CLI (upstream parity is
``test_voxcpm2_parity.py``)."""

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
pytest.importorskip("einops")
if importlib.util.find_spec("voxcpm") is None:
    pytest.skip("voxcpm is not installed (pip install --no-deps voxcpm)", allow_module_level=True)

from voxbox.engines.base import EncodedVoice, TTSEngine  # noqa: E402
from voxbox.errors import (  # noqa: E402
    BadInputError,
    ModelLoadError,
    ModelNotFoundError,
    RequestCancelledError,
    UnsupportedOperationError,
    VoiceNotFoundError,
)
from voxbox.types import Audio, CancelToken  # noqa: E402

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
    from voxbox.engines.tts.voxcpm2._random import write_random_model

    return write_random_model(tmp_path_factory.mktemp("voxcpm2") / "model", "tiny")


@pytest.fixture(scope="module")
def engine(model_dir):
    from voxbox.engines.registry import load_engine

    return load_engine("voxcpm2", str(model_dir), device="cpu")


def test_engine_surface(engine):
    assert isinstance(engine, TTSEngine)
    assert [c.name for c in engine.components()] == ["lm", "dit", "vae"]
    assert all(c.params > 0 for c in engine.components())
    assert engine.info.sample_rate == 48000 and engine.info.supports_cloning
    assert "voxcpm" not in sys.modules  # upstream's package __init__ (torchaudio, librosa) never ran


def test_synthesize_seeded_and_forced_length(engine):
    stream = engine.stream(TEXT, timesteps=3, seed=5, min_len=6, max_len=6)
    audio = stream.collect()
    assert stream.details["patches"] == 6 and audio.sample_rate == 48000
    assert len(audio.samples) == 6 * 4 * 1920  # patches x 4 latent frames x 1920 samples (48 kHz)
    assert np.isfinite(audio.samples).all() and audio.samples.std() > 0
    assert {"prompt", "sample", "decode"} <= set(stream.timings.as_dict())
    again = engine.synthesize(TEXT, timesteps=3, seed=5, min_len=6, max_len=6).samples
    np.testing.assert_array_equal(again, audio.samples)
    other = engine.synthesize(TEXT, timesteps=3, seed=6, min_len=6, max_len=6).samples
    assert not np.array_equal(other, audio.samples)


def test_hybrid_placement(model_dir):
    from voxbox.engines.tts import voxcpm2

    eng = voxcpm2.load(model_dir, device="cpu", placement={"lm": "cpu:bfloat16", "dit": "cpu:float32"})
    assert eng.info.extra["placement"]["lm"] == ("cpu", "bfloat16")
    assert eng.net.base_lm.layers[0].mlp.up_proj.weight.dtype == torch.bfloat16
    assert next(eng.net.feat_decoder.parameters()).dtype == torch.float32
    assert next(eng.vae.parameters()).dtype == torch.float32
    audio = eng.synthesize(TEXT, timesteps=2, seed=0, min_len=3, max_len=3)
    assert np.isfinite(audio.samples).all() and len(audio.samples) == 3 * 4 * 1920


def test_graph_path_bookkeeping_matches_eager(engine):
    """The CUDA-graph path (one captured step replayed, stop flags read every few steps, steps past
    the stop dropped), checked on the CPU with a recorder that replays the step eagerly."""
    from types import SimpleNamespace

    from voxbox.engines.tts.voxcpm2._runner import GenParams

    runner = engine.runner
    prompt = engine.prompt(TEXT, None)
    for params in (GenParams(timesteps=3, min_len=2, max_len=40), GenParams(timesteps=2, min_len=7, max_len=7)):
        eager = [p.clone() for p in runner.run(prompt, params, torch.Generator().manual_seed(9))]
        runner.use_graphs, runner._graph = True, {}
        runner._record = lambda step: SimpleNamespace(replay=step)
        runner.check_every = 3
        try:
            graphed = [p.clone() for p in runner.run(prompt, params, torch.Generator().manual_seed(9))]
        finally:
            runner.use_graphs, runner._graph = False, {}
            del runner._record
        assert len(graphed) == len(eager) and 2 < len(eager) <= params.max_len
        for a, b in zip(graphed, eager, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_streaming_windows_join_to_one_window(engine):
    kw = dict(timesteps=2, seed=3, min_len=7, max_len=7)
    chunks = [c.samples for c in engine.stream(TEXT, first_window_patches=1, window_patches=2, **kw)]
    whole = engine.synthesize(TEXT, first_window_patches=100, window_patches=100, **kw).samples
    assert len(chunks) == 4  # 1 + 2 + 2 + 2 patches
    np.testing.assert_allclose(np.concatenate(chunks), whole, atol=1e-5, rtol=0)


def test_reference_voice_cache(engine):
    clip = Audio((0.2 * np.sin(np.arange(24000) * 0.03)).astype(np.float32), 24000)  # resampled to 16 kHz
    hits = engine.voice_cache_hits
    v1 = engine.encode_voice(clip, "what it says")
    v2 = engine.encode_voice(clip)
    assert engine.voice_cache_hits == hits + 1 and torch.equal(v1.data["feats"], v2.data["feats"])
    assert v1.data["feats"].shape[1:] == (4, 8) and v1.transcript == "what it says"
    a = engine.synthesize(TEXT, voice=v1, timesteps=2, seed=1, min_len=2, max_len=2).samples
    b = engine.synthesize(TEXT, voice=clip, timesteps=2, seed=1, min_len=2, max_len=2).samples
    c = engine.synthesize(TEXT, timesteps=2, seed=1, min_len=2, max_len=2).samples
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)  # the reference is in the prompt


def test_validation_before_streaming(engine):
    for kwargs, err in [
        (dict(text=" "), BadInputError),
        (dict(nonsense=1), BadInputError),
        (dict(timesteps=0), BadInputError),
        (dict(cfg_value=-1.0), BadInputError),
        (dict(max_len=0), BadInputError),
        (dict(speed=1.5), UnsupportedOperationError),
        (dict(voice="nobody"), VoiceNotFoundError),
        (dict(voice=EncodedVoice(("omnivoice", "m", "x"), {"codes": 0})), BadInputError),
    ]:
        with pytest.raises(err):
            engine.stream(**{"text": TEXT, **kwargs})
    engine.stream(TEXT, voice="alloy", max_len=2)  # OpenAI names: the model's own voice


def test_cancel_stops_the_stream(engine):
    token = CancelToken()
    stream = engine.stream(TEXT, timesteps=2, max_len=50, min_len=50, cancel=token, first_window_patches=1)
    next(iter(stream))
    token.cancel("client went away")
    with pytest.raises(RequestCancelledError):
        next(iter(stream))
    stream.close()


def test_loading_errors_are_one_clear_message(model_dir, tmp_path):
    from voxbox.engines.tts import voxcpm2

    with pytest.raises(ModelNotFoundError, match="does not exist"):
        voxcpm2.load(tmp_path / "nowhere", device="cpu")
    d = tmp_path / "a"
    shutil.copytree(model_dir, d)
    (d / "audiovae.safetensors").unlink()
    with pytest.raises(ModelNotFoundError, match="missing audiovae.safetensors"):
        voxcpm2.load(d, device="cpu")
    d = tmp_path / "b"
    shutil.copytree(model_dir, d)
    cfg = json.loads((d / "config.json").read_text())
    cfg["lm_config"]["intermediate_size"] = 48
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match=r"has shape \(64, 32\), config.json implies \(48, 32\)"):
        voxcpm2.load(d, device="cpu")
    d = tmp_path / "c"
    shutil.copytree(model_dir, d)
    (d / "model.safetensors").write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    with pytest.raises(ModelLoadError, match="not a valid safetensors"):
        voxcpm2.load(d, device="cpu")
    d = tmp_path / "e"
    shutil.copytree(model_dir, d)
    del cfg["lm_config"]["rope_scaling"]
    cfg["lm_config"]["intermediate_size"] = 64
    (d / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="not a VoxCPM2 config"):
        voxcpm2.load(d, device="cpu")


def test_cli_speak_and_engines(model_dir, tmp_path):
    out = tmp_path / "v.wav"
    proc = subprocess.run([sys.executable, "-m", "voxbox.cli", "speak", TEXT, "--engine", "voxcpm2", "--model-dir",
                           str(model_dir), "--device", "cpu", "--threads", "1", "-o", str(out)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr
    with wave.open(str(out)) as w:
        assert w.getframerate() == 48000 and w.getnframes() > 0
    proc = subprocess.run([sys.executable, "-m", "voxbox.cli", "engines"], capture_output=True, text=True, timeout=120,
                          check=False)
    line = next(ln for ln in proc.stdout.splitlines() if "voxcpm2" in ln)
    assert proc.returncode == 0 and "missing" not in line


def test_planner_places_components_per_quirks():
    """The seed's Strix Halo: LM and DiT in fp16 on the iGPU (bf16 GEMMs hang gfx1151), the AudioVAE
    on the CPU (MIOpen convolution workspace); an H200 keeps everything on the GPU in bf16."""
    from pathlib import Path

    from voxbox.engines.tts.voxcpm2 import SPEC
    from voxbox.hardware.detect import load_machine

    try:  # the planner's entry point (one function since the planner merge)
        from voxbox.hardware.planner import plan as _plan

        def plan_engine(label, comps, machine):
            return _plan(comps, machine, None, None, label=label)
    except ImportError:
        from voxbox.hardware.plan import plan_engine

    data = Path(__file__).parents[1] / "data" / "machines"
    plan = plan_engine("voxcpm2", list(SPEC.components), load_machine(data / "strix-halo-gfx1151.json"))
    assert (plan["lm"].device, plan["lm"].dtype) == ("cuda", "float16") and plan["dit"].dtype == "float16"
    assert plan["vae"].device == "cpu" and "gfx1151-miopen-conv" in plan["vae"].reason
    plan = plan_engine("voxcpm2", list(SPEC.components), load_machine(data / "h200-cuda13.json"))
    assert {(plan[c].device, plan[c].dtype) for c in ("lm", "dit")} == {("cuda", "bfloat16")}
    assert plan["vae"].device == "cuda"


def test_lm_and_dit_pins_must_share_a_device():
    from voxbox.engines.tts import voxcpm2

    places = voxcpm2.parse_placement("cpu", None, {"lm": "cpu:bfloat16"})
    assert places["dit"][0].type == "cpu"
    with pytest.raises(BadInputError, match="share a device"):
        voxcpm2.parse_placement("cpu", None, {"lm": "cpu", "dit": "meta"})
