"""Probe cache: same fingerprint -> no second probe; changed driver/library version -> probe again."""

from __future__ import annotations

import copy
from pathlib import Path

from voxbox.hardware.detect import load_machine
from voxbox.hardware.probe import ProbeCache, ProbeSpec, run_probe

DATA = Path(__file__).parents[1] / "data" / "machines"
HERE = str(Path(__file__).parent)


def count_calls(device, dtype, counter):
    with open(counter, "a") as f:
        f.write("x\n")
    return {"device": device, "seconds": 0.001}


def _runs(counter: Path) -> int:
    return len(counter.read_text().splitlines()) if counter.exists() else 0


def test_second_run_uses_cache_and_changed_version_reprobes(tmp_path):
    counter = tmp_path / "calls"
    cache = ProbeCache(tmp_path / "probes.json")
    machine = load_machine(DATA / "rtx5090-sm120.json")
    spec = ProbeSpec("test_hardware_cache:count_calls", "cpu", "float32", engine="test", component="c",
                     kwargs={"counter": str(counter)}, pythonpath=(HERE,))

    first = run_probe(spec, cache=cache, machine=machine)
    assert first.status == "ok" and not first.cached and _runs(counter) == 1

    second = run_probe(spec, cache=cache, machine=machine)
    assert second.cached and second.status == "ok" and _runs(counter) == 1

    # a fresh cache object on the same file (a new process) still hits
    third = run_probe(spec, cache=ProbeCache(tmp_path / "probes.json"), machine=copy.deepcopy(machine))
    assert third.cached and _runs(counter) == 1

    # library upgrade -> new fingerprint -> probes again
    upgraded = copy.deepcopy(machine)
    upgraded.backends["ctranslate2"].version = "4.9.0"
    assert upgraded.fingerprint_key() != machine.fingerprint_key()
    fourth = run_probe(spec, cache=cache, machine=upgraded)
    assert not fourth.cached and _runs(counter) == 2

    # driver upgrade too
    new_driver = copy.deepcopy(machine)
    new_driver.drivers["nvidia"] = "580.00"
    run_probe(spec, cache=cache, machine=new_driver)
    assert _runs(counter) == 3

    # free memory is not part of the key: it changes every run
    other_free = copy.deepcopy(machine)
    other_free.gpus[0].free_memory //= 2
    other_free.ram_available //= 2
    assert run_probe(spec, cache=cache, machine=other_free).cached and _runs(counter) == 3

    # refresh=True runs again and overwrites
    run_probe(spec, cache=cache, machine=machine, refresh=True)
    assert _runs(counter) == 4
    assert len(cache.results(machine.fingerprint_key())) == 1


def test_different_probe_keys_are_cached_separately(tmp_path):
    counter = tmp_path / "calls"
    cache = ProbeCache(tmp_path / "probes.json")
    machine = load_machine(DATA / "cpu-2core.json")
    a = ProbeSpec(
        "test_hardware_cache:count_calls", "cpu", "float32", kwargs={"counter": str(counter)}, pythonpath=(HERE,)
    )
    b = ProbeSpec(
        "test_hardware_cache:count_calls", "cpu", "int8", kwargs={"counter": str(counter)}, pythonpath=(HERE,)
    )
    run_probe(a, cache=cache, machine=machine)
    run_probe(b, cache=cache, machine=machine)
    run_probe(a, cache=cache, machine=machine)
    assert _runs(counter) == 2


def test_hang_verdict_is_cached_so_a_restart_does_not_hang_again(tmp_path):
    cache = ProbeCache(tmp_path / "probes.json")
    machine = load_machine(DATA / "cpu-2core.json")
    spec = ProbeSpec("test_hardware_probe:sleep_forever", "cpu", timeout_s=1.5, pythonpath=(HERE,))
    assert run_probe(spec, cache=cache, machine=machine).status == "hang"
    again = run_probe(spec, cache=cache, machine=machine)
    assert again.status == "hang" and again.cached


def test_corrupt_cache_file_is_ignored(tmp_path):
    path = tmp_path / "probes.json"
    path.write_text("{not json")
    cache = ProbeCache(path)
    machine = load_machine(DATA / "cpu-2core.json")
    counter = tmp_path / "calls"
    spec = ProbeSpec("test_hardware_cache:count_calls", "cpu", kwargs={"counter": str(counter)}, pythonpath=(HERE,))
    assert run_probe(spec, cache=cache, machine=machine).status == "ok"
    assert run_probe(spec, cache=cache, machine=machine).cached
