"""`datarater filter`: write the documents the per-item acceptance rule keeps at ``curate.discard``, with a manifest."""

from __future__ import annotations

import json
from typing import Any

from datarater.config import FilterProgram
from datarater.console import say
from datarater.curate.filter import document_scores, filter_documents
from datarater.curate.rules import oversampled_size
from datarater.data.documents import ReadStats
from datarater.data.tokenizer import make_tokenizer
from datarater.errors import UserError
from datarater.rundir import prepare_run_dir


def run(prog: FilterProgram) -> dict[str, Any]:
    """Runs `datarater filter`; returns the manifest (also in ``RUN_DIR/manifest.json``)."""
    c, f, split = prog.curate, prog.filter, prog.score.split
    if c.name == "none" and not c.scores:
        raise UserError("config key 'curate': filtering needs scores: choose curate=<datarater|random|perplexity|"
                        "heuristic|dsir> or give curate.scores=<a `datarater score score.unit=document` run>")
    n, b = f.batch_size, oversampled_size(f.batch_size, c.discard)
    run_dir, _ = prepare_run_dir(prog.run_dir, prog)
    tokenizer = make_tokenizer(prog.data)
    read_stats = ReadStats()
    doc_ids, scores, info = document_scores(prog, tokenizer, read_stats, on_build=say)
    say(f"[filter] {len(doc_ids)} documents of the {split} split scored ({info['scores_from']})")
    out = run_dir / f"documents.{f.format}"
    counts = filter_documents(prog, tokenizer, doc_ids, scores, out)
    per_source, stats = counts.pop("per_source"), counts.pop("stats")

    manifest = {
        "output": str(out), "format": f.format, "split": split, **info,
        "discard": c.discard, "batch_size": n, "oversampled_batch_size": b, "expected_kept_fraction": n / b,
        "documents": {**counts, "passed_through": dict(counts["passed_through"]),
                      "kept_fraction": counts["kept"] / max(1, counts["in_split"] - counts["unscored"])},
        "per_source": {
            src: {"documents": c_["documents"], "kept": c_["kept"], "unscored": c_["unscored"],
                  "kept_fraction": c_["kept"] / max(1, c_["documents"] - c_["unscored"])}
            for src, c_ in sorted(per_source.items())
        },
        "read": stats.as_dict(),
        "empty_after_tokenize": int(read_stats.skipped.get("empty_after_tokenize", 0)),
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    say(f"[filter] kept {counts['kept']} of {counts['in_split']} {split} documents "
        f"({manifest['documents']['kept_fraction']:.1%}; expected {n / b:.1%}), "
        f"{sum(counts['passed_through'].values())} of other splits passed through -> {out}")
    for src, d in manifest["per_source"].items():
        say(f"[filter]   {src}: kept {d['kept']} of {d['documents']} ({d['kept_fraction']:.1%})")
    return manifest
