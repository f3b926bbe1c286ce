"""`datarater probe`: does the outer objective reward rejecting corrupted data, and at which ages?

Before any meta-training: one inner LM trains with uniform weights on a labelled corpus with
meta-training's inner optimiser. At each age it takes the T inner steps of a meta-gradient twice
from the same state on the same random batches, with uniform weights and with oracle weights (a
row's share of tokens from good documents), and measures the outer loss after them on the
same-corpus held-out split (the paper's objective) and on held-out rows that are wholly clean (a
clean target). ``delta = oracle - uniform`` below zero says the objective rewards rejecting that
data at that age; at zero or above, a rater cannot learn to reject it from that objective.

    RUN/probe.json   the rows (age, target, uniform, oracle, delta, delta_se) and the setup
    RUN/probe.png    delta against age, one line per target
    RUN/probe.md     the table, for the report
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from datarater.config import ProbeProgram, QuickstartProgram
from datarater.console import result, say
from datarater.errors import UserError


def probe_objective(prog: ProbeProgram | QuickstartProgram, out: Path, ages: list[int], steps: int = 0,
                    repeats: int = 8, heldout_rows: int = 256, reject: list[str] | None = None) -> dict:
    """Runs the probe with ``prog``'s model, corpus, data, inner optimiser and meta settings."""
    from datarater.data.corpus import load_splits
    from datarater.data.tokenizer import make_tokenizer
    from datarater.eval.report.plots import plot_probe
    from datarater.meta.core import MetaProblem
    from datarater.meta.probe import probe, probe_targets, row_clean_fraction
    from datarater.parallel.mesh import make_mesh
    from datarater.train.optimizer import make_optimizer
    from datarater.train.state import init_lm

    start = time.perf_counter()
    inner = prog.inner if isinstance(prog, QuickstartProgram) else prog.train
    m = prog.meta
    steps = steps or m.unroll
    tok = make_tokenizer(prog.data)
    splits = load_splits(prog.corpus, prog.data, tok, splits=("train", "heldout"), on_build=say)
    train, held = splits["train"], splits["heldout"]
    if not any(train.labels):
        raise UserError(f"probe: the corpus {prog.corpus.name} carries no labels (the oracle needs them): "
                        "use a labelled corpus, e.g. corpus=embedded")
    if reject:
        is_good, rejected = (lambda label, source: label not in reject), " ".join(reject)
    else:
        is_good, rejected = (lambda label, source: label == "clean"), "every label but clean"
    inner_tx = make_optimizer(dataclasses.replace(inner, steps=m.lifetime), eps_root=m.inner_eps_root)
    lm = init_lm(prog.model, m.seed, make_mesh(prog.mesh), prog.mesh.rules, inner_tx)
    problem = MetaProblem(lm.graphdef, None, inner_tx, m.grad_mode)
    targets = probe_targets(held, is_good, heldout_rows, m.seed)
    share = float(np.mean(row_clean_fraction(train, is_good)))
    say(f"[probe] {prog.corpus.name}: good-token share of training rows {share:.3f} (rejected: {rejected}); "
        f"{prog.model.name}, T={steps}, B={m.inner_batch_size}, {repeats} draws at ages {ages}")
    rows = probe(problem, lm.params, lm.opt_state, train, targets, is_good, sorted(ages), steps, repeats,
                 m.inner_batch_size, m.seed)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    setup = {"corpus": prog.corpus.name, "model": prog.model.name, "steps": steps, "batch_size": m.inner_batch_size,
             "repeats": repeats, "heldout_rows": heldout_rows, "lifetime": m.lifetime, "rejected": rejected,
             "good_token_share": share, "seconds": seconds}
    plain = [{k: None if isinstance(v, float) and np.isnan(v) else v for k, v in r.items()} for r in rows]
    (out / "probe.json").write_text(json.dumps({"setup": setup, "rows": plain}, indent=2) + "\n")
    title = f"{prog.model.name} on {prog.corpus.name}, T={steps}, B={m.inner_batch_size}, rejected: {rejected}"
    png = plot_probe(out, plain, title)
    (out / "probe.md").write_text(probe_markdown(plain, setup, png))
    return {"rows": plain, "setup": setup}


def probe_markdown(rows: list[dict], setup: dict, png: str) -> str:
    lines = ["## What the objective wants (probe)", "",
             f"Outer loss after T={setup['steps']} inner steps from one {setup['model']} LM at each age, with uniform "
             f"weights and with oracle weights (rejected: {setup['rejected']}; {setup['repeats']} draws of batches of "
             f"{setup['batch_size']}), on the same-corpus held-out split (`heldout`, the paper's objective) and on "
             "wholly clean held-out rows (`clean`). Delta < 0: the objective rewards rejecting that data at that age.",
             "", "| age | outer loss on | uniform | oracle | delta | s.e. |", "|---|---|---|---|---|---|"]
    for r in rows:
        se = "–" if r["delta_se"] is None else f"{r['delta_se']:.5f}"
        lines.append(f"| {r['age']} | {r['target']} | {r['uniform']:.4f} | {r['oracle']:.4f} | {r['delta']:+.5f} | {se} |")
    lines += ["", f"![objective probe](probe/{png})", ""]
    return "\n".join(lines)


def run(prog: ProbeProgram) -> dict:
    from datarater.rundir import prepare_run_dir

    run_dir, _ = prepare_run_dir(prog.run_dir, prog, may_change=())
    p = prog.probe
    out = probe_objective(prog, run_dir, list(p.ages), p.steps, p.repeats, p.heldout_rows, list(p.reject))
    result(f"{'age':>5}  {'target':<8}  {'uniform':>8}  {'oracle':>8}  {'delta':>9}  {'se':>7}")
    for r in out["rows"]:
        se = float("nan") if r["delta_se"] is None else r["delta_se"]
        result(f"{r['age']:>5}  {r['target']:<8}  {r['uniform']:8.4f}  {r['oracle']:8.4f}  {r['delta']:+9.5f}  {se:7.5f}")
    say(f"[probe] {out['setup']['seconds']:.0f} s; wrote {run_dir / 'probe.json'}, probe.png and probe.md")
    return out
