"""Fish S1-DAC decoder forward with fused Snake + causal padding (Triton on CUDA, torch elsewhere).

Upstream's decoder runs, per residual unit: Snake (TorchScript), ``F.pad`` (a copy), the dilated
k=7 convolution, Snake, ``F.pad`` (another copy, of zero width), the k=1 convolution, a slice and
``.contiguous()``, and the residual add. At 44.1 kHz the last two blocks hold 126 M activations
each, so every extra pass over memory costs about 0.2 ms in fp32. ``decode`` walks the same
modules with the same weights but:

* Snake is one kernel (``_snake_kernel``: one read, one write; sin in fp32 whatever the storage
  dtype) that writes straight into a buffer already holding the convolution's left zero padding,
  so the pad copy disappears;
* convolution biases are added inside the next fused kernel (Snake, or the residual add: one
  ``_residual_kernel`` pass for x + y + bias) instead of PyTorch's separate broadcast pass after
  each cuDNN convolution;
* each transposed convolution (kernel 2s, stride s, then a right crop of s) runs as the
  equivalent k=2 convolution to C_out * s channels followed by one interleaving copy that also
  adds the bias: cuDNN's transposed-convolution (dgrad) kernels were the slowest in the profile;
* convolutions are called with ``padding=0`` on those buffers (every decoder conv has stride 1,
  for which upstream's "extra" right padding is always 0).

The math is upstream's; on the CPU, ROCm without Triton, or when asked (``snake="torch"``) the
same walk uses plain torch ops (upstream's formula, then ``F.pad``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ._upstream import UpstreamModule

__all__ = ["decode", "residual_add", "snake_pad", "triton_available"]

_TRITON: dict = {}  # name -> kernel once compiled; {"ok": False} when Triton is unusable


def _kernels() -> dict | None:
    if not _TRITON:
        try:
            import triton
            import triton.language as tl

            @triton.jit
            def _snake_kernel(x_ptr, a_ptr, b_ptr, y_ptr, T, C, x_row_stride, y_row_stride, left,
                              HAS_BIAS: tl.constexpr, BLOCK: tl.constexpr):
                row = tl.program_id(0)
                pid = tl.program_id(1)
                a = tl.load(a_ptr + row % C).to(tl.float32)
                inv = 1.0 / (a + 1e-9)
                offs = pid * BLOCK + tl.arange(0, BLOCK)  # output positions, left padding included
                src = offs - left
                inside = (src >= 0) & (src < T)
                x = tl.load(x_ptr + row * x_row_stride + src, mask=inside, other=0.0).to(tl.float32)
                if HAS_BIAS:
                    x = x + tl.load(b_ptr + row % C).to(tl.float32)
                s = tl.sin(a * x)
                y = tl.where(inside, x + inv * s * s, 0.0)
                tl.store(y_ptr + row * y_row_stride + offs, y.to(y_ptr.dtype.element_ty), mask=offs < T + left)

            @triton.jit
            def _residual_kernel(x_ptr, y_ptr, b_ptr, o_ptr, T, C, x_row_stride, BLOCK: tl.constexpr):
                row = tl.program_id(0)
                offs = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
                m = offs < T
                x = tl.load(x_ptr + row * x_row_stride + offs, mask=m, other=0.0).to(tl.float32)
                y = tl.load(y_ptr + row * T + offs, mask=m, other=0.0).to(tl.float32)
                o = x + y + tl.load(b_ptr + row % C).to(tl.float32)
                tl.store(o_ptr + row * T + offs, o.to(o_ptr.dtype.element_ty), mask=m)

            _TRITON.update(ok=True, snake=_snake_kernel, residual=_residual_kernel)
        except Exception:  # noqa: BLE001 - no triton, or a build without a usable GPU backend (any error)
            _TRITON.update(ok=False)
    return _TRITON if _TRITON["ok"] else None


def triton_available() -> bool:
    return torch.cuda.is_available() and _kernels() is not None


def _snake_torch(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x).pow(2)


def _rows_ok(x: torch.Tensor) -> bool:
    """(B, C, T) with contiguous time and rows laid out evenly (row r at r * stride(1))."""
    return x.stride(-1) == 1 and (x.shape[0] == 1 or x.stride(0) == x.shape[1] * x.stride(1))


BLOCK = 2048


def snake_pad(x: torch.Tensor, alpha: torch.Tensor, left: int = 0, use_triton: bool = True,
              bias: torch.Tensor | None = None) -> torch.Tensor:
    """``F.pad(snake(x + bias[:, None], alpha), (left, 0))`` for x (B, C, T)."""
    k = _kernels() if (use_triton and x.is_cuda) else None
    if k is None or not _rows_ok(x):
        if bias is not None:
            x = x + bias.view(1, -1, 1).to(x.dtype)
        y = _snake_torch(x, alpha.to(x.dtype))
        return F.pad(y, (left, 0)) if left else y
    B, C, T = x.shape
    y = torch.empty((B, C, T + left), device=x.device, dtype=x.dtype)
    grid = (B * C, -(-(T + left) // BLOCK))
    k["snake"][grid](x, alpha.reshape(-1), alpha if bias is None else bias, y, T, C, x.stride(1), T + left, left,
                     HAS_BIAS=bias is not None, BLOCK=BLOCK, num_warps=8)
    return y


def residual_add(x: torch.Tensor, y: torch.Tensor, bias: torch.Tensor | None, use_triton: bool = True) -> torch.Tensor:
    """``x[..., :T] + y + bias[:, None]`` with y (B, C, T) contiguous, x at least T long."""
    T = y.shape[-1]
    k = _kernels() if (use_triton and x.is_cuda) else None
    if k is None or bias is None or not _rows_ok(x) or not y.is_contiguous():
        out = x[..., :T] + y
        return out + bias.view(1, -1, 1).to(out.dtype) if bias is not None else out
    B, C, _ = y.shape
    out = torch.empty_like(y)
    k["residual"][(B * C, -(-T // BLOCK))](x, y, bias, out, T, C, x.stride(1), BLOCK=BLOCK, num_warps=8)
    return out


def _conv(conv_mod: UpstreamModule, x: torch.Tensor, bias: bool = True) -> torch.Tensor:
    """Upstream ``CausalConvNet`` minus its padding (``x`` arrives padded); bias optional."""
    c = conv_mod.conv
    return F.conv1d(x, c.weight, c.bias if bias else None, c.stride, 0, c.dilation, c.groups)


def _as_conv2(tconv: UpstreamModule) -> torch.Tensor:
    """Upstream's causal transposed convolution (kernel 2s, stride s, right crop of s) as an
    equivalent k=2 convolution to C_out * s channels: output sample t * s + r is
    x[t] @ w[:, :, r] + x[t - 1] @ w[:, :, r + s]. Cached on the module; weight (C_out * s, C_in, 2)."""
    w = tconv.conv.weight
    cached = getattr(tconv, "_voxbox_conv2", None)
    if cached is not None and cached.dtype == w.dtype and cached.device == w.device:
        return cached
    cin, cout, k = w.shape
    s = tconv.stride
    assert k == 2 * s, (k, s)
    w2 = torch.stack([w[:, :, s:], w[:, :, :s]], dim=-1)  # (C_in, C_out, s, 2): tap 0 = x[t-1], tap 1 = x[t]
    w2 = w2.permute(1, 2, 0, 3).reshape(cout * s, cin, 2).contiguous()
    tconv._voxbox_conv2 = w2
    return w2


def _upsample(tconv: UpstreamModule, h: torch.Tensor) -> torch.Tensor:
    """h: (B, C_in, 1 + T) with one zero of left padding -> (B, C_out, T * s) with bias."""
    w2 = _as_conv2(tconv)
    s = tconv.stride
    y = F.conv1d(h, w2)  # (B, C_out * s, T)
    B, _, T = y.shape
    cout = w2.shape[0] // s
    out = torch.empty((B, cout, T, s), device=y.device, dtype=y.dtype)
    torch.add(y.view(B, cout, s, T).transpose(2, 3), tconv.conv.bias.view(1, cout, 1, 1).to(y.dtype), out=out)
    return out.view(B, cout, T * s)


def _residual(ru: UpstreamModule, x: torch.Tensor, use_triton: bool) -> torch.Tensor:
    snake1, conv7, snake2, conv1 = ru.block
    h = _conv(conv7, snake_pad(x, snake1.alpha, conv7.padding, use_triton), bias=False)
    y = _conv(conv1, snake_pad(h, snake2.alpha, conv1.padding, use_triton, bias=conv7.conv.bias), bias=False)
    return residual_add(x, y, conv1.conv.bias, use_triton)


def decode(decoder: UpstreamModule, z: torch.Tensor, use_triton: bool = True) -> torch.Tensor:
    """Upstream ``Decoder.forward`` (causal build) on (B, C, T) -> (B, 1, samples)."""
    layers = list(decoder.model)
    first, blocks, (snake, last, _tanh) = layers[0], layers[1:-3], layers[-3:]
    x = _conv(first, F.pad(z, (first.padding, 0)))
    for blk in blocks:
        bsnake, tconv, *units = blk.block
        x = _upsample(tconv, snake_pad(x, bsnake.alpha, 1, use_triton))
        for ru in units:
            x = _residual(ru, x, use_triton)
    return torch.tanh(_to_mono(last, snake_pad(x, snake.alpha, last.padding, use_triton)))


def _to_mono(conv_mod: UpstreamModule, h: torch.Tensor) -> torch.Tensor:
    """The last convolution (C channels -> 1, kernel K, dilation 1) on padded h (B, C, T + K - 1):
    one skinny GEMM (K, C) @ h reading h once, then the K shifted rows summed. cuDNN picked a slow
    kernel for this shape (11 ms in bf16, 2.5 ms in fp32 on an H200, for ~1 ms of memory traffic)."""
    c = conv_mod.conv
    w = c.weight
    if w.shape[0] != 1 or c.dilation[0] != 1 or c.groups != 1 or not h.is_cuda:
        return _conv(conv_mod, h)
    K = w.shape[-1]
    T = h.shape[-1] - K + 1
    p = torch.matmul(w[0].t().contiguous(), h).float()  # (B, K, T + K - 1)
    y = p[:, 0, :T] + c.bias.float()
    for k in range(1, K):
        y = y + p[:, k, k:k + T]
    return y.unsqueeze(1).to(h.dtype)
