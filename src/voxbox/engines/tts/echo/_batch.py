"""The echo-tts side of batching across requests: the ``Batcher`` the runtime's scheduler drives.

* **admit**: the new requests' texts are encoded as one batch per text bucket; speaker
  keys/values are cached per voice (a voice used by many requests is encoded once); each request
  draws its initial noise from its own seeded generator, as the single-call path does.
* **step**: one Euler step for every request still sampling (``BatchedDiT``: requests of one
  (sequence, text, speaker) bucket share a forward, each at its own timestep with its own guidance
  scales), then one decoder chunk for every request already decoding.
* a request that finishes sampling is decoded with the others that finished on the same step, as
  one padded batch (the autoencoder is causal, so each request's audio is its own), chunk by chunk
  with the usual small-then-doubling chunk sizes.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import torch

from voxbox.engines.batched import Piece
from voxbox.types import AudioChunk

from ._bdit import BatchedDiT, RowShape, context_rows
from ._codec import DECODE_CONTEXT, HOP, SAMPLE_RATE, UPSAMPLE, chunk_bounds, run_decoder, speech_end, upsampled
from ._dit import euler_schedule, padded_len

__all__ = ["EchoBatcher", "EchoRequest"]

TEXT_BUCKET, SPEAKER_BUCKET = 128, 16  # as _engine
_F32 = torch.float32
_SERIAL = itertools.count()


@dataclass
class EchoRequest:
    call: Any  # _engine._Call, its voice an EncodedVoice or None
    submitted: float


class _Req:
    """One request (the scheduler's handle): conditioning, latent, and where it is."""

    def __init__(self, req: EchoRequest) -> None:
        self.req = req
        self.serial = next(_SERIAL)  # layouts key on it (ids of dead objects are reused)
        self.call = req.call
        self.params = req.call.params
        self.text_kv: tuple[torch.Tensor, torch.Tensor] = None  # type: ignore[assignment]
        self.text_valid = len(req.call.tokens)
        self.spk_kv: tuple[torch.Tensor, torch.Tensor] | None = None
        self.spk_valid, self.spk_len = 0, SPEAKER_BUCKET
        self.key: tuple[int, int, int] = (0, 0, 0)
        self.ts = euler_schedule(self.params.steps)
        self.mods: torch.Tensor = None  # type: ignore[assignment]
        self.gates: torch.Tensor = None  # type: ignore[assignment]
        self.x: torch.Tensor = None  # type: ignore[assignment]
        self.i = 0
        self.frames = 0
        self.index = 0
        self.max_batch = 0
        self.done = False
        self.pending: dict[str, float] = {}
        self.pieces: list[Piece[AudioChunk]] = []
        self.details: dict[str, Any] = {}

    def add(self, stage: str, seconds: float) -> None:
        self.pending[stage] = self.pending.get(stage, 0.0) + seconds

    def piece(self, chunk: AudioChunk | None, details: dict[str, Any] | None = None) -> None:
        self.pieces.append(Piece(chunk, self.pending, details or {}))
        self.pending = {}


class _Decode:
    """Requests that finished sampling on one step, decoded together chunk by chunk."""

    def __init__(self, rows: list[_Req], z: torch.Tensor, bounds: list[tuple[int, int]]) -> None:
        self.rows, self.z, self.bounds, self.k = rows, z, bounds, 0


class EchoBatcher:
    def __init__(self, engine: Any, slots: int, *, max_shapes: int = 2, max_voices: int = 8) -> None:
        self.engine = engine
        self.d = engine.dit
        self.max_batch = max(1, int(slots))
        self.bdit = BatchedDiT(self.d, 3 * self.max_batch)
        self.shapes: OrderedDict[tuple[int, int, int], RowShape] = OrderedDict()
        self.max_shapes = max(1, int(max_shapes))
        self.sampling: list[_Req] = []
        self.decoding: list[_Decode] = []
        self._speakers: OrderedDict[Any, tuple[Any, int, int]] = OrderedDict()
        self._max_voices = max(1, int(max_voices))
        self.steps = 0

    @staticmethod
    def slot_bytes(dit: Any, max_shapes: int = 2) -> int:
        """Device memory one request needs: three rows (guidance branches) of a full-length bucket's
        key/value buffers in each shape kept, plus its latent."""
        return max_shapes * RowShape.nbytes(dit, 3, 640 + 256 + 64) + 640 * dit.latent_size * 4 * 8

    # ------------------------------------------------------------------ Batcher protocol
    @torch.inference_mode()
    def admit(self, requests: list[EchoRequest]) -> list[_Req]:
        rows = [_Req(r) for r in requests]
        t0 = time.perf_counter()
        self._encode_texts(rows)
        t1 = time.perf_counter()
        for r in rows:
            self._speaker(r)
        t2 = time.perf_counter()
        d = self.d
        for r in rows:
            p = r.params
            tlen = r.text_kv[0].shape[1]
            r.key = (r.call.seq, tlen, r.spk_len)
            r.mods, r.gates = d._modulations(r.ts[:-1])
            gen = torch.Generator(device=d.device).manual_seed(int(p.seed))
            x = torch.randn((1, r.call.seq, d.latent_size), device=d.device, dtype=_F32, generator=gen)
            r.x = x * p.truncation_factor if p.truncation_factor is not None else x
            r.add("batch_wait", max(0.0, t0 - r.req.submitted))
            r.add("text_encode", t1 - t0)
            r.add("speaker_encode", t2 - t1)
        self.sampling.extend(rows)
        return rows

    @torch.inference_mode()
    def step(self) -> list[tuple[_Req, list[Piece[AudioChunk]], bool]]:
        self.steps += 1
        touched: list[_Req] = []
        finished: list[_Req] = []
        groups: dict[tuple[int, int, int], list[_Req]] = {}
        for r in self.sampling:
            groups.setdefault(r.key, []).append(r)
        for key, rows in groups.items():
            shp = self._shape(key)
            if shp is None:
                continue  # every buffer is in use by other buckets: these wait a step
            t0 = time.perf_counter()
            self._sample_step(shp, rows)
            _sync(self.d.device)
            dt = time.perf_counter() - t0
            for r in rows:
                r.add("sample", dt)
                r.max_batch = max(r.max_batch, len(rows))
                touched.append(r)
                if r.i >= r.params.steps:
                    finished.append(r)
        if finished:
            self.sampling = [r for r in self.sampling if r.i < r.params.steps]
            self._start_decode(finished)
        for job in list(self.decoding):
            touched += self._decode_chunk(job)
        out = []
        for r in dict.fromkeys(touched):  # each request once, in order
            if r.done:
                r.piece(None, self._final(r))
            if r.pieces:
                out.append((r, r.pieces, r.done))
                r.pieces = []
        return out

    def drop(self, handle: _Req) -> None:
        handle.done = True
        if handle in self.sampling:
            self.sampling.remove(handle)
        for job in list(self.decoding):
            if handle in job.rows:
                job.rows = [r for r in job.rows if r is not handle]
            if not any(not r.done for r in job.rows):
                self.decoding.remove(job)

    # ------------------------------------------------------------------ conditioning
    def _encode_texts(self, rows: list[_Req]) -> None:
        eng, d = self.engine, self.d
        tdev = eng.placement["text_encoder"][0]
        by_len: dict[int, list[_Req]] = {}
        for r in rows:
            n = len(r.call.tokens)
            by_len.setdefault(min(padded_len(n, TEXT_BUCKET, TEXT_BUCKET), 768), []).append(r)
        for tlen, members in by_len.items():
            ids = torch.zeros((len(members), tlen), dtype=torch.int32)
            mask = torch.zeros((len(members), tlen), dtype=torch.bool)
            for j, r in enumerate(members):
                n = len(r.call.tokens)
                ids[j, :n] = torch.tensor(r.call.tokens, dtype=torch.int32)
                mask[j, :n] = True
            state = eng.text_norm(eng.text_encoder(ids.to(tdev), mask.to(tdev)))
            keys, vals = context_rows(d, state.to(device=d.device, dtype=d.dtype), d.w_ctx_text)
            for j, r in enumerate(members):
                r.text_kv = (keys[:, j], vals[:, j])

    def _speaker(self, r: _Req) -> None:
        voice = r.call.voice
        if voice is None:
            return
        hit = self._speakers.get(voice.key)
        if hit is None:
            d = self.d
            state, valid, n = self.engine.speaker_state(voice)
            k, v = context_rows(d, state, d.w_ctx_spk)
            hit = self._speakers[voice.key] = ((k[:, 0], v[:, 0]), valid, n)
            while len(self._speakers) > self._max_voices:
                self._speakers.popitem(last=False)
        else:
            self._speakers.move_to_end(voice.key)
        r.spk_kv, r.spk_valid, r.spk_len = hit

    def _shape(self, key: tuple[int, int, int]) -> RowShape | None:
        shp = self.shapes.get(key)
        if shp is not None:
            self.shapes.move_to_end(key)
            return shp
        if len(self.shapes) >= self.max_shapes:
            busy = {r.key for r in self.sampling}
            idle = next((k for k in self.shapes if k not in busy), None)
            if idle is None:
                return None
            del self.shapes[idle]
        shp = self.shapes[key] = RowShape(self.d, 3 * self.max_batch, *key)
        return shp

    # ------------------------------------------------------------------ sampling
    def _sample_step(self, shp: RowShape, rows: list[_Req]) -> None:
        """One Euler step for ``rows`` (one bucket), each at its own timestep (``DiTRunner.sample``)."""
        n = len(rows)
        guided = [r.params.cfg_min_t <= r.ts[r.i] <= r.params.cfg_max_t for r in rows]
        g_rows = [r for r, g in zip(rows, guided, strict=True) if g]
        g = len(g_rows)
        # [conditional: every request | no text: guided ones | no speaker: guided ones]
        layout = [(r, 0) for r in rows] + [(r, 1) for r in g_rows] + [(r, 2) for r in g_rows]
        self.bdit.set_layout(shp, layout, (tuple(r.serial for r in rows), tuple(guided)))
        used = len(layout)
        members = rows + g_rows + g_rows
        shp.xin[:used] = torch.cat([r.x for r in members])
        shp.mod[:, :, :, :used, 0] = torch.stack([r.mods[r.i] for r in members]).permute(1, 2, 3, 0, 4)
        shp.gate[:, :, :used, 0] = torch.stack([r.gates[r.i] for r in members]).permute(1, 2, 0, 3)
        out = self.bdit.forward(shp, used)
        k = 0
        for j, r in enumerate(rows):
            p, t, t_next = r.params, r.ts[r.i], r.ts[r.i + 1]
            v = out[j:j + 1]
            if guided[j]:
                v_nt, v_ns = out[n + k:n + k + 1], out[n + g + k:n + g + k + 1]
                v = v + p.cfg_scale_text * (v - v_nt) + p.cfg_scale_speaker * (v - v_ns)
                k += 1
            if p.rescale_k is not None and p.rescale_sigma is not None and t < 1:
                snr = (1 - t) ** 2 / (t ** 2)
                ratio = (snr * p.rescale_sigma ** 2 + 1) / (snr * p.rescale_sigma ** 2 / p.rescale_k + 1)
                v = 1 / (1 - t) * (ratio * ((1 - t) * v + r.x) - r.x)
            r.x.add_(v, alpha=float(torch.tensor(t_next, dtype=_F32) - torch.tensor(t, dtype=_F32)))
            r.i += 1

    # ------------------------------------------------------------------ decoding
    def _start_decode(self, rows: list[_Req]) -> None:
        eng = self.engine
        ae_dev = eng.placement["autoencoder"][0]
        groups: dict[tuple[int, int], list[_Req]] = {}
        for r in rows:
            t0 = time.perf_counter()
            r.frames = speech_end(r.x[0]) if r.call.trim else r.x.shape[1]
            r.details.update(sequence_length=r.call.seq, speech_frames=r.frames, steps=r.params.steps)
            r.add("decode", time.perf_counter() - t0)
            if r.frames == 0:
                r.done = True  # nothing to decode: its final piece ends it
                continue
            groups.setdefault((r.call.chunk_frames, r.call.max_chunk_frames), []).append(r)
        for (first, largest), members in groups.items():
            t0 = time.perf_counter()
            frames = max(r.frames for r in members)
            lat = torch.zeros((len(members), frames, self.d.latent_size), dtype=_F32, device=ae_dev)
            for j, r in enumerate(members):
                lat[j, :r.frames] = r.x[0, :r.frames].to(ae_dev)
            z = upsampled(eng.ae, eng.pca, lat)
            dt = time.perf_counter() - t0
            for r in members:
                r.add("decode", dt)
            self.decoding.append(_Decode(members, z, chunk_bounds(frames, first, largest)))

    def _decode_chunk(self, job: _Decode) -> list[_Req]:
        """The next chunk of every request of ``job`` that still has frames there."""
        a, b = job.bounds[job.k]
        job.k += 1
        live = [j for j, r in enumerate(job.rows) if not r.done and r.frames > a]
        if not live:
            self.decoding.remove(job)
            return []
        t0 = time.perf_counter()
        lo = max(0, a - DECODE_CONTEXT) * UPSAMPLE
        z = job.z[live] if len(live) < job.z.shape[0] else job.z
        audio = run_decoder(self.engine.ae, z[..., lo:b * UPSAMPLE])
        spf = HOP // UPSAMPLE
        parts = [audio[i, 0, (a * UPSAMPLE - lo) * spf:(min(b, job.rows[j].frames) * UPSAMPLE - lo) * spf].float().cpu()
                 for i, j in enumerate(live)]
        dt = time.perf_counter() - t0
        out = []
        for j, samples in zip(live, parts, strict=True):
            r = job.rows[j]
            r.add("decode", dt)
            r.piece(AudioChunk(samples.numpy(), SAMPLE_RATE, index=r.index, text=r.call.text if r.index == 0 else None))
            r.index += 1
            r.done = b >= r.frames
            out.append(r)
        if job.k >= len(job.bounds) or all(r.done for r in job.rows):
            self.decoding.remove(job)
        return out

    def _final(self, r: _Req) -> dict[str, Any]:
        return {**r.details, "batched": True, "batch_size_max": r.max_batch}

    def stats(self) -> dict[str, Any]:
        return {"slots": self.max_batch, "sampling": len(self.sampling), "decoding": len(self.decoding),
                "steps": self.steps, "shapes": len(self.shapes),
                "graphs": sum(len(s.graphs) for s in self.shapes.values()), "compile_error": self.bdit.compile_error}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
