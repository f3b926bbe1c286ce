"""Does the outer objective reward rejecting corrupted data, and at which inner-LM ages?

    python experiments/objective_probe.py [--ages 0 20 50 100 150 190] [--steps 2] [--repeats 8]
        [--reject LABEL ...] [--out runs/objective-probe] [--set key=value ...]

Before any meta-training: one inner LM (``model``, default ``nano``) trains with uniform weights on
the corpus (default ``corpus=embedded``, whose documents are labelled "clean" or a corruption type),
with meta-training's inner optimiser (schedule over ``meta.lifetime``). At each age it takes the
``--steps`` T inner steps of a meta-gradient twice from the same state on the same random batches:
with uniform weights, and with oracle weights (a row's share of tokens from documents not labelled
with a rejected type; wholly corrupted rows get 0). It prints the outer loss after them on the
same-corpus held-out split (what meta-training uses) and on held-out rows that are wholly clean,
and ``delta = oracle - uniform`` with its standard error over ``--repeats`` draws. A negative delta
says the objective rewards rejecting that data at that age; where it is zero or positive, a rater
cannot learn to reject it from that objective. Writes probe.json and probe.png (delta against age,
one line per target) to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from datarater.cli import SUBCOMMANDS, compose
from datarater.data.corpus import load_splits
from datarater.data.tokenizer import make_tokenizer
from datarater.meta.core import MetaProblem
from datarater.meta.probe import probe, probe_targets, row_clean_fraction
from datarater.parallel.mesh import make_mesh
from datarater.train.optimizer import make_optimizer
from datarater.train.state import init_lm


def plot(rows: list[dict], title: str, path: Path) -> None:
    """Delta (oracle - uniform) against age, one line per target, with standard-error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.0))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for target in dict.fromkeys(r["target"] for r in rows):
        mine = [r for r in rows if r["target"] == target]
        se = [0.0 if np.isnan(r["delta_se"]) else r["delta_se"] for r in mine]
        ax.errorbar([r["age"] for r in mine], [r["delta"] for r in mine], yerr=se, marker="o", capsize=3, label=target)
    ax.axhline(0.0, color="grey", lw=0.8)
    ax.set_xlabel("inner LM age (steps)")
    ax.set_ylabel("outer loss, oracle - uniform (nats)")
    ax.set_title(title, fontsize=9)
    ax.legend(title="target")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ages", nargs="+", type=int, default=[0, 20, 50, 100, 150, 190])
    ap.add_argument("--steps", type=int, default=None, help="T inner steps looked ahead (default meta.unroll)")
    ap.add_argument("--repeats", type=int, default=8, help="draws of T batches averaged at each age")
    ap.add_argument("--heldout-rows", type=int, default=256, help="rows of each target batch")
    ap.add_argument("--reject", nargs="*", default=None,
                    help="document labels the oracle weights at 0 (default: every label but 'clean')")
    ap.add_argument("--out", type=Path, default=Path("runs/objective-probe"))
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], help="meta-train overrides key=value")
    args = ap.parse_args()
    start = time.perf_counter()
    prog = compose(SUBCOMMANDS["meta-train"], ["corpus=embedded", "model=nano", "rater=nano", *args.overrides])
    m = prog.meta
    steps = args.steps or m.unroll
    tok = make_tokenizer(prog.data)
    splits = load_splits(prog.corpus, prog.data, tok, splits=("train", "heldout"))
    train, held = splits["train"], splits["heldout"]
    if args.reject is None:
        is_good = lambda label, source: label == "clean"
        rejected = "every label but clean"
    else:
        is_good = lambda label, source: label not in args.reject
        rejected = " ".join(args.reject)

    inner_tx = make_optimizer(dataclasses.replace(prog.train, steps=m.lifetime), eps_root=m.inner_eps_root)
    lm = init_lm(prog.model, m.seed, make_mesh(prog.mesh), prog.mesh.rules, inner_tx)
    problem = MetaProblem(lm.graphdef, None, inner_tx, m.grad_mode)
    targets = probe_targets(held, is_good, args.heldout_rows, m.seed)
    share = float(np.mean(row_clean_fraction(train, is_good)))
    print(f"[probe] {prog.corpus.name}: train {len(train)} rows, heldout {len(held)} rows of {prog.data.seq_len} "
          f"tokens; good-token share of train rows {share:.3f} (rejected: {rejected})")
    print(f"[probe] model {prog.model.name}, T={steps}, B={m.inner_batch_size}, repeats {args.repeats}, "
          f"lifetime {m.lifetime}, targets of {args.heldout_rows} rows", flush=True)

    rows = probe(problem, lm.params, lm.opt_state, train, targets, is_good, args.ages, steps, args.repeats,
                 m.inner_batch_size, m.seed)
    seconds = time.perf_counter() - start
    print(f"{'age':>5}  {'target':<8}  {'uniform':>8}  {'oracle':>8}  {'delta':>9}  {'se':>7}")
    for r in rows:
        print(f"{r['age']:>5}  {r['target']:<8}  {r['uniform']:8.4f}  {r['oracle']:8.4f}  {r['delta']:+9.5f}  "
              f"{r['delta_se']:7.5f}")
    print(f"[probe] {seconds:.0f} s")

    args.out.mkdir(parents=True, exist_ok=True)
    setup = {"corpus": prog.corpus.name, "model": prog.model.name, "steps": steps, "batch_size": m.inner_batch_size,
             "repeats": args.repeats, "heldout_rows": args.heldout_rows, "lifetime": m.lifetime,
             "rejected": rejected, "good_token_share": share, "overrides": args.overrides, "seconds": seconds}
    plain = [{k: None if isinstance(v, float) and np.isnan(v) else v for k, v in r.items()} for r in rows]  # JSON has no NaN
    (args.out / "probe.json").write_text(json.dumps({"setup": setup, "rows": plain}, indent=2) + "\n")
    title = f"{prog.model.name} on {prog.corpus.name}, T={steps}, B={m.inner_batch_size}, rejected: {rejected}"
    plot(rows, title, args.out / "probe.png")
    print(f"[probe] wrote {args.out / 'probe.json'} and {args.out / 'probe.png'}")


if __name__ == "__main__":
    main()
