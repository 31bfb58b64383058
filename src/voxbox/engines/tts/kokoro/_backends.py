"""The two ways to run Kokoro-82M: its ONNX export on ONNX Runtime, its PyTorch checkpoint on torch.

Both take phoneme ids (without the pads), a [1, 256] style row and a speed, and return the audio
(float32, 24 kHz) and, when the model reports them, the frames per token (pads included) that word
timestamps come from.

ONNX graphs as kokoro-onnx reads them: inputs ``tokens`` (v1.0 export) or ``input_ids`` (newer
exports) int64 [1, T+2], ``style`` float32 [1, 256], ``speed`` float32 [1] (int32 in the v1.1-zh
export); outputs the waveform first and, in exports made with durations, ``duration`` int64 [T+2].

PyTorch: the upstream ``kokoro`` package's ``KModel`` (model classes only — its ``__init__`` pulls
the misaki/spacy G2P stack, so the three model modules are executed on their own, see
:func:`upstream_kmodel`), ``forward_with_tokens`` returning audio and ``pred_dur``.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import types
from pathlib import Path
from typing import Any

import numpy as np

from voxbox.errors import DeviceError, EngineUnavailableError, ModelLoadError

__all__ = ["OnnxKokoro", "TorchKokoro", "upstream_kmodel", "vocab_from"]

ONNX_HINT = "pip install 'voxbox[kokoro]'"
TORCH_HINT = "pip install torch transformers loguru && pip install --no-deps kokoro==0.9.4"
_NP_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
             "tensor(int32)": np.int32, "tensor(int64)": np.int64}
_DURATION_NAMES = ("duration", "durations", "pred_dur")


def _default_vocab() -> dict[str, int]:
    data = json.loads((Path(__file__).with_name("vocab_v1.json")).read_text(encoding="utf-8"))
    return {str(k): int(v) for k, v in data["vocab"].items()}


def vocab_from(config: Path | None, metadata: dict[str, str] | None = None) -> tuple[dict[str, int], str]:
    """(vocab, where it came from): config.json, then the graph's ``kokoro_config``, then Kokoro v1.0's."""
    if config is not None:
        try:
            vocab = json.loads(config.read_text(encoding="utf-8"))["vocab"]
            return {str(k): int(v) for k, v in vocab.items()}, config.name
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ModelLoadError(f"could not read the vocabulary from {config}: {exc}") from exc
    raw = (metadata or {}).get("kokoro_config")
    if raw:
        try:
            return {str(k): int(v) for k, v in json.loads(raw)["vocab"].items()}, "graph metadata"
        except (ValueError, KeyError, TypeError):
            pass
    return _default_vocab(), "kokoro v1.0 default"


class OnnxKokoro:
    """One ``InferenceSession`` over the Kokoro graph; ``run`` is thread-safe (ORT sessions are)."""

    def __init__(self, path: Path, *, device: str = "auto", threads: int = 0) -> None:
        try:
            import onnxruntime as ort  # type: ignore[import-untyped]
        except ImportError as exc:
            raise EngineUnavailableError(f"kokoro (onnx) needs onnxruntime ({exc})", install_hint=ONNX_HINT) from exc
        from voxbox.engines.asr.onnx_whisper import PROVIDERS, pick_providers

        kind, index, providers = pick_providers(device)
        so = ort.SessionOptions()
        so.log_severity_level = 3
        if threads:
            so.intra_op_num_threads = int(threads)
            so.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(path), so, providers=providers)
        except Exception as exc:
            msg = " ".join(str(exc).split())[:300]
            if kind != "cpu":
                raise DeviceError(f"kokoro could not start on {PROVIDERS[kind]}: {msg}") from exc
            raise ModelLoadError(f"could not load the Kokoro graph {path.name}: {msg}") from exc
        used = self.session.get_providers()[0]
        if used != PROVIDERS[kind]:
            raise DeviceError(f"onnxruntime fell back to {used} although {PROVIDERS[kind]} was requested")
        self.provider = used
        self.device = kind if kind == "cpu" else f"{kind}:{index}"
        inputs = {i.name: i for i in self.session.get_inputs()}
        self.ids_name = "input_ids" if "input_ids" in inputs else "tokens"
        missing = [n for n in (self.ids_name, "style", "speed") if n not in inputs]
        if missing:
            raise ModelLoadError(f"{path.name} is not a Kokoro graph: no input(s) {', '.join(missing)} "
                                 f"(has {', '.join(inputs)})")
        self.types = {n: _NP_TYPES.get(i.type, np.float32) for n, i in inputs.items()}
        outputs = [o.name for o in self.session.get_outputs()]
        self.outputs = [outputs[0]]
        self.duration_name = next((n for n in outputs if n in _DURATION_NAMES), None)
        if self.duration_name is not None:
            self.outputs.append(self.duration_name)
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.params = max(0, path.stat().st_size // 4)

    @property
    def has_durations(self) -> bool:
        return self.duration_name is not None

    def run(self, ids: list[int], style: np.ndarray, speed: float) -> tuple[np.ndarray, np.ndarray | None]:
        speed_t = self.types["speed"]
        speed_v = max(1, round(speed)) if np.dtype(speed_t).kind in "iu" else speed
        feeds = {
            self.ids_name: np.array([[0, *ids, 0]], dtype=self.types[self.ids_name]),
            "style": np.asarray(style, dtype=self.types["style"]),
            "speed": np.array([speed_v], dtype=speed_t),
        }
        out = self.session.run(self.outputs, feeds)
        audio = np.asarray(out[0], dtype=np.float32).ravel()
        dur = np.asarray(out[1]).ravel().astype(np.int64) if len(out) > 1 else None
        return audio, dur


_UPSTREAM: dict[str, Any] = {}
_UPSTREAM_LOCK = threading.Lock()


def upstream_kmodel() -> Any:
    """The upstream ``KModel`` class, from the installed ``kokoro`` package's model modules only.

    ``kokoro/__init__.py`` imports ``KPipeline`` and with it misaki's English G2P (spacy); voxbox
    phonemizes itself, so it executes ``custom_stft``, ``istftnet``, ``modules`` and ``model``
    under a private package name. ``istftnet`` imports ``kokoro.custom_stft`` absolutely; that one
    name is pointed at the private copy when no real ``kokoro`` import happened before."""
    with _UPSTREAM_LOCK:
        if "KModel" in _UPSTREAM:
            return _UPSTREAM["KModel"]
        try:
            spec = importlib.util.find_spec("kokoro")
        except (ImportError, ValueError):
            spec = None
        if spec is None or not spec.submodule_search_locations:
            raise EngineUnavailableError("kokoro (torch) needs the kokoro package", install_hint=TORCH_HINT)
        root = Path(next(iter(spec.submodule_search_locations)))
        pkg_name = f"{__name__.rsplit('.', 1)[0]}._upstream"
        pkg = types.ModuleType(pkg_name)
        pkg.__path__ = [str(root)]
        sys.modules[pkg_name] = pkg
        try:
            stft = importlib.import_module(f"{pkg_name}.custom_stft")
            sys.modules.setdefault("kokoro.custom_stft", stft)
            model = importlib.import_module(f"{pkg_name}.model")
        except ImportError as exc:
            raise EngineUnavailableError(f"kokoro's model modules could not be imported: {exc}",
                                         install_hint=TORCH_HINT) from exc
        try:  # upstream's __init__ silences its loguru logger; do the same for the private copy
            from loguru import logger

            logger.disable(pkg_name)
        except ImportError:
            pass
        _UPSTREAM["KModel"] = model.KModel
        return model.KModel


class TorchKokoro:
    """Upstream ``KModel`` on a torch device (float32, like upstream)."""

    has_durations = True
    provider = "torch"

    def __init__(self, checkpoint: Path, config: Path, *, device: str = "auto", threads: int = 0) -> None:
        try:
            import torch
        except ImportError as exc:
            raise EngineUnavailableError(f"kokoro (torch) needs torch ({exc})", install_hint=TORCH_HINT) from exc
        from voxbox.engines.placement import torch_device

        if threads:
            torch.set_num_threads(int(threads))
        self.torch = torch
        dev = torch_device(device)
        kmodel_cls = upstream_kmodel()
        try:
            model = kmodel_cls(repo_id="hexgrad/Kokoro-82M", config=str(config), model=str(checkpoint))
        except (OSError, RuntimeError, KeyError, AssertionError, ValueError) as exc:
            raise ModelLoadError(f"could not load the Kokoro checkpoint {checkpoint.name}: {exc}") from exc
        self.model = model.to(dev).eval()
        self.device = str(dev)
        self.metadata: dict[str, str] = {}
        self.params = sum(p.numel() for p in self.model.parameters())
        self._lock = threading.Lock()

    def run(self, ids: list[int], style: np.ndarray, speed: float) -> tuple[np.ndarray, np.ndarray | None]:
        torch = self.torch
        dev = self.model.device
        with self._lock, torch.inference_mode():
            input_ids = torch.tensor([[0, *ids, 0]], dtype=torch.long, device=dev)
            ref = torch.from_numpy(np.ascontiguousarray(style, dtype=np.float32)).to(dev)
            audio, dur = self.model.forward_with_tokens(input_ids, ref, float(speed))
            return (audio.float().cpu().numpy().ravel().astype(np.float32),
                    dur.cpu().numpy().ravel().astype(np.int64))
