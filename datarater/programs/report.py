"""`datarater report`: collect a sweep's runs and the rater's scores, write report.md with plots.

Works on a sweep run directory (``RUN/lm/*`` runs and ``RUN/config.yaml``) or on a quickstart
run directory (its sweep is in ``RUN/sweep``). The rater and the baseline curators score the
first ``rows`` rows of the corpus's validation split: histograms, extremes, the feature fit and,
when documents carry corruption labels, the audit (ROC-AUC clean vs each corruption type); every
finished LM's NLL on the same rows, by source and label.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from datarater.config import ReportProgram, SweepProgram
from datarater.console import say
from datarater.errors import UserError
from datarater.rundir import load_config_file


def read_sweep(run_dir: Path) -> tuple[Path, SweepProgram]:
    for candidate in (run_dir, run_dir / "sweep"):
        cfg = candidate / "config.yaml"
        if cfg.exists() and (candidate / "lm").is_dir():
            raw = load_config_file(cfg)
            return candidate, OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(SweepProgram), raw))
    raise UserError(f"{run_dir} is neither a sweep run directory nor a quickstart one (no config.yaml and lm/ "
                    "in it or in its sweep/): run `datarater sweep` first")


def tested_protocol(sweep_dir: Path, sweep: SweepProgram) -> tuple[bool, int, int]:
    """How the sweep's comparison over seeds was run, ``(select_apart, seeds, select_seeds)``
    (`written_protocol`); with none yet, as configured."""
    from datarater.programs.sweep_plan import apart
    from datarater.programs.sweep_runs import written_protocol

    comp = sweep_dir / "comparison.json"
    s = sweep.sweep
    return written_protocol(comp, s.seeds) if comp.exists() else (apart(sweep), s.seeds, s.select_seeds)


def finished_runs(sweep_dir: Path, on: str = "validation", apart: bool = False, seeds: int | None = None,
                  select_seeds: int = 1):
    """The sweep's finished train-lm runs, as the sweep planned them, and the baseline spread:
    model -> final NLLs of its unfiltered run's seed replicas (`sweep.seeds`), after that run's own
    unless the sweep tested its replicas apart from it (`datarater.programs.sweep_plan.apart`). With
    ``seeds``, only the replicas that protocol tests (`tested_replicas`, after ``select_seeds`` picking
    seeds): one left from a sweep run before under another protocol, or a picking seed's, is not in
    the spread."""
    from datarater.programs.sweep_runs import SEED_RUN, PlannedRun, final_nll, tested_replicas
    from datarater.train.load import read_program

    runs, skipped, replicas = [], [], {}
    for d in sorted((sweep_dir / "lm").iterdir()):
        if not (d / "summary.json").exists():
            skipped.append(d.name)
            continue
        if m := SEED_RUN.match(d.name):
            if seeds is not None and int(m["i"]) not in tested_replicas(apart, seeds, select_seeds):
                continue
            replicas.setdefault(m["base"], []).append((int(m["i"]), final_nll(str(d), on)))
            continue
        p = read_program(d)
        # the curator as the sweep named it (a rater of sweep.raters runs as curate.name=datarater)
        curator = d.name[len(p.model.name) + 1:-(len(f"{p.curate.discard:g}") + 1)]
        runs.append(PlannedRun(d.name, p.model.name, curator, p.curate.discard, p))
    if skipped:
        say(f"[report] {len(skipped)} unfinished runs left out: {', '.join(skipped)}")
    if not runs:
        raise UserError(f"{sweep_dir / 'lm'} holds no finished run")
    spread = {r.model: ([] if apart else [final_nll(r.program.run_dir, on)]) + [v for _, v in sorted(replicas[r.name])]
              for r in runs if r.name in replicas and r.curator == "none"}
    return runs, spread


def picked_best(sweep_dir: Path, select_seeds: int, curators) -> dict[str, float] | None:
    """The best ratios as the sweep picked them on the mean over ``select_seeds`` > 1 seeds (its
    ``best_ratios.json``, written once the picking runs have finished), for the ``curators`` that
    have a finished run here; None with one seed or before the sweep has picked, where the report
    picks them from the first seed's runs."""
    written = sweep_dir / "best_ratios.json"
    if select_seeds < 2 or not written.is_file():
        return None
    have = set(curators)
    return {c: float(rho) for c, rho in json.loads(written.read_text()).items() if c in have}


def validation_sample(sweep: SweepProgram, rows: int):
    """``(tokenizer, packed validation split, picked row indices, their batch)``.

    A seeded sample across the whole split: rows are in read order, so a prefix is one source.
    """
    from datarater.data.corpus import load_splits
    from datarater.data.tokenizer import make_tokenizer

    tokenizer = make_tokenizer(sweep.data)
    packed = load_splits(sweep.corpus, sweep.data, tokenizer, splits=("validation",), on_build=say)["validation"]
    pick = np.sort(np.random.default_rng(0).choice(len(packed), size=min(rows, len(packed)), replace=False))
    from datarater.data.pipeline import with_keys

    batch = {k: getattr(packed, k)[pick] for k in ("tokens", "segment_ids", "positions")}
    batch["index"] = pick
    return tokenizer, packed, pick, with_keys(packed, batch)  # per-token keys: what the oracle reads


def lm_row_nll(sweep_dir: Path, runs, batch: dict, batch_size: int = 64):
    """Every finished LM's summed NLL on each sampled row (one compilation per model shape)."""
    import jax

    from datarater.eval.nll import make_row_loss, predicted_mask, row_nats
    from datarater.eval.report.inputs import RowNLL
    from datarater.train.load import load_lm

    fns: dict = {}
    nats = {}
    for r in runs:
        lm = load_lm(sweep_dir / "lm" / r.name)
        fn = fns.setdefault(lm.graphdef, jax.jit(make_row_loss(lm.graphdef)))
        nats[r.name] = row_nats(lm.graphdef, lm.params, batch, batch_size, fn)
    return RowNLL(nats=nats, tokens=predicted_mask(batch["segment_ids"]).sum(axis=1))


def score_table(sweep: SweepProgram, sweep_dir: Path, rater_run: str, sample):
    """Scores of the DataRater and every baseline curator on the sampled validation rows, with texts."""
    from datarater.curate.curators import calibration_sample, make_curator, score_rows
    from datarater.eval.report.inputs import ScoreTable
    from datarater.programs.sweep_runs import run_name

    tokenizer, packed, pick, batch = sample
    n = len(pick)
    texts = [tokenizer.decode(packed.tokens[i][packed.segment_ids[i] > 0]) for i in pick]
    scores: dict[str, np.ndarray] = {}
    curators = ["datarater"] + [c for c in sweep.sweep.curators if c != "datarater"]
    for name in curators:
        cfg = copy.deepcopy(sweep.curate)
        cfg.name, cfg.scores = name, ""
        if name == "datarater":
            cfg.rater_run = rater_run
            if not rater_run:
                continue
        if name == "perplexity" and not cfg.reference_run:
            cfg.reference_run = str(sweep_dir / "lm" / run_name(sweep.sweep.model, "none", 0.0))
        if name in ("dsir", "classifier") and not cfg.target_paths and sweep.target.mode == "heldout":
            continue
        if name in sweep.sweep.raters:
            cfg.name, cfg.rater_run = "datarater", sweep.sweep.raters[name]
        sample = calibration_sample(packed, cfg.calibration_rows, cfg.seed)
        # online: the rows are the packed split's own, with their per-token keys (the oracle needs them)
        curator = make_curator(cfg, sweep.data, tokenizer, packed.seq_len, sample=sample, packed=packed,
                               corpus=sweep.corpus, target=sweep.target, online=True)
        say(f"[report] scoring {n} validation rows with {name}")
        scores[name] = score_rows(curator, batch, 64)
    if "datarater" not in scores:
        return None
    labels = [packed.label_of_row(int(i)) for i in pick] if packed.labels else None
    return ScoreTable(
        ids=[str(x) for x in packed.ids[pick]], sources=[packed.source_of_row(int(i)) for i in pick],
        scores=scores["datarater"], texts=texts, n_segments=packed.segment_ids[pick].max(axis=1),
        labels=labels, curator_scores={k: v for k, v in scores.items() if k != "datarater"},
    )


def extra_sections(run_dir: Path, sweep_dir: Path, sweep: SweepProgram, runs) -> list[str]:
    """The target, the comparison over seeds, the final NLL per validation set and the probe."""

    from datarater.eval.compare import comparison_from_dict, comparison_markdown
    from datarater.programs.sweep_plan import resolve_target

    resolve_target(sweep)
    out = []
    what = sweep.target.describe()
    rater_targets = []
    for label, d in {"datarater": sweep.curate.rater_run, **sweep.sweep.raters}.items():
        f = Path(d) / "target.json" if d else None
        if f is not None and f.exists():
            rater_targets.append(f"- {label} (`{d}`): outer loss on {json.loads(f.read_text())['what']}")
    out.append("## Target\n\nLMs are evaluated on the corpus's validation split and on " + what
               + ("" if sweep.target.mode == "heldout" else " (its validation documents"
                  + ("; the weighted mean of the NLL on each entry's" if sweep.target.weights else "") + ")") + ".\n\n"
               + "\n".join(rater_targets))
    comp = sweep_dir / "comparison.json"
    if comp.exists():
        data = json.loads(comp.read_text())
        rows = [comparison_from_dict(r) for r in data["rows"]]
        out.append(f"## Over seeds: each curator at its best ratio on '{data['set']}'\n\n"
                   + comparison_markdown(rows, data["set"], data.get("select_apart", False)))
    sets: dict[str, dict[str, float]] = {}
    for r in runs:
        summary = json.loads((sweep_dir / "lm" / r.name / "summary.json").read_text())
        sets[r.name] = summary.get("final_nll_sets", {})
    names = sorted({k for v in sets.values() for k in v}, key=lambda k: (k != "validation", k != "target", k))
    if names:
        head = "| run | " + " | ".join(names) + " |\n|---|" + "---|" * len(names) + "\n"
        body = "".join(f"| {r} | " + " | ".join(f"{v[k]:.4f}" if k in v and v[k] is not None else "–" for k in names)
                       + " |\n" for r, v in sets.items())
        out.append("## Final NLL per validation set\n\nMean token NLL (nats) of each LM (first seed) on the corpus's "
                   "validation split, the target's, and the validation split per source and per label.\n\n" + head + body)
    probe = run_dir / "probe" / "probe.md"
    if probe.exists():
        out.append(included_markdown(probe, run_dir))
    return out


def included_markdown(md: Path, report_dir: Path) -> str:
    """The text of ``md`` with its relative links made relative to ``report_dir`` (which holds it
    in a subfolder: probe.md links its plot beside itself, the report sits a folder up)."""
    rel = Path(os.path.relpath(md.parent, report_dir)).as_posix()
    # inline links and images, with an optional "title"; URLs, absolute paths and anchors are kept
    link = r"\]\((?![a-zA-Z][a-zA-Z0-9+.-]*:|/|#)([^)\s]+)(\s+\"[^\"]*\")?\)"
    # code is left as written (the odd pieces of the split): ``` and ~~~ fences and single-backtick
    # spans, what probe.md (written by the probe) holds; indented code is not told apart
    pieces = re.split(r"(```.*?```|~~~.*?~~~|`[^`\n]*`)", md.read_text(), flags=re.DOTALL)
    return "".join(p if i % 2 else re.sub(link, lambda m: f"]({rel}/{m.group(1)}{m.group(2) or ''})", p)
                   for i, p in enumerate(pieces))


def run(prog: ReportProgram, notes: list[str] | None = None) -> Path:
    from datarater.eval.report.inputs import ReportInputs
    from datarater.eval.report.tables import nll_name, write_results_csv
    from datarater.eval.report.write import write_report
    from datarater.programs.sweep_runs import run_results

    if not prog.run_dir:
        raise UserError("config key 'run_dir' is empty: give a sweep or quickstart run directory")
    run_dir = Path(prog.run_dir).expanduser().absolute()
    sweep_dir, sweep = read_sweep(run_dir)
    from datarater.programs.sweep_plan import resolve_target, select_set

    resolve_target(sweep)
    on = select_set(sweep)
    protocol = tested_protocol(sweep_dir, sweep)
    runs, spread = finished_runs(sweep_dir, on, *protocol)
    results, gains = run_results(runs, on)
    write_results_csv(sweep_dir / "results.csv", results, gains, on)
    rater_run = prog.rater_run or sweep.curate.rater_run
    sample = validation_sample(sweep, prog.rows) if prog.rows > 0 else None
    table = score_table(sweep, sweep_dir, rater_run, sample) if sample else None
    row_nll = None
    if table is not None:
        say(f"[report] NLL of {len(runs)} LMs on the {len(table)} scored rows, by source and label")
        row_nll = lm_row_nll(sweep_dir, runs, sample[3])
    sections = extra_sections(run_dir, sweep_dir, sweep, runs)
    extra = [f"sweep: `{sweep_dir}`; rater: `{rater_run or 'none'}`; corpus: {sweep.corpus.name}",
             f"final NLLs, the best ratio, the curves and net compute gain below are on the validation set '{on}'"
             + ("" if all(r.curve for r in results) else " (LMs with no curve on it, trained before eval.curve_sets "
                "existed or stopped before their first evaluation, have no net compute gain)") + "; every set is in the table "
             "of final NLL per validation set",
             f"every LM: {sweep.train.steps} steps of batch {sweep.train.batch_size} x {sweep.data.seq_len} tokens"]
    path = write_report(run_dir, ReportInputs(runs=results, gains=gains, scores=table, row_nll=row_nll, ratios=sweep.sweep.ratios,
                                              baseline_spread=spread, nll=nll_name(on),
                                              best=picked_best(sweep_dir, protocol[2], [r.curator for r in runs]),
                                              notes=extra + (notes or []), sections=sections))
    say(f"[report] wrote {path}")
    _publish(run_dir, sweep_dir / "results.csv", sweep, path)
    return path


def linked_images(report: Path) -> dict[str, Path]:
    """``{stem: path}`` of each PNG that ``report`` shows (``![...](file.png)``) and that exists."""
    links = dict.fromkeys(re.findall(r"!\[[^\]]*\]\(([^)]+\.png)\)", report.read_text()))
    return {Path(m).stem: report.parent / m for m in links if (report.parent / m).is_file()}


def _publish(run_dir: Path, results_csv: Path, sweep, report: Path) -> None:
    """The report's plots and results table to the sweep's ``logging.trackers`` (beyond jsonl), in
    ``RUN/tensorboard`` and ``RUN/wandb`` of the report's folder."""
    import csv

    from datarater.rundir import run_config
    from datarater.train.trackers import Trackers

    if not [t for t in sweep.logging.trackers if t != "jsonl"]:
        return
    images = linked_images(report)
    rows = []
    if results_csv.is_file():
        with results_csv.open(newline="") as f:
            rows = list(csv.DictReader(f))
    trackers = Trackers(run_dir, sweep.logging, run_config(sweep), "report")
    try:
        trackers.log_report(images, {"results": rows} if rows else {}, step=0)
    finally:
        trackers.close()
    say(f"[report] sent {len(images)} plots and {len(rows)} result rows to {', '.join(trackers.wanted)}")
