"""Runtime pieces behind the server: voice store + encoding cache, model manager, admission control;
and the /v1/voices, /v1/models and /health routes that expose them."""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_harness import RunningServer, make_settings, validate  # noqa: E402

from voxbox.engines.base import EncodedVoice
from voxbox.engines.registry import load_engine
from voxbox.errors import CapacityError, VoiceNotFoundError, VoxboxTimeoutError
from voxbox.runtime import Catalog
from voxbox.runtime.admission import Admission
from voxbox.runtime.manager import ModelManager
from voxbox.runtime.voices import EncodingCache, VoiceStore, sha256_bytes


def _run(coro):
    """asyncio.run on a fresh loop in its own thread: immune to a loop another test library left running."""
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        return ex.submit(asyncio.run, coro).result()


# --- voice store and encoding cache -------------------------------------------------------------------

def test_voice_store_is_content_addressed(tmp_path, moonshine_assets):
    clip = (moonshine_assets / "clone-test.wav").read_bytes()
    store = VoiceStore(tmp_path, cache_size=4)
    a = store.add("alice", clip, "hello")
    b = store.add("bob", clip)
    assert a.sha256 == b.sha256 == sha256_bytes(clip)
    assert list((tmp_path / "voices" / "clips").iterdir()) == [tmp_path / "voices" / "clips" / a.sha256]
    assert [v.name for v in store.list()] == ["alice", "bob"]
    store.delete("alice")
    assert (tmp_path / "voices" / "clips" / a.sha256).is_file()  # bob still uses it
    store.delete("bob")
    assert not (tmp_path / "voices" / "clips" / a.sha256).exists()
    with pytest.raises(VoiceNotFoundError):
        store.delete("bob")
    # survives a restart
    store.add("carol", clip, "hi")
    again = VoiceStore(tmp_path)
    assert again.get("carol").transcript == "hi" and again.clip_bytes(again.get("carol")) == clip


def test_encoding_cache_lru_bound_and_disk(tmp_path):
    cache = EncodingCache(tmp_path, capacity=2)
    keys = [("eng", "m", f"{i:064x}") for i in range(3)]
    for i, k in enumerate(keys):
        cache.put(k, EncodedVoice(k, np.full(8, i, np.float32)))
    assert len(cache) == 2 and cache.keys() == keys[1:]  # oldest evicted from memory
    enc, where = cache.get(keys[0])
    assert where == "disk" and enc.data[0] == 0  # ... but still on disk
    assert cache.keys() == [keys[2], keys[0]]
    enc, where = cache.get(keys[0])
    assert where == "memory"
    # a fresh cache (restart) finds everything on disk
    fresh = EncodingCache(tmp_path, capacity=2)
    for i, k in enumerate(keys):
        enc, where = fresh.get(k)
        assert where == "disk" and float(enc.data[0]) == i
    assert fresh.get(("eng", "other-model", keys[0][2]))[1] == "miss"  # keyed by model too
    assert fresh.stats["evicted"] == 1
    fresh.drop_clip(keys[0][2])
    assert fresh.get(keys[0])[1] == "miss"


def test_store_encodes_once_per_key(tmp_path, moonshine_assets):
    """Concurrent first uses of one (engine, model, clip) run the encoder once; then memory hits."""
    clip = (moonshine_assets / "clone-test.wav").read_bytes()
    store = VoiceStore(tmp_path, cache_size=2)
    voice = store.add("v", clip)
    calls = []

    def encode(data: bytes, transcript):
        calls.append(1)
        time.sleep(0.05)
        return EncodedVoice(("x", "y", "z"), np.frombuffer(data[:64], np.uint8).copy())

    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        results = list(ex.map(lambda _: store.encoding(voice, "eng", "m", encode), range(4)))
    assert len(calls) == 1
    assert sorted(w for _, w in results).count("miss") == 1
    assert store.encoding(voice, "eng", "m", encode)[1] == "memory"
    assert results[0][0].key == ("eng", "m", voice.sha256)


# --- admission ----------------------------------------------------------------------------------------

def test_admission_limits_queue_and_fifo():
    async def main():
        gate = Admission("m", max_concurrency=2, queue_size=2)
        s1 = await gate.acquire()
        s2 = await gate.acquire()
        order = []

        async def waiter(i):
            slot = await gate.acquire(timeout=5)
            order.append(i)
            return slot

        w = [asyncio.create_task(waiter(i)) for i in range(2)]
        await asyncio.sleep(0.01)
        assert gate.running == 2 and gate.waiting == 2
        with pytest.raises(CapacityError) as exc:
            await gate.acquire()
        assert exc.value.retry_after >= 1
        s1.release()
        s1.release()  # idempotent
        slot = await w[0]
        assert order == [0] and gate.running == 2 and gate.waiting == 1
        s2.release()
        slot2 = await w[1]
        assert order == [0, 1]
        slot.release()
        slot2.release()
        assert gate.running == 0
        # timeout while waiting
        s = await gate.acquire()
        t = await gate.acquire()
        with pytest.raises(VoxboxTimeoutError):
            await gate.acquire(timeout=0.05)
        assert gate.waiting == 0
        s.release()
        t.release()
        assert gate.running == 0

    _run(main())


# --- model manager ------------------------------------------------------------------------------------

def test_manager_loads_once_refcounts_and_ttl():
    async def main():
        loads = []

        def loader(entry):
            loads.append(threading.get_ident())
            return load_engine(entry.engine, entry.model)

        cat = Catalog.default()
        mgr = ModelManager(loader=loader, ttl=0.3)
        mgr.start()
        leases = await asyncio.gather(
            *[mgr.acquire(cat.resolve(mid)) for mid in ("tts-1", "hibari", "tts-1", "hibari")]
        )
        assert len(loads) == 1  # four concurrent users, aliases included: one load
        model = leases[0].model
        assert model.refs == 4 and all(x.model is model for x in leases)
        for lease in leases:
            lease.release()
            lease.release()  # idempotent
        assert model.refs == 0
        await asyncio.sleep(0.8)
        assert mgr.loaded() == []  # idle past the TTL: unloaded
        lease = await mgr.acquire(cat.resolve("tts-1"))  # loads again on next use
        assert len(loads) == 2
        await asyncio.sleep(0.8)
        assert len(mgr.loaded()) == 1  # in use: never unloaded
        assert mgr.unload(lease.model.key) and len(mgr.loaded()) == 1  # deferred while in use
        lease.release()
        assert mgr.loaded() == []
        await mgr.close()

    _run(main())


def test_manager_ttl_minus_one_never_unloads():
    async def main():
        mgr = ModelManager(loader=lambda e: load_engine(e.engine, e.model), ttl=-1)
        mgr.start()
        lease = await mgr.acquire(Catalog.default().resolve("tts-1"))
        lease.release()
        lease.model.last_used -= 10_000
        assert mgr.reap_idle() == [] and len(mgr.loaded()) == 1
        await mgr.close()

    _run(main())


# --- through the server -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("runtime"),
                             models={"preload_defaults": True, "ttl": -1})
    srv = RunningServer(settings).start()
    yield srv
    srv.stop()


def test_voices_upload_list_delete(server, moonshine_assets):
    clip = (moonshine_assets / "clone-test.wav").read_bytes()
    r = httpx.post(server.url + "/v1/voices", data={"name": "narrator", "transcript": "A reference."},
                   files={"file": ("ref.wav", clip, "audio/wav")})
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["sha256"] == sha256_bytes(clip) and body["type"] == "uploaded" and abs(body["duration"] - 4.11) < 0.05
    assert (server.settings.data_dir / "voices" / "clips" / body["sha256"]).is_file()
    listed = httpx.get(server.url + "/v1/voices").json()["data"]
    names = {(v["name"], v["type"]) for v in listed}
    assert ("narrator", "uploaded") in names and ("heart", "builtin") in names and ("alloy", "builtin") in names
    # the OpenAI names say honestly which single bundled voice they play (issue #22 item 12)
    alloy = next(v for v in listed if v["name"] == "alloy")
    assert "heart" in alloy["alias_of"].values() and "sound the same" in alloy["note"]
    assert "alias_of" not in next(v for v in listed if v["name"] == "heart")
    # hibari cannot clone: using the uploaded voice is a clear 400, not a silent fallback
    r = httpx.post(server.url + "/v1/audio/speech",
                   json={"model": "tts-1", "voice": "narrator", "input": "Hello.", "response_format": "wav"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "voice"
    validate("ErrorResponse", r.json())
    assert "clone" in r.json()["error"]["message"]
    # bad uploads
    bad = httpx.post(server.url + "/v1/voices", data={"name": "x"}, files={"file": ("r.wav", b"garbage" * 100)})
    assert bad.status_code == 415
    assert httpx.post(server.url + "/v1/voices", data={"name": "../etc"},
                      files={"file": ("r.wav", clip)}).status_code == 400
    assert httpx.post(server.url + "/v1/voices", data={"name": "alloy"},
                      files={"file": ("r.wav", clip)}).status_code == 400
    # delete
    assert httpx.delete(server.url + "/v1/voices/narrator").json()["deleted"] is True
    assert httpx.delete(server.url + "/v1/voices/narrator").status_code == 404
    assert not (server.settings.data_dir / "voices" / "clips" / body["sha256"]).exists()


def test_models_routes_load_and_unload(server):
    listing = httpx.get(server.url + "/v1/models").json()
    validate("ListModelsResponse", listing)
    ids = {m["id"] for m in listing["data"]}
    assert {"tts-1", "tts-1-hd", "whisper-1", "hibari", "piper", "faster-whisper"} <= ids
    m = httpx.get(server.url + "/v1/models/whisper-1").json()
    validate("Model", m)
    assert m["loaded"] is True and m["task"] == "asr"
    # concurrent loads of the same model load it once
    with concurrent.futures.ThreadPoolExecutor(4) as ex:
        rs = list(ex.map(lambda _: httpx.post(server.url + "/v1/models/tts-1-hd/load", timeout=60), range(4)))
    assert all(r.status_code == 200 and r.json()["loaded"] for r in rs)
    assert server.metric("voxbox_model_load_seconds_count", model="tts-1-hd") == 1
    assert server.metric("voxbox_model_loaded", model="tts-1-hd") == 1
    d = httpx.delete(server.url + "/v1/models/tts-1-hd").json()
    validate("DeleteModelResponse", d)
    assert d["deleted"] is True and server.metric("voxbox_model_loaded", model="tts-1-hd") == 0
    assert httpx.get(server.url + "/v1/models/piper").json()["loaded"] is False
    assert httpx.delete(server.url + "/v1/models/not-a-model").status_code == 404


def test_health_stays_fast_while_engines_are_busy(server):
    """CPU-bound engine work runs off the event loop: /health answers quickly meanwhile."""
    text = " ".join(f"Busy sentence number {i} keeps the engine working." for i in range(12))
    stop = threading.Event()

    def speak():
        while not stop.is_set():
            httpx.post(server.url + "/v1/audio/speech", timeout=120,
                       json={"model": "tts-1", "voice": "alloy", "input": text, "response_format": "mp3"})

    threads = [threading.Thread(target=speak) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        time.sleep(0.5)
        with httpx.Client(timeout=5) as c:
            c.get(server.url + "/health")
            times = []
            busy = 0
            for _ in range(20):
                t0 = time.perf_counter()
                assert c.get(server.url + "/health").status_code == 200
                times.append(time.perf_counter() - t0)
                busy += server.metric("voxbox_running_requests", model="tts-1") >= 1
                time.sleep(0.05)
        assert busy >= 10  # the engine really was working during most probes
        times.sort()
        # median well under 50 ms; allow one scheduler hiccup on a shared 2-core machine
        assert times[len(times) // 2] < 0.05 and times[-2] < 0.05, times
    finally:
        stop.set()
        for t in threads:
            t.join()


def test_ready_is_503_until_defaults_loaded(tmp_path):
    srv = RunningServer(make_settings(tmp_path, models={"asr": "broken",
                                                        "local": {"broken": "faster-whisper:/no/such-dir"}}))
    srv.start(wait_ready=False)
    try:
        deadline = time.monotonic() + 60
        while srv.state.startup_error is None and time.monotonic() < deadline:
            time.sleep(0.1)
        r = httpx.get(srv.url + "/health/ready")
        assert r.status_code == 503
        validate("ErrorResponse", r.json())
        message = r.json()["error"]["message"]
        assert "broken" in message and "/no/such-dir" not in message  # no paths in public bodies
        assert httpx.get(srv.url + "/health").status_code == 200
    finally:
        srv.stop()


def test_settings_env_nested_dotenv_and_flags(tmp_path, monkeypatch):
    from voxbox.server.cli import build_settings
    from voxbox.server.settings import ServerSettings

    for k in list(__import__("os").environ):
        if k.startswith("VOXBOX_"):
            monkeypatch.delenv(k)
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("VOXBOX_PORT=9123\nVOXBOX_ADMISSION__QUEUE_SIZE=7\nVOXBOX_MODELS__TTS=tts-1-hd\n")
    monkeypatch.setenv("VOXBOX_MODELS__TTL", "-1")
    monkeypatch.setenv("VOXBOX_MODELS__PRELOAD", '["piper"]')
    monkeypatch.setenv("VOXBOX_API_KEY", "sk-secret")
    s = ServerSettings()
    assert s.host == "127.0.0.1" and s.port == 9123
    assert s.admission.queue_size == 7 and s.models.ttl == -1 and s.models.preload == ["piper"]
    assert s.models.tts == "tts-1-hd" and s.models.asr == "whisper-1"
    assert s.api_key_value() == "sk-secret" and "sk-secret" not in repr(s) and "sk-secret" not in str(s.model_dump())
    monkeypatch.setenv("VOXBOX_PORT", "9200")  # the environment beats .env
    assert ServerSettings().port == 9200
    # flags beat both, and a nested flag keeps the other nested values
    f = build_settings(port=9300, queue_size=2, max_upload_mb=10, no_preload=True)
    assert f.port == 9300 and f.admission.queue_size == 2 and f.max_upload_bytes == 10 * 1024 * 1024
    assert f.models.preload_defaults is False and f.models.ttl == -1 and f.models.tts == "tts-1-hd"
