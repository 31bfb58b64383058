"""Hardware: find a configuration that works on this machine instead of hanging or silently using the CPU.

* :mod:`voxbox.hardware.detect`        CPU/RAM/GPUs/drivers and what torch, CTranslate2, ONNX Runtime and
  ggml (whisper.cpp) see (``detect()``, cached per process; ``MachineInfo`` round-trips through JSON).
* :mod:`voxbox.hardware.probe`         tiny real inference in a child process with a watchdog and a memory
  guard: ok / error / hang / slow / silent_fallback, cached on disk per hardware+driver+library versions;
  :mod:`~voxbox.hardware.probe_targets` the inference each probe runs, :mod:`~voxbox.hardware.probe_sets`
  which probes to run.
* :mod:`voxbox.hardware.quirks`        ``quirks.yaml``: known problems, remedies and sources, plus the matcher.
* :mod:`voxbox.hardware.planner`       the one entry ``plan(components, machine, probes, pins) -> Plan``:
  device/dtype per component with a one-sentence reason; it draws on :mod:`~voxbox.hardware.backends`
  (what each backend can do), :mod:`~voxbox.hardware.options`, :mod:`~voxbox.hardware.memory` and
  :mod:`~voxbox.hardware.pins`.
* :mod:`voxbox.hardware.machine_plan`  a plan per engine the caller names and the engine per task (``doctor``).
* :mod:`voxbox.hardware.doctor`        the report behind ``voxbox doctor`` (``cli.register`` adds the command).

Engines are never named here: they declare components and call :mod:`voxbox.engines.placement`.
Nothing here imports torch, CTranslate2, ONNX Runtime or whisper.cpp at import time.
"""
