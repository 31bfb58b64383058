"""VoxCPM2's autoregressive loop (upstream ``VoxCPM2Model._inference``) over upstream's modules.

Per step: the local DiT turns the two language models' states into one patch of ``patch_size``
latent frames by flow matching (``timesteps`` Euler steps with classifier-free guidance, upstream's
``solve_euler``); the local encoder embeds the patch; the stop head reads the base LM's state; the
base LM (then the scalar quantizer) and the residual LM each take one KV-cached step.

Two ways to run it, same math, same random draws (one Gaussian patch per step from a
``torch.Generator`` seeded per call, in upstream's order):

* eager (CPU, or ``cuda_graphs=False``): the stop flag is read every step, as upstream does;
* CUDA graph (GPU): the whole step, positions included, is captured once and replayed; the stop
  flags stay on the device and are read every ``check_every`` steps, so the GPU never waits for the
  host. Steps run past a stop are discarded: the patches kept are exactly the eager loop's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
import torch.nn.functional as F

from ._model import Net

__all__ = ["GenParams", "Prompt", "Runner"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GenParams:
    timesteps: int = 10
    cfg_value: float = 2.0
    min_len: int = 2
    max_len: int = 4096


@dataclass(frozen=True)
class Prompt:
    tokens: torch.Tensor  # (T,) long
    text_mask: torch.Tensor  # (T,) float 0/1
    feats: torch.Tensor  # (T, patch, feat_dim) float32
    feat_mask: torch.Tensor  # (T,) float 0/1


@dataclass
class _State:
    lm_hidden: torch.Tensor
    res_hidden: torch.Tensor
    prefix: torch.Tensor  # (1, patch, dim): the last patch (the DiT's condition)
    pos_b: torch.Tensor  # (1,) long: the base LM's next cache position
    pos_r: torch.Tensor


class Runner:
    def __init__(self, net: Net, device: torch.device, lm_dtype: torch.dtype, dit_dtype: torch.dtype, *,
                 max_length: int = 8192, cuda_graphs: bool = True, check_every: int = 4, compile: bool = False) -> None:
        self.net, self.device = net, device
        self.lm_dtype, self.dit_dtype = lm_dtype, dit_dtype
        self.max_length = int(max_length)
        self.patch, self.dim = net.patch_size, net.feat_dim
        net.base_lm.setup_cache(1, self.max_length, device, lm_dtype)
        net.residual_lm.setup_cache(1, self.max_length, device, lm_dtype)
        self.use_graphs = bool(cuda_graphs) and device.type == "cuda"
        self.check_every = max(1, int(check_every))
        self.graph_error: str | None = None
        self._graph: dict[tuple[int, float], Any] = {}
        self.compiled = bool(compile) and device.type == "cuda"
        self._encoder: Any = net.feat_encoder  # the step's (one patch); the prefill keeps the module
        if self.compiled:  # Inductor-fused kernels, then captured in the step's CUDA graph
            net.feat_decoder.estimator = torch.compile(net.feat_decoder.estimator, fullgraph=True, dynamic=False)
            self._encoder = torch.compile(net.feat_encoder, fullgraph=True, dynamic=False)
            net.base_lm.forward_step = torch.compile(net.base_lm.forward_step, fullgraph=True, dynamic=False)
            net.residual_lm.forward_step = torch.compile(net.residual_lm.forward_step, fullgraph=True, dynamic=False)

    # ------------------------------------------------------------------ pieces
    def _patch(self, lm_hidden: torch.Tensor, res_hidden: torch.Tensor, prefix: torch.Tensor, z: torch.Tensor,
               p: GenParams) -> torch.Tensor:
        """One patch (1, patch, dim) by flow matching (upstream ``UnifiedCFM.forward``)."""
        net = self.net
        mu = torch.cat((net.lm_to_dit_proj(lm_hidden), net.res_to_dit_proj(res_hidden)), dim=-1).to(self.dit_dtype)
        t_span = torch.linspace(1, 0, p.timesteps + 1, device=self.device, dtype=self.dit_dtype)
        t_span = t_span + 1.0 * (torch.cos(torch.pi / 2 * t_span) - 1 + t_span)
        x = net.feat_decoder.solve_euler(x=z, t_span=t_span, mu=mu, cond=prefix.transpose(1, 2).contiguous(),
                                         cfg_value=p.cfg_value, use_cfg_zero_star=True)
        return x.transpose(1, 2)

    def _embed(self, patch: torch.Tensor) -> torch.Tensor:
        return self.net.enc_to_lm_proj(self._encoder(patch.to(self.lm_dtype).unsqueeze(1)))[:, 0, :]

    def _stop(self, lm_hidden: torch.Tensor) -> torch.Tensor:
        net = self.net
        return net.stop_head(F.silu(net.stop_proj(lm_hidden))).argmax(dim=-1)

    def _advance(self, s: _State, embed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        net = self.net
        lm = net.fsq_layer(net.base_lm.forward_step(embed, s.pos_b).clone())
        res = net.residual_lm.forward_step(net.fusion_concat_proj(torch.cat((lm, embed), dim=-1)), s.pos_r).clone()
        return lm, res

    def _noise(self, gen: torch.Generator) -> torch.Tensor:
        z = torch.randn((1, self.dim, self.patch), generator=gen, device=gen.device, dtype=self.dit_dtype)
        return (z * 1.0).to(self.device)  # upstream: randn(...) * temperature (1.0)

    # ------------------------------------------------------------------ prefill
    @torch.inference_mode()
    def prefill(self, prompt: Prompt) -> _State:
        net, dt, dev = self.net, self.lm_dtype, self.device
        n = prompt.tokens.shape[0]
        if n >= self.max_length:
            raise ValueError(f"prompt of {n} positions does not fit the {self.max_length}-position cache")
        tokens = prompt.tokens.to(dev)[None]
        tmask = prompt.text_mask.to(dev, dt)[None, :, None]
        fmask = prompt.feat_mask.to(dev, dt)[None, :, None]
        feats = prompt.feats.to(dev, dt)[None]
        feat_embed = net.enc_to_lm_proj(net.feat_encoder(feats))
        text_embed = net.base_lm.embed_tokens(tokens) * net.scale_emb
        out, kv = net.base_lm(inputs_embeds=tmask * text_embed + fmask * feat_embed, is_causal=True)
        net.base_lm.kv_cache.fill_caches(kv)
        out = net.fsq_layer(out) * fmask + out * tmask
        res, rkv = net.residual_lm(inputs_embeds=net.fusion_concat_proj(torch.cat((out, fmask * feat_embed), dim=-1)),
                                   is_causal=True)
        net.residual_lm.kv_cache.fill_caches(rkv)
        pos = torch.tensor([n], dtype=torch.long, device=dev)
        return _State(out[:, -1, :].clone(), res[:, -1, :].clone(), feats[:, -1].to(self.dit_dtype).clone(), pos,
                      pos.clone())

    # ------------------------------------------------------------------ loop
    @torch.inference_mode()
    def run(self, prompt: Prompt, p: GenParams, gen: torch.Generator,
            check: Callable[[], None] | None = None) -> Iterator[torch.Tensor]:
        """Patches (patch, dim) as they are confirmed, until the stop head says so (after
        ``min_len``) or ``max_len`` patches; upstream keeps the patch of the stopping step."""
        max_len = min(p.max_len, self.max_length - prompt.tokens.shape[0] - 1)
        s = self.prefill(prompt)
        if self.use_graphs:
            try:
                yield from self._run_graph(s, p, gen, max_len, check)
                return
            except _GraphFailed as exc:
                log.warning("voxcpm2: CUDA graph capture failed (%s); running eagerly", exc)
                self.graph_error, self.use_graphs = str(exc), False
                s = self.prefill(prompt)
        for i in range(max_len):
            if check is not None:
                check()
            patch = self._patch(s.lm_hidden, s.res_hidden, s.prefix, self._noise(gen), p)
            embed = self._embed(patch)
            stop = int(self._stop(s.lm_hidden)[0].item())
            yield patch[0]
            if i > p.min_len and stop == 1:
                return
            s.prefix = patch
            s.lm_hidden, s.res_hidden = self._advance(s, embed)
            s.pos_b += 1
            s.pos_r += 1

    def _capture(self, s: _State, p: GenParams) -> dict[str, Any]:
        st = {"lm": s.lm_hidden.clone(), "res": s.res_hidden.clone(), "prefix": s.prefix.clone(),
              "pos_b": s.pos_b.clone(), "pos_r": s.pos_r.clone(),
              "z": torch.zeros((1, self.dim, self.patch), device=self.device, dtype=self.dit_dtype)}

        def step() -> None:
            patch = self._patch(st["lm"], st["res"], st["prefix"], st["z"], p)
            embed = self._embed(patch)
            st["stop"] = self._stop(st["lm"])
            st["patch"] = patch
            lm, res = self._advance(_State(st["lm"], st["res"], st["prefix"], st["pos_b"], st["pos_r"]), embed)
            st["lm"].copy_(lm)
            st["res"].copy_(res)
            st["prefix"].copy_(patch)
            st["pos_b"].add_(1)
            st["pos_r"].add_(1)

        saved = {k: v.clone() for k, v in st.items()}
        try:
            graph = self._record(step)
        except Exception as exc:  # noqa: BLE001 - any capture problem: eager fallback
            raise _GraphFailed(f"{type(exc).__name__}: {exc}") from exc
        for k, v in saved.items():  # the warm-up advanced the state (its cache slot is rewritten by the run)
            st[k].copy_(v)
        st["graph"] = graph
        return st

    def _record(self, step: Callable[[], None]) -> Any:
        """Warm ``step`` up on a side stream, then capture it in a CUDA graph."""
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            step()
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step()
        return graph

    def _run_graph(self, s: _State, p: GenParams, gen: torch.Generator, max_len: int,
                   check: Callable[[], None] | None) -> Iterator[torch.Tensor]:
        key = (p.timesteps, p.cfg_value)
        st = self._graph.get(key)
        if st is None:
            st = self._capture(s, p)
            self._graph = {key: st}  # one captured step at a time (its pool holds the activations)
        for name, v in (("lm", s.lm_hidden), ("res", s.res_hidden), ("prefix", s.prefix), ("pos_b", s.pos_b),
                        ("pos_r", s.pos_r)):
            st[name].copy_(v)
        pending: list[tuple[torch.Tensor, torch.Tensor]] = []
        done = 0
        for i in range(max_len):
            st["z"].copy_(self._noise(gen))
            st["graph"].replay()
            pending.append((st["patch"][0].clone(), st["stop"].clone()))
            if len(pending) < self.check_every and i < max_len - 1:
                continue
            if check is not None:
                check()
            flags = torch.cat([f for _, f in pending]).tolist()  # one sync per check_every steps
            for j, (patch, _) in enumerate(pending):
                yield patch
                if done + j > p.min_len and flags[j] == 1:
                    return
            done += len(pending)
            pending = []


class _GraphFailed(RuntimeError):
    pass
