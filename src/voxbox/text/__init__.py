"""Text: the one scoring normaliser and WER (``scoring``), the English TTS front-end
(``normalize``, ``numbers``), sentence splitting (``sentences``) and the speakable-text gate every
TTS engine calls (``speech``).

Scoring uses Whisper's English normaliser semantics everywhere (tests, bench, convert); see
:mod:`voxbox.text.scoring`.
"""

from __future__ import annotations

from voxbox.text.normalize import normalize_for_speech
from voxbox.text.scoring import cer, edit_distance, normalize_text, wer, word_errors
from voxbox.text.sentences import split_sentences
from voxbox.text.speech import clean_text, ensure_speakable, speech_sentences

__all__ = [
    "cer",
    "clean_text",
    "edit_distance",
    "ensure_speakable",
    "normalize_for_speech",
    "normalize_text",
    "speech_sentences",
    "split_sentences",
    "wer",
    "word_errors",
]
