"""whisper-cpp: real tiny.en converted to ggml (voxbox convert --to ggml), human speech against
faster-whisper on the same weights, where whisper.cpp really runs, the planner, and error paths."""

from __future__ import annotations

import copy
import json
from itertools import pairwise
from pathlib import Path

import pytest

from voxbox.audio.decode import decode
from voxbox.cli import main
from voxbox.errors import BadInputError, DeviceError, ModelLoadError, ModelNotFoundError, UnsupportedOperationError
from voxbox.text import wer

pytest.importorskip("pywhispercpp")
pytest.importorskip("torch")

# The true texts of the moonshine-voice recordings (as in test_engines_faster_whisper.py).
BECKETT = "Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."
TWO_CITIES = (
    "It was the best of times, it was the worst of times, it was the age of wisdom, it was the age of "
    "foolishness, it was the epoch of belief, it was the epoch of incredulity, it was the season of Light, it "
    "was the season of Darkness, it was the spring of hope, it was the winter of despair, we had everything "
    "before us, we had nothing before us, we were all going direct to Heaven, we were all going direct the "
    "other way - in short, the period was so far like the present period, that some of its noisiest "
    "authorities insisted on its being received, for good or for evil, in the superlative degree of "
    "comparison only."
)

DATA = Path(__file__).parents[1] / "data" / "machines"


@pytest.fixture(scope="module")
def ggml_dir(tmp_path_factory, moonshine_assets) -> Path:
    """The bundled tiny.en -> HF checkpoint -> `voxbox convert --to ggml`, verified on beckett.wav."""
    from voxbox.convert.ct2_reader import write_hf_checkpoint
    from voxbox.models.bundled import whisper_tiny_en_dir

    root = tmp_path_factory.mktemp("wcpp")
    hf = write_hf_checkpoint(whisper_tiny_en_dir(), root / "hf")
    out = root / "ggml"
    main(["convert", str(hf), str(out), "--to", "ggml", "--verify-audio", str(moonshine_assets / "beckett.wav")])
    return out


@pytest.fixture(scope="module")
def engine(ggml_dir):
    from voxbox.engines.registry import load_asr

    eng = load_asr("whisper-cpp", str(ggml_dir), threads=1)
    yield eng
    eng.close()


@pytest.fixture(scope="module")
def fw():
    from voxbox.engines.registry import load_asr

    eng = load_asr("faster-whisper", None, device="cpu", dtype="int8")
    yield eng
    eng.close()


def _text(segs) -> str:
    return " ".join(s.text.strip() for s in segs)


def test_convert_writes_a_verified_ggml_file(ggml_dir):
    from voxbox.convert.ggml import is_ggml_file

    m = json.loads((ggml_dir / "voxbox_manifest.json").read_text())
    assert m["target"] == "ggml" and m["quantization"] == "float16"
    v = m["verification"]
    assert v["passed"] and v["wer"] <= 0.05 and v["target"]["engine"] == "whisper-cpp"
    assert is_ggml_file(ggml_dir / "ggml-model.bin")


def test_human_speech_wer_as_faster_whisper(engine, fw, moonshine_assets):
    for name, ref in (("beckett.wav", BECKETT), ("two_cities.wav", TWO_CITIES)):
        audio = decode(str(moonshine_assets / name))  # 48 kHz: both engines resample
        ours, _ = engine.transcribe(audio, temperature_increment=0.0)
        theirs, _ = fw.transcribe(audio, beam_size=1, temperature=0.0)
        w_ours, w_fw = wer(ref, _text(ours)), wer(ref, _text(theirs))
        assert w_ours <= w_fw + 0.05, (name, w_ours, w_fw)


def test_segments_words_and_info(engine, moonshine_assets):
    audio = decode(str(moonshine_assets / "beckett.wav"), sample_rate=16000)
    segs, info = engine.transcribe(audio, word_timestamps=True)
    assert info.language == "en" and abs(info.duration - audio.duration) < 1e-6 and info.options["backend"] == "CPU"
    segs = list(segs)
    assert len(segs) >= 2 and [s.id for s in segs] == list(range(len(segs)))
    for a, b in pairwise(segs):
        assert a.start <= a.end <= b.start + 0.01
    assert segs[-1].end <= audio.duration + 1e-6
    words = [w for s in segs for w in s.words or []]
    assert [w.word.strip(" .,").lower() for w in words][:2] == ["ever", "tried"]
    assert all(s.start - 0.01 <= w.start <= w.end <= s.end + 0.01 for s in segs for w in s.words or [])
    assert info.timings.as_dict()["transcribe"] > 0


def test_vad_filter_uses_silero_spans(engine, moonshine_assets):
    import numpy as np

    from voxbox.types import Audio

    speech = decode(str(moonshine_assets / "beckett.wav"), sample_rate=16000).samples
    padded = Audio(np.concatenate([np.zeros(16000 * 5, np.float32), speech]), 16000)
    segs, info = engine.transcribe(padded, vad_filter=True)
    segs = list(segs)
    assert info.options["vad"] and segs[0].start >= 4.0  # five seconds of silence skipped
    assert wer(BECKETT, _text(segs)) <= 0.2


def test_backend_detection_here_says_cpu(engine):
    from voxbox.hardware.detect import detect
    from voxbox.hardware.ggml import ggml_info, gpu_backends, parse_backends

    info = ggml_info()
    assert info.installed and info.build == "cpu" and gpu_backends() == []
    assert "CPU" in info.details["system_info"]
    assert engine.info.device == "cpu" and engine.info.extra["backend"] == "CPU"
    assert detect(refresh=True).backend("ggml").build == "cpu"
    # the same parser names GPU builds from their system info and backend libraries
    assert parse_backends("WHISPER : COREML = 0 | CUDA : ARCHS = 890 | USE_GRAPHS = 1 | CPU : AVX2 = 1 |") == ["CUDA"]
    assert parse_backends("CPU : AVX2 = 1 |", ["libggml-vulkan.so", "libggml-cpu.so"]) == ["VULKAN"]
    assert parse_backends("CPU : AVX2 = 1 |", ["libggml-hip.so"]) == ["HIP"]


def test_probe_on_cpu_ok_and_gpu_request_is_a_fallback(engine):
    """The ggml probe runs real inference in a child; asking it for a GPU on this CPU-only build
    comes back as a silent fallback, not as a GPU that works."""
    from voxbox.hardware.probe import ProbeSpec, run_probe

    cpu = run_probe(ProbeSpec("voxbox.hardware.probe_targets:ggml_transcribe", "cpu", None, engine="ggml",
                              component="transcribe", timeout_s=300), cache=False)
    assert cpu.status == "ok" and cpu.seconds and cpu.details["backend"] == "CPU", cpu
    gpu = run_probe(ProbeSpec("voxbox.hardware.probe_targets:ggml_transcribe", "cuda", None, engine="ggml",
                              component="transcribe", kwargs={"cpu_reference": False}, timeout_s=300), cache=False)
    assert gpu.status == "silent_fallback" and "cpu" in (gpu.message or ""), gpu


def _radeon_with_ggml(gpu_backends: list[str]):
    from voxbox.hardware.detect import BackendInfo, load_machine

    m = load_machine(DATA / "radeon-7800xt-gfx1101.json")
    m = copy.deepcopy(m)
    m.backends["ggml"] = BackendInfo("ggml", installed=True, version="1.5.1",
                                     build=gpu_backends[0].lower() if gpu_backends else "cpu",
                                     details={"gpu_backends": gpu_backends})
    return m


def _probe(engine, component, device, seconds, dtype=None, workload="tiny.en encode 30 s + 8 tokens"):
    from voxbox.hardware.probe import ProbeResult

    return ProbeResult(status="ok", target=f"voxbox.hardware.probe_targets:{component}", device=device, dtype=dtype,
                       engine=engine, component=component, seconds=seconds, details={"workload": workload})


def test_planner_places_ggml_by_build_and_probe():
    from voxbox.engines.registry import ENGINES
    from voxbox.hardware.planner import plan

    comp = ENGINES["whisper-cpp"].components
    cpu_only = plan(comp, _radeon_with_ggml([]), label="whisper-cpp").main
    assert cpu_only.device == "cpu" and any("CPU only" in x for x in cpu_only.passed_over)
    vulkan = _radeon_with_ggml(["VULKAN"])
    unverified = plan(comp, vulkan, label="whisper-cpp", verified_only=True).main
    assert unverified.device == "cpu" and any("not verified" in x for x in unverified.passed_over)
    verified = plan(comp, vulkan, [_probe("ggml", "transcribe", "cuda", 0.02)], label="whisper-cpp",
                    verified_only=True).main
    assert verified.device == "cuda" and verified.device_kind == "rocm"


def test_doctor_chooses_whisper_cpp_where_it_is_the_best_measured_option():
    from voxbox.engines.registry import ENGINES
    from voxbox.hardware.detect import load_machine
    from voxbox.hardware.machine_plan import plan_machine

    box = load_machine(DATA / "cpu-2core.json")
    box.backends["ggml"] = _radeon_with_ggml([]).backends["ggml"]
    faster = [_probe("ctranslate2", "generate", "cpu", 0.50, "int8"), _probe("ggml", "transcribe", "cpu", 0.30)]
    mp = plan_machine(ENGINES.values(), box, faster)
    assert mp.asr[0] == "whisper-cpp" and "fastest measured" in mp.asr[1], mp.asr
    slower = [_probe("ctranslate2", "generate", "cpu", 0.30, "int8"), _probe("ggml", "transcribe", "cpu", 0.50)]
    assert plan_machine(ENGINES.values(), box, slower).asr[0] == "faster-whisper"
    # an AMD card with only a Vulkan build of whisper.cpp verified: it beats CPU CTranslate2
    amd = _radeon_with_ggml(["VULKAN"])
    amd.backends["torch"].installed = False
    mp = plan_machine(ENGINES.values(), amd, [_probe("ggml", "transcribe", "cuda", 0.02)])
    assert mp.asr[0] == "whisper-cpp" and "ct2-no-rocm" in mp.asr[1], mp.asr


def test_error_paths(engine, tmp_path, moonshine_assets):
    from voxbox.engines.asr.whisper_cpp import load

    with pytest.raises(ModelNotFoundError):
        load(str(tmp_path / "missing.bin"))
    not_ggml = tmp_path / "notes.bin"
    not_ggml.write_bytes(b"this is not a model")
    with pytest.raises(ModelLoadError, match="not a whisper.cpp ggml model"):
        load(str(not_ggml))
    good = (Path(engine.info.extra["path"])).read_bytes()
    cut = tmp_path / "cut.bin"
    cut.write_bytes(good[: len(good) // 3])  # a download that stopped a third of the way
    with pytest.raises(ModelLoadError, match="could not load"):
        load(str(cut))
    with pytest.raises(DeviceError, match="CPU-only"):
        load(None, device="cuda")
    with pytest.raises(BadInputError):
        load(None, device="tpu")
    audio = decode(str(moonshine_assets / "beckett.wav"), sample_rate=16000)
    with pytest.raises(BadInputError) as e:
        engine.transcribe(audio, beam_size=0)
    assert e.value.param == "beam_size"
    with pytest.raises(BadInputError):
        engine.transcribe(audio, not_an_option=1)
    with pytest.raises(UnsupportedOperationError):
        engine.transcribe(audio, task="translate")
