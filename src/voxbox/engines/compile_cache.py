"""Compiled kernels that outlive the process: ``torch.compile``'s on-disk caches in voxbox's cache dir.

Inductor keeps what it compiles (FX graphs, AOTAutograd graphs, autotuning choices) and Triton keeps
the kernels it builds in directories on disk; by default both are under ``/tmp`` (Inductor:
``/tmp/torchinductor_<user>``), which a reboot or a fresh container empties, so every start of a
GPU engine compiled again (8-40 s per engine on an H200). :func:`persist_compile_cache` points both
at ``<voxbox cache dir>/compile`` before the first compile, so the second start of the same engine on
the same torch, Triton and GPU loads its kernels instead. The caches key every entry by the graph,
the torch and Triton versions and the device, so one directory serves several GPUs and upgrades
(stale entries are simply never hit again; ``voxbox`` never needs to clear it, a user may).

Inductor compiles in a pool of worker processes that it starts at the first compiled call and that
takes 10-15 s of every core to boot (each worker imports torch). On a second start every kernel
comes from the cache, the warm-up is short, and the pool is still booting when the engine is ready:
for those seconds the host-side parts of a call (eager launches) ran up to 1.5x slower (echo-tts on
an H200; the GPU work was the same kernel for kernel, and 8-15 s later the calls ran at the first
start's speed). Starting the pool before the weights load did not help (it blocked the load for
about 5 s and was still booting at the end); torch's ``TORCHINDUCTOR_COMPILE_THREADS=1`` avoids the
pool altogether at the price of a slower first start. Work captured in CUDA graphs is not affected.

What is not cached by them: Dynamo's tracing of the Python code (seconds for a 32-layer step) and
CUDA-graph capture (milliseconds per graph); those run on every start.

``TORCHINDUCTOR_CACHE_DIR`` / ``TRITON_CACHE_DIR`` set by the user win; ``VOXBOX_COMPILE_CACHE=0``
leaves torch's defaults alone. Nothing here imports torch: the variables are read when compiling.

Python's own compiled bytecode is the other artefact a start may redo. ``pip`` writes ``.pyc`` files
at install, but images built with ``pip install --no-compile`` or ``PYTHONDONTWRITEBYTECODE=1`` (a
common Dockerfile line) on a read-only or bytecode-less site-packages leave none, and then every
process compiles the ~1,500 modules torch, Dynamo and Inductor import from source: 5-6 s of each
start of a compiled GPU engine on an H200 host (cProfile: ``builtins.compile``, 1,900 calls).
:func:`persist_bytecode_cache` finds that case before torch is imported and points Python's
``sys.pycache_prefix`` (``PYTHONPYCACHEPREFIX``) at ``<voxbox cache dir>/pycache``, so the first
start writes the bytecode there and later starts read it; source trees are never written.
``VOXBOX_BYTECODE_CACHE=0`` turns this off; a prefix the user set wins.
"""

from __future__ import annotations

import getpass
import importlib.util
import logging
import os
import re
import sys
import tempfile
from pathlib import Path

from voxbox.paths import cache_dir

__all__ = ["compile_cache_dir", "persist_bytecode_cache", "persist_compile_cache", "startup_caches"]

log = logging.getLogger(__name__)

_VARS = {"TORCHINDUCTOR_CACHE_DIR": "inductor", "TRITON_CACHE_DIR": "triton"}


def _torch_default(var: str) -> str:
    """The value torch itself writes into ``TORCHINDUCTOR_CACHE_DIR`` the first time Inductor asks
    for its cache dir (``/tmp/torchinductor_<user>``): not a user's choice, so it is replaced."""
    if var != "TORCHINDUCTOR_CACHE_DIR":
        return ""
    try:
        user = re.sub(r'[\\/:*?"<>|]', "_", getpass.getuser())
    except (KeyError, OSError):
        return ""
    return os.path.join(tempfile.gettempdir(), "torchinductor_" + user)


def compile_cache_dir() -> Path:
    """Where voxbox keeps compiled kernels: ``<cache dir>/compile``."""
    return cache_dir() / "compile"


def persist_compile_cache() -> dict[str, str]:
    """Point Inductor's and Triton's caches into :func:`compile_cache_dir` where the user has not
    chosen a directory; returns the variables now in effect (empty when turned off)."""
    if _off("VOXBOX_COMPILE_CACHE"):
        return {}
    root = compile_cache_dir()
    out: dict[str, str] = {}
    for var, sub in _VARS.items():
        if not os.environ.get(var) or os.environ[var] == _torch_default(var):
            path = root / sub
            try:
                path.mkdir(parents=True, exist_ok=True)
            except OSError as exc:  # a read-only home: torch's own default still works
                log.debug("compile cache %s not usable: %s", path, exc)
                continue
            os.environ[var] = str(path)
        out[var] = os.environ[var]
    return out



def _off(var: str) -> bool:
    return os.environ.get(var, "1").strip().lower() in ("0", "false", "no", "off")


def _bytecode_case(probe: str) -> str:
    """Where ``probe``'s bytecode comes from without voxbox: ``absent`` (not installed as source),
    ``installed`` (pip wrote it), ``python`` (Python writes it next to the source) or ``none``."""
    try:
        spec = importlib.util.find_spec(probe)
        if spec is None or not spec.origin or not spec.origin.endswith(".py"):
            return "absent"
        cached = importlib.util.cache_from_source(spec.origin)
    except (ImportError, ValueError, NotImplementedError):
        return "absent"
    if os.path.exists(cached):
        return "installed"
    if not sys.dont_write_bytecode and os.access(os.path.dirname(spec.origin), os.W_OK):
        return "python"
    return "none"


def persist_bytecode_cache(probe: str = "torch") -> str | None:
    """Cache bytecode under ``<cache dir>/pycache`` when the package ``probe`` has none and Python
    would not write it (see the module text); returns the prefix now in use by this call, else None.
    Call before ``probe`` is imported (the CLI does, first thing; so does loading a torch engine)."""
    if _off("VOXBOX_BYTECODE_CACHE") or sys.pycache_prefix or _bytecode_case(probe) != "none":
        return None
    root = cache_dir() / "pycache"
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        log.debug("bytecode cache %s not usable: %s", root, exc)
        return None
    sys.pycache_prefix = str(root)
    sys.dont_write_bytecode = False
    os.environ.setdefault("PYTHONPYCACHEPREFIX", str(root))  # Inductor's compile workers too
    log.info("%s has no cached bytecode; caching it in %s", probe, root)
    return str(root)


def _bytecode_status(probe: str) -> str:
    prefix = sys.pycache_prefix
    if prefix:
        ours = Path(prefix) == cache_dir() / "pycache"
        return f"kept in voxbox's cache ({prefix})" if ours else f"kept in the prefix you set ({prefix})"
    case = _bytecode_case(probe)
    if case != "none":
        return {"absent": f"{probe} not installed", "installed": f"installed with {probe}",
                "python": "written next to the source by Python at the first import"}[case]
    why = "VOXBOX_BYTECODE_CACHE=0" if _off("VOXBOX_BYTECODE_CACHE") else "this process did not set it up"
    return f"NOT cached ({why}): every start compiles {probe} from source, about 5 s"


def startup_caches(probe: str = "torch") -> dict[str, str]:
    """What makes a second start fast on this machine, as words (``voxbox doctor``); changes nothing."""
    from voxbox.engines.weights import read_threads

    kernels = {}
    for var, sub in _VARS.items():
        mine = os.environ.get(var)
        if mine and mine != _torch_default(var) and not mine.startswith(str(compile_cache_dir())):
            kernels[var] = f"{mine} (yours)"
        elif _off("VOXBOX_COMPILE_CACHE"):
            kernels[var] = "torch's default (VOXBOX_COMPILE_CACHE=0)"
        else:
            kernels[var] = str(compile_cache_dir() / sub)
    return {"compiled kernels": ", ".join(f"{k.split('_')[0].lower()} {v}" for k, v in kernels.items()),
            "bytecode": _bytecode_status(probe), "weight reader threads": str(read_threads())}
