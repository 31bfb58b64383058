"""Fish S1-DAC decoder forward with fused Snake + causal padding (Triton on CUDA, torch elsewhere).

Upstream's decoder runs, per residual unit: Snake (TorchScript), ``F.pad`` (a copy), the dilated
k=7 convolution, Snake, ``F.pad`` (another copy, of zero width), the k=1 convolution, a slice and
``.contiguous()``, and the residual add. At 44.1 kHz the last two blocks hold 126 M activations
each, so every extra pass over memory costs about 0.2 ms in fp32. ``decode`` walks the same
modules with the same weights but:

* Snake is one kernel (``_snake_kernel``: one read, one write; sin in fp32 whatever the storage
  dtype) that writes straight into a buffer already holding the convolution's left zero padding,
  so the pad copy disappears;
* it reads strided rows, so the transposed convolution's right crop is a view, not a copy;
* convolutions are called with ``padding=0`` on those buffers (every decoder conv has stride 1,
  for which upstream's "extra" right padding is always 0).

The math is upstream's; on the CPU, ROCm without Triton, or when asked (``snake="torch"``) the
same walk uses plain torch ops (upstream's formula, then ``F.pad``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["decode", "snake_pad", "triton_available"]

_TRITON: list = []  # [kernel] once compiled, [None] when Triton is unusable


def _kernel():
    if not _TRITON:
        try:
            import triton
            import triton.language as tl

            @triton.jit
            def _snake_kernel(x_ptr, a_ptr, y_ptr, T, C, x_row_stride, y_row_stride, left, BLOCK: tl.constexpr):
                row = tl.program_id(0)
                pid = tl.program_id(1)
                a = tl.load(a_ptr + row % C).to(tl.float32)
                inv = 1.0 / (a + 1e-9)
                offs = pid * BLOCK + tl.arange(0, BLOCK)  # output positions, left padding included
                src = offs - left
                inside = (src >= 0) & (src < T)
                x = tl.load(x_ptr + row * x_row_stride + src, mask=inside, other=0.0).to(tl.float32)
                s = tl.sin(a * x)
                y = tl.where(inside, x + inv * s * s, 0.0)
                tl.store(y_ptr + row * y_row_stride + offs, y.to(y_ptr.dtype.element_ty), mask=offs < T + left)

            _TRITON.append(_snake_kernel)
        except Exception:  # no triton, or a build without a usable GPU backend
            _TRITON.append(None)
    return _TRITON[0]


def triton_available() -> bool:
    return torch.cuda.is_available() and _kernel() is not None


def _snake_torch(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    return x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x).pow(2)


def snake_pad(x: torch.Tensor, alpha: torch.Tensor, left: int = 0, use_triton: bool = True) -> torch.Tensor:
    """``F.pad(snake(x, alpha), (left, 0))`` for x (B, C, T) whose last dimension is contiguous."""
    kern = _kernel() if (use_triton and x.is_cuda) else None
    if kern is None or x.stride(-1) != 1 or (x.shape[0] > 1 and x.stride(0) != x.shape[1] * x.stride(1)):
        y = _snake_torch(x, alpha.to(x.dtype))
        return F.pad(y, (left, 0)) if left else y
    B, C, T = x.shape
    y = torch.empty((B, C, T + left), device=x.device, dtype=x.dtype)
    block = 2048
    grid = (B * C, triton_cdiv(T + left, block))
    kern[grid](x, alpha.reshape(-1).contiguous(), y, T, C, x.stride(1), T + left, left, BLOCK=block, num_warps=8)
    return y


def triton_cdiv(a: int, b: int) -> int:
    return -(-a // b)


def _conv(conv_mod: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Upstream ``CausalConvNet`` minus its padding (``x`` arrives padded)."""
    c = conv_mod.conv
    return F.conv1d(x, c.weight, c.bias, c.stride, 0, c.dilation, c.groups)


def _residual(ru: torch.nn.Module, x: torch.Tensor, use_triton: bool) -> torch.Tensor:
    snake1, conv7, snake2, conv1 = ru.block
    h = _conv(conv7, snake_pad(x, snake1.alpha, conv7.padding, use_triton))
    y = _conv(conv1, snake_pad(h, snake2.alpha, conv1.padding, use_triton))
    pad = x.shape[-1] - y.shape[-1]
    return (x[..., :-pad] if pad > 0 else x) + y


def decode(decoder: torch.nn.Module, z: torch.Tensor, use_triton: bool = True) -> torch.Tensor:
    """Upstream ``Decoder.forward`` (causal build) on (B, C, T) -> (B, 1, samples)."""
    layers = list(decoder.model)
    first, blocks, (snake, last, tanh) = layers[0], layers[1:-3], layers[-3:]
    x = _conv(first, F.pad(z, (first.padding, 0)))
    for blk in blocks:
        bsnake, tconv, *units = blk.block
        h = snake_pad(x, bsnake.alpha, 0, use_triton)
        c = tconv.conv
        h = F.conv_transpose1d(h, c.weight, c.bias, c.stride, 0, 0, c.groups, c.dilation)
        crop = tconv.kernel_size - tconv.stride  # upstream unpad1d: all of it on the right
        x = h[..., : h.shape[-1] - crop] if crop else h
        for ru in units:
            x = _residual(ru, x, use_triton)
    return torch.tanh(_conv(last, snake_pad(x, snake.alpha, last.padding, use_triton)))
