"""DSIR-style importance weights (Xie et al. 2023): hashed word n-grams toward a target corpus.

Texts become counts over ``buckets`` hashed features (lower-cased word/punctuation unigrams and,
up to ``ngrams``, their n-grams). A smoothed multinomial over the buckets is fitted to the target
corpus and to a sample of the raw corpus; a text's score is its log importance weight
``log p_target(x) - log p_raw(x)`` divided by its number of tokens.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable

import numpy as np

from datarater.config import CorpusConfig
from datarater.curate.segments import batch_texts
from datarater.data.documents import ReadStats
from datarater.data.tokenizer import Tokenizer
from datarater.errors import UserError

_WORD = re.compile(r"\w+|[^\w\s]")


def words(text: str) -> list[str]:
    """Lower-cased words and single punctuation marks (``wordpunct`` tokenisation)."""
    return _WORD.findall(text.lower())


def hashed_features(text: str, buckets: int, ngrams: int) -> np.ndarray:
    """Bucket index of every n-gram (n = 1..``ngrams``) of ``text``'s words (CRC32: same in every process)."""
    w = words(text)
    out = []
    for n in range(1, ngrams + 1):
        for i in range(len(w) - n + 1):
            out.append(zlib.crc32(f"{n}\x00{' '.join(w[i : i + n])}".encode("utf-8", "surrogatepass")) % buckets)
    return np.asarray(out, dtype=np.int64)


def feature_counts(texts: Iterable[str], buckets: int, ngrams: int) -> np.ndarray:
    counts = np.zeros(buckets, dtype=np.float64)
    for text in texts:
        np.add.at(counts, hashed_features(text, buckets, ngrams), 1.0)
    return counts


def log_multinomial(counts: np.ndarray, alpha: float = 1.0) -> np.ndarray:
    """Log-probabilities of the buckets with add-``alpha`` smoothing."""
    return np.log(counts + alpha) - np.log(counts.sum() + alpha * counts.size)


def read_target_texts(paths: list[str]) -> tuple[list[str], ReadStats]:
    """Texts of the target corpus (same file formats as ``corpus.paths``)."""
    from datarater.data.sources import iter_documents

    stats = ReadStats()
    try:
        texts = [doc.text for doc in iter_documents(CorpusConfig(paths=list(paths)), stats)]
    except UserError as e:
        raise UserError(f"config key 'curate.target_paths': {str(e).replace('corpus.paths: ', '')}") from None
    if not texts:
        raise UserError(f"config key 'curate.target_paths': no documents in {paths} ({stats.summary()})")
    return texts, stats


class DsirCurator:
    """Log importance weight per token of each packed row, toward the target corpus."""

    name = "dsir"
    flops_per_sequence = 0.0
    needs_fit = True  # the raw model is fitted on a sample of the corpus being curated

    def __init__(self, target_texts: Iterable[str], tokenizer: Tokenizer, buckets: int, ngrams: int):
        self.tokenizer, self.buckets, self.ngrams = tokenizer, buckets, ngrams
        self.log_target = log_multinomial(feature_counts(target_texts, buckets, ngrams))
        self.log_raw: np.ndarray | None = None

    def fit(self, sample: dict[str, np.ndarray]) -> None:
        """Fits the raw-corpus model on the text of ``sample``'s rows."""
        texts = [text for pieces in batch_texts(sample, self.tokenizer) for text, _ in pieces]
        self.log_raw = log_multinomial(feature_counts(texts, self.buckets, self.ngrams))

    def text_log_weight(self, text: str) -> float:
        if self.log_raw is None:
            raise RuntimeError("DsirCurator.fit(sample) must be called before scoring")
        f = hashed_features(text, self.buckets, self.ngrams)
        return float(np.sum(self.log_target[f] - self.log_raw[f]))

    def score_batch(self, batch: dict[str, np.ndarray]) -> np.ndarray:
        out = []
        for pieces in batch_texts(batch, self.tokenizer):
            total = sum(self.text_log_weight(text) for text, _ in pieces)
            out.append(total / max(1, sum(w for _, w in pieces)))
        return np.asarray(out, dtype=np.float32)
