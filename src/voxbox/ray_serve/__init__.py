"""voxbox on Ray Serve: the same OpenAI-compatible API, one deployment per catalog model.

::

    voxbox serve --ray                          # a local Ray instance
    voxbox serve --ray --address auto           # join the cluster this node belongs to
    voxbox serve --ray --replicas 1-4 --deploy all

The HTTP ingress is voxbox's own FastAPI app (``create_app``), run by a Serve ingress deployment.
Its :class:`~voxbox.runtime.Runtime` loads :class:`~voxbox.ray_serve.remote.RemoteEngine` objects
instead of engines: each one speaks the engine protocol (``info``, ``stream()``, ``transcribe()``,
``encode_voice()``) and forwards the work to the model's deployment, whose replicas each hold a
``Runtime`` with that one model (:mod:`voxbox.ray_serve.replica`). So the routes, schemas, errors,
SSE framing, auth and Server-Timing are the plain server's, unchanged.

Modules: ``config`` (knobs and replica resources from the hardware plan; no Ray import),
``remote`` (the ingress side of the seam), ``replica`` (the model side), ``app`` (the Serve
application), ``cli`` (``voxbox serve --ray``). ``import ray`` happens only in those last three, so
importing this package is cheap and works without the ``voxbox[ray]`` extra.
"""
