"""Triton kernels of :mod:`voxbox.engines.asr.torch_whisper.kernels` (imported only through it).

Plain, portable Triton: element-wise tiles and reductions (no ``tl.dot``: at batch 1 a GEMV is a
row-wise dot product), loads of contiguous rows, fp32 accumulation. Importing this module needs
``triton``; ``TRITON_INTERPRET=1`` at import time runs the kernels in NumPy on CPU tensors.

``PDL`` (programmatic dependent launch, Hopper and later): a kernel launched with it may start
while the kernel before it is still running. Everything a kernel does before ``_pdl_go`` only
reads what no kernel of the step writes (weights, the window's cross-attention keys and values), so
the first weight tile of every program is on its way from memory while the previous kernel drains;
after the wait all of the previous kernel's writes are visible.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

try:  # Triton >= 3.3 on NVIDIA; the names are only reached when PDL is on
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # pragma: no cover - older Triton, ROCm builds: PDL stays off
    gdc_launch_dependents = gdc_wait = None

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
HAS_PDL = gdc_wait is not None and not INTERPRETED
NEG = tl.constexpr(-1.0e30)  # "minus infinity" that stays finite (no inf - inf)


@triton.jit
def _pdl_go(PDL: tl.constexpr):
    """Let the next kernel launch, then wait until the previous one has finished and flushed."""
    if PDL:
        gdc_launch_dependents()
        gdc_wait()


@triton.jit
def embed_kernel(tok_ptr, pos_ptr, emb_ptr, pemb_ptr, out_ptr, D, BLOCK: tl.constexpr):
    """out = emb[tokens[0, pos]] + pos_emb[pos], rounded to the model dtype."""
    pos = tl.load(pos_ptr)
    tok = tl.load(tok_ptr + pos)
    c = tl.arange(0, BLOCK)
    m = c < D
    e = tl.load(emb_ptr + tok * D + c, mask=m, other=0.0).to(tl.float32)
    p = tl.load(pemb_ptr + pos * D + c, mask=m, other=0.0).to(tl.float32)
    tl.store(out_ptr + c, (e + p).to(out_ptr.dtype.element_ty), mask=m)


@triton.jit
def gemv_kernel(
    x_ptr, lnw_ptr, lnb_ptr, w_ptr, b_ptr, res_ptr, out_ptr,
    kv_ptr, pos_ptr, s_sec, s_head, s_t,
    N, eps, D, K: tl.constexpr,
    LN: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr, QKV: tl.constexpr,
    DH: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, XBLOCK: tl.constexpr, PDL: tl.constexpr,
):
    """out[n] = res[n] + act(W[n] . pro(x) + b[n]) for BLOCK_N rows n of W (N, K) per program.

    LN: x goes through LayerNorm first (statistics from x held in registers, XBLOCK >= K), rounded
    to the model dtype as the eager op rounds. ACT: 0 none, 1 exact GELU, 2 tanh GELU, 3 ReLU.
    QKV: rows >= D are the new token's key (D..2D) and value (2D..3D), stored into the cache at
    ``pos``; rows < D go to out. The next weight tile is loaded while the current one is summed.
    """
    wdt = w_ptr.dtype.element_ty
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    cols = tl.arange(0, BLOCK_K)
    w = tl.load(w_ptr + rows[:, None] * K + cols[None, :], mask=rmask[:, None] & (cols < K)[None, :], other=0.0)
    _pdl_go(PDL)
    mean = 0.0
    rstd = 1.0
    if LN:
        xc = tl.arange(0, XBLOCK)
        xa = tl.load(x_ptr + xc, mask=xc < K, other=0.0).to(tl.float32)
        mean = tl.sum(xa, 0) / K
        dx = tl.where(xc < K, xa - mean, 0.0)
        rstd = 1.0 / tl.sqrt(tl.sum(dx * dx, 0) / K + eps)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        c = k0 + cols
        cm = c < K
        xv = tl.load(x_ptr + c, mask=cm, other=0.0).to(tl.float32)
        if LN:
            lw = tl.load(lnw_ptr + c, mask=cm, other=0.0).to(tl.float32)
            lb = tl.load(lnb_ptr + c, mask=cm, other=0.0).to(tl.float32)
            xv = tl.where(cm, ((xv - mean) * rstd * lw + lb).to(wdt).to(tl.float32), 0.0)
        cur = w
        cn = c + BLOCK_K
        w = tl.load(w_ptr + rows[:, None] * K + cn[None, :], mask=rmask[:, None] & (cn < K)[None, :], other=0.0)
        acc += cur.to(tl.float32) * xv[None, :]
    y = tl.sum(acc, 1)
    if HAS_BIAS:
        y += tl.load(b_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
    y = y.to(wdt).to(tl.float32)
    if ACT == 1:
        y = (0.5 * y * (1.0 + tl.math.erf(y * 0.7071067811865476))).to(wdt).to(tl.float32)
    if ACT == 2:
        inner = 0.7978845608028654 * (y + 0.044715 * y * y * y)
        th = 2.0 / (1.0 + tl.exp(-2.0 * inner)) - 1.0
        y = (0.5 * y * (1.0 + th)).to(wdt).to(tl.float32)
    if ACT == 3:
        y = tl.maximum(y, 0.0)
    if HAS_RES:
        y += tl.load(res_ptr + rows, mask=rmask, other=0.0).to(tl.float32)
    if QKV:
        pos = tl.load(pos_ptr)
        is_q = rows < D
        sec = tl.where(is_q, 0, rows // D - 1)
        within = rows % D
        dst = sec * s_sec + (within // DH) * s_head + pos * s_t + within % DH
        tl.store(out_ptr + rows, y.to(out_ptr.dtype.element_ty), mask=rmask & is_q)
        tl.store(kv_ptr + dst, y.to(kv_ptr.dtype.element_ty), mask=rmask & (rows >= D))
    else:
        tl.store(out_ptr + rows, y.to(out_ptr.dtype.element_ty), mask=rmask)


@triton.jit
def attn_kernel(
    q_ptr, k_ptr, v_ptr, pm_ptr, pl_ptr, pacc_ptr, cnt_ptr, out_ptr, pos_ptr,
    S, s_head, s_t, H, CHUNK: tl.constexpr,
    CAUSAL: tl.constexpr, DH: tl.constexpr, BLOCK_S: tl.constexpr, NSPLIT: tl.constexpr, PDL: tl.constexpr,
):
    """One (head, split) of single-query attention (scale already in q) over positions
    [split * CHUNK, (split + 1) * CHUNK) below S (below pos + 1 when CAUSAL), in one tile
    (BLOCK_S >= CHUNK); the split's max, sum of exp and unnormalised output go to fp32 partials.

    The split's keys and values are loaded before the PDL wait: the window's cross-attention K/V
    do not change during a step, and of the self-attention cache only the row at ``pos`` does (the
    Q/K/V kernel just before writes it; ``pos`` itself was written before the step began), so
    that row is read again after the wait.

    The last split of a head to finish (a per-head arrival counter) combines the head's partials
    and writes its output, rounded to the model dtype, to ``out``, then re-arms the counter: no
    separate combine kernel, and the out-projection reads a plain vector.
    """
    h = tl.program_id(0)
    sp = tl.program_id(1)
    d = tl.arange(0, DH)
    offs = sp * CHUNK + tl.arange(0, BLOCK_S)
    base = h * s_head
    n = S
    if CAUSAL:
        pos = tl.load(pos_ptr)
        n = tl.minimum(pos + 1, S)
    valid = (offs < n) & (tl.arange(0, BLOCK_S) < CHUNK)
    kv_off = base + offs[:, None] * s_t + d[None, :]
    kt = tl.load(k_ptr + kv_off, mask=valid[:, None], other=0.0)
    vt = tl.load(v_ptr + kv_off, mask=valid[:, None], other=0.0)
    _pdl_go(PDL)
    if CAUSAL:  # the row the Q/K/V kernel has just written
        here = (offs == pos)[:, None]
        kt = tl.where(here, tl.load(k_ptr + base + pos * s_t + d)[None, :], kt)
        vt = tl.where(here, tl.load(v_ptr + base + pos * s_t + d)[None, :], vt)
    q = tl.load(q_ptr + h * DH + d).to(tl.float32)
    s = tl.sum(kt.to(tl.float32) * q[None, :], 1)
    s = tl.where(valid, s, NEG)
    m_i = tl.max(s, 0)
    p = tl.where(valid, tl.exp(s - m_i), 0.0)
    l_i = tl.sum(p, 0)
    acc = tl.sum(p[:, None] * vt.to(tl.float32), 0)
    one = tl.arange(0, 1)
    tl.store(pm_ptr + sp * H + h + one, tl.zeros([1], tl.float32) + m_i)
    tl.store(pl_ptr + sp * H + h + one, tl.zeros([1], tl.float32) + l_i)
    tl.store(pacc_ptr + sp * H * DH + h * DH + d, acc)
    tl.debug_barrier()  # every thread's partials are written before the arrival is counted
    arrived = tl.atomic_add(cnt_ptr + h, 1, sem="acq_rel", scope="gpu")
    if arrived == NSPLIT - 1:  # the head's last split: combine (partials read past L1)
        sps = tl.arange(0, NSPLIT)
        m = tl.load(pm_ptr + sps * H + h, cache_modifier=".cg")
        lsum = tl.load(pl_ptr + sps * H + h, cache_modifier=".cg")
        a = tl.load(pacc_ptr + sps[:, None] * (H * DH) + h * DH + d[None, :], cache_modifier=".cg")
        mx = tl.max(m, 0)
        wgt = tl.exp(m - mx)
        o = tl.sum(wgt[:, None] * a, 0) / tl.sum(wgt * lsum, 0)
        tl.store(out_ptr + h * DH + d, o.to(out_ptr.dtype.element_ty))
        tl.atomic_xchg(cnt_ptr + h, 0, sem="relaxed", scope="gpu")
