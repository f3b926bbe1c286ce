"""Online curation in train-lm: the trained rows are the top N of each oversampled draw."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from datarater.cli import SUBCOMMANDS, compose
from datarater.curate.online import OnlineCuration
from datarater.data.documents import Document
from datarater.data.packing import pack_documents
from datarater.data.pipeline import gather_rows, with_keys
from datarater.data.tokenizer import ByteTokenizer
from datarater.programs.train_lm import run as train_lm
from datarater.train.metrics import read_metrics


def _packed():
    tok = ByteTokenizer()
    docs = [(Document(f"d{i}", "", "a" if i % 3 else "b"), tok.encode("x" * (20 + i))) for i in range(40)]
    return pack_documents(docs, 16, tok, "train", True, True)


def test_select_keeps_exactly_the_best_rows_and_counts_sources():
    packed = _packed()
    rng = np.random.default_rng(0)
    table = rng.normal(size=len(packed)).astype(np.float32)
    cur = OnlineCuration("t", 0.5, draw=10, keep=5, score=lambda b: table[b["index"]], flops_per_sequence=0.0)
    drawn, kept = Counter(), Counter()
    for _ in range(20):
        index = rng.choice(len(packed), size=10, replace=False)
        out = cur.select(with_keys(packed, gather_rows(packed, index)))
        best = index[np.argsort(-table[index], kind="stable")[:5]]
        assert sorted(out["index"].tolist()) == sorted(best.tolist())
        assert np.array_equal(out["tokens"], packed.tokens[out["index"]])
        drawn.update(packed.source_of_row(int(i)) for i in index)
        kept.update(packed.source_of_row(int(i)) for i in best)
    assert cur.counts() == {"drawn": dict(drawn), "kept": dict(kept)}
    assert sum(kept.values()) == 100


def test_train_lm_with_heuristic_curation_drops_noise_and_logs_flops(doc_corpus, tmp_path):
    rng = np.random.default_rng(0)
    noise = tmp_path / "noise.jsonl"
    with noise.open("w") as f:
        for i in range(60):
            table = "\n".join(",".join(str(x) for x in rng.integers(0, 10**6, 8)) for _ in range(30))
            f.write(json.dumps({"id": f"n{i}", "text": table, "source": "numbers"}) + "\n")
    prog = compose(SUBCOMMANDS["train-lm"], [
        "model=nano", f"corpus.paths=[{doc_corpus},{noise}]", "data.seq_len=64", "train.batch_size=8",
        "train.steps=8", "train.eval_every=4", "train.eval_batches=2", "train.log_every=4", "train.checkpoint_every=8",
        "curate=heuristic", "curate.discard=0.5", f"run_dir={tmp_path / 'run'}",
    ])
    summary = train_lm(prog)
    kept = summary["curate"]["kept_fraction_per_source"]
    clean = [v for k, v in kept.items() if k != "numbers"]
    assert kept["numbers"] < 0.2 < min(clean)  # the number tables lose the in-batch ranking
    rows = [r for r in read_metrics(tmp_path / "run" / "metrics.jsonl") if "val_nll" in r]
    per_step = summary["flops_per_token"] * 8 * 64
    assert [r["step"] for r in rows] == [0, 4, 8]
    assert all(r["train_flops"] == pytest.approx(r["step"] * per_step) and r["curate_flops"] == 0 for r in rows)
