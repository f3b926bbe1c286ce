"""Online curation inside LM training: oversample, score, keep the top N of each batch.

To fill a batch of ``N`` at discard ratio ``ρ`` the pipeline draws ``⌈N/(1−ρ)⌉`` rows, a curator
scores them (the DataRater on the fly, a baseline curator, or precomputed side files looked up by
row), and the ``N`` best are trained on. The step count and batch size stay those of unfiltered
training, so runs compare at equal training compute; the FLOPs spent scoring are counted apart.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from datarater.config.curate import CurateConfig
from datarater.curate.rules import oversampled_size, top_k_keep
from datarater.data import keys
from datarater.data.packing import PackedSequences
from datarater.errors import UserError


@dataclass
class OnlineCuration:
    name: str
    discard: float
    draw: int  # rows drawn per process and step
    keep: int  # rows kept per process and step
    score: Callable[[dict[str, np.ndarray]], np.ndarray]
    flops_per_sequence: float  # scoring FLOPs per drawn row
    kept_per_source: Counter = field(default_factory=Counter)
    drawn_per_source: Counter = field(default_factory=Counter)

    def select(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The ``keep`` best rows of an oversampled ``batch`` (counts kept rows per source, the source
        with most tokens in a row, from the batch's per-token keys)."""
        scores = np.asarray(self.score(batch), dtype=np.float32)
        if scores.shape != (len(batch["tokens"]),):
            raise RuntimeError(f"curator {self.name} returned scores of shape {scores.shape} for {len(batch['tokens'])} rows")
        keep = np.asarray(top_k_keep(scores, self.keep))
        kept = np.zeros(len(scores), dtype=bool)
        kept[keep] = True
        for key, is_kept in zip(keys.majority(batch["source_key"], batch["segment_ids"]), kept, strict=True):
            src = keys.name_of(key)
            self.drawn_per_source[src] += 1
            self.kept_per_source[src] += int(is_kept)
        return {k: v[keep] for k, v in batch.items()}

    def counts(self) -> dict:
        """Rows drawn and kept per source so far (JSON, saved with checkpoints)."""
        return {"drawn": dict(self.drawn_per_source), "kept": dict(self.kept_per_source)}

    def load_counts(self, counts: dict) -> None:
        self.drawn_per_source = Counter(counts.get("drawn", {}))
        self.kept_per_source = Counter(counts.get("kept", {}))

    def kept_fraction_per_source(self) -> dict[str, float]:
        return {s: self.kept_per_source[s] / n for s, n in sorted(self.drawn_per_source.items()) if n}


def make_online_curation(curate: CurateConfig, data, tokenizer, packed: PackedSequences | None, local_batch: int,
                         corpus=None, target=None, sample: Callable[[], dict] | None = None) -> OnlineCuration | None:
    """The curation of a train-lm run, or None when nothing is discarded (``curate.discard=0``).

    ``packed`` is the in-memory training split (None when streamed; then ``sample()`` gives the
    calibration rows). With ``curate.scores`` the scores come from `datarater score` side files,
    checked against these rows by fingerprint and looked up by row; their scoring FLOPs are still
    counted. ``corpus`` and ``target`` go to `make_curator` (oracle, dsir, classifier).
    """
    if curate.discard == 0.0:
        return None
    from datarater.curate.curators import calibration_sample, make_curator

    rows = calibration_sample(packed, curate.calibration_rows, curate.seed) if packed is not None else sample()
    curator = make_curator(curate, data, tokenizer, data.seq_len, sample=rows, packed=packed, corpus=corpus,
                           target=target, online=True)
    if curator is None:
        return None
    draw = oversampled_size(local_batch, curate.discard)
    return OnlineCuration(curate.name, curate.discard, draw, local_batch, curator.score_batch,
                          float(curator.flops_per_sequence))


# -- where a run's curation comes from (kept in its checkpoints) ------------------------------
def scores_identity(scores: str | Path) -> dict[str, Any]:
    """What a `datarater score` run directory's scores were made by (side files or attribute files)."""
    from datarater.curate.attributes import ATTRIBUTES_DIR, attribute_producer
    from datarater.curate.sidefiles import resolve_score_dir, shards_producer
    from datarater.rundir import normal_path

    root = normal_path(scores)
    if (root / ATTRIBUTES_DIR).is_dir():
        subs = sorted(p for p in (root / ATTRIBUTES_DIR).iterdir() if p.is_dir())
        made = attribute_producer(subs[0]) if subs else None
    else:
        made = shards_producer(resolve_score_dir(root))
    return {"scores": str(root), "producer": made}


def consumer_identity(cfg: CurateConfig, target: Any = None) -> dict[str, Any] | None:
    """Where a train-lm run's curation scores come from: the scores it reads (and who made them),
    or the curator it runs; None without curation. Kept in its checkpoints: a resumed run must
    curate with the same."""
    if cfg.discard == 0.0 or (cfg.name == "none" and not cfg.scores):
        return None
    out = {"discard": cfg.discard}
    if cfg.scores:
        return {**out, **scores_identity(cfg.scores)}
    from datarater.curate.provenance import producer

    return {**out, **producer(cfg, target)}


def check_same_curation(saved: dict | None, now: dict | None, run_dir: Path) -> None:
    """A train-lm run resumed from a checkpoint must curate with the scores or the rater it
    started with: `UserError` naming both otherwise (the rater at ``curate.rater_run`` was
    meta-trained further, the score directory was rescored)."""
    from datarater.curate.provenance import describe, same_producer

    def what(c: dict | None) -> str:
        if not c:
            return "no curation"
        return f"scores {c['scores']} by {describe(c.get('producer'))}" if "scores" in c else describe(c)

    if not same_producer(saved, now):
        raise UserError(f"{run_dir} was trained up to its checkpoint with {what(saved)}; this run would go on with "
                        f"{what(now)}: a resumed run cannot change its curation part-way; use a new run_dir")
