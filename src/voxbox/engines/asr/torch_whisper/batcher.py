"""torch-whisper batching across requests: continuous batching of 30-s windows on static slots.

The engine's per-request loop (seek, previous-text conditioning, temperature fallback, segments,
word timestamps) stays in the caller's thread; each window it needs decoded becomes a
:class:`WindowRequest` for the runtime's :class:`~voxbox.runtime.batching.Scheduler`, and
:class:`WindowBatcher` (run by the scheduler thread) decodes the windows of every request in
flight together::

    admit(windows)   encoder pass over all joining windows at once; cross-attention K/V written into
                     free slots; the prompts prefilled (grouped by prompt length); first token chosen
    step()           one decoder step for every occupied slot, each at its own position (per-row
                     positions, per-row logit rules: timestamps on or off, suppress-blank), greedy
                     argmax on the device; a sampled window (temperature fallback) draws from its
                     own generator over its ``best_of`` slots, as the unbatched decoder does
    drop(handle)     frees the window's slots at once (finished, or its caller left)

A window joins at the next decoder step, whatever the others' positions (on a GPU: within 8
steps, so that windows arriving one by one share encoder passes; at once when an eighth of the
slots are waiting); a finished window leaves at the step where its end is seen (checked every
step on the CPU, every 4 on a GPU, like the unbatched loop). On CUDA a step is a CUDA graph per
(occupied-slot bucket: 1, 2, 4 ..., attended-length bucket of 64, greedy/sampling), captured on
first use in thread-local mode so callers keep using the GPU meanwhile.

Greedy windows give the unbatched engine's tokens (the same rules and arithmetic per row; the
prompt prefill runs per prompt length). Beam search stays on the unbatched decoder: a beam window
is decoded whole inside the scheduler thread, the other windows pausing meanwhile (so are
sampled windows when too few slots are free for their ``best_of`` candidates). When a GPU step
with a faster single-stream path exists (the Triton or compiled batch-1 step) and one window is
alone with nothing waiting, it takes that path; windows arriving meanwhile join after it.
"""

from __future__ import annotations

import heapq
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from voxbox.engines.asr.torch_whisper.decoding import KV_BUCKET, Runner, capture_graph
from voxbox.engines.asr.torch_whisper.model import KVCache
from voxbox.engines.asr.torch_whisper.rules import RowRules, Rules, RuleTensors, apply_rules
from voxbox.engines.asr.whisper.segments import DecodeResult

__all__ = ["WindowBatcher", "WindowRequest", "WindowResult"]

#: Rows prefilled in one decoder call when their slots are scattered (its scratch cache holds their
#: cross-attention K/V, copied into the slots after); slots in one run are written in place, up to
#: PREFILL_ROWS_DIRECT rows a call (scratch: the prompt's self-attention K/V only).
PREFILL_ROWS = 16
PREFILL_ROWS_DIRECT = 64


@dataclass
class WindowRequest:
    """One window to decode: its log-mel (``mel``, (n_mels, 3000)) or, for a re-decode at the next
    temperature, its encoder output (``enc``, (1, source, d))."""

    prompt: list[int]
    rules: Rules
    max_new: int
    mel: torch.Tensor | None = None
    enc: torch.Tensor | None = None
    temperature: float = 0.0
    best_of: int = 1
    beam_size: int = 1
    patience: float = 1.0
    length_penalty: float | None = None
    generator: torch.Generator | None = None


@dataclass
class WindowResult:
    result: DecodeResult
    enc: torch.Tensor  # (1, source, d): for word alignment and fallback re-decodes


@dataclass(eq=False)
class _Seq:
    req: WindowRequest
    enc: torch.Tensor
    slots: list[int] = field(default_factory=list)
    steps: int = 0  # tokens chosen so far (the prefill's included)
    no_speech: list[float] | None = None
    done: WindowResult | None = None  # decoded whole (beam, solo fast path): emitted at the next step

    @property
    def start(self) -> int:
        return len(self.req.prompt)

    @property
    def sampled(self) -> bool:
        return self.req.temperature > 0


def _contiguous(rows: list[int]) -> bool:
    return rows == list(range(rows[0], rows[0] + len(rows)))


def _bucket(n: int, cap: int) -> int:
    b = 1
    while b < n:
        b *= 2
    return min(b, cap)


class WindowBatcher:
    """The scheduler's :class:`~voxbox.runtime.batching.Batcher` for torch-whisper windows.

    ``lock`` serialises the :class:`Runner`'s own (stateful) calls with the engine's caller
    threads (language detection, word alignment)."""

    def __init__(self, runner: Runner, max_batch: int, lock: threading.Lock) -> None:
        self.runner = runner
        self.model = runner.model
        self.tok = runner.tok
        self.lock = lock
        self.max_batch = max(1, int(max_batch))
        s, dev, v = self.max_batch, runner.device, runner.vocab
        self.max_len = runner.max_len
        self.cache = self.model.new_cache(s, self.max_len)
        self.tokens = torch.zeros(s, self.max_len, dtype=torch.long, device=dev)
        self.pos = torch.zeros(s, dtype=torch.long, device=dev)
        self.begin = torch.zeros(s, dtype=torch.long, device=dev)
        self.sum_lp = torch.zeros(s, dtype=torch.float32, device=dev)
        self.logits = torch.zeros(s, v, dtype=torch.float32, device=dev)
        self.active = torch.zeros(s, dtype=torch.bool, device=dev)
        self.rules = RowRules(s, self.tok, v, dev)
        self._rule_cache: dict[Rules, RuleTensors] = {}
        self._free = list(range(s))
        self._seqs: list[_Seq] = []
        self._graphs: dict[tuple[Any, ...], torch.cuda.CUDAGraph] = {}
        self._pool: Any = None
        self.check_every = runner.check_every
        # on a GPU an admission (an encoder pass) costs several decoder steps: gather arrivals (the
        # scheduler admits every join_every steps, or at once when an eighth of the slots wait)
        self.join_every = 8 if dev.type == "cuda" else 1
        cuda = dev.type == "cuda"
        # the end check reads each row's last token: copied into pinned memory and waited for on an
        # event, which releases the GIL (a blocking .tolist() would hold it while the GPU catches up,
        # stalling every request thread of the server meanwhile)
        self._host_last = torch.zeros(s, dtype=torch.long, pin_memory=cuda)
        self._ready = torch.cuda.Event() if cuda else None
        self.solo_fast = runner.kstep is not None or (runner.fast is not None and runner.fast.compiled)
        self.solo_windows = 0  # windows decoded alone on the single-stream path
        self.steps = 0
        self.admits = 0  # admit() calls (each: one encoder pass over its new windows, prefills)
        self.admit_s = 0.0  # host seconds in admit() / step() (a GPU step is synchronised every few)
        self.step_s = 0.0
        self.rows_stepped = 0  # slot rows computed over all steps (occupied rows + bucket padding)
        # GPU seconds of admissions' encoder passes and prefills (CUDA events, read once complete)
        self.encode_gpu_s = 0.0
        self.prefill_gpu_s = 0.0
        self._admit_events: list[tuple[torch.cuda.Event, torch.cuda.Event, torch.cuda.Event]] = []
        self._events_lock = threading.Lock()  # stats() harvests from the metrics thread too

    def stats(self) -> dict[str, Any]:
        self._harvest_events()
        return {"admits": self.admits, "admit_s": round(self.admit_s, 3), "steps": self.steps,
                "step_s": round(self.step_s, 3), "rows_stepped": self.rows_stepped,
                "solo_windows": self.solo_windows, "graphs": len(self._graphs),
                "encode_gpu_s": round(self.encode_gpu_s, 3), "prefill_gpu_s": round(self.prefill_gpu_s, 3)}

    def _harvest_events(self) -> None:
        """Add the GPU time of admissions whose work has completed (no wait)."""
        with self._events_lock:
            keep = []
            for a, b, c in self._admit_events:
                if c.query():
                    self.encode_gpu_s += a.elapsed_time(b) / 1000
                    self.prefill_gpu_s += b.elapsed_time(c) / 1000
                else:
                    keep.append((a, b, c))
            self._admit_events = keep

    # -- admission --------------------------------------------------------------------------------------
    def admit(self, requests: list[WindowRequest]) -> list[_Seq]:
        t0 = time.perf_counter()
        try:
            return self._admit(requests)
        finally:
            self.admits += 1
            self.admit_s += time.perf_counter() - t0

    def _admit(self, requests: list[WindowRequest]) -> list[_Seq]:
        events = None
        if self.runner.device.type == "cuda":
            self._harvest_events()
            events = (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True),
                      torch.cuda.Event(enable_timing=True))
            events[0].record()
        with torch.inference_mode():
            encs = self._encode(requests)
            if events is not None:
                events[1].record()
            for r in requests:  # as the unbatched decoder: the prompt leaves room (decoder_prompt sees to it)
                r.max_new = max(1, min(r.max_new, self.max_len - len(r.prompt)))
            seqs = [_Seq(r, e) for r, e in zip(requests, encs, strict=True)]
            slotted: list[_Seq] = []
            free = len(self._free)
            for q in seqs:
                need = max(1, q.req.best_of) if q.sampled else 1
                if (q.req.beam_size > 1 and not q.sampled) or need > free:
                    q.done = self._whole(q)  # beam search, or a sampled window without room
                else:
                    free -= need
                    slotted.append(q)
            if (self.solo_fast and len(slotted) == 1 and not self._seqs and not slotted[0].sampled
                    and len(requests) == 1):
                slotted[0].done = self._whole(slotted[0])
                self.solo_windows += 1
                slotted = []
            if slotted:
                self._prefill(slotted)
            self._seqs.extend(seqs)
        if events is not None:
            events[2].record()
            with self._events_lock:
                self._admit_events.append(events)
        return seqs

    def _encode(self, requests: list[WindowRequest]) -> list[torch.Tensor]:
        todo = [i for i, r in enumerate(requests) if r.enc is None]
        out: list[torch.Tensor | None] = [r.enc for r in requests]
        if todo:
            mels = torch.stack([requests[i].mel for i in todo])  # type: ignore[misc]
            enc = self.runner.encode(mels)
            for j, i in enumerate(todo):
                out[i] = enc[j : j + 1]
        return out  # type: ignore[return-value]

    def _whole(self, q: _Seq) -> WindowResult:
        """The unbatched decoder for one window (beam search; no room; the solo fast path)."""
        r = q.req
        with self.lock:
            res = self.runner.decode(q.enc, r.prompt, r.rules, r.max_new, temperature=r.temperature,
                                     beam_size=r.beam_size, best_of=r.best_of, patience=r.patience,
                                     length_penalty=r.length_penalty, generator=r.generator)[0]
        return WindowResult(res, q.enc)

    def _rule_tensors(self, rules: Rules) -> RuleTensors:
        rt = self._rule_cache.get(rules)
        if rt is None:
            rt = self._rule_cache[rules] = RuleTensors(rules, self.tok, self.runner.vocab, self.runner.device)
        return rt

    def _prefill(self, seqs: list[_Seq]) -> None:
        """Slots for each window (``best_of`` for a sampled one), cross K/V, prompt prefill per
        prompt length, and each window's first token."""
        dev = self.runner.device
        for q in seqs:
            n = max(1, q.req.best_of) if q.sampled else 1
            q.slots = [heapq.heappop(self._free) for _ in range(n)]
            rt = self._rule_tensors(q.req.rules)
            for s in q.slots:
                self.rules.set(s, rt)
        by_len: dict[int, list[_Seq]] = {}
        for q in seqs:
            by_len.setdefault(q.start, []).append(q)
        chunks: list[tuple[int, list[_Seq]]] = []
        for n, same in by_len.items():  # same prompt length together, in chunks of bounded scratch memory
            same.sort(key=lambda q: q.slots[0])
            rows = [s for q in same for s in q.slots]
            cap = PREFILL_ROWS_DIRECT if _contiguous(rows) else PREFILL_ROWS
            chunk: list[_Seq] = []
            for q in same:
                if chunk and sum(len(c.slots) for c in chunk) + len(q.slots) > cap:
                    chunks.append((n, chunk))
                    chunk = []
                chunk.append(q)
            chunks.append((n, chunk))
        for n, group in chunks:
            rows = [s for q in group for s in q.slots]
            idx = torch.tensor(rows, device=dev)
            enc = torch.cat([q.enc.expand(len(q.slots), -1, -1) for q in group])
            direct = _contiguous(rows)
            if direct:  # cross-attention K/V written straight into the slots
                a, b = rows[0], rows[-1] + 1
                tmp = KVCache(self.model.new_self_kv(len(rows), n), self.cache.cross_k[:, a:b],
                              self.cache.cross_v[:, a:b])
            else:
                tmp = self.model.new_cache(len(rows), n)
            self.model.set_cross(tmp, enc)
            prompts = torch.tensor([q.req.prompt for q in group for _ in q.slots], device=dev)
            h = self.model.decoder(prompts, 0, tmp, n)
            self.cache.self_kv[:, :, idx, :, :n] = tmp.self_kv
            if not direct:
                self.cache.cross_k[:, idx] = tmp.cross_k
                self.cache.cross_v[:, idx] = tmp.cross_v
            self.tokens[idx] = 0
            self.tokens[idx, :n] = prompts
            self.pos[idx] = n - 1
            self.begin[idx] = n
            self.sum_lp[idx] = 0
            sot = torch.tensor([q.req.prompt.index(self.tok.sot) for q in group for _ in q.slots], device=dev)
            ar = torch.arange(len(rows), device=dev)
            picked = torch.stack((h[ar, sot], h[:, -1]), dim=1)  # (rows, 2, d), as the unbatched prefill
            raw = self.model.logits(picked)
            raw_sot, raw_last = raw[:, 0], raw[:, 1]
            rules = self.rules.select(idx, any(q.req.rules.timestamps for q in group))
            lg = apply_rules(self.tokens[idx], self.pos[idx], self.begin[idx], raw_last, rules)
            nxt = self._pick(lg, group, rows)
            self._advance(idx, lg, nxt, self.tokens[idx], self.pos[idx])
            ns = raw_sot.softmax(-1)[:, self.tok.no_speech].tolist() if self.tok.no_speech is not None else None
            i = 0
            for q in group:
                q.no_speech = ns[i : i + len(q.slots)] if ns is not None else None
                q.steps = 1
                i += len(q.slots)
            self.active[idx] = True

    # -- per-step pieces ------------------------------------------------------------------------------
    def _pick(self, lg: torch.Tensor, seqs: list[_Seq], rows: list[int]) -> torch.Tensor:
        """Next tokens for ``lg``'s rows (laid out as ``rows``): argmax; a sampled window's rows
        drawn together from its generator (as the unbatched sampler draws them)."""
        nxt = lg.argmax(-1)
        if any(q.sampled for q in seqs):
            where = {s: i for i, s in enumerate(rows)}
            for q in seqs:
                if q.sampled and q.slots and q.done is None:
                    ix = torch.tensor([where[s] for s in q.slots], device=lg.device)
                    probs = F.softmax(lg.index_select(0, ix) / q.req.temperature, dim=-1)
                    nxt[ix] = torch.multinomial(probs, 1, generator=q.req.generator).squeeze(1)
        return nxt

    def _advance(self, idx: torch.Tensor | slice, lg: torch.Tensor, nxt: torch.Tensor, tokens: torch.Tensor,
                 pos: torch.Tensor) -> None:
        """The unbatched ``_advance`` per row, for rows ``idx`` whose history/positions are
        ``tokens``/``pos`` (copies or views): a finished row keeps <|endoftext|> and its score."""
        eot = self.tok.eot
        lp = F.log_softmax(lg, dim=-1).gather(1, nxt[:, None]).squeeze(1)
        done = tokens.gather(1, pos[:, None]).squeeze(1) == eot
        self.sum_lp[idx] += torch.where(done, torch.zeros_like(lp), lp)
        nxt = torch.where(done, torch.full_like(nxt, eot), nxt)
        self.pos[idx] = pos + 1
        self.tokens[idx] = tokens.scatter(1, (pos + 1)[:, None], nxt[:, None])

    def _step_fn(self, hi: int, kv_len: int, greedy: bool, ts: bool) -> None:
        tokens, pos = self.tokens[:hi], self.pos[:hi]
        h = self.model.decoder(tokens.gather(1, pos[:, None]), pos, self.cache.rows(hi), kv_len, per_row=True)
        lg = apply_rules(tokens, pos, self.begin[:hi], self.model.logits(h[:, -1]), self.rules.select(slice(0, hi), ts))
        if greedy:
            self._masked_advance(hi, lg, lg.argmax(-1))
        else:
            self.logits[:hi].copy_(lg)

    def _run(self, hi: int, kv_len: int, greedy: bool, ts: bool) -> None:
        if not self.runner.use_graphs:
            self._step_fn(hi, kv_len, greedy, ts)
            return
        key = (hi, kv_len, greedy, ts)
        g = self._graphs.get(key)
        if g is None:
            if self._pool is None:
                self._pool = torch.cuda.graph_pool_handle()
            g = self._graphs[key] = capture_graph(lambda: self._step_fn(hi, kv_len, greedy, ts),
                                                  (self.pos, self.sum_lp, self.tokens), self._pool,
                                                  mode="thread_local")
        g.replay()

    # -- the scheduler's step -------------------------------------------------------------------------
    def step(self) -> list[tuple[Any, list[WindowResult], bool]]:
        t0 = time.perf_counter()
        try:
            return self._step()
        finally:
            self.step_s += time.perf_counter() - t0

    def _step(self) -> list[tuple[Any, list[WindowResult], bool]]:
        out: list[tuple[Any, list[WindowResult], bool]] = []
        for q in self._seqs:
            if q.done is not None:
                out.append((q, [q.done], True))
        live = [q for q in self._seqs if q.done is None and q.slots]
        if not live:
            return out
        with torch.inference_mode():
            finished = [q for q in live if q.steps >= q.req.max_new]
            running = [q for q in live if q.steps < q.req.max_new]
            if running:
                occupied = max(s for q in running for s in q.slots) + 1
                hi = _bucket(occupied, self.max_batch) if self.runner.use_graphs else occupied
                top = max(q.start - 1 + q.steps for q in running)  # the highest position written
                kv_len = min(self.max_len, (top // KV_BUCKET + 1) * KV_BUCKET)
                greedy = not any(q.sampled for q in running)
                self._run(hi, kv_len, greedy, any(q.req.rules.timestamps for q in running))
                if not greedy:
                    lg = self.logits[:hi]
                    rows = list(range(hi))
                    self._masked_advance(hi, lg, self._pick(lg, running, rows))
                self.steps += 1
                self.rows_stepped += hi
                for q in running:
                    q.steps += 1
                if self.steps % self.check_every == 0 or any(q.steps >= q.req.max_new for q in running):
                    last = self._last_tokens(hi)
                    eot = self.tok.eot
                    finished += [q for q in running
                                 if q.steps >= q.req.max_new or all(last[s] == eot for s in q.slots)]
            for q in finished:
                out.append((q, [self._collect(q)], True))
        return out

    def _last_tokens(self, hi: int) -> list[int]:
        last = self.tokens[:hi].gather(1, self.pos[:hi, None]).squeeze(1)
        if self._ready is None:
            return last.tolist()
        self._host_last[:hi].copy_(last, non_blocking=True)
        self._ready.record()
        self._ready.synchronize()
        return self._host_last[:hi].tolist()

    def _masked_advance(self, hi: int, lg: torch.Tensor, nxt: torch.Tensor) -> None:
        """The unbatched ``_advance`` for rows ``:hi`` (graph-safe): a finished row keeps
        <|endoftext|> and its score; a free row keeps its position (its token there is junk,
        rewritten when the slot is taken)."""
        act = self.active[:hi]
        tokens, pos = self.tokens[:hi], self.pos[:hi]
        eot = self.tok.eot
        lp = F.log_softmax(lg, dim=-1).gather(1, nxt[:, None]).squeeze(1)
        done = tokens.gather(1, pos[:, None]).squeeze(1) == eot
        self.sum_lp[:hi].add_(torch.where(done | ~act, torch.zeros_like(lp), lp))
        nxt = torch.where(done, torch.full_like(nxt, eot), nxt)
        new = pos + act.long()
        tokens.scatter_(1, new[:, None], nxt[:, None])
        pos.copy_(new)

    def _collect(self, q: _Seq) -> WindowResult:
        eot = self.tok.eot
        end = q.start + q.steps  # one past the last chosen token
        rows = self.tokens[q.slots, q.start : end].tolist()
        sums = self.sum_lp[q.slots].tolist()
        cands = []
        for i, row in enumerate(rows):
            if eot in row:
                row = row[: row.index(eot)]
            cands.append(DecodeResult(row, sums[i], q.no_speech[i] if q.no_speech else None, q.req.temperature))
        best = max(cands, key=lambda r: r.sum_logprob / (len(r.tokens) + 1)) if len(cands) > 1 else cands[0]
        return WindowResult(best, q.enc)

    def drop(self, handle: Any) -> None:
        q: _Seq = handle
        if q in self._seqs:
            self._seqs.remove(q)
        if q.slots:
            self.active[q.slots] = False
            for s in q.slots:
                heapq.heappush(self._free, s)
            q.slots = []
