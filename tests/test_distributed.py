"""Multi-host start-up: when `maybe_initialize_distributed` connects, and with what arguments."""

from __future__ import annotations

import pytest

from datarater.errors import UserError
from datarater.parallel.distributed import distributed_arguments, maybe_initialize_distributed


def test_single_process_by_default():
    assert distributed_arguments({}) is None
    assert distributed_arguments({"TPU_WORKER_HOSTNAMES": "t1v-0"}) is None  # a single-host TPU VM
    assert distributed_arguments({"DATARATER_DISTRIBUTED": "0", "JAX_COORDINATOR_ADDRESS": "h:1234"}) is None


def test_switched_on_by_the_flag_or_the_environment():
    assert distributed_arguments({"DATARATER_DISTRIBUTED": "1"}) == {}  # JAX auto-detects the cluster
    assert distributed_arguments({}, enabled=True) == {}
    assert distributed_arguments({"DATARATER_DISTRIBUTED": "1"}, enabled=False) is None  # the argument wins
    assert distributed_arguments({"TPU_WORKER_HOSTNAMES": "t1v-0,t1v-1,t1v-2,t1v-3"}) == {}  # a pod slice


def test_explicit_coordinator():
    env = {"JAX_COORDINATOR_ADDRESS": "10.0.0.2:8476", "JAX_NUM_PROCESSES": "4", "JAX_PROCESS_ID": "3"}
    assert distributed_arguments(env) == {"coordinator_address": "10.0.0.2:8476", "num_processes": 4, "process_id": 3}


@pytest.mark.parametrize("env,key", [({"DATARATER_DISTRIBUTED": "maybe"}, "DATARATER_DISTRIBUTED"),
                                     ({"JAX_COORDINATOR_ADDRESS": "h:1", "JAX_PROCESS_ID": "x"}, "JAX_PROCESS_ID")])
def test_bad_values_name_the_variable(env, key):
    with pytest.raises(UserError, match=key):
        distributed_arguments(env)


def test_no_op_on_one_process(monkeypatch):
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    monkeypatch.delenv("TPU_WORKER_HOSTNAMES", raising=False)
    monkeypatch.setenv("DATARATER_DISTRIBUTED", "0")
    assert maybe_initialize_distributed() is False
