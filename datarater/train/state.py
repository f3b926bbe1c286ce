"""The LM training state: parameters and optimiser state, restored or created in their shardings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import optax
from flax import nnx
from jax.sharding import Mesh

from datarater.config import ModelConfig
from datarater.models.transformer import CausalLM
from datarater.parallel.mesh import logical_axes_of, param_shardings
from datarater.parallel.population import optimizer_shardings
from datarater.train.loop import Loop, Restored


@dataclass
class LMState:
    """What a training run carries from step to step (plain pytrees)."""

    graphdef: nnx.GraphDef
    params: dict
    opt_state: Any

    def arrays(self) -> dict:
        """The checkpointed arrays."""
        return {"params": self.params, "opt_state": self.opt_state}


def lm_state_layout(model_cfg: ModelConfig, mesh: Mesh, rules, tx: optax.GradientTransformation):
    """``(graphdef, shardings, abstract arrays)`` of an LM's training state; nothing is allocated."""
    abstract = nnx.eval_shape(lambda: CausalLM(model_cfg, rngs=nnx.Rngs(0)))
    graphdef = nnx.split(abstract)[0]
    shapes = nnx.to_pure_dict(nnx.state(abstract, nnx.Param))
    params = param_shardings(logical_axes_of(abstract), shapes, rules, mesh)
    opt_shapes = jax.eval_shape(tx.init, shapes)
    shardings = {"params": params, "opt_state": optimizer_shardings(tx, opt_shapes, params, mesh)}
    abstract_arrays = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s),
                                   {"params": shapes, "opt_state": opt_shapes}, shardings)
    return graphdef, shardings, abstract_arrays


def _create(model_cfg: ModelConfig, seed: int, tx: optax.GradientTransformation, graphdef, shardings) -> LMState:
    def init():
        params = nnx.to_pure_dict(nnx.state(CausalLM(model_cfg, rngs=nnx.Rngs(seed)), nnx.Param))
        return {"params": params, "opt_state": tx.init(params)}

    arrays = jax.jit(init, out_shardings=shardings)()
    return LMState(graphdef=graphdef, params=arrays["params"], opt_state=arrays["opt_state"])


def init_lm(model_cfg: ModelConfig, seed: int, mesh: Mesh, rules, tx: optax.GradientTransformation) -> LMState:
    """A new LM state, initialised directly in its shardings (no host copy of the full model)."""
    graphdef, shardings, _ = lm_state_layout(model_cfg, mesh, rules, tx)
    return _create(model_cfg, seed, tx, graphdef, shardings)


def initial_lm_state(model_cfg: ModelConfig, seed: int, mesh: Mesh, rules, tx: optax.GradientTransformation,
                     loop: Loop) -> tuple[LMState, Restored]:
    """The state a run starts from: its latest checkpoint restored in place, else a new one."""
    graphdef, shardings, abstract = lm_state_layout(model_cfg, mesh, rules, tx)
    restored = loop.restore(abstract)
    if restored.found:
        return LMState(graphdef, restored.state["params"], restored.state["opt_state"]), restored
    return _create(model_cfg, seed, tx, graphdef, shardings), restored
