"""What ``voxbox serve --ray`` deploys, from recorded machines (no Ray needed): one deployment per
model's weights, replica resources from the hardware plan, Serve knobs from the flags."""

from __future__ import annotations

from pathlib import Path

import pytest

from voxbox.errors import BadInputError
from voxbox.hardware.detect import load_machine
from voxbox.ray_serve.config import (
    RayServeOptions,
    gpu_share,
    parse_replicas,
    plan_deployments,
)
from voxbox.runtime import Catalog
from voxbox.server.settings import ServerSettings

MACHINES = Path(__file__).parents[1] / "data" / "machines"
LOCAL = {"big": "torch-whisper:/models/large-v3", "fish": "fish-s2:/models/s2-pro"}


@pytest.fixture(autouse=True)
def _no_probe_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VOXBOX_CACHE_DIR", str(tmp_path))  # plans from the recorded machine alone


def _plans(machine: str | None, **opts):
    settings = ServerSettings(_env_file=None, models={"local": LOCAL})
    m = load_machine(MACHINES / f"{machine}.json") if machine else None
    return {p.name: p for p in plan_deployments(Catalog.default(settings.models.local), settings,
                                                RayServeOptions(**opts), m)}


def test_one_deployment_per_weights_with_every_alias():
    plans = _plans(None)
    assert set(plans) == {"model-tts-1", "model-whisper-1", "model-big", "model-fish"}
    assert {"tts-1", "hibari"} <= set(plans["model-tts-1"].names)
    assert {"whisper-1", "faster-whisper"} <= set(plans["model-whisper-1"].names)
    for p in plans.values():  # no GPU anywhere: every replica on one CPU, its engine on one thread
        assert (p.num_gpus, p.num_cpus, p.threads, p.device) == (0.0, 1.0, 1, "cpu")


def test_gpu_shares_follow_the_plan_on_a_5090():
    plans = _plans("rtx5090-sm120")
    fish, whisper, tts = plans["model-fish"], plans["model-whisper-1"], plans["model-tts-1"]
    # fish-s2 needs ~13 GB of 34: half the GPU; tiny whisper shares it with up to 19 others
    assert fish.num_gpus == 0.5 and "slow_ar" in fish.reason
    assert whisper.num_gpus == gpu_share(int(0.4e9), int(34e9)) == 0.05
    assert tts.num_gpus == 0.0 and tts.device == "cpu" and "CPU" in tts.reason  # hibari runs on the CPU only
    assert fish.serve_options()["ray_actor_options"] == {"num_cpus": 1.0, "num_gpus": 0.5}


def test_autoscaling_and_backpressure_knobs():
    p = _plans(None, min_replicas=0, max_replicas=4, target_ongoing=3, max_ongoing=6, max_queued=5)["model-big"]
    opts = p.serve_options()
    assert opts["num_replicas"] == "auto"
    assert opts["autoscaling_config"]["min_replicas"] == 0 and opts["autoscaling_config"]["max_replicas"] == 4
    assert opts["autoscaling_config"]["target_ongoing_requests"] == 3
    assert (opts["max_ongoing_requests"], opts["max_queued_requests"]) == (6, 5)
    fixed = _plans(None, min_replicas=2, max_replicas=2)["model-big"].serve_options()
    assert fixed["num_replicas"] == 2 and "autoscaling_config" not in fixed
    assert fixed["max_queued_requests"] == 16  # --queue-size (the settings' queue) by default


def test_deploy_names_and_flags():
    assert set(_plans(None, deploy=("whisper-1",))) == {"model-whisper-1"}
    assert parse_replicas("3") == (3, 3) and parse_replicas("0-4") == (0, 4)
    with pytest.raises(BadInputError, match="not a catalog model"):
        _plans(None, deploy=("no-such-model",))
    for bad in ("4-2", "x", "0", "-1"):
        with pytest.raises(BadInputError):
            parse_replicas(bad)
    with pytest.raises(BadInputError):
        RayServeOptions(replica_gpus=1.5)
    assert _plans(None, replica_gpus=0.25)["model-tts-1"].num_gpus == 0.25  # asked for: kept
