"""ROC-AUC against a brute-force pair count; the audit table against per-label AUCs and their intervals."""

from __future__ import annotations

import numpy as np
import pytest

from datarater.errors import UserError
from datarater.eval.audit import ALL_CORRUPTED, audit_table, roc_auc


def brute_force_auc(pos, neg) -> float:
    """Mean over all (pos, neg) pairs of 1 if pos > neg, 1/2 if equal, 0 otherwise."""
    total = 0.0
    for p in pos:
        for n in neg:
            total += 1.0 if p > n else 0.5 if p == n else 0.0
    return total / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_matches_brute_force_with_ties(seed):
    rng = np.random.default_rng(seed)
    pos = rng.integers(0, 6, size=23).astype(float)  # few distinct values: many ties
    neg = rng.integers(-2, 4, size=17).astype(float)
    assert roc_auc(pos, neg) == pytest.approx(brute_force_auc(pos, neg), abs=1e-12)


def test_roc_auc_known_cases():
    assert roc_auc([3.0, 4.0, 5.0], [0.0, 1.0]) == 1.0
    assert roc_auc([0.0, 1.0], [3.0, 4.0, 5.0]) == 0.0
    assert roc_auc([2.0, 2.0], [2.0, 2.0, 2.0]) == 0.5
    assert roc_auc([1.0, 3.0], [2.0]) == 0.5


def test_roc_auc_bad_input():
    with pytest.raises(UserError, match="both groups"):
        roc_auc([], [1.0])
    with pytest.raises(UserError, match="NaN"):
        roc_auc([np.nan], [1.0])


def test_audit_table_rows_are_per_label_aucs():
    rng = np.random.default_rng(3)
    labels = ["clean"] * 30 + ["mojibake"] * 10 + ["all_caps"] * 8
    rater = np.concatenate([rng.normal(2, 1, 30), rng.normal(0, 1, 10), rng.normal(1, 1, 8)])
    rand = rng.normal(size=48)
    rows = audit_table(labels, {"datarater": rater, "random": rand})
    assert [r.label for r in rows] == ["all_caps", "mojibake", ALL_CORRUPTED]
    assert [r.n for r in rows] == [8, 10, 18]
    lab = np.asarray(labels)
    for r in rows:
        mask = lab != "clean" if r.label == ALL_CORRUPTED else lab == r.label
        for name, s in (("datarater", rater), ("random", rand)):
            assert r.auc[name] == pytest.approx(brute_force_auc(s[lab == "clean"], s[mask]))
            assert 0.0 <= r.auc_low[name] <= r.auc[name] <= r.auc_high[name] <= 1.0


def test_audit_table_intervals():
    labels = ["clean"] * 6 + ["mojibake"] * 3 + ["noise"] * 4
    rater = np.r_[np.arange(6) + 10.0, np.arange(3.0), 9.5, 10.5, 11.5, 12.5]
    rows = {r.label: r for r in audit_table(labels, {"datarater": rater}, n_resamples=200)}
    m = rows["mojibake"]  # perfectly separated: the interval collapses onto 1
    assert (m.auc["datarater"], m.auc_low["datarater"], m.auc_high["datarater"]) == (1.0, 1.0, 1.0)
    noise = rows["noise"]  # 9.5..12.5 among clean 10..15: 6+5+4+3 = 18 of 24 pairs with clean above
    assert noise.auc["datarater"] == 0.75
    assert noise.auc_low["datarater"] < 0.75 < noise.auc_high["datarater"]
    again = {r.label: r for r in audit_table(labels, {"datarater": rater}, n_resamples=200)}
    assert again["noise"].auc_low == noise.auc_low  # seeded: reproducible


def test_audit_table_errors():
    with pytest.raises(UserError, match="no sequence is labelled 'clean'"):
        audit_table(["a", "b"], {"x": np.zeros(2)})
    with pytest.raises(UserError, match="3 scores for 2 labels"):
        audit_table(["clean", "b"], {"x": np.zeros(3)})
