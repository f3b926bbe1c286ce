"""A sharded LM training step on 8 emulated CPU devices equals the same step on one device."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_on_8_devices


@pytest.fixture(scope="module")
def results() -> dict:
    return run_on_8_devices("sharded_lm_step.py", timeout=300)


@pytest.mark.parametrize("mesh", ["data8", "fsdp8", "d2f2t2"])
def test_sharded_steps_match_one_device(results, mesh):
    assert results["devices"] == 8
    assert results["fsdp8"]["microbatches"] == 2  # fsdp8 also checks microbatching (train.microbatch_rows=1)
    np.testing.assert_allclose(results[mesh]["losses"], results["one"]["losses"], rtol=2e-5)
    for a, b in zip(results[mesh]["params"], results["one"]["params"], strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=5e-5)  # Adam steps are 1e-2: a bug is far larger


def test_parameters_are_really_sharded(results):
    assert results["one"]["wqkv_shards"] == 1
    assert "fsdp" in results["fsdp8"]["wqkv_spec"] and results["fsdp8"]["wqkv_shards"] == 8
    spec = results["d2f2t2"]["wqkv_spec"]
    assert "fsdp" in spec and "tensor" in spec and results["d2f2t2"]["wqkv_shards"] == 4
    assert results["data8"]["wqkv_shards"] == 1  # pure data parallelism replicates parameters


def test_optimizer_moments_are_sharded_like_their_parameters(results):
    for mesh in ("fsdp8", "d2f2t2"):
        assert results[mesh]["mu_spec"] == results[mesh]["wqkv_spec"], mesh


def test_hidden_states_stay_batch_split(results):
    # Every hidden state of the trunk (after the embedding and each block) is split over all the
    # batch axes of the mesh: FSDP gathers weights, never the batch.
    n_hidden = 1 + 2  # embedding + 2 blocks, seen once while tracing the step
    assert results["fsdp8"]["hidden_count"] >= n_hidden
    assert results["fsdp8"]["hidden_specs"] == ["fsdp"]  # each of its 2 microbatches too
    assert results["d2f2t2"]["hidden_specs"] == ["data+fsdp"]
    assert results["data8"]["hidden_specs"] == ["data"]
    # (without the constraint XLA splits the fsdp8 hidden states along d_model: ",,fsdp")
