"""``voxbox batch transcribe`` / ``voxbox batch speak``: in-process, and on Ray Data on a real local
cluster; the same records either way, a killed worker, an interrupted job resumed.

The corpus: 16 sentences spoken by ``voxbox batch speak`` itself, 4 human recordings (moonshine's
assets, as the other tests use) and one file that is not audio — 21 inputs.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from ray_harness import LocalCluster, assert_same_timed, ray_env

from voxbox.text.scoring import wer

pytestmark = pytest.mark.slow

SENTENCES = [
    "The quick brown fox jumps over the lazy dog.",
    "It was a bright cold day in April, and the clocks were striking thirteen.",
    "Call me Ishmael.",
    "All happy families are alike; each unhappy family is unhappy in its own way.",
    "The sky above the port was the color of television.",
    "In a hole in the ground there lived a hobbit.",
    "Many years later, he remembered the afternoon his father took him to see ice.",
    "The rain fell softly on the quiet village all night long.",
    "She sells sea shells by the sea shore every summer.",
    "Please bring the blue folder to the meeting tomorrow morning.",
    "A journey of a thousand miles begins with a single step.",
    "The museum opens at nine and closes at five.",
    "We walked along the river until the sun went down.",
    "He forgot his umbrella on the train again.",
    "The children laughed as the kite rose into the wind.",
    "Fresh bread smells wonderful early in the morning.",
]
HUMAN = ["beckett.wav", "clone-test.wav", "error.wav", "success.wav"]


def voxbox(*args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "voxbox.cli", *args], env=env or ray_env(), capture_output=True,
                          text=True, timeout=timeout, check=False)


def records(path: Path) -> dict[str, dict]:
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        rows = pq.read_table(path).to_pylist()
    else:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return {r["path"]: r for r in rows}


def assert_same_transcripts(got: dict[str, dict], want: dict[str, dict]) -> None:
    """The same records as the in-process run's, up to CTranslate2's numerics. A run that was
    resumed, or Ray's workers (one thread each; after a kill, other batch compositions), decode a
    file in another batch than the in-process run, and on some CPUs that flips a near-tie (seen:
    "In a hole in the ground, they're" / "in a hole in the ground they're") or moves a timestamp
    token. A file given another file's transcript, or lost words, fail these bounds."""
    assert set(got) == set(want)
    exact = ("language", "duration", "error")
    assert {k: [got[k][c] for c in exact] for k in want} == {k: [want[k][c] for c in exact] for k in want}
    spoken = [k for k in want if want[k]["text"]]
    assert [bool(got[k]["text"]) for k in spoken] == [True] * len(spoken)
    assert wer([want[k]["text"] for k in spoken], [got[k]["text"] for k in spoken]) <= 0.03
    assert all(wer(want[k]["text"], got[k]["text"]) <= 0.25 for k in spoken)
    for k in spoken:
        if want[k]["text"] == got[k]["text"]:  # same tokens: the times may still move by a timestamp token
            timed = [[(s["text"], s["start"], s["end"]) for s in r[k]["segments"]] for r in (got, want)]
            assert_same_timed(*timed, tol=0.5)


def _lines(path: Path) -> int:
    return sum(1 for _ in open(path)) if path.exists() else 0


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, moonshine_assets) -> Path:
    """21 inputs; the 16 sentences are synthesized by `voxbox batch speak` (in-process)."""
    root = tmp_path_factory.mktemp("batch")
    manifest = root / "lines.jsonl"
    manifest.write_text("".join(json.dumps({"id": f"s{i:02d}", "text": t}) + "\n" for i, t in enumerate(SENTENCES)))
    folder = root / "corpus"
    proc = voxbox("batch", "speak", str(manifest), "--out", str(folder))
    assert proc.returncode == 0, proc.stderr
    made = [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]
    assert len(made) == 16 and all(r["error"] is None and r["duration"] > 0.5 for r in made)
    assert "synthesized 16 of 16" in proc.stderr
    (folder / "manifest.jsonl").unlink()
    for name in HUMAN:
        shutil.copy(moonshine_assets / name, folder / name)
    (folder / "broken.wav").write_bytes(b"RIFF not really a wav file")
    return folder


@pytest.fixture(scope="module")
def local_out(corpus, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("local") / "t.jsonl"
    proc = voxbox("batch", "transcribe", str(corpus), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "transcribed 20 of 21 file(s) (1 failed)" in proc.stderr
    return out


def test_in_process_every_file_with_the_cli_wer(corpus, local_out):
    recs = records(local_out)
    assert len(recs) == 21
    bad = recs[str(corpus / "broken.wav")]
    assert bad["text"] is None and "audio" in bad["error"]  # recorded, and the job went on
    refs = {str(corpus / f"s{i:02d}.wav"): t for i, t in enumerate(SENTENCES)}
    hyps = [recs[k]["text"] for k in refs]
    assert wer(list(refs.values()), hyps) < 0.1
    for k, r in recs.items():
        if k != str(corpus / "broken.wav"):
            assert r["error"] is None and r["engine"] == "faster-whisper"
            # VAD is on (as in `voxbox transcribe`): the chimes (error.wav, success.wav) hold no speech
            assert r["language"] == "en" or (r["text"] == "" and r["language"] is None), (k, r)
            assert r["duration"] > 0.5 and r["timings"]["total"] > 0 and isinstance(r["segments"], list)
    # the plain CLI on some of the same files: the same text, so the same WER
    some = [str(corpus / n) for n in ("s00.wav", "s03.wav", "s07.wav", "beckett.wav", "clone-test.wav")]
    proc = voxbox("transcribe", *some, "-f", "json")
    assert proc.returncode == 0, proc.stderr
    assert {d["file"]: d["text"] for d in json.loads(proc.stdout)} == {k: recs[k]["text"] for k in some}


def test_interrupted_then_resumed_processes_only_the_missing(corpus, local_out, tmp_path):
    out = tmp_path / "t.parquet"
    journal = tmp_path / "t.parquet.partial.jsonl"
    env = ray_env()
    # Ctrl-C as in a terminal (a parent may have started this test with SIGINT ignored)
    proc = subprocess.Popen([sys.executable, "-m", "voxbox.cli", "batch", "transcribe", str(corpus), "--out", str(out)],
                            env=env, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    deadline = time.monotonic() + 240
    while _lines(journal) < 6 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "interrupted" in err and "Traceback" not in err, err
    assert not out.exists()
    first = {json.loads(line)["path"]: json.loads(line) for line in journal.read_text().splitlines()}
    assert 6 <= len(first) < 21
    again = voxbox("batch", "transcribe", str(corpus), "--out", str(out))
    assert again.returncode == 0, again.stderr
    ok_before = sum(1 for r in first.values() if r["error"] is None)
    assert f"{ok_before} already done" in again.stderr and f"of {21 - ok_before} file(s)" in again.stderr
    final = records(out)
    assert len(final) == 21 and not journal.exists()
    for k, r in first.items():
        if r["error"] is None:
            kept = {stage: v for stage, v in final[k]["timings"].items() if v is not None}
            assert kept == r["timings"]  # the first run's record, not redone
    assert_same_transcripts(final, records(local_out))


@pytest.mark.ray
def test_ray_same_records_and_survives_a_killed_worker(cluster: LocalCluster, corpus, local_out, tmp_path):
    out = tmp_path / "ray.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "voxbox.cli", "batch", "transcribe", str(corpus), "--out", str(out),
                             "--address", cluster.address, "--actors", "2", "--actor-cpus", "0.75"],
                            env=cluster.env, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while _lines(out) < 4 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    workers = cluster.descendants("_TranscribeActor")
    assert len(workers) >= 1 and proc.poll() is None, "no engine worker to kill"
    victim = workers[0].pid
    os.kill(victim, signal.SIGKILL)  # a worker of this test's cluster, by its id
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert "ray: 2 actor(s)" in err and "transcribed 20 of 21 file(s) (1 failed)" in err
    assert victim not in {p.pid for p in cluster.descendants("_TranscribeActor")}
    got, want = records(out), records(local_out)
    assert_same_transcripts(got, want)


@pytest.mark.ray
def test_speak_with_verify_same_with_and_without_ray(cluster: LocalCluster, tmp_path):
    from voxbox.audio.decode import decode

    manifest = tmp_path / "m.csv"
    manifest.write_text("id,text,voice,speaker\n"
                        "a,The museum opens at nine and closes at five.,nova,ann\n"
                        "b,Please bring the blue folder to the meeting.,,bob\n"
                        "c,Call me Ishmael.,nobody,cid\n")
    plain = voxbox("batch", "speak", str(manifest), "--out", str(tmp_path / "local"), "--verify", "--threads", "1")
    assert plain.returncode == 0, plain.stderr
    on_ray = voxbox("batch", "speak", str(manifest), "--out", str(tmp_path / "ray"), "--verify", "--threads", "1",
                    "--address", cluster.address, "--actor-cpus", "0.5", env=cluster.env)
    assert on_ray.returncode == 0, on_ray.stderr
    local = {r["id"]: r for r in map(json.loads, (tmp_path / "local" / "manifest.jsonl").read_text().splitlines())}
    ray_ = {r["id"]: r for r in map(json.loads, (tmp_path / "ray" / "manifest.jsonl").read_text().splitlines())}
    assert set(local) == set(ray_) == {"a", "b", "c"}
    assert "unknown hibari voice" in local["c"]["error"] and ray_["c"]["error"] == local["c"]["error"]
    for k in ("a", "b"):
        lr, rr = local[k], ray_[k]
        assert lr["error"] is None and lr["file"] == f"{k}.wav" and lr["speaker"] in ("ann", "bob")
        assert lr["wer"] is not None and lr["wer"] <= 0.1 and lr["transcript"]
        assert [lr[c] for c in ("duration", "sample_rate", "wer", "transcript")] == \
               [rr[c] for c in ("duration", "sample_rate", "wer", "transcript")]
        a = decode(str(tmp_path / "local" / lr["file"])).samples
        b = decode(str(tmp_path / "ray" / rr["file"])).samples
        assert len(a) == len(b) and float(np.corrcoef(a, b)[0, 1]) > 0.999
    again = voxbox("batch", "speak", str(manifest), "--out", str(tmp_path / "local"))
    assert again.returncode == 0 and "2 already done" in again.stderr  # only the failed row is tried again


@pytest.mark.parametrize("args,needle", [
    (("batch", "transcribe", "{tmp}/nothing-here", "--out", "{tmp}/o.jsonl"), "no such file, folder or pattern"),
    (("batch", "transcribe", "{tmp}", "--out", "{tmp}/o.txt"), ".jsonl or .parquet"),
    (("batch", "speak", "{tmp}/none.jsonl", "--out", "{tmp}/d"), "no such manifest"),
    (("batch", "speak", "{tmp}/lines.jsonl", "--out", "{tmp}/d", "--format", "xyz"), "unsupported audio format"),
    (("batch", "transcribe", "{tmp}", "--out", "{tmp}/o.jsonl", "--option", "bogus=1"), "unknown option(s) bogus"),
    (("serve", "--address", "127.0.0.1:1"), "--address needs --ray"),
    (("serve", "--ray", "--replicas", "3-1", "--port", "1"), "--replicas '3-1'"),
])
def test_bad_input_is_one_line(tmp_path, args, needle):
    (tmp_path / "lines.jsonl").write_text('{"text": "hi"}\n')
    proc = voxbox(*(a.replace("{tmp}", str(tmp_path)) for a in args), timeout=60)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 1 and len(lines) == 1 and needle in lines[0], proc.stderr
