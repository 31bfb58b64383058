"""Iterative unmasking (OmniVoice's "diffusion" decoding) with classifier-free guidance.

Upstream ``OmniVoice._generate_iterative``: the target starts as ``frames x codebooks`` MASK
tokens; each of ``steps`` steps runs the network on the conditional sequence (prompt + target) and
the unconditional one (target alone), mixes their log-probabilities with the guidance scale,
predicts a token per masked position (greedy, or Gumbel-sampled over the top 10 % with
``class_temperature``), scores positions by confidence minus a per-codebook penalty plus Gumbel
noise (``position_temperature``), and reveals the best-scoring masked positions — as many as the
shifted time schedule says (``_text.schedule``).

The random draws are upstream's, in upstream's order (one uniform tensor per step for the position
noise, preceded by one for the class noise when that temperature is positive), from a
``torch.Generator`` seeded per call: on the CPU, voxbox and upstream seeded alike reveal the same
tokens. On CUDA the whole loop for one (prompt length, frames, steps) shape is captured in a CUDA
graph (noise drawn into a static buffer before the replay); ``max_graphs`` shapes are kept.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from ._backbone import Backbone
from ._text import schedule

__all__ = ["Prompt", "SampleParams", "Sampler"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SampleParams:
    steps: int = 32
    guidance_scale: float = 2.0
    t_shift: float = 0.1
    layer_penalty_factor: float = 5.0
    position_temperature: float = 5.0
    class_temperature: float = 0.0


@dataclass(frozen=True)
class Prompt:
    ids: torch.Tensor  # (codebooks, prompt + frames) long: the conditional row, target all MASK
    audio_start: int  # first audio position (reference clip or target)
    frames: int  # target length


@dataclass
class _Graph:
    """A captured unmasking loop and its static buffers."""

    row0: torch.Tensor
    row: torch.Tensor
    audio: torch.Tensor
    rope: tuple[torch.Tensor, torch.Tensor]
    tokens: torch.Tensor
    noise: torch.Tensor
    graph: Any = None


def _gumbel(scores: torch.Tensor, temperature: float, u: torch.Tensor) -> torch.Tensor:
    return scores / temperature - torch.log(-torch.log(u + 1e-10) + 1e-10)


class Sampler:
    def __init__(self, model: Backbone, device: torch.device, dtype: torch.dtype, *, cuda_graphs: bool = True,
                 max_graphs: int = 8) -> None:
        self.model = model
        self.device, self.dtype = device, dtype
        self.c = model.c
        self.use_graphs = bool(cuda_graphs) and device.type == "cuda"
        self.max_graphs = max(1, int(max_graphs))
        self._graphs: OrderedDict[tuple[Any, ...], _Graph] = OrderedDict()
        self.graph_error: str | None = None
        self.layer_ids = torch.arange(self.c.codebooks, device=device).view(-1, 1)

    # ------------------------------------------------------------------ one step
    def _step(
        self, row: torch.Tensor, tokens: torch.Tensor, audio: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor],
        n: int, t: int, k: int, p: SampleParams, u_pos: torch.Tensor | None, u_cls: torch.Tensor | None,
    ) -> None:
        """One forward + reveal, in place on ``row`` (packed ids) and ``tokens`` (codebooks, frames)."""
        c = self.c
        h = self.model.hidden(row, audio, rope[0], rope[1], ((0, n), (n, n + t)))
        logits = self.model.logits(h[n - t:n + t])  # (C, 2t, V): conditional target, then unconditional
        cond, uncond = logits[:, :t], logits[:, t:]
        if p.guidance_scale != 0:
            lc = torch.log_softmax(cond, dim=-1)
            lp = torch.log_softmax(lc + p.guidance_scale * (lc - torch.log_softmax(uncond, dim=-1)), dim=-1)
        else:
            lp = torch.log_softmax(cond, dim=-1)
        lp[..., c.mask_id] = -float("inf")
        if p.class_temperature > 0.0 and u_cls is not None:
            kk = -(-lp.shape[-1] // 10)  # ceil(0.1 * V) best classes
            val, ind = lp.topk(kk, dim=-1)
            filtered = torch.full_like(lp, -float("inf")).scatter_(-1, ind, val)
            pred = _gumbel(filtered, p.class_temperature, u_cls).argmax(dim=-1)
        else:
            pred = lp.argmax(dim=-1)
        scores = lp.max(dim=-1)[0] - self.layer_ids * p.layer_penalty_factor
        if p.position_temperature > 0.0 and u_pos is not None:
            scores = _gumbel(scores, p.position_temperature, u_pos)
        scores = scores.masked_fill(tokens != c.mask_id, -float("inf"))
        idx = torch.topk(scores.flatten(), k).indices
        flat = tokens.view(-1)
        flat[idx] = pred.flatten()[idx]
        row[:, n - t:n] = tokens
        row[:, n:] = tokens

    def _inputs(self, prompt: Prompt) -> tuple[torch.Tensor, torch.Tensor, tuple[torch.Tensor, torch.Tensor], int, int]:
        n, t = prompt.ids.shape[1], prompt.frames
        ids = prompt.ids.to(self.device)
        row = torch.cat([ids, ids[:, n - t:]], dim=1)
        pos = torch.cat([torch.arange(n), torch.arange(t)]).to(self.device)
        audio = torch.cat([torch.arange(n) >= prompt.audio_start, torch.ones(t, dtype=torch.bool)]).to(self.device)
        return row, audio, self.model.rope(pos, self.dtype), n, t

    def _noise(self, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
        return torch.rand(shape, generator=gen, device=gen.device, dtype=torch.float32).to(self.device)

    # ------------------------------------------------------------------ public
    @torch.inference_mode()
    def sample(self, prompt: Prompt, p: SampleParams, gen: torch.Generator,
               check: Callable[[], None] | None = None) -> torch.Tensor:
        """Target tokens (codebooks, frames) long, on the model's device."""
        c = self.c
        sched = schedule(prompt.frames, c.codebooks, p.steps, p.t_shift)
        if self.use_graphs and p.class_temperature <= 0.0:
            try:
                return self._sample_graph(prompt, p, gen, sched)
            except Exception as exc:  # noqa: BLE001 - capture problems fall back to eager, reported in info
                log.warning("omnivoice: CUDA graph capture failed (%s); running eagerly", exc)
                self.graph_error = f"{type(exc).__name__}: {exc}"
                self.use_graphs = False
        row, audio, rope, n, t = self._inputs(prompt)
        tokens = torch.full((c.codebooks, t), c.mask_id, dtype=torch.long, device=self.device)
        for k in sched:
            if k <= 0:
                continue
            if check is not None:
                check()
            u_cls = self._noise((c.codebooks, t, c.audio_vocab), gen) if p.class_temperature > 0 else None
            u_pos = self._noise((c.codebooks, t), gen) if p.position_temperature > 0 else None
            self._step(row, tokens, audio, rope, n, t, k, p, u_pos, u_cls)
        return tokens

    def _sample_graph(self, prompt: Prompt, p: SampleParams, gen: torch.Generator, sched: list[int]) -> torch.Tensor:
        c = self.c
        n, t = prompt.ids.shape[1], prompt.frames
        key = (n, t, prompt.audio_start, p)
        active = [k for k in sched if k > 0]
        noise = (torch.stack([self._noise((c.codebooks, t), gen) for _ in active])
                 if p.position_temperature > 0 else None)
        g = self._graphs.get(key)
        if g is None:
            g = self._capture(prompt, p, active)
            self._graphs[key] = g
            while len(self._graphs) > self.max_graphs:
                self._graphs.popitem(last=False)
        else:
            self._graphs.move_to_end(key)
            g.row0.copy_(self._inputs(prompt)[0])  # same shape, this call's prompt tokens
        g.row.copy_(g.row0)
        g.tokens.fill_(c.mask_id)
        if noise is not None:
            g.noise.copy_(noise)
        g.graph.replay()
        return g.tokens.clone()

    def _capture(self, prompt: Prompt, p: SampleParams, active: list[int]) -> _Graph:
        c = self.c
        row0, audio, rope, n, t = self._inputs(prompt)
        st = _Graph(row0=row0, row=row0.clone(), audio=audio, rope=rope,
                    tokens=torch.full((c.codebooks, t), c.mask_id, dtype=torch.long, device=self.device),
                    noise=torch.zeros((max(1, len(active)), c.codebooks, t), device=self.device))

        def loop() -> None:
            for i, k in enumerate(active):
                u = st.noise[i] if p.position_temperature > 0 else None
                self._step(st.row, st.tokens, st.audio, st.rope, n, t, k, p, u, None)

        st.graph = self._record(loop)
        st.row.copy_(st.row0)
        st.tokens.fill_(c.mask_id)
        return st

    def _record(self, loop: Callable[[], None]) -> Any:
        """Warm ``loop`` up on a side stream, then capture it in a CUDA graph (replayed per call)."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            loop()  # warm-up: cuBLAS/cuDNN handles, allocator
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            loop()
        return graph
