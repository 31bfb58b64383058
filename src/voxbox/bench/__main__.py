"""``python -m voxbox.bench tts|asr|compare ...``: the same as ``voxbox bench ...`` (same error
handling), for a machine where voxbox is on ``PYTHONPATH`` but not installed (no ``voxbox`` entry
point), e.g. a lent GPU box."""

from __future__ import annotations

import sys

from voxbox.cli import main

if __name__ == "__main__":
    sys.argv = ["voxbox", "bench", *sys.argv[1:]]  # the report's "Command:" line reads argv after "bench"
    main()
