"""Batch inputs and the resumable output store (no model involved)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voxbox.batch.inputs import audio_items, speak_items
from voxbox.batch.store import ResultStore
from voxbox.errors import BadInputError


def _touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_folder_glob_and_manifests(tmp_path):
    for name in ("a.wav", "sub/b.flac", "notes.txt", "sub/c.MP3"):
        _touch(tmp_path / "data" / name)
    items = audio_items(str(tmp_path / "data"))
    assert [Path(i.key).name for i in items] == ["a.wav", "b.flac", "c.MP3"]  # recursive, by suffix, sorted
    assert all(Path(i.path).is_absolute() for i in items)  # Ray tasks run elsewhere
    assert [Path(i.key).name for i in audio_items(str(tmp_path / "data" / "**" / "*.flac"))] == ["b.flac"]
    (tmp_path / "m.jsonl").write_text(json.dumps({"path": "data/a.wav", "speaker": "x"}) + "\n\n"
                                      + json.dumps({"path": "data/sub/b.flac"}) + "\n")
    rows = audio_items(str(tmp_path / "m.jsonl"))
    assert [r.key for r in rows] == ["data/a.wav", "data/sub/b.flac"]  # as written, resolved beside the manifest
    assert rows[0].path == str((tmp_path / "data" / "a.wav").resolve()) and rows[0].extra == {"speaker": "x"}
    (tmp_path / "m.csv").write_text("file,ref\ndata/a.wav,hello\n")
    assert audio_items(str(tmp_path / "m.csv"), path_column="file")[0].extra == {"ref": "hello"}
    with pytest.raises(BadInputError, match="row 1 has no 'path'"):
        audio_items(str(tmp_path / "m.csv"))
    with pytest.raises(BadInputError, match="no such file, folder or pattern"):
        audio_items(str(tmp_path / "missing"))
    with pytest.raises(BadInputError, match="matches no file"):
        audio_items(str(tmp_path / "*.ogg"))


def test_speak_manifest(tmp_path):
    m = tmp_path / "lines.jsonl"
    m.write_text("\n".join(json.dumps(r) for r in [
        {"text": "One."}, {"id": "two", "text": "Two.", "voice": "nova", "lang": "en"},
        {"text": "Three.", "reference": "ref.wav", "reference_text": "hi"}]) + "\n")
    a, b, c = speak_items(m)
    assert (a.id, b.id, c.id) == ("000001", "two", "000003")
    assert b.voice == "nova" and b.extra == {"lang": "en"}
    assert c.reference == str((tmp_path / "ref.wav").resolve()) and c.reference_text == "hi"
    m.write_text(json.dumps({"id": "../x", "text": "a"}) + "\n")
    with pytest.raises(BadInputError, match="names the audio file"):
        speak_items(m)
    m.write_text(json.dumps({"id": "a", "text": "a"}) + "\n" + json.dumps({"id": "a", "text": "b"}) + "\n")
    with pytest.raises(BadInputError, match="appears twice"):
        speak_items(m)


def test_jsonl_resume_keeps_done_retries_failed_and_drops_a_torn_line(tmp_path):
    out = tmp_path / "out.jsonl"
    s = ResultStore(out, "path")
    s.write({"path": "a", "text": "A", "error": None})
    s.write({"path": "b", "text": None, "error": "bad file"})
    s.close()
    with open(out, "a") as f:
        f.write('{"path": "c", "te')  # the run was killed mid-write
    s = ResultStore(out, "path")
    assert s.done() == {"a"}  # the failure is retried, the torn record redone
    assert out.read_text().endswith("\n")  # the torn fragment is gone
    s.write({"path": "b", "text": "B", "error": None})
    s.write({"path": "c", "text": "C", "error": None})
    s.finish()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["path"], r["text"]) for r in rows] == [("a", "A"), ("b", "B"), ("c", "C")]  # one record per input


def test_parquet_journal_then_merge(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    out = tmp_path / "out.parquet"
    s = ResultStore(out, "path")
    s.write({"path": "a", "segments": [{"start": 0.0, "text": "x"}], "timings": {"x": 1.0}, "error": None})
    s.close()  # interrupted: only the journal exists
    assert not out.exists() and (tmp_path / "out.parquet.partial.jsonl").is_file()
    s = ResultStore(out, "path")
    assert s.done() == {"a"}
    s.write({"path": "b", "segments": None, "timings": {"y": 2.0}, "error": "bad", "extra": 3})
    s.finish()
    assert not (tmp_path / "out.parquet.partial.jsonl").exists()
    rows = pq.read_table(out).to_pylist()
    assert [r["path"] for r in rows] == ["a", "b"] and rows[1]["extra"] == 3 and rows[0]["extra"] is None
    assert ResultStore(out, "path").done() == {"a"}


@pytest.mark.parametrize("name,needle", [("out.txt", ".jsonl or .parquet"), ("nodir/out.jsonl", "does not exist")])
def test_bad_out(tmp_path, name, needle):
    with pytest.raises(BadInputError, match=needle):
        ResultStore(tmp_path / name, "path")
    (tmp_path / "junk.jsonl").write_text("not json\n{}\n")
    with pytest.raises(BadInputError, match="not a voxbox batch record"):
        ResultStore(tmp_path / "junk.jsonl", "path")
