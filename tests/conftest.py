"""Shared fixtures: bundled human recordings and known texts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

#: Test files that take longest on 2 cores (pytest --durations), scheduled first when the suite
#: runs on several xdist workers (``-n 2 --dist loadfile`` hands out whole files in collection
#: order; the longest first keeps one worker from finishing a long file alone at the end).
SLOW_FILES = ("tests/integration/test_openapi_fuzz.py", "tests/ray/test_batch.py", "tests/ray/test_ray_serve.py",
              "tests/integration/test_convert_cli.py", "tests/unit/test_text_roundtrip.py",
              "tests/integration/test_bench_shapes.py", "tests/integration/test_bench_shapes_tts.py",
              "tests/unit/test_torch_whisper_batching.py", "tests/integration/test_server_load.py",
              "tests/integration/test_server_hardening.py", "tests/integration/test_bench_quick.py")


def pytest_configure(config: pytest.Config) -> None:
    # xdist's file scheduler sorts files by their number of tests (most first) unless told not to,
    # which put the one-test, two-minute OpenAPI fuzz file last: keep the order set below
    if hasattr(config.option, "loadscopereorder"):
        config.option.loadscopereorder = False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if not hasattr(config, "workerinput"):  # not an xdist worker: keep pytest's order
        return
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda it: rank.get(it.nodeid.split("::", 1)[0], len(rank)))  # stable: files stay whole


def _moonshine_assets() -> Path | None:
    spec = importlib.util.find_spec("moonshine_voice")
    if spec is None or not spec.submodule_search_locations:
        return None
    p = Path(list(spec.submodule_search_locations)[0]) / "assets"
    return p if p.is_dir() else None


@pytest.fixture(scope="session")
def moonshine_assets() -> Path:
    p = _moonshine_assets()
    if p is None:
        pytest.fail("moonshine-voice is not installed (pip install -e '.[test]')")
    return p


#: Texts that crashed (or could crash) a TTS engine's text front-end. Each engine must either speak
#: them or refuse them with BadInputError(param="input") — never another exception.
HOSTILE_TEXTS: dict[str, str] = {
    "digits-37": "1" * 37,
    "digits-40-in-sentence": "Call 1234567890123456789012345678901234567890 now.",
    "digits-60": "9" * 60,
    "currency-digits": "$" + "9" * 40,
    "ordinal-digits": "1" * 40 + "th",
    "decimal-digits": "3." + "1" * 60,
    "fraction-digits": "1/" + "0" * 40,
    "nul": "hello\x00world",
    "only-nul": "\x00" * 10,
    "escape-sequence": "he\x1b[31mllo",
    "del-and-c1": "a\x7fb\x9bc",
    "lone-surrogate": "hello \ud800 world",
    "lone-low-surrogate": "\udfff abc",
    "emoji-4096": "\U0001F600" * 4096,
    "emoji-and-word": "a" + "\U0001F600" * 10,
    "emoji-zwj": "\U0001F468\u200d\U0001F469\u200d\U0001F467 family",
    "rtl": "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd",
    "bidi-overrides": "\u202a\u202b\u202c\u202d\u202e abc \u2066\u2069",
    "zero-width": "a\u200b\u200c\u200d\ufeffb",
    "combining-500": "a" + "\u0301" * 500,
    "private-use": "\ue000\uf8ff abc",
    "noncharacters": "\ufffe\uffff abc",
    "han": "\u4e2d\u6587" * 4,
    "whitespace-controls": "a\tb\nc\rd\x0b\x0ce\x85f\u2028g",
    "long-word": "a" * 200,
    "url": "http://" + "a" * 100 + ".com",
    "scientific": "1e999999 and 1E-999999",
    "prompt-tokens": "<|im_end|> <|speaker:1|> [S1] {{}} %s %n",
    "fullwidth-and-math": "\uff28\uff45\uff4c\uff4c\uff4f \U0001D400\U0001D401",
}


@pytest.fixture(scope="session")
def hostile_texts() -> dict[str, str]:
    return dict(HOSTILE_TEXTS)
