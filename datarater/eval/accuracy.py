"""Accuracy of an LM on zero-shot multiple-choice tasks: tasks loaded, choices scored, accuracy counted."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from flax import nnx

from datarater.config import TrainLMProgram
from datarater.data.tokenizer import make_tokenizer
from datarater.eval.tasks import Task, count_lines, load_tasks


def _chance(task: Task) -> float:
    return sum(1.0 / len(it.continuations) for it in task.items) / len(task.items)


def _items_in_file(task: Task) -> int:
    """Items of the whole task file (lm-eval's "original" sample count; ``limit`` reads fewer)."""
    try:
        return count_lines(task.local or task.path)  # a URL's local copy
    except OSError:
        return len(task.items)


def evaluate_tasks(
    graphdef: nnx.GraphDef,
    params,
    program: TrainLMProgram,
    tasks: Sequence[str | Task],
    limit: int = 0,
    batch_size: int = 32,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict]:
    """Accuracy of the LM on each task: ``{name: {acc, acc_norm, acc_bytes, *_stderr, n, items_in_file,
    chance, schema, file}}`` (`datarater.eval.mc.accuracy`).

    ``tasks`` are task files (globs allowed; loaded first, in order) or loaded `Task`s; ``limit``
    items per file (0 = all).
    The context window is the run's ``data.seq_len``; contexts start with bos if ``data.add_bos``.
    ``log`` receives progress lines (None: quiet).
    """
    from datarater.eval.mc import accuracy, choice_loglikelihoods

    tokenizer = make_tokenizer(program.data)
    paths = [t for t in tasks if isinstance(t, str)]
    loaded = (load_tasks(paths, limit) if paths else []) + [t for t in tasks if isinstance(t, Task)]
    out = {}
    for task in loaded:
        t0 = time.perf_counter()
        n_choices = sum(len(it.continuations) for it in task.items)
        if log:
            log(f"[eval] {task.name}: {len(task.items)} items, {n_choices} choices ...")
        shown = [0]

        def progress(done: int, total: int, name: str = task.name, shown: list = shown) -> None:
            if log and total >= 10 and done * 5 // total > shown[0] and done < total:
                shown[0] = done * 5 // total
                log(f"[eval] {name}: {100 * done // total}% of {total} batches")

        ll = choice_loglikelihoods(graphdef, params, tokenizer, task.items, program.data.seq_len, batch_size,
                                   add_bos=program.data.add_bos, progress=progress)
        res = {**accuracy(task.items, ll), "items_in_file": _items_in_file(task), "chance": _chance(task),
               "schema": task.schema, "file": task.path}
        key, k = task.name, 1
        while key in out:  # two tasks of the same name: keep both
            k += 1
            key = f"{task.name}#{k}"
        out[key] = res
        if log:
            log(f"[eval] {task.name}: acc {res['acc']:.4f}, acc_norm {res['acc_norm']:.4f} "
                f"(chance {res['chance']:.3f}; {time.perf_counter() - t0:.1f} s)")
    return out


METRICS = ("acc", "acc_norm", "acc_bytes")
HARNESS_FILTER = "none"  # lm-eval's key suffix: "<metric>,<filter>" (no filter on log-likelihood tasks)


def harness_layout(task_results: dict[str, dict], model_args: str, limit: int) -> dict:
    """The keys of lm-evaluation-harness's ``results.json`` for ``task_results`` (`evaluate_tasks`):
    ``results`` (``acc,none``, ``acc_stderr,none``, ... per task), ``n-samples``, ``n-shot``,
    ``versions``, ``higher_is_better`` and ``config``, so tools that read lm-eval's files read ours."""
    results, samples = {}, {}
    for name, r in task_results.items():
        row: dict = {"alias": name}
        for m in METRICS:
            row[f"{m},{HARNESS_FILTER}"] = r[m]
            row[f"{m}_stderr,{HARNESS_FILTER}"] = r[f"{m}_stderr"]
        results[name] = row
        samples[name] = {"original": r.get("items_in_file", r["n"]), "effective": r["n"]}
    return {
        "results": results,
        "n-samples": samples,
        "n-shot": {name: 0 for name in task_results},
        "versions": {name: 1.0 for name in task_results},
        "higher_is_better": {name: {m: True for m in METRICS} for name in task_results},
        "config": {"model": "datarater", "model_args": model_args, "limit": limit or None, "num_fewshot": 0},
    }
