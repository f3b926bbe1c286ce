"""A sharded LM training step on 8 emulated CPU devices equals the same step on one device."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest


@pytest.fixture(scope="module")
def results() -> dict:
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", JAX_PLATFORMS="cpu")
    script = Path(__file__).with_name("sharded_lm_step.py")
    r = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    line = [ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


@pytest.mark.parametrize("mesh", ["data8", "fsdp8", "d2f2t2"])
def test_sharded_steps_match_one_device(results, mesh):
    assert results["devices"] == 8
    np.testing.assert_allclose(results[mesh]["losses"], results["one"]["losses"], rtol=2e-5)
    for a, b in zip(results[mesh]["params"], results["one"]["params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5)  # Adam steps are 1e-2: a bug is far larger


def test_parameters_are_really_sharded(results):
    assert results["one"]["wqkv_shards"] == 1
    assert "fsdp" in results["fsdp8"]["wqkv_spec"] and results["fsdp8"]["wqkv_shards"] == 8
    spec = results["d2f2t2"]["wqkv_spec"]
    assert "fsdp" in spec and "tensor" in spec and results["d2f2t2"]["wqkv_shards"] == 4
    assert results["data8"]["wqkv_shards"] == 1  # pure data parallelism replicates parameters
