"""The faster-whisper engine object: a CTranslate2 ``WhisperModel`` behind voxbox's ASR seam.

Argument checks and the language table are the shared Whisper core's; faster-whisper does its own
features, decoding and word alignment. Segment and word times are clamped to the audio's duration
and segments starting at or after its end are dropped (a zero-padded last window lets the model
place timestamps past the end).
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from voxbox.engines.asr.faster_whisper.timing import Meter, timed_model_class
from voxbox.engines.asr.whisper.timestamps import clamp, clamp_word
from voxbox.engines.asr.whisper.tokens import WhisperTokenizer
from voxbox.engines.asr.whisper.validate import check_call
from voxbox.engines.base import Batchable, cancellable
from voxbox.engines.spec import build_options
from voxbox.errors import BadInputError, DeviceError, ModelLoadError
from voxbox.types import (
    Audio,
    CancelToken,
    ComponentSpec,
    EngineInfo,
    Segment,
    StageTimings,
    TranscriptionInfo,
)

__all__ = ["FasterWhisperEngine"]

SAMPLE_RATE = 16000
DEFAULT_TEMPERATURES = (0.0, 0.2, 0.4, 0.6, 0.8, 1.0)
#: Audio at least this long goes through the batched pipeline when batch_size is left to "auto"
#: and the engine runs on CUDA (on CPU the sequential decoder is as fast and keeps context).
AUTO_BATCH_MIN_SECONDS = 60.0
AUTO_BATCH_SIZE = 8
#: Options handled here rather than passed to faster-whisper's ``transcribe`` under their own names.
_OWN_OPTIONS = ("beam_size", "temperature", "vad_filter", "batch_size", "log_progress")
_PARAM_COUNTS = {"tiny": 39_000_000, "base": 74_000_000, "small": 244_000_000, "medium": 769_000_000,
                 "large": 1_550_000_000, "turbo": 809_000_000}


def _compute_type_supported(ct2: Any, device: str, compute_type: str) -> bool:
    """Whether CTranslate2 lists ``compute_type`` for ``device`` ("auto"/"default" always are)."""
    if compute_type in ("auto", "default"):
        return True
    try:
        return compute_type in set(ct2.get_supported_compute_types(device))
    except Exception:  # noqa: BLE001 - no such device: the type is not usable there
        return False


class FasterWhisperEngine(Batchable):
    def __init__(self, model_id: str, model_dir: Path, *, device: str, device_index: int, compute_type: str,
                 cpu_threads: int, num_workers: int) -> None:
        from voxbox.engines.asr.faster_whisper import _import_backend

        self._ct2, self._fw = _import_backend()
        cls = timed_model_class(self._fw)
        try:
            self.model = cls(str(model_dir), device=device, device_index=device_index, compute_type=compute_type,
                             cpu_threads=cpu_threads, num_workers=num_workers, local_files_only=True)
        except ValueError as exc:
            msg = " ".join(str(exc).split())
            if not _compute_type_supported(self._ct2, device, compute_type):
                raise BadInputError(f"faster-whisper cannot use dtype {compute_type!r} on {device}: {msg}",
                                    param="dtype") from exc
            raise ModelLoadError(f"could not load faster-whisper model {model_id!r} from {model_dir}: {msg}") from exc
        except RuntimeError as exc:
            msg = " ".join(str(exc).split())
            if device == "cuda":
                raise DeviceError(f"faster-whisper could not load on CUDA: {msg}") from exc
            raise ModelLoadError(f"could not load faster-whisper model {model_id!r} from {model_dir}: {msg}") from exc
        except Exception as exc:  # noqa: BLE001 - tokenizers raises a bare Exception for a corrupt tokenizer.json
            msg = " ".join(str(exc).split())[:300] or type(exc).__name__
            raise ModelLoadError(f"could not load faster-whisper model {model_id!r} from {model_dir}: {msg}") from exc
        from voxbox.engines.asr.faster_whisper.batcher import RoutedWhisper

        # encode/generate of transcriptions made while a scheduler is attached go through it
        self.model.model = RoutedWhisper(self.model.model, self.model.hf_tokenizer.token_to_id("<|startoftranscript|>"))
        self._scheduler: Any = None
        self._inflight = 0  # batched transcriptions started and not yet finished
        self._inflight_lock = threading.Lock()
        self.multilingual = bool(self.model.model.is_multilingual)
        self.languages = tuple(WhisperTokenizer(self.model.hf_tokenizer).language_ids) if self.multilingual else ("en",)
        self._model_dir = model_dir
        self.info = EngineInfo(
            name="faster-whisper",
            task="asr",
            model=model_id,
            device=device if device == "cpu" else f"{device}:{device_index}",
            dtype=compute_type,
            sample_rate=SAMPLE_RATE,
            languages=self.languages,
            supports_translation=self.multilingual,
            supports_word_timestamps=True,
            max_concurrency=max(1, num_workers),
            extra={"model_dir": str(model_dir), "cpu_threads": cpu_threads, "num_workers": num_workers},
        )

    # -- API --------------------------------------------------------------------------------------
    def transcribe(self, audio: Audio, language: str | None = None, prompt: str | None = None,
                   word_timestamps: bool = False, task: str = "transcribe", options: Any = None, *,
                   cancel: CancelToken | None = None, **kwargs: Any) -> tuple[Iterator[Segment], TranscriptionInfo]:
        from voxbox.engines.asr.faster_whisper import FasterWhisperOptions

        lang = check_call(audio, language, prompt, word_timestamps, task, engine="faster-whisper",
                          model=self.info.model, languages=self.languages, word_timestamps_supported=True)
        o = build_options(FasterWhisperOptions, options, **kwargs)
        timings = StageTimings()
        samples = audio.samples
        if audio.sample_rate != SAMPLE_RATE:
            from voxbox.audio.resample import resample

            with timings.measure("resample"):
                samples = resample(samples, audio.sample_rate, SAMPLE_RATE)
        samples = np.ascontiguousarray(samples, dtype=np.float32)
        duration = len(samples) / SAMPLE_RATE
        call = self._call(o, lang, task, prompt, word_timestamps, duration)
        batched = "batch_size" in call
        # the batched pipeline keeps per-run state: one per call
        runner = self._fw.BatchedInferencePipeline(self.model) if batched else self.model
        meter = Meter(timings)
        route = self._start_route(cancel)
        try:
            with meter.outer("prepare"), self._routed(route):
                fw_segments, fw_info = runner.transcribe(samples, **call)
        except (ValueError, TypeError) as exc:
            self._end_route(route)
            raise BadInputError(f"invalid transcription option: {' '.join(str(exc).split())}") from exc
        except BaseException:
            self._end_route(route)
            raise
        temperature = call["temperature"]
        info = TranscriptionInfo(
            language=fw_info.language,
            language_probability=float(fw_info.language_probability) if fw_info.language_probability is not None
            else None,
            duration=duration,
            task=task,  # type: ignore[arg-type]
            options={
                "model": self.info.model, "beam_size": call["beam_size"],
                "temperature": list(temperature) if isinstance(temperature, list) else [temperature],
                "vad_filter": call["vad_filter"], "word_timestamps": word_timestamps,
                "batched": batched, "batch_size": call.get("batch_size", 1),
                "batched_across_requests": route is not None,
                "duration_after_vad": float(fw_info.duration_after_vad),
                "device": self.info.device, "compute_type": self.info.dtype,
            },
            timings=timings,
        )
        segments = self._segments(fw_segments, meter, duration, route)
        if route is not None:  # a generator never started runs no finally: release it when collected
            weakref.finalize(segments, self._end_route, route)
        return cancellable(segments, cancel), info

    # -- batching across requests (the runtime attaches a scheduler; see batcher.py) --------------------
    def batcher(self, config: Any) -> Any:
        """The runtime's scheduler drives this: each CTranslate2 encode/generate of the
        transcriptions in flight is one op; a step runs the ops of all of them as one call."""
        from voxbox.engines.asr.faster_whisper.batcher import WhisperOpBatcher

        batcher = WhisperOpBatcher(self.model.model.real, int(config.max_batch), self._expected)
        if self.info.device == "cpu":  # the tested path; a check would cost a second or two of load time
            return batcher
        tok = WhisperTokenizer(self.model.hf_tokenizer)
        batcher.check(int(getattr(self.model.model, "n_mels", 80) or 80),
                      tok.sot_sequence("en" if self.multilingual else None, "transcribe", timestamps=False))
        return batcher

    def _expected(self) -> int:
        return self._inflight

    def _start_route(self, cancel: CancelToken | None) -> Any:
        from voxbox.engines.asr.faster_whisper.batcher import _Route

        sched = self._scheduler
        if sched is None:
            return None
        with self._inflight_lock:
            self._inflight += 1
        return _Route(sched, cancel if cancel is not None else CancelToken())

    def _end_route(self, route: Any) -> None:
        if route is None or getattr(route, "ended", False):
            return
        route.ended = True
        with self._inflight_lock:
            self._inflight -= 1

    @contextmanager
    def _routed(self, route: Any) -> Iterator[None]:
        if route is None:
            yield
            return
        prev = self.model.model.enter(route)
        try:
            yield
        finally:
            self.model.model.enter(prev)

    def _call(self, o: Any, lang: str | None, task: str, prompt: str | None, word_timestamps: bool,
              duration: float) -> dict[str, Any]:
        """faster-whisper ``transcribe`` keywords for these options; ``batch_size`` is there when
        the batched pipeline runs (asked for, or "auto" on CUDA for long audio)."""
        passed = {k: v for k, v in o.given().items() if k not in _OWN_OPTIONS}
        if "suppress_tokens" in passed:
            passed["suppress_tokens"] = list(passed["suppress_tokens"])
        temperatures = list(o.temperature) if o.temperature is not None else list(DEFAULT_TEMPERATURES)
        call: dict[str, Any] = dict(
            language=lang, task=task, beam_size=o.beam_size or 5,
            temperature=temperatures if len(temperatures) > 1 else temperatures[0],
            initial_prompt=prompt or None, word_timestamps=word_timestamps, log_progress=bool(o.log_progress),
            **passed,
        )
        if o.batch_size is None:
            batched = self.info.device.startswith("cuda") and duration >= AUTO_BATCH_MIN_SECONDS
        else:
            batched = o.batch_size > 1
        if not batched:
            call["vad_filter"] = bool(o.vad_filter)
            return call
        if o.vad_filter is False and duration >= 30.0 and not passed.get("clip_timestamps"):
            raise BadInputError("the batched pipeline needs vad_filter for audio of 30 s or more", param="vad_filter")
        call["vad_filter"] = True if o.vad_filter is None else o.vad_filter
        call["batch_size"] = o.batch_size or AUTO_BATCH_SIZE
        call.pop("condition_on_previous_text", None)  # the batched pipeline never conditions
        return call

    def _segments(self, fw_segments: Iterator[Any], meter: Meter, duration: float,
                  route: Any = None) -> Iterator[Segment]:
        try:
            yield from self._segments_of(fw_segments, meter, duration, route)
        finally:
            self._end_route(route)

    def _segments_of(self, fw_segments: Iterator[Any], meter: Meter, duration: float,
                     route: Any) -> Iterator[Segment]:
        it = iter(fw_segments)
        index = 0
        while True:
            with meter.outer("decode"), self._routed(route):
                try:
                    s = next(it)
                except StopIteration:
                    return
            span = clamp(float(s.start), float(s.end), duration)
            if span is None:  # starts after the end of the audio: a hallucination of the padding
                continue
            words = None
            if s.words is not None:
                words = [clamp_word(float(w.start), float(w.end), w.word, float(w.probability), duration)
                         for w in s.words]
            yield Segment(
                id=index,
                start=round(span[0], 3),
                end=round(span[1], 3),
                text=s.text,
                words=words,
                tokens=list(s.tokens) if s.tokens is not None else None,
                avg_logprob=float(s.avg_logprob) if s.avg_logprob is not None else None,
                no_speech_prob=float(s.no_speech_prob) if s.no_speech_prob is not None else None,
                compression_ratio=float(s.compression_ratio) if s.compression_ratio is not None else None,
                temperature=float(s.temperature) if s.temperature is not None else None,
            )
            index += 1

    def warm_up(self) -> float:
        """One real encoder pass and one decoder step on the loaded device; returns seconds.

        On CUDA this is where a missing or mismatched cuBLAS/cuDNN shows up (counting devices and
        copying memory work without them), so ``load`` runs it before trusting the device.
        """
        ct2 = self._ct2
        t0 = time.perf_counter()
        n_mels = int(getattr(self.model.model, "n_mels", 80) or 80)
        feats = ct2.StorageView.from_array(np.zeros((1, n_mels, 3000), dtype=np.float32))
        enc = self.model.model.encode(feats, to_cpu=False)
        tok = WhisperTokenizer(self.model.hf_tokenizer)
        prompt = tok.sot_sequence("en" if self.multilingual else None, "transcribe", timestamps=False)
        self.model.model.generate(enc, [prompt], max_length=3, beam_size=1)
        return time.perf_counter() - t0

    def components(self) -> list[ComponentSpec]:
        size = 0
        try:
            size = (self._model_dir / "model.bin").stat().st_size
        except OSError:
            pass
        key = next((k for k in _PARAM_COUNTS if k in self.info.model.lower()), None)
        params = _PARAM_COUNTS[key] if key else size // 2
        return [ComponentSpec(name="whisper", params=params, devices=("cpu", "cuda"),
                              dtypes=("float16", "int8_float16", "int8", "float32"), backend="ctranslate2",
                              kind="transformer", overhead_bytes=128 << 20)]

    def close(self) -> None:
        if getattr(self, "_scheduler", None) is not None:
            self._scheduler.close()
            self._scheduler = None
        model = getattr(self, "model", None)
        if model is not None:
            try:
                model.model.unload_model()
            except Exception:  # noqa: BLE001, S110 - best effort while unloading
                pass
            self.model = None
