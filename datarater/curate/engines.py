"""Where the per-file jobs of score and filter run: in this process (``local``) or on Ray Data (``ray``).

``ray`` maps a job over the input shards with Ray Data: scoring on an actor pool (one curator,
e.g. one rater, per actor, built once, on CPU or an accelerator), the filter's two passes as
plain tasks. ``ray.address`` empty starts a local cluster of ``workers`` CPUs; ``auto`` or a
``ray://`` address joins a running one (KubeRay, a VM cluster). Both engines call the same
functions (`datarater.curate.jobs`), so they write the same files. Ray is an optional
dependency (``pip install 'datarater[ray]'``).
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from collections.abc import Callable
from typing import Any

from datarater.data.stream import Shard
from datarater.errors import UserError

ENGINES = ("local", "ray")


def _ray(address: str, workers: int):
    try:
        import ray
    except ImportError:
        raise UserError("engine=ray needs Ray Data: pip install 'datarater[ray]' (or 'ray[data]')") from None
    if not ray.is_initialized():
        kwargs: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
        with warnings.catch_warnings():  # Ray starts its processes with fork+exec, which is safe beside JAX's threads
            warnings.filterwarnings("ignore", message=r"os\.fork\(\) was called", category=RuntimeWarning)
            if address:
                ray.init(address=address, **kwargs)
            else:
                # the workers see the same XLA / JAX settings as this process
                env = {k: v for k, v in os.environ.items() if k.startswith(("XLA_", "JAX_", "DATARATER_", "TF_CPP"))}
                ray.init(num_cpus=workers, runtime_env={"env_vars": env}, **kwargs)
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(logging.WARNING)
    return ray


class _Scorer:
    """One Ray actor: builds the job's curator once, then scores the shards it is given."""

    def __init__(self, job, shards: list[Shard]):
        self.job, self.shards = job, shards
        self.curator = job.make_curator()

    def __call__(self, batch: dict) -> dict:
        out = [self.job.run(self.curator, self.shards[int(i)]) for i in batch["i"]]
        return {"result": [json.dumps(r) for r in out]}


def score_shards(job, shards: list[Shard], engine: str, workers: int = 2, address: str = "",
                 on_done: Callable[[dict], None] | None = None) -> list[dict]:
    """`ScoreJob.run` over ``shards`` (those already complete are skipped); results in shard order."""
    if engine == "local":
        curator = job.make_curator()
        results = []
        for s in shards:
            results.append(job.run(curator, s))
            if on_done:
                on_done(results[-1])
        return results
    ray = _ray(address, workers)
    ds = ray.data.from_items([{"i": i} for i in range(len(shards))], override_num_blocks=max(1, len(shards)))
    pool = ray.data.ActorPoolStrategy(size=max(1, min(workers, len(shards))))
    rows = ds.map_batches(_Scorer, fn_constructor_kwargs={"job": job, "shards": shards}, batch_size=1, compute=pool,
                          num_cpus=1).take_all()
    results = sorted((json.loads(r["result"]) for r in rows), key=lambda r: r["key"])
    if on_done:
        for r in results:
            on_done(r)
    order = {s.key: k for k, s in enumerate(shards)}
    return sorted(results, key=lambda r: order[r["key"]])


def map_shards(fn: Callable[[Shard], dict], shards: list[Shard], engine: str, workers: int = 2,
               address: str = "") -> list[dict]:
    """``fn`` (a picklable function of one shard, returning JSON) over ``shards``; results in shard order."""
    if engine == "local":
        return [fn(s) for s in shards]
    ray = _ray(address, workers)
    ds = ray.data.from_items([{"i": i} for i in range(len(shards))], override_num_blocks=max(1, len(shards)))
    tasks = ray.data.TaskPoolStrategy(size=max(1, min(workers, len(shards))))
    rows = ds.map(lambda row: {"i": row["i"], "result": json.dumps(fn(shards[int(row["i"])]))},
                  num_cpus=1, compute=tasks).take_all()
    by_index = {int(r["i"]): json.loads(r["result"]) for r in rows}
    return [by_index[i] for i in range(len(shards))]
