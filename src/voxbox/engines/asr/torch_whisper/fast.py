"""Single-token decoder step with fewer kernels (GPU), optionally compiled by ``torch.compile``.

The step is cut at the only in-place write it needs — the new token's self-attention K/V into the
static cache — into pure functions of tensors: a head (embedding, additive causal mask, layer 0's
layer norm and fused Q/K/V), one function per layer that runs attention, cross-attention and the MLP
and ends with the *next* layer's layer norm and Q/K/V (or the final layer norm), so residual adds,
biases, GELU and layer norms sit in the same graph and Inductor fuses them into few kernels. Weights
are arguments (not module attributes), so one compiled graph serves every layer. The mask is built
once per step instead of once per layer.

Eager (uncompiled) the functions run the same aten ops as :meth:`Decoder.forward`, so they decode
the same tokens; compiled, reductions are reordered (close, not bit-equal, to eager). When
``torch.compile`` is unavailable or fails (CPU without a compiler, ROCm without Triton) the eager
functions are used.
"""

from __future__ import annotations

import logging
import time

import torch
import torch.nn.functional as F

from voxbox.engines.asr.torch_whisper.model import KVCache, Whisper, _act

__all__ = ["FastStep", "compile_available"]

log = logging.getLogger(__name__)


def compile_available(device: torch.device) -> bool:
    """Whether torch.compile can serve the GPU step: CUDA (or ROCm) with Triton importable. (The
    engine's ``compile`` load option turns it off.)"""
    if device.type != "cuda":
        return False
    try:
        import triton  # noqa: F401
    except Exception:  # noqa: BLE001 - a broken Triton install fails in many ways; then no compile
        return False
    return hasattr(torch, "compile")


def _functions(heads: int, eps: float, act_name: str, self_attn: str = "sdpa", kv_inside: bool = False):
    """The step's pure functions (head, layer, last), with or without the K/V write inside.

    Long because the helpers are closures over ``heads``/``eps``/the activation, so that each
    compiled function is a plain function of tensors; split up, they would need those as arguments.
    """
    act = _act(act_name)

    def attend(q, k, v, mask):  # self-attention over the cache (one query per row)
        if self_attn == "sdpa":
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)
        # plain matmul-softmax-matmul: Inductor fuses mask + softmax (and, at one query, the products)
        w = torch.softmax(torch.matmul(q, k.transpose(-1, -2)).float() + mask, dim=-1)
        return torch.matmul(w.to(v.dtype), v)

    def split(x: torch.Tensor) -> torch.Tensor:  # (B, T, d) -> (B, H, T, Dh)
        b, t, d = x.shape
        return x.view(b, t, heads, d // heads).transpose(1, 2)

    def merge(x: torch.Tensor) -> torch.Tensor:  # (B, H, T, Dh) -> (B, T, d)
        b, h, t, dh = x.shape
        return x.transpose(1, 2).reshape(b, t, h * dh)

    def ln(x, w, b):
        return F.layer_norm(x, (x.shape[-1],), w, b, eps)

    def qkv_in(h, w, b):  # fused Q/K/V: q (B, H, T, Dh), stacked k/v (2, B, H, T, Dh) contiguous
        bsz, t, d = h.shape
        qkv = F.linear(h, w, b).view(bsz, t, 3, heads, d // heads).permute(2, 0, 3, 1, 4)
        return qkv[0], qkv[1:].contiguous()

    def head(tokens, pos, emb, pos_emb, cols, ln_w, ln_b, qkv_w, qkv_b):
        x = F.embedding(tokens, emb) + pos_emb.index_select(0, pos)
        # additive form of the causal mask: what SDPA makes of the boolean ``cols <= pos``
        mask = torch.zeros(1, cols.shape[0], dtype=x.dtype, device=x.device).masked_fill(
            (cols > pos)[None], float("-inf"))
        q, kv = qkv_in(ln(x, ln_w, ln_b), qkv_w, qkv_b)
        return x, mask, q, kv

    def body(x, q, k, v, mask, ck, cv, w):
        o_w, o_b, ln2_w, ln2_b, cq_w, cq_b, co_w, co_b, ln3_w, ln3_b, fc1_w, fc1_b, fc2_w, fc2_b = w
        x = x + F.linear(merge(attend(q, k, v, mask)), o_w, o_b)
        o = F.scaled_dot_product_attention(split(F.linear(ln(x, ln2_w, ln2_b), cq_w, cq_b)), ck, cv, scale=1.0)
        x = x + F.linear(merge(o), co_w, co_b)
        return x + F.linear(act(F.linear(ln(x, ln3_w, ln3_b), fc1_w, fc1_b)), fc2_w, fc2_b)

    def layer(x, q, k, v, mask, ck, cv, w, ln_w, ln_b, qkv_w, qkv_b):
        x = body(x, q, k, v, mask, ck, cv, w)
        q, kv = qkv_in(ln(x, ln_w, ln_b), qkv_w, qkv_b)
        return x, q, kv

    def last(x, q, k, v, mask, ck, cv, w, ln_w, ln_b):
        return ln(body(x, q, k, v, mask, ck, cv, w), ln_w, ln_b)

    if not kv_inside:
        return head, layer, last

    # the same, with the new token's K/V written into the layer's cache (2, B, H, max_len, Dh) inside
    # the function: the write joins the Q/K/V bias kernel instead of being a kernel of its own
    def head_w(tokens, pos, emb, pos_emb, cols, ln_w, ln_b, qkv_w, qkv_b, kvc):
        x, mask, q, kv = head(tokens, pos, emb, pos_emb, cols, ln_w, ln_b, qkv_w, qkv_b)
        kvc.index_copy_(3, pos, kv)
        return x, mask, q

    def layer_w(x, q, kvc, mask, ck, cv, w, ln_w, ln_b, qkv_w, qkv_b, kvc_next, pos):
        n = mask.shape[-1]
        x, q, kv = layer(x, q, kvc[0, :, :, :n], kvc[1, :, :, :n], mask, ck, cv, w, ln_w, ln_b, qkv_w, qkv_b)
        kvc_next.index_copy_(3, pos, kv)
        return x, q

    def last_w(x, q, kvc, mask, ck, cv, w, ln_w, ln_b):
        n = mask.shape[-1]
        return last(x, q, kvc[0, :, :, :n], kvc[1, :, :, :n], mask, ck, cv, w, ln_w, ln_b)

    return head_w, layer_w, last_w


def _raise_recompile_limit(n: int = 64) -> None:
    """Each (batch, attended length, model shape) may compile once; dynamo's default limit (8 per
    function) would silently drop to eager after a few."""
    cfg = torch._dynamo.config
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(cfg, name) and getattr(cfg, name) < n:
            setattr(cfg, name, n)


class FastStep:
    """Decoder forward for one new token per row at a device-tensor position (graph-safe).

    ``compile``: None = when :func:`compile_available`; ``options``: Inductor options passed to
    ``torch.compile``. ``compile_seconds`` is the time spent in first calls of the compiled
    functions (compilation), ``compiled`` whether they are in use.
    """

    def __init__(self, model: Whisper, compile: bool | None = None, options: dict | None = None,
                 self_attn: str = "sdpa", kv_inside: bool = False):
        dec = model.decoder
        layers = list(dec.blocks)
        if any(layer.fused_qkv is None or layer.fused_cross_q is None for layer in layers):
            raise ValueError("FastStep needs Whisper.fuse_for_decoding() first")
        self.model = model
        eps = dec.layer_norm.eps
        if self_attn not in ("sdpa", "math"):
            raise ValueError(f"self_attn must be 'sdpa' or 'math', not {self_attn!r}")
        self.kv_inside = kv_inside
        self._eager = _functions(model.dims.decoder_heads, eps, model.dims.activation, self_attn, kv_inside)
        self.weights: list[tuple[torch.Tensor, ...]] = []
        self.qkv_in: list[tuple[torch.Tensor, ...]] = []
        for L in layers:
            cross_q, qkv = L.fused_cross_q, L.fused_qkv
            assert cross_q is not None and qkv is not None  # checked above
            self.weights.append((
                L.self_attn.out_proj.weight, L.self_attn.out_proj.bias,
                L.encoder_attn_layer_norm.weight, L.encoder_attn_layer_norm.bias, *cross_q,
                L.encoder_attn.out_proj.weight, L.encoder_attn.out_proj.bias,
                L.final_layer_norm.weight, L.final_layer_norm.bias,
                L.fc1.weight, L.fc1.bias, L.fc2.weight, L.fc2.bias,
            ))
            self.qkv_in.append((L.self_attn_layer_norm.weight, L.self_attn_layer_norm.bias, *qkv))
        p = dec.embed_tokens.weight
        self.cols = torch.arange(model.dims.max_target_positions, device=p.device)
        self.compile_seconds = 0.0
        self.compile_error: str | None = None
        if compile is None:
            compile = compile_available(p.device)
        self.fns = self._eager
        self.compiled = False
        self.options: dict = {}
        if compile:
            try:
                opts = dict(options or {})
                self.options = opts
                _raise_recompile_limit()
                self.fns = tuple(torch.compile(f, fullgraph=True, options=opts or None) for f in self._eager)
                self.compiled = True
            except Exception as exc:  # noqa: BLE001 - any failure means: stay eager
                self._fail(exc)
        self._seen: set = set()

    def _fail(self, exc: Exception) -> None:
        self.compile_error = f"{type(exc).__name__}: {exc}"[:500]
        log.warning("torch.compile of the decode step failed, using eager: %s", self.compile_error)
        self.fns = self._eager
        self.compiled = False

    def __call__(self, tokens: torch.Tensor, pos: torch.Tensor, cache: KVCache, kv_len: int) -> torch.Tensor:
        """``tokens`` (B, 1) at position ``pos`` ((1,) int64 device tensor); returns hidden (B, 1, d)."""
        if not self.compiled:
            return self._run(self._eager, tokens, pos, cache, kv_len)
        key = (tokens.shape[0], kv_len)
        if key in self._seen:
            return self._run(self.fns, tokens, pos, cache, kv_len)
        t0 = time.perf_counter()
        try:  # first call for this shape: compiles (or re-checks guards); every write it makes is idempotent
            out = self._run(self.fns, tokens, pos, cache, kv_len)
            if out.is_cuda:
                torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001
            self._fail(exc)
            return self._run(self._eager, tokens, pos, cache, kv_len)
        self.compile_seconds += time.perf_counter() - t0
        self._seen.add(key)
        return out

    def _run(self, fns, tokens, pos, cache: KVCache, kv_len: int) -> torch.Tensor:
        head, layer, last = fns
        dec = self.model.decoder
        n = len(self.weights)
        if self.kv_inside:
            kvs = cache.self_kv
            x, mask, q = head(tokens, pos, dec.embed_tokens.weight, dec.embed_positions.weight, self.cols[:kv_len],
                              *self.qkv_in[0], kvs[0])
            for i in range(n - 1):
                x, q = layer(x, q, kvs[i], mask, cache.cross_k[i], cache.cross_v[i], self.weights[i],
                             *self.qkv_in[i + 1], kvs[i + 1], pos)
            i = n - 1
            return last(x, q, kvs[i], mask, cache.cross_k[i], cache.cross_v[i], self.weights[i],
                        dec.layer_norm.weight, dec.layer_norm.bias)
        x, mask, q, kv = head(tokens, pos, dec.embed_tokens.weight, dec.embed_positions.weight, self.cols[:kv_len],
                              *self.qkv_in[0])
        for i in range(n):
            kvc = cache.self_kv[i]
            kvc.index_copy_(3, pos, kv)
            args = (x, q, kvc[0, :, :, :kv_len], kvc[1, :, :, :kv_len], mask, cache.cross_k[i], cache.cross_v[i],
                    self.weights[i])
            if i + 1 < n:
                x, q, kv = layer(*args, *self.qkv_in[i + 1])
            else:
                return last(*args, dec.layer_norm.weight, dec.layer_norm.bias)
        raise AssertionError("unreachable")
