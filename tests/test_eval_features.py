"""Text features against hand counts; the least-squares fit against known coefficients."""

from __future__ import annotations

import numpy as np
import pytest

from datarater.errors import UserError
from datarater.eval.features import FEATURE_NAMES, duplicate_line_fraction, linear_fit, text_features


def feature_dict(text: str, n_segments: int = 1) -> dict[str, float]:
    names, X = text_features([text], [n_segments])
    return dict(zip(names, X[0].tolist(), strict=True))


def test_features_of_a_small_mixed_string():
    f = feature_dict("Ab1 !", n_segments=3)
    assert f == pytest.approx(
        {
            "length_bytes": 5,
            "n_segments": 3,
            "non_alnum_frac": 1 / 5,  # "!"
            "digit_frac": 1 / 5,  # "1"
            "whitespace_frac": 1 / 5,  # " "
            "uppercase_frac": 1 / 2,  # "A" of the letters "A", "b"
            "dup_line_frac": 0.0,
            "non_printable_frac": 0.0,
        }
    )


def test_non_printable_and_multibyte_characters():
    f = feature_dict("x\x00y\u00e9\t")  # x, NUL, y, é (2 bytes in UTF-8), tab
    assert f["length_bytes"] == 6
    assert f["non_printable_frac"] == pytest.approx(1 / 5)  # the NUL; the tab is whitespace
    assert f["non_alnum_frac"] == pytest.approx(1 / 5)  # the NUL again; é is a letter
    assert f["whitespace_frac"] == pytest.approx(1 / 5)
    assert f["uppercase_frac"] == 0.0


def test_all_caps_and_digits():
    f = feature_dict("HELLO 2024")
    assert f["uppercase_frac"] == 1.0
    assert f["digit_frac"] == pytest.approx(4 / 10)
    assert f["non_alnum_frac"] == 0.0


def test_duplicate_lines_ignore_blank_lines_and_surrounding_spaces():
    text = "a\na\nb\n\n  a  \n"
    # non-blank lines after stripping: a, a, b, a -> two of four repeat an earlier line
    assert duplicate_line_fraction(text) == pytest.approx(2 / 4)
    assert feature_dict(text)["dup_line_frac"] == pytest.approx(0.5)
    assert duplicate_line_fraction("only one line") == 0.0


def test_empty_text_has_zero_features():
    f = feature_dict("", n_segments=0)
    assert all(v == 0.0 for v in f.values())
    assert list(f) == list(FEATURE_NAMES)


def test_mismatched_lengths_are_an_error():
    with pytest.raises(UserError, match="2 texts but 1 segment"):
        text_features(["a", "b"], [1])


def test_linear_fit_recovers_coefficients_on_exact_linear_data():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 3)) * np.array([1.0, 5.0, 0.2]) + np.array([0.0, 10.0, -3.0])
    b = np.array([2.0, -0.5, 4.0])
    y = 1.5 + X @ b
    fit = linear_fit(X, y, ["a", "b", "c"])
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    # coefficients are per population standard deviation of each column
    np.testing.assert_allclose(fit.coef, b * X.std(axis=0), rtol=1e-9)
    assert fit.intercept == pytest.approx(1.5 + X.mean(axis=0) @ b)
    np.testing.assert_allclose(fit.predict(X), y, rtol=1e-9)
    by_size = sorted(zip("abc", np.abs(b * X.std(axis=0)), strict=True), key=lambda p: -p[1])
    assert [n for n, _ in fit.ranked()] == [n for n, _ in by_size]


def test_linear_fit_constant_column_gets_zero_and_others_are_still_recovered():
    rng = np.random.default_rng(1)
    X = np.column_stack([rng.normal(size=40), np.full(40, 7.0), rng.normal(size=40)])
    y = 3.0 * X[:, 0] - 2.0 * X[:, 2]
    fit = linear_fit(X, y)
    assert fit.constant.tolist() == [False, True, False]
    assert fit.coef[1] == 0.0
    np.testing.assert_allclose(fit.coef[[0, 2]], [3.0 * X[:, 0].std(), -2.0 * X[:, 2].std()], rtol=1e-9)
    assert fit.r2 == pytest.approx(1.0)
    assert "x1" not in [n for n, _ in fit.ranked()]


def test_linear_fit_r2_of_one_noisy_feature_is_the_squared_correlation():
    rng = np.random.default_rng(2)
    x = rng.normal(size=200)
    y = 0.7 * x + rng.normal(size=200)
    fit = linear_fit(x[:, None], y)
    assert fit.r2 == pytest.approx(np.corrcoef(x, y)[0, 1] ** 2, rel=1e-9)
    assert 0.0 < fit.r2 < 1.0


def test_linear_fit_constant_target_and_bad_input():
    fit = linear_fit(np.arange(10.0)[:, None], np.ones(10))
    assert np.isnan(fit.r2)
    with pytest.raises(UserError, match="NaN"):
        linear_fit(np.array([[1.0], [np.nan], [2.0]]), np.ones(3))
    with pytest.raises(UserError, match="shape"):
        linear_fit(np.ones((4, 2)), np.ones(3))
