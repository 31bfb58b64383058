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
first use in thread-local mode so callers keep using the GPU meanwhile. While nothing is in flight,
the scheduler calls :meth:`WindowBatcher.warm`, which captures the graphs traffic most likely needs
one per call (``warm.py``), so that a capture, which waits for the whole device, rarely lands
inside a running batch.

Greedy windows give the unbatched engine's tokens (the same rules and arithmetic per row; the
prompt prefill runs per prompt length). Beam search stays on the unbatched decoder: a beam window
is decoded whole inside the scheduler thread, the other windows pausing meanwhile (so are
sampled windows when too few slots are free for their ``best_of`` candidates). When a GPU step
with a faster single-stream path exists (the Triton or compiled batch-1 step) and one window is
alone with nothing waiting, it takes that path; when others arrive meanwhile, it moves into a slot
at its next end-of-text check (its KV cache and tokens copied over) and carries on with them.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from voxbox.engines.asr.torch_whisper.decoding import KV_BUCKET, Paused, Runner
from voxbox.engines.asr.torch_whisper.prefill import PrefillGraphs
from voxbox.engines.asr.torch_whisper.rules import RowRules, Rules, RuleTensors, apply_rules
from voxbox.engines.asr.torch_whisper.warm import IdleWarmup
from voxbox.engines.asr.torch_whisper.windows import WindowRequest, WindowResult, WindowSlot
from voxbox.engines.asr.whisper.segments import DecodeResult
from voxbox.engines.batched import host_to_device, next_pow2
from voxbox.engines.graphs import capture_graph

__all__ = ["WindowBatcher", "WindowRequest", "WindowResult"]

#: Rows prefilled in one decoder call (memory: one layer's cross-attention K/V for these rows).
PREFILL_ROWS = 64
#: Prompts up to this many tokens are prefilled by CUDA graphs (one per length); longer ones (the
#: previous window's text, a long initial prompt), whose lengths vary, eagerly.
PREFILL_GRAPH_MAX_LEN = 16


def _bucket(n: int, cap: int) -> int:
    return min(next_pow2(n), cap)


class WindowBatcher:
    """The scheduler's :class:`~voxbox.runtime.batching.Batcher` for torch-whisper windows.

    ``lock`` serialises the :class:`Runner`'s own (stateful) calls with the engine's caller
    threads (language detection, word alignment)."""

    def __init__(self, runner: Runner, max_batch: int, lock: threading.Lock,
                 warm_prompts: dict[bool, list[int]] | None = None) -> None:
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
        self.no_speech_p = torch.zeros(s, dtype=torch.float32, device=dev)
        self.active = torch.zeros(s, dtype=torch.bool, device=dev)
        self.rules = RowRules(s, self.tok, v, dev)
        self._rule_cache: dict[Rules, RuleTensors] = {}
        self._free = list(range(s))
        self._seqs: list[WindowSlot] = []
        self._graphs: dict[tuple[Any, ...], torch.cuda.CUDAGraph] = {}
        self._pool: Any = None
        d = self.model.dims
        self._prefills = PrefillGraphs(self._prefill_fn, min(PREFILL_ROWS, s), PREFILL_GRAPH_MAX_LEN,
                                       d.max_source_positions, d.d_model, dev, runner.dtype, self._graph_pool)
        self._pf_graphs = self._prefills.graphs
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
        self.solo_windows = 0  # windows started alone on the single-stream path
        self.solo_moved = 0  # of those, moved into a slot part-way (others arrived)
        # set by the runtime's Scheduler: how many requests wait to join (a solo window then moves over)
        self.waiting: Callable[[], int] = lambda: 0
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
        self._warmup = IdleWarmup(self, warm_prompts)  # warm(): graphs captured while idle

    def stats(self) -> dict[str, Any]:
        self._harvest_events()
        return {"admits": self.admits, "admit_s": round(self.admit_s, 3), "steps": self.steps,
                "step_s": round(self.step_s, 3), "rows_stepped": self.rows_stepped,
                "solo_windows": self.solo_windows, "solo_moved": self.solo_moved, "graphs": len(self._graphs),
                "prefill_graphs": len(self._prefills.graphs), "warm_graphs": self._warmup.graphs,
                "warm_s": round(self._warmup.seconds, 3),
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
    def admit(self, requests: list[WindowRequest]) -> list[WindowSlot]:
        t0 = time.perf_counter()
        try:
            return self._admit(requests)
        finally:
            self.admits += 1
            self.admit_s += time.perf_counter() - t0

    def _admit(self, requests: list[WindowRequest]) -> list[WindowSlot]:
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
            seqs = [WindowSlot(r, e) for r, e in zip(requests, encs, strict=True)]
            slotted: list[WindowSlot] = []
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
                slotted[0].done = self._solo(slotted[0])  # None: moved into a slot part-way
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

    @property
    def prefill_graph_error(self) -> str | None:
        """Why the prefill graphs were given up (None: they work or were not needed)."""
        return self._prefills.error

    def _whole(self, q: WindowSlot) -> WindowResult:
        """The unbatched decoder for one window (beam search; a sampled window without room)."""
        r = q.req
        with self.lock:
            res = self.runner.decode(q.enc, r.prompt, r.rules, r.max_new, temperature=r.temperature,
                                     beam_size=r.beam_size, best_of=r.best_of, patience=r.patience,
                                     length_penalty=r.length_penalty, generator=r.generator)[0]
        return WindowResult(res, q.enc)

    def _solo(self, q: WindowSlot) -> WindowResult | None:
        """A window alone decoded on the runner's single-stream path, until it ends or requests
        wait (``waiting()``, asked every few tokens): then its state moves into a slot and it
        carries on in the batch, so that a burst arriving just after it does not wait for the
        whole window (None)."""
        r = q.req
        with self.lock:
            out = self.runner.greedy_or_pause(q.enc, r.prompt, r.rules, r.max_new, lambda: self.waiting() > 0)
            if isinstance(out, Paused):
                self._adopt(q, out)
                return None
        return WindowResult(out[0], q.enc)

    def _adopt(self, q: WindowSlot, p: Paused) -> None:
        """``q``'s single-stream decode state (batch 1) copied into a free slot, active from the next step."""
        st, cur, n = p.state, p.cur, q.start
        slot = heapq.heappop(self._free)
        q.slots = [slot]
        self.rules.set(self._device_ints([slot]), self._rule_tensors(q.req.rules))
        self.cache.self_kv[:, :, slot, :, : cur + 1].copy_(st.cache.self_kv[:, :, 0, :, : cur + 1])
        self.cache.cross_k[:, slot].copy_(st.cache.cross_k[:, 0])
        self.cache.cross_v[:, slot].copy_(st.cache.cross_v[:, 0])
        self.tokens[slot].copy_(st.tokens[0])
        self.pos[slot] = cur
        self.begin[slot] = n
        self.sum_lp[slot].copy_(st.sum_lp[0])
        self.no_speech_p[slot] = p.no_speech[0] if p.no_speech else 0.0
        self.active[slot] = True
        q.steps = cur - n + 1
        self.solo_moved += 1

    def _rule_tensors(self, rules: Rules) -> RuleTensors:
        rt = self._rule_cache.get(rules)
        if rt is None:
            rt = self._rule_cache[rules] = RuleTensors(rules, self.tok, self.runner.vocab, self.runner.device)
        return rt

    def _prefill(self, seqs: list[WindowSlot]) -> None:
        """Slots for each window (``best_of`` for a sampled one), then per prompt length, up to
        PREFILL_ROWS rows a call: cross K/V and the prompt written into the slots, and each
        window's first token. On CUDA a greedy call is a CUDA graph per (power-of-two piece of
        rows, prompt length up to PREFILL_GRAPH_MAX_LEN, timestamps or not)."""
        by_rules: dict[Rules, list[int]] = {}
        for q in seqs:
            n = max(1, q.req.best_of) if q.sampled else 1
            q.slots = [heapq.heappop(self._free) for _ in range(n)]
            by_rules.setdefault(q.req.rules, []).extend(q.slots)
        for rules, rows in by_rules.items():  # usually one set of rules for the whole admission
            self.rules.set(self._device_ints(rows), self._rule_tensors(rules))
        by_len: dict[int, list[WindowSlot]] = {}
        for q in seqs:
            by_len.setdefault(q.start, []).append(q)
        for n, same in by_len.items():
            same.sort(key=lambda q: q.slots[0])
            chunk: list[WindowSlot] = []
            for q in same:
                if chunk and sum(len(c.slots) for c in chunk) + len(q.slots) > PREFILL_ROWS:
                    self._prefill_chunk(n, chunk)
                    chunk = []
                chunk.append(q)
            self._prefill_chunk(n, chunk)

    def _prefill_chunk(self, n: int, group: list[WindowSlot]) -> None:
        ts = any(q.req.rules.timestamps for q in group)
        for q in group:
            q.steps = 1
        if self.runner.use_graphs and self._prefills.takes(n) and not any(q.sampled for q in group):
            i = 0
            while i < len(group):  # one slot per greedy window: pieces of 32, 16 ... 1 windows
                r = 1 << ((len(group) - i).bit_length() - 1)
                piece = group[i : i + r]
                if not self._prefills.run(self._prefill_ints(piece), [q.enc for q in piece], n, ts):
                    break
                i += r
            group = group[i:]
            if not group:
                return
        rows = [s for q in group for s in q.slots]
        k = len(rows)
        flat = self._device_ints(self._prefill_ints(group))
        idx, sot, prompts = flat[:k], flat[k : 2 * k], flat[2 * k :].view(k, n)
        enc = torch.cat([q.enc.expand(len(q.slots), -1, -1) for q in group])
        greedy = not any(q.sampled for q in group)
        lg = self._prefill_fn(idx, enc, prompts, sot, ts, greedy)
        if not greedy:
            tokens, pos = self.tokens.index_select(0, idx), self.pos.index_select(0, idx)
            self._advance(idx, lg, self._pick(lg, group, rows), tokens, pos)

    def _device_ints(self, values: list[int]) -> torch.Tensor:
        """``values`` as an int64 tensor on the device, without waiting for the GPU."""
        return host_to_device(torch.tensor(values, dtype=torch.long), self.runner.device)

    def _prefill_fn(self, idx: torch.Tensor, enc: torch.Tensor, prompts: torch.Tensor, sot: torch.Tensor,
                    ts: bool, greedy: bool) -> torch.Tensor:
        """The prefill of rows ``idx`` (graph-safe): cross K/V and the prompts' self K/V into the
        slots, token history and positions set, the rules applied to the logits after the prompt
        (returned) and, when ``greedy``, the first token chosen. The <|nospeech|> probability at
        <|startoftranscript|> is kept per slot, read when the window is collected."""
        n = prompts.shape[1]
        h = self.model.decoder.prefill_rows(prompts, enc, self.cache, idx)
        self.tokens.index_fill_(0, idx, 0)
        self.tokens[:, :n].index_copy_(0, idx, prompts)
        self.pos.index_fill_(0, idx, n - 1)
        self.begin.index_fill_(0, idx, n)
        self.sum_lp.index_fill_(0, idx, 0)
        ar = torch.arange(idx.shape[0], device=idx.device)
        raw = self.model.logits(torch.stack((h[ar, sot], h[:, -1]), dim=1))  # as the unbatched prefill
        if self.tok.no_speech is not None:
            self.no_speech_p.index_copy_(0, idx, raw[:, 0].softmax(-1)[:, self.tok.no_speech])
        tokens, pos = self.tokens.index_select(0, idx), self.pos.index_select(0, idx)
        lg = apply_rules(tokens, pos, self.begin.index_select(0, idx), raw[:, 1], self.rules.select(idx, ts))
        if greedy:
            self._advance(idx, lg, lg.argmax(-1), tokens, pos)
        self.active.index_fill_(0, idx, True)
        return lg

    def _prefill_ints(self, group: list[WindowSlot]) -> list[int]:
        """The prefill's integer inputs, flat: each row's slot, the index of <|startoftranscript|>
        in its prompt, then the prompts (a sampled window's prompt once per candidate slot)."""
        rows = [(s, q) for q in group for s in q.slots]
        return ([s for s, _ in rows] + [q.req.prompt.index(self.tok.sot) for _, q in rows]
                + [t for _, q in rows for t in q.req.prompt])

    def _graph_pool(self) -> Any:
        """The memory pool of the step and prefill graphs (never replayed at the same time)."""
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        return self._pool

    # -- idle-time warm-up (warm.py) -----------------------------------------------------------------
    def warm(self) -> bool:
        """One graph of the idle-time warm-up captured (the runtime's scheduler calls this while no
        window is in flight); True while more are left."""
        return self._warmup.step()

    @property
    def warm_graphs(self) -> int:
        return self._warmup.graphs

    # -- per-step pieces ------------------------------------------------------------------------------
    def _pick(self, lg: torch.Tensor, seqs: list[WindowSlot], rows: list[int]) -> torch.Tensor:
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
            g = self._graphs[key] = capture_graph(lambda: self._step_fn(hi, kv_len, greedy, ts),
                                                  (self.pos, self.sum_lp, self.tokens), self._graph_pool(),
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

    def _collect(self, q: WindowSlot) -> WindowResult:
        eot = self.tok.eot
        end = q.start + q.steps  # one past the last chosen token
        rows = self.tokens[q.slots, q.start : end].tolist()
        sums, no_speech = torch.stack((self.sum_lp[q.slots], self.no_speech_p[q.slots])).tolist()
        has_ns = self.tok.no_speech is not None
        cands = []
        for i, row in enumerate(rows):
            if eot in row:
                row = row[: row.index(eot)]
            cands.append(DecodeResult(row, sums[i], no_speech[i] if has_ns else None, q.req.temperature))
        best = max(cands, key=lambda r: r.sum_logprob / (len(r.tokens) + 1)) if len(cands) > 1 else cands[0]
        return WindowResult(best, q.enc)

    def drop(self, handle: Any) -> None:
        q: WindowSlot = handle
        if q in self._seqs:
            self._seqs.remove(q)
        if q.slots:
            self.active[q.slots] = False
            for s in q.slots:
                heapq.heappush(self._free, s)
            q.slots = []
