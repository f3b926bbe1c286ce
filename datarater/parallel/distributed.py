"""Multi-host start-up: one process per host, JAX's multi-controller runtime.

Every host runs the same ``datarater`` command; ``jax.distributed.initialize()`` connects them
before any JAX computation, and from then on ``jax.devices()`` lists the devices of all hosts.
When to connect:

- ``DATARATER_DISTRIBUTED=1`` (or ``enabled=True``): always; on Cloud TPU VMs, GKE and SLURM the
  coordinator, process count and index are auto-detected by JAX;
- ``JAX_COORDINATOR_ADDRESS`` set: with ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (any cluster);
- a multi-host Cloud TPU slice (``TPU_WORKER_HOSTNAMES`` lists several workers);
- otherwise, and with ``DATARATER_DISTRIBUTED=0``: a single process, nothing to do.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from datarater.errors import UserError

ENV_FLAG = "DATARATER_DISTRIBUTED"


def _flag(value: str, name: str) -> bool | None:
    v = value.strip().lower()
    if v in ("", "auto"):
        return None
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off"):
        return False
    raise UserError(f"environment variable {name}={value!r}: use 1 (multi-host), 0 (single process) or auto")


def distributed_arguments(env: Mapping[str, str], enabled: bool | None = None) -> dict | None:
    """Keyword arguments for ``jax.distributed.initialize``, or None to stay single-process.

    Pure: decides from ``env`` (``os.environ``) and the explicit flag, which wins over the env.
    """
    if enabled is None:
        enabled = _flag(env.get(ENV_FLAG, ""), ENV_FLAG)
    if enabled is False:
        return None
    coordinator = env.get("JAX_COORDINATOR_ADDRESS", "")
    if coordinator:
        args: dict = {"coordinator_address": coordinator}
        for key, name in (("num_processes", "JAX_NUM_PROCESSES"), ("process_id", "JAX_PROCESS_ID")):
            if env.get(name, ""):
                try:
                    args[key] = int(env[name])
                except ValueError:
                    raise UserError(f"environment variable {name}={env[name]!r} must be an integer") from None
        return args
    tpu_workers = [h for h in env.get("TPU_WORKER_HOSTNAMES", "").split(",") if h.strip()]
    if enabled or len(tpu_workers) > 1:
        return {}  # JAX auto-detects the cluster (Cloud TPU, GKE, SLURM, ...)
    return None


def maybe_initialize_distributed(enabled: bool | None = None) -> bool:
    """Connects the processes of a multi-host run (call first, before any JAX computation).

    Returns True when running multi-process. No-op on a single process, and when already connected.
    """
    import jax

    if jax.distributed.is_initialized():
        return jax.process_count() > 1
    args = distributed_arguments(os.environ, enabled)
    if args is None:
        return False
    try:
        jax.distributed.initialize(**args)
    except (RuntimeError, ValueError) as e:
        hint = ("set JAX_COORDINATOR_ADDRESS=host:port, JAX_NUM_PROCESSES and JAX_PROCESS_ID on every host, "
                f"or {ENV_FLAG}=0 for a single process")
        raise UserError(f"multi-host start-up failed: {str(e).splitlines()[0] if str(e) else type(e).__name__}; {hint}") from None
    return jax.process_count() > 1
