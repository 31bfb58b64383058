"""voxbox's Echo-TTS diffusion sampler: a static-shape DiT step over fused upstream weights.

The weights come from the upstream ``EchoDiT`` (loaded by ``_load``); this module re-packs them
once at load time and runs its own forward, numerically the same as ``EchoDiT.forward`` but
shaped for speed:

* q/k/v/gate and w1/w3 projections fused into one matrix product each;
* the text and speaker key/value projections of all 24 layers fused into one product per call,
  written once into per-shape key/value buffers laid out ``[text | speaker | latent]``; each step
  only writes the latent part (upstream concatenates all of it in every layer of every step);
* the timestep conditioning (``cond_module`` and every layer's low-rank AdaLN) depends only on
  the timestep, so it is computed for the whole schedule before the loop and cached per schedule;
* rotary tables and attention masks are built once per shape, on the device;
* all shapes are static per (sequence, text, speaker) bucket, so on CUDA the forward for the
  three guidance branches (batch 3) and for the unguided steps (batch 1) is captured once in a
  CUDA graph and replayed (optionally with the block compiled by ``torch.compile`` first).

The Euler loop with independent text/speaker guidance follows upstream's
``sample_euler_cfg_independent_guidances``: guidance only where ``cfg_min_t <= t <= cfg_max_t``,
``v = v_c + s_text (v_c - v_no_text) + s_speaker (v_c - v_no_speaker)``, optional temporal score
rescaling, initial noise ``randn * truncation_factor`` from a generator seeded on the DiT device.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn.functional as F

from ._upstream import UpstreamModule

#: Inductor options of echo's compiled pieces (Inductor's defaults: the FX-graph cache on). An H200
#: run once saw a second start run its calls 1.7x slower and the cache was turned off; it was not the
#: cache: the GPU work was the same kernel for kernel, the slow parts were host-side, while Inductor's
#: compile-worker pool was still booting after the short warm-up (see ``compile_cache``); 8-15 s later
#: the same calls ran at the first start's speed.
COMPILE_OPTIONS: dict[str, Any] = {}

__all__ = ["DiTRunner", "SamplerParams", "euler_schedule"]

INIT_SCALE = 0.999  # upstream: t runs from 0.999 to 0


@dataclass(frozen=True)
class SamplerParams:
    steps: int
    cfg_scale_text: float
    cfg_scale_speaker: float
    cfg_min_t: float
    cfg_max_t: float
    truncation_factor: float | None
    rescale_k: float | None
    rescale_sigma: float | None
    seed: int


def euler_schedule(steps: int) -> list[float]:
    """Upstream's ``torch.linspace(1, 0, steps + 1) * 0.999`` in float32, as Python floats."""
    return (torch.linspace(1.0, 0.0, steps + 1, dtype=torch.float32) * INIT_SCALE).tolist()


def _rms(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Upstream RMSNorm without the weight, in float32."""
    return F.rms_norm(x.float(), (x.shape[-1],), eps=eps)


def _block(
    h: torch.Tensor,
    w_qkvg: torch.Tensor,
    w_o: torch.Tensor,
    qk_norm: torch.Tensor,
    w_13: torch.Tensor,
    w_2: torch.Tensor,
    mod: torch.Tensor,
    gate: torch.Tensor,
    kbuf: torch.Tensor,
    vbuf: torch.Tensor,
    mask: torch.Tensor,
    rope: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """One upstream ``TransformerBlock`` (AdaLN, joint attention, AdaLN, SwiGLU MLP).

    mod: (2, 2, D) float32 = [attn, mlp] x [shift, scale + 1]; gate: (2, D) tanh'ed gates in the
    model dtype; qk_norm: (2, H, Dh) float32 q/k RMSNorm weights; rope: (S, 1, 1, Dh/2) complex64.
    kbuf/vbuf: (B, Ltot, H, Dh) with the latent's own keys/values at the end.

    q and k are normalised and rotated together, in float32, and rounded to the model dtype once
    (upstream rounds after the norm and again after the rotation).
    """
    bsz, seq, dim = h.shape
    _, heads, hd = qk_norm.shape
    a = torch.addcmul(mod[0, 0], _rms(h, eps), mod[0, 1]).to(h.dtype)
    qkvg = F.linear(a, w_qkvg)
    qk = _rms(qkvg[..., : 2 * dim].unflatten(-1, (2, heads, hd)), eps) * qk_norm  # (B, S, 2, H, Dh) fp32
    h2 = heads // 2  # upstream _apply_rotary_half: rotary on the first half of the heads
    rot = torch.view_as_complex(qk[..., :h2, :].unflatten(-1, (hd // 2, 2))) * rope
    qk[..., :h2, :] = torch.view_as_real(rot).flatten(-2)
    qk = qk.to(h.dtype)
    ctx = kbuf.shape[1] - seq
    kbuf[:, ctx:] = qk[:, :, 1]
    vbuf[:, ctx:] = qkvg[..., 2 * dim: 3 * dim].unflatten(-1, (heads, hd))
    o = F.scaled_dot_product_attention(
        qk[:, :, 0].transpose(1, 2), kbuf.transpose(1, 2), vbuf.transpose(1, 2), attn_mask=mask
    ).transpose(1, 2).reshape(bsz, seq, dim)
    o = F.linear(o * torch.sigmoid(qkvg[..., 3 * dim:]), w_o)
    h = h + gate[0] * o
    a = torch.addcmul(mod[1, 0], _rms(h, eps), mod[1, 1]).to(h.dtype)
    u1, u3 = F.linear(a, w_13).chunk(2, dim=-1)
    h = h + gate[1] * F.linear(F.silu(u1) * u3, w_2)
    return h


class _Shape:
    """Static buffers (and, on CUDA, captured graphs) for one (seq, text, speaker) bucket."""

    def __init__(self, runner: "DiTRunner", seq: int, text_len: int, spk_len: int) -> None:
        dev, dt = runner.device, runner.dtype
        L, H, Dh = runner.num_layers, runner.num_heads, runner.head_dim
        self.seq, self.text_len, self.spk_len = seq, text_len, spk_len
        self.ltot = text_len + spk_len + seq
        self.k = torch.zeros((L, 3, self.ltot, H, Dh), device=dev, dtype=dt)
        self.v = torch.zeros_like(self.k)
        self.mask = torch.zeros((3, 1, 1, self.ltot), device=dev, dtype=dt)
        self.x = torch.zeros((1, seq, runner.latent_size), device=dev, dtype=torch.float32)
        self.mod = torch.zeros((L, 2, 2, runner.model_size), device=dev, dtype=torch.float32)
        self.gate = torch.zeros((L, 2, runner.model_size), device=dev, dtype=dt)
        freqs = 1.0 / (10000.0 ** (torch.arange(0, Dh, 2)[: Dh // 2] / Dh))  # upstream precompute_freqs_cis
        ang = torch.outer(torch.arange(seq), freqs)
        self.rope = torch.complex(torch.cos(ang), torch.sin(ang))[:, None, None, :].to(dev)
        self.out3: torch.Tensor | None = None
        self.out1: torch.Tensor | None = None
        self.graph3: Any = None
        self.graph1: Any = None


class DiTRunner:
    """Owns the fused DiT weights on one device/dtype and runs the Euler sampler."""

    def __init__(
        self,
        model: UpstreamModule,
        get_timestep_embedding: Callable[[torch.Tensor, int], torch.Tensor],
        *,
        device: torch.device,
        dtype: torch.dtype,
        norm_eps: float,
        cuda_graphs: bool = True,
        compile: bool = False,
        max_shapes: int = 4,
    ) -> None:
        self.device, self.dtype, self.eps = device, dtype, norm_eps
        self._tembed = get_timestep_embedding
        blocks = model.blocks
        att0 = blocks[0].attention
        self.num_layers = len(blocks)
        self.num_heads, self.head_dim = att0.q_norm.weight.shape
        self.model_size = att0.wq.weight.shape[0]
        self.latent_size = model.in_proj.weight.shape[1]
        self.timestep_embed_size = model.timestep_embed_size
        self.speaker_patch_size = model.speaker_patch_size
        # --- fuse once; the per-layer upstream Linear weights are dropped afterwards ---------
        self.layers = []
        ctx_text, ctx_spk = [], []
        for blk in blocks:
            att, mlp = blk.attention, blk.mlp
            self.layers.append((
                torch.cat([att.wq.weight, att.wk.weight, att.wv.weight, att.gate.weight]),
                att.wo.weight.detach(),
                torch.stack([att.q_norm.weight, att.k_norm.weight]).float(),
                torch.cat([mlp.w1.weight, mlp.w3.weight]),
                mlp.w2.weight.detach(),
            ))
            ctx_text += [att.wk_text.weight, att.wv_text.weight]
            ctx_spk += [att.wk_speaker.weight, att.wv_speaker.weight]
            for mod_name in ("wq", "wk", "wv", "gate", "w1", "w3", "wk_text", "wv_text", "wk_speaker", "wv_speaker"):
                owner = mlp if mod_name in ("w1", "w3") else att
                setattr(owner, mod_name, None)
        self.w_ctx_text = torch.cat(ctx_text)  # (L*2*D, text_model_size)
        self.w_ctx_spk = torch.cat(ctx_spk)
        self.k_norm_all = torch.stack([lay[2][1] for lay in self.layers])  # (L, H, Dh) float32
        self.adaln = [(blk.attention_adaln, blk.mlp_adaln) for blk in blocks]
        self.cond_module = model.cond_module
        self.in_w, self.in_b = model.in_proj.weight.detach(), model.in_proj.bias.detach()
        self.out_norm = model.out_norm.weight.float()
        self.out_w, self.out_b = model.out_proj.weight.detach(), model.out_proj.bias.detach()
        self.use_graphs = bool(cuda_graphs) and device.type == "cuda"
        if compile:  # one specialisation per (bucket, batch 1/3): more than dynamo's default 8 recompiles
            import torch._dynamo as dynamo

            for name in ("recompile_limit", "cache_size_limit"):
                if hasattr(dynamo.config, name):
                    setattr(dynamo.config, name, max(getattr(dynamo.config, name), 64))
        self._block = torch.compile(_block, dynamic=False, options=COMPILE_OPTIONS) if compile else _block
        self._shapes: OrderedDict[tuple[int, int, int], _Shape] = OrderedDict()
        self._max_shapes = max(1, int(max_shapes))
        self._mods: OrderedDict[tuple[float, ...], tuple[torch.Tensor, torch.Tensor]] = OrderedDict()
        self._pool = torch.cuda.graph_pool_handle() if self.use_graphs else None

    # ------------------------------------------------------------------ conditioning
    def _modulations(self, ts: list[float]) -> tuple[torch.Tensor, torch.Tensor]:
        """(steps, L, 2, 2, D) float32 shift/scale+1 and (steps, L, 2, D) gates, cached per schedule."""
        key = tuple(ts)
        hit = self._mods.get(key)
        if hit is not None:
            self._mods.move_to_end(key)
            return hit
        dt = self.dtype
        t = torch.tensor(ts, dtype=torch.float32, device=self.device).to(dt)  # upstream feeds t in the model dtype
        cond = self.cond_module(self._tembed(t, self.timestep_embed_size))  # (steps, 3D)
        shift0, scale0, gate0 = cond.chunk(3, dim=-1)
        mods, gates = [], []
        for pair in self.adaln:
            m, g = [], []
            for ada in pair:  # upstream LowRankAdaLN.forward, minus the normalisation of x
                shift = ada.shift_up(ada.shift_down(F.silu(shift0))) + shift0
                scale = ada.scale_up(ada.scale_down(F.silu(scale0))) + scale0
                gate = ada.gate_up(ada.gate_down(F.silu(gate0))) + gate0
                m.append(torch.stack([shift.float(), (scale + 1).float()], dim=1))
                g.append(torch.tanh(gate))
            mods.append(torch.stack(m, dim=1))
            gates.append(torch.stack(g, dim=1))
        out = (torch.stack(mods, dim=1).contiguous(), torch.stack(gates, dim=1).contiguous())
        self._mods[key] = out
        while len(self._mods) > 8:
            self._mods.popitem(last=False)
        return out

    def context_kv(self, state: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Upstream ``get_kv_cache_text/speaker`` for all layers at once: (L, 1, n, H, Dh) each."""
        L, H, Dh = self.num_layers, self.num_heads, self.head_dim
        n = state.shape[1]
        kv = F.linear(state, weight).view(1, n, L, 2, H, Dh).permute(2, 3, 0, 1, 4, 5)
        k = (_rms(kv[:, 0], self.eps) * self.k_norm_all[:, None, None]).to(self.dtype)
        return k, kv[:, 1]

    # ------------------------------------------------------------------ forward
    def _forward(self, shp: _Shape, batch: int) -> torch.Tensor:
        h = F.linear(shp.x.to(self.dtype), self.in_w, self.in_b)
        if batch > 1:
            h = h.expand(batch, -1, -1)
        mask = shp.mask[:batch]
        for i, (w_qkvg, w_o, qk_norm, w13, w2) in enumerate(self.layers):
            h = self._block(
                h, w_qkvg, w_o, qk_norm, w13, w2, shp.mod[i], shp.gate[i],
                shp.k[i, :batch], shp.v[i, :batch], mask, shp.rope, self.eps,
            )
        h = (_rms(h, self.eps) * self.out_norm).to(self.dtype)
        return F.linear(h, self.out_w, self.out_b).float()

    def _capture(self, shp: _Shape) -> None:
        stream = torch.cuda.Stream(device=self.device)
        stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up: cuBLAS handles, compile, autotune
                self._forward(shp, 3)
                self._forward(shp, 1)
        torch.cuda.current_stream(self.device).wait_stream(stream)
        shp.graph3, shp.graph1 = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(shp.graph3, pool=self._pool):
            shp.out3 = self._forward(shp, 3)
        with torch.cuda.graph(shp.graph1, pool=self._pool):
            shp.out1 = self._forward(shp, 1)

    def _run(self, shp: _Shape, batch: int) -> torch.Tensor:
        if shp.graph3 is not None:
            assert shp.out3 is not None and shp.out1 is not None  # set with the graphs by _capture
            if batch == 3:
                shp.graph3.replay()
                return shp.out3
            shp.graph1.replay()
            return shp.out1
        return self._forward(shp, batch)

    def shape(self, seq: int, text_len: int, spk_len: int) -> _Shape:
        key = (seq, text_len, spk_len)
        shp = self._shapes.get(key)
        if shp is None:
            while len(self._shapes) >= self._max_shapes:
                self._shapes.popitem(last=False)
            shp = self._shapes[key] = _Shape(self, seq, text_len, spk_len)
        else:
            self._shapes.move_to_end(key)
        return shp

    def warmup(self, seq: int, text_len: int, spk_len: int) -> None:
        """Allocate (and on CUDA capture) the buffers for one bucket ahead of the first call."""
        shp = self.shape(seq, text_len, spk_len)
        if self.use_graphs and shp.graph3 is None:
            self._capture(shp)

    # ------------------------------------------------------------------ sampling
    @torch.inference_mode()
    def sample(
        self,
        seq: int,
        text_kv: tuple[torch.Tensor, torch.Tensor],
        text_valid: int,
        spk_kv: tuple[torch.Tensor, torch.Tensor] | None,
        spk_valid: int,
        spk_len: int,
        params: SamplerParams,
    ) -> torch.Tensor:
        """Run the Euler sampler; returns the latent (1, seq, latent_size) float32 on this device."""
        tk, tv = text_kv
        text_len = tk.shape[2]
        shp = self.shape(seq, text_len, spk_len)
        # context keys/values and masks for [cond, no-text, no-speaker], written once per call
        shp.k[:, :, :text_len] = tk
        shp.v[:, :, :text_len] = tv
        if spk_kv is not None:
            shp.k[:, :, text_len:text_len + spk_len] = spk_kv[0]
            shp.v[:, :, text_len:text_len + spk_len] = spk_kv[1]
        else:
            shp.k[:, :, text_len:text_len + spk_len] = 0
            shp.v[:, :, text_len:text_len + spk_len] = 0
        valid = torch.ones((3, shp.ltot), dtype=torch.bool)
        valid[:, text_valid:text_len] = False
        valid[1, :text_len] = False
        valid[:, text_len + spk_valid:text_len + spk_len] = False
        valid[2, text_len:text_len + spk_len] = False
        mask = torch.zeros((3, shp.ltot), dtype=torch.float32)
        mask[~valid] = float("-inf")
        shp.mask.copy_(mask.view(3, 1, 1, -1).to(self.dtype), non_blocking=False)
        if self.use_graphs and shp.graph3 is None:
            self._capture(shp)

        ts = euler_schedule(params.steps)
        mods, gates = self._modulations(ts[:-1])
        gen = torch.Generator(device=self.device).manual_seed(int(params.seed))
        x = torch.randn((1, seq, self.latent_size), device=self.device, dtype=torch.float32, generator=gen)
        if params.truncation_factor is not None:
            x = x * params.truncation_factor
        shp.x.copy_(x)
        for i in range(params.steps):
            t, t_next = ts[i], ts[i + 1]
            shp.mod.copy_(mods[i])
            shp.gate.copy_(gates[i])
            if params.cfg_min_t <= t <= params.cfg_max_t:
                out = self._run(shp, 3)
                v_c, v_nt, v_ns = out[0:1], out[1:2], out[2:3]
                v = v_c + params.cfg_scale_text * (v_c - v_nt) + params.cfg_scale_speaker * (v_c - v_ns)
            else:
                v = self._run(shp, 1)
            if params.rescale_k is not None and params.rescale_sigma is not None and t < 1:
                snr = (1 - t) ** 2 / (t ** 2)
                ratio = (snr * params.rescale_sigma ** 2 + 1) / (snr * params.rescale_sigma ** 2 / params.rescale_k + 1)
                v = 1 / (1 - t) * (ratio * ((1 - t) * v + shp.x) - shp.x)
            shp.x.add_(v, alpha=float(torch.tensor(t_next, dtype=torch.float32) - torch.tensor(t, dtype=torch.float32)))
        return shp.x.clone()


def padded_len(n: int, multiple: int, minimum: int) -> int:
    return max(minimum, int(math.ceil(n / multiple)) * multiple)
