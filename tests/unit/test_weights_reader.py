"""The staged safetensors reader (``voxbox.engines.weights``) against safetensors' own loader."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
st = pytest.importorskip("safetensors.torch")

from voxbox.engines import weights  # noqa: E402


@pytest.fixture()
def checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(weights, "STAGE_BYTES", 1000)  # tensors span several staging buffers
    g = torch.Generator().manual_seed(0)
    tensors = {
        "a.weight": torch.randn(37, 29, generator=g).to(torch.bfloat16),
        "b.bias": torch.randn(5, generator=g),
        "c.ids": torch.arange(700, dtype=torch.int64),
        "d.scalar": torch.tensor(3.5, dtype=torch.float16),
        "e.empty": torch.zeros((0, 4)),
        "f.mask": torch.tensor([True, False, True]),
    }
    path = tmp_path / "m.safetensors"
    st.save_file(tensors, str(path), metadata={"format": "pt"})
    return path, tensors


@pytest.mark.parametrize("device", ["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
def test_staged_read_equals_safetensors(checkpoint, device):
    path, ref = checkpoint
    got = dict(weights.read_tensors(path, device, staged=True))
    assert sorted(got) == sorted(ref)
    for k, v in ref.items():
        assert got[k].dtype == v.dtype and got[k].shape == v.shape and got[k].device.type == device
        assert torch.equal(got[k].cpu(), v), k


def test_keep_filters_and_truncation_is_refused(checkpoint, tmp_path):
    path, ref = checkpoint
    got = dict(weights.read_tensors(path, "cpu", keep=lambda n: n.startswith("a."), staged=True))
    assert list(got) == ["a.weight"]
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(ValueError, match="truncated"):
        dict(weights.read_tensors(cut, "cpu", staged=True))


@pytest.mark.parametrize("threads", ["1", "3"])
def test_any_thread_count_reads_the_same(checkpoint, monkeypatch, threads):
    path, ref = checkpoint
    monkeypatch.setenv("VOXBOX_READ_THREADS", threads)
    got = dict(weights.read_tensors(path, "cpu", staged=True))
    assert sorted(got) == sorted(ref)
    for k, v in got.items():
        assert torch.equal(v, ref[k]), k


def test_stopping_early_releases_the_readers(checkpoint):
    import threading

    path, _ = checkpoint
    it = weights.read_tensors(path, "cpu", staged=True)
    next(it)
    it.close()
    assert not [t for t in threading.enumerate() if t.name.startswith("voxbox-read-")]
