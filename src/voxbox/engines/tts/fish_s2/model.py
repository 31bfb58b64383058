"""The dual-AR transformer of Fish S2-Pro, with static KV caches and graph-capturable steps.

Written for voxbox from the published architecture (fish-speech's ``FishQwen3`` models and the
sglang-omni S2-Pro port); no code from either. One audio frame is made in two steps:

* **slow step** (``SlowAR``, Qwen3-style: GQA, per-head q/k RMSNorm, interleaved RoPE, SwiGLU):
  input = embedding of the previous frame's semantic token plus the sum of its codebook embeddings
  (scaled by ``1/sqrt(num_codebooks + 1)``), one position; the head scores only the semantic tokens
  and ``<|im_end|>`` (every other logit is masked to -inf upstream, so voxbox computes just those
  4097 rows instead of the 155,776-row vocabulary); sampling with repetition penalty over a window,
  top-k, top-p, temperature and upstream's "RAS" fallback (a repeat among the last 4 tokens switches
  to temperature 1.0 / top-p 0.9).
* **fast loop** (``FastAR``): position 0 is the slow model's final hidden state, position 1 the
  semantic code's embedding, then one residual codebook per position (greedy by default, as
  sglang-omni does; ``fast_temperature`` > 0 samples).

``DualARRunner`` owns the static buffers (KV caches, token/code inputs, history, outputs) so both
steps read and write fixed addresses: on CUDA each slow-step bucket (attention span, every 256
positions), the whole fast loop and the prompt (padded to a prefill bucket) are captured once as
CUDA graphs and replayed; on the CPU they run eagerly. Frame counters live on the device, so the
host never waits on a frame except to look for ``<|im_end|>`` every few frames. Attention is
``scaled_dot_product_attention`` with explicit masks (boolean for the prompt, additive and built
once per step for decoding) over the static caches (no flash-attn), so the same code runs on
CUDA, ROCm and CPU. The elementwise parts of a step (norms, q/k norm + RoPE + cache entry,
SwiGLU, sampler) are small pure functions that ``torch.compile`` fuses on CUDA (``_Ops``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .config import DualARConfig, TransformerConfig

__all__ = ["DualARRunner", "FastAR", "SlowAR", "rope_table"]

#: Width of the (static-shape) top-k used by the semantic sampler; per-call top_k <= this.
TOPK_WIDTH = 64
#: Repetition-penalty window (upstream ``ras_window`` / ``rep_history_len``).
HISTORY = 16


def rope_table(positions: int, head_dim: int, base: float) -> Tensor:
    """(positions, head_dim/2, 2) cos/sin, rounded to bfloat16 as upstream's cache is, kept in fp32."""
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32)[: head_dim // 2] / head_dim))
    ang = torch.outer(torch.arange(positions, dtype=torch.float32), inv)
    table = torch.stack([torch.cos(ang), torch.sin(ang)], dim=-1)
    return table.to(torch.bfloat16).to(torch.float32)


def apply_rope(x: Tensor, cs: Tensor) -> Tensor:
    """Interleaved-pair rotation. x: (B, T, H, D); cs: (T, D/2, 2)."""
    xf = x.float().unflatten(-1, (-1, 2))
    c = cs[None, :, None, :, 0]
    s = cs[None, :, None, :, 1]
    a, b = xf[..., 0], xf[..., 1]
    return torch.stack([a * c - b * s, b * c + a * s], dim=-1).flatten(-2).to(x.dtype)


def _rms(x: Tensor, w: Tensor, eps: float) -> Tensor:
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps) * w.float()).to(x.dtype)


def _add_rms(x: Tensor, d: Tensor, w: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    h = x + d
    return h, _rms(h, w, eps)


def _qk_rope(qk: Tensor, w: Tensor | None, cs: Tensor, eps: float) -> Tensor:
    """Per-head RMSNorm (when ``w``, one row per head) then RoPE, for q and k heads at once."""
    if w is not None:
        qk = _rms(qk, w, eps)
    return apply_rope(qk, cs)


def _qkv_prep(qkv: Tensor, w: Tensor | None, cs: Tensor, eps: float, H: int, G: int, D: int) -> tuple[Tensor, Tensor]:
    """Fused QKV output (B, T, (H+2G)D) -> q (B, T, H, D) and the new cache entries k|v (2, B, G, T, D)."""
    B, T = qkv.shape[0], qkv.shape[1]
    qk = _qk_rope(qkv[..., : (H + G) * D].view(B, T, H + G, D), w, cs, eps)
    v = qkv[..., (H + G) * D :].view(B, T, G, D)
    return qk[:, :, :H], torch.stack([qk[:, :, H:], v]).transpose(2, 3)


def _swiglu(h: Tensor, inter: int) -> Tensor:
    gate, up = h.split(inter, dim=-1)
    return F.silu(gate) * up


def _sample(logits: Tensor, temperature: Tensor, top_p: Tensor, top_k: Tensor, noise: Tensor) -> Tensor:
    """One draw from 1-D ``logits`` (fp32) with upstream's order: top-k, top-p on the untempered
    distribution (the first candidate always kept), then temperature. ``temperature <= 0`` is
    greedy. ``noise`` (width,) is Exp(1) noise: argmax(p / noise) is a multinomial draw (drawn by
    the caller so RNG stays outside compiled code). Options are 0-d tensors (graph-capturable).
    Returns a (1,) index into ``logits``."""
    width = noise.shape[0]
    vals, idx = torch.topk(logits, width)
    ar = torch.arange(width, device=logits.device)
    vals = vals.masked_fill(ar >= top_k, float("-inf"))
    cum = torch.cumsum(torch.softmax(vals, dim=-1), dim=-1)
    drop = (cum > top_p) & (ar > 0)
    vals = vals.masked_fill(drop, float("-inf"))
    probs = torch.softmax(vals / temperature.clamp(min=1e-5), dim=-1)
    pick = torch.argmax(probs / noise).view(1)
    pick = torch.where(temperature > 0, pick, torch.zeros_like(pick))
    return idx.gather(0, pick)


class _Ops:
    """The elementwise pieces of a decoder layer. On CUDA they are swapped for ``torch.compile``d
    versions (each fuses into one kernel) for one-position steps; prefill stays eager."""

    def __init__(self, compiled: bool) -> None:
        self.rms, self.add_rms, self.qkv_prep, self.swiglu, self.sample = _rms, _add_rms, _qkv_prep, _swiglu, _sample
        self.compiled = False
        if compiled:
            self.compile()

    def compile(self) -> None:
        import torch._dynamo

        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
        c = lambda f: torch.compile(f, dynamic=False, fullgraph=True)  # noqa: E731
        self.rms, self.add_rms, self.qkv_prep, self.swiglu = c(_rms), c(_add_rms), c(_qkv_prep), c(_swiglu)
        self.sample = c(_sample)
        self.compiled = True


EAGER = _Ops(False)


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return _rms(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.n_head, self.n_kv, self.head_dim = c.n_head, c.n_local_heads, c.head_dim
        self.eps = c.norm_eps
        self.wqkv = nn.Linear(c.dim, (c.n_head + 2 * c.n_local_heads) * c.head_dim, bias=c.attention_qkv_bias)
        self.wo = nn.Linear(c.n_head * c.head_dim, c.dim, bias=c.attention_o_bias)
        self.qk_norm = c.attention_qk_norm
        if self.qk_norm:
            self.q_norm = RMSNorm(c.head_dim, c.norm_eps)
            self.k_norm = RMSNorm(c.head_dim, c.norm_eps)
        self._qk_w: Tensor | None = None

    def qk_weight(self) -> Tensor | None:
        """q_norm's weight for each q head stacked over k_norm's for each k head (cached)."""
        if not self.qk_norm:
            return None
        w = self._qk_w
        if w is None or w.device != self.q_norm.weight.device or w.dtype != self.q_norm.weight.dtype:
            H, G, D = self.n_head, self.n_kv, self.head_dim
            w = torch.cat(
                [self.q_norm.weight.detach().expand(H, D), self.k_norm.weight.detach().expand(G, D)]
            ).contiguous()
            self._qk_w = w
        return w

    def forward(self, x: Tensor, cs: Tensor, pos: Tensor, cache: Tensor, span: int, mask: Tensor,
                ops: _Ops = EAGER) -> Tensor:
        """x: (B, T, dim); cache: (2, B, n_kv, S, head_dim) keys|values; pos: (T,) slots to write;
        attends cache[..., :span, :] under ``mask`` (bool True = attend, or additive; (T, span)
        or broadcastable)."""
        B, T, _ = x.shape
        H, G, D = self.n_head, self.n_kv, self.head_dim
        q, kv = ops.qkv_prep(self.wqkv(x), self.qk_weight(), cs, self.eps, H, G, D)
        cache.index_copy_(3, pos, kv)
        keys, vals = cache[0, :, :, :span], cache[1, :, :, :span]
        if T == 1:
            # GQA at one query position: each KV head's query heads act as that many query rows.
            qg = q.reshape(B, G, H // G, D)
            y = F.scaled_dot_product_attention(qg, keys, vals, attn_mask=mask.view(1, 1, 1, span))
            y = y.reshape(B, 1, H * D)
        else:
            rep = H // G
            y = F.scaled_dot_product_attention(
                q.transpose(1, 2), keys.repeat_interleave(rep, 1), vals.repeat_interleave(rep, 1),
                attn_mask=mask.view(1, 1, T, span))
            y = y.transpose(1, 2).reshape(B, T, H * D)
        return self.wo(y)


class FeedForward(nn.Module):
    """SwiGLU with the gate and up projections stored as one matrix (``w13`` = [w1; w3])."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.inter = c.intermediate_size
        self.w13 = nn.Linear(c.dim, 2 * c.intermediate_size, bias=False)
        self.w2 = nn.Linear(c.intermediate_size, c.dim, bias=False)

    def forward(self, x: Tensor, ops: _Ops = EAGER) -> Tensor:
        return self.w2(ops.swiglu(self.w13(x), self.inter))


class Block(nn.Module):
    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.attention = Attention(c)
        self.feed_forward = FeedForward(c)
        self.attention_norm = RMSNorm(c.dim, c.norm_eps)
        self.ffn_norm = RMSNorm(c.dim, c.norm_eps)
        self.eps = c.norm_eps

    def forward(self, x: Tensor, delta: Tensor | None, cs: Tensor, pos: Tensor, cache: Tensor, span: int,
                mask: Tensor, ops: _Ops = EAGER) -> tuple[Tensor, Tensor]:
        """Residual stream ``x`` plus the previous layer's pending ``delta`` (None for the first
        layer) -> (x', delta'): the layer's output is x' + delta', added by the next norm."""
        if delta is None:
            n = ops.rms(x, self.attention_norm.weight, self.eps)
        else:
            x, n = ops.add_rms(x, delta, self.attention_norm.weight, self.eps)
        a = self.attention(n, cs, pos, cache, span, mask, ops)
        h, n = ops.add_rms(x, a, self.ffn_norm.weight, self.eps)
        return h, self.feed_forward(n, ops)


def run_layers(layers: Iterable[nn.Module], caches: Iterable[Tensor], x: Tensor, cs: Tensor, pos: Tensor, span: int,
               mask: Tensor, norm_w: Tensor, eps: float, ops: _Ops = EAGER) -> Tensor:
    """A stack of blocks over static caches, then the final RMSNorm."""
    d = None
    for layer, cache in zip(layers, caches, strict=True):
        x, d = layer(x, d, cs, pos, cache, span, mask, ops)
    if d is None:
        return ops.rms(x, norm_w, eps)
    return ops.add_rms(x, d, norm_w, eps)[1]


class SlowAR(nn.Module):
    """The text/semantic transformer (checkpoint prefix ``text_model.model.``)."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        self.config = c
        self.embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        if not c.tie_word_embeddings:
            self.output = nn.Linear(c.dim, c.vocab_size, bias=False)

    def head_weight(self) -> Tensor:
        return self.embeddings.weight if self.config.tie_word_embeddings else self.output.weight


class FastAR(nn.Module):
    """The codebook transformer (checkpoint prefix ``audio_decoder.``)."""

    def __init__(self, c: TransformerConfig) -> None:
        super().__init__()
        assert c.num_codebooks and c.text_dim
        self.config = c
        self.project_in = nn.Linear(c.text_dim, c.dim) if c.text_dim != c.dim else nn.Identity()
        self.codebook_embeddings = nn.Embedding(c.vocab_size * c.num_codebooks, c.text_dim)
        self.embeddings = nn.Embedding(c.vocab_size, c.dim)
        self.layers = nn.ModuleList(Block(c) for _ in range(c.n_layer))
        self.norm = RMSNorm(c.dim, c.norm_eps)
        self.output = nn.Linear(c.dim, c.vocab_size, bias=False)


class DualARRunner:
    """Static-buffer decoding of one utterance at a time (batch 1)."""

    def __init__(self, cfg: DualARConfig, slow: SlowAR, fast: FastAR, *, device: torch.device,
                 max_context: int, max_frames: int, cuda_graphs: bool = True, compile: bool = False,
                 buckets: Iterable[int] | None = None) -> None:
        self.cfg = cfg
        self.slow, self.fast = slow.eval(), fast.eval()
        for p in (*slow.parameters(), *fast.parameters()):
            p.requires_grad_(False)
        self.device = device
        self.slow_dtype = slow.embeddings.weight.dtype
        self.fast_dtype = fast.embeddings.weight.dtype
        tc, fc = cfg.text, cfg.fast
        self.max_context = int(max_context)
        self.max_frames = int(max_frames)
        self.V = cfg.codebook_size
        self.ncb = cfg.num_codebooks
        self.eos = self.V  # index of <|im_end|> in the reduced head
        dev = device
        with torch.no_grad():
            w = slow.head_weight()
            s0, s1 = cfg.semantic_start_token_id, cfg.semantic_end_token_id
            # Reduced head: the semantic rows then the <|im_end|> row.
            self.head = torch.cat([w[s0 : s1 + 1], w[cfg.eos_token_id : cfg.eos_token_id + 1]]).contiguous()
        self.rope_slow = rope_table(self.max_context, tc.head_dim, tc.rope_base).to(dev)
        self.rope_fast = rope_table(self.ncb, fc.head_dim, fc.rope_base).to(dev)
        self.cb_offsets = (torch.arange(self.ncb, device=dev) * self.V)
        self.vq_scale = 1.0 / math.sqrt(self.ncb + 1)
        self.slow_cache = [torch.zeros(2, 1, tc.n_local_heads, self.max_context, tc.head_dim, device=dev,
                                       dtype=self.slow_dtype) for _ in range(tc.n_layer)]
        self.fast_cache = [torch.zeros(2, 1, fc.n_local_heads, self.ncb, fc.head_dim, device=dev, dtype=self.fast_dtype)
                           for _ in range(fc.n_layer)]
        L = torch.long
        self.tok = torch.zeros(1, dtype=L, device=dev)  # reduced index of the last semantic token
        self.vq = torch.zeros(self.ncb, dtype=L, device=dev)  # the last frame's codes
        self.pos = torch.zeros(1, dtype=L, device=dev)  # slow cache slot of the next input
        self.frame = torch.zeros(1, dtype=L, device=dev)  # frames made so far
        self.hidden = torch.zeros(tc.dim, dtype=self.slow_dtype, device=dev)
        self.history = torch.zeros(HISTORY, dtype=L, device=dev)
        self.hist_count = torch.zeros((), dtype=L, device=dev)
        self.sem_out = torch.zeros(self.max_frames, dtype=L, device=dev)
        self.codes_out = torch.zeros(self.max_frames, self.ncb, dtype=L, device=dev)
        f32 = torch.float32
        self.opts = {
            name: torch.zeros((), dtype=f32, device=dev)
            for name in (
                "temperature", "top_p", "rep_penalty", "ras_temperature", "ras_top_p", "fast_temperature", "fast_top_p",
            )
        }
        self.top_k = torch.zeros((), dtype=L, device=dev)
        self.min_frames = torch.zeros((), dtype=L, device=dev)
        self.bias = torch.zeros(self.V + 1, dtype=f32, device=dev)
        self._fast_masks = [torch.zeros(self.ncb, dtype=self.fast_dtype, device=dev).masked_fill(
            torch.arange(self.ncb, device=dev) > i, float("-inf")) for i in range(self.ncb)]
        self._fast_pos = [torch.tensor([i], dtype=L, device=dev) for i in range(self.ncb)]
        self._arange_ctx = torch.arange(self.max_context, device=dev)
        self._width = min(TOPK_WIDTH, self.V + 1)
        self._fast_width = min(TOPK_WIDTH, self.V)
        self._fast_topk = torch.tensor(self._fast_width, dtype=L, device=dev)
        if buckets is None:  # attention spans: every 256 positions, so a step reads < 256 idle slots
            buckets = list(range(256, self.max_context, 256)) + [self.max_context]
        self.buckets = sorted({min(int(b), self.max_context) for b in buckets})
        self.use_graphs = bool(cuda_graphs) and dev.type == "cuda"
        # prefill graphs: prompts padded to one of these lengths (longer prompts run eagerly)
        self.prefill_buckets = [b for b in (128, 256, 384, 512, 768, 1024, 1536, 2048) if b <= self.max_context]
        if self.use_graphs and self.prefill_buckets:
            pmax = self.prefill_buckets[-1]
            self._px = torch.zeros(pmax, tc.dim, dtype=self.slow_dtype, device=dev)
            self._plast = torch.zeros(1, dtype=L, device=dev)
            self._parange = torch.arange(pmax, device=dev)
            self._pmask = self._parange[None, :] <= self._parange[:, None]
        self.ops = _Ops(bool(compile))
        self.compile_error: str | None = None
        self._graphs: dict[str, torch.cuda.CUDAGraph] = {}
        self._pool: Any = None  # torch.cuda.graph_pool_handle(), a private torch type

    # ------------------------------------------------------------------ options
    def set_options(self, *, temperature: float, top_p: float, top_k: int, repetition_penalty: float,
                    ras_temperature: float, ras_top_p: float, fast_temperature: float, fast_top_p: float,
                    min_frames: int, bias: dict[int, float]) -> None:
        vals = dict(temperature=temperature, top_p=top_p, rep_penalty=repetition_penalty,
                    ras_temperature=ras_temperature, ras_top_p=ras_top_p, fast_temperature=fast_temperature,
                    fast_top_p=fast_top_p)
        for k, v in vals.items():
            self.opts[k].fill_(float(v))
        self.top_k.fill_(int(min(top_k, self._width)))
        self.min_frames.fill_(int(min_frames))
        self.bias.zero_()
        for idx, b in bias.items():
            self.bias[idx] = float(b)

    # ------------------------------------------------------------------ pieces
    def _run_slow_layers(self, x: Tensor, cs: Tensor, pos: Tensor, span: int, mask: Tensor) -> Tensor:
        ops = self.ops if x.shape[1] == 1 else EAGER
        return run_layers(self.slow.layers, self.slow_cache, x, cs, pos, span, mask, self.slow.norm.weight,
                          self.cfg.text.norm_eps, ops)

    def _select(self, h: Tensor) -> None:
        """Head + sampler on the final hidden state ``h`` (dim,); writes tok/hidden/history/sem_out."""
        o = self.opts
        logits = F.linear(h, self.head).float() + self.bias
        ban = torch.where(self.frame < self.min_frames, float("-inf"), 0.0)
        logits[self.eos:] = logits[self.eos:] + ban
        # repetition penalty over the last HISTORY tokens
        valid = torch.arange(HISTORY, device=h.device) < self.hist_count
        prev = self.history
        scores = logits.gather(0, prev)
        pen = torch.where(scores < 0, scores * o["rep_penalty"], scores / o["rep_penalty"])
        logits = logits.scatter(0, prev, torch.where(valid, pen, scores))
        # RAS: a repeat among the last four tokens -> fallback temperature / top-p
        last = self.history[(self.hist_count - 1 - torch.arange(4, device=h.device)) % HISTORY]
        srt = torch.sort(last).values
        dup = ((srt[1:] == srt[:-1]).any()) & (self.hist_count >= 4)
        temp = torch.where(dup, o["ras_temperature"], o["temperature"])
        top_p = torch.where(dup, o["ras_top_p"], o["top_p"])
        # greedy stays greedy under RAS
        temp = torch.where(o["temperature"] > 0, temp, o["temperature"])
        noise = torch.empty(self._width, device=h.device).exponential_()
        tok = self.ops.sample(logits, temp, top_p, self.top_k, noise)
        self.tok.copy_(tok)
        self.hidden.copy_(h)
        self.history.index_copy_(0, (self.hist_count % HISTORY).view(1), tok)
        self.hist_count.add_(1)
        self.sem_out.index_copy_(0, self.frame, tok)

    def _slow_step(self, span: int) -> None:
        s = self.slow
        emb = s.embeddings(self.tok + self.cfg.semantic_start_token_id)  # (1, dim)
        vq = self.fast.codebook_embeddings(self.vq + self.cb_offsets).sum(0).to(emb.dtype)
        x = ((emb + vq) * self.vq_scale).view(1, 1, -1)
        cs = self.rope_slow.index_select(0, self.pos)
        # additive mask, built once per step for all layers
        mask = torch.zeros(span, dtype=self.slow_dtype, device=self.device).masked_fill(
            self._arange_ctx[:span] > self.pos, float("-inf"))
        h = self._run_slow_layers(x, cs, self.pos, span, mask)
        self.pos.add_(1)
        self._select(h.view(-1))

    def _fast_loop(self) -> None:
        f, ops = self.fast, self.ops
        eps = self.cfg.fast.norm_eps
        x = f.project_in(self.hidden.to(self.fast_dtype)).view(1, 1, -1)
        codes = []
        sem = torch.where(self.tok >= self.V, torch.zeros_like(self.tok), self.tok)  # EOS -> code 0
        for i in range(self.ncb):
            cs = self.rope_fast[i : i + 1]
            if i == 0:
                run_layers(f.layers, self.fast_cache, x, cs, self._fast_pos[i], self.ncb, self._fast_masks[i],
                           f.norm.weight, eps, ops)  # fills the caches; its output is not used
                code = sem
            else:
                n = run_layers(f.layers, self.fast_cache, x, cs, self._fast_pos[i], self.ncb, self._fast_masks[i],
                               f.norm.weight, eps, ops)
                logits = f.output(n).view(-1).float()
                noise = torch.empty(self._fast_width, device=logits.device).exponential_()
                code = ops.sample(
                    logits, self.opts["fast_temperature"], self.opts["fast_top_p"], self._fast_topk, noise
                )
            codes.append(code)
            if i + 1 < self.ncb:
                x = f.embeddings(code).view(1, 1, -1)
        frame_codes = torch.cat(codes)
        self.vq.copy_(frame_codes)
        self.codes_out.index_copy_(0, self.frame, frame_codes.view(1, -1))
        self.frame.add_(1)

    # ------------------------------------------------------------------ public
    @torch.no_grad()
    def prompt_embeddings(self, ids: Tensor, vq_mask: Tensor, vq_codes: Tensor | None) -> Tensor:
        """Token embeddings of the prompt (T, dim); at reference-code positions (``vq_mask``) the
        semantic token's embedding plus the sum of the frame's codebook embeddings, scaled by
        1/sqrt(num_codebooks + 1). vq_codes: (num_codebooks, n) for the n masked positions."""
        dev = self.device
        x = self.slow.embeddings(ids.to(dev))
        if vq_codes is not None and vq_codes.numel():
            m = vq_mask.to(dev)
            cb = self.fast.codebook_embeddings(vq_codes.to(dev).long().T + self.cb_offsets).sum(1).to(x.dtype)
            x = x.clone()
            x[m] = (x[m] + cb) * self.vq_scale
        return x

    @torch.no_grad()
    def prefill(self, ids: Tensor, vq_mask: Tensor, vq_codes: Tensor | None) -> None:
        """Run the prompt (ids (T,), vq_mask (T,) bool, vq_codes (ncb, n_vq)) and make frame 0.

        With graphs, the prompt is padded to a prefill bucket and replayed from a captured graph:
        padded rows are zeros, later than every real row (causal mask), and the cache slots they
        write are overwritten by decode steps before any step attends to them."""
        T = int(ids.shape[0])
        if T > self.max_context:
            raise ValueError(f"prompt of {T} tokens exceeds the context ({self.max_context})")
        x = self.prompt_embeddings(ids, vq_mask, vq_codes)
        self.frame.zero_()
        self.hist_count.zero_()
        self.history.zero_()
        self.vq.zero_()
        tb = next((b for b in self.prefill_buckets if b >= T), None) if self.use_graphs else None
        if tb is None:
            pos = torch.arange(T, device=self.device)
            h = self._run_slow_layers(x[None], self.rope_slow[:T], pos, T, pos[None, :] <= pos[:, None])
            self._select(h[0, -1])
        else:
            self._px[:T].copy_(x)
            self._px[T:tb].zero_()
            self._plast.fill_(T - 1)
            self._graph(f"prefill{tb}", lambda: self._prefill_body(tb)).replay()
        self.pos.fill_(T)
        if self.use_graphs:
            self._graph("fast", self._fast_loop).replay()
        else:
            self._fast_loop()
        self.prompt_len = T

    def _prefill_body(self, tb: int) -> None:
        pos = self._parange[:tb]
        h = self._run_slow_layers(self._px[:tb][None], self.rope_slow[:tb], pos, tb, self._pmask[:tb, :tb].contiguous())
        self._select(h[0].index_select(0, self._plast).view(-1))

    def bucket_for(self, frame: int) -> int:
        need = self.prompt_len + frame  # slot prompt_len + frame - 1 is written, so span must exceed it
        for b in self.buckets:
            if b >= need:
                return b
        raise ValueError(f"context {need} exceeds the cache ({self.max_context})")

    @torch.no_grad()
    def step(self, frame: int) -> None:
        """Make frame ``frame`` (>= 1): one slow step then the fast loop."""
        span = self.bucket_for(frame)
        if self.use_graphs:
            self._graph(f"slow{span}", lambda: self._slow_step(span)).replay()
            self._graph("fast", self._fast_loop).replay()
        else:
            self._slow_step(span)
            self._fast_loop()

    def _graph(self, name: str, fn) -> "torch.cuda.CUDAGraph":
        g = self._graphs.get(name)
        if g is not None:
            return g
        # State the graph mutates (counters) is saved and restored around warm-up and capture.
        saved = [t.clone() for t in (self.pos, self.frame, self.hist_count, self.history, self.tok, self.vq,
                                     self.hidden, self.sem_out, self.codes_out)]
        stream = torch.cuda.Stream(self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        try:
            with torch.cuda.stream(stream):
                for _ in range(2):
                    fn()
        except Exception as exc:  # a compiled op that fails here falls back to the eager ops
            if not self.ops.compiled:
                raise
            self.compile_error = f"{type(exc).__name__}: {exc}"[:500]
            self.ops = _Ops(False)
            with torch.cuda.stream(stream):
                for _ in range(2):
                    fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.graph(g, pool=self._pool):
            fn()
        for t, s in zip((self.pos, self.frame, self.hist_count, self.history, self.tok, self.vq, self.hidden,
                         self.sem_out, self.codes_out), saved, strict=True):
            t.copy_(s)
        self._graphs[name] = g
        return g

    @torch.no_grad()
    def capture_all(self) -> None:
        """Capture every bucket's slow graph and the fast graph now (load-time warm-up)."""
        if not self.use_graphs:
            return
        for b in self.buckets:
            self._graph(f"slow{b}", lambda b=b: self._slow_step(b))
        self._graph("fast", self._fast_loop)
        for b in self.prefill_buckets:
            self._graph(f"prefill{b}", lambda b=b: self._prefill_body(b))
