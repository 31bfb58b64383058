"""Batch jobs on the same runtime as everything else: ``voxbox batch transcribe`` and ``voxbox batch speak``.

::

    voxbox batch transcribe recordings/ --out transcripts.parquet          # a folder, a glob or a manifest
    voxbox batch speak lines.jsonl --out dataset/ --verify                  # text -> audio + manifest (+ WER)
    voxbox batch transcribe 's3-mount/*.flac' --out t.jsonl --ray --address auto

Two runners, same outputs, same resume:

* in-process (:mod:`voxbox.batch.local`): decoding in a thread pool, the engine in one
  :class:`~voxbox.runtime.sync.SyncRuntime` (its admission bounds the engine's concurrency);
* Ray Data (:mod:`voxbox.batch.ray_data`, with ``--ray`` or ``--address``): decoding as CPU tasks,
  the engine as an actor pool on GPUs or CPUs (each actor holds the same runtime), batches sized
  from the hardware plan; a dead worker's batch is retried on a restarted actor.

The driver alone writes the output (:mod:`voxbox.batch.store`): every record is appended as soon as
it arrives, so an interrupted job keeps what it finished and a re-run processes only what is
missing. A file that fails is a record with its ``error``; the job goes on (and a re-run retries it).
"""
