"""What does the outer objective want more of, as an inner LM ages?

    python experiments/influence_by_age.py [--ages 0 50 150 300 600 1000 2000] [--set key=value ...]

Trains one inner LM (``model``, default ``nano``) on uniformly drawn batches of the corpus
(default ``corpus=embedded``). At each age it takes the first-order effect, on the mean held-out
loss (256 heldout rows), of up-weighting one validation row in the next Adam step,

    influence_i = grad L_held . P grad l_i        (P: Adam's preconditioner, 1 / sqrt(nu))

(positive: the objective wants more of row i; this is, up to the learning rate, the meta-gradient
the rater gets for that row at T = 1). It prints, per label (the embedded corpus's corruption
types), the mean influence relative to clean rows, and the ROC-AUC of clean above that type by
influence. A DataRater can only learn preferences the objective has at the ages its population
spans: see the README's "What the rater learns on the embedded corpus".
"""

from __future__ import annotations

import argparse

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from datarater.cli import SUBCOMMANDS, compose
from datarater.data.corpus import load_splits
from datarater.data.pipeline import make_iterator, train_batches
from datarater.data.tokenizer import make_tokenizer
from datarater.eval.audit import roc_auc
from datarater.models.transformer import sequence_losses
from datarater.parallel.mesh import make_mesh
from datarater.train.optimizer import make_optimizer
from datarater.train.state import init_lm
from datarater.train.step import make_train_step

FIELDS = ("tokens", "segment_ids", "positions")


def rows(packed, n: int, seed: int) -> tuple[dict, np.ndarray]:
    pick = np.sort(np.random.default_rng(seed).choice(len(packed), size=min(n, len(packed)), replace=False))
    labels = np.array([packed.label_of_row(int(i)) for i in pick]) if packed.labels else np.full(len(pick), "?")
    return {k: getattr(packed, k)[pick] for k in FIELDS}, labels


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ages", nargs="+", type=int, default=[0, 50, 150, 300, 600, 1000, 2000])
    ap.add_argument("--rows", type=int, default=1536, help="validation rows scored at each age")
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="meta-train overrides key=value")
    args = ap.parse_args()
    prog = compose(SUBCOMMANDS["meta-train"], ["corpus=embedded", "model=nano", "rater=nano", *args.overrides])
    tok = make_tokenizer(prog.data)
    splits = load_splits(prog.corpus, prog.data, tok, splits=("train", "heldout", "validation"))
    val, labels = rows(splits["validation"], args.rows, 0)
    held, _ = rows(splits["heldout"], 256, 1)

    tx = make_optimizer(prog.train)
    lm = init_lm(prog.model, 0, make_mesh(prog.mesh), prog.mesh.rules, tx)
    graphdef, theta, opt = lm.graphdef, lm.params, lm.opt_state
    step = jax.jit(make_train_step(graphdef, tx))
    it = make_iterator(train_batches(splits["train"], prog.meta.inner_batch_size, prog.meta.seed))

    def held_loss(th):
        nll, count = sequence_losses(nnx.merge(graphdef, th), held)
        return jnp.sum(nll) / jnp.sum(count)

    @jax.jit
    def influence(th, nu, batch):
        d = jax.tree.map(lambda g, n: g / (jnp.sqrt(n) + 1e-8), jax.grad(held_loss)(th), nu)
        return jax.jvp(lambda t: sequence_losses(nnx.merge(graphdef, t), batch)[0], (th,), (d,))[1]

    age = 0
    kinds = sorted(set(labels) - {"clean"})
    for target in sorted(args.ages):
        while age < target:
            theta, opt, _ = step(theta, opt, {k: v for k, v in next(it).items() if k != "index"})
            age += 1
        adam = [s for s in jax.tree.leaves(opt, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState))
                if isinstance(s, optax.ScaleByAdamState)][0]
        nu = adam.nu if age else jax.tree.map(jnp.ones_like, theta)
        infl = np.concatenate([np.asarray(influence(theta, nu, {k: v[s:s + 256] for k, v in val.items()}))
                               for s in range(0, len(labels), 256)])
        clean = infl[labels == "clean"]
        scale = float(np.mean(np.abs(clean))) or 1.0
        rel = " ".join(f"{k}={infl[labels == k].mean() / scale:+.2f}" for k in kinds)
        auc = " ".join(f"{k}={roc_auc(clean, infl[labels == k]):.2f}" for k in kinds)
        print(f"age {age:>5}  heldout loss {float(held_loss(theta)):.3f}  clean={clean.mean() / scale:+.2f}  {rel}")
        print(f"{'':>11}  AUC clean above type by influence: {auc}", flush=True)


if __name__ == "__main__":
    main()
