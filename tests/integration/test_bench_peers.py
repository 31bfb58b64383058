"""Peers: a peer that is not installed is reported as such; peer weight conversion; scenario data."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest

from voxbox.bench import peers as peers_mod
from voxbox.bench.metrics import cer, edit_distance, normalize_text, wer
from voxbox.bench.report import render_markdown, validate_report
from voxbox.bench.scenarios import load_scenarios, merge
from voxbox.bench.suite import run_suite


def test_not_installed_peer_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("jsonschema")
    import voxbox.bench.peers.base as base

    real = base.has_modules

    def pretend(*names: str) -> list[str]:  # openai-whisper's 'whisper' module is "missing" here
        return [n for n in names if n == "whisper"] + real(*[n for n in names if n != "whisper"])

    monkeypatch.setattr(base, "has_modules", pretend)
    scen = load_scenarios(quick=True)
    report = run_suite("asr", scen, out_dir=tmp_path, clips=["beckett"], runs=1, warmup=0, isolate=False,
                       peers=["openai-whisper", "no-such-peer"])
    validate_report(report)
    by = {t["id"]: t for t in report["targets"]}
    assert by["voxbox/faster-whisper:tiny.en"]["status"] == "ok"
    for pid in ("openai-whisper:tiny.en", "no-such-peer:tiny.en"):
        assert by[pid]["status"] == "not_installed"
        assert "not installed" in by[pid]["reason"]
        assert not [r for r in report["rows"] if r["target"] == pid]  # no made-up numbers
    md = render_markdown(report)
    assert "openai-whisper:tiny.en | **not installed**" in md


def test_peers_registry_pairs_engines() -> None:
    assert peers_mod.applies_to("faster-whisper-raw", "faster-whisper")
    assert not peers_mod.applies_to("piper-cli", "hibari")
    assert peers_mod.peer_class("no-such-peer") is None
    for name in peers_mod.PEERS:
        assert peers_mod.peer_class(name).task in ("tts", "asr")


def test_error_rates() -> None:
    assert edit_distance("kitten", "sitting") == 3
    assert edit_distance([], ["a"]) == 1
    assert normalize_text("It's the Season of Light—isn't it?") == "it is the season of light is not it"
    assert wer("Ever tried. Ever failed.", "ever tried, ever failed") == 0.0
    assert wer("a b c d", "a x c") == 0.5
    assert wer("one two", "") == 1.0 and wer("one", "a b c d e", clip=True) == 1.0
    assert 0 < cer("hello world", "hallo world") < 0.2
    rng = np.random.default_rng(0)
    a, b = list(rng.integers(0, 5, 300)), list(rng.integers(0, 5, 280))
    # the vectorised rows agree with the textbook recurrence
    d = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        prev, d[0] = d[0], i
        for j, y in enumerate(b, 1):
            prev, d[j] = d[j], min(d[j] + 1, d[j - 1] + 1, prev + (x != y))
    assert edit_distance(a, b) == d[-1]


def test_scenarios_shipped_and_overridable(tmp_path: Path) -> None:
    scen = load_scenarios()
    texts = scen["tts"]["texts"]
    lengths = {k: len(" ".join(v.split())) for k, v in texts.items()}
    assert abs(lengths["short"] - 63) <= 10 and abs(lengths["medium"] - 207) <= 15 and abs(lengths["long"] - 545) <= 25
    assert scen["defaults"]["runs"] == 3 and scen["defaults"]["warmup"] == 1
    assert scen["asr"]["clips"]["longform"]["min_seconds"] >= 600
    quick = load_scenarios(quick=True)
    assert list(quick["tts"]["texts"]) == ["short"] and quick["defaults"]["runs"] == 1
    over = tmp_path / "over.yaml"
    over.write_text("defaults: {runs: 5}\ntts:\n  texts: {tiny: 'Hello there.'}\n")
    mine = load_scenarios(over)
    assert mine["defaults"] == {**scen["defaults"], "runs": 5}
    assert mine["tts"]["texts"] == {"tiny": "Hello there."}  # texts replace as a whole
    assert mine["tts"]["targets"] == scen["tts"]["targets"]
    assert merge({"a": {"b": 1, "c": 2}}, {"a": {"b": 3}}) == {"a": {"b": 3, "c": 2}}


def test_longform_clip_is_ten_minutes_with_reference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from voxbox.bench import scenarios as sc

    monkeypatch.setenv("VOXBOX_CACHE_DIR", str(tmp_path))
    scen = load_scenarios()
    # TTS-made speech is stubbed here (the quick ASR run covers the real one); recordings are real
    monkeypatch.setattr(sc, "_tts_clip", lambda engine, model, text, cache: np.zeros(16000 * 30, np.float32))
    (clip,) = sc.materialize_clips(scen, ["longform"])
    assert clip.seconds >= 600
    assert clip.reference and clip.reference.count("It was the best of times") >= 6


def test_openai_and_ggml_conversion_of_bundled_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """CT2 tiny.en -> HF -> openai-whisper names/dims -> ggml header and tensor table."""
    pytest.importorskip("voxbox.convert.ct2_reader")
    from voxbox.bench.peers.convert import hf_state_dict_from_ct2, hf_to_openai, write_ggml
    from voxbox.models.bundled import whisper_tiny_en_dir

    dims, sd = hf_to_openai(hf_state_dict_from_ct2(whisper_tiny_en_dir()))
    assert dims == {"n_mels": 80, "n_vocab": 51864, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6,
                    "n_audio_layer": 4, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4}
    expected = {"encoder.conv1.weight", "encoder.ln_post.weight", "decoder.ln.bias", "decoder.token_embedding.weight",
                "encoder.blocks.0.attn.query.weight", "encoder.blocks.3.mlp.2.bias", "decoder.blocks.0.cross_attn.key.weight",
                "decoder.blocks.1.cross_attn_ln.weight", "decoder.blocks.2.mlp_ln.bias"}
    assert expected <= set(sd)
    assert not [k for k in sd if "layers" in k or "proj" in k or "layer_norm" in k]
    assert "decoder.blocks.0.attn.key.bias" not in sd  # Whisper's key projections have no bias
    # encoder: 5 + 4 blocks x 15 + ln_post 2; decoder: 2 + 4 blocks x 24 + ln 2
    assert len(sd) == 67 + 100

    pytest.importorskip("whisper.transcribe", reason="ggml writing uses openai-whisper's tokenizer and mel assets")
    out = write_ggml(dims, sd, tmp_path / "ggml-tiny.en.bin")
    raw = out.read_bytes()
    header = struct.unpack("<12i", raw[:48])
    assert header[0] == 0x67676D6C and header[1:11] == (51864, 1500, 384, 6, 4, 448, 384, 6, 4, 80) and header[11] == 1
    n_mel, n_fft = struct.unpack("<2i", raw[48:56])
    assert (n_mel, n_fft) == (80, 201)
    off = 56 + 4 * n_mel * n_fft
    (n_tokens,) = struct.unpack("<i", raw[off:off + 4])
    off += 4
    for _ in range(n_tokens):
        (n,) = struct.unpack("<i", raw[off:off + 4])
        off += 4 + n
    names = []
    while off < len(raw):
        n_dims, name_len, ftype = struct.unpack("<3i", raw[off:off + 12])
        shape = struct.unpack(f"<{n_dims}i", raw[off + 12:off + 12 + 4 * n_dims])
        off += 12 + 4 * n_dims
        name = raw[off:off + name_len].decode()
        off += name_len + int(np.prod(shape)) * (2 if ftype == 1 else 4)
        names.append(name)
        if name == "encoder.conv1.bias":
            assert shape == (1, 384) and ftype == 0  # stored as [n, 1], dims written reversed
        if name == "decoder.token_embedding.weight":
            assert shape == (384, 51864) and ftype == 1
    assert off == len(raw) and set(names) == set(sd)


def test_missing_recordings_skip_their_clips(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A fresh install without moonshine-voice still benchmarks the TTS-made clips, and says what it skipped."""
    from voxbox.bench import scenarios as sc
    from voxbox.errors import BadInputError

    def missing() -> Path:
        raise sc.ClipUnavailable("recordings from moonshine-voice are not installed")

    monkeypatch.setattr(sc, "moonshine_assets", missing)
    monkeypatch.setenv("VOXBOX_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(sc, "_tts_clip", lambda engine, model, text, cache: np.zeros(16000, np.float32))
    skipped: dict[str, str] = {}
    clips = sc.materialize_clips(load_scenarios(), skipped=skipped)
    assert [c.name for c in clips] == ["tts_short", "tts_long"]
    assert set(skipped) == {"beckett", "two_cities", "endgame", "longform"}
    assert all("moonshine-voice" in why for why in skipped.values())
    with pytest.raises(sc.ClipUnavailable):
        sc.materialize_clips(load_scenarios(quick=True))
    with pytest.raises(BadInputError):  # the quick set is beckett alone: nothing left to run
        sc.materialize_clips(load_scenarios(quick=True), skipped={})


def test_steps_axis_rows(tmp_path: Path) -> None:
    """A target marked `steps: true` gets one row per step count, each called with steps=N.

    hibari has no steps option, so each row must report the engine's own error (not a number)."""
    scen = load_scenarios(quick=True)
    scen["tts"]["targets"] = [{"engine": "hibari", "steps": True}]
    scen["tts"]["round_trip"] = None
    report = run_suite("tts", scen, out_dir=tmp_path / "out", steps=[2, 4], runs=1, warmup=0, isolate=False)
    rows = [r for r in report["rows"] if r["target"] == "voxbox/hibari"]
    assert sorted(r["steps"] for r in rows) == [2, 4]
    assert all(r["status"] == "error" and "steps" in r["error"] and not r["runs"] for r in rows)
    validate_report(report)
