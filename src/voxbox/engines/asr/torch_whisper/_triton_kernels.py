"""Triton kernels of :mod:`voxbox.engines.asr.torch_whisper.kernels` (imported only through it).

Plain, portable Triton: element-wise tiles and reductions (no ``tl.dot``: at batch 1 a GEMV is a
row-wise dot product), loads of contiguous rows, fp32 accumulation. Importing this module needs
``triton``; ``TRITON_INTERPRET=1`` at import time runs the kernels in NumPy on CPU tensors.
"""

from __future__ import annotations

import os

import triton
import triton.language as tl

INTERPRETED = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")
NEG = tl.constexpr(-1.0e30)  # "minus infinity" that stays finite (no inf - inf)


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
def _ln_stats(x_ptr, K, eps, BLOCK_K: tl.constexpr):
    """Mean and 1/std of x[0:K] (two passes, fp32)."""
    cols = tl.arange(0, BLOCK_K)
    s1 = tl.zeros([BLOCK_K], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        c = k0 + cols
        s1 += tl.load(x_ptr + c, mask=c < K, other=0.0).to(tl.float32)
    mean = tl.sum(s1, 0) / K
    s2 = tl.zeros([BLOCK_K], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        c = k0 + cols
        v = tl.load(x_ptr + c, mask=c < K, other=0.0).to(tl.float32)
        dv = tl.where(c < K, v - mean, 0.0)
        s2 += dv * dv
    rstd = 1.0 / tl.sqrt(tl.sum(s2, 0) / K + eps)
    return mean, rstd


@triton.jit
def _combine(pm_ptr, pl_ptr, pacc_ptr, c, cm, K, H, NSPLIT: tl.constexpr, DH: tl.constexpr):
    """Attention output columns ``c`` from per-split (max, sum, unnormalised sum of p*v)."""
    head = c // DH
    sp = tl.arange(0, NSPLIT)
    m2 = cm[None, :] & (sp[:, None] < NSPLIT)
    m = tl.load(pm_ptr + sp[:, None] * H + head[None, :], mask=m2, other=NEG)
    lsum = tl.load(pl_ptr + sp[:, None] * H + head[None, :], mask=m2, other=0.0)
    a = tl.load(pacc_ptr + sp[:, None] * K + c[None, :], mask=m2, other=0.0)
    mx = tl.max(m, 0)
    wgt = tl.exp(m - mx[None, :])
    den = tl.sum(wgt * lsum, 0)
    den = tl.where(cm, den, 1.0)
    return tl.where(cm, tl.sum(wgt * a, 0) / den, 0.0)


@triton.jit
def gemv_kernel(
    x_ptr, lnw_ptr, lnb_ptr, pm_ptr, pl_ptr, pacc_ptr, w_ptr, b_ptr, res_ptr, out_ptr,
    kv_ptr, pos_ptr, s_sec, s_head, s_t,
    N, K, eps, D, H,
    PRO: tl.constexpr, HAS_BIAS: tl.constexpr, HAS_RES: tl.constexpr, ACT: tl.constexpr, QKV: tl.constexpr,
    NSPLIT: tl.constexpr, DH: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """out[n] = res[n] + act(W[n] . pro(x) + b[n]) for BLOCK_N rows n of W (N, K) per program.

    PRO: 0 = x as is, 1 = LayerNorm(x) rounded to the model dtype, 2 = attention combine of the
    partials (then rounded). ACT: 0 none, 1 exact GELU, 2 tanh GELU, 3 ReLU. QKV: rows >= D are the
    new token's key (D..2D) and value (2D..3D), stored into the cache at ``pos``; rows < D go to out.
    """
    wdt = w_ptr.dtype.element_ty
    pid = tl.program_id(0)
    rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)
    rmask = rows < N
    cols = tl.arange(0, BLOCK_K)
    mean = 0.0
    rstd = 1.0
    if PRO == 1:
        mean, rstd = _ln_stats(x_ptr, K, eps, BLOCK_K)
    acc = tl.zeros([BLOCK_N, BLOCK_K], tl.float32)
    for k0 in range(0, K, BLOCK_K):
        c = k0 + cols
        cm = c < K
        if PRO == 2:
            xv = _combine(pm_ptr, pl_ptr, pacc_ptr, c, cm, K, H, NSPLIT, DH).to(wdt).to(tl.float32)
        else:
            xv = tl.load(x_ptr + c, mask=cm, other=0.0).to(tl.float32)
            if PRO == 1:
                lw = tl.load(lnw_ptr + c, mask=cm, other=0.0).to(tl.float32)
                lb = tl.load(lnb_ptr + c, mask=cm, other=0.0).to(tl.float32)
                xv = tl.where(cm, ((xv - mean) * rstd * lw + lb).to(wdt).to(tl.float32), 0.0)
        w = tl.load(w_ptr + rows[:, None] * K + c[None, :], mask=rmask[:, None] & cm[None, :], other=0.0)
        acc += w.to(tl.float32) * xv[None, :]
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
def attn_partial_kernel(
    q_ptr, k_ptr, v_ptr, pm_ptr, pl_ptr, pacc_ptr, pos_ptr,
    S, CHUNK, s_head, s_t, H,
    CAUSAL: tl.constexpr, DH: tl.constexpr, BLOCK_S: tl.constexpr,
):
    """One (head, split) of single-query attention (scale already in q): positions
    [split * CHUNK, (split + 1) * CHUNK) below S (below pos + 1 when CAUSAL); writes the split's
    running max, sum of exp and unnormalised output (fp32)."""
    h = tl.program_id(0)
    sp = tl.program_id(1)
    d = tl.arange(0, DH)
    q = tl.load(q_ptr + h * DH + d).to(tl.float32)
    n = S
    if CAUSAL:
        n = tl.minimum(tl.load(pos_ptr) + 1, S)
    start = sp * CHUNK
    offs0 = tl.arange(0, BLOCK_S)
    m_i = tl.full([1], NEG, tl.float32)
    l_i = tl.zeros([1], tl.float32)
    acc = tl.zeros([DH], tl.float32)
    base = h * s_head
    for t0 in range(0, CHUNK, BLOCK_S):
        offs = start + t0 + offs0
        valid = (offs < n) & (t0 + offs0 < CHUNK)
        kt = tl.load(k_ptr + base + offs[:, None] * s_t + d[None, :], mask=valid[:, None], other=0.0)
        s = tl.sum(kt.to(tl.float32) * q[None, :], 1)
        s = tl.where(valid, s, NEG)
        m_new = tl.maximum(m_i, tl.max(s, 0))
        alpha = tl.exp(m_i - m_new)
        p = tl.where(valid, tl.exp(s - m_new), 0.0)
        vt = tl.load(v_ptr + base + offs[:, None] * s_t + d[None, :], mask=valid[:, None], other=0.0)
        l_i = l_i * alpha + tl.sum(p, 0)
        acc = acc * alpha + tl.sum(p[:, None] * vt.to(tl.float32), 0)
        m_i = m_new
    one = tl.arange(0, 1)
    tl.store(pm_ptr + sp * H + h + one, m_i)
    tl.store(pl_ptr + sp * H + h + one, l_i)
    tl.store(pacc_ptr + sp * H * DH + h * DH + d, acc)
