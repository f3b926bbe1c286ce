"""`datarater probe`: does the outer objective reward rejecting corrupted data, and at which ages?

Before any meta-training: one inner LM trains with uniform weights on a labelled corpus with
meta-training's inner optimiser. At each age it takes the T inner steps of a meta-gradient twice
from the same state on the same random batches, with uniform weights and with oracle weights (a
row's share of tokens from good documents), and measures the outer loss after them on the
same-corpus held-out split (the paper's objective) and on held-out rows that are wholly clean (a
clean target). ``delta = oracle - uniform`` below zero says the objective rewards rejecting that
data at that age; at zero or above, a rater cannot learn to reject it from that objective. With
``probe.each`` the same draws are also looked ahead with one oracle per label, rejecting that label
alone: which kinds of data the objective rewards rejecting, one by one.

    RUN/probe.json   the rows (age, rejected, target, uniform, oracle, delta, delta_se, and each
                     draw's delta: deltas) and the setup
    RUN/probe.png    delta against age, one panel per target, one line per oracle (what it rejects)
    RUN/probe.md     one table per target (rows: what is rejected; columns: ages), for the report
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from datarater.artifacts import json_safe
from datarater.config import ProbeProgram, QuickstartProgram
from datarater.console import result, say
from datarater.errors import UserError

BY = ("label", "source")


def target_rule(target, by: str) -> tuple[str, Callable[[str, str], bool]]:
    """The probe's second outer loss, besides the held-out split: ``(name, is_target(label, source))``,
    the held-out rows of ``meta.target``'s selection, or with no target the wholly ``clean`` rows.
    ``by=source`` needs a target selected by source: its sources are what the oracles keep."""
    if by == "source" and not target.sources:
        raise UserError("config key 'probe.by': 'source' needs a target selected by meta.target.sources=[...] "
                        "(the sources an oracle keeps, and the outer loss the probe reads); "
                        f"meta.target selects {described(target)}")
    if target.mode != "heldout":  # the rows are meta-training's own outer-loss rows (`pack_target`)
        from datarater.data.documents import Document
        from datarater.data.target import _matches

        name = "clean" if list(target.labels) == ["clean"] and not target.sources and target.mode == "selection" \
            else "target"
        return name, lambda label, source: _matches(Document("", "", source, label), target)
    return "clean", lambda label, source: label == "clean"


def described(target) -> str:
    """The probe's second target's rows, in words, for messages and the report."""
    if target.mode == "heldout":
        return "no target (the probe reads the wholly clean held-out rows)"
    parts = [f"{k} {list(getattr(target, k))}" for k in ("labels", "sources", "paths") if list(getattr(target, k))]
    return "meta.target's outer-loss rows: " + (" and ".join(parts) or target.mode)


def oracles_for(values: list[str], reject: list[str], each: bool, by: str = "label",
                keep: list[str] | None = None) -> dict:
    """``{what is rejected: is_good(label, source)}`` over the training documents' ``values`` of
    ``by`` (label or source): the oracle rejecting ``reject`` (when empty, every value but
    ``keep``, default ``[clean]``) and, with ``each``, one per value outside ``keep`` rejecting it
    alone. A value in ``reject`` that no training document has is a UserError naming ``probe.reject``."""
    keep = list(keep or ["clean"])
    present = sorted(set(values))
    unknown = [v for v in reject if v not in present]
    if unknown:
        raise UserError(f"config key 'probe.reject': no training document has {by} {unknown}; "
                        f"{by}s found: {present}")
    if not reject and not set(keep) & set(present):
        key = "meta.target.sources" if by == "source" else "meta.target.labels"
        raise UserError(f"config key '{key}': no training document has {by} {keep}, so the oracle would keep "
                        f"nothing; {by}s found: {present} (or name what to reject with probe.reject=[...])")

    def value(label: str, source: str) -> str:
        return label if by == "label" else source

    out = {" ".join(reject): (lambda label, source: value(label, source) not in reject)} if reject else \
        {f"every {by} but {', '.join(keep)}": (lambda label, source: value(label, source) in keep)}
    if each:
        for v in present:
            if v not in keep:
                out.setdefault(v, lambda label, source, v=v: value(label, source) != v)
    return out


def targets_for(held, rows: int, seed: int, rule: tuple[str, Callable[[str, str], bool]] | None = None,
                target=None) -> dict:
    """The probe's outer-loss batches: the held-out split, and the target's rows: those of
    ``target`` (meta-training's packed outer-loss rows of ``meta.target``) or, without it, the
    held-out rows wholly from ``rule``'s documents (default the ``clean`` ones), whatever the
    oracles reject (not the rows an oracle keeps, which may hold other kinds of junk)."""
    from datarater.meta.probe import probe_targets

    name, is_target = rule or ("clean", lambda label, source: label == "clean")
    return probe_targets(held, is_target, rows, seed, name=name, target=target)


def probe_objective(prog: ProbeProgram | QuickstartProgram, out: Path, ages: list[int], steps: int = 0,
                    repeats: int = 8, heldout_rows: int = 256, reject: list[str] | None = None,
                    each: bool = False, by: str = "label") -> dict:
    """Runs the probe with ``prog``'s model, corpus, data, inner optimiser and meta settings."""
    from datarater.data.corpus import pack_split
    from datarater.data.target import pack_target, read_with_target
    from datarater.data.tokenizer import make_tokenizer
    from datarater.eval.report.plots import plot_probe
    from datarater.meta.core import MetaProblem
    from datarater.meta.probe import probe, row_clean_fraction
    from datarater.parallel.mesh import make_mesh
    from datarater.train.optimizer import make_optimizer
    from datarater.train.state import init_lm

    start = time.perf_counter()
    inner = prog.inner if isinstance(prog, QuickstartProgram) else prog.train
    m = prog.meta
    steps = steps or m.unroll
    if by not in BY:
        raise UserError(f"config key 'probe.by': {by!r} is not one of {list(BY)}")
    check_settings(ages, steps, repeats, heldout_rows)
    if m.target.weights:
        raise UserError("config key 'meta.target.weights': the probe reads a target's outer-loss rows as one pool, "
                        "not as a weighted mixture: probe without the weights, or each entry of meta.target.paths alone")
    rule = target_rule(m.target, by)
    tok = make_tokenizer(prog.data)
    # read as meta-training reads: the same target rows, with the same checks of the target
    resolved = read_with_target(prog.corpus, tok, m.target, ("train", "heldout"), on_build=say)
    train, held = (pack_split(resolved.splits[s], prog.data, tok, s) for s in ("train", "heldout"))
    target_rows = pack_target(resolved, prog.data, tok)[0] if m.target.mode != "heldout" else None
    if by == "label":
        if not any(train.labels):
            raise UserError(f"probe: the corpus {prog.corpus.name} carries no labels (the oracle needs them): "
                            "use a labelled corpus, e.g. corpus=embedded, or probe.by=source with meta.target.sources")
        oracles = oracles_for(train.labels, list(reject or []), each, "label", list(m.target.labels) or ["clean"])
    else:
        oracles = oracles_for(train.sources, list(reject or []), each, "source", list(m.target.sources))
    rejected = ", ".join(oracles)
    inner_tx = make_optimizer(dataclasses.replace(inner, steps=m.lifetime), eps_root=m.inner_eps_root)
    lm = init_lm(prog.model, m.seed, make_mesh(prog.mesh), prog.mesh.rules, inner_tx)
    problem = MetaProblem(lm.graphdef, None, inner_tx, m.grad_mode)
    targets = targets_for(held, heldout_rows, m.seed, rule, target_rows)
    shares = {name: float(np.mean(row_clean_fraction(train, good))) for name, good in oracles.items()}
    share = next(iter(shares.values()))
    alone = len(oracles) - 1
    say(f"[probe] {prog.corpus.name}: good-token share of training rows {share:.3f} (rejected: {next(iter(oracles))}"
        f"{f'; and {alone} more {by}{_s(alone)}, each alone' if alone else ''}); "
        f"{prog.model.name}, T={steps}, B={m.inner_batch_size}, {repeats} draws at ages {ages}")
    from datarater.console import KindRates, Progress

    progress: Progress | None = None
    rates: KindRates | None = None  # aging steps and look-ahead steps cost differently: an ETA from each rate

    def show(done: int, total: int, age: int) -> None:  # the first call (done 0) starts the clock
        nonlocal progress, rates
        if progress is None:
            progress = Progress(total, start_step=done, label="probe", every=5.0)
            rates = KindRates({"aging": max(ages, default=0), "lookahead": total - max(ages, default=0)})
        else:
            rates.update({"aging": age, "lookahead": done - age})
            if done > progress.start_step:
                progress.show(done, eta=rates.eta(), age=age)

    rows = probe(problem, lm.params, lm.opt_state, train, targets, oracles, ages, steps, repeats,
                 m.inner_batch_size, m.seed, on_progress=show)
    seconds = time.perf_counter() - start
    out.mkdir(parents=True, exist_ok=True)
    setup = {"corpus": prog.corpus.name, "model": prog.model.name, "steps": steps, "batch_size": m.inner_batch_size,
             "repeats": repeats, "heldout_rows": heldout_rows, "lifetime": m.lifetime, "rejected": rejected, "by": by,
             "target": rule[0], "target_rows": described(m.target) if m.target.mode != "heldout" else
             "wholly clean held-out rows",
             "good_token_share": share, "good_token_shares": shares, "seconds": seconds}
    plain = json_safe(rows)
    (out / "probe.json").write_text(json.dumps({"setup": setup, "rows": plain}, indent=2) + "\n")
    title = f"{prog.model.name} on {prog.corpus.name}, T={steps}, B={m.inner_batch_size}"
    png = plot_probe(out, plain, title)
    (out / "probe.md").write_text(probe_markdown(plain, setup, png))
    return {"rows": plain, "setup": setup}


def probe_markdown(rows: list[dict], setup: dict, png: str) -> str:
    lines = ["## What the objective wants (probe)", "",
             f"Outer loss after T={setup['steps']} inner steps from one {setup['model']} LM at each age, with uniform "
             f"weights and with oracle weights that reject the data named in each row ({setup['repeats']} draws of "
             f"batches of {setup['batch_size']}, the same draws for every oracle), on the same-corpus held-out split "
             f"(`heldout`, the paper's objective) and on `{setup['target']}`, "
             f"{setup.get('target_rows', 'wholly clean held-out rows')}. Each cell is "
             "delta = oracle - uniform (nats) ± its standard error over the draws; delta < 0: the objective "
             "rewards rejecting that data at that age, at 0 or above a rater cannot learn to reject it from it.", ""]
    ages = sorted(dict.fromkeys(r["age"] for r in rows))
    for target in dict.fromkeys(r["target"] for r in rows):
        lines += [f"Outer loss on `{target}`:", "", "| rejected | " + " | ".join(f"age {a}" for a in ages) + " |",
                  "|---|" + "---|" * len(ages)]
        for rejected in dict.fromkeys(r["rejected"] for r in rows):
            cells = {r["age"]: r for r in rows if r["target"] == target and r["rejected"] == rejected}
            lines.append(f"| {rejected} | " + " | ".join(_cell(cells.get(a)) for a in ages) + " |")
        lines.append("")
    lines += [f"![objective probe]({png})", ""]  # beside probe.md; the report rewrites it
    return "\n".join(lines)


def _cell(r: dict | None) -> str:
    if r is None:
        return "–"
    if r["delta"] is None:  # a loss that was not finite (written as null)
        return "not finite"
    se = "" if r["delta_se"] is None else f" ± {r['delta_se']:.5f}"
    return f"{r['delta']:+.5f}{se}"


def _num(v, spec: str) -> str:
    return format(float("nan") if v is None else v, spec)


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def check_settings(ages, steps: int, repeats: int, heldout_rows: int) -> None:
    """Refuses probe settings that cannot give a row, naming the key, before any compute."""
    if not list(ages):
        raise UserError("config key 'probe.ages': empty; give the inner-LM ages to probe, e.g. probe.ages=[0,50,150]")
    bad = [a for a in ages if int(a) != a or a < 0]
    if bad:
        raise UserError(f"config key 'probe.ages': ages are steps of the inner LM, whole numbers >= 0; got {bad}")
    for key, v, low in (("probe.steps", steps, 0), ("probe.repeats", repeats, 1), ("probe.heldout_rows", heldout_rows, 1)):
        if v < low:
            raise UserError(f"config key '{key}': must be at least {low}; got {v}")


def run(prog: ProbeProgram) -> dict:
    from datarater.rundir import prepare_run_dir

    run_dir, _ = prepare_run_dir(prog.run_dir, prog, may_change=())
    p = prog.probe
    out = probe_objective(prog, run_dir, list(p.ages), p.steps, p.repeats, p.heldout_rows, list(p.reject), p.each,
                          p.by)
    width = max([8] + [len(r["rejected"]) for r in out["rows"]])
    result(f"{'age':>5}  {'rejected':<{width}}  {'target':<8}  {'uniform':>8}  {'oracle':>8}  {'delta':>9}  {'se':>7}")
    for r in out["rows"]:
        result(f"{r['age']:>5}  {r['rejected']:<{width}}  {r['target']:<8}  {_num(r['uniform'], '8.4f')}  "
               f"{_num(r['oracle'], '8.4f')}  {_num(r['delta'], '+9.5f')}  {_num(r['delta_se'], '7.5f')}")
    say(f"[probe] {out['setup']['seconds']:.0f} s; wrote {run_dir / 'probe.json'}, probe.png and probe.md")
    return out
