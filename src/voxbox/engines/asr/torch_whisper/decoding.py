"""Batched Whisper decoding on static buffers: greedy (one CUDA graph per step), sampling and beam
search, with the reference logit rules (suppress tokens, suppress blank at the start, timestamp
pairing, monotonic timestamps, max initial timestamp, timestamp-probability rule).

Every rule is a fixed-shape tensor operation driven by device-side state (token history, the
current position, the first sampled position), so the whole greedy step — decoder, rules, argmax,
log-probability accumulation, writing the next token — is captured once per (batch, attended
length) and replayed. Sampling and beam search replay a graph of decoder + rules and choose tokens
eagerly.

With graphs on, the encoder runs as CUDA graphs too, one per power-of-two batch up to
``ENCODER_GRAPH_MAX`` windows (a batch of 37 replays the graphs of 32, 4 and 1): an encoder pass
is then a few launches instead of ~700, so it keeps the GPU busy even when other threads of the
process hold the GIL (a server's request threads).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F

from voxbox.engines.asr.torch_whisper.beam import BeamSearch
from voxbox.engines.asr.torch_whisper.fast import FastStep
from voxbox.engines.asr.torch_whisper.model import KVCache, Whisper
from voxbox.engines.asr.torch_whisper.rules import Rules, RuleTensors, apply_rules
from voxbox.engines.asr.whisper.segments import DecodeResult
from voxbox.engines.asr.whisper.tokens import WhisperTokenizer
from voxbox.engines.graphs import capture_graph

if TYPE_CHECKING:
    from voxbox.engines.asr.torch_whisper.kernels import KernelStep

__all__ = ["Paused", "Rules", "Runner", "capture_graph"]  # capture_graph from .graphs

log = logging.getLogger(__name__)

#: Self-attention is attended in buckets of this many positions (one graph per bucket).
KV_BUCKET = 64
#: The largest encoder batch captured as one CUDA graph (per-window cost is flat from 8 windows
#: up on an H200: 6.2 ms at 32, 6.1 at 64 for large-v3); larger batches replay it several times.
ENCODER_GRAPH_MAX = 32


@dataclass
class _State:
    cache: KVCache
    tokens: torch.Tensor  # (B, max_len) int64 history: prompt then sampled tokens
    pos: torch.Tensor  # (1,) int64: index of the last written token
    begin: torch.Tensor  # (1,) int64: index of the first sampled token
    sum_lp: torch.Tensor  # (B,) float32
    logits: torch.Tensor  # (B, V) float32: processed logits (sampling / beam mode)
    graphs: dict[tuple[Any, ...], torch.cuda.CUDAGraph] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return self.tokens.shape[0]


@dataclass
class Paused:
    """A single-window greedy decode stopped part-way by its ``pause`` callback: the runner's state
    for batch 1 (valid until the runner's next call) with ``cur`` the index of the last written
    token (chosen, not yet run through the decoder), so that the caller can carry on elsewhere."""

    state: _State
    cur: int
    no_speech: list[float] | None


class Runner:
    """Owns decode buffers and graphs for one model on one device."""

    def __init__(self, model: Whisper, tokenizer: WhisperTokenizer, use_graphs: bool | None = None,
                 fast: bool | None = None, compile: bool | None = None, compile_options: dict | None = None,
                 self_attn: str = "sdpa", kv_inside: bool = True, kernels: bool | None = None,
                 kernel_configs: dict | None = None, kernel_splits: tuple[int, int] | None = None):
        """``fast``: single-token steps through :class:`FastStep` (default: on CUDA once
        ``fuse_for_decoding()`` ran); ``compile``: torch.compile those steps (default: when
        :func:`compile_available`), falling back to eager if compilation fails. ``kernels``: batch-1
        steps through the Triton :class:`~voxbox.engines.asr.torch_whisper.kernels.KernelStep`
        (default: where :func:`~voxbox.engines.asr.torch_whisper.kernels.kernels_preferred` says it
        is faster, NVIDIA compute capability 9.0+, and the decoder is fused; off elsewhere); on a
        GPU it is checked against the eager step at load and dropped (``kernel_error`` says why,
        logged) if it fails or disagrees."""
        self.model = model
        self.tok = tokenizer
        p = model.decoder.embed_tokens.weight
        self.device = p.device
        self.dtype = p.dtype
        self.vocab = model.dims.vocab_size
        self.max_len = model.dims.max_target_positions
        if use_graphs is None:
            use_graphs = self.device.type == "cuda"
        self.use_graphs = use_graphs
        self._states: dict[int, _State] = {}
        self._rules: dict[Rules, RuleTensors] = {}
        self._pool: Any = None
        # encoder graphs: batch -> (graph, static input, its output); replays serialised by the lock
        self._enc_graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor]] = {}
        self._enc_pool: Any = None
        self._enc_lock = threading.Lock()
        self.encoder_graph_error: str | None = None  # why the encoder runs eagerly after a failed capture
        self.capture_seconds = 0.0  # total CUDA graph capture time (warm-up, compilation excluded), for reporting
        self.check_every = 4 if self.device.type == "cuda" else 1
        fused = all(layer.fused_qkv is not None and layer.fused_cross_q is not None for layer in model.decoder.blocks)
        if fast is None:
            fast = self.device.type == "cuda" and fused
        self.fast = FastStep(model, compile=compile, options=compile_options, self_attn=self_attn,
                                  kv_inside=kv_inside) if fast else None
        self._tails: dict[str, Callable[..., None]] = {}
        self._tail_seen: set[tuple[Any, ...]] = set()
        self._tail_failed: str | None = None  # why the compiled logits/rules tail fell back to eager
        self.kstep: KernelStep | None = None
        self.kernel_error: str | None = None  # why the Triton step is not used (when it was asked for)
        self.kernel_check: float | None = None  # its relative logit error against the eager step at load
        self.kernel_seconds = 0.0  # building + checking it (first start: Triton compilation)
        asked = kernels
        if kernels is None:
            from voxbox.engines.asr.torch_whisper.kernels import kernels_preferred

            kernels = fused and kernels_preferred(self.device)
        if kernels:
            self._load_kernels(kernel_configs, kernel_splits, asked=asked is not None)

    def _load_kernels(self, configs: dict | None, splits: tuple[int, int] | None, asked: bool = True) -> None:
        from voxbox.engines.asr.torch_whisper.kernels import load_kernel_step

        t0 = time.perf_counter()
        self.kstep, self.kernel_check, self.kernel_error = load_kernel_step(self.model, configs, splits)
        if self.kernel_error is not None:
            say = log.warning if asked else log.info  # by default (not asked for) a missing Triton is no news
            say("Triton decode step unavailable, using the %s step: %s",
                "compiled" if self.fast is not None and self.fast.compiled else "eager", self.kernel_error)
        self.kernel_seconds = time.perf_counter() - t0

    @property
    def compile_seconds(self) -> float:
        """Time spent compiling the decode step (first calls of the compiled functions), for reporting."""
        return self.fast.compile_seconds if self.fast is not None else 0.0

    # ----------------------------------------------------------------- buffers
    def clear(self) -> None:
        """Free decode buffers and graphs (they are rebuilt on demand)."""
        self._states.clear()
        self._pool = None
        with self._enc_lock:
            self._enc_graphs.clear()
            self._enc_pool = None
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _state(self, batch: int) -> _State:
        st = self._states.get(batch)
        if st is None:
            dev = self.device
            st = _State(
                cache=self.model.new_cache(batch, self.max_len),
                tokens=torch.zeros(batch, self.max_len, dtype=torch.long, device=dev),
                pos=torch.zeros(1, dtype=torch.long, device=dev),
                begin=torch.zeros(1, dtype=torch.long, device=dev),
                sum_lp=torch.zeros(batch, dtype=torch.float32, device=dev),
                logits=torch.zeros(batch, self.vocab, dtype=torch.float32, device=dev),
            )
            self._states[batch] = st
        return st

    def _rule_tensors(self, rules: Rules) -> RuleTensors:
        rt = self._rules.get(rules)
        if rt is None:
            rt = self._rules[rules] = RuleTensors(rules, self.tok, self.vocab, self.device)
        return rt

    # ----------------------------------------------------------------- encoder
    def encode(self, mel: torch.Tensor) -> torch.Tensor:
        """Encoder output (B, source, d) for log-mel ``mel`` (B, n_mels, frames)."""
        mel = mel.to(self.device, self.dtype)
        full = 2 * self.model.dims.max_source_positions
        if (not self.use_graphs or self.encoder_graph_error is not None or mel.shape[-1] != full
                or not torch.is_inference_mode_enabled()):
            return self.model.encoder(mel)
        b = mel.shape[0]
        out = torch.empty(b, self.model.dims.max_source_positions, self.model.dims.d_model, device=self.device,
                          dtype=self.dtype)
        with self._enc_lock:
            i = 0
            while i < b:
                n = min(ENCODER_GRAPH_MAX, 1 << ((b - i).bit_length() - 1))
                entry = self._encoder_graph(n, mel)
                if entry is None:
                    return self.model.encoder(mel)
                g, x, y = entry
                x.copy_(mel[i : i + n])
                g.replay()
                out[i : i + n].copy_(y)  # before the next replay: the graphs share one memory pool
                i += n
        return out

    def _encoder_graph(self, n: int, like: torch.Tensor
                       ) -> tuple[torch.cuda.CUDAGraph, torch.Tensor, torch.Tensor] | None:
        entry = self._enc_graphs.get(n)
        if entry is not None:
            return entry
        x = torch.zeros((n, *like.shape[1:]), device=self.device, dtype=self.dtype)
        held: list[torch.Tensor] = []

        def run() -> None:
            held[:] = [self.model.encoder(x)]

        t0 = time.perf_counter()
        try:
            if self._enc_pool is None:
                self._enc_pool = torch.cuda.graph_pool_handle()
            g = capture_graph(run, (), self._enc_pool, mode="thread_local")
        except Exception as exc:  # noqa: BLE001 - a backend that cannot be captured: eager from now on
            self.encoder_graph_error = f"{type(exc).__name__}: {exc}"
            log.warning("encoder CUDA graph capture failed, running the encoder eagerly: %s",
                        self.encoder_graph_error)
            return None
        self.capture_seconds += time.perf_counter() - t0
        entry = self._enc_graphs[n] = (g, x, held[0])
        return entry

    def detect_language(self, enc: torch.Tensor) -> list[dict[str, float]]:
        """Language probabilities per row from the ``<|startoftranscript|>`` logits."""
        if not self.tok.multilingual:
            return [{"en": 1.0} for _ in range(enc.shape[0])]
        st = self._state(enc.shape[0])
        self.model.set_cross(st.cache, enc)
        sot = torch.full((enc.shape[0], 1), self.tok.sot, dtype=torch.long, device=self.device)
        logits = self.model.logits(self.model.decoder(sot, 0, st.cache, 1)[:, -1])
        codes = list(self.tok.language_ids)
        ids = torch.tensor([self.tok.language_ids[c] for c in codes], device=self.device)
        probs = logits.index_select(1, ids).softmax(-1).cpu().tolist()
        return [dict(zip(codes, row, strict=True)) for row in probs]

    def alignment_scores(self, enc: torch.Tensor, tokens: list[int], heads: Sequence[tuple[int, int]]
                         ) -> tuple[np.ndarray, np.ndarray]:
        """Word-alignment inputs for one window (``enc``: (1, source, d)): the cross-attention scores
        of the ``heads`` ((layer, head) pairs) over ``tokens``, (heads, len(tokens), source), and the
        probability of each next token among the text tokens (0 for special ones), as float32 numpy."""
        n = len(tokens)
        cache = self.model.new_cache(1, n)
        self.model.set_cross(cache, enc)
        scores: dict[int, torch.Tensor] = {layer: torch.empty(0) for layer, _ in heads}
        ids = torch.tensor([tokens], device=self.device)
        hidden = self.model.decoder(ids, 0, cache, n, cross_scores=scores)
        logits = self.model.logits(hidden[0, :-1])[:, : self.tok.eot]
        nxt = ids[0, 1:]
        probs = logits.softmax(-1).gather(1, nxt.clamp(max=self.tok.eot - 1)[:, None]).squeeze(1)
        probs = torch.where(nxt < self.tok.eot, probs, torch.zeros_like(probs))
        picked = torch.stack([scores[layer][0, head] for layer, head in heads])
        return picked.cpu().numpy(), probs.float().cpu().numpy()

    # ----------------------------------------------------------------- per-step pieces (graph-safe)
    def _advance(self, st: _State, logits: torch.Tensor, nxt: torch.Tensor) -> None:
        """Accumulate log-probs of ``nxt`` (B,) and append it; finished rows keep <|endoftext|>."""
        eot = self.tok.eot
        lp = F.log_softmax(logits, dim=-1).gather(1, nxt[:, None]).squeeze(1)
        done = st.tokens.index_select(1, st.pos).squeeze(1) == eot
        st.sum_lp.add_(torch.where(done, torch.zeros_like(lp), lp))
        nxt = torch.where(done, torch.full_like(nxt, eot), nxt)
        st.pos.add_(1)
        st.tokens.index_copy_(1, st.pos, nxt[:, None])

    def _forward_step(self, st: _State, kv_len: int, rt: RuleTensors) -> torch.Tensor:
        tok = st.tokens.index_select(1, st.pos)
        h = self.model.decoder(tok, st.pos, st.cache, kv_len)
        return apply_rules(st.tokens, st.pos, st.begin, self.model.logits(h[:, -1]), rt)

    def _greedy_tail(self, st: _State, h: torch.Tensor, rt: RuleTensors) -> None:
        logits = apply_rules(st.tokens, st.pos, st.begin, self.model.logits(h[:, -1]), rt)
        self._advance(st, logits, logits.argmax(-1))

    def _logits_tail(self, st: _State, h: torch.Tensor, rt: RuleTensors) -> None:
        st.logits.copy_(apply_rules(st.tokens, st.pos, st.begin, self.model.logits(h[:, -1]), rt))

    def _greedy_rules(self, st: _State, raw: torch.Tensor, rt: RuleTensors) -> None:
        logits = apply_rules(st.tokens, st.pos, st.begin, raw, rt)
        self._advance(st, logits, logits.argmax(-1))

    def _logits_rules(self, st: _State, raw: torch.Tensor, rt: RuleTensors) -> None:
        st.logits.copy_(apply_rules(st.tokens, st.pos, st.begin, raw, rt))

    def _uses_kernels(self, st: _State) -> bool:
        return self.kstep is not None and st.batch == 1

    def _fast_step(self, st: _State, kv_len: int, rt: RuleTensors, kind: str) -> None:
        """FastStep decoder, then logits + rules (+ argmax and append), compiled alongside it; at
        batch 1 with the Triton step: its logits, then the rules (+ argmax and append), compiled
        when the FastStep is."""
        fast = self.fast
        eager: Callable[[_State, torch.Tensor, RuleTensors], None]
        if self.kstep is not None and st.batch == 1:
            h = self.kstep(st.tokens, st.pos, st.cache, kv_len)
            eager = self._greedy_rules if kind == "greedy" else self._logits_rules
            kind += "_k"
        else:
            assert fast is not None
            h = fast(st.tokens.index_select(1, st.pos), st.pos, st.cache, kv_len)
            eager = self._greedy_tail if kind == "greedy" else self._logits_tail
        if fast is None or not fast.compiled or self._tail_failed:
            eager(st, h, rt)
            return
        fn = self._tails.get(kind)
        if fn is None:
            fn = self._tails[kind] = torch.compile(eager, fullgraph=True, options=fast.options or None)
        key = (kind, st.batch, kv_len, rt.rules)
        if key in self._tail_seen:
            fn(st, h, rt)
            return
        t0 = time.perf_counter()
        try:  # compiles: nothing is written before the compiled code runs
            fn(st, h, rt)
            if h.is_cuda:
                torch.cuda.synchronize()
        except Exception as exc:  # noqa: BLE001 - stay eager
            self._tail_failed = f"{type(exc).__name__}: {exc}"[:500]
            eager(st, h, rt)
            return
        fast.compile_seconds += time.perf_counter() - t0
        self._tail_seen.add(key)

    def _greedy_step(self, st: _State, kv_len: int, rt: RuleTensors) -> None:
        if self.fast is not None or self._uses_kernels(st):
            return self._fast_step(st, kv_len, rt, "greedy")
        logits = self._forward_step(st, kv_len, rt)
        self._advance(st, logits, logits.argmax(-1))

    def _logits_step(self, st: _State, kv_len: int, rt: RuleTensors) -> None:
        if self.fast is not None or self._uses_kernels(st):
            return self._fast_step(st, kv_len, rt, "logits")
        st.logits.copy_(self._forward_step(st, kv_len, rt))

    def _run(self, st: _State, kind: str, cur: int, rt: RuleTensors) -> None:
        """One decode step with the current token at index ``cur`` (== st.pos)."""
        kv_len = min(self.max_len, (cur // KV_BUCKET + 1) * KV_BUCKET)
        fn = self._greedy_step if kind == "greedy" else self._logits_step
        if not self.use_graphs:
            fn(st, kv_len, rt)
            return
        key = (kind, kv_len, rt.rules)
        g = st.graphs.get(key)
        if g is None:
            g = self._capture(st, lambda: fn(st, kv_len, rt))
            st.graphs[key] = g
        g.replay()

    def _capture(self, st: _State, fn) -> torch.cuda.CUDAGraph:
        t0 = time.perf_counter()
        c0 = self.compile_seconds
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        # thread-local: with batching across requests other threads use the GPU meanwhile
        g = capture_graph(fn, (st.pos, st.sum_lp, st.tokens), self._pool, mode="thread_local")
        self.capture_seconds += time.perf_counter() - t0 - (self.compile_seconds - c0)  # compilation counted apart
        return g

    # ----------------------------------------------------------------- decode
    def _prefill(self, st: _State, prompt: list[int], rt: RuleTensors) -> tuple[torch.Tensor, list[float] | None]:
        """Write the prompt, run it through the decoder; return (processed last logits, no-speech probs)."""
        n = len(prompt)
        st.tokens.zero_()
        st.tokens[:, :n] = torch.tensor(prompt, device=self.device)
        st.pos.fill_(n - 1)
        st.begin.fill_(n)
        st.sum_lp.zero_()
        h = self.model.decoder(st.tokens[:, :n], 0, st.cache, n)
        sot_i = prompt.index(self.tok.sot)
        raw = self.model.logits(h[:, [sot_i, n - 1]])  # (B, 2, V)
        no_speech = None
        if self.tok.no_speech is not None:
            no_speech = raw[:, 0].softmax(-1)[:, self.tok.no_speech].tolist()
        return apply_rules(st.tokens, st.pos, st.begin, raw[:, 1], rt), no_speech

    def decode(
        self,
        enc: torch.Tensor,
        prompt: list[int],
        rules: Rules,
        max_new_tokens: int,
        temperature: float = 0.0,
        beam_size: int = 1,
        best_of: int = 1,
        patience: float = 1.0,
        length_penalty: float | None = None,
        generator: torch.Generator | None = None,
    ) -> list[DecodeResult]:
        """Decode every row of encoder output ``enc`` (B, 1500, d) after the same ``prompt``."""
        max_new_tokens = self._room(prompt, max_new_tokens)
        rt = self._rule_tensors(rules)
        if temperature > 0:
            n = max(best_of, 1)
            return self._sample(enc, prompt, rt, max_new_tokens, temperature, n, generator)
        if beam_size > 1:
            return self._beam(enc, prompt, rt, max_new_tokens, beam_size, patience, length_penalty)
        return self._greedy(enc, prompt, rt, max_new_tokens)

    def greedy_or_pause(self, enc: torch.Tensor, prompt: list[int], rules: Rules, max_new_tokens: int,
                        pause: Callable[[], bool]) -> list[DecodeResult] | Paused:
        """:meth:`decode` for one window, greedy; ``pause()`` is asked at each end-of-text check
        (every ``check_every`` tokens) and, when true, the decode stops there and its state is
        returned (the batcher moves it into a slot when other windows arrive)."""
        return self._greedy(enc, prompt, self._rule_tensors(rules), self._room(prompt, max_new_tokens), pause)

    def _room(self, prompt: list[int], max_new_tokens: int) -> int:
        """``max_new_tokens`` within the context after ``prompt`` (an error if none is left)."""
        n = min(max_new_tokens, self.max_len - len(prompt))
        if n < 1:
            raise ValueError("prompt leaves no room to decode")
        return n

    def _collect(self, st: _State, start: int, end: int, no_speech, temperature: float) -> list[DecodeResult]:
        rows = st.tokens[:, start : end + 1].tolist()
        sums = st.sum_lp.tolist()
        out = []
        for i, row in enumerate(rows):
            if self.tok.eot in row:
                row = row[: row.index(self.tok.eot)]
            out.append(DecodeResult(row, sums[i], no_speech[i] if no_speech else None, temperature))
        return out

    def _greedy(self, enc, prompt, rt, max_new, pause: Callable[[], bool] | None = None) -> Any:
        st = self._state(enc.shape[0])
        self.model.set_cross(st.cache, enc)
        logits, no_speech = self._prefill(st, prompt, rt)
        self._advance(st, logits, logits.argmax(-1))
        cur = len(prompt)  # index of the last written token, mirrored on the host
        eot = self.tok.eot
        for i in range(1, max_new):
            if i % self.check_every == 0:
                if bool((st.tokens[:, cur] == eot).all()):
                    break
                if pause is not None and pause():
                    return Paused(st, cur, no_speech)
            self._run(st, "greedy", cur, rt)
            cur += 1
        return self._collect(st, len(prompt), cur, no_speech, 0.0)

    def _sample(self, enc, prompt, rt, max_new, temperature, n, generator) -> list[DecodeResult]:
        b = enc.shape[0]
        rows = enc.repeat_interleave(n, dim=0) if n > 1 else enc
        st = self._state(rows.shape[0])
        self.model.set_cross(st.cache, rows)
        logits, no_speech = self._prefill(st, prompt, rt)
        eot = self.tok.eot

        def pick(lg: torch.Tensor) -> torch.Tensor:
            probs = F.softmax(lg / temperature, dim=-1)
            return torch.multinomial(probs, 1, generator=generator).squeeze(1)

        self._advance(st, logits, pick(logits))
        cur = len(prompt)
        for _ in range(1, max_new):
            if bool((st.tokens[:, cur] == eot).all()):
                break
            self._run(st, "logits", cur, rt)
            self._advance(st, st.logits, pick(st.logits))
            cur += 1
        cands = self._collect(st, len(prompt), cur, no_speech, temperature)
        out = []
        for i in range(b):
            group = cands[i * n : (i + 1) * n]
            out.append(max(group, key=lambda r: r.sum_logprob / (len(r.tokens) + 1)))
        return out

    def _beam(self, enc: torch.Tensor, prompt: list[int], rt: RuleTensors, max_new: int, beam: int,
              patience: float, length_penalty: float | None) -> list[DecodeResult]:
        """Beam search like the reference (openai-whisper's BeamSearchDecoder)."""
        b = enc.shape[0]
        st = self._state(b * beam)
        self.model.set_cross(st.cache, enc.repeat_interleave(beam, dim=0))
        logits, no_speech = self._prefill(st, prompt, rt)
        n0 = len(prompt)
        search = BeamSearch(b, beam, max(1, round(beam * patience)), prompt, self.tok.eot)
        for step in range(max_new):
            if step > 0:
                self._run(st, "logits", n0 + step - 1, rt)
                logits = st.logits
            top_lp, top_id = F.log_softmax(logits, dim=-1).topk(beam + 1, dim=-1)
            source = search.step(top_lp.tolist(), top_id.tolist())
            if search.finished or step == max_new - 1:
                break
            st.cache.reorder(torch.tensor(source, device=self.device))
            cur = n0 + step  # index of the token just chosen
            st.tokens[:, : cur + 1] = torch.tensor([s[: cur + 1] for s in search.seqs], device=self.device)
            st.pos.fill_(cur)
        return [DecodeResult(toks, s, no_speech[i * beam] if no_speech else None, 0.0)
                for i, (toks, s) in enumerate(search.best(n0, length_penalty))]
