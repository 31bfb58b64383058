"""torch-whisper batching across requests (continuous batching of windows), through the real Runtime
with real speech: the bundled faster-whisper tiny.en read back into an HF checkpoint.

Batching is turned on for the CPU (``RuntimeConfig(batching=True)``; the default is CUDA only).
Checked: concurrent transcriptions of different lengths and options (timestamps on and off, a
prompt, word timestamps, a long file decoded two windows at a time, beam search, a sampled
fallback) give the tokens of one-at-a-time unbatched calls; a request arriving while others decode
joins at the next step; a request that leaves mid-batch frees its slot and the others finish.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")
pytest.importorskip("tokenizers")

from voxbox.audio.decode import decode  # noqa: E402
from voxbox.errors import RequestCancelledError  # noqa: E402
from voxbox.models.bundled import whisper_tiny_en_dir  # noqa: E402
from voxbox.runtime import Catalog, Runtime, RuntimeConfig  # noqa: E402
from voxbox.runtime.catalog import CatalogEntry  # noqa: E402
from voxbox.types import Audio  # noqa: E402

CLIPS = ("beckett.wav", "two_cities.wav", "endgame_nagg_nell.wav", "clone-test.wav")
NAME = "tw-tiny"


@pytest.fixture(scope="module")
def clips(moonshine_assets) -> list[Audio]:
    return [decode(str(moonshine_assets / name)) for name in CLIPS]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from voxbox.convert.ct2_reader import write_hf_checkpoint

    return write_hf_checkpoint(whisper_tiny_en_dir(), tmp_path_factory.mktemp("tw_tiny_en"))


@pytest.fixture(scope="module")
def plain(checkpoint):
    from voxbox.engines.registry import load_engine

    torch.set_num_threads(1)  # 2 shared cores; one thread pool per calling thread only adds contention
    engine = load_engine("torch-whisper", str(checkpoint), device="cpu")
    yield engine
    engine.close()


_MEMO: dict[Any, list[tuple[Any, ...]]] = {}


def _segments(engine: Any, audio: Audio, **kw: Any) -> list[tuple[Any, ...]]:
    """The unbatched engine's segments (memoised: the unbatched engine is deterministic)."""
    key = (id(engine), id(audio), tuple(sorted(kw.items())))
    if key not in _MEMO:
        _MEMO[key] = _unbatched(engine, audio, **kw)
    return _MEMO[key]


def _unbatched(engine: Any, audio: Audio, **kw: Any) -> list[tuple[Any, ...]]:
    prompt = kw.pop("prompt", None)
    words = kw.pop("word_timestamps", False)
    segments, _ = engine.transcribe(audio, prompt=prompt, word_timestamps=words, options=kw or None)
    return _rows(segments)


def _rows(segments: Any) -> list[tuple[Any, ...]]:
    return [(s.start, s.end, s.text, tuple(s.tokens or ()),
             tuple((w.word, w.start, w.end) for w in (s.words or ()))) for s in segments]


class Served:
    """A Runtime serving the tiny.en checkpoint with torch-whisper batched on the CPU, driven from
    its own event-loop thread."""

    def __init__(self, checkpoint: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        catalog = Catalog([CatalogEntry(NAME, "torch-whisper", "asr", model=str(checkpoint), source="local")])
        self.rt = Runtime(catalog, RuntimeConfig(device="cpu", batching=True, batch_max=8, batch_window_ms=20.0))
        self.model = self.run(self.rt.load(NAME, "asr"))
        self.sched = self.rt.schedulers[self.model.key]

    def run(self, coro: Any, timeout: float = 300.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def transcribe(self, audio: Audio, cancel_after: int | None = None, **kw: Any) -> list[tuple[Any, ...]]:
        prompt = kw.pop("prompt", None)
        words = kw.pop("word_timestamps", False)
        async with self.rt.acquire(NAME, "asr") as work:
            segments, _ = await self.rt.call(work, work.engine.transcribe, audio, None, prompt, words,
                                             options=kw or None, cancel=work.cancel)
            out = []
            async for seg in self.rt.iterate(work, lambda: segments):
                out.append(seg)
                if cancel_after is not None and len(out) >= cancel_after:
                    work.cancel.cancel("the test left")
            return _rows(out)

    def together(self, calls: list[dict[str, Any]], stagger: float = 0.0) -> list[Any]:
        async def go() -> list[Any]:
            async def later(i: int, c: dict[str, Any]) -> Any:
                await asyncio.sleep(i * stagger)
                return await self.transcribe(**c)

            return await asyncio.gather(*(later(i, c) for i, c in enumerate(calls)), return_exceptions=True)

        return self.run(go())

    def close(self) -> None:
        self.run(self.rt.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture(scope="module")
def served(checkpoint):
    s = Served(checkpoint)
    yield s
    s.close()


CALLS = [  # different lengths (4 s to 44 s) and options in one batch
    {"clip": 0},
    {"clip": 1, "batch_size": 2},  # 44 s: its two windows in flight together
    {"clip": 2, "without_timestamps": True},
    {"clip": 3, "prompt": "Samuel Beckett, Endgame."},
    {"clip": 0, "word_timestamps": True, "temperature": (0.0,)},
]


def test_concurrent_requests_give_the_unbatched_tokens(served, plain, clips):
    engine = served.model.engine
    assert engine.info.extra["batch_slots"] == 8
    assert served.rt.admission(served.model).max_concurrency == 8  # admission follows the batch
    calls = [dict(c) for c in CALLS]
    reference = [_segments(plain, clips[c.pop("clip")], **c) for c in calls]
    admitted0 = served.sched.stats.admitted
    got = served.together([{"audio": clips[c["clip"]], **{k: v for k, v in c.items() if k != "clip"}}
                           for c in CALLS])
    for g, ref in zip(got, reference, strict=True):
        assert not isinstance(g, BaseException), g
        assert g == ref  # the same segments, times, tokens and words
    assert all(ref for ref in reference)  # real speech: every call has text
    st = served.sched.stats
    assert st.admitted - admitted0 >= 6  # 6+ windows (the 44-s clip has two)
    assert st.max_active >= 3
    assert not served.sched._active and not served.sched._pending
    assert sorted(served.sched.batcher._free) == list(range(8))  # every slot free again


def test_beam_and_sampled_windows_beside_greedy_ones(served, plain, clips):
    """Beam search runs whole in the scheduler thread, a sampled fallback (forced by an
    impossible log-prob threshold) draws from its own seeded generator over its best_of slots:
    both equal the unbatched engine's results, and the greedy requests beside them too."""
    beam = {"beam_size": 2, "temperature": (0.0,)}
    sampled = {"temperature": (0.0, 0.5), "log_prob_threshold": 0.0, "best_of": 2, "seed": 7}
    ref = [_segments(plain, clips[3], **beam), _segments(plain, clips[3], **sampled), _segments(plain, clips[0])]
    got = served.together([{"audio": clips[3], **beam}, {"audio": clips[3], **sampled}, {"audio": clips[0]}])
    assert got == ref
    assert ref[1] and {round(s[0], 2) for s in ref[1]}  # the sampled call produced segments


def test_a_request_joins_while_others_decode(served, clips):
    """The 44-s clip decodes; a short clip submitted while it is mid-window joins at a step."""
    st = served.sched.stats
    joined0, steps0 = st.joined_running, st.steps

    async def go() -> list[Any]:
        long = asyncio.ensure_future(served.transcribe(clips[1]))
        t0 = time.monotonic()
        while served.sched.stats.steps < steps0 + 5 and time.monotonic() - t0 < 60:
            await asyncio.sleep(0.005)
        short = await served.transcribe(clips[3])
        return [await long, short]

    long, short = served.run(go())
    assert long and short
    assert st.joined_running > joined0


def test_a_departed_request_frees_its_slot(served, plain, clips):
    """The 44-s clip is cancelled after its first segment (its second window never finishes);
    the others give their unbatched segments and every slot is free afterwards."""
    ref = [_segments(plain, clips[0]), _segments(plain, clips[2])]
    cancelled0 = served.sched.stats.cancelled
    got = served.together([{"audio": clips[1], "cancel_after": 1}, {"audio": clips[0]}, {"audio": clips[2]}])
    if not isinstance(got[0], RequestCancelledError):  # or its stream just ended at the cancel
        assert len(got[0]) < len(_segments(plain, clips[1]))
    assert got[1:] == ref
    deadline = time.monotonic() + 10
    while (served.sched._active or served.sched._pending) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not served.sched._active and not served.sched._pending
    assert sorted(served.sched.batcher._free) == list(range(8))
    assert served.sched.stats.cancelled >= cancelled0  # (a cancel between windows needs no reaping)
    # the model still serves
    assert served.run(served.transcribe(clips[3])) == _segments(plain, clips[3])


def test_a_lone_window_on_the_single_stream_path_moves_into_the_batch_when_others_come(served, plain, clips):
    """On a GPU a window alone takes the single-stream step (``solo_fast``; forced here on the CPU).
    A request arriving meanwhile makes it stop at its next end check and move into a slot (KV cache,
    tokens, score copied): both give the unbatched segments, and the arrival did not wait for the
    whole window."""
    b = served.sched.batcher
    ref = [_segments(plain, clips[1]), _segments(plain, clips[3])]
    moved0, solo0 = b.solo_moved, b.solo_windows
    b.solo_fast = True
    try:
        async def go() -> list[Any]:
            first = asyncio.ensure_future(served.transcribe(clips[1]))
            t0 = time.monotonic()
            while not b.lock.locked() and time.monotonic() - t0 < 60:  # its first window, decoding alone
                await asyncio.sleep(0.001)
            second = await served.transcribe(clips[3])
            return [await first, second]

        got = served.run(go())
    finally:
        b.solo_fast = False
    assert got == ref
    assert b.solo_windows > solo0
    assert b.solo_moved > moved0
    assert sorted(b._free) == list(range(8))
