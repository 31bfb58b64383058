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

This module holds ``DualARRunner`` (buffers, the step bodies, CUDA-graph capture and replay);
the ``nn.Module`` stacks live in ``transformer``, the elementwise functions in ``ops``.
"""

from __future__ import annotations

import math
from typing import Any, Iterable

import torch
import torch.nn.functional as F
from torch import Tensor

from .config import DualARConfig
from .ops import EAGER, _Ops, rope_table
from .transformer import FastAR, SlowAR, run_layers

__all__ = ["HISTORY", "TOPK_WIDTH", "DualARRunner"]

#: Width of the (static-shape) top-k used by the semantic sampler; per-call top_k <= this.
TOPK_WIDTH = 64
#: Repetition-penalty window (upstream ``ras_window`` / ``rep_history_len``).
HISTORY = 16


class DualARRunner:
    """Static-buffer decoding of one utterance at a time (batch 1)."""

    def __init__(self, cfg: DualARConfig, slow: SlowAR, fast: FastAR, *, device: torch.device,
                 max_context: int, max_frames: int, cuda_graphs: bool = True, compile: bool = False,
                 buckets: Iterable[int] | None = None) -> None:
        """Allocate every static buffer the captured graphs read and write (long: it is one flat
        list of fixed-address tensors, clearer in one place than split across helpers)."""
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
