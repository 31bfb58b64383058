"""Latent <-> audio: PCA, Fish S1-DAC encode for reference clips, streamed decode, end of speech.

Every part of Fish S1-DAC that voxbox runs is causal (causal convolutions, causal transposed
convolutions, window-limited causal attention), which gives two exact shortcuts:

* decode only the latent up to the end of speech instead of all 640 positions and cropping
  afterwards (upstream's ``crop_audio_to_flattening_point``);
* stream: the quantizer's post-transformer and upsampler (cheap, but with a receptive field as
  long as the clip) run over the first chunk's frames alone for the first chunk (about 10 ms less
  before the first audio of a 30-s clip on an H200), then once over the whole latent for the
  rest; the convolutional decoder (the expensive part,
  1536 channels down to 96 at 44.1 kHz) then runs chunk by chunk with ``DECODE_CONTEXT`` latent
  frames of left context, more than its receptive field (about 19 upsampled frames = 4.7 latent
  frames), so the concatenated chunks equal one full decode up to float rounding.
"""

from __future__ import annotations

import logging
import threading
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from . import _fastdec
from ._load import PCA
from ._upstream import UpstreamModule

log = logging.getLogger(__name__)

__all__ = [
    "DECODE_CONTEXT", "HOP", "SAMPLE_RATE", "DecodeGraphs", "chunk_bounds", "decode_bucket", "decode_chunks",
    "encode_latent", "post_module", "run_decoder", "speech_end", "upsampled",
]

SAMPLE_RATE = 44100
HOP = 2048  # audio samples per latent frame
UPSAMPLE = 4  # quantizer upsampling: decoder frames per latent frame
DECODE_CONTEXT = 8  # latent frames of left context per decoder chunk
MAX_SPEAKER_FRAMES = 6400  # upstream MAX_SPEAKER_LATENT_LENGTH
ENCODE_CHUNK = 640 * HOP  # upstream encodes reference audio in independent 640-frame chunks


def speech_end(latent: torch.Tensor, window: int = 20, std_threshold: float = 0.05, target: float = 0.0) -> int:
    """Upstream ``find_flattening_point`` on a (frames, channels) latent, vectorised (one sync).

    The first frame i where the window latent[i:i+20] (zero-padded past the end) has std < 0.05
    and |mean - 0| < 0.1; the frame count when none does.
    """
    n = latent.shape[0]
    padded = torch.cat([latent, latent.new_zeros((window, *latent.shape[1:]))])
    win = padded.unfold(0, window, 1)[:n]  # (n, channels, window)
    flat = win.reshape(n, -1)
    ok = (flat.std(dim=1) < std_threshold) & ((flat.mean(dim=1) - target).abs() < 0.1)
    idx = torch.nonzero(ok)
    return int(idx[0, 0].item()) if idx.numel() else n


def chunk_bounds(frames: int, first: int, largest: int) -> list[tuple[int, int]]:
    """Latent frame ranges for streamed decoding: a small first chunk, then doubling."""
    out, start, size = [], 0, max(1, first)
    while start < frames:
        end = min(frames, start + size)
        out.append((start, end))
        start, size = end, min(max(largest, 1), size * 2)
    return out


def run_decoder(ae: UpstreamModule, z: torch.Tensor) -> torch.Tensor:
    """The autoencoder's decoder on (1, ae_latent, frames * 4): the fused walk (``_fastdec``) for
    Snake modes "auto"/"triton"/"torch", upstream's module forward for "script"/"compile"/"eager"."""
    mode = getattr(ae, "voxbox_snake", "auto")
    if mode in ("auto", "triton", "torch"):
        return _fastdec.decode(ae.decoder, z, use_triton=mode != "torch")
    return ae.decoder(z)


def post_module(ae: UpstreamModule, z: torch.Tensor) -> torch.Tensor:
    """``ae.quantizer.post_module(z)``; for upstream's causal ``WindowLimitedTransformer`` the same
    forward with its window mask made on the device (upstream builds an n x n mask on the CPU and
    copies it over on every call: milliseconds of host time for a 30-s clip, and no CUDA graph can
    hold it). mask[i, j] = j <= i and j > i - window, as upstream's ``make_window_limited_mask``."""
    pm = ae.quantizer.post_module
    if type(pm).__name__ != "WindowLimitedTransformer" or not pm.causal or pm.window_size is None:
        return pm(z)
    x = z.transpose(1, 2) if pm.channels_first else z
    x = pm.look_ahead_conv(pm.input_proj(x))
    pos = torch.arange(x.shape[1], device=x.device)
    mask = ((pos[None, :] <= pos[:, None]) & (pos[None, :] > pos[:, None] - pm.window_size))[None, None]
    x = pm.output_proj(super(type(pm), pm).forward(x, pos, mask))  # upstream Transformer.forward
    return x.transpose(1, 2) if pm.channels_first else x


def upsampled(ae: UpstreamModule, pca: PCA, latent: torch.Tensor) -> torch.Tensor:
    """(1, frames, channels) latent -> (1, ae_latent, frames * 4): PCA, post-transformer, upsampler."""
    z = (latent / pca.scale) @ pca.components + pca.mean  # upstream ae_decode
    return ae.quantizer.upsample(post_module(ae, z.transpose(1, 2).to(next(ae.parameters()).dtype)))


def decode_bucket(n: int) -> int:
    """Latent frames a decode of ``n`` frames is padded to for its CUDA graph: multiples of 16 up
    to 64 (streams' first chunks: little padding where it is on the path to the first audio), then
    of 32 (whole clips: 18 more graphs cover upstream's 640 positions, at most 31 frames padded)."""
    step = 16 if n <= 64 else 32
    return -(-n // step) * step


class DecodeGraphs:
    """Latent frames [0, n) to audio (post-transformer, upsampler, decoder), one CUDA graph per
    padded size (:func:`decode_bucket`): a stream's first chunk and a whole clip's one-call decode.
    Eager it is a few hundred small launches whose host time exceeded their GPU time on an H200.
    Every stage is causal, so the latent is padded with zeros at the end and the audio of the
    padding is cut off: the first n frames' audio does not depend on what follows them. A capture
    that fails is logged and that size stays eager; past ``max_sizes`` graphs new sizes stay eager."""

    def __init__(self, ae: UpstreamModule, pca: PCA, device: torch.device, *, enabled: bool, max_sizes: int = 24):
        self.ae, self.pca, self.device = ae, pca, device
        self.enabled = bool(enabled) and device.type == "cuda"
        self._graphs: dict[int, tuple[Any, torch.Tensor, list[torch.Tensor]]] = {}
        self._failed: set[int] = set()
        self._max = max_sizes
        self._pool = torch.cuda.graph_pool_handle() if self.enabled else None
        self._lock = threading.Lock()

    def __call__(self, latent: torch.Tensor) -> torch.Tensor | None:
        """Audio (1, 1, n * HOP) on the device for this (1, n, channels) latent, or None (eager)."""
        n = latent.shape[1]
        size = decode_bucket(n)
        if not self.enabled or size in self._failed or latent.device != self.device:
            return None
        hit = self._graphs.get(size)
        if hit is None:
            if len(self._graphs) >= self._max:
                return None
            with self._lock:
                hit = self._graphs.get(size) or self._capture(latent, size)
            if hit is None:
                return None
        graph, static, out = hit
        with self._lock:  # streams decode outside the engine's lock: one replay at a time
            static[:, :n].copy_(latent)
            static[:, n:].zero_()
            graph.replay()
            return out[0][..., :n * HOP].clone()  # ordered on the stream before any later replay

    def _capture(self, latent: torch.Tensor, size: int) -> tuple[Any, torch.Tensor, list[torch.Tensor]] | None:
        from voxbox.engines.graphs import capture_graph

        static = latent.new_zeros((latent.shape[0], size, latent.shape[2]))
        static[:, :latent.shape[1]] = latent
        out: list[torch.Tensor] = []

        def run() -> None:
            out[:] = [run_decoder(self.ae, upsampled(self.ae, self.pca, static))]

        try:
            graph = capture_graph(run, (), self._pool, mode="thread_local")
        except Exception as exc:  # noqa: BLE001 - any capture failure: stay eager for this size
            log.info("echo-tts: decode graph for %d frames not captured (%s: %s)", size, type(exc).__name__, exc)
            self._failed.add(size)
            return None
        self._graphs[size] = (graph, static, out)
        return self._graphs[size]


@torch.inference_mode()
def decode_chunks(
    ae: UpstreamModule, pca: PCA, latent: torch.Tensor, bounds: list[tuple[int, int]],
    graphs: DecodeGraphs | None = None,
) -> Iterator[torch.Tensor]:
    """Yield float32 CPU audio for each latent range in ``bounds`` (contiguous from 0).

    latent: (1, frames, channels) float32 on the autoencoder's device. ``graphs``: CUDA graphs for
    the first chunk (a stream's first audio, or the whole clip when there is one chunk).
    """
    samples_per_frame = HOP // UPSAMPLE
    z: torch.Tensor | None = None
    for i, (a, b) in enumerate(bounds):
        if i == 0:
            # the first chunk's audio needs only its own frames through the post-transformer and the
            # upsampler (both causal): the time to first audio does not pay for the whole clip's
            audio = graphs(latent[:, :b]) if graphs is not None else None
            if audio is None:
                audio = run_decoder(ae, upsampled(ae, pca, latent[:, :b]))
        else:
            if z is None:
                z = upsampled(ae, pca, latent)
            lo = max(0, a - DECODE_CONTEXT) * UPSAMPLE
            audio = run_decoder(ae, z[..., lo:b * UPSAMPLE])
            audio = audio[..., (a * UPSAMPLE - lo) * samples_per_frame:]
        yield audio[0, 0].float().cpu()


@torch.inference_mode()
def encode_latent(ae: UpstreamModule, pca: PCA, audio: torch.Tensor, patch: int) -> torch.Tensor:
    """Upstream ``get_speaker_latent_and_mask`` for one clip: (frames, channels) float32.

    audio: (samples,) float32 at 44.1 kHz on the autoencoder's device. Frames are floor(samples /
    2048), at most 6400, cut to a multiple of the speaker patch size. Each 640-frame chunk is
    encoded on its own as upstream does; the last one is padded only to whole frames, not to 640
    (the encoder is causal, so padding further would not change the kept frames).
    """
    dtype = next(ae.parameters()).dtype
    audio = audio[: MAX_SPEAKER_FRAMES * HOP]
    keep = (audio.shape[0] // HOP) // patch * patch
    parts = []
    for start in range(0, keep * HOP, ENCODE_CHUNK):
        chunk = audio[start:start + ENCODE_CHUNK]
        chunk = F.pad(chunk, (0, (-chunk.shape[0]) % HOP))
        zq = ae.encode_zq(chunk.view(1, 1, -1).to(dtype)).float()  # (1, ae_latent, frames)
        parts.append(((zq.transpose(1, 2) - pca.mean) @ pca.components.T) * pca.scale)
    if not parts:
        return torch.zeros((0, pca.components.shape[0]))
    return torch.cat(parts, dim=1)[0, :keep].float().cpu()
