"""Continuous batching of the dual-AR decoder: many utterances share one slow step and one fast loop.

``BatchRunner`` holds ``slots`` rows of decoder state next to the single-call ``DualARRunner``
(whose modules, reduced head and rotary tables it shares). Row ``r`` is one utterance: its own
slow KV cache row, position, frame counter, repetition history, sampling options, logit bias and
seed. Active utterances always occupy rows ``0..n-1`` (a leaving row is replaced by the last one,
its cache rows copied), so one step runs rows ``0..B-1`` for the smallest batch bucket ``B >= n``
(1, 2, 4, 8, ... slots); the idle rows in the bucket compute harmless garbage in their own rows.

* **slow step**: each row feeds its previous frame (semantic token + codebook embeddings), or
  for its first frame its prompt's last token; each row writes its key/value at its own position
  and attends its own cache up to that position (per-row additive mask over the bucket's span);
* **fast loop**: every row at the same codebook position, so the single runner's layer code
  (``transformer.run_layers``) runs unchanged on B rows;
* **sampling**: per-row temperature/top-p/top-k/RAS/penalty/bias; the random draw is a hash of
  (request seed, frame, codebook, candidate) rather than a generator, so a request samples the
  same codes whichever batch it shares (and a seeded request is reproducible under load).

Joining is a prefill into the new rows' caches: the prompts minus their last token, eagerly, the
requests admitted together as one right-padded forward; when a prompt starts with a cached voice
prefix (system text, reference transcript and codes), that prefix's keys/values are copied from a
small LRU instead of recomputed (a one-level radix cache; a new voice is computed once even when
many requests bring it at once).
On CUDA each (batch bucket, attention span) slow step and each bucket's fast loop is a CUDA graph,
captured at start (``capture_all``) or on first use; so is the prefill, per (power-of-two piece of
rows up to 16, length padded to one of :data:`PREFILL_TOKENS`, attention span): it reads the rows
and their start position from static tensors and, layer by layer, gathers those rows' caches,
runs the layer on them and puts them back, so one graph serves any rows and any cached prefix
length (``static_prefill``; the eager forward where a prompt part is longer, and on a CPU).
"""

from __future__ import annotations

import functools
import logging
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from voxbox.engines.batched import bucket, host_to_device, pow2_buckets, pow2_floor

from .model import HISTORY, DualARRunner
from .ops import EAGER
from .rows import RowOps, hashed_noise, sample_rows
from .transformer import run_layers

__all__ = ["OPTION_NAMES", "BatchRunner", "RowPrompt", "hashed_noise", "sample_rows"]  # the last two from .rows


#: Prompt parts (the tokens after a cached prefix, right-padded to the longest of an admission)
#: prefilled from CUDA graphs are padded to one of these lengths; longer ones prefill eagerly.
PREFILL_TOKENS = (16, 32, 64, 128, 256, 512)
#: The most rows one prefill graph takes (an admission of more replays several: 16, 8, ... rows).
PREFILL_ROWS = 16

#: Per-row float options, in the order of ``BatchRunner.fopts``'s columns.
OPTION_NAMES = ("temperature", "top_p", "repetition_penalty", "ras_temperature", "ras_top_p", "fast_temperature",
                "fast_top_p")


@dataclass
class RowPrompt:
    """What a row starts from: the prompt (and its cached-voice prefix) and the sampling options."""

    ids: Tensor
    vq_mask: Tensor
    vq_codes: Tensor | None
    opts: dict[str, float]
    top_k: int
    min_frames: int
    seed: int
    bias: dict[int, float]
    prefix_len: int = 0
    prefix_key: str | None = None


class BatchRunner:
    """Static row state for ``slots`` utterances decoded together (see the module docstring)."""

    def __init__(self, base: DualARRunner, slots: int, *, span_step: int = 512, cuda_graphs: bool | None = None,
                 compile: bool | None = None, prefix_cache: int = 8, static_prefill: bool | None = None) -> None:
        self.base = base
        tc, fc = base.cfg.text, base.cfg.fast
        self.slots = S = max(1, int(slots))
        self.sizes = pow2_buckets(S)
        C = base.max_context
        self.spans = sorted({min(s, C) for s in range(span_step, C, span_step)} | {C})
        dev, L, f32 = base.device, torch.long, torch.float32
        self.device = dev
        self.slow_cache = [torch.zeros(2, S, tc.n_local_heads, C, tc.head_dim, device=dev, dtype=base.slow_dtype)
                           for _ in range(tc.n_layer)]
        self.fast_cache = [torch.zeros(2, S, fc.n_local_heads, base.ncb, fc.head_dim, device=dev, dtype=base.fast_dtype)
                           for _ in range(fc.n_layer)]
        z = lambda *shape, dtype=L: torch.zeros(*shape, dtype=dtype, device=dev)  # noqa: E731
        self.tok, self.vq, self.pos, self.frame = z(S), z(S, base.ncb), z(S), z(S)
        self.active, self.first = z(S, dtype=torch.bool), z(S, dtype=torch.bool)
        self.x_first, self.hidden = z(S, tc.dim, dtype=base.slow_dtype), z(S, tc.dim, dtype=base.slow_dtype)
        self.history, self.hist_count = z(S, HISTORY), z(S)
        # temperature, top_p, rep_penalty, ras_temperature, ras_top_p, fast_temperature, fast_top_p
        self.fopts = z(S, 7, dtype=f32)
        self.iopts = z(S, 3)  # top_k, min_frames, seed
        self.bias = z(S, base.V + 1, dtype=f32)
        self.out = z(S, 1 + base.ncb)  # this step's semantic token (eos = V) and frame codes, per row
        self._rows = [self.tok, self.vq, self.pos, self.frame, self.active, self.first, self.x_first, self.hidden,
                      self.history, self.hist_count, self.fopts, self.iopts, self.bias]
        self._fast_topk = torch.full((S,), base._fast_width, dtype=L, device=dev)
        self._ar_h = torch.arange(HISTORY, device=dev)
        self._ar4 = torch.arange(4, device=dev)
        self._ar_ctx = torch.arange(C, device=dev)
        self.use_graphs = (base.use_graphs if cuda_graphs is None else bool(cuda_graphs)) and dev.type == "cuda"
        self.ops = RowOps(base.ops.compiled if compile is None else bool(compile))
        self.compile_error: str | None = None
        self._graphs: dict[tuple[Any, ...], Any] = {}
        self._pool: Any = None
        # prefills from static buffers (rows and start position as data): CUDA graphs where steps are
        self.static_prefill = self.use_graphs if static_prefill is None else bool(static_prefill)
        self.prefill_graph_error: str | None = None  # why prefill graphs were given up (eager from then on)
        self.static_prefills = 0  # pieces of rows prefilled from the static buffers
        self._pf_x: Tensor | None = None  # (PREFILL_ROWS, PREFILL_TOKENS[-1], dim), allocated at first use
        self._pf_rows, self._pf_begin = z(PREFILL_ROWS), z(1)
        self._ar_rows = torch.arange(S, device=dev)
        self._prefixes: OrderedDict[str, list[Tensor]] = OrderedDict()
        self._max_prefixes = max(0, int(prefix_cache))
        self.prefix_hits = 0
        self.prefix_misses = 0

    @staticmethod
    def slot_bytes(base: DualARRunner) -> int:
        """Device memory one row needs (its slow KV cache dominates)."""
        t, f = base.cfg.text, base.cfg.fast
        esz = torch.tensor([], dtype=base.slow_dtype).element_size()
        slow = 2 * t.n_layer * t.n_local_heads * base.max_context * t.head_dim * esz
        fast = 2 * f.n_layer * f.n_local_heads * base.ncb * f.head_dim * esz
        return slow + fast + (base.V + 1) * 4 + 2 * t.dim * esz + 1024

    # ------------------------------------------------------------------ joining and leaving
    @torch.no_grad()
    def start(self, row0: int, prompts: list[RowPrompt]) -> list[int]:
        """Rows ``row0, row0 + 1, ...`` start ``prompts``: each row's cache gets its prompt but the
        last token (which the next step feeds), from the prefix cache where it can, the rest as
        one padded forward per run of rows that start at the same position. Returns the prompt
        tokens computed per row. The rows' embeddings, cached-prefix copies and state are written
        for all of them at once (a few device calls per admission, none waiting for the GPU)."""
        b = self.base
        for p in prompts:
            T = int(p.ids.shape[0])
            if T < 2 or T > b.max_context:
                raise ValueError(f"prompt of {T} tokens does not fit the context ({b.max_context})")
        xs = self._embeddings(prompts)
        begins, computed = [], []
        hits: dict[str, tuple[list[Tensor], int, list[int]]] = {}  # key -> (its K/V, length, rows)
        for i, (p, x) in enumerate(zip(prompts, xs, strict=True)):
            begin, done = self._prefix(row0 + i, p, x, hits), 0
            if begin < 0:  # a new prefix: computed in this row once, then cached for the others
                begin = done = p.prefix_len
            begins.append(begin)
            computed.append(int(x.shape[0]) - 1 - begin + done)
        for kv, n, rows in hits.values():  # cached prefixes: one copy per layer for each run of rows
            i = 0
            while i < len(rows):
                j = i + 1
                while j < len(rows) and rows[j] == rows[j - 1] + 1:
                    j += 1
                for cache, stored in zip(self.slow_cache, kv, strict=True):
                    dst = cache[:, rows[i]:rows[j - 1] + 1, :, :n]
                    dst.copy_(stored.unsqueeze(1).expand_as(dst))
                i = j
        i = 0
        while i < len(prompts):  # runs of consecutive rows with one start position
            j = i
            while j < len(prompts) and begins[j] == begins[i]:
                j += 1
            self._prefill(row0 + i, [x[begins[i]:x.shape[0] - 1] for x in xs[i:j]], begins[i])
            i = j
        self._reset(row0, prompts, xs)
        return computed

    def _h2d(self, t: Tensor) -> Tensor:
        return host_to_device(t, self.device)

    def _embeddings(self, prompts: list[RowPrompt]) -> list[Tensor]:
        """``DualARRunner.prompt_embeddings`` of every prompt, computed together: (T_i, dim) each."""
        b = self.base
        x = b.slow.embeddings(self._h2d(torch.cat([p.ids for p in prompts])))
        where, codes, off = [], [], 0
        for p in prompts:
            if p.vq_codes is not None and p.vq_codes.numel():
                where.append(torch.nonzero(p.vq_mask).squeeze(1) + off)  # host tensors: no device sync
                codes.append(p.vq_codes)
            off += int(p.ids.shape[0])
        if codes:
            at = self._h2d(torch.cat(where))
            cb = b.fast.codebook_embeddings(self._h2d(torch.cat(codes, dim=1)).long().T + b.cb_offsets).sum(1)
            x[at] = (x[at] + cb.to(x.dtype)) * b.vq_scale
        return list(x.split([int(p.ids.shape[0]) for p in prompts]))

    def _prefix(self, row: int, p: RowPrompt, x: Tensor, hits: dict[str, tuple[list[Tensor], int, list[int]]]) -> int:
        """``p``'s cached voice prefix for ``row``: its length, the row added to ``hits`` (copied
        by the caller); 0 when the prompt has no usable prefix; -1 when it was not cached and has
        just been computed in this row (and cached)."""
        key, n = p.prefix_key, p.prefix_len
        if key is None or self._max_prefixes == 0 or not 0 < n < int(p.ids.shape[0]) - 1:
            return 0
        kv = self._prefixes.get(key)
        if kv is not None:
            self._prefixes.move_to_end(key)
            hits.setdefault(key, (kv, n, []))[2].append(row)  # the K/V held: an eviction now cannot lose it
            self.prefix_hits += 1
            return n
        self.prefix_misses += 1
        self._prefill(row, [x[:n]], 0)
        self._prefixes[key] = [c[:, row, :, :n].clone() for c in self.slow_cache]
        while len(self._prefixes) > self._max_prefixes:
            self._prefixes.popitem(last=False)
        return -1

    def _prefill(self, row0: int, parts: list[Tensor], begin: int) -> None:
        """Positions ``begin...`` of rows ``row0...`` from embeddings ``parts`` (right-padded to one
        length: a padded position of a row is rewritten by that row's own step before it attends
        to it)."""
        n = max((int(x.shape[0]) for x in parts), default=0)
        if n == 0:
            return
        b = self.base
        shape = self._static_shape(n, begin) if self.static_prefill and self.prefill_graph_error is None else None
        if shape is not None:
            tb, span = shape
            i = 0
            while i < len(parts):  # pieces of 16, 8, 4, 2, 1 rows
                r = min(PREFILL_ROWS, pow2_floor(len(parts) - i))
                if not self._prefill_piece(row0 + i, parts[i:i + r], begin, tb, span):
                    break
                i += r
            else:
                return
            row0, parts = row0 + i, parts[i:]
        x = torch.zeros(len(parts), n, parts[0].shape[-1], dtype=parts[0].dtype, device=self.device)
        for i, part in enumerate(parts):
            x[i, :part.shape[0]] = part
        end = begin + n
        pos = torch.arange(begin, end, device=self.device)
        mask = self._ar_ctx[:end][None, :] <= pos[:, None]
        layers: Any = b.slow.layers
        run_layers(layers, [c[:, row0:row0 + len(parts)] for c in self.slow_cache], x, b.rope_slow[begin:end], pos,
                   end, mask, b.slow.norm.weight, b.cfg.text.norm_eps, EAGER)

    def _static_shape(self, n: int, begin: int) -> tuple[int, int] | None:
        """(padded length, attention span) of a static prefill of ``n`` tokens from ``begin``; None
        when the part is longer than the longest padded length or would run past the context."""
        tb = bucket(n, list(PREFILL_TOKENS))
        if n > tb or begin + tb > self.base.max_context:
            return None
        return tb, bucket(begin + tb, self.spans)

    def _prefill_piece(self, row0: int, parts: list[Tensor], begin: int, tb: int, span: int) -> bool:
        """Rows ``row0 ... row0 + len(parts) - 1`` prefilled from the static buffers (on CUDA, a
        graph per (rows, padded length, span)); False when a capture failed (eager from then on)."""
        r = len(parts)
        if self._pf_x is None:
            self._pf_x = torch.zeros(PREFILL_ROWS, PREFILL_TOKENS[-1], parts[0].shape[-1], dtype=parts[0].dtype,
                                     device=self.device)
        x = self._pf_x[:r, :tb]
        x.zero_()
        for j, part in enumerate(parts):
            x[j, :part.shape[0]] = part
        self._pf_rows[:r].copy_(self._ar_rows[row0:row0 + r])
        self._pf_begin.fill_(begin)
        self.static_prefills += 1
        if not self.use_graphs:
            self._prefill_rows(r, tb, span)
            return True
        key = ("prefill", r, tb, span)
        try:
            g = self._graph(key, functools.partial(self._prefill_rows, r, tb, span))
        except Exception as exc:  # noqa: BLE001 - prefill eagerly from now on; decoding is unaffected
            self.prefill_graph_error = f"{type(exc).__name__}: {exc}"[:300]
            logging.getLogger("voxbox.engines").warning(
                "fish-s2 batching: prefill CUDA graph capture failed, prefilling eagerly: %s", self.prefill_graph_error)
            return False
        g.replay()
        return True

    def _prefill_rows(self, r: int, tb: int, span: int) -> None:
        """The prefill of ``r`` rows (``_pf_rows``) from ``_pf_x[:r, :tb]`` at positions
        ``_pf_begin + 0 ... tb - 1``, graph-safe: which rows and where they start are data. Per
        layer, the rows' caches up to ``span`` are gathered, written by the layer and put back."""
        b, px = self.base, self._pf_x
        assert px is not None  # allocated by _prefill_piece
        rows = self._pf_rows[:r]
        pos = self._pf_begin + self._ar_ctx[:tb]
        mask = self._ar_ctx[:span][None, :] <= pos[:, None]
        cs = b.rope_slow.index_select(0, pos)
        x, d = px[:r, :tb], None
        layers: list[Any] = list(b.slow.layers)
        for layer, cache in zip(layers, self.slow_cache, strict=True):
            view = cache[:, :, :, :span]
            rows_kv = view.index_select(1, rows)
            x, d = layer(x, d, cs, pos, rows_kv, span, mask, EAGER)
            view.index_copy_(1, rows, rows_kv)

    def warm_prefill(self, rows: int, tokens: int, begin: int) -> bool:
        """Capture the prefill graph of ``rows`` rows, ``tokens`` tokens after position ``begin``
        (idle-time warm-up: free rows 0..rows-1 take zeros). False where graphs are not used or
        the shape is not one of them."""
        if not (self.use_graphs and self.static_prefill and self.prefill_graph_error is None) or rows > PREFILL_ROWS:
            return False
        shape = self._static_shape(tokens, begin)
        if shape is None or ("prefill", rows, *shape) in self._graphs:
            return False
        tb, span = shape
        zero = torch.zeros(tokens, self.base.cfg.text.dim, dtype=self.base.slow_dtype, device=self.device)
        return self._prefill_piece(0, [zero] * rows, begin, tb, span)

    def _reset(self, row0: int, prompts: list[RowPrompt], xs: list[Tensor]) -> None:
        """The per-row state of rows ``row0 ...`` (one write per field for all of them)."""
        b = self.base
        k = len(prompts)
        rows = slice(row0, row0 + k)
        self.x_first[rows] = torch.stack([x[-1] for x in xs])
        self.first[rows] = True
        self.active[rows] = True
        for t in (self.frame, self.hist_count, self.tok, self.vq, self.history):
            t[rows] = 0
        self.pos[rows] = self._h2d(torch.tensor([int(x.shape[0]) - 1 for x in xs], dtype=torch.long))
        self.fopts[rows] = self._h2d(torch.tensor([[float(p.opts[n]) for n in OPTION_NAMES] for p in prompts],
                                                  dtype=torch.float32))
        self.iopts[rows] = self._h2d(torch.tensor([[min(int(p.top_k), b._width), int(p.min_frames), int(p.seed)]
                                                   for p in prompts], dtype=torch.long))
        bias = torch.zeros(k, b.V + 1, dtype=torch.float32)
        for i, p in enumerate(prompts):
            for idx, val in p.bias.items():
                bias[i, idx] = float(val)
        self.bias[rows] = self._h2d(bias)

    @torch.no_grad()
    def move(self, src: int, dst: int, length: int) -> None:
        """Row ``src`` takes row ``dst``'s place (its first ``length`` cache positions copied)."""
        for t in self._rows:
            t[dst] = t[src]
        for c in self.slow_cache:
            c[:, dst, :, :length] = c[:, src, :, :length]
        self.release(src)

    def release(self, row: int) -> None:
        self.active[row] = False
        self.first[row] = False
        self.pos[row] = 0

    # ------------------------------------------------------------------ one frame for every row
    @torch.no_grad()
    def step(self, n: int, need: int) -> Tensor:
        """One frame for rows 0..n-1, whose largest position to write is ``need - 1``; returns
        ``out[:n]`` on the host: per row the semantic token (``V`` = end) and the frame's codes."""
        B = bucket(n, self.sizes)
        span = bucket(need, self.spans)
        if span < need:
            raise ValueError(f"context {need} exceeds the cache ({self.base.max_context})")
        if self.use_graphs:
            self._graph(("slow", B, span), lambda: self._slow_step(B, span)).replay()
            self._graph(("fast", B, 0), lambda: self._fast_loop(B)).replay()
        else:
            self._slow_step(B, span)
            self._fast_loop(B)
        return self.out[:n].cpu()

    def _slow_step(self, B: int, span: int) -> None:
        b, tc = self.base, self.base.cfg.text
        H, G, D = tc.n_head, tc.n_local_heads, tc.head_dim
        emb = b.slow.embeddings(self.tok[:B] + b.cfg.semantic_start_token_id)
        cb = b.fast.codebook_embeddings(self.vq[:B] + b.cb_offsets).sum(1).to(emb.dtype)
        x = torch.where(self.first[:B, None], self.x_first[:B], (emb + cb) * b.vq_scale).view(B, 1, -1)
        pos = self.pos[:B]
        cs = b.rope_slow.index_select(0, pos)
        mask = torch.zeros(B, span, dtype=b.slow_dtype, device=self.device).masked_fill(
            self._ar_ctx[:span][None, :] > pos[:, None], float("-inf")).view(B, 1, 1, span)
        idx = pos.view(1, B, 1, 1, 1).expand(2, B, G, 1, D)
        ops, eps = self.ops, tc.norm_eps
        d: Tensor | None = None
        layers: list[Any] = list(b.slow.layers)
        for layer, cache in zip(layers, self.slow_cache, strict=True):
            att = layer.attention
            if d is None:
                n = ops.rms(x, layer.attention_norm.weight, eps)
            else:
                x, n = ops.add_rms(x, d, layer.attention_norm.weight, eps)
            q, kv = ops.qkv_prep(att.wqkv(n), att.qk_weight(), cs, att.eps, H, G, D)
            c = cache[:, :B]
            c.scatter_(3, idx, kv)
            y = F.scaled_dot_product_attention(q.reshape(B, G, H // G, D), c[0, :, :, :span], c[1, :, :, :span],
                                               attn_mask=mask)
            h, n = ops.add_rms(x, att.wo(y.reshape(B, 1, H * D)), layer.ffn_norm.weight, eps)
            x, d = h, layer.feed_forward(n, ops)
        assert d is not None
        h = ops.add_rms(x, d, b.slow.norm.weight, eps)[1]
        self.pos[:B].add_(self.active[:B].long())
        self._select(h[:, 0], B)

    def _select(self, h: Tensor, B: int) -> None:
        """Head + sampler per row (``DualARRunner._select`` on B rows)."""
        b = self.base
        fo, io, frame = self.fopts[:B], self.iopts[:B], self.frame[:B]
        logits = F.linear(h, b.head).float() + self.bias[:B]
        ban = torch.where(frame < io[:, 1], float("-inf"), 0.0)
        logits[:, b.eos:].add_(ban[:, None])
        hc, hist = self.hist_count[:B], self.history[:B]
        valid = self._ar_h[None, :] < hc[:, None]
        scores = logits.gather(1, hist)
        rp = fo[:, 2:3]
        pen = torch.where(scores < 0, scores * rp, scores / rp)
        logits = logits.scatter(1, hist, torch.where(valid, pen, scores))
        last = hist.gather(1, (hc[:, None] - 1 - self._ar4[None, :]) % HISTORY)
        srt = torch.sort(last, dim=1).values
        dup = (srt[:, 1:] == srt[:, :-1]).any(1) & (hc >= 4)
        t0 = fo[:, 0]
        temp = torch.where(t0 > 0, torch.where(dup, fo[:, 3], t0), t0)
        top_p = torch.where(dup, fo[:, 4], fo[:, 1])
        tok = self.ops.sample(logits, temp, top_p, io[:, 0], hashed_noise(io[:, 2], frame, 0, b._width))
        self.tok[:B] = tok
        self.hidden[:B] = h
        hist.scatter_(1, (hc % HISTORY)[:, None], tok[:, None])
        hc.add_(1)
        self.out[:B, 0] = tok

    def _fast_loop(self, B: int) -> None:
        b = self.base
        f, fc = b.fast, b.cfg.fast
        layers: Any = f.layers
        x = f.project_in(self.hidden[:B].to(b.fast_dtype)).view(B, 1, -1)
        tok = self.tok[:B]
        caches = [c[:, :B] for c in self.fast_cache]
        fo, seed, frame = self.fopts[:B], self.iopts[:B, 2], self.frame[:B]
        codes = []
        ops = self.ops.shared()
        for i in range(b.ncb):
            n = run_layers(layers, caches, x, b.rope_fast[i:i + 1], b._fast_pos[i], b.ncb, b._fast_masks[i],
                           f.norm.weight, fc.norm_eps, ops)
            if i == 0:
                code = torch.where(tok >= b.V, torch.zeros_like(tok), tok)  # the end token -> code 0
            else:
                logits = f.output(n).view(B, -1).float()
                noise = hashed_noise(seed, frame, i, b._fast_width)
                code = self.ops.sample(logits, fo[:, 5], fo[:, 6], self._fast_topk[:B], noise)
            codes.append(code)
            if i + 1 < b.ncb:
                x = f.embeddings(code).view(B, 1, -1)
        frame_codes = torch.stack(codes, 1)
        self.vq[:B] = frame_codes
        self.out[:B, 1:] = frame_codes
        self.frame[:B].add_(1)
        self.first[:B] = False

    # ------------------------------------------------------------------ CUDA graphs
    def _graph(self, key: tuple[Any, ...], fn: Callable[[], None]) -> Any:
        g = self._graphs.get(key)
        if g is not None:
            return g
        # The graphs mutate row state: warm-up runs write it, so it is saved and restored (cache
        # entries they write sit at or after each row's position and are rewritten before use).
        saved = [t.clone() for t in (*self._rows, self.out)]
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
            logging.getLogger("voxbox.engines").warning(
                "fish-s2 batching: compiled ops failed, eager ops from now on: %s", self.compile_error)
            self.ops = RowOps(False)
            with torch.cuda.stream(stream):
                for _ in range(2):
                    fn()
        torch.cuda.current_stream(self.device).wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        # thread_local: callers' threads may use the GPU meanwhile (voice encoding), which is no error
        with torch.cuda.graph(g, pool=self._pool, capture_error_mode="thread_local"):
            fn()
        for t, s in zip((*self._rows, self.out), saved, strict=True):
            t.copy_(s)
        self._graphs[key] = g
        return g

    @torch.no_grad()
    def capture_all(self) -> None:
        """Capture every (bucket, span) slow step and every bucket's fast loop now."""
        if not self.use_graphs:
            return
        for B in self.sizes:
            for span in self.spans:
                self._graph(("slow", B, span), functools.partial(self._slow_step, B, span))
            self._graph(("fast", B, 0), functools.partial(self._fast_loop, B))
