"""A native Wyoming server (Home Assistant's voice protocol) on voxbox's runtime.

* ``info`` — ``WyomingFront``: the runtime adapters (transcribe, synthesize) and ``describe`` → ``info``.
* ``handler`` — one connection's events (ASR with streamed transcript chunks, TTS with streamed
  text and audio).
* ``cli`` — ``voxbox wyoming --uri tcp://127.0.0.1:10300`` (needs ``pip install 'voxbox[live]'``).

Importing this package imports nothing heavy; the ``wyoming`` package is imported by the modules.
"""
