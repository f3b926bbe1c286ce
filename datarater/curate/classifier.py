"""Quality-classifier curator (GPT-3, DCLM): a fastText model's probability that a text is from the target set.

A binary fastText classifier (word n-gram features, Joulin et al. 2017) is trained to tell target
documents from documents of the pool being curated, on equally many of each (the larger side
sampled down, seeded). A text's score is the model's P(target); a packed row scores the
token-weighted mean over its document pieces, as `heuristic` does. The pool side is given as
texts or, like `dsir`'s raw model, fitted on a sample of packed rows (`fit`).
"""

from __future__ import annotations

import os
import random
import tempfile
from collections.abc import Iterable

import numpy as np

from datarater.curate.dsir import words
from datarater.curate.segments import batch_texts, weighted_mean
from datarater.data.tokenizer import Tokenizer
from datarater.errors import UserError

LABEL_PREFIX = "__label__"
TARGET, POOL = f"{LABEL_PREFIX}target", f"{LABEL_PREFIX}pool"


def fasttext_line(text: str) -> str:
    """``text`` as one line of fastText features: lower-cased words and punctuation, space-separated.

    `words` splits on whitespace, so newlines vanish. A word that starts with fastText's label
    prefix would be read as a label, so its prefix is escaped.
    """
    out = [("_" + w[2:]) if w.startswith(LABEL_PREFIX) else w for w in words(text)]
    return " ".join(out)


def pool_texts_from_rows(sample: dict[str, np.ndarray], tokenizer: Tokenizer) -> list[str]:
    """Text of every document piece of a batch dict of packed rows (e.g. `calibration_sample`)."""
    return [text for pieces in batch_texts(sample, tokenizer) for text, _ in pieces]


def _predict_pairs(model, line: str) -> list[tuple[float, str]]:
    """``(probability, label)`` of both labels for one featurised line.

    Calls the C++ binding ``model.f.predict`` rather than ``model.predict``: fasttext 0.9.2's
    wrapper ends in ``np.array(probs, copy=False)``, which numpy 2 refuses. Like the wrapper, a
    newline is appended so that the end-of-line token counts as it did in training.
    """
    return model.f.predict(line + "\n", 2, 0.0, "replace")


def _balanced(target: list[str], pool: list[str], max_docs: int, seed: int) -> tuple[list[str], list[str]]:
    """Equally many target and pool texts (at most ``max_docs`` each), the larger side sampled down."""
    n = min(len(target), len(pool), max_docs)
    rng = random.Random(seed)
    if len(target) > n:
        target = rng.sample(target, n)
    if len(pool) > n:
        pool = rng.sample(pool, n)
    return target, pool


def _require(texts: list[str], what: str) -> None:
    if not any(t.strip() for t in texts):
        raise UserError(f"classifier curator: the {what} texts are empty: the classifier needs documents on both "
                        "sides (target set vs pool being curated)")


class ClassifierCurator:
    """P(target) under a fastText classifier trained on target vs pool documents."""

    name = "classifier"
    flops_per_sequence = 0.0  # a CPU text model, like dsir and heuristic: no accelerator FLOPs counted

    def __init__(
        self,
        target_texts: Iterable[str],
        pool_texts: Iterable[str] | None,
        tokenizer: Tokenizer,
        *,
        seed: int = 0,
        epoch: int = 5,
        ngrams: int = 2,
        dim: int = 32,
        max_docs: int = 100_000,
        buckets: int = 1 << 18,
        lr: float = 0.1,
    ):
        if max_docs < 1:
            raise ValueError(f"max_docs must be >= 1, got {max_docs}")
        self.tokenizer = tokenizer
        self.target_texts = list(target_texts)
        _require(self.target_texts, "target")
        self.params = {"epoch": epoch, "wordNgrams": ngrams, "dim": dim, "bucket": buckets, "lr": lr}
        self.seed, self.max_docs = seed, max_docs
        self.model = None
        self.train_docs = (0, 0)  # (target, pool) documents the model was trained on
        if pool_texts is not None:
            self.train(pool_texts)

    @property
    def needs_fit(self) -> bool:
        """True until the model is trained (no pool texts given): `fit` trains it on a corpus sample."""
        return self.model is None

    def fit(self, sample: dict[str, np.ndarray]) -> None:
        """Trains the classifier with the document pieces of ``sample``'s rows as the pool side."""
        self.train(pool_texts_from_rows(sample, self.tokenizer))

    def train(self, pool_texts: Iterable[str]) -> None:
        """Trains the classifier on the target texts vs ``pool_texts`` (balanced, seeded)."""
        import fasttext

        pool = list(pool_texts)
        _require(pool, "pool")
        target, pool = _balanced(self.target_texts, pool, self.max_docs, self.seed)
        lines = [f"{TARGET} {fasttext_line(t)}" for t in target] + [f"{POOL} {fasttext_line(t)}" for t in pool]
        random.Random(self.seed + 1).shuffle(lines)  # interleaved: SGD's decaying rate must not favour one side
        with tempfile.TemporaryDirectory(prefix="datarater-classifier-") as d:
            path = os.path.join(d, "train.txt")
            with open(path, "w", encoding="utf-8") as f:
                f.write("\n".join(lines) + "\n")
            self.model = fasttext.train_supervised(input=path, label=LABEL_PREFIX, minCount=1, thread=1,
                                                   seed=self.seed, verbose=0, **self.params)
        self.train_docs = (len(target), len(pool))

    def text_score(self, text: str) -> float:
        """P(target) of ``text``, in [0, 1]."""
        if self.model is None:
            raise RuntimeError("ClassifierCurator needs pool texts or fit(sample) before scoring")
        probs = {label: p for p, label in _predict_pairs(self.model, fasttext_line(text))}
        return float(min(1.0, max(0.0, probs.get(TARGET, 0.0))))

    def score_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        """Token-weighted mean P(target) of each row's document pieces; 0 for a row with none."""
        out = []
        for pieces in batch_texts(batch, self.tokenizer):
            values = [self.text_score(text) for text, _ in pieces]
            out.append(weighted_mean(values, [w for _, w in pieces], empty=0.0))
        return np.asarray(out, dtype=np.float32)
