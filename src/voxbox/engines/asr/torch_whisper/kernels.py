"""Batch-1 Whisper decode step in eight Triton kernels per layer, nearer the bandwidth floor.

At batch 1 a decoder step reads every weight once (1.4 GB at large-v3) and does almost no math, so
its speed is memory bandwidth and kernel count. :class:`KernelStep` runs one step as:

* ``embed``: token + position embedding of the token at ``pos`` (both read on the device);
* per layer, eight kernels, each a GEMV over many programs or a split-KV attention:
  1. LayerNorm + fused Q/K/V GEMV + bias; K and V go straight into the static cache at ``pos``;
  2. self-attention over the cache, split ("flash decoding"); the last split of each head to
     finish combines the head's partials and writes its output;
  3. out-projection GEMV + bias + residual;
  4. LayerNorm + cross-attention query GEMV;
  5. cross-attention over the 1,500 encoder positions, split and combined the same way;
  6. out-projection + bias + residual;
  7. LayerNorm + fc1 GEMV + bias + GELU;
  8. fc2 GEMV + bias + residual;
* final LayerNorm + the tied output projection (fp32 logits, rounded to the model dtype first as
  ``Whisper.logits`` does).

Every LayerNorm is recomputed by each GEMV program from the (L2-resident) residual vector instead
of being a kernel of its own. Rounding to the model dtype happens where the eager ops round
(layer-norm output, each linear's output, the attention output, the residual add), accumulations
are fp32. Positions and tokens are read from device tensors, so the step is captured once per
attended-length bucket in a CUDA graph (see ``decoding.Runner``).

On Hopper and later the kernels after the embedding are launched with programmatic dependent
launch (``pdl``): each one starts while the previous drains and loads its first weight tile
before it waits, which hides most of the gap between two dependent kernels.

The kernels are portable Triton (no TMA, no warp specialisation); on CPU tensors they run under
``TRITON_INTERPRET=1``, which is how the unit tests check them against ``Decoder.forward``.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field

import torch

from voxbox.engines.asr.torch_whisper.model import DecoderLayer, KVCache, Whisper
from voxbox.engines.batched import next_pow2, pow2_floor
from voxbox.engines.graphs import capture_graph

__all__ = ["GemvConfig", "KernelStep", "kernels_available", "kernels_module", "kernels_preferred",
           "load_kernel_step"]

log = logging.getLogger(__name__)

#: Splits of the cross-attention keys (1,500 positions) and of the self-attention cache per head.
CROSS_SPLITS = 8
SELF_SPLITS = 4
#: Relative logit difference above which the Triton step is refused at load (fp16 rounding through
#: 32 layers stays near 1e-3).
KERNEL_CHECK_TOL = 3e-2
ACTS = {"gelu": 1, "gelu_new": 2, "gelu_pytorch_tanh": 2, "relu": 3}

_MODULES: dict[bool, object] = {}


def _interpret() -> bool:
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def kernels_module():
    """The ``_triton_kernels`` module (built once per interpreter setting); raises ImportError without Triton."""
    key = _interpret()
    mod = _MODULES.get(key)
    if mod is None:
        from voxbox.engines.asr.torch_whisper import _triton_kernels as mod  # noqa: PLC0415

        if key and not getattr(mod, "INTERPRETED", False):  # built earlier without the interpreter
            import importlib

            mod = importlib.reload(mod)
        _MODULES[key] = mod
    return mod


def kernels_preferred(device: torch.device) -> bool:
    """Whether the Triton step is the default batch-1 step on ``device``: NVIDIA GPUs of compute
    capability 9.0 and later, where it was measured faster than the compiled step (H200, decode
    only: large-v3 1.32 against 2.21 ms/token, base 0.22 against 0.38; BENCHMARKS.md). Elsewhere (Ampere, ROCm)
    it is not measured and stays opt-in (``kernels=True``)."""
    return (device.type == "cuda" and torch.version.hip is None
            and torch.cuda.get_device_capability(device)[0] >= 9)


def kernels_available(device: torch.device) -> bool:
    """Triton importable and the device one it can run on (CUDA/ROCm, or any under TRITON_INTERPRET).
    Turned off per model with the load option ``kernels=False``."""
    if device.type != "cuda" and not _interpret():
        return False
    try:
        kernels_module()
    except Exception:  # noqa: BLE001 - no triton, or a triton without a backend for this machine
        return False
    return True


@dataclass(frozen=True)
class GemvConfig:
    """Tile of one GEMV: BLOCK_N output rows per program, BLOCK_K inputs per loop step."""

    block_n: int
    block_k: int
    num_warps: int = 4


def default_config(n: int, k: int, ln: bool = False) -> GemvConfig:
    """Heuristic tile, from a sweep of every role at the large-v3 shape on an H200
    (``bench/tw_step_profile.py --sweep``, BENCHMARKS.md). With a LayerNorm prologue every program
    recomputes the statistics, so many rows share them (16 where N leaves ~240+ programs); without
    one, a row per program (1,280 programs for a 1,280-row GEMV). The vocabulary-sized output
    projection has programs enough and likes short loop steps."""
    if ln:
        block_k = 256 if n <= 2048 or n * k >= (1 << 25) else min(512, next_pow2(k))
        return GemvConfig(max(1, min(16, pow2_floor(n // 240))), block_k, 4)
    return GemvConfig(1, min(1024, next_pow2(k)) if k > 2048 else min(256, next_pow2(k)), 4)


@dataclass
class _Buffers:
    x: list[torch.Tensor]  # three residual vectors (out-of-place updates keep every kernel idempotent)
    q: torch.Tensor
    cq: torch.Tensor
    attn: torch.Tensor  # self-attention output (combined by the attention kernel)
    cattn: torch.Tensor  # cross-attention output
    hid: torch.Tensor
    self_m: torch.Tensor
    self_l: torch.Tensor
    self_acc: torch.Tensor
    self_cnt: torch.Tensor  # per-head arrival counters (int32, zero between steps)
    cross_m: torch.Tensor
    cross_l: torch.Tensor
    cross_acc: torch.Tensor
    cross_cnt: torch.Tensor
    logits: torch.Tensor


@dataclass
class KernelStep:
    """One greedy/sampling decode step at batch 1 through the Triton kernels.

    ``configs`` maps a GEMV role (``qkv``, ``o``, ``cq``, ``co``, ``fc1``, ``fc2``, ``logits``) to
    its tile; missing roles use :func:`default_config`. ``pdl``: launch with programmatic dependent
    launch (None: where Triton and the GPU support it, compute capability 9.0 and later). Call with
    the token history (1, max_len), the position tensor (1,), the cache and the attended length;
    returns the (1, V) fp32 logits buffer (overwritten by the next call).
    """

    model: Whisper
    configs: dict[str, GemvConfig] = field(default_factory=dict)
    cross_splits: int = CROSS_SPLITS
    self_splits: int = SELF_SPLITS
    pdl: bool | None = None

    def __post_init__(self) -> None:
        m = self.model
        dec = m.decoder
        if any(L.fused_qkv is None or L.fused_cross_q is None for L in dec.blocks):
            raise ValueError("KernelStep needs Whisper.fuse_for_decoding() first")
        if m.dims.activation not in ACTS:
            raise ValueError(f"no kernel for activation {m.dims.activation!r}")
        for n in (self.cross_splits, self.self_splits):
            if n < 1 or n & (n - 1):
                raise ValueError(f"split counts must be powers of two, got {n}")
        self.k = kernels_module()
        p = m.decoder.embed_tokens.weight
        if self.pdl is None:
            self.pdl = bool(getattr(self.k, "HAS_PDL", False)) and kernels_preferred(p.device)  # sm90+ NVIDIA
        d, heads = m.dims.d_model, m.dims.decoder_heads
        self.d, self.heads, self.dh = d, heads, d // heads
        if self.dh & (self.dh - 1):
            raise ValueError(f"head size {self.dh} is not a power of two")
        self.ffn = m.dims.decoder_ffn
        self.vocab = m.dims.vocab_size
        self.eps = float(dec.layer_norm.eps)
        self.act = ACTS[m.dims.activation]
        dev, dt = p.device, p.dtype
        z = lambda *s, dtype=dt: torch.zeros(s, device=dev, dtype=dtype)  # noqa: E731
        f32 = torch.float32
        self.buf = _Buffers(
            x=[z(d), z(d), z(d)], q=z(d), cq=z(d), attn=z(d), cattn=z(d), hid=z(self.ffn),
            self_m=z(self.self_splits, heads, dtype=f32), self_l=z(self.self_splits, heads, dtype=f32),
            self_acc=z(self.self_splits, d, dtype=f32), self_cnt=z(heads, dtype=torch.int32),
            cross_m=z(self.cross_splits, heads, dtype=f32), cross_l=z(self.cross_splits, heads, dtype=f32),
            cross_acc=z(self.cross_splits, d, dtype=f32), cross_cnt=z(heads, dtype=torch.int32),
            logits=z(1, self.vocab, dtype=f32),
        )
        self.dims = {"qkv": (3 * d, d), "o": (d, d), "cq": (d, d), "co": (d, d), "fc1": (self.ffn, d),
                     "fc2": (d, self.ffn), "logits": (self.vocab, d)}
        ln = {"qkv", "cq", "fc1", "logits"}
        self.cfg = {role: self.configs.get(role) or default_config(n, k, role in ln)
                    for role, (n, k) in self.dims.items()}
        for t in self._weights():
            if not t.is_contiguous():
                raise ValueError("decoder weights must be contiguous")

    def _weights(self) -> list[torch.Tensor]:
        out = []
        for L in self.model.decoder.blocks:
            qw, qb, cw, cb = _fused(L)
            out += [qw, qb, L.self_attn.out_proj.weight, cw, cb, L.encoder_attn.out_proj.weight,
                    L.fc1.weight, L.fc2.weight]
        return out

    def bytes_per_step(self, kv_len: int) -> int:
        """What one step must read: decoder weights used per token, cross K/V, the attended cache."""
        el = self.model.decoder.embed_tokens.weight.element_size()
        layers = self.model.dims.decoder_layers
        n = sum(t.numel() for t in self._weights()) + self.vocab * self.d + 2 * self.d * layers * 3
        kv = layers * 2 * (self.model.dims.max_source_positions + kv_len) * self.d
        return (n + kv) * el

    # ------------------------------------------------------------------ launches
    @property
    def _launch(self) -> dict[str, bool]:
        """Launch options of every kernel after the embedding."""
        return {"launch_pdl": True} if self.pdl else {}

    def _gemv(self, role: str, x, w, b, out, *, ln=None, res=None, act: int = 0, qkv=None) -> None:
        n, kdim = self.dims[role]
        cfg = self.cfg[role]
        dummy = w
        lw, lb = ln if ln is not None else (dummy, dummy)
        kv, pos, s_sec, s_head, s_t = qkv if qkv is not None else (dummy, dummy, 0, 0, 0)
        grid = (triton_cdiv(n, cfg.block_n),)
        self.k.gemv_kernel[grid](
            x, lw, lb, w, b if b is not None else dummy, res if res is not None else dummy, out,
            kv, pos, s_sec, s_head, s_t,
            n, self.eps, self.d, kdim,
            LN=ln is not None, HAS_BIAS=b is not None, HAS_RES=res is not None, ACT=act, QKV=qkv is not None,
            DH=self.dh, BLOCK_N=cfg.block_n, BLOCK_K=cfg.block_k, XBLOCK=next_pow2(kdim), PDL=self.pdl,
            num_warps=cfg.num_warps, **self._launch,
        )

    def _attend(self, q, k, v, parts, out, splits: int, length: int, pos=None) -> None:
        """Split attention of ``q`` over ``length`` positions of k/v (H, S, Dh); the combined output
        goes to ``out``. ``parts``: the (max, sum, output) partials and the per-head counters."""
        m, l_, acc, cnt = parts
        chunk = triton_cdiv(length, splits)
        block_s = max(16, next_pow2(chunk))  # one tile per split
        self.k.attn_kernel[(self.heads, splits)](
            q, k, v, m, l_, acc, cnt, out, pos if pos is not None else q,
            length, k.stride(0), k.stride(1), self.heads, chunk,
            CAUSAL=pos is not None, DH=self.dh, BLOCK_S=block_s, NSPLIT=splits, PDL=self.pdl,
            num_warps=4, **self._launch,
        )

    def __call__(self, tokens: torch.Tensor, pos: torch.Tensor, cache: KVCache, kv_len: int) -> torch.Tensor:
        """Logits (1, V) float32 for the token ``tokens[0, pos]``; writes its K/V into ``cache``."""
        if tokens.shape[0] != 1 or cache.batch != 1:
            raise ValueError("KernelStep runs batch 1")
        B = self.buf
        dec = self.model.decoder
        x, y, z = B.x
        self.k.embed_kernel[(1,)](tokens, pos, dec.embed_tokens.weight, dec.embed_positions.weight, x, self.d,
                                  BLOCK=next_pow2(self.d), num_warps=4)
        for i, L in enumerate(dec.blocks):
            kvc = cache.self_kv[i, :, 0]  # (2, H, max_len, Dh)
            qw, qb, cw, cb = _fused(L)
            self._gemv("qkv", x, qw, qb, B.q, ln=(L.self_attn_layer_norm.weight, L.self_attn_layer_norm.bias),
                       qkv=(kvc, pos, kvc.stride(0), kvc.stride(1), kvc.stride(2)))
            self._attend(B.q, kvc[0], kvc[1], (B.self_m, B.self_l, B.self_acc, B.self_cnt), B.attn,
                         self.self_splits, kv_len, pos)
            self._gemv("o", B.attn, L.self_attn.out_proj.weight, L.self_attn.out_proj.bias, y, res=x)
            self._gemv("cq", y, cw, cb, B.cq,
                       ln=(L.encoder_attn_layer_norm.weight, L.encoder_attn_layer_norm.bias))
            ck, cv = cache.cross_k[i, 0], cache.cross_v[i, 0]  # (H, S, Dh)
            self._attend(B.cq, ck, cv, (B.cross_m, B.cross_l, B.cross_acc, B.cross_cnt), B.cattn,
                         self.cross_splits, ck.shape[1])
            self._gemv("co", B.cattn, L.encoder_attn.out_proj.weight, L.encoder_attn.out_proj.bias, z, res=y)
            self._gemv("fc1", z, L.fc1.weight, L.fc1.bias, B.hid,
                       ln=(L.final_layer_norm.weight, L.final_layer_norm.bias), act=self.act)
            self._gemv("fc2", B.hid, L.fc2.weight, L.fc2.bias, x, res=z)
        self._gemv("logits", x, dec.embed_tokens.weight, None, B.logits,
                   ln=(dec.layer_norm.weight, dec.layer_norm.bias))
        return B.logits

    @torch.inference_mode()
    def check(self, position: int = 5, kv_len: int = 64, seed: int = 0) -> float:
        """Relative max difference between this step's logits and ``Decoder.forward`` + ``logits``
        for one token after a random prompt, on random cross-attention keys/values (scratch cache);
        on a GPU the larger of the eager launch's and a CUDA-graph replay's (a capture that fails
        raises). Compiles every kernel on first use."""
        m = self.model
        dev = m.decoder.embed_tokens.weight.device
        kv_len = min(kv_len, m.dims.max_target_positions)
        position = min(position, kv_len - 1)
        gen = torch.Generator(device=dev).manual_seed(seed)
        cache = m.new_cache(1)
        for t in (cache.cross_k, cache.cross_v):
            t.copy_(torch.randn(t.shape, generator=gen, device=dev, dtype=torch.float32))
        tokens = torch.randint(0, self.vocab, (1, m.dims.max_target_positions), generator=gen, device=dev)
        m.decoder(tokens[:, :position], 0, cache, position)
        pos = torch.tensor([position], device=dev)
        ref_cache = KVCache(cache.self_kv.clone(), cache.cross_k, cache.cross_v)
        ref = m.logits(m.decoder(tokens[:, position:position + 1], pos, ref_cache, kv_len)[:, -1])
        got = self(tokens, pos, cache, kv_len)
        err = float((got - ref).abs().max() / ref.abs().max().clamp(min=1e-6))
        if dev.type == "cuda":
            # decoding replays the step from CUDA graphs (with PDL edges on sm90+): capture and replay it
            # here too, so that a driver that cannot is found at load, not by the first request
            def step() -> None:
                self(tokens, pos, cache, kv_len)

            g = capture_graph(step, (), None, mode="thread_local")
            got.zero_()
            g.replay()
            torch.cuda.synchronize()
            err = max(err, float((got - ref).abs().max() / ref.abs().max().clamp(min=1e-6)))
            del g
        kv_err = float((cache.self_kv[:, :, :, :, position] - ref_cache.self_kv[:, :, :, :, position]).abs().max())
        return err if kv_err <= 1e-2 * max(1.0, float(ref_cache.self_kv.abs().max())) else float("inf")


def load_kernel_step(model: Whisper, configs: dict | None = None, splits: tuple[int, int] | None = None
                     ) -> tuple[KernelStep | None, float | None, str | None]:
    """Build the Triton step for ``model`` and, on a GPU, check it against the eager step:
    ``(step, relative error, None)``, or ``(None, error or None, why)`` when it is not usable."""
    dev = model.decoder.embed_tokens.weight.device
    err: float | None = None
    try:
        if not kernels_available(dev):
            raise RuntimeError("Triton is not available for this device")
        cross, self_ = splits or (CROSS_SPLITS, SELF_SPLITS)
        step = KernelStep(model, dict(configs or {}), cross_splits=cross, self_splits=self_)
        if dev.type == "cuda":
            err = step.check()
            if not err <= KERNEL_CHECK_TOL:
                raise RuntimeError(f"Triton step disagrees with the eager step (relative error {err:.3g})")
    except Exception as exc:  # noqa: BLE001 - any failure: the caller keeps its compiled/eager step
        return None, err, f"{type(exc).__name__}: {exc}"[:500]
    return step, err, None


def _fused(layer: DecoderLayer) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The fused self Q/K/V and cross Q weights and biases of a decoder layer."""
    if layer.fused_qkv is None or layer.fused_cross_q is None:
        raise ValueError("KernelStep needs Whisper.fuse_for_decoding() first")
    return (*layer.fused_qkv, *layer.fused_cross_q)


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)
