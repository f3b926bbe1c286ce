"""Learning check: does the rater learn to score random-byte sequences below real text?

    python experiments/learning_check.py [--corpus A.jsonl ...] [--steps 150] [--noise 0.3] [--set key=value ...]

Packs a real-text corpus (default: the standard-library docstring sample), replaces a fraction of
the packed sequences of the train and validation splits with uniformly random bytes, meta-trains a
nano rater (inner LMs on train, outer loss on heldout), and prints the ROC-AUC of its scores
(clean above noise) on the validation split, with the number of meta-steps and the wall time.

The heldout split stays clean unless --noisy-heldout: when the outer objective itself contains
random-byte rows, training on random bytes has real value (the LM learns to predict uniformly
after a random-looking context), and the rater learns to keep them: measured 0.75 AUC at outer
lr 1e-3 and 0.24 (noise preferred) at 1e-2 after 150 meta-steps.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
import warnings
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from datarater.cli import SUBCOMMANDS, compose
from datarater.data.corpus import load_splits
from datarater.data.sample import docstring_documents, write_jsonl
from datarater.data.tokenizer import make_tokenizer
from datarater.models.rater import load_rater
from datarater.programs.meta_train import run as meta_train


def corrupt(packed, fraction: float, seed: int):
    """A copy with ``fraction`` of the rows' tokens replaced by random bytes; returns (packed, is_noise)."""
    rng = np.random.default_rng(seed)
    noise = rng.random(len(packed)) < fraction
    tokens = packed.tokens.copy()
    valid = packed.segment_ids != 0
    random_bytes = rng.integers(3, 259, tokens.shape).astype(tokens.dtype)
    tokens[noise] = np.where(valid[noise], random_bytes[noise], tokens[noise])
    return dataclasses.replace(packed, tokens=tokens), noise


def roc_auc(scores: np.ndarray, positive: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    ranks[order] = np.arange(1, len(scores) + 1)
    for s in np.unique(scores):  # average ranks of ties
        tie = scores == s
        ranks[tie] = ranks[tie].mean()
    n_pos, n_neg = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--corpus", nargs="*", default=[], help="jsonl files (default: the docstring sample)")
    ap.add_argument("--steps", type=int, default=150)
    ap.add_argument("--noise", type=float, default=0.3)
    ap.add_argument("--run-dir", default=None)
    ap.add_argument("--noisy-heldout", action="store_true", help="corrupt the heldout split too")
    ap.add_argument("--set", nargs="*", default=[], dest="overrides", help="meta-train overrides key=value")
    args = ap.parse_args()
    paths = args.corpus
    if not paths:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            paths = [str(write_jsonl(Path(tempfile.mkdtemp()) / "docs.jsonl", docstring_documents()))]
    run_dir = args.run_dir or tempfile.mkdtemp(prefix="learning-check-")
    overrides = [f"corpus.paths=[{','.join(paths)}]", f"run_dir={run_dir}", f"meta.steps={args.steps}",
                 "corpus.heldout_fraction=0.1", "corpus.validation_fraction=0.1", "meta.outer_lr=1e-2", *args.overrides]
    prog = compose(SUBCOMMANDS["meta-train"], overrides)
    splits = load_splits(prog.corpus, prog.data, make_tokenizer(prog.data), splits=("train", "heldout", "validation"))
    noisy = {name: corrupt(p, args.noise if (name != "heldout" or args.noisy_heldout) else 0.0, seed=i)
             for i, (name, p) in enumerate(sorted(splits.items()))}
    t0 = time.perf_counter()
    meta_train(prog, splits={k: v[0] for k, v in noisy.items()})
    seconds = time.perf_counter() - t0
    rater, _ = load_rater(run_dir)
    val, is_noise = noisy["validation"]
    scores = np.concatenate([
        np.asarray(rater(jnp.asarray(val.tokens[i:i + 64]), jnp.asarray(val.segment_ids[i:i + 64]),
                         jnp.asarray(val.positions[i:i + 64])))
        for i in range(0, len(val), 64)
    ])
    auc = roc_auc(scores, ~is_noise)
    print(f"RESULT meta_steps={args.steps} seconds={seconds:.0f} validation_rows={len(val)} "
          f"noise_rows={int(is_noise.sum())} roc_auc_clean_above_noise={auc:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
