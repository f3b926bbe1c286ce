"""Load a trained LM from its `train-lm` run directory (for evaluation, perplexity curation)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import jax
from flax import nnx

from datarater.artifacts import CHECKPOINT_DIR, read_run_config
from datarater.config import TrainLMProgram
from datarater.errors import UserError
from datarater.models.transformer import CausalLM


@dataclass
class LoadedLM:
    program: TrainLMProgram  # the run's resolved config
    graphdef: nnx.GraphDef
    params: dict  # pure dict of nnx.Param values
    step: int

    def module(self) -> CausalLM:
        return nnx.merge(self.graphdef, self.params)


def read_program(run_dir: str | Path) -> TrainLMProgram:
    return read_run_config(run_dir, TrainLMProgram, "train-lm")


def load_lm(run_dir: str | Path, step: int | None = None) -> LoadedLM:
    """The LM of the latest (or given) finished checkpoint of a train-lm run, on the default device."""
    from datarater.train.checkpoint import Checkpointer
    from datarater.train.optimizer import make_optimizer

    path = Path(run_dir).expanduser().absolute()
    prog = read_program(path)
    ckpt_dir = path / CHECKPOINT_DIR
    if not ckpt_dir.is_dir():
        raise UserError(f"{path} has no finished checkpoint (no checkpoints/): train it first")
    ckpt = Checkpointer(ckpt_dir, keep=1_000_000, read_only=True)
    try:
        step = ckpt.latest_step() if step is None else step
        if step is None:
            raise UserError(f"{path} has no finished checkpoint: train it first")
        abstract_model = nnx.eval_shape(lambda: CausalLM(prog.model, rngs=nnx.Rngs(0)))
        graphdef, _ = nnx.split(abstract_model)
        params = nnx.to_pure_dict(nnx.state(abstract_model, nnx.Param))
        tx = make_optimizer(prog.train)
        opt_state = jax.eval_shape(tx.init, params)
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
                              {"params": params, "opt_state": opt_state})
        state, _ = ckpt.restore(step, target)
    finally:
        ckpt.close()
    return LoadedLM(program=prog, graphdef=graphdef, params=state["params"], step=int(step))
