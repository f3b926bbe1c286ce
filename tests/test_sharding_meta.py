"""Meta-training on 8 emulated CPU devices: the population laid over the data axis gives the same
meta-gradients, losses and updates as one device, and a checkpoint saved on 8 devices resumes on
1 device and on a different mesh layout."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import run_on_8_devices

# one 8-device child run (~1 min on 2 cores) feeds every test here: in .ci/run's slow suite
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results() -> dict:
    return run_on_8_devices("sharded_meta_step.py", timeout=900)


SHARDED = ["data8", "d4f2"]


def _scale(tree: dict) -> float:
    return max(float(np.max(np.abs(v))) for v in tree.values())


@pytest.mark.parametrize("mesh", SHARDED)
def test_meta_gradients_match_one_device(results, mesh):
    # d4f2 takes them in 2 microbatches per member (meta.microbatch_rows=1), one device in one batch
    assert results["d4f2"]["grad_microbatches"] == 2 and results["one"]["grad_microbatches"] == 1
    one, got = results["one"]["meta_grads"], results[mesh]["meta_grads"]
    scale = _scale(one)
    assert scale > 1e-4  # a real signal, not all zeros
    for path, ref in one.items():
        np.testing.assert_allclose(got[path], ref, rtol=1e-3, atol=1e-5 * scale, err_msg=path)


def test_rater_bias_gradient_is_zero(results):
    # softmax over the batch is shift-invariant: the rater's bias cannot change the weights
    for mesh in ["one", *SHARDED]:
        grads = results[mesh]["meta_grads"]
        bias = [v for p, v in grads.items() if p.endswith("bias")]
        assert bias and np.max(np.abs(bias)) < 1e-6 * _scale(grads)


@pytest.mark.parametrize("mesh", SHARDED)
def test_meta_steps_match_one_device(results, mesh):
    np.testing.assert_allclose(results[mesh]["losses"], results["one"]["losses"], rtol=1e-4)
    for key in ("theta", "eta"):
        for path, ref in results["one"][key].items():
            if path.endswith("bias"):
                continue  # its gradient is round-off (see above): Adam turns that into +-lr steps
            np.testing.assert_allclose(results[mesh][key][path], ref, rtol=1e-4, atol=1e-5, err_msg=f"{key} {path}")


def test_population_is_split_over_the_data_axis(results):
    assert results["devices"] == 8
    one, d8, d4f2 = results["one"], results["data8"], results["d4f2"]
    assert one["members_per_shard"] == [8] and one["theta_devices"] == 1
    # data=8: each device holds 1 of the 8 members, whole
    assert d8["theta_spec"].startswith("P('data'") and d8["members_per_shard"] == [1] and d8["theta_devices"] == 8
    assert d8["wqkv_member_shape"] == [32] and d8["inner_mu_spec"].startswith("P('data'")
    # data=4 x fsdp=2: 2 members per device, each member's parameters halved over fsdp
    assert d4f2["members_per_shard"] == [2] and d4f2["wqkv_member_shape"] == [16]
    assert d4f2["theta_spec"].startswith("P('data', 'fsdp'") and d4f2["inner_mu_spec"].startswith("P('data', 'fsdp'")
    assert d4f2["inner_batch_spec"] == "P('data', None, 'fsdp', None)"  # members over data, rows over fsdp
    for mesh in SHARDED:  # the step keeps the layout
        assert results[mesh]["theta_spec_after"].startswith(results[mesh]["theta_spec"].split(",")[0])


@pytest.mark.parametrize("target,devices,members", [("one", 1, 8), ("d4f2", 8, 2)])
def test_checkpoint_from_8_devices_resumes_on_another_layout(results, target, devices, members):
    r = results["resume"][target]
    assert r["step"] == 1 and r["devices"] == devices and r["members_per_shard"] == [members]
    saved = results["data8"]["saved"]
    assert r["values"].keys() == saved.keys()
    for path, ref in saved.items():
        np.testing.assert_array_equal(r["values"][path], ref, err_msg=path)
    # the step after resuming is the step the 8-device run took
    np.testing.assert_allclose(r["next"], results["data8"]["losses"][1], rtol=1e-4)


def test_activation_constraint_splits_the_batch_only_inside_its_context(results):
    a = results["activations"]
    assert a["outside"] == [] and a["odd"] == []  # replicated
    assert a["inside"] == [["data", "fsdp"]] and a["values_equal"]  # rows over data x fsdp
