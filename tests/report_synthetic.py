"""Synthetic inputs of the analysis report's tests (tests/test_eval_report*.py): sweep runs with known
final NLLs, a score table with known labels, per-row NLLs; and readers of the Markdown it writes."""

from __future__ import annotations

import re

import numpy as np

from datarater.eval.report.inputs import RowNLL, RunResult, ScoreTable

SOURCES = ["wiki", "news", "chat", "tables"]
LABELS = ["clean", "mojibake", "all_caps"]


def synthetic_curve(final: float, flops_per_step: float, curate_per_step: float, steps: int = 100):
    return [
        (s, s * flops_per_step, s * curate_per_step, final + 3.0 * np.exp(-s / 15.0)) for s in range(0, steps + 1, 10)
    ]


def synthetic_runs() -> list[RunResult]:
    runs = []
    final_nano = {
        ("none", 0.0): 2.50,
        ("datarater", 0.25): 2.46,
        ("datarater", 0.5): 2.42,
        ("datarater", 0.9): 2.60,
        ("random", 0.25): 2.52,
        ("random", 0.5): 2.55,
        ("random", 0.9): 2.70,
    }
    for (curator, rho), final in final_nano.items():
        runs.append(make_run("nano", 1e9, 2_000_000, curator, rho, final))
    for curator, rho, final in (("none", 0.0, 2.2), ("datarater", 0.5, 2.1), ("random", 0.25, 2.25)):
        runs.append(make_run("micro", 4e9, 9_000_000, curator, rho, final))
    return runs


def make_run(model, fps, n_params, curator, rho, final) -> RunResult:
    curate = 0.0 if curator == "none" else 0.1 * fps
    tasks = {
        "piqa": {"acc": 0.55 + final / 100, "acc_norm": 0.56, "n": 50},
        "arc_easy": {"acc": 0.3, "acc_norm": 0.31, "n": 40},
    }
    return RunResult(
        name=f"{model}-{curator}-{rho}",
        model=model,
        curator=curator,
        discard=rho,
        flops_per_step=fps,
        curve=synthetic_curve(final, fps, curate),
        final_val_nll=final,
        tasks=tasks,
        n_params=n_params,
    )


def synthetic_scores(n: int = 120, seed: int = 0) -> ScoreTable:
    rng = np.random.default_rng(seed)
    sources = [SOURCES[i % len(SOURCES)] for i in range(n)]
    labels = [LABELS[i % len(LABELS)] if i % 2 else "clean" for i in range(n)]
    texts = []
    for i, (s, lab) in enumerate(zip(sources, labels, strict=True)):
        base = f"Document {i} from {s}. Some prose | with a pipe and *stars*.\nSecond line."
        if lab == "mojibake":
            base = base.replace("o", "Ã¶") + "\x00\x01"
        elif lab == "all_caps":
            base = base.upper()
        texts.append(base)
    scores = rng.normal(size=n) + np.array([1.5 if lab == "clean" else 0.0 for lab in labels])
    return ScoreTable(
        ids=[f"train-{i:08d}" for i in range(n)],
        sources=sources,
        scores=scores,
        texts=texts,
        n_segments=rng.integers(1, 4, size=n),
        labels=labels,
        curator_scores={"random": rng.normal(size=n), "heuristic": -np.array([t.count("Ã") for t in texts], float)},
    )


def synthetic_row_nll(runs: list[RunResult], table: ScoreTable) -> RowNLL:
    rng = np.random.default_rng(1)
    tokens = rng.integers(50, 128, size=len(table))
    return RowNLL(nats={r.name: tokens * rng.uniform(1.5, 4.0, size=len(table)) for r in runs}, tokens=tokens)


def section(md: str, heading: str) -> str:
    start = md.index(heading)
    nxt = re.search(r"^#{2,3} ", md[start + len(heading) :], flags=re.M)
    return md[start : start + len(heading) + (nxt.start() if nxt else len(md))]


def table_rows(text: str) -> list[list[str]]:
    """Cells of the Markdown table rows in ``text`` (header and separator excluded), split on unescaped pipes."""
    rows = [line for line in text.splitlines() if line.startswith("|")]
    return [[c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]] for line in rows[2:]]
