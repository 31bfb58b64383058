"""Whisper's tokenizer from a checkpoint's ``tokenizer.json`` (the ``tokenizers`` library; no hub).

Special-token ids are looked up by content, so English-only (``.en``) and multilingual vocabularies
(including large-v3's extra language) both work; timestamp tokens follow ``<|notimestamps|>``.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

from tokenizers import Tokenizer

__all__ = ["WhisperTokenizer"]


class WhisperTokenizer:
    def __init__(self, tokenizer: Tokenizer, vocab_size: int | None = None):
        self.tok = tokenizer
        tid = tokenizer.token_to_id

        def need(content: str) -> int:
            i = tid(content)
            if i is None:
                raise ValueError(f"tokenizer.json has no {content} token")
            return i

        self.eot = need("<|endoftext|>")
        self.sot = need("<|startoftranscript|>")
        self.translate = need("<|translate|>")
        self.transcribe = need("<|transcribe|>")
        self.sot_lm = tid("<|startoflm|>")
        self.sot_prev = need("<|startofprev|>")
        self.no_timestamps = need("<|notimestamps|>")
        no_speech = tid("<|nospeech|>")
        self.no_speech = no_speech if no_speech is not None else tid("<|nocaptions|>")
        self.timestamp_begin = self.no_timestamps + 1
        self.vocab_size = vocab_size or tokenizer.get_vocab_size(with_added_tokens=True)
        # languages sit between <|startoftranscript|> and <|translate|>
        self.language_ids: dict[str, int] = {}
        for i in range(self.sot + 1, self.translate):
            t = tokenizer.id_to_token(i)
            if t and t.startswith("<|") and t.endswith("|>"):
                self.language_ids[t[2:-2]] = i
        # English-only (.en) vocabularies still hold language tokens; openai-whisper's rule is the size
        self.multilingual = self.vocab_size >= 51865 and len(self.language_ids) > 1

    @classmethod
    def from_dir(cls, path: str | Path, vocab_size: int | None = None) -> "WhisperTokenizer":
        return cls(Tokenizer.from_file(str(Path(path) / "tokenizer.json")), vocab_size)

    @cached_property
    def languages(self) -> tuple[str, ...]:
        return tuple(self.language_ids) if self.multilingual else ("en",)

    def encode(self, text: str) -> list[int]:
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode([i for i in ids if i < self.eot], skip_special_tokens=False)

    def sot_sequence(self, language: str | None, task: str, timestamps: bool) -> list[int]:
        seq = [self.sot]
        if self.multilingual:
            seq.append(self.language_ids[language or "en"])
            seq.append(self.translate if task == "translate" else self.transcribe)
        if not timestamps:
            seq.append(self.no_timestamps)
        return seq

    @cached_property
    def non_speech_tokens(self) -> list[int]:
        """Symbols that are not speech (openai-whisper's default ``suppress_tokens=-1`` set)."""
        symbols = list('"#()*+/:;<=>@[\\]^_`{|}~「」『』')
        symbols += "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪".split()
        miscellaneous = set("♩♪♫♬♭♮♯")
        result = {self.encode(" -")[0], self.encode(" '")[0]}
        for symbol in symbols + list(miscellaneous):
            for tokens in (self.encode(symbol), self.encode(" " + symbol)):
                if len(tokens) == 1 or symbol in miscellaneous:
                    result.add(tokens[0])
        return sorted(result)
