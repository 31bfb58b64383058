"""The placement planner: device and dtype per engine component, explained in one sentence each.

Works purely from data: a :class:`MachineInfo` (live or recorded), probe results, the quirks table
and the components an engine declares (:class:`voxbox.types.ComponentSpec`). For each component it
lists the options (each GPU the backend can use x each supported dtype, then the CPU), removes
those a quirk, a failed probe or the hardware rules out, never keeps one that does not fit the
device's free memory minus headroom, prefers the fastest probed option, and otherwise the first
GPU option in the component's dtype order. Pins (``--device``, ``--dtype``, per-component
settings) win; a pin that contradicts a probe or a quirk is kept with a warning.

Engines call :func:`resolve_device` (``device="auto"``) or :func:`plan_engine` with their
``components()``; ``voxbox doctor`` calls :func:`plan_machine`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Mapping

from voxbox.hardware.detect import GiB, GPUInfo, MachineInfo
from voxbox.hardware.probe import BAD_STATUSES, ProbeResult
from voxbox.hardware.quirks import EnvVar, Quirk, env_recipe, load_quirks, match_quirks
from voxbox.types import ComponentSpec

__all__ = [
    "auto_placement",
    "Placement",
    "Plan",
    "MachinePlan",
    "REFERENCE_COMPONENTS",
    "bytes_for",
    "default_device_for",
    "plan_asr",
    "plan_engine",
    "pins_from",
    "plan_machine",
    "resolve_device",
]

BYTES_PER_ELEMENT = {
    "float64": 8, "float32": 4, "int8_float32": 1, "float16": 2, "bfloat16": 2, "int8_float16": 1,
    "int8_bfloat16": 1, "int8": 1, "int16": 2, "int4": 0.5, "default": 4, "auto": 4,
}
CONV_KINDS = frozenset({"conv", "autoencoder", "vocoder", "codec"})
CT2_GPU_ORDER = ("float16", "int8_float16", "bfloat16", "int8_bfloat16", "int8", "float32")
CT2_CPU_ORDER = ("int8", "int8_float32", "float32")
ORT_GPU_PROVIDERS = {"cuda": ("CUDAExecutionProvider", "TensorrtExecutionProvider"),
                     "rocm": ("ROCMExecutionProvider", "MIGraphXExecutionProvider")}
ENGINE_BACKENDS = {"faster-whisper": "ctranslate2", "ctranslate2": "ctranslate2", "piper": "onnxruntime",
                   "hibari": "onnxruntime", "onnx-whisper": "onnxruntime", "onnxruntime": "onnxruntime",
                   "torch-whisper": "torch", "echo-tts": "torch", "fish-s2": "torch", "torch": "torch"}

#: Reference component sizes for the bundled and known engines, used by ``doctor`` and by
#: :func:`default_device_for` before an engine is loaded (a loaded engine's ``components()`` wins).
REFERENCE_COMPONENTS: dict[str, list[ComponentSpec]] = {
    "faster-whisper": [ComponentSpec("whisper", params=39_000_000, devices=("cpu", "cuda"),
                                     dtypes=("float16", "int8_float16", "int8", "int8_float32", "float32"),
                                     backend="ctranslate2", kind="transformer", overhead_bytes=300 * 2**20)],
    "torch-whisper": [ComponentSpec("whisper", params=39_000_000, devices=("cpu", "cuda", "rocm"),
                                    dtypes=("float16", "bfloat16", "float32"), backend="torch",
                                    kind="transformer", overhead_bytes=500 * 2**20)],
    "onnx-whisper": [ComponentSpec("whisper", params=39_000_000, devices=("cpu", "cuda", "rocm"),
                                   dtypes=("float32",), backend="onnxruntime", kind="transformer",
                                   overhead_bytes=300 * 2**20)],
    "piper": [ComponentSpec("vits", params=16_000_000, devices=("cpu",), dtypes=("float32",),
                            backend="onnxruntime", kind="vocoder", overhead_bytes=200 * 2**20)],
    "hibari": [ComponentSpec("model", params=4_000_000, devices=("cpu",), dtypes=("float32",),
                             backend="onnxruntime", kind="vocoder", overhead_bytes=100 * 2**20)],
    # Fish Audio S2-Pro sizes (approximate): 4B slow AR, 0.4B fast AR, DAC-style codec.
    "fish-s2": [
        ComponentSpec("slow_ar", params=4_000_000_000, devices=("cpu", "cuda", "rocm"),
                      dtypes=("bfloat16", "float16", "float32"), backend="torch", kind="transformer",
                      overhead_bytes=2 * GiB),
        ComponentSpec("fast_ar", params=400_000_000, devices=("cpu", "cuda", "rocm"),
                      dtypes=("bfloat16", "float16", "float32"), backend="torch", kind="transformer",
                      overhead_bytes=256 * 2**20),
        ComponentSpec("codec", params=200_000_000, devices=("cpu", "cuda", "rocm"),
                      dtypes=("float32", "bfloat16", "float16"), backend="torch", kind="codec",
                      overhead_bytes=1 * GiB),
    ],
    # Echo-TTS-like sizes (approximate): text encoder, 2.4B diffusion transformer, conv autoencoder.
    "echo-tts": [
        ComponentSpec("text_encoder", params=120_000_000, devices=("cpu", "cuda", "rocm"),
                      dtypes=("bfloat16", "float16", "float32"), backend="torch", kind="transformer",
                      overhead_bytes=256 * 2**20),
        ComponentSpec("dit", params=2_400_000_000, devices=("cpu", "cuda", "rocm"),
                      dtypes=("bfloat16", "float16", "float32"), backend="torch", kind="transformer",
                      overhead_bytes=2 * GiB),
        ComponentSpec("autoencoder", params=110_000_000, devices=("cpu", "cuda", "rocm"),
                      dtypes=("bfloat16", "float16", "float32"), backend="torch", kind="autoencoder",
                      overhead_bytes=1 * GiB),
    ],
}


def bytes_for(spec: ComponentSpec, dtype: str) -> int:
    """Memory a component needs at ``dtype``: params x bytes per element + overhead."""
    return int(spec.params * BYTES_PER_ELEMENT.get(dtype, 4) + spec.overhead_bytes)


def headroom(total: int) -> int:
    """Memory left untouched on a device: 10% of it, at least 1 GiB (0.5 GiB on small devices)."""
    floor = GiB if total >= 8 * GiB else GiB // 2
    return max(floor, int(total * 0.10))


def _ms(seconds: float) -> str:
    return f"{seconds * 1e6:.0f} us" if seconds < 1e-3 else f"{seconds * 1000:.1f} ms"


def _gb(n: float) -> str:
    return f"{n / 1e9:.1f} GB"


@dataclass
class Placement:
    component: str
    device: str | None  # "cpu", "cuda", "cuda:1" (torch device string; ROCm torch uses "cuda" too); None: unplaced
    dtype: str | None  # torch dtype name or CT2 compute type
    reason: str  # one sentence
    backend: str = "torch"
    device_kind: str | None = None  # "cpu", "cuda" (NVIDIA), "rocm" (AMD)
    gpu: int | None = None
    bytes: int = 0
    quirks: list[str] = field(default_factory=list)  # ids cited in the reason
    pinned: bool = False
    probe: str | None = None  # the probe verdict this choice relied on

    @property
    def placed(self) -> bool:
        return self.device is not None


@dataclass
class Plan:
    engine: str
    placements: list[Placement]
    env: list[EnvVar] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    attention: str | None = None  # "sdpa" when a quirk asks for it

    def placement(self, component: str) -> Placement:
        for p in self.placements:
            if p.component == component:
                return p
        raise KeyError(component)

    def __getitem__(self, component: str) -> Placement:
        return self.placement(component)

    @property
    def ok(self) -> bool:
        return all(p.placed for p in self.placements)

    @property
    def main(self) -> Placement:
        """The largest component's placement (what a one-device engine uses)."""
        return max(self.placements, key=lambda p: p.bytes) if self.placements else Placement("", None, None, "")

    @property
    def device(self) -> str | None:
        return self.main.device

    @property
    def dtype(self) -> str | None:
        return self.main.dtype

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ok"] = self.ok
        return d


@dataclass
class MachinePlan:
    asr: tuple[str, str]  # (engine, reason)
    plans: dict[str, Plan]
    env: list[EnvVar]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"asr_engine": {"engine": self.asr[0], "reason": self.asr[1]},
                "plans": {k: v.to_dict() for k, v in self.plans.items()},
                "env": [asdict(e) for e in self.env], "warnings": list(self.warnings)}


# ------------------------------------------------------------------------------------------------
# options
# ------------------------------------------------------------------------------------------------

@dataclass
class _Option:
    gpu: GPUInfo | None
    dtype: str
    excluded: str | None = None  # why not (a clause)
    quirks: list[str] = field(default_factory=list)
    probe: ProbeResult | None = None
    hard: bool = False  # excluded by a hard quirk / hardware (a pin still gets a warning)

    @property
    def device(self) -> str:
        return "cpu" if self.gpu is None else self.gpu.torch_device

    @property
    def where(self) -> str:
        return "the CPU" if self.gpu is None else self.gpu.label


def _bf16_ok(g: GPUInfo) -> bool:
    if g.vendor == "nvidia":
        try:
            return float(g.compute_capability or 0) >= 8.0
        except ValueError:
            return False
    if g.vendor == "amd":
        a = g.arch or ""
        return a.startswith(("gfx90a", "gfx94", "gfx95", "gfx11", "gfx12"))
    return False


def _backend_on_gpu(machine: MachineInfo, g: GPUInfo, spec: ComponentSpec) -> str | None:
    """Why ``spec.backend`` cannot use GPU ``g`` (None: it can, as far as detection knows)."""
    b = machine.backend(spec.backend)
    kinds = set(spec.devices)
    if spec.backend == "torch" and "cuda" in kinds:
        kinds.add("rocm")  # a torch component written for "cuda" runs on ROCm torch as well
    if g.kind not in kinds:
        return f"{spec.name} does not run on {g.kind}"
    if not b.installed:
        return f"{spec.backend} is not installed"
    if spec.backend == "torch":
        want = "rocm" if g.vendor == "amd" else "cuda"
        if b.build != want:
            return f"torch is a {b.build} build (needs a {want} build for {g.label})"
        if not g.torch_visible:
            return f"torch does not see {g.label}"
        arch_list = b.get("arch_list") or []
        if g.vendor == "nvidia" and arch_list and g.arch and g.arch not in arch_list:
            ptx = [a for a in arch_list if a.startswith("compute_")]
            if not ptx:
                return f"this torch build has no {g.arch} kernels (arch list: {' '.join(arch_list)})"
        return None
    if spec.backend == "ctranslate2":
        if g.vendor != "nvidia":
            return "CTranslate2 has no ROCm build"
        if int(b.get("cuda_device_count") or 0) <= g.index:
            return "CTranslate2 sees no CUDA device"
        return None
    if spec.backend == "onnxruntime":
        provs = set(b.get("providers") or [])
        if not provs & set(ORT_GPU_PROVIDERS.get(g.kind, ())):
            return f"ONNX Runtime has no {g.kind.upper()} execution provider"
        return None
    return None


def _gpu_dtypes(machine: MachineInfo, g: GPUInfo, spec: ComponentSpec) -> list[str]:
    if spec.backend == "ctranslate2":
        ct = machine.backend("ctranslate2").get("cuda_compute_types") or []
        have = set(ct[g.index]) if g.index < len(ct) else set()
        order = [d for d in CT2_GPU_ORDER if d in spec.dtypes]
        return [d for d in order if not have or d in have]
    return [d for d in spec.dtypes if not d.startswith("int8")]


def _cpu_dtypes(machine: MachineInfo, spec: ComponentSpec) -> list[str]:
    if spec.backend == "ctranslate2":
        have = set(machine.backend("ctranslate2").get("cpu_compute_types") or [])
        order = [d for d in CT2_CPU_ORDER if d in spec.dtypes]
        return [d for d in order if not have or d in have] or list(spec.dtypes[-1:])
    if "float32" in spec.dtypes:
        return ["float32"] + [d for d in spec.dtypes if d in ("bfloat16",) and machine.cpu.has("amx_bf16")]
    return list(spec.dtypes[:1])


def _probe_component(spec: ComponentSpec) -> str:
    if spec.backend == "ctranslate2":
        return "whisper"
    if spec.backend == "onnxruntime":
        return "session"
    return "conv" if spec.kind in CONV_KINDS else "matmul"


def _same_device(probe_device: str, option_device: str) -> bool:
    def norm(d: str) -> tuple[str, int]:
        kind, _, idx = d.partition(":")
        kind = "gpu" if kind in ("cuda", "rocm", "hip", "gpu") else kind
        return kind, int(idx or 0)

    return norm(probe_device) == norm(option_device)


def _evidence(engine: str, spec: ComponentSpec, opt: _Option, probes: list[ProbeResult]) -> tuple[ProbeResult | None, ProbeResult | None]:
    """(probe for this exact option, failing probe for this device at another dtype)."""
    generic = _probe_component(spec)
    exact = [p for p in probes if _same_device(p.device, opt.device)
             and ((p.engine == engine and p.component == spec.name) or (p.engine == spec.backend and p.component == generic))]
    if spec.backend == "onnxruntime":
        same = exact
    else:
        same = [p for p in exact if p.dtype == opt.dtype]
    hit = None
    if same:
        # an exact (engine, component) probe beats a generic backend one
        same.sort(key=lambda p: (p.engine != engine, p.status not in BAD_STATUSES))
        hit = same[0]
    device_bad = None
    # a CT2/ORT failure at one dtype (a missing library, no provider) condemns the device; torch
    # failures are dtype-specific (a bf16 hang says nothing about fp16)
    if spec.backend != "torch" and exact and all(p.status in BAD_STATUSES for p in exact):
        device_bad = exact[0]
    return hit, device_bad


def _options(engine: str, spec: ComponentSpec, machine: MachineInfo, probes: list[ProbeResult],
             quirks: tuple[Quirk, ...]) -> list[_Option]:
    opts: list[_Option] = []
    kinds = set(spec.devices)
    if spec.backend == "torch" and "cuda" in kinds:
        kinds.add("rocm")  # a torch component written for "cuda" runs on ROCm torch as well
    for g in machine.gpus:
        gpu_why = _backend_on_gpu(machine, g, spec)
        dtypes = _gpu_dtypes(machine, g, spec) or list(spec.dtypes[:1])
        for dt in dtypes:
            o = _Option(g, dt)
            qs = match_quirks(machine, g, backend=spec.backend, component_kind=spec.kind, dtype=dt, quirks=quirks)
            qs = [q for q in qs if q.backend_unusable or spec.kind in q.cpu_for_kinds or dt in q.avoid_dtypes]
            qs.sort(key=lambda q: dt in q.avoid_dtypes and not (q.backend_unusable or spec.kind in q.cpu_for_kinds))
            if g.kind not in kinds and not qs:
                break  # the component does not run on this kind of GPU: not an option at all
            o.probe, dev_bad = _evidence(engine, spec, o, probes)
            probe_ok = o.probe is not None and o.probe.usable
            for q in qs:
                if q.severity == "soft" and probe_ok:
                    o.quirks.append(q.id)  # cited: a passing probe lifted it
                    continue
                if o.excluded is None:
                    what = (f"{dt} avoided" if dt in q.avoid_dtypes else
                            f"{spec.kind} kept off GPU {g.index}" if spec.kind in q.cpu_for_kinds else
                            f"{spec.backend} cannot use GPU {g.index}")
                    o.excluded = f"{what} ({q.cite()})"
                    o.hard = q.severity == "hard"
                o.quirks.append(q.id)
            if o.excluded is None and gpu_why is not None:
                o.excluded, o.hard = gpu_why, True
            if o.excluded is None and spec.backend == "torch" and dt == "bfloat16" and not _bf16_ok(g):
                o.excluded, o.hard = f"{g.label} has no fast bfloat16", True
            if o.excluded is None and o.probe is not None and o.probe.status in BAD_STATUSES:
                o.excluded = f"the {o.probe.target.split(':')[-1]} probe on {o.device} {dt} gave {o.probe.summary()}"
            elif o.excluded is None and o.probe is None and dev_bad is not None:
                o.excluded = f"{spec.backend} probes on {o.device} failed ({dev_bad.summary()})"
            opts.append(o)
    for dt in _cpu_dtypes(machine, spec):
        o = _Option(None, dt)
        if "cpu" not in spec.devices:
            o.excluded, o.hard = f"{spec.name} does not run on the CPU", True
        o.probe, _ = _evidence(engine, spec, o, probes)
        if o.excluded is None and o.probe is not None and o.probe.status in BAD_STATUSES:
            o.excluded = f"the CPU probe gave {o.probe.summary()}"
        opts.append(o)
    return opts


class _Budget:
    """Free memory per device minus headroom; unified GPUs draw on host RAM too."""

    def __init__(self, machine: MachineInfo) -> None:
        self.machine = machine
        self.free: dict[str, int] = {"cpu": machine.ram_available - headroom(machine.ram_total)}
        for g in machine.gpus:
            free = g.free_memory if g.free_memory is not None else int(g.total_memory * 0.9)
            self.free[g.torch_device] = free - headroom(g.total_memory)

    def fits(self, device: str, n: int) -> bool:
        return n <= self.free.get(device, 0)

    def take(self, device: str, n: int) -> None:
        self.free[device] = self.free.get(device, 0) - n
        g = next((g for g in self.machine.gpus if g.torch_device == device), None)
        if g is not None and g.unified_memory:
            self.free["cpu"] -= n


def _norm_pin(pins: Mapping[str, Any] | None, component: str) -> tuple[str | None, str | None]:
    if not pins:
        return None, None
    dev, dt = pins.get("device"), pins.get("dtype")
    comp = (pins.get("components") or {}).get(component) or {}
    if isinstance(comp, str):
        comp = {"device": comp}
    dev = comp.get("device", dev)
    dt = comp.get("dtype", dt)
    if dev in (None, "auto"):
        dev = None
    if dt in (None, "auto"):
        dt = None
    return dev, dt


def _pin_matches(opt: _Option, dev: str | None, dt: str | None) -> bool:
    if dt is not None and opt.dtype != dt:
        return False
    if dev is None:
        return True
    kind, _, idx = dev.partition(":")
    if kind == "cpu":
        return opt.gpu is None
    if opt.gpu is None:
        return False
    if kind in ("cuda", "rocm", "gpu", "hip"):
        return (not idx or int(idx) == opt.gpu.index) and (kind in ("cuda", "gpu", "hip") or opt.gpu.vendor == "amd")
    return False


def _choose(engine: str, spec: ComponentSpec, machine: MachineInfo, probes: list[ProbeResult],
            quirks: tuple[Quirk, ...], budget: _Budget, pins: Mapping[str, Any] | None, warnings: list[str]) -> Placement:
    opts = _options(engine, spec, machine, probes, quirks)
    pin_dev, pin_dt = _norm_pin(pins, spec.name)
    for o in opts:
        need = bytes_for(spec, o.dtype)
        if o.excluded is None and not budget.fits(o.device, need):
            o.excluded = f"{_gb(need)} does not fit in the {_gb(max(budget.free.get(o.device, 0), 0))} free on {o.where} after headroom"

    if pin_dev is not None or pin_dt is not None:
        return _pinned(engine, spec, machine, opts, pin_dev, pin_dt, budget, warnings)

    usable = [o for o in opts if o.excluded is None]
    if not usable:
        why = "; ".join(dict.fromkeys(o.excluded or "" for o in opts))
        warnings.append(f"{engine}: {spec.name} was not planned: no device can hold it ({why}).")
        return Placement(spec.name, None, None, f"Not planned: {why}.", backend=spec.backend,
                         quirks=sorted({q for o in opts for q in o.quirks}))

    # heuristic order: GPUs (in order, dtype preference) then the CPU; slow probes last
    usable.sort(key=lambda o: (o.probe is not None and o.probe.status == "slow",))
    best = usable[0]
    because = None
    timed = [o for o in usable if o.probe is not None and o.probe.ok and o.probe.seconds is not None]
    if best.probe is not None and best.probe.ok and len(timed) > 1:
        same_target = [o for o in timed if o.probe.target == best.probe.target]  # type: ignore[union-attr]
        fastest = min(same_target, key=lambda o: o.probe.seconds)  # type: ignore[union-attr, return-value]
        # switch only for a clear win (10%): probe timings of fast kernels are noisy
        if fastest is not best and fastest.probe.seconds < 0.9 * best.probe.seconds:  # type: ignore[union-attr, operator]
            because = (f"the fastest probed option ({_ms(fastest.probe.seconds)} vs "  # type: ignore[union-attr, arg-type]
                       f"{_ms(best.probe.seconds)} for {best.dtype} on {best.where})")  # type: ignore[union-attr, arg-type]
            best = fastest
    if because is None:
        if best.gpu is not None:
            because = "the GPU is usable and it fits"
            if best.probe is not None and best.probe.usable:
                because += f" (probe {best.probe.summary()})"
        else:
            gpus_skipped = [o for o in opts if o.gpu is not None]
            because = "no GPU option is usable" if gpus_skipped else "this machine has no GPU"
            if spec.devices == ("cpu",):
                because = f"{spec.name} runs on the CPU only"
    need = bytes_for(spec, best.dtype)
    free_before = budget.free.get(best.device, 0)
    budget.take(best.device, need)
    skipped = [o.excluded for o in opts if o.excluded and o is not best and (o.gpu is not None or best.gpu is None)]
    skipped = list(dict.fromkeys(skipped))[:3]
    cites = sorted({q for o in opts for q in o.quirks if o is best or o.excluded})
    reason = (f"{spec.name} on {best.where} in {best.dtype}: {because}"
              + (f"; {'; '.join(skipped)}" if skipped else "")
              + f"; needs {_gb(need)} of {_gb(max(free_before, 0))} free.")
    if best.probe is not None and best.probe.status == "slow":
        warnings.append(f"{engine}: {spec.name} on {best.device} {best.dtype} probed slow: {best.probe.message}")
    return Placement(spec.name, best.device, best.dtype, reason, backend=spec.backend,
                     device_kind="cpu" if best.gpu is None else best.gpu.kind,
                     gpu=None if best.gpu is None else best.gpu.index, bytes=need, quirks=cites,
                     probe=None if best.probe is None else best.probe.summary())


def _pinned(engine: str, spec: ComponentSpec, machine: MachineInfo, opts: list[_Option], dev: str | None,
            dt: str | None, budget: _Budget, warnings: list[str]) -> Placement:
    cands = [o for o in opts if _pin_matches(o, dev, dt)]
    cands.sort(key=lambda o: o.excluded is not None)
    if cands:
        o = cands[0]
        device, dtype = o.device, o.dtype
    else:
        o = None
        device = dev or "cpu"
        dtype = dt or (spec.dtypes[0] if spec.dtypes else "float32")
        if dev is not None and dev.split(":")[0] != "cpu" and not machine.gpus:
            warnings.append(f"{engine}: {spec.name} pinned to {dev}, but this machine has no GPU.")
    need = bytes_for(spec, dtype)
    what = "/".join(x for x in (dev, dt) if x)
    reason = f"{spec.name} on {device} in {dtype}: pinned ({what})"
    cites: list[str] = []
    if o is not None and o.excluded:
        reason += f", although {o.excluded}"
        cites = list(o.quirks)
        warnings.append(f"{engine}: the pin {what} for {spec.name} contradicts the plan: {o.excluded}.")
    if o is not None and o.probe is not None and o.probe.status in BAD_STATUSES and "probe" not in (o.excluded or ""):
        warnings.append(f"{engine}: the pin {what} for {spec.name} contradicts a probe: {o.probe.summary()}.")
    budget.take(device, need)
    g = o.gpu if o is not None else None
    return Placement(spec.name, device, dtype, reason + ".", backend=spec.backend,
                     device_kind="cpu" if device == "cpu" else (g.kind if g else device.split(":")[0]),
                     gpu=g.index if g else None, bytes=need, quirks=cites, pinned=True,
                     probe=None if o is None or o.probe is None else o.probe.summary())


# ------------------------------------------------------------------------------------------------
# public API
# ------------------------------------------------------------------------------------------------

def pins_from(device: str | None = None, dtype: str | None = None,
              components: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Pins from CLI flags (``--device``, ``--dtype``) and per-component settings
    (``{"autoencoder": "cpu"}`` or ``{"dit": {"device": "cuda", "dtype": "float16"}}``); "auto" means unpinned."""
    pins: dict[str, Any] = {}
    if device not in (None, "", "auto"):
        pins["device"] = device
    if dtype not in (None, "", "auto"):
        pins["dtype"] = dtype
    if components:
        pins["components"] = {k: ({"device": v} if isinstance(v, str) else dict(v)) for k, v in components.items()}
    return pins


def _probe_list(probes: Iterable[ProbeResult] | Mapping[Any, ProbeResult] | None) -> list[ProbeResult]:
    if probes is None:
        return []
    if isinstance(probes, Mapping):
        return list(probes.values())
    return list(probes)


def plan_engine(engine_name: str, components: list[ComponentSpec] | None = None, machine: MachineInfo | None = None,
                probes: Iterable[ProbeResult] | Mapping[Any, ProbeResult] | None = None,
                pins: Mapping[str, Any] | None = None, *, quirks: tuple[Quirk, ...] | None = None,
                budget: _Budget | None = None) -> Plan:
    """Place ``components`` (default: the engine's reference components) on ``machine`` (default: this one).

    ``pins``: ``{"device": "cuda", "dtype": "float16", "components": {"autoencoder": {"device": "cpu"}}}``.
    ``probes``: probe results to rely on (see :func:`voxbox.hardware.probe.run_probe`); none by default,
    so a plan from a recorded machine is deterministic.
    """
    if machine is None:
        from voxbox.hardware.detect import detect

        machine = detect()
    if components is None:
        components = REFERENCE_COMPONENTS.get(engine_name, [])
    quirks = quirks if quirks is not None else load_quirks()
    probe_list = _probe_list(probes)
    budget = budget or _Budget(machine)
    warnings: list[str] = []
    # big components first, so a small one never takes the room a big one needs
    order = sorted(range(len(components)), key=lambda i: -components[i].params)
    placed: dict[int, Placement] = {}
    for i in order:
        placed[i] = _choose(engine_name, components[i], machine, probe_list, quirks, budget, pins, warnings)
    placements = [placed[i] for i in range(len(components))]
    notes: list[str] = []
    attention = None
    backends = {c.backend for c in components}
    for p in placements:
        g = machine.gpu(p.gpu) if p.gpu is not None else None
        if g is None:
            continue
        for q in match_quirks(machine, g, partial=True, quirks=quirks):
            if q.effect.get("attention") and "torch" in backends:
                attention = q.effect["attention"]
                note = f"Use {attention} attention on {g.label} ({q.cite()}: {q.title})."
                if note not in notes:
                    notes.append(note)
    for b in sorted(backends):
        if not machine.backend(b).installed:
            warnings.append(f"{engine_name}: its backend {b} is not installed here.")
    used_gpus = {p.gpu for p in placements if p.gpu is not None}
    env = [e for e in env_recipe(machine) if e.gpu is None or e.gpu in used_gpus]
    return Plan(engine_name, placements, env=env, warnings=warnings, notes=notes, attention=attention)


def plan_asr(machine: MachineInfo | None = None, probes: Iterable[ProbeResult] | None = None,
             pins: Mapping[str, Any] | None = None) -> tuple[Plan, str]:
    """Choose the ASR engine for this machine: faster-whisper (CT2) or torch-whisper; (plan, reason)."""
    if machine is None:
        from voxbox.hardware.detect import detect

        machine = detect()
    probe_list = _probe_list(probes)
    fw = plan_engine("faster-whisper", machine=machine, probes=probe_list, pins=pins)
    fw_gpu = fw.ok and fw.main.device_kind not in (None, "cpu")
    torch_ok = machine.backend("torch").installed
    tw = plan_engine("torch-whisper", machine=machine, probes=probe_list, pins=pins) if torch_ok else None
    tw_gpu = tw is not None and tw.ok and tw.main.device_kind not in (None, "cpu")
    ct2 = machine.backend("ctranslate2")
    if fw_gpu and ct2.installed:
        return fw, f"faster-whisper (CTranslate2) runs on {fw.main.device} in {fw.main.dtype}."
    if tw_gpu and tw is not None:
        cites = sorted({q for q in fw.main.quirks})
        if not ct2.installed:
            why = "CTranslate2 is not installed"
        elif cites:
            why = "CTranslate2 cannot use the GPU (" + ", ".join(f"quirk {c}" for c in cites) + ")"
        else:
            why = "CTranslate2 sees no usable GPU"
        return tw, (f"torch-whisper on {tw.main.device} in {tw.main.dtype} rather than faster-whisper: {why}.")
    why = "no GPU" if not machine.gpus else "no GPU engine is usable"
    return fw, f"faster-whisper on the CPU in {fw.main.dtype} ({why}; int8 CTranslate2 is the fastest CPU option)."


def plan_machine(machine: MachineInfo | None = None, probes: Iterable[ProbeResult] | None = None,
                 engines: Iterable[str] | None = None, pins: Mapping[str, Any] | None = None) -> MachinePlan:
    """What ``doctor`` shows: the ASR choice, a plan per known engine, the env recipe and warnings."""
    if machine is None:
        from voxbox.hardware.detect import detect

        machine = detect()
    probe_list = _probe_list(probes)
    asr_plan, asr_reason = plan_asr(machine, probe_list, pins)
    plans: dict[str, Plan] = {}
    for name in engines or REFERENCE_COMPONENTS:
        plans[name] = asr_plan if name == asr_plan.engine else plan_engine(name, machine=machine, probes=probe_list, pins=pins)
    warnings = _machine_warnings(machine, probe_list, asr_plan)
    for p in plans.values():
        for w in p.warnings:
            if w not in warnings:
                warnings.append(w)
    return MachinePlan(asr=(asr_plan.engine, asr_reason), plans=plans, env=env_recipe(machine), warnings=warnings)


def _machine_warnings(machine: MachineInfo, probes: list[ProbeResult], asr_plan: Plan) -> list[str]:
    w: list[str] = []
    torch = machine.backend("torch")
    ct2 = machine.backend("ctranslate2")
    ort = machine.backend("onnxruntime")
    if not machine.gpus:
        w.append("No GPU found: everything runs on the CPU.")
    for g in machine.gpus:
        if not g.torch_visible:
            w.append(f"{g.label} is present but torch does not see it"
                     + (f" (torch is a {torch.build} build)" if torch.installed else " (torch is not installed)") + ".")
    nvidia = any(g.vendor == "nvidia" for g in machine.gpus)
    if ct2.installed and machine.gpus and not int(ct2.get("cuda_device_count") or 0):
        w.append("CT2 sees no GPU: faster-whisper ASR will run on the CPU.")
    bad_ct2 = [p for p in probes if p.engine == "ctranslate2" and p.device != "cpu" and p.status in BAD_STATUSES]
    if bad_ct2 and not [p for p in probes if p.engine == "ctranslate2" and p.device != "cpu" and p.usable]:
        w.append(f"CT2 reports CUDA devices but its GPU probe failed ({bad_ct2[0].summary()}): "
                 "faster-whisper ASR will run on the CPU.")
    if nvidia and ct2.installed and int(ct2.get("cuda_device_count") or 0) and not probes:
        w.append("CT2 CUDA is not verified yet: run `voxbox doctor --probe` (a device count is not proof).")
    if machine.gpus and ort.installed and ort.build != "gpu":
        w.append("ONNX Runtime has no GPU provider: piper/hibari run on the CPU (they are faster than real time there).")
    if torch.installed and torch.error:
        w.append(f"torch is installed but failed while probing devices: {torch.error}")
    if ct2.installed and ct2.error:
        w.append(f"CTranslate2 is installed but failed while listing devices: {ct2.error}")
    for p in probes:
        if p.status == "silent_fallback":
            w.append(f"Silent CPU fallback: {p.engine} {p.component} asked for {p.device}: {p.message}.")
        elif p.status == "hang":
            w.append(f"Hang: {p.engine} {p.component} on {p.device} {p.dtype or ''} did not finish ({p.message}).")
    return w


# ------------------------------------------------------------------------------------------------
# the cheap helpers engines call
# ------------------------------------------------------------------------------------------------

def _cached_probes(machine: MachineInfo) -> list[ProbeResult]:
    try:
        from voxbox.hardware.probe import ProbeCache

        return ProbeCache().results(machine.fingerprint_key())
    except Exception:
        return []


def _ct2_cuda_verdict(machine: MachineInfo, probe: bool) -> ProbeResult | None:
    from voxbox.hardware.probe import ProbeSpec, run_probe

    spec = ProbeSpec("voxbox.hardware.targets:ct2_whisper", device="cuda", dtype="float16",
                     engine="ctranslate2", component="whisper", timeout_s=120)
    from voxbox.hardware.probe import ProbeCache

    try:
        hit = ProbeCache().get(machine.fingerprint_key(), spec)
    except Exception:
        hit = None
    if hit is not None or not probe:
        return hit
    return run_probe(spec, machine=machine)


def default_device_for(backend: str, machine: MachineInfo | None = None, *, probe: bool = True) -> tuple[str, str]:
    """(device, dtype) for a bundled engine or backend when the user gave none.

    faster-whisper / ctranslate2: ``("cuda", "float16")`` only when a real CT2 inference on CUDA
    passed (a cached probe verdict, or one run now when ``probe`` and CT2 reports a CUDA device),
    else ``("cpu", "int8")``. piper / hibari / onnxruntime: ``("cpu", "float32")``. torch engines:
    the planner's choice for a generic transformer component.
    """
    be = ENGINE_BACKENDS.get(backend, backend)
    if backend in ("piper", "hibari"):
        return "cpu", "float32"  # tiny voices, far faster than real time on one core
    if machine is None and be == "ctranslate2":
        try:  # fast path: no CUDA device for CT2 means no detection (and no torch import) needed
            import ctranslate2

            if ctranslate2.get_cuda_device_count() == 0:
                return "cpu", "int8"
        except Exception:
            return "cpu", "int8"
    if machine is None:
        from voxbox.hardware.detect import detect

        machine = detect()
    if be == "ctranslate2":
        ct2 = machine.backend("ctranslate2")
        if ct2.installed and int(ct2.get("cuda_device_count") or 0) > 0:
            verdict = _ct2_cuda_verdict(machine, probe)
            if verdict is not None and verdict.usable:
                return "cuda", "float16"
        return "cpu", "int8"
    default = "onnx-whisper" if be == "onnxruntime" else "torch-whisper"
    comps = REFERENCE_COMPONENTS.get(backend) or REFERENCE_COMPONENTS[default]
    plan = plan_engine(backend, comps, machine=machine, probes=_cached_probes(machine))
    return plan.main.device or "cpu", plan.main.dtype or "float32"


def _default_dtype(backend: str, device: str) -> str:
    be = ENGINE_BACKENDS.get(backend, backend)
    gpu = device.split(":")[0] != "cpu"
    if be == "ctranslate2":
        return "float16" if gpu else "int8"
    if be == "onnxruntime":
        return "float32"
    return "float16" if gpu else "float32"


def resolve_device(requested: str | None, backend: str, component: ComponentSpec | None = None,
                   machine: MachineInfo | None = None) -> tuple[str, str, str]:
    """(device, dtype, reason) for an engine load; ``requested`` None or "auto" asks the planner."""
    if requested not in (None, "", "auto"):
        dev = str(requested)
        return dev, _default_dtype(backend, dev), f"device {dev} was requested explicitly."
    if component is not None:
        if machine is None:
            from voxbox.hardware.detect import detect

            machine = detect()
        plan = plan_engine(backend, [component], machine=machine, probes=_cached_probes(machine))
        p = plan.placements[0]
        if p.placed:
            return p.device or "cpu", p.dtype or _default_dtype(backend, "cpu"), p.reason
        return "cpu", _default_dtype(backend, "cpu"), p.reason
    dev, dt = default_device_for(backend, machine)
    be = ENGINE_BACKENDS.get(backend, backend)
    if be == "ctranslate2":
        why = ("a CTranslate2 CUDA probe passed on this machine." if dev != "cpu" else
               "CTranslate2 has no verified CUDA device here, and int8 is its fastest CPU mode.")
    elif be == "onnxruntime":
        why = "ONNX Runtime voices are faster than real time on the CPU."
    else:
        why = "the planner's choice for this machine."
    return dev, dt, f"{backend} on {dev} in {dt}: {why}"


def auto_placement(engine_name: str, components: list[ComponentSpec] | None = None,
                   machine: MachineInfo | None = None) -> Plan:
    """The plan a torch engine follows when asked for device "auto".

    Detection (cached per process), the on-disk probe verdicts from ``voxbox doctor --probe`` and the
    quirks table decide; no probe is run here, so loading stays fast. Components the plan could not
    place (too big for any device) fall back to the CPU in float32 with that reason kept.
    """
    if machine is None:
        from voxbox.hardware.detect import detect

        machine = detect()
    plan = plan_engine(engine_name, components, machine=machine, probes=_cached_probes(machine))
    for p in plan.placements:
        if not p.placed:
            p.device, p.dtype = "cpu", "float32"
            p.reason = f"{p.reason} Falling back to the CPU in float32."
    return plan
