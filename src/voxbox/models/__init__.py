"""Bundled model weights: where they are, their SHA-256 manifest, and verification."""

from voxbox.models.bundled import (
    BUNDLES,
    Bundle,
    ChecksumMismatchError,
    bundle_status,
    cache_dir,
    hibari_voice_path,
    piper_joe_paths,
    sha256_file,
    verify_file,
    whisper_base_dir,
    whisper_tiny_en_dir,
)

__all__ = [
    "BUNDLES",
    "Bundle",
    "ChecksumMismatchError",
    "bundle_status",
    "cache_dir",
    "hibari_voice_path",
    "piper_joe_paths",
    "sha256_file",
    "verify_file",
    "whisper_base_dir",
    "whisper_tiny_en_dir",
]
