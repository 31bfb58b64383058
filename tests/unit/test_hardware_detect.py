"""Detection on this machine (no GPU), with torch and with torch/CT2/ORT genuinely absent."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from voxbox.hardware.detect import MachineInfo, detect, load_machine

DATA = Path(__file__).parents[1] / "data" / "machines"
FIXTURES = sorted(p for p in DATA.glob("*.json") if not p.name.endswith(".probes.json"))


def _has_gpu() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
def test_detect_reports_cpu_only_with_torch():
    m = detect()
    assert m.gpus == [] and not m.has_gpu
    assert m.cpu.logical_cores >= 1 and m.cpu.usable_cores >= 1
    assert m.ram_total > 0 and 0 < m.ram_available <= m.ram_total
    torch = m.backend("torch")
    assert torch.installed and torch.build == "cpu" and torch.get("device_count") == 0
    ct2 = m.backend("ctranslate2")
    assert ct2.installed and ct2.get("cuda_device_count") == 0 and "int8" in ct2.get("cpu_compute_types")
    ort = m.backend("onnxruntime")
    assert ort.installed and "CPUExecutionProvider" in ort.get("providers") and ort.build == "cpu"
    if sys.platform == "linux" and m.cpu.arch == "x86_64":
        assert "avx2" in m.cpu.features or "sse4_2" in m.cpu.features


def test_detect_is_cached_in_process():
    a = detect()
    assert detect() is a
    b = detect(refresh=True)
    assert b is not a and b.fingerprint_key() == a.fingerprint_key()


def test_machine_info_json_round_trip():
    m = detect()
    again = MachineInfo.from_dict(json.loads(m.to_json()))
    assert again.to_dict() == m.to_dict()


@pytest.mark.parametrize("path", FIXTURES, ids=lambda p: p.stem)
def test_fixtures_load_and_round_trip(path):
    m = load_machine(path)
    assert MachineInfo.from_dict(m.to_dict()).to_dict() == m.to_dict()
    assert m.fingerprint_key()


BLOCKER = textwrap.dedent('''
    import importlib.abc, sys
    BLOCKED = {"torch", "ctranslate2", "onnxruntime", "pynvml", "pywhispercpp", "_pywhispercpp"}
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ModuleNotFoundError(f"No module named {name!r} (blocked)", name=name)
            return None
    sys.meta_path.insert(0, Block())
''')


def _run_without_backends(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", BLOCKER + textwrap.dedent(code)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return out.stdout


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
def test_detect_without_torch_ct2_ort():
    stdout = _run_without_backends('''
        import json, sys
        from voxbox.hardware.detect import detect
        m = detect()
        assert "torch" not in sys.modules and "ctranslate2" not in sys.modules
        print(json.dumps(m.to_dict()))
    ''')
    m = MachineInfo.from_dict(json.loads(stdout))
    assert m.gpus == []
    for name in ("torch", "ctranslate2", "onnxruntime"):
        b = m.backend(name)
        assert not b.installed and "blocked" in b.error
    assert m.cpu.logical_cores >= 1 and m.ram_total > 0


@pytest.mark.skipif(_has_gpu(), reason="this machine has a GPU")
def test_doctor_and_planner_without_backends():
    stdout = _run_without_backends('''
        import json
        from voxbox.engines.placement import auto_device
        from voxbox.engines.registry import ENGINES
        from voxbox.hardware.doctor import build_report
        r = build_report(ENGINES.values(), probe=False)
        print(json.dumps({"asr": r["asr_engine"], "warnings": r["warnings"],
                          "fw": r["plans"]["faster-whisper"]["placements"][0],
                          "resolve": auto_device("faster-whisper", ENGINES["faster-whisper"].components[0])}))
    ''')
    r = json.loads(stdout)
    assert r["asr"]["engine"] == "faster-whisper"
    assert (r["fw"]["device"], r["fw"]["dtype"]) == ("cpu", "int8")
    assert r["resolve"][:2] == ["cpu", "int8"]
    assert any("not installed" in w for w in r["warnings"])
