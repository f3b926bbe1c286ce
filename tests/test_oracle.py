"""The oracle curator against its definition, and the comparison over seeds on known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from datarater.config import DataConfig, TargetConfig
from datarater.curate.curators import OracleCurator
from datarater.data.documents import Document
from datarater.data.packing import pack_documents
from datarater.data.pipeline import gather_rows, with_keys
from datarater.data.tokenizer import make_tokenizer
from datarater.errors import UserError
from datarater.eval.compare import compare_curators


def _packed(labels, sources, seq_len=16):
    tok = make_tokenizer(DataConfig())
    rng = np.random.default_rng(0)
    docs = [(Document(f"d{i}", "", s, lab), tok.encode("x" * int(rng.integers(3, 40))))
            for i, (lab, s) in enumerate(zip(labels, sources, strict=True))]
    return pack_documents(docs, seq_len, tok, "train", True, True)


def test_oracle_scores_each_row_by_its_share_of_good_tokens():
    labels = ["clean", "numbers", "clean", "entropy", "clean", "clean", "ocr", "clean"] * 3
    sources = ["wiki", "wiki", "web", "web"] * 6
    packed = _packed(labels, sources)
    for target, good in ((None, lambda j: labels[j] == "clean"),
                         (TargetConfig(sources=["wiki"]), lambda j: labels[j] == "clean" and sources[j] == "wiki"),
                         (TargetConfig(labels=["clean", "ocr"]), lambda j: labels[j] in ("clean", "ocr"))):
        oracle = OracleCurator(target, packed)
        scores = oracle.score_batch(with_keys(packed, gather_rows(packed, np.arange(len(packed)))))
        for i in range(len(packed)):  # the definition, one token at a time
            docs = packed.row_doc_indices(i)
            seg = packed.segment_ids[i]
            tokens = [int(docs[s - 1]) for s in seg if s > 0]
            want = sum(good(j) for j in tokens) / len(tokens)
            assert scores[i] == pytest.approx(want)
        got = oracle.score_batch(with_keys(packed, gather_rows(packed, np.array([2, 0, 1]))))
        np.testing.assert_array_equal(got, scores[[2, 0, 1]])
    assert ((scores > 0) & (scores < 1)).any()  # rows mix documents


def test_oracle_needs_labels_or_a_target_by_source():
    packed = _packed([""] * 6, ["a", "b"] * 3)
    with pytest.raises(UserError, match="no labels and meta.target names no sources"):
        OracleCurator(None, packed)
    with pytest.raises(UserError, match="no labels and meta.target names no sources"):  # streamed: no packed split
        OracleCurator().score_batch(with_keys(packed, gather_rows(packed, np.arange(len(packed)))))
    by_source = OracleCurator(TargetConfig(sources=["a"]), packed)
    scores = by_source.score_batch(with_keys(packed, gather_rows(packed, np.arange(len(packed)))))
    np.testing.assert_allclose(scores, packed.token_share(np.array([True, False] * 3)), rtol=1e-6)
    from datarater.config import CurateConfig
    from datarater.curate.curators import make_curator

    with pytest.raises(UserError, match="score` and `filter` cannot use it"):  # no packed rows to look up
        make_curator(CurateConfig(name="oracle"), DataConfig(), make_tokenizer(DataConfig()), 16)


def test_comparison_over_seeds_on_known_samples():
    nlls = {("none", 0.0): [3.00, 3.02, 3.01], ("datarater", 0.5): [2.80, 2.81, 2.79],
            ("random", 0.5): [2.95, 2.97, 2.96], ("oracle", 0.5): [2.60, 2.62, 2.61],
            ("heuristic", 0.25): [3.00, 3.03, 2.98]}
    rows = {r.curator: r for r in compare_curators(nlls, {"datarater": 0.5, "heuristic": 0.25, "random": 0.5})}
    d = rows["datarater"]
    assert d.nll.mean == pytest.approx(2.80) and d.nll.n == 3
    assert d.beyond_unfiltered and d.beyond_random and d.p_vs_random < 0.001
    assert d.gap_closed == pytest.approx((2.96 - 2.80) / (2.96 - 2.61))
    h = rows["heuristic"]  # no random or oracle run at 0.25: no comparison with them
    assert not h.beyond_unfiltered and h.random is None and math.isnan(h.gap_closed)
    assert rows["random"].random is None and rows["random"].beyond_unfiltered
