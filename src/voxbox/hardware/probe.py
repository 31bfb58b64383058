"""Safe probes: a tiny real inference in a child process, with a watchdog and a memory guard.

A probe runs ``module:function`` (see :mod:`voxbox.hardware.probe_targets`) in a fresh Python child
(``subprocess``, own process group), so a hang, a segfault or a runaway allocation cannot take
the caller with it. Verdicts:

* ``ok``               the work ran on the asked device (``seconds`` says how long it took)
* ``error``            it raised, the child died, or the memory guard killed it (``message``)
* ``hang``             the watchdog fired; the child and everything it started were killed
* ``slow``             it worked but took longer than ``slow_s``, or a GPU was no faster than the
                       CPU reference the target timed (timing inconsistent with the device)
* ``silent_fallback``  a GPU was asked for but the result lives on the CPU (tensor device, CT2
                       model device, ORT session providers)
* ``skipped``          not run (backend absent, or a hard quirk says it would hang the device)

Results are cached on disk keyed by the machine fingerprint (hardware + drivers + library
versions, :meth:`MachineInfo.fingerprint_key`) and the probe's own key, so a second ``doctor`` or
``serve`` start does not probe again, and a driver or library upgrade does.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from voxbox.paths import cache_dir  # re-exported

__all__ = ["ProbeCache", "ProbeResult", "ProbeSpec", "cache_dir", "run_probe", "run_probes"]

Status = Literal["ok", "error", "hang", "slow", "silent_fallback", "skipped"]
BAD_STATUSES = frozenset({"error", "hang", "silent_fallback"})
GPU_KINDS = ("cuda", "rocm", "hip", "gpu")


@dataclass(frozen=True)
class ProbeSpec:
    target: str  # "package.module:function", called as fn(device=..., dtype=..., **kwargs)
    device: str = "cpu"  # "cpu", "cuda", "cuda:1", "rocm"
    dtype: str | None = None  # torch dtype name or CT2 compute type
    engine: str | None = None  # engine (or backend) this probe speaks for
    component: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    timeout_s: float = 60.0  # watchdog
    slow_s: float | None = None  # above this the verdict is "slow"
    memory_limit_bytes: int | None = None  # host RSS of the child tree; None: 90% of available RAM
    env: dict[str, str] = field(default_factory=dict)  # extra environment for the child
    pythonpath: tuple[str, ...] = ()

    @property
    def device_kind(self) -> str:
        return self.device.split(":")[0]

    def key(self) -> str:
        """Identity in the cache (not the timeouts: a verdict does not depend on them)."""
        return json.dumps([self.target, self.device, self.dtype, self.engine, self.component,
                           self.kwargs, sorted(self.env.items())], sort_keys=True, default=str)


@dataclass
class ProbeResult:
    status: Status
    target: str
    device: str
    dtype: str | None = None
    engine: str | None = None
    component: str | None = None
    seconds: float | None = None  # the timed work (target's own timing when it gives one)
    wall_s: float | None = None  # child start to verdict, Python start-up and imports included
    observed_device: str | None = None
    message: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    cached: bool = False
    at: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def usable(self) -> bool:
        """It worked (maybe slowly)."""
        return self.status in ("ok", "slow")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeResult:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})

    def summary(self) -> str:
        t = ""
        if self.seconds is not None and self.usable:
            t = f" {self.seconds * 1e6:.0f} us" if self.seconds < 1e-3 else f" {self.seconds * 1000:.1f} ms"
        msg = f": {self.message}" if self.message else ""
        return f"{self.status}{t}{msg}"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------------
# running one probe
# ------------------------------------------------------------------------------------------------

def _tree(pid: int) -> list[Any]:
    import psutil

    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.Error:
        return []


def _rss(procs: list[Any]) -> int:
    import psutil

    total = 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def _kill_tree(proc: subprocess.Popen[bytes], known: list[Any]) -> None:
    """SIGKILL the child's process group and every descendant seen, then reap the child."""
    import psutil

    procs = {p.pid: p for p in known}
    for p in _tree(proc.pid):
        procs[p.pid] = p
    if hasattr(os, "killpg"):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # start_new_session: pgid == child's pid
    for p in procs.values():
        with contextlib.suppress(psutil.Error):
            p.kill()
    with contextlib.suppress(Exception):
        proc.wait(timeout=10)
    psutil.wait_procs([p for p in procs.values() if p.pid != proc.pid], timeout=5)


def _default_memory_limit() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available * 0.9)
    except Exception:  # pragma: no cover  # noqa: BLE001 - no readable limit: no memory guard
        return 1 << 62


def _execute(spec: ProbeSpec) -> ProbeResult:
    base: dict[str, Any] = {"target": spec.target, "device": spec.device, "dtype": spec.dtype,
                            "engine": spec.engine, "component": spec.component, "at": _now()}
    limit = spec.memory_limit_bytes or _default_memory_limit()
    with tempfile.TemporaryDirectory(prefix="voxbox-probe-") as tmp:
        spec_path, result_path, log_path = (os.path.join(tmp, n) for n in ("spec.json", "result.json", "log.txt"))
        with open(spec_path, "w") as f:
            json.dump({"target": spec.target, "device": spec.device, "dtype": spec.dtype,
                       "kwargs": spec.kwargs, "pythonpath": list(spec.pythonpath)}, f)
        env = {**os.environ, **spec.env, "PYTHONUNBUFFERED": "1"}
        t0 = time.perf_counter()
        with open(log_path, "wb") as log:
            proc = subprocess.Popen([sys.executable, "-m", "voxbox.hardware._probe_child", spec_path, result_path],
                                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
                                    start_new_session=True)
        verdict: tuple[Status, str] | None = None
        seen: list[Any] = []
        try:
            next_mem = 0.0
            while proc.poll() is None:
                now = time.perf_counter()
                if now - t0 > spec.timeout_s:
                    verdict = ("hang", f"no answer within {spec.timeout_s:g} s; the child was killed")
                    break
                if now >= next_mem:
                    seen = _tree(proc.pid) or seen
                    rss = _rss(seen)
                    if rss > limit:
                        verdict = ("error", (f"memory guard: the child used {rss / 2**20:.0f} MiB "
                                             f"(limit {limit / 2**20:.0f} MiB); it was killed"))
                        break
                    next_mem = now + 0.1
                time.sleep(0.02)
        finally:
            if proc.poll() is None or verdict is not None:
                _kill_tree(proc, seen)
            else:  # the child exited: still reap anything it left behind in its group
                _kill_tree(proc, [p for p in seen if p.pid != proc.pid])
        wall = round(time.perf_counter() - t0, 4)
        log_tail = Path(log_path).read_text(errors="replace")[-1500:].strip()
        if verdict is not None:
            return ProbeResult(status=verdict[0], message=verdict[1], wall_s=wall, **base)
        try:
            with open(result_path) as f:
                child = json.load(f)
        except (OSError, ValueError):
            rc = proc.returncode
            how = f"signal {-rc}" if rc is not None and rc < 0 else f"exit status {rc}"
            last = log_tail.splitlines()[-1] if log_tail else "no output"
            return ProbeResult(status="error", message=f"the child died ({how}): {last}"[:500], wall_s=wall, **base)
    return _judge(spec, child, wall, base)


def _judge(spec: ProbeSpec, child: dict[str, Any], wall: float, base: dict[str, Any]) -> ProbeResult:
    if not child.get("ok"):
        return ProbeResult(status="error", message=child.get("error"), wall_s=wall,
                           details={"traceback": child.get("traceback", "")[-1500:]}, **base)
    details = child.get("details") or {}
    observed = child.get("observed_device")
    seconds = details.get("seconds", child.get("call_s"))
    seconds = None if seconds is None else float(seconds)
    res = ProbeResult(status="ok", seconds=seconds, wall_s=wall, observed_device=observed, details=details, **base)
    asked_gpu = spec.device_kind in GPU_KINDS
    if asked_gpu and observed is not None and str(observed).split(":")[0].lower() not in GPU_KINDS:
        res.status = "silent_fallback"
        res.message = f"asked for {spec.device} but the work ran on {observed}"
        return res
    if asked_gpu and observed is None:
        res.message = "the target did not report a device; not verified"
    cpu_ref = details.get("cpu_seconds")
    if asked_gpu and cpu_ref and seconds is not None and seconds >= 0.9 * float(cpu_ref):
        res.status = "slow"
        res.message = (f"{seconds * 1000:.1f} ms on {spec.device} vs {float(cpu_ref) * 1000:.1f} ms on the CPU: "
                       "timing not consistent with the GPU (possible fallback)")
    elif spec.slow_s is not None and seconds is not None and seconds > spec.slow_s:
        res.status = "slow"
        res.message = f"took {seconds:.2f} s (slow above {spec.slow_s:g} s)"
    return res


# ------------------------------------------------------------------------------------------------
# cache
# ------------------------------------------------------------------------------------------------

class ProbeCache:
    """Probe verdicts on disk, one section per machine fingerprint (newest few kept)."""

    VERSION = 1
    KEEP_FINGERPRINTS = 8

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path) if path is not None else cache_dir() / "probes.json"

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") == self.VERSION:
                return data
        except (OSError, ValueError, AttributeError):
            pass
        return {"version": self.VERSION, "machines": {}}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock = self.path.with_suffix(".lock")
        with open(lock, "w") as fh:
            try:
                import fcntl

                fcntl.flock(fh, fcntl.LOCK_EX)
            except ImportError:  # pragma: no cover - Windows
                pass
            yield

    def get(self, fingerprint_key: str, spec: ProbeSpec) -> ProbeResult | None:
        entry = self._load()["machines"].get(fingerprint_key, {}).get("results", {}).get(spec.key())
        if entry is None:
            return None
        res = ProbeResult.from_dict(entry)
        res.cached = True
        return res

    def results(self, fingerprint_key: str) -> list[ProbeResult]:
        out = []
        for entry in self._load()["machines"].get(fingerprint_key, {}).get("results", {}).values():
            r = ProbeResult.from_dict(entry)
            r.cached = True
            out.append(r)
        return out

    def put(self, fingerprint_key: str, spec: ProbeSpec, result: ProbeResult,
            fingerprint: dict[str, Any] | None = None) -> None:
        with self._locked():
            data = self._load()
            machines = data["machines"]
            m = machines.setdefault(fingerprint_key, {"fingerprint": fingerprint, "results": {}})
            m["updated"] = _now()
            d = result.to_dict()
            d["cached"] = False
            m["results"][spec.key()] = d
            if len(machines) > self.KEEP_FINGERPRINTS:
                for k in sorted(machines, key=lambda k: machines[k].get("updated", ""))[: -self.KEEP_FINGERPRINTS]:
                    del machines[k]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(data, indent=1, default=str))
            os.replace(tmp, self.path)


def run_probe(spec: ProbeSpec, *, cache: ProbeCache | None | bool = True, machine: Any = None,
              refresh: bool = False) -> ProbeResult:
    """Run one probe (or return its cached verdict for this machine's fingerprint).

    ``cache=True`` uses the default on-disk cache, a :class:`ProbeCache` uses that one, ``False``
    or ``None`` disables caching. ``machine`` (a MachineInfo) supplies the fingerprint; by default
    the live detection. ``refresh=True`` runs again and overwrites the cached verdict.
    """
    store: ProbeCache | None = ProbeCache() if cache is True else (cache or None)
    fp_key = fp = None
    if store is not None:
        if machine is None:
            from voxbox.hardware.detect import detect

            machine = detect()
        fp_key, fp = machine.fingerprint_key(), machine.fingerprint()
        if not refresh:
            hit = store.get(fp_key, spec)
            if hit is not None:
                return hit
    result = _execute(spec)
    if store is not None and fp_key is not None:
        with contextlib.suppress(OSError):
            store.put(fp_key, spec, result, fp)
    return result


def run_probes(specs: list[ProbeSpec], **kw: Any) -> list[ProbeResult]:
    return [run_probe(s, **kw) for s in specs]
