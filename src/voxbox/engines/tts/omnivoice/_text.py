"""OmniVoice prompt text: language, voice description, text normalisation, tokens, target length.

Each function states the upstream behaviour it reproduces (``omnivoice/models/omnivoice.py``, which
voxbox cannot import; see ``_upstream``). The prompt is, per codebook row::

    [<|denoise|>]<|lang_start|>LANG<|lang_end|><|instruct_start|>DESCRIPTION<|instruct_end|>
    <|text_start|>REFERENCE TEXT + " " + TEXT<|text_end|>   [reference audio tokens]   [target: MASK x T]
"""

from __future__ import annotations

import difflib
import math
import re
from typing import Any

from voxbox.errors import BadInputError

from . import _upstream

__all__ = ["NONVERBAL", "combine_text", "estimate_frames", "resolve_instruct", "resolve_language", "schedule",
           "style_text", "text_ids", "timesteps"]

#: Non-verbal tags upstream tokenizes on their own (the same ids whatever the surrounding language).
NONVERBAL = re.compile(
    r"\[(laughter|sigh|confirmation-en|question-en|question-ah|question-oh|question-ei|question-yi|"
    r"surprise-ah|surprise-oh|surprise-wa|surprise-yo|dissatisfaction-hnn)\]")
_CJK = re.compile(r"[\u4e00-\u9fff]")
_CJK_SPACE = re.compile(r"(?<=[\u4e00-\u9fff])\s+|\s+(?=[\u4e00-\u9fff])")
#: Reference used to estimate a length when there is no reference clip (upstream's fallback).
FALLBACK_REF_TEXT, FALLBACK_REF_FRAMES = "Nice to meet you.", 25


def resolve_language(language: str | None) -> str | None:
    """A language id (``en``), a name (``English``, any case) or ``None``/``"none"`` -> id or None.

    Upstream logs a warning and falls back to no language for unknown names; voxbox refuses them
    (a misspelt language should not silently change the prompt)."""
    if language is None or language.strip().lower() in ("", "none"):
        return None
    lm = _upstream.lang_map()
    if language in lm.LANG_IDS:
        return language
    key = language.strip().lower()
    if key in lm.LANG_NAME_TO_ID:
        return str(lm.LANG_NAME_TO_ID[key])
    raise BadInputError(
        f"unknown language {language!r}: use an id such as 'en', 'zh', 'de' or a name such as 'English'",
        param="language",
    )


def resolve_instruct(description: str | None, text: str) -> str | None:
    """The voice-design description as upstream puts it in the prompt, or ``None``.

    Items are separated by commas (either width); each must be one of upstream's attributes
    (gender, age, pitch, whisper, an English accent or a Chinese dialect), at most one per
    category. All items are written in one language: Chinese if a dialect is named or (without an
    accent) the text contains Chinese, else English; joined with ``", "`` or ``"，"``."""
    if description is None or not description.strip():
        return None
    vd = _upstream.voice_design()
    valid = vd._INSTRUCT_ALL_VALID
    items = [s for s in re.split(r"\s*[,，]\s*", description.strip()) if s]
    wrong = []
    names = []
    for item in items:
        name = item.strip().lower()
        if name in valid:
            names.append(name)
            continue
        close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
        wrong.append(f"{item!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    if wrong:
        raise BadInputError(
            f"unsupported voice description item(s) {', '.join(wrong)}; use comma-separated items from: "
            f"{', '.join(sorted(vd._INSTRUCT_VALID_EN))}",
            param="voice_description",
        )
    dialect = any(n.endswith("话") for n in names)
    accent = any(" accent" in n for n in names)
    if dialect and accent:
        raise BadInputError("a voice description cannot name both a Chinese dialect and an English accent",
                            param="voice_description")
    chinese = True if dialect else False if accent else bool(_CJK.search(text))
    table = vd._INSTRUCT_EN_TO_ZH if chinese else vd._INSTRUCT_ZH_TO_EN
    names = [table.get(n, n) for n in names]
    for group in vd._INSTRUCT_MUTUALLY_EXCLUSIVE:
        hits = [n for n in names if n in group]
        if len(hits) > 1:
            raise BadInputError(f"conflicting voice description items: {' vs '.join(hits)} (one per category)",
                                param="voice_description")
    return ("，" if any(_CJK.search(n) for n in names) else ", ").join(names)


def combine_text(text: str, ref_text: str | None = None) -> str:
    """Reference transcript + text, with upstream's clean-up (no newlines, ASCII parentheses, single
    spaces, no spaces next to Chinese characters)."""
    full = f"{ref_text.strip()} {text.strip()}" if ref_text else text.strip()
    full = re.sub(r"[\r\n]+", "", full).replace("\uff08", "(").replace("\uff09", ")")
    full = re.sub(r"[ \t]+", " ", full)
    return _CJK_SPACE.sub("", full)


def style_text(language: str | None, instruct: str | None, denoise: bool) -> str:
    """The style prefix; ``<|denoise|>`` only goes with a reference clip (``denoise`` = clone and asked)."""
    head = "<|denoise|>" if denoise else ""
    return (f"{head}<|lang_start|>{language or 'None'}<|lang_end|>"
            f"<|instruct_start|>{instruct or 'None'}<|instruct_end|>")


def text_ids(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``<|text_start|>...<|text_end|>``: non-verbal tags encoded on their own."""
    parts: list[int] = []
    last = 0
    for m in NONVERBAL.finditer(text):
        if m.start() > last:
            parts += tokenizer.encode(text[last:m.start()], add_special_tokens=False).ids
        parts += tokenizer.encode(m.group(), add_special_tokens=False).ids
        last = m.end()
    if last < len(text):
        parts += tokenizer.encode(text[last:], add_special_tokens=False).ids
    return parts or list(tokenizer.encode(text).ids)


def estimate_frames(estimator: Any, text: str, ref_text: str | None, ref_frames: int | None, speed: float = 1.0) -> int:
    """Target length in frames (upstream ``_estimate_target_tokens``)."""
    if ref_frames is None or not ref_text:
        ref_text, ref_frames = FALLBACK_REF_TEXT, FALLBACK_REF_FRAMES
    est = estimator.estimate_duration(text, ref_text, ref_frames)
    if speed > 0 and speed != 1.0:
        est = est / speed
    return max(1, int(est))


def timesteps(steps: int, t_shift: float) -> list[float]:
    """Upstream ``_get_time_steps``: shifted times in float32, as Python floats."""
    import torch

    t = torch.linspace(0.0, 1.0, steps + 1)
    return (t_shift * t / (1 + (t_shift - 1) * t)).tolist()


def schedule(frames: int, codebooks: int, steps: int, t_shift: float) -> list[int]:
    """How many of the ``frames x codebooks`` masked tokens each step reveals (sums to all of them)."""
    ts = timesteps(steps, t_shift)
    total = remaining = frames * codebooks
    out = []
    for step in range(steps):
        n = remaining if step == steps - 1 else min(math.ceil(total * (ts[step + 1] - ts[step])), remaining)
        out.append(int(n))
        remaining -= int(n)
    return out
