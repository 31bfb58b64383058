"""Child side of a probe: ``python -m voxbox.hardware._probe_child SPEC.json RESULT.json``.

Imports the target ("module:function"), calls ``fn(device=..., dtype=..., **kwargs)``, and writes
what happened to RESULT.json (atomically). The parent (``voxbox.hardware.probe``) owns the
watchdog, the memory guard and the verdict; this side only reports facts: the wall time, the
device the result actually lives on, and anything the target returned.
"""

from __future__ import annotations

import importlib
import json
import os
import sys
import time
import traceback
from typing import Any


def _observed(value: Any) -> tuple[str | None, dict[str, Any]]:
    """(device the work ran on, JSON-safe details) from whatever the target returned."""
    if isinstance(value, dict):
        details = {k: v for k, v in value.items() if isinstance(v, (str, int, float, bool, list, type(None)))}
        dev = value.get("device")
        if dev is None and hasattr(value.get("output"), "device"):
            dev = value["output"].device
        return (None if dev is None else str(dev)), details
    dev = getattr(value, "device", None)  # a torch tensor, a CT2 StorageView...
    if dev is not None:
        return str(dev), {"returned": type(value).__name__}
    return None, {"returned": type(value).__name__}


def main(argv: list[str]) -> int:
    spec_path, result_path = argv[1], argv[2]
    with open(spec_path) as f:
        spec = json.load(f)
    for p in reversed(spec.get("pythonpath") or []):
        sys.path.insert(0, p)
    result: dict[str, Any] = {"pid": os.getpid()}
    t0 = time.perf_counter()
    try:
        mod_name, _, fn_name = spec["target"].partition(":")
        fn = getattr(importlib.import_module(mod_name), fn_name)
        t1 = time.perf_counter()
        value = fn(device=spec["device"], dtype=spec.get("dtype"), **(spec.get("kwargs") or {}))
        t2 = time.perf_counter()
        observed, details = _observed(value)
        result.update(ok=True, observed_device=observed, details=details,
                      import_s=round(t1 - t0, 4), call_s=round(t2 - t1, 4))
    except BaseException as exc:  # report everything, SystemExit included  # noqa: BLE001 - the child reports any failure to its parent
        result.update(ok=False, error=f"{type(exc).__name__}: {' '.join(str(exc).split())}"[:2000],
                      traceback=traceback.format_exc()[-4000:], call_s=round(time.perf_counter() - t0, 4))
    tmp = result_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(result, f, default=str)
    os.replace(tmp, result_path)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # skip interpreter teardown: some GPU runtimes hang in their atexit handlers


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
