"""Batching across requests for fish-s2 and echo-tts on the CPU, with real concurrent callers.

Each engine is a tiny random model in the upstream layout (as the engines' own tests build it);
the runtime's real ``Scheduler`` is attached the way ``Runtime`` attaches it, and several threads
call ``engine.stream()`` at once. Checked: batched audio equals one-call-at-a-time audio (greedy
fish codes exactly), a request joins a running batch at the next step (``joined_running``), a
caller who leaves frees its row and the others finish unchanged.
"""

from __future__ import annotations

import threading
import time
from contextlib import contextmanager
from typing import Any, Iterator

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from voxbox.errors import RequestCancelledError  # noqa: E402
from voxbox.runtime.batching import BatchConfig, Scheduler  # noqa: E402
from voxbox.types import Audio, CancelToken  # noqa: E402


@contextmanager
def batched(engine: Any, max_batch: int, window_ms: float = 150.0, batcher: Any = None) -> Iterator[Scheduler]:
    cfg = BatchConfig(max_batch=max_batch, window_ms=window_ms)
    sched: Scheduler = Scheduler(batcher or engine.batcher(cfg), cfg, name="test")
    engine.use_scheduler(sched)
    try:
        yield sched
    finally:
        engine.use_scheduler(None)
        sched.close()


def run(engine: Any, text: str, **kw: Any) -> dict[str, Any]:
    t0 = time.perf_counter()
    stream = engine.stream(text, **kw)
    chunks = [c.samples for c in stream]
    return {"audio": np.concatenate(chunks) if chunks else np.zeros(0, np.float32), "wall": time.perf_counter() - t0,
            "timings": stream.timings.as_dict(), "details": dict(stream.details), "chunks": len(chunks)}


def concurrently(engine: Any, calls: list[tuple[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    out: list[Any] = [None] * len(calls)
    errors: list[BaseException] = []
    gate = threading.Barrier(len(calls))

    def go(i: int) -> None:
        try:
            gate.wait()
            out[i] = run(engine, calls[i][0], **calls[i][1])
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    return out


def wait_idle(sched: Scheduler, timeout: float = 10.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end and (sched._active or sched._pending):
        time.sleep(0.01)
    assert not sched._active and not sched._pending


# ====================================================================== fish-s2
@pytest.fixture(scope="module")
def fish_root(tmp_path_factory):
    from test_fish_s2_engine import build_tiny

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("fish_batch")
    build_tiny(root)
    return root


@pytest.fixture(scope="module")
def fish(fish_root):
    from voxbox.engines.tts import fish_s2

    eng = fish_s2.load(fish_root, device="cpu", max_voices=4)
    yield eng
    eng.close()


@pytest.mark.parametrize("batching", [None, True])
def test_runtime_attaches_a_scheduler(fish_root, batching):
    """The runtime's one place: a batchable model gets a scheduler where batching is on (default:
    CUDA only, so not here), its admission admits as many as the batch holds, unloading closes it."""
    import asyncio

    from voxbox.engines.tts import fish_s2
    from voxbox.runtime import Catalog, Runtime, RuntimeConfig

    async def go() -> tuple[Any, int, Any]:
        rt = Runtime(Catalog.default({"tiny": f"fish-s2:{fish_root}"}),
                     RuntimeConfig(batching=batching, batch_max=3, batch_window_ms=1.0),
                     loader=lambda entry: fish_s2.load(entry.model, device="cpu"))
        model = await rt.load("tiny")
        sched = rt.schedulers.get(model.key)
        n = rt.admission(model).max_concurrency
        if sched is not None:
            assert model.engine._scheduler is sched and model.engine.info.extra["batch_slots"] == 3
            audio = model.engine.synthesize("Hello.", max_frames=3, logit_bias={model.engine.cfg.eos_token_id: -1e4})
            assert len(audio.samples) == 3 * model.engine.codec.frame_length and sched.stats.admitted == 1
        rt.unload("tiny")
        await rt.close()
        return sched, n, model.key

    sched, n, key = asyncio.run(go())
    if batching is None:
        assert sched is None and n == 1  # CPU: one call at a time, as before
    else:
        assert sched is not None and n == 3 and sched._stopped and not sched._thread.is_alive()


def fish_kw(eng: Any, frames: int, **kw: Any) -> dict[str, Any]:
    """Greedy, no end token before ``frames`` (deterministic lengths), streamed in small windows."""
    return {"temperature": 0, "max_frames": frames, "logit_bias": {eng.cfg.eos_token_id: -1e4}, "first_window": 3,
            "window": 5, "context_frames": 40, **kw}


FISH_TEXTS = ["Hello there, this is a test.", "A second sentence, longer than the first one by far.", "Short.",
              "Fourth text here."]


def test_fish_batched_equals_unbatched(fish):
    calls = [(t, fish_kw(fish, 9 + 2 * i)) for i, t in enumerate(FISH_TEXTS)]
    eos = fish.cfg.eos_token_id
    calls.append(("It stops early.", fish_kw(fish, 20, min_frames=5, logit_bias={eos: 1e4})))  # the end token at 5
    ref = [run(fish, t, **kw) for t, kw in calls]
    with batched(fish, max_batch=8) as sched:
        got = concurrently(fish, calls)
        wait_idle(sched)
    assert sched.stats.max_active == len(calls)  # all in one batch (the window gathered them)
    fl = fish.codec.frame_length
    for r, g in zip(ref, got, strict=True):
        assert torch.equal(g["details"]["codes"], r["details"]["codes"])
        assert g["audio"].shape == r["audio"].shape
        np.testing.assert_allclose(g["audio"], r["audio"], atol=5e-5)
        assert g["details"]["finish_reason"] == r["details"]["finish_reason"]
        assert g["details"]["batched"] and g["details"]["batch_size_max"] == len(calls)
        assert set(g["timings"]) == {"batch_wait", "prefill", "decode", "codec"}
        assert sum(g["timings"].values()) <= g["wall"] + 1e-3
        assert 0 < g["details"]["first_audio_s"] <= g["wall"]
    assert got[-1]["details"]["finish_reason"] == "eos" and len(got[-1]["audio"]) == 5 * fl
    # at most 2 codec windows per step: windows wait in the queue, the audio is the same
    from voxbox.engines.tts.fish_s2.batcher import FishBatcher

    with batched(fish, max_batch=8, batcher=FishBatcher(fish, 8, codec_batch=2)) as sched:
        slow = concurrently(fish, calls)
        wait_idle(sched)
    for r, g in zip(ref, slow, strict=True):
        assert torch.equal(g["details"]["codes"], r["details"]["codes"])
        np.testing.assert_allclose(g["audio"], r["audio"], atol=5e-5)
    # the codec on its own thread beside the decoder steps (opt-in): the same audio
    overlap = FishBatcher(fish, 8, codec_batch=2, codec_overlap=True)
    with batched(fish, max_batch=8, batcher=overlap) as sched:
        beside = concurrently(fish, calls)
        wait_idle(sched)
    assert overlap._codec_pool is not None and overlap._inflight is None
    for r, g in zip(ref, beside, strict=True):
        assert torch.equal(g["details"]["codes"], r["details"]["codes"])
        np.testing.assert_allclose(g["audio"], r["audio"], atol=5e-5)
        assert set(g["timings"]) == {"batch_wait", "prefill", "decode", "codec"}
    overlap.close()
    assert overlap._codec_pool._shutdown
    # the prefill from static buffers (what a GPU replays from CUDA graphs; run directly here):
    # rows and start position as data, parts padded to 16 tokens, caches gathered and put back
    with batched(fish, max_batch=8, batcher=static_batcher(fish, 8)) as sched:
        padded = concurrently(fish, calls)
        wait_idle(sched)
        assert sched.batcher.stats()["static_prefills"] >= 1
    for r, g in zip(ref, padded, strict=True):
        assert torch.equal(g["details"]["codes"], r["details"]["codes"])
        np.testing.assert_allclose(g["audio"], r["audio"], atol=5e-5)


def static_batcher(fish: Any, slots: int) -> Any:
    from voxbox.engines.tts.fish_s2.batcher import FishBatcher

    b = FishBatcher(fish, slots)
    b.runner.static_prefill = True
    return b


def test_fish_seeded_sampling_ignores_companions(fish):
    kw = {"temperature": 1.0, "top_p": 1.0, "top_k": 32, "fast_temperature": 0.9, "max_frames": 8,
          "logit_bias": {fish.cfg.eos_token_id: -1e4}}
    with batched(fish, max_batch=4) as sched:
        alone = run(fish, "Sampled speech.", seed=11, **kw)
        crowd = concurrently(fish, [("Sampled speech.", {"seed": 11, **kw})]
                             + [(t, {"seed": 100 + i, **kw}) for i, t in enumerate(FISH_TEXTS[:3])])
        again = run(fish, "Sampled speech.", seed=12, **kw)
    assert crowd[0]["details"]["batch_size_max"] == 4 and sched.stats.max_active == 4
    assert torch.equal(crowd[0]["details"]["codes"], alone["details"]["codes"])
    assert not torch.equal(again["details"]["codes"], alone["details"]["codes"])  # the seed matters


@pytest.mark.parametrize("static", [False, True])
def test_fish_voice_prefix_reused(fish, static):
    """With ``static``, the prefill from static buffers: after a cached prefix it starts at a
    position other than 0 (a data value of the graph on a GPU)."""
    def batcher(slots: int) -> Any:
        return static_batcher(fish, slots) if static else None

    rng = np.random.default_rng(3)
    voice = fish.encode_voice(Audio((0.2 * rng.standard_normal(3000)).astype(np.float32), 44100), "reference words")
    kw = fish_kw(fish, 6, voice=voice)
    ref = run(fish, "Cloned speech.", **kw)
    with batched(fish, max_batch=2, batcher=batcher(2)) as sched:
        first = run(fish, "Cloned speech.", **kw)
        second = run(fish, "Other cloned speech.", **kw)
        stats = sched.batcher.stats()
    assert first["details"]["prefix_cache"] == "miss" and second["details"]["prefix_cache"] == "hit"
    assert second["details"]["prefill_tokens"] < second["details"]["prompt_tokens"] - 20  # the voice part was reused
    assert stats["prefix_hits"] == 1
    assert torch.equal(first["details"]["codes"], ref["details"]["codes"])
    other = run(fish, "Other cloned speech.", **kw)
    assert torch.equal(second["details"]["codes"], other["details"]["codes"])  # cached prefix == recomputed
    # a new voice brought by three requests at once: its prefix is computed once, in one row
    fresh = fish.encode_voice(Audio((0.2 * rng.standard_normal(2500)).astype(np.float32), 44100), "new words")
    calls = [(t, fish_kw(fish, 5, voice=fresh)) for t in FISH_TEXTS[:3]]
    ref3 = [run(fish, t, **kw3) for t, kw3 in calls]
    with batched(fish, max_batch=4, batcher=batcher(4)) as sched:
        got = concurrently(fish, calls)
    assert sorted(g["details"]["prefix_cache"] for g in got) == ["hit", "hit", "miss"]
    assert (sched.batcher.stats()["static_prefills"] >= 2) == static  # the new prefix, then the texts after it
    for r, g in zip(ref3, got, strict=True):
        assert torch.equal(g["details"]["codes"], r["details"]["codes"])


def test_fish_joins_running_batch(fish):
    long_kw, short_kw = fish_kw(fish, 30), fish_kw(fish, 6)
    ref_long, ref_short = run(fish, FISH_TEXTS[1], **long_kw), run(fish, FISH_TEXTS[0], **short_kw)
    with batched(fish, max_batch=4, window_ms=0) as sched:
        stream = fish.stream(FISH_TEXTS[1], **long_kw)
        parts = [next(stream).samples]  # the long one is decoding now
        steps_before = sched.stats.steps
        short = run(fish, FISH_TEXTS[0], **short_kw)
        parts += [c.samples for c in stream]
        wait_idle(sched)
    assert sched.stats.joined_running == 1 and steps_before > 0
    assert short["details"]["batch_size_max"] == 2
    assert torch.equal(short["details"]["codes"], ref_short["details"]["codes"])
    assert torch.equal(stream.details["codes"], ref_long["details"]["codes"])
    np.testing.assert_allclose(np.concatenate(parts), ref_long["audio"], atol=5e-5)


@pytest.mark.parametrize("overlap", [False, True])
def test_fish_departed_caller_frees_its_row(fish, overlap):
    from voxbox.engines.tts.fish_s2.batcher import FishBatcher

    kw = fish_kw(fish, 40)
    ref_b, ref_c = run(fish, FISH_TEXTS[1], **kw), run(fish, FISH_TEXTS[2], **fish_kw(fish, 8))
    with batched(fish, max_batch=2, batcher=FishBatcher(fish, 2, codec_overlap=overlap)) as sched:
        a, b = fish.stream(FISH_TEXTS[0], **kw), fish.stream(FISH_TEXTS[1], **kw)
        got_b: list[np.ndarray] = []
        tb = threading.Thread(target=lambda: got_b.extend(c.samples for c in b))
        ta = threading.Thread(target=lambda: next(a))
        ta.start(), tb.start()
        ta.join(60)
        a.close()  # the caller goes away after its first chunk
        end = time.monotonic() + 10
        while sched.stats.cancelled == 0 and time.monotonic() < end:
            time.sleep(0.01)
        assert sched.stats.cancelled == 1
        assert len(sched.batcher.seqs) <= 1  # its row is free
        c = run(fish, FISH_TEXTS[2], **fish_kw(fish, 8))  # takes the freed row while b still runs
        tb.join(60)
        wait_idle(sched)
    assert c["details"]["batch_size_max"] == 2 and sched.stats.joined_running >= 1
    assert torch.equal(c["details"]["codes"], ref_c["details"]["codes"])
    assert torch.equal(b.details["codes"], ref_b["details"]["codes"])
    np.testing.assert_allclose(np.concatenate(got_b), ref_b["audio"], atol=5e-5)


# ====================================================================== echo-tts
@pytest.fixture(scope="module")
def echo(tmp_path_factory):
    if __import__("importlib").util.find_spec("echo_tts") is None:
        pytest.skip("echo-tts is not installed (pip install --no-deps echo-tts)")
    pytest.importorskip("einops")
    from voxbox.engines.registry import load_engine
    from voxbox.engines.tts.echo._random import write_random_model

    torch.set_num_threads(1)
    root = write_random_model(tmp_path_factory.mktemp("echo_batch") / "model", "tiny")
    eng = load_engine("echo-tts", str(root), device="cpu")
    yield eng
    eng.close()


def test_echo_batched_equals_unbatched(echo):
    voice = echo.encode_voice(Audio((np.sin(np.arange(44100, dtype=np.float32) * 0.05) * 0.3), 44100))
    calls = [("Hello there, this is a test.", dict(steps=3, sequence_length=32, seed=1)),
             ("Another one, with a voice.", dict(steps=3, sequence_length=32, seed=2, voice=voice, chunk_frames=8)),
             ("A third with other guidance.", dict(steps=3, sequence_length=16, seed=3, cfg_scale_text=1.5,
                                                   cfg_min_t=0.0)),
             ("The fourth takes more steps.", dict(steps=5, sequence_length=32, seed=4, voice=voice))]
    ref = [run(echo, t, **kw) for t, kw in calls]
    with batched(echo, max_batch=4) as sched:
        got = concurrently(echo, calls)
        wait_idle(sched)
        stats = sched.batcher.stats()
    assert sched.stats.max_active == 4 and stats["shapes"] == 2  # lengths 32 and 16: two buckets
    for r, g in zip(ref, got, strict=True):
        assert g["audio"].shape == r["audio"].shape and len(g["audio"]) > 0
        np.testing.assert_allclose(g["audio"], r["audio"], atol=2e-4)
        assert {k: g["details"][k] for k in ("sequence_length", "speech_frames", "steps")} == \
            {k: r["details"][k] for k in ("sequence_length", "speech_frames", "steps")}
        assert {"batch_wait", "text_encode", "speaker_encode", "sample", "decode"} <= set(g["timings"])
        assert sum(g["timings"].values()) <= g["wall"] + 1e-3
    assert got[0]["details"]["batch_size_max"] == 3  # the 32-frame bucket (a 1 s voice fits its 16 speaker tokens)
    assert got[2]["details"]["batch_size_max"] == 1


def test_echo_join_and_leave(echo):
    long_kw = dict(steps=24, sequence_length=32, seed=5)  # still sampling when both others arrive
    ref_long = run(echo, "A long diffusion.", **long_kw)
    ref_short = run(echo, "A short one.", steps=2, sequence_length=32, seed=6)
    with batched(echo, max_batch=2, window_ms=0) as sched:
        stream = echo.stream("A long diffusion.", **long_kw)
        got: list[np.ndarray] = []
        t = threading.Thread(target=lambda: got.extend(c.samples for c in stream))
        t.start()
        end = time.monotonic() + 10
        while sched.stats.steps < 2 and time.monotonic() < end:
            time.sleep(0.005)
        short = run(echo, "A short one.", steps=2, sequence_length=32, seed=6)  # joins mid-sampling
        token = CancelToken()
        leaving = echo.stream("Leaves early.", steps=8, sequence_length=32, seed=7, cancel=token)
        failed: list[BaseException] = []

        def read() -> None:
            try:
                list(leaving)
            except RequestCancelledError as exc:
                failed.append(exc)

        lt = threading.Thread(target=read)
        lt.start()
        while sched.stats.admitted < 3 and time.monotonic() < end:
            time.sleep(0.005)
        token.cancel("the client went away")  # what the runtime does on a disconnect
        t.join(60), lt.join(60)
        wait_idle(sched)
    assert failed and sched.stats.joined_running >= 2 and sched.stats.cancelled == 1
    assert short["details"]["batch_size_max"] == 2
    np.testing.assert_allclose(short["audio"], ref_short["audio"], atol=2e-4)
    np.testing.assert_allclose(np.concatenate(got), ref_long["audio"], atol=2e-4)
