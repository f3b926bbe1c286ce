"""The fastText classifier curator: ranks target-like text above junk, scores packed rows, refuses empty sides."""

from __future__ import annotations

import random

import numpy as np
import pytest

from datarater.curate.classifier import ClassifierCurator, fasttext_line, pool_texts_from_rows
from datarater.data.documents import Document
from datarater.data.packing import pack_documents
from datarater.data.tokenizer import ByteTokenizer
from datarater.errors import UserError

TOK = ByteTokenizer()
WORDS = ("the river runs past old town where people walk slowly each morning and children read books "
         "about history while teachers explain how science shapes our world with simple clear words").split()


def prose(rng: random.Random) -> str:
    sentences = []
    for _ in range(rng.randint(2, 4)):
        ws = [rng.choice(WORDS) for _ in range(rng.randint(6, 12))]
        sentences.append(" ".join(ws).capitalize() + ".")
    return " ".join(sentences)


def junk(rng: random.Random) -> str:
    if rng.random() < 0.5:  # a number table
        return "\n".join(" | ".join(str(rng.randint(0, 9999)) for _ in range(4)) for _ in range(rng.randint(3, 6)))
    letters = "qxzjkvwpfgh"
    return " ".join("".join(rng.choice(letters) for _ in range(rng.randint(3, 9))) for _ in range(rng.randint(8, 20)))


def corpus(seed: int) -> tuple[list[str], list[str]]:
    rng = random.Random(seed)
    target = [prose(rng) for _ in range(80)]
    pool = [prose(rng) if i % 2 else junk(rng) for i in range(160)]
    return target, pool


@pytest.fixture(scope="module")
def curator() -> ClassifierCurator:  # lr and epochs raised: 160 short documents are few SGD steps
    target, pool = corpus(0)
    return ClassifierCurator(target, pool, TOK, seed=0, epoch=25, lr=0.5, dim=16, buckets=1 << 12)


def auc(pos: list[float], neg: list[float]) -> float:
    """P(a positive scores above a negative), ties counting half."""
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_ranks_held_out_target_like_text_above_junk(curator):
    rng = random.Random(123)
    good = [curator.text_score(prose(rng)) for _ in range(20)]
    bad = [curator.text_score(junk(rng)) for _ in range(20)]
    assert all(0.0 <= s <= 1.0 for s in good + bad)
    assert auc(good, bad) > 0.9
    assert np.mean(good) > np.mean(bad) + 0.3
    assert curator.name == "classifier" and curator.flops_per_sequence == 0.0 and not curator.needs_fit
    assert curator.train_docs == (80, 80)  # balanced: the 160 pool texts sampled down to the 80 targets


def test_score_batch_is_text_score_of_a_lone_document_and_token_weighted_mean_otherwise(curator):
    rng = random.Random(7)
    a, b = prose(rng), junk(rng)
    seq = 2 + len(a.encode()) + 2 + len(b.encode()) + 5  # both documents (with bos/eos) fit in one row
    rows = [pack_documents([(Document(n, t, "s"), TOK.encode(t))], seq, TOK, "train", True, True)
            for n, t in (("a", a), ("b", b))]
    both = pack_documents([(Document(n, t, "s"), TOK.encode(t)) for n, t in (("a", a), ("b", b))],
                          seq, TOK, "train", True, True)
    assert len(both) == 1 and all(len(r) == 1 for r in rows)
    batch = {k: np.concatenate([getattr(r, k) for r in rows] + [getattr(both, k)])
             for k in ("tokens", "segment_ids", "positions")}
    scores = curator.score_batch(batch)
    assert scores.dtype == np.float32 and scores.shape == (3,)
    assert np.all((scores >= 0.0) & (scores <= 1.0))
    sa, sb = curator.text_score(a), curator.text_score(b)
    assert sa > sb + 0.3  # so the mixed row below tells a weighted mean from a plain one
    np.testing.assert_allclose(scores[:2], [sa, sb], rtol=1e-6)
    na, nb = len(a.encode()), len(b.encode())
    np.testing.assert_allclose(scores[2], (na * sa + nb * sb) / (na + nb), rtol=1e-5)


def test_pool_side_fitted_from_packed_rows_and_deterministic():
    target, pool = corpus(1)
    packed = pack_documents([(Document(f"d{i}", t, "s"), TOK.encode(t)) for i, t in enumerate(pool)],
                            128, TOK, "train", True, True)
    sample = {k: getattr(packed, k) for k in ("tokens", "segment_ids", "positions")}
    assert any("|" in t for t in pool_texts_from_rows(sample, TOK))
    scores = []
    for _ in range(2):
        c = ClassifierCurator(target, None, TOK, seed=3, epoch=25, lr=0.5, dim=16, buckets=1 << 12)
        assert c.needs_fit
        with pytest.raises(RuntimeError, match="fit"):
            c.text_score("anything")
        c.fit(sample)
        assert not c.needs_fit
        scores.append(c.score_batch(sample))
    np.testing.assert_array_equal(scores[0], scores[1])
    rng = random.Random(5)
    assert c.text_score(prose(rng)) > c.text_score(junk(rng))


@pytest.mark.parametrize("side", ["target", "pool"])
def test_empty_side_is_a_user_error_naming_it(side):
    target, pool = corpus(2)
    args = ([], pool) if side == "target" else (target, ["  ", "\n"])
    with pytest.raises(UserError, match=f"the {side} texts are empty"):
        ClassifierCurator(*args, TOK)


def test_fasttext_line_is_one_lowercased_line_that_cannot_smuggle_labels():
    line = fasttext_line("Hello,\nWorld __label__target\tOK")
    assert line == "hello , world _label__target ok"
    assert "\n" not in line and not any(w.startswith("__label__") for w in line.split())
