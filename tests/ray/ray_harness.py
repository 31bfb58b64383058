"""A real local Ray cluster for the tests (``ray start --head --block`` on this machine, 2 CPUs, a
small object store, token authentication with a token made for the run) and helpers to run voxbox
commands against it and to find its worker processes.

The cluster process is started in its own session; stopping it sends SIGTERM to that process
group (the Ray processes this test run started, nothing else), then SIGKILL to what lingers.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def ray_env() -> dict[str, str]:
    """Environment for the cluster and every process that joins it: this tree's voxbox first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO / "src"), env.get("PYTHONPATH", "")) if p)
    env.setdefault("RAY_AUTH_MODE", "token")
    env.setdefault("RAY_AUTH_TOKEN", secrets.token_hex(16))
    env["RAY_USAGE_STATS_ENABLED"] = "0"
    env.pop("RAY_ADDRESS", None)
    return env


class LocalCluster:
    def __init__(self, cpus: int = 2, object_store_mb: int = 200, gpus: int = 0) -> None:
        self.env = ray_env()
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        # short: Ray's unix socket paths live under it (about 100 characters at most)
        self.temp = Path(tempfile.mkdtemp(prefix="vxray", dir="/tmp"))
        self.log = open(self.temp / "head.log", "wb")  # noqa: SIM115 - the cluster's log, open while it runs
        ray_bin = shutil.which("ray", path=str(Path(sys.executable).parent)) or "ray"
        self.proc = subprocess.Popen(
            [ray_bin, "start", "--head", "--block", f"--num-cpus={cpus}", f"--num-gpus={gpus}",
             f"--object-store-memory={object_store_mb * 2**20}", "--include-dashboard=false",
             "--node-ip-address=127.0.0.1", f"--port={self.port}", "--disable-usage-stats",
             f"--temp-dir={self.temp}"],
            env=self.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def connect(self, timeout: float = 120.0) -> None:
        """Join from this process (retried until the head is up); sets the auth variables here too."""
        for k in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN"):
            os.environ[k] = self.env[k]
        import ray

        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ray start exited {self.proc.returncode}: {self.head_log()[-2000:]}")
            try:
                ray.init(address=self.address, log_to_driver=False, logging_level="ERROR")
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def head_log(self) -> str:
        return (self.temp / "head.log").read_text(errors="replace")

    def descendants(self, needle: str) -> list[Any]:
        """Processes of this cluster whose command line contains ``needle`` (e.g. an actor class)."""
        import psutil

        out = []
        for p in psutil.Process(self.proc.pid).children(recursive=True):
            try:
                if needle in " ".join(p.cmdline()):
                    out.append(p)
            except psutil.Error:
                continue
        return out

    def stop(self) -> None:
        import psutil
        import ray

        try:
            ray.shutdown()
        finally:
            try:
                started = psutil.Process(self.proc.pid).children(recursive=True)
            except psutil.Error:
                started = []
            _stop_group(self.proc, 10.0)
            for p in started:  # anything of this cluster that left the process group
                try:
                    p.kill()
                except psutil.Error:
                    pass
            self.log.close()
            shutil.rmtree(self.temp, ignore_errors=True)


def _stop_group(proc: subprocess.Popen[Any], grace: float) -> None:
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)  # what is left of this group (processes slow to stop)
    except ProcessLookupError:
        pass
    if proc.poll() is None:
        proc.wait(timeout=10)


def voxbox(
    cluster: LocalCluster, *args: str, timeout: float = 300.0, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    """Run ``voxbox ARGS`` to the end with the cluster's environment."""
    return subprocess.run([sys.executable, "-m", "voxbox.cli", *args], env=cluster.env, cwd=cwd,
                          capture_output=True, text=True, timeout=timeout, check=False)


class RayServer:
    """``voxbox serve --ray --address CLUSTER ...`` in a subprocess, until stopped."""

    def __init__(self, cluster: LocalCluster, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = cluster.temp / f"serve-{self.port}.log"
        self.log = open(self.log_path, "wb")  # noqa: SIM115 - the server's log, open while it runs
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "voxbox.cli", "serve", "--ray", "--address", cluster.address,
             "--port", str(self.port), *args],
            env=cluster.env, stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)

    def wait_ready(self, timeout: float = 240.0) -> RayServer:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"voxbox serve --ray exited {self.proc.returncode}: {self.output()[-3000:]}")
            try:
                if httpx.get(self.url + "/health/ready", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(1)
        raise RuntimeError(f"voxbox serve --ray was not ready in {timeout:.0f} s: {self.output()[-3000:]}")

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def openai(self, api_key: str = "not-needed") -> Any:
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=120)

    def stop(self) -> int | None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # deletes the Serve application, then exits
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()
        return self.proc.returncode


def assert_same_timed(got: list[tuple[Any, ...]], want: list[tuple[Any, ...]], tol: float) -> None:
    """Two lists of (text, start, end): the texts equal, the times within ``tol`` seconds.

    A Ray worker and the plain process decode with other thread counts and (after a retry) other
    batch compositions; CTranslate2's numbers differ in the last bits between those, which can move
    a timestamp token (Whisper's 0.02-s steps; at a silent end, a few of them). Text must not move."""
    assert [g[0] for g in got] == [w[0] for w in want]
    for g, w in zip(got, want, strict=True):
        assert abs(g[1] - w[1]) <= tol and abs(g[2] - w[2]) <= tol, (g, w)
