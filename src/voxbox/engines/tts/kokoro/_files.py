"""Find Kokoro-82M's files in a local directory (no downloads, no heavy imports).

Two upstream layouts are recognised:

ONNX (as ``kokoro-onnx`` uses it)::

    kokoro-v1.0.onnx            # or any one *.onnx (fp16/int8 exports too); model.onnx
    voices-v1.0.bin             # numpy .npz archive: voice name -> float32 [510, 1, 256]
    config.json                 # optional: {"vocab": {...}}; else the graph's "kokoro_config"
                                #   metadata, else Kokoro v1.0's vocabulary shipped with voxbox

PyTorch (``hexgrad/Kokoro-82M``, as the ``kokoro`` package loads it)::

    config.json                 # vocab, plbert, istftnet ... (required)
    kokoro-v1_0.pth             # or any one *.pth
    voices/af_heart.pt ...      # one torch tensor [510, 1, 256] per voice (or a voices .bin/.npz)

``backend`` chooses when both are present (default: ONNX Runtime).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from voxbox.errors import ModelNotFoundError

__all__ = ["KokoroFiles", "find_files"]

BACKENDS = ("onnx", "torch")


@dataclass(frozen=True)
class KokoroFiles:
    root: Path
    backend: str  # "onnx" | "torch"
    model: Path
    voices: Path  # an .npz/.bin archive, or a directory of .pt/.npy files
    config: Path | None


def _one(paths: list[Path], what: str, root: Path, prefer: tuple[str, ...] = ()) -> Path | None:
    if not paths:
        return None
    for name in prefer:
        for p in paths:
            if p.name == name:
                return p
    if len(paths) > 1:
        names = ", ".join(sorted(p.name for p in paths))
        raise ModelNotFoundError(f"{root} has several {what} files ({names}); keep one or name it as the model path",
                                 param="model")
    return paths[0]


def _voices(root: Path) -> Path | None:
    archives = sorted(p for p in root.iterdir() if p.is_file() and p.name.startswith("voices")
                      and p.suffix in (".bin", ".npz"))
    found = _one(archives, "voices archive", root, prefer=("voices-v1.0.bin", "voices.bin", "voices.npz"))
    if found is not None:
        return found
    vdir = root / "voices"
    if vdir.is_dir() and any(p.suffix in (".pt", ".npy") for p in vdir.iterdir()):
        return vdir
    return None


def find_files(model: str | Path, backend: str | None = None) -> KokoroFiles:
    """The files of the Kokoro model at ``model`` (a directory, or one .onnx/.pth file inside one).

    Raises :class:`ModelNotFoundError` naming what is missing."""
    if backend not in (None, "", "auto", *BACKENDS):
        raise ModelNotFoundError(f"unknown kokoro backend {backend!r}; use onnx or torch", param="backend")
    path = Path(model).expanduser()
    if not path.exists():
        raise ModelNotFoundError(f"kokoro model {str(model)!r} not found (a directory with kokoro-v1.0.onnx and "
                                 "voices-v1.0.bin, or config.json, kokoro-v1_0.pth and voices/)", param="model")
    root = path if path.is_dir() else path.parent
    if path.is_file():
        if path.suffix not in (".onnx", ".pth"):
            raise ModelNotFoundError(f"{path.name} is not a Kokoro model file (.onnx or .pth)", param="model")
        onnx_files = [path] if path.suffix == ".onnx" else []
        pth_files = [path] if path.suffix == ".pth" else []
    else:
        onnx_files = sorted(root.glob("*.onnx"))
        pth_files = sorted(root.glob("*.pth"))
    config = root / "config.json"
    config_path = config if config.is_file() else None
    want = None if backend in (None, "", "auto") else backend
    if want is None:
        want = "onnx" if onnx_files else "torch" if pth_files else None
    if want is None:
        raise ModelNotFoundError(f"{root} has no Kokoro model: expected kokoro-v1.0.onnx (ONNX) or kokoro-v1_0.pth "
                                 "with config.json (PyTorch)", param="model")
    if want == "onnx":
        model_file = _one(onnx_files, ".onnx", root, prefer=("kokoro-v1.0.onnx", "model.onnx"))
    else:
        model_file = _one(pth_files, ".pth", root, prefer=("kokoro-v1_0.pth",))
        if model_file is not None and config_path is None:
            raise ModelNotFoundError(f"{root} has {model_file.name} but no config.json (the PyTorch checkpoint needs "
                                     "its config)", param="model")
    if model_file is None:
        ext = ".onnx" if want == "onnx" else ".pth"
        raise ModelNotFoundError(f"{root} has no {ext} file for the {want} backend", param="model")
    voices = _voices(root)
    if voices is None:
        raise ModelNotFoundError(f"{root} has no Kokoro voices: expected voices-v1.0.bin (npz archive) or a voices/ "
                                 "directory of .pt files", param="model")
    return KokoroFiles(root=root, backend=want, model=model_file, voices=voices, config=config_path)
