"""Whisper's tokens in one place: the language table, the tokenizer from ``tokenizer.json`` (the
``tokenizers`` library; no hub), special tokens, start-of-transcript sequences, prompts and the
suppression lists.

Special-token ids are looked up by content, so English-only (``.en``) and multilingual
vocabularies (including large-v3's extra language) both work; timestamp tokens follow
``<|notimestamps|>``. Whether a model is multilingual follows openai-whisper's rule: the size of the
vocabulary (51864 entries for every English-only model, 51865 or more otherwise).
"""

from __future__ import annotations

import string
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

__all__ = ["LANGUAGES", "N_TIMESTAMPS", "WhisperTokenizer", "language_code"]

#: Whisper's language codes, in the order of their tokens after ``<|startoftranscript|>``
#: (``yue`` exists from large-v3 on).
LANGUAGES: tuple[str, ...] = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it", "id", "hi",
    "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur", "hr", "bg", "lt", "la",
    "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn", "et", "mk", "br", "eu", "is", "hy",
    "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc", "ka", "be",
    "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl",
    "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
)

#: Timestamp tokens <|0.00|> ... <|30.00|>.
N_TIMESTAMPS = 1501
#: Languages written without spaces between words: words are cut at character boundaries.
_NO_SPACE_LANGUAGES = frozenset({"zh", "ja", "th", "lo", "my", "yue"})
_MULTILINGUAL_VOCAB = 51865


def language_code(language: Any) -> str | None:
    """A language as given by a caller (``"en"``, ``"EN"``, ``"en-US"``, ``"en_GB"``; None or ""
    for "detect") -> Whisper's code, or None. Unknown codes raise :class:`BadInputError`."""
    from voxbox.errors import BadInputError

    if language is None or language == "":
        return None
    if not isinstance(language, str):
        raise BadInputError("language must be a string such as 'en'", param="language")
    code = language.strip().lower().replace("_", "-").split("-")[0]
    if code not in LANGUAGES:
        raise BadInputError(f"unknown language code {language!r} (use an ISO-639-1 code such as 'en')",
                            param="language")
    return code


class WhisperTokenizer:
    """Text <-> token ids and Whisper's special tokens.

    ``vocab_size``: the model's (``config.json``); default: the tokenizer's ids through the last
    timestamp token.
    """

    def __init__(self, tokenizer: Any, vocab_size: int | None = None):
        self.tok = tokenizer
        tid = tokenizer.token_to_id

        def need(content: str) -> int:
            i = tid(content)
            if i is None:
                raise ValueError(f"tokenizer.json has no {content} token")
            return int(i)

        self.eot = need("<|endoftext|>")
        self.sot = need("<|startoftranscript|>")
        self.translate = need("<|translate|>")
        self.transcribe = need("<|transcribe|>")
        self.sot_lm: int | None = tid("<|startoflm|>")
        self.sot_prev = need("<|startofprev|>")
        self.no_timestamps = need("<|notimestamps|>")
        no_speech = tid("<|nospeech|>")
        self.no_speech: int | None = no_speech if no_speech is not None else tid("<|nocaptions|>")
        self.timestamp_begin = self.no_timestamps + 1
        self.vocab_size = int(vocab_size or self.timestamp_begin + N_TIMESTAMPS)
        # languages sit between <|startoftranscript|> and <|translate|>
        self.language_ids: dict[str, int] = {}
        for i in range(self.sot + 1, self.translate):
            t = tokenizer.id_to_token(i)
            if t and t.startswith("<|") and t.endswith("|>"):
                self.language_ids[t[2:-2]] = i
        # English-only (.en) vocabularies still hold language tokens; the size decides
        self.multilingual = self.vocab_size >= _MULTILINGUAL_VOCAB and len(self.language_ids) > 1

    @classmethod
    def from_dir(cls, path: str | Path, vocab_size: int | None = None) -> WhisperTokenizer:
        from tokenizers import Tokenizer

        return cls(Tokenizer.from_file(str(Path(path) / "tokenizer.json")), vocab_size)

    @cached_property
    def languages(self) -> tuple[str, ...]:
        """The codes this model can be told to transcribe."""
        return tuple(self.language_ids) if self.multilingual else ("en",)

    def encode(self, text: str) -> list[int]:
        return list(self.tok.encode(text, add_special_tokens=False).ids)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` without special and timestamp tokens."""
        return str(self.tok.decode([i for i in ids if i < self.eot], skip_special_tokens=False))

    def sot_sequence(self, language: str | None, task: str, timestamps: bool) -> list[int]:
        seq = [self.sot]
        if self.multilingual:
            seq.append(self.language_ids[language or "en"])
            seq.append(self.translate if task == "translate" else self.transcribe)
        if not timestamps:
            seq.append(self.no_timestamps)
        return seq

    def prompt_tokens(self, text: str | None) -> list[int]:
        """A caller's initial prompt as previous-text tokens (empty for none)."""
        return self.encode(" " + text.strip()) if text and text.strip() else []

    def decoder_prompt(self, sot_sequence: Sequence[int], previous: Sequence[int], n_ctx: int) -> list[int]:
        """``<|startofprev|>`` + the last ``n_ctx // 2 - 1`` previous tokens (if any) + the sot sequence."""
        if not previous:
            return list(sot_sequence)
        return [self.sot_prev, *previous[-(n_ctx // 2 - 1):], *sot_sequence]

    @cached_property
    def non_speech_tokens(self) -> tuple[int, ...]:
        """Symbols that are not speech (openai-whisper's default ``suppress_tokens=-1`` set)."""
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += [
            "<<", ">>", "<<<", ">>>", "--", "---", "-(", "-[", "('", '("', "((", "))", "(((", ")))", "[[", "]]", "{{",
            "}}", "♪♪", "♪♪♪",
        ]
        miscellaneous = set("♩♪♫♬♭♮♯")
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + list(miscellaneous):
            for tokens in (self.encode(symbol), self.encode(" " + symbol)):
                if len(tokens) == 1 or symbol in miscellaneous:
                    result.add(tokens[0])
        return tuple(sorted(result))

    def suppress_tokens(self, configured: Sequence[int] | None) -> tuple[int, ...]:
        """Tokens never sampled: ``configured`` (a generation config's ``suppress_tokens``; ``-1``
        or None means the non-speech symbols) plus the task and special tokens."""
        ids = [-1] if configured is None else [int(t) for t in configured]
        if -1 in ids:
            ids = [t for t in ids if t >= 0] + list(self.non_speech_tokens)
        special = (self.transcribe, self.translate, self.sot, self.sot_prev, self.sot_lm, self.no_speech)
        ids += [t for t in special if t is not None]
        return tuple(sorted({t for t in ids if 0 <= t < self.vocab_size}))

    def begin_suppress_tokens(self, configured: Sequence[int] | None) -> tuple[int, ...]:
        """Tokens never sampled first (a generation config's ``begin_suppress_tokens``; default:
        the blank and end-of-text, openai-whisper's ``suppress_blank``)."""
        ids = [int(t) for t in configured] if configured is not None else [self.encode(" ")[0], self.eot]
        return tuple(t for t in ids if 0 <= t < self.vocab_size)

    def split_words(self, tokens: Sequence[int], language: str | None) -> tuple[list[str], list[list[int]]]:
        """Cut text tokens (special tokens allowed) into words: at spaces and punctuation, or at
        every complete character for languages written without spaces (openai-whisper's rule)."""
        pieces, groups = self._split_characters(tokens)
        if language in _NO_SPACE_LANGUAGES:
            return pieces, groups
        words: list[str] = []
        word_tokens: list[list[int]] = []
        for piece, group in zip(pieces, groups, strict=True):
            if group[0] >= self.eot or piece.startswith(" ") or piece.strip() in string.punctuation or not words:
                words.append(piece)
                word_tokens.append(list(group))
            else:
                words[-1] += piece
                word_tokens[-1].extend(group)
        return words, word_tokens

    def _split_characters(self, tokens: Sequence[int]) -> tuple[list[str], list[list[int]]]:
        """Groups of tokens that each decode to whole characters (a multi-byte character may span
        tokens: the group grows until its text has no replacement character of its own)."""
        text = self.decode  # special tokens decode to nothing
        full = text(tokens)
        pieces: list[str] = []
        groups: list[list[int]] = []
        current: list[int] = []
        offset = 0
        for t in tokens:
            current.append(t)
            piece = text(current)
            bad = piece.find("\ufffd")
            if bad < 0 or (offset + bad < len(full) and full[offset + bad] == "\ufffd"):
                pieces.append(piece)
                groups.append(current)
                current = []
                offset += len(piece)
        return pieces, groups
