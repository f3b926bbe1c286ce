"""What the outer objective rewards before any meta-training: its loss after T inner steps under uniform and oracle weights.

For an inner LM at some age, `lookahead_loss` takes the ``T`` inner steps of a meta-gradient
(`MetaProblem.lm_update`, the same update meta-training unrolls) on given batches with given row
weights, and returns the held-out loss ``L_out`` there. `probe` compares uniform weights (what an
untrained rater gives) with oracle weights (each row weighted by its share of tokens from good
documents, so wholly corrupted rows get zero; one oracle per set of rejected labels, all on the
same draws) at several ages of one LM. A negative
``delta = oracle - uniform`` says the objective rewards rejecting the bad rows at that age: a rater
can only learn a preference the objective has at the ages its population spans.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from functools import partial

import jax
import jax.numpy as jnp
import numpy as np

from datarater.data.packing import PackedSequences
from datarater.data.pipeline import make_iterator, train_batches
from datarater.errors import UserError
from datarater.meta.core import MetaProblem, valid_rows

Batch = dict[str, jax.Array]
IsGood = Callable[[str, str], bool]  # (document label, document source) -> a document to keep
FIELDS = ("tokens", "segment_ids", "positions")


def row_clean_fraction(packed: PackedSequences, is_good: IsGood) -> np.ndarray:
    """``float [n]``: per row, the share of its non-padding tokens from documents that pass
    ``is_good(label, source)`` (label ``""`` where the corpus has none); 0 for a row without tokens."""
    labels = packed.labels or [""] * len(packed.doc_ids)
    return packed.token_share(np.array([bool(is_good(lab, src)) for lab, src in zip(labels, packed.sources, strict=True)],
                                       dtype=bool))


def normalised_weights(weights: jax.Array, batches: Batch) -> jax.Array:
    """``[T, B]`` weights over the valid rows of each batch, summing to 1 per batch as the rater's
    softmax weights do; rows without tokens and rows weighted 0 get exactly 0 (a batch whose rows
    are all 0 gets no gradient, but the optimiser still steps: momentum and weight decay)."""
    w = jnp.where(jax.vmap(valid_rows)(batches), weights, 0.0)
    return w / jnp.maximum(jnp.sum(w, axis=-1, keepdims=True), 1e-30)


def _steps(problem: MetaProblem, theta: dict, opt_state, batches: Batch, weights: jax.Array):
    """``(theta_T, opt_state_T)`` after one weighted inner step per batch of ``batches [T, B, L]``."""

    def body(carry, xs):
        th, st = carry
        batch, w = xs
        th, st, _ = problem.lm_update(th, st, w, batch)
        return (th, st), None

    (theta, opt_state), _ = jax.lax.scan(body, (theta, opt_state), (batches, normalised_weights(weights, batches)))
    return theta, opt_state


@partial(jax.jit, static_argnums=0)
def _advance(problem: MetaProblem, theta: dict, opt_state, batches: Batch, weights: jax.Array):
    return _steps(problem, theta, opt_state, batches, weights)


@partial(jax.jit, static_argnums=0)
def _lookahead_losses(problem: MetaProblem, theta: dict, opt_state, batches: Batch, weights: jax.Array,
                      targets: dict[str, Batch]) -> dict[str, jax.Array]:
    theta_t, _ = _steps(problem, theta, opt_state, batches, weights)
    return {name: problem.heldout_loss(theta_t, batch) for name, batch in targets.items()}


def _fields(batch: dict) -> Batch:
    return {k: batch[k] for k in FIELDS}


def lookahead_loss(lm_params: dict, opt_state, batches: Batch, weights, heldout_batch: Batch,
                   problem: MetaProblem) -> float:
    """Mean next-token NLL on ``heldout_batch [N, L]`` after ``T`` inner steps from
    ``(lm_params, opt_state)``, one on each of ``batches [T, B, L]`` with row ``weights [T, B]``
    (normalised per batch: `normalised_weights`). Uniform weights are ``1 / B`` (or any constant)."""
    losses = _lookahead_losses(problem, lm_params, opt_state, _fields(batches), jnp.asarray(weights, jnp.float32),
                               {"target": _fields(heldout_batch)})
    return float(losses["target"])


def probe_targets(heldout: PackedSequences, is_good: IsGood, rows: int, seed: int, name: str = "clean",
                  target: PackedSequences | None = None) -> dict[str, dict[str, np.ndarray]]:
    """The outer losses' batches: ``heldout``, up to ``rows`` random rows of the held-out split (the
    objective meta-training uses), and ``name`` (default ``clean``), up to ``rows`` random rows of
    ``target`` (the packed outer-loss rows of ``meta.target``) or, without it, of the held-out rows
    whose tokens all come from documents that pass ``is_good``."""
    rng = np.random.default_rng(seed)
    source = heldout if target is None else target
    pool = np.flatnonzero(row_clean_fraction(heldout, is_good) == 1.0) if target is None else \
        np.flatnonzero((target.segment_ids > 0).any(axis=1))
    if not len(pool):
        raise UserError(f"probe: no held-out row is wholly from the {name} documents: the corpus needs document "
                        "labels (corpus=embedded has them) and some clean documents, or a target "
                        "(meta.target.sources / labels / paths)")
    pick = {"heldout": (heldout, rng.choice(len(heldout), min(rows, len(heldout)), replace=False)),
            name: (source, rng.choice(pool, min(rows, len(pool)), replace=False))}
    return {n: {k: getattr(packed, k)[np.sort(i)] for k in FIELDS} for n, (packed, i) in pick.items()}


def probe(problem: MetaProblem, lm_params: dict, opt_state, train: PackedSequences, targets: dict[str, Batch],
          oracles: Mapping[str, IsGood], ages: Iterable[int], steps: int, repeats: int, batch_size: int,
          seed: int = 0, on_progress: Callable[[int, int, int], None] | None = None) -> list[dict]:
    """Look-ahead losses under uniform weights and under each oracle's at each age of one inner LM.

    The LM ``(lm_params, opt_state)`` (age 0) trains with uniform weights on shuffled batches of
    ``train`` up to each of ``ages`` in turn (ascending; one LM, continued). At each age, ``repeats``
    draws of ``steps`` random batches of ``batch_size`` rows each are looked ahead from the same
    state with uniform weights and with each oracle's weights (`row_clean_fraction` of each row under
    ``oracles[name]``), all on the same draws, and the outer loss is read on every batch of
    ``targets`` (`probe_targets`). Returns one row per age, oracle and target: ``{age, rejected,
    target, uniform, oracle, delta, delta_se, deltas}`` (``rejected`` the oracle's name), the losses
    averaged over the draws, ``delta`` the mean of oracle - uniform, ``delta_se`` its standard error
    over the draws (NaN for one draw) and ``deltas`` the draws' own oracle - uniform, in draw order:
    two oracles at one age are on the same draws, so their difference is paired draw by draw.
    ``on_progress(done, total, age)`` is called as the work goes, in inner steps: once at 0 before
    any, every 25 steps of training to an age and on reaching it, after each look-ahead (so ``age``
    of the ``done`` steps were aging ones, the rest look-aheads).
    """
    if steps < 1 or repeats < 1:
        raise ValueError(f"need steps >= 1 and repeats >= 1, got {steps}, {repeats}")
    if not oracles:
        raise ValueError("probe needs at least one oracle")
    weights_of = {name: row_clean_fraction(train, good).astype(np.float32) for name, good in oracles.items()}
    names = list(targets)  # the caller's order (device_put sorts a dict's keys)
    targets = jax.device_put({name: _fields(batch) for name, batch in targets.items()})
    aging = make_iterator(train_batches(train, batch_size, seed))
    rng = np.random.default_rng(seed + 1)
    one = np.ones((1, batch_size), np.float32)
    theta, opt, age, out = lm_params, opt_state, 0, []
    ages = sorted(set(ages))
    total = (ages[-1] if ages else 0) + len(ages) * repeats * (1 + len(oracles)) * steps
    done = 0

    def report() -> None:
        if on_progress is not None:
            on_progress(done, total, age)

    def losses(batches, weights) -> dict[str, float]:
        got = jax.device_get(_lookahead_losses(problem, theta, opt, batches, weights, targets))
        return {name: float(v) for name, v in got.items()}

    report()  # done 0: the caller's clock starts here
    for target_age in ages:
        while age < target_age:
            batch = {k: v[None] for k, v in _fields(next(aging)).items()}
            theta, opt = _advance(problem, theta, opt, batch, one)
            age += 1
            done += 1
            if age % 25 == 0 or age == target_age:
                report()
        uniform = {n: [] for n in names}
        oracle = {(o, n): [] for o in oracles for n in names}
        for _ in range(repeats):
            index = np.stack([rng.choice(len(train), batch_size, replace=False) for _ in range(steps)])
            batches = {k: getattr(train, k)[index] for k in FIELDS}
            for name, value in losses(batches, np.ones(index.shape, np.float32)).items():
                uniform[name].append(value)
            done += steps
            report()
            for o, w in weights_of.items():
                for name, value in losses(batches, w[index]).items():
                    oracle[o, name].append(value)
                done += steps
                report()
        for o in oracles:
            for name in names:
                u, v = np.array(uniform[name]), np.array(oracle[o, name])
                d = v - u
                se = float(np.std(d, ddof=1) / np.sqrt(len(d))) if len(d) > 1 else float("nan")
                out.append({"age": age, "rejected": o, "target": name, "uniform": float(u.mean()),
                            "oracle": float(v.mean()), "delta": float(d.mean()), "delta_se": se,
                            "deltas": [float(x) for x in d]})
    return out
