"""Hardware: find a configuration that works on this machine instead of hanging or silently using the CPU.

* :mod:`voxbox.hardware.detect`  CPU/RAM/GPUs/drivers and what torch, CTranslate2 and ONNX Runtime see
  (``detect()``, cached per process; ``MachineInfo`` round-trips through JSON).
* :mod:`voxbox.hardware.probe`   tiny real inference in a child process with a watchdog and a memory
  guard: ok / error / hang / slow / silent_fallback, cached on disk per hardware+driver+library versions.
* :mod:`voxbox.hardware.quirks`  ``quirks.yaml``: known problems, remedies and sources, plus the matcher.
* :mod:`voxbox.hardware.plan`    device/dtype per engine component with a one-sentence reason;
  ``resolve_device()`` / ``default_device_for()`` for engines, ``plan_machine()`` for ``doctor``.
* :mod:`voxbox.hardware.doctor`  the report behind ``voxbox doctor`` (``cli.register`` adds the command).

Nothing here imports torch, CTranslate2 or ONNX Runtime at import time.
"""
