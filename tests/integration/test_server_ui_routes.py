"""The web page's files and the JSON routes it added, over real HTTP (no browser needed):
static files without auth under a strict CSP, ``/v1/doctor`` and ``/v1/bench/*`` behind the key,
no secrets in the doctor report, nothing outside the UI folder or the bench runs reachable."""

from __future__ import annotations

import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from server_harness import REPO, RunningServer, decode_bytes, make_settings

KEY = "sk-ui-routes-secret-4242"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    settings = make_settings(tmp_path_factory.mktemp("ui-routes"), api_key=KEY, bench_dir=REPO / "bench" / "results",
                             models={"preload_defaults": False})
    srv = RunningServer(settings).start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {KEY}"}


def test_page_and_assets_served_without_key_under_csp(server):
    r = httpx.get(server.url + "/")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert '<script type="module" src="/ui/js/app.js">' in r.text
    assert "http://" not in r.text.replace("http://localhost", "") and "https://" not in r.text  # nothing external
    for path, ctype in (("/ui/js/app.js", "text/javascript"), ("/ui/style.css", "text/css"),
                        ("/ui/favicon.svg", "image/svg+xml"), ("/ui/", "text/html")):
        r = httpx.get(server.url + path)
        assert r.status_code == 200, path
        assert r.headers["content-type"].startswith(ctype), path
        assert "content-security-policy" in r.headers


@pytest.mark.parametrize("path", ["/ui/js/nope.js", "/ui/../routes/ui.py", "/ui/%2e%2e/settings.py",
                                  "/ui/js/../../routes/ui.py", "/ui/index.py"])
def test_nothing_outside_the_ui_folder(server, path):
    import http.client
    import json

    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    conn.request("GET", path)  # sent as written: no client-side "../" normalisation
    r = conn.getresponse()
    text = r.read().decode()
    conn.close()
    assert r.status == 404, (path, text[:200])
    assert json.loads(text)["error"]["code"]
    assert "def " not in text


def test_ui_file_lookup_stays_inside(tmp_path):
    from voxbox.errors import NotFoundError
    from voxbox.server.routes.ui import _ui_file

    assert _ui_file("js/app.js").name == "app.js"
    for rel in ("../routes/ui.py", "js/../../settings.py", "/etc/passwd", "../ui/index.html/..", "js"):
        with pytest.raises(NotFoundError):
            _ui_file(rel)


def test_every_script_the_page_loads_exists(server):
    """Each ES module imported by another resolves (a missing file would break the page silently)."""
    import re

    ui = REPO / "src" / "voxbox" / "server" / "ui"
    for js in (ui / "js").glob("*.js"):
        for name in re.findall(r"from '\./([\w-]+\.js)'", js.read_text()):
            assert httpx.get(f"{server.url}/ui/js/{name}").status_code == 200, (js.name, name)


def test_doctor_needs_the_key(server, auth):
    assert httpx.get(server.url + "/v1/doctor").status_code == 401
    r = httpx.get(server.url + "/v1/doctor", headers=auth, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["machine"]["cpu"]["logical_cores"] >= 1
    assert body["probe_mode"] in ("cached", "none")  # HTTP never runs probes
    assert body["plans"]["faster-whisper"]["placements"][0]["reason"]
    assert KEY not in r.text and "startup" not in body  # no server-side cache paths


def test_server_info_engines_and_no_secrets(server, auth, monkeypatch):
    assert httpx.get(server.url + "/v1/server").status_code == 401
    monkeypatch.setenv("VOXBOX_API_KEY", KEY)
    monkeypatch.setenv("VOXBOX_MODELS__TTL", "123")
    r = httpx.get(server.url + "/v1/server", headers=auth)
    assert r.status_code == 200, r.text
    assert KEY not in r.text
    body = r.json()
    assert body["api_key_required"] is True
    assert body["capabilities"]["realtime"] is True  # the Realtime websocket route (on by default)
    assert body["capabilities"]["translations"] is True
    engines = {e["name"]: e for e in body["engines"]}
    assert engines["hibari"]["available"] and engines["hibari"]["clones_voices"] is False
    assert engines["echo-tts"]["clones_voices"] is True
    assert engines["faster-whisper"]["clones_voices"] is None  # not a speech engine
    assert all(e["install_hint"] for e in engines.values())
    env = {e["name"]: e["value"] for e in body["voxbox_env"]}
    assert env["VOXBOX_MODELS__TTL"] == "123" and env["VOXBOX_API_KEY"] == "(set, hidden)"
    assert body["process"]["rss_bytes"] > 0


def test_realtime_capability_follows_the_route(tmp_path):
    """The page shows live captions only when the server has a Realtime websocket route."""
    from fastapi import WebSocket
    from fastapi.testclient import TestClient

    from voxbox.server.app import create_app

    app = create_app(make_settings(tmp_path, models={"preload_defaults": False}, realtime={"enabled": False}))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/v1/server").json()["capabilities"]["realtime"] is False

        async def realtime(ws: WebSocket) -> None:
            await ws.close()

        app.add_api_websocket_route("/v1/realtime", realtime)
        assert client.get("/v1/server").json()["capabilities"]["realtime"] is True
    app = create_app(make_settings(tmp_path, models={"preload_defaults": False}))
    with TestClient(app, base_url="http://127.0.0.1") as client:
        assert client.get("/v1/server").json()["capabilities"]["realtime"] is True


def test_bench_latest_and_charts(server, auth):
    assert httpx.get(server.url + "/v1/bench/latest").status_code == 401
    r = httpx.get(server.url + "/v1/bench/latest", headers=auth)
    assert r.status_code == 200, r.text
    runs = {run["task"]: run for run in r.json()["data"]}
    assert set(runs) == {"tts", "asr"}
    tts = runs["tts"]
    assert tts["totals"] and tts["rows"] and "rtf.png" in tts["charts"]
    assert "hostname" not in tts["machine"]
    png = httpx.get(server.url + "/v1/bench/chart", params={"run": tts["id"], "name": "rtf.png"}, headers=auth)
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    for run, name in ((tts["id"], "results.json"), (tts["id"], "../asr/rtf.png"), ("..", "rtf.png"),
                      ("/etc", "passwd")):
        bad = httpx.get(server.url + "/v1/bench/chart", params={"run": run, "name": name}, headers=auth)
        assert bad.status_code == 404, (run, name)


def test_bench_latest_picks_the_newest_run(tmp_path):
    import json
    import shutil

    from voxbox.server.bench_results import BenchIndex

    src = REPO / "bench" / "results"
    run = next(src.glob("*/tts"))
    for name, created in (("old", "2020-01-01T00:00:00Z"), ("new", "2030-01-01T00:00:00Z")):
        shutil.copytree(run, tmp_path / name)
        data = json.loads((tmp_path / name / "results.json").read_text())
        data["created"] = created
        (tmp_path / name / "results.json").write_text(json.dumps(data))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "results.json").write_text("{not json")
    latest = BenchIndex(tmp_path).latest()
    assert [r["id"] for r in latest] == ["new"]
    assert BenchIndex(tmp_path / "missing").latest() == []


def test_uploaded_voice_content_round_trips(server, auth, moonshine_assets):
    clip = (moonshine_assets / "beckett.wav").read_bytes()
    r = httpx.post(server.url + "/v1/voices", headers=auth, data={"name": "ui-clip"},
                   files={"file": ("beckett.wav", clip, "audio/wav")})
    assert r.status_code == 201, r.text
    assert httpx.get(server.url + "/v1/voices/ui-clip/content").status_code == 401
    got = httpx.get(server.url + "/v1/voices/ui-clip/content", headers=auth)
    assert got.status_code == 200 and got.content == clip
    assert got.headers["content-type"] == "audio/wav"
    samples, rate = decode_bytes(got.content)
    assert rate > 0 and np.abs(samples).max() > 0.01
    missing = httpx.get(server.url + "/v1/voices/nobody/content", headers=auth)
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "name"
