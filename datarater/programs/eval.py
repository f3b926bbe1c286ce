"""`datarater eval`: NLL and zero-shot multiple-choice accuracy of a trained LM.

Writes ``results.json`` and ``results.md`` to ``run_dir`` (default ``LM_RUN/eval``) and prints
the tables.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from datarater.artifacts import json_safe
from datarater.config.eval import NORMALIZE_METRICS, EvalProgram, validate_eval
from datarater.console import is_main_process, result, say
from datarater.data.tokenizer import make_tokenizer
from datarater.errors import UserError
from datarater.eval.accuracy import evaluate_tasks, harness_layout
from datarater.eval.tasks import load_tasks

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"
MD_COLUMNS = (("acc", "acc (raw)"), ("acc_norm", "acc_norm (per char)"), ("acc_bytes", "acc_bytes (per byte)"))


def _fmt(v, digits: int = 4) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "-"
    return f"{v:.{digits}f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else str(v)


def results_markdown(results: dict, normalize: str = "both") -> str:
    """The tables of ``results.md``: NLL per validation set, accuracy per task."""
    lines = [f"# Evaluation of {results['lm_run']} (step {results['step']}, model {results['model']})", ""]
    if results.get("nll"):
        lines += ["| validation set | sequences | tokens | NLL (nats/token) | bits/byte |", "|---|---:|---:|---:|---:|"]
        for name, r in results["nll"].items():
            lines.append(f"| {name} | {_fmt(r['sequences'])} | {_fmt(r['tokens'])} | {_fmt(r['nll'])} "
                         f"| {_fmt(r['bits_per_byte'])} |")
        lines.append("")
    if results.get("tasks"):
        cols = [c for c in MD_COLUMNS if c[0] in NORMALIZE_METRICS[normalize]]
        lines += ["| task | schema | items | " + " | ".join(c[1] for c in cols) + " | chance |",
                  "|---|---|---:|" + "---:|" * (len(cols) + 1)]
        for name, r in results["tasks"].items():
            lines.append(f"| {name} | {r['schema']} | {_fmt(r['n'])} | "
                         + " | ".join(f"{_fmt(r[c[0]])} ± {_fmt(r.get(c[0] + '_stderr'))}" for c in cols)
                         + f" | {_fmt(r['chance'], 3)} |")
        lines += ["", "± is the standard error over items, as lm-evaluation-harness reports it; acc_norm "
                  "divides each choice's log-likelihood by its length in characters (lm-eval's acc_norm), "
                  "acc_bytes by its UTF-8 bytes.", ""]
    return "\n".join(lines)


def run(prog: EvalProgram) -> dict:
    """Evaluates the latest checkpoint of ``prog.lm_run``; returns (and writes) the results."""
    from datarater.eval.nll import extra_validation_sets, nll_of_sets, own_validation_split
    from datarater.models.flops import lm_flops_per_step
    from datarater.train.load import load_lm

    if not prog.lm_run:
        raise UserError("config key 'lm_run' is empty: give a train-lm run directory, e.g. lm_run=runs/train-lm-X")
    e = prog.eval
    validate_eval(e)
    lm_run = Path(prog.lm_run).expanduser().absolute()
    out_dir = Path(prog.run_dir).expanduser().absolute() if prog.run_dir else lm_run / "eval"

    tasks = load_tasks(e.tasks, e.limit) if e.tasks else []  # bad task files stop us before any compute
    loaded = load_lm(lm_run)
    run = loaded.program
    tokenizer = make_tokenizer(run.data)
    say(f"[eval] {lm_run}: model {run.model.name} at step {loaded.step}; "
        f"{len(tasks)} tasks, {len(e.validation)} extra validation globs")

    say(f"[eval] reading the validation split of {run.corpus.name} ...")
    own, stats = own_validation_split(run.corpus, run.data, tokenizer, on_build=say)
    sets = {"validation": own}
    if e.validation:
        extra, extra_stats = extra_validation_sets(e.validation, run.corpus, run.data, tokenizer)
        say(f"[eval] extra validation sets: {', '.join(extra)}; {extra_stats.summary()}")
        for source, packed in extra.items():
            sets[source if source not in sets else f"{source} (extra)"] = packed

    def nll_progress(name, r) -> None:
        say(f"[eval] {name}: {r.sequences} sequences, NLL {r.nll:.4f} nats/token, {r.bits_per_byte:.4f} bits/byte")

    nll = nll_of_sets(loaded.graphdef, loaded.params, sets, tokenizer, e.batch_size, e.max_sequences, nll_progress)
    task_results = evaluate_tasks(loaded.graphdef, loaded.params, run, tasks, e.limit, e.batch_size, log=say) if tasks else {}

    results = {
        "lm_run": str(lm_run),
        "step": loaded.step,
        "model": run.model.name,
        "seq_len": run.data.seq_len,
        "train_flops": loaded.step * lm_flops_per_step(run.model, run.train.batch_size, run.data.seq_len),
        "nll": {name: r.as_dict() for name, r in nll.items()},
        "tasks": task_results,
        "limit": e.limit,
        "documents": {"validation": stats.as_dict()},
        # lm-evaluation-harness's layout of the same accuracies (results, n-samples, config, ...)
        **harness_layout(task_results, f"run={lm_run}", e.limit),
    }
    table = results_markdown(results, e.normalize)
    if not is_main_process():
        return results
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / RESULTS_JSON).write_text(json.dumps(json_safe(results), indent=2) + "\n")
        (out_dir / RESULTS_MD).write_text(table)
    except OSError as err:
        raise UserError(f"run_dir {out_dir}: cannot write results: {err.strerror}") from None
    track(out_dir, prog, results)
    result(table)
    say(f"[eval] wrote {out_dir / RESULTS_JSON} and {RESULTS_MD}")
    return results


def track(out_dir: Path, prog: EvalProgram, results: dict) -> None:
    """The results as one metric row at the LM's step (``nll/<set>``, ``bits_per_byte/<set>``,
    ``<task>/acc``, ...) in ``out_dir/metrics.jsonl`` and ``logging.trackers``; evaluating the same
    step again replaces its row."""
    from datarater.rundir import run_config
    from datarater.train.trackers import Trackers

    step = int(results["step"])
    row = {"step": step,
           "nll": {name: r["nll"] for name, r in results["nll"].items()},
           "bits_per_byte": {name: r["bits_per_byte"] for name, r in results["nll"].items()},
           **{task: {k: v for k, v in r.items() if k.startswith("acc")} for task, r in results["tasks"].items()}}
    metrics = Trackers(out_dir, prog.logging, run_config(prog), "eval")
    try:
        metrics.truncate_after(step - 1)
        metrics.write(row)
    finally:
        metrics.close()
