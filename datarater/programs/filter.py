"""`datarater filter`: keep documents by the per-item acceptance rule at ``curate.discard``; compressed output per input file and a manifest.

Scores per document come from attribute files (`datarater.curate.attributes`): a score run's
(``curate.scores``), another tool's (``curate=attributes curate.attributes=DIR``), or, for any
other curator, scored here first into ``RUN/attributes/<curator>/``. Pass 1 reads every attribute
file's scores of the ``score.split`` documents into one `ScoreSketch` (the score distribution,
mergeable, with its error bound in the manifest); pass 2 keeps each document of the split with
probability ``accept_probability(CDF(score), N, B)`` (``N = filter.batch_size``,
``B = ceil(N / (1 - curate.discard))``) by a coin hashed from its id and ``filter.seed``, and
passes the other splits through. Both passes run per input file on ``engine=local`` or
``engine=ray`` and make the same decisions. The input corpus is never rewritten: the output is
``RUN/output/<relative path>.jsonl.zst`` (or ``.parquet``) with ``RUN/manifest.json``.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from datarater import faults
from datarater.config import FilterProgram, ScoreProgram
from datarater.console import say
from datarater.curate.rules import ScoreSketch, oversampled_size
from datarater.errors import UserError
from datarater.rundir import config_digest, prepare_run_dir

OUTPUT_DIR = "output"


def _attribute_root(prog: FilterProgram, run_dir: Path) -> tuple[Path, str, str]:
    """``(directory of attribute files, column, where they come from)``; scores them here if needed."""
    from datarater.curate.attributes import ATTRIBUTES_DIR

    c = prog.curate
    if c.name == "attributes" and not c.scores:
        return Path(c.attributes).expanduser(), c.attribute, str(c.attributes)
    if c.scores:
        root = Path(c.scores).expanduser() / ATTRIBUTES_DIR
        if not root.is_dir():
            raise UserError(f"config key 'curate.scores': {c.scores} holds no attribute files (no {ATTRIBUTES_DIR}/); "
                            "filtering needs scores per document: run `datarater score score.unit=document`")
        subs = sorted(p for p in root.iterdir() if p.is_dir())
        if len(subs) != 1:
            raise UserError(f"config key 'curate.scores': {root} should hold one curator's attribute files, found "
                            f"{[p.name for p in subs]}")
        from datarater.curate.attributes import attribute_producer
        from datarater.curate.provenance import check_expected_rater

        check_expected_rater(attribute_producer(subs[0]), c, str(subs[0]))
        return subs[0], "score", str(subs[0])
    from datarater.programs.score import score_documents_run

    score_prog = ScoreProgram(run_dir=str(run_dir / "scoring"), curate=c, corpus=prog.corpus, data=prog.data,
                              score=prog.score, engine=prog.engine, workers=prog.workers, ray_address=prog.ray_address)
    summary = score_documents_run(score_prog)
    return Path(summary["attributes"]), "score", "computed"


def run(prog: FilterProgram) -> dict[str, Any]:
    """Runs `datarater filter`; returns the manifest (also in ``RUN_DIR/manifest.json``)."""
    from datarater.curate.engines import ENGINES, map_shards
    from datarater.curate.jobs import FilterJob
    from datarater.data.stream import list_shards

    c, f, split = prog.curate, prog.filter, prog.score.split
    if c.name == "none" and not c.scores:
        raise UserError("config key 'curate': filtering needs scores: choose curate=<datarater|random|perplexity|"
                        "heuristic|dsir|classifier|attributes> or give curate.scores=<a `datarater score "
                        "score.unit=document` run>")
    if prog.engine not in ENGINES:
        raise UserError(f"config key 'engine': must be one of {', '.join(ENGINES)}, got '{prog.engine}'")
    n, b = f.batch_size, oversampled_size(f.batch_size, c.discard)
    run_dir, _ = prepare_run_dir(prog.run_dir, prog, may_change=("engine", "workers", "ray_address"))
    (run_dir / "manifest.json").unlink(missing_ok=True)  # a manifest only ever beside the outputs it counts
    shards = list_shards(prog.corpus, on_build=say)
    root, column, origin = _attribute_root(prog, run_dir)
    job = FilterJob(prog.corpus, c, f, split, str(root), str(run_dir / OUTPUT_DIR), column,
                    c.attribute_id if c.name == "attributes" else "id")
    for shard in shards:  # every input file has its attributes before any work starts
        job.attribute_file(shard)
    say(f"[filter] pass 1: the score distribution of the {split} split over {len(shards)} input files "
        f"(engine={prog.engine})")
    sketch = ScoreSketch.merge([ScoreSketch.from_dict(d) for d in map_shards(job.sketch, shards, prog.engine,
                                                                               prog.workers, prog.ray_address)])
    if not sketch.total:
        raise UserError(f"{root}: no finite score for any document of the {split} split")
    job.sketch_dict = sketch.as_dict()
    say(f"[filter] pass 2: keep {n} of {b} in expectation ({n / b:.1%}); CDF error at most {sketch.max_error:.2e}")
    written = [0]

    def apply(shard):  # engine=local: the fault suite's kill after N output files
        out = job.apply(shard)
        written[0] += 1
        faults.after_files(written[0])
        return out

    results = map_shards(apply if prog.engine == "local" else job.apply, shards, prog.engine, prog.workers,
                         prog.ray_address)
    ours = {Path(r["output"]).resolve() for r in results}
    stale = [p for p in (run_dir / OUTPUT_DIR).rglob("*") if p.is_file() and p.resolve() not in ours]
    for p in stale:  # outputs of an earlier run over other input files: never mixed with these
        p.unlink()
    if stale:
        say(f"[filter] removed {len(stale)} output files of an earlier run that this one did not write")
    manifest = _manifest(prog, results, sketch, origin, c.name if origin == "computed" else root.name, n, b)
    from datarater.curate.attributes import attribute_producer

    manifest["producer"] = {"program": "filter", "scores": attribute_producer(root), "config_digest": config_digest(run_dir)}
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    d = manifest["documents"]
    say(f"[filter] kept {d['kept']} of {d['in_split']} {split} documents ({d['kept_fraction']:.1%}; expected "
        f"{n / b:.1%}), {sum(d['passed_through'].values())} of other splits passed through, {d['rejected']} rejected "
        f"-> {run_dir / OUTPUT_DIR}")
    for src, s in manifest["per_source"].items():
        say(f"[filter]   {src}: kept {s['kept']} of {s['documents']} ({s['kept_fraction']:.1%})")
    return manifest


def _manifest(prog: FilterProgram, results: list[dict], sketch: ScoreSketch, origin: str, curator: str, n: int,
              b: int) -> dict:
    total: Counter = Counter()
    passed: Counter = Counter()
    per_source: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        total.update({k: r[k] for k in ("read", "in_split", "kept", "dropped", "unscored", "rejected")})
        passed.update(r["passed_through"])
        for src, cnt in r["per_source"].items():
            per_source[src].update(cnt)
    scored = total["kept"] + total["dropped"]
    docs = {**total, "passed_through": dict(passed), "kept_fraction": total["kept"] / max(1, scored),
            "rejected": total["unscored"] + total["rejected"]}
    # every record read is kept, dropped, passed through or rejected (unscored, or unreadable)
    assert total["read"] + total["rejected"] == total["kept"] + total["dropped"] + sum(passed.values()) + docs["rejected"]
    return {
        "output": str(Path(prog.run_dir) / OUTPUT_DIR), "format": prog.filter.format, "split": prog.score.split,
        "scores_from": origin, "curator": curator, "engine": prog.engine,
        "discard": prog.curate.discard, "batch_size": n, "oversampled_batch_size": b, "expected_kept_fraction": n / b,
        "cdf": {"scores": sketch.total, "max_error": sketch.max_error, "bins": len(sketch.bins)},
        "documents": docs,
        "per_source": {src: {"documents": c["documents"], "kept": c["kept"], "dropped": c["dropped"],
                             "rejected": c["unscored"], "kept_fraction": c["kept"] / max(1, c["kept"] + c["dropped"])}
                       for src, c in sorted(per_source.items())},
        "files": [{k: r[k] for k in ("key", "output", "read", "kept", "dropped", "unscored", "rejected")} for r in results],
    }
