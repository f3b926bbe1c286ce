"""`datarater eval`: NLL and zero-shot multiple-choice accuracy of a trained LM.

Writes ``results.json`` and ``results.md`` to ``run_dir`` (default ``LM_RUN/eval``) and prints
the tables. `evaluate_tasks` is the reusable part that train-lm calls every ``eval.every`` steps.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import jax
from flax import nnx

from datarater.config import TrainLMProgram
from datarater.data.tokenizer import make_tokenizer
from datarater.errors import UserError
from datarater.eval.config import EvalProgram, validate_eval
from datarater.eval.tasks import Task, load_tasks

RESULTS_JSON = "results.json"
RESULTS_MD = "results.md"


def say(msg: str) -> None:
    if jax.process_index() == 0:
        print(msg, file=sys.stderr, flush=True)


def _chance(task: Task) -> float:
    return sum(1.0 / len(it.continuations) for it in task.items) / len(task.items)


def evaluate_tasks(
    graphdef: nnx.GraphDef,
    params,
    program: TrainLMProgram,
    tasks: Sequence[str | Task],
    limit: int = 0,
    batch_size: int = 32,
    verbose: bool = True,
) -> dict[str, dict]:
    """Accuracy of the LM on each task: ``{name: {acc, acc_norm, n, chance, schema, file}}``.

    ``tasks`` are task files (globs allowed; loaded first, in order) or loaded `Task`s; ``limit``
    items per file (0 = all).
    The context window is the run's ``data.seq_len``; contexts start with bos if ``data.add_bos``.
    """
    from datarater.eval.mc import accuracy, choice_loglikelihoods

    tokenizer = make_tokenizer(program.data)
    paths = [t for t in tasks if isinstance(t, str)]
    loaded = (load_tasks(paths, limit) if paths else []) + [t for t in tasks if isinstance(t, Task)]
    out = {}
    for task in loaded:
        t0 = time.perf_counter()
        n_choices = sum(len(it.continuations) for it in task.items)
        if verbose:
            say(f"[eval] {task.name}: {len(task.items)} items, {n_choices} choices ...")
        shown = [0]

        def progress(done: int, total: int, name: str = task.name, shown: list = shown) -> None:
            if verbose and total >= 10 and done * 5 // total > shown[0] and done < total:
                shown[0] = done * 5 // total
                say(f"[eval] {name}: {100 * done // total}% of {total} batches")

        ll = choice_loglikelihoods(graphdef, params, tokenizer, task.items, program.data.seq_len, batch_size,
                                   add_bos=program.data.add_bos, progress=progress)
        res = {**accuracy(task.items, ll), "chance": _chance(task), "schema": task.schema, "file": task.path}
        key, k = task.name, 1
        while key in out:  # two tasks of the same name: keep both
            k += 1
            key = f"{task.name}#{k}"
        out[key] = res
        if verbose:
            say(f"[eval] {task.name}: acc {res['acc']:.4f}, acc_norm {res['acc_norm']:.4f} "
                f"(chance {res['chance']:.3f}; {time.perf_counter() - t0:.1f} s)")
    return out


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
        cols = [("acc", "acc (raw)")] if normalize in ("raw", "both") else []
        cols += [("acc_norm", "acc_norm (per byte)")] if normalize in ("byte", "both") else []
        lines += ["| task | schema | items | " + " | ".join(c[1] for c in cols) + " | chance |",
                  "|---|---|---:|" + "---:|" * (len(cols) + 1)]
        for name, r in results["tasks"].items():
            lines.append(f"| {name} | {r['schema']} | {_fmt(r['n'])} | "
                         + " | ".join(_fmt(r[c[0]]) for c in cols) + f" | {_fmt(r['chance'], 3)} |")
        lines.append("")
    return "\n".join(lines)


def _json_safe(v):
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    if isinstance(v, float) and not math.isfinite(v):
        return None
    return v


def evaluate_lm(prog: EvalProgram) -> dict:
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
    own, stats = own_validation_split(run.corpus, run.data, tokenizer)
    sets = {"validation": own}
    if e.validation:
        extra, extra_stats = extra_validation_sets(e.validation, run.corpus, run.data, tokenizer)
        say(f"[eval] extra validation sets: {', '.join(extra)}; {extra_stats.summary()}")
        for source, packed in extra.items():
            sets[source if source not in sets else f"{source} (extra)"] = packed

    def nll_progress(name, r) -> None:
        say(f"[eval] {name}: {r.sequences} sequences, NLL {r.nll:.4f} nats/token, {r.bits_per_byte:.4f} bits/byte")

    nll = nll_of_sets(loaded.graphdef, loaded.params, sets, tokenizer, e.batch_size, e.max_sequences, nll_progress)
    task_results = evaluate_tasks(loaded.graphdef, loaded.params, run, tasks, e.limit, e.batch_size) if tasks else {}

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
    }
    table = results_markdown(results, e.normalize)
    if jax.process_index() != 0:
        return results
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / RESULTS_JSON).write_text(json.dumps(_json_safe(results), indent=2) + "\n")
        (out_dir / RESULTS_MD).write_text(table)
    except OSError as err:
        raise UserError(f"run_dir {out_dir}: cannot write results: {err.strerror}") from None
    print(table)
    say(f"[eval] wrote {out_dir / RESULTS_JSON} and {RESULTS_MD}")
    return results
