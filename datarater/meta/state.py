"""The meta-training state: rater and population arrays, created or restored in their shardings, and
the members' ages; the compiled population meta-step and member re-initialisation on that layout.

The arrays (``MetaTrainState.arrays``, as the compiled step takes them and checkpoints hold them):
``eta`` the rater's parameters, ``outer`` its optimiser state (one per member under
``meta.outer_update=average_params``), ``theta`` and ``inner`` the members' LM parameters and
optimiser states, stacked along a leading population axis. Where each lives on the mesh is
decided by `datarater.parallel.population.PopulationLayout`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from datarater.config import MetaConfig, MetaTrainProgram
from datarater.meta.core import MetaProblem, make_population_meta_step
from datarater.models.rater import Rater
from datarater.models.transformer import CausalLM
from datarater.parallel.activations import batch_split
from datarater.parallel.mesh import logical_axes_of, make_mesh
from datarater.parallel.population import PopulationLayout
from datarater.train.loop import Loop, Restored
from datarater.train.microbatch import microbatch_count


def first_lifetimes(lifetime: int, population: int, unroll: int) -> list[int]:
    """Member p first lives ``(p+1)/P`` of a lifetime (a multiple of the unroll), then full ones."""
    return [max(unroll, (lifetime * (p + 1) // population) // unroll * unroll) for p in range(population)]


def member_key(seed: int, member: int, generation: int) -> jax.Array:
    return jax.random.fold_in(jax.random.fold_in(jax.random.key(seed + 1), member), generation)


def lm_params(cfg, key) -> dict:
    return nnx.to_pure_dict(nnx.state(CausalLM(cfg, rngs=nnx.Rngs(params=key)), nnx.Param))


@dataclass
class Members:
    """The population's bookkeeping on the host (saved with checkpoints as ``extra["book"]``)."""

    ages: list[int]  # inner steps each member has taken in its current life
    lives: list[int]  # the length of each member's current life
    generations: list[int]  # lives each member has started (its parameters' seed)
    resets: int = 0  # member re-initialisations so far
    skipped: int = 0  # meta-updates skipped (every member's meta-gradient non-finite) so far
    updates: int = 0  # meta-updates applied to the rater so far
    consecutive_skipped: int = 0  # skipped updates since the last applied one
    diverged: int = 0  # members re-initialised because their meta-gradient was not finite

    @classmethod
    def start(cls, meta: MetaConfig) -> Members:
        per_step = meta.unroll + meta.plain_inner_steps
        return cls([0] * meta.population, first_lifetimes(meta.lifetime, meta.population, per_step),
                   [0] * meta.population)

    def age(self, steps: int, lifetime: int) -> list[int]:
        """Ages every member by ``steps`` inner steps; the members whose life ended start a new one
        (of ``lifetime`` steps) and are returned."""
        self.ages = [a + steps for a in self.ages]
        dead = [p for p, (a, life) in enumerate(zip(self.ages, self.lives, strict=True)) if a >= life]
        for p in dead:
            self.generations[p] += 1
            self.ages[p], self.lives[p] = 0, lifetime
            self.resets += 1
        return dead

    def restart(self, members: list[int], lifetime: int) -> None:
        """Starts a new life (of ``lifetime`` steps, next generation's seed) for ``members``."""
        for p in members:
            self.generations[p] += 1
            self.ages[p], self.lives[p] = 0, lifetime

    def keys(self, seed: int) -> jax.Array:
        """Each member's parameter key for its current generation."""
        return jnp.stack([member_key(seed, p, g) for p, g in enumerate(self.generations)])

    def as_dict(self) -> dict:
        return asdict(self)


@dataclass
class MetaTrainState:
    """What meta-training carries from step to step: the arrays and the members' bookkeeping."""

    arrays: dict  # eta, outer, theta, inner (see the module docstring)
    members: Members


def _init_arrays(prog: MetaTrainProgram, inner_tx, outer_tx) -> dict:
    m = prog.meta
    rater = Rater(prog.rater, rngs=nnx.Rngs(params=jax.random.key(m.seed)))
    eta = nnx.to_pure_dict(nnx.state(rater, nnx.Param))
    keys = jnp.stack([member_key(m.seed, p, 0) for p in range(m.population)])
    theta = jax.vmap(lambda k: lm_params(prog.model, k))(keys)
    inner = jax.vmap(inner_tx.init)(theta)
    if m.outer_update == "average_params":
        outer = jax.vmap(lambda _: outer_tx.init(eta))(jnp.arange(m.population))
    else:
        outer = outer_tx.init(eta)
    return {"eta": eta, "outer": outer, "theta": theta, "inner": inner}


def abstract_meta_state(prog: MetaTrainProgram, inner_tx, outer_tx) -> dict:
    """ShapeDtypeStructs of the meta-state arrays (nothing is allocated)."""
    return jax.eval_shape(lambda: _init_arrays(prog, inner_tx, outer_tx))


def meta_state_shardings(prog: MetaTrainProgram, inner_tx, outer_tx, mesh: Mesh, shapes: dict | None = None) -> dict:
    """NamedShardings of the meta-state arrays on ``mesh`` (`PopulationLayout.state_shardings`);
    ``shapes``: `abstract_meta_state`, when the caller has it already."""
    layout = PopulationLayout(mesh, prog.mesh.rules, prog.meta.population)
    lm_axes = logical_axes_of(nnx.eval_shape(lambda: CausalLM(prog.model, rngs=nnx.Rngs(0))))
    rater_axes = logical_axes_of(nnx.eval_shape(lambda: Rater(prog.rater, rngs=nnx.Rngs(0))))
    shapes = abstract_meta_state(prog, inner_tx, outer_tx) if shapes is None else shapes
    return layout.state_shardings(shapes, lm_axes, rater_axes, inner_tx,
                                  outer_tx, outer_stacked=prog.meta.outer_update == "average_params")


def init_meta_state(prog: MetaTrainProgram, inner_tx, outer_tx, mesh: Mesh | None = None) -> dict:
    """New meta-state arrays, created directly in their shardings on ``mesh`` (default: all devices)."""
    mesh = make_mesh(prog.mesh) if mesh is None else mesh
    shardings = meta_state_shardings(prog, inner_tx, outer_tx, mesh)
    return jax.jit(lambda: _init_arrays(prog, inner_tx, outer_tx), out_shardings=shardings)()


def initial_meta_state(prog: MetaTrainProgram, inner_tx, outer_tx, mesh: Mesh, loop: Loop,
                       ) -> tuple[MetaTrainState, dict, Restored]:
    """``(state, shardings, restored)``: the latest checkpoint restored in its shardings, else a new state."""
    shapes = abstract_meta_state(prog, inner_tx, outer_tx)
    shardings = meta_state_shardings(prog, inner_tx, outer_tx, mesh, shapes)
    abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)
    restored = loop.restore(abstract)
    if restored.found:
        book = dict(restored.extra["book"])
        book.setdefault("updates", restored.step - book.get("skipped", 0))  # checkpoints of older versions
        return MetaTrainState(restored.state, Members(**book)), shardings, restored
    arrays = jax.jit(lambda: _init_arrays(prog, inner_tx, outer_tx), out_shardings=shardings)()
    return MetaTrainState(arrays, Members.start(prog.meta)), shardings, restored


def meta_microbatches(meta: MetaConfig, mesh: Mesh, rules: dict) -> tuple[int, int]:
    """Microbatches of ``meta.microbatch_rows`` rows per device: ``(inner, held-out)``.

    A member's batch is split over the batch axes the population leaves (`PopulationLayout.batch_axes`).
    """
    layout = PopulationLayout(mesh, rules, meta.population)

    def count(size: int) -> int:
        return microbatch_count("meta.microbatch_rows", size, layout.batch_shards(size), meta.microbatch_rows)

    return count(meta.inner_batch_size), count(meta.outer_batch_size)


def make_meta_step(problem: MetaProblem, outer_tx, outer_mode: str, shardings: dict, mesh: Mesh,
                   rules: dict | None = None, population: int = 0, plain_steps: int = 0):
    """The jitted population meta-step; the state keeps its shardings, metrics come back replicated.

    With ``rules``, activations inside each member are kept batch-split over the batch axes the
    population leaves free (where the model calls ``parallel.activations.constrain``), and the
    population ``vmap`` names the population's mesh axes.
    """
    layout = PopulationLayout(mesh, rules, population) if rules is not None else None
    pop = layout.axes if layout else ()
    step = make_population_meta_step(problem, outer_tx, outer_mode, spmd_axis_name=pop or None, plain_steps=plain_steps)
    replicated = NamedSharding(mesh, PartitionSpec())
    step = batch_split(step, mesh, layout.member_rules if layout else {})

    def sharded_step(state, inner_batches, heldout):
        state, metrics = step(state, inner_batches, heldout)
        state = jax.lax.with_sharding_constraint(state, shardings)
        metrics = jax.tree.map(lambda x: jax.lax.with_sharding_constraint(x, replicated), metrics)
        return state, metrics

    return jax.jit(sharded_step, donate_argnums=(0,))


def make_reset(prog: MetaTrainProgram, inner_tx: optax.GradientTransformation, shardings: dict | None = None):
    """Re-initialises the members where ``mask`` is true: fresh parameters and optimiser state."""

    def reset(state, mask, keys):
        fresh = jax.vmap(lambda k: lm_params(prog.model, k))(keys)
        fresh_inner = jax.vmap(inner_tx.init)(fresh)
        pick = lambda new, old: jax.tree.map(
            lambda a, b: jnp.where(mask.reshape((-1,) + (1,) * (a.ndim - 1)), a, b), new, old
        )
        out = dict(state, theta=pick(fresh, state["theta"]), inner=pick(fresh_inner, state["inner"]))
        return out if shardings is None else jax.lax.with_sharding_constraint(out, shardings)

    return jax.jit(reset, donate_argnums=(0,))


def host_copy(tree):
    """Numpy copy of a pytree of (possibly multi-host sharded) global arrays, on every process."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(tree, tiled=True)


def member_mask(dead: list[int], population: int) -> jax.Array:
    mask = np.zeros(population, dtype=bool)
    mask[dead] = True
    return jnp.asarray(mask)


NAN_ENV = "DATARATER_INJECT_NAN"


def nan_injection(population: int):
    """Fault injection for the fault tests: ``$DATARATER_INJECT_NAN=STEP:MEMBER`` sets that member's
    LM parameters to NaN before meta-step STEP (as a diverged inner LM), so its meta-gradient is
    not finite. Returns ``(step, arrays) -> arrays``, or None when the variable is unset."""
    import os

    spec = os.environ.get(NAN_ENV, "")
    if not spec:
        return None
    at, member = (int(x) for x in spec.split(":"))
    if not 0 <= member < population:
        raise ValueError(f"{NAN_ENV}={spec}: member must be in [0, {population})")

    @jax.jit
    def poisoned(arrays):
        theta = jax.tree.map(lambda x: x.at[member].set(jnp.nan) if jnp.issubdtype(x.dtype, jnp.floating) else x,
                             arrays["theta"])
        return dict(arrays, theta=theta)

    return lambda step, arrays: poisoned(arrays) if step == at else arrays
