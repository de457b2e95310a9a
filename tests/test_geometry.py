"""Tests for rote.geometry, on small vectors whose answers are worked out by hand."""

import math
import re

import numpy as np
import pytest

from rote.probe.geometry import alignment, cosine_matrix, pca_2d, relation_separation

E1, E2, E3 = np.eye(3)


# --- cosine_matrix -------------------------------------------------------------


def test_cosine_orthogonal_identical_opposite():
    a = np.array([[1.0, 0.0], [0.0, 2.0], [-3.0, 0.0]])
    expected = np.array(
        [
            [1.0, 0.0, -1.0],
            [0.0, 1.0, 0.0],
            [-1.0, 0.0, 1.0],
        ]
    )
    np.testing.assert_allclose(cosine_matrix(a), expected, atol=1e-15)


def test_cosine_two_arrays_shape_and_value():
    a = np.array([[1.0, 0.0], [1.0, 1.0]])
    b = np.array([[1.0, 0.0], [0.0, 1.0], [3.0, 4.0]])
    out = cosine_matrix(a, b)
    assert out.shape == (2, 3)
    r = 1 / math.sqrt(2)
    expected = np.array(
        [
            [1.0, 0.0, 0.6],
            [r, r, 7 / 5 * r],  # (3 + 4) / (5 * sqrt 2)
        ]
    )
    np.testing.assert_allclose(out, expected, atol=1e-15)


def test_cosine_is_float64_even_for_float32_input():
    a = np.array([[1.0, 2.0], [3.0, 4.0]], dtype=np.float32)
    out = cosine_matrix(a)
    assert out.dtype == np.float64
    np.testing.assert_allclose(np.diag(out), 1.0)
    assert out.max() <= 1.0


def test_cosine_zero_row_names_row():
    a = np.array([[1.0, 0.0], [2.0, 2.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match=r"a\[2\].*row 2"):
        cosine_matrix(a)
    with pytest.raises(ValueError, match=r"b\[0\].*row 0"):
        cosine_matrix(a[:2], np.zeros((1, 2)))


def test_cosine_width_mismatch_names_shapes():
    with pytest.raises(ValueError, match=r"\(1, 2\).*\(1, 3\)"):
        cosine_matrix(np.ones((1, 2)), np.ones((1, 3)))


# --- relation_separation -------------------------------------------------------


def test_separation_two_tight_orthogonal_clusters():
    rng = np.random.default_rng(0)
    a = np.array([10.0, 0.0, 0.0]) + 1e-3 * rng.standard_normal((4, 3))
    b = np.array([0.0, 10.0, 0.0]) + 1e-3 * rng.standard_normal((5, 3))
    out = relation_separation(np.vstack([a, b]), ["a"] * 4 + ["b"] * 5)
    assert out["n"] == 9
    assert out["intra"] == pytest.approx(1.0, abs=1e-5)
    assert out["inter"] == pytest.approx(0.0, abs=1e-3)
    assert out["separation"] == pytest.approx(1.0, abs=1e-3)


def test_separation_three_labels_by_hand():
    # rows: A = e1, e1, e2; B = e3, e3; C = e1 + e3 (a single member).
    x = np.array([E1, E1, E2, E3, E3, E1 + E3])
    labels = ["A", "A", "A", "B", "B", "C"]
    # Same-label pairs (4): A (e1, e1) = 1, A (e1, e2) = 0 twice, B (e3, e3) = 1.
    #   pooled mean 2 / 4 = 1/2 (a mean of per-label means would give 2/3).
    # Different-label pairs (11): A-B 6 pairs of 0; A-C: e1 twice at 1/sqrt2,
    #   e2 once at 0; B-C: e3 twice at 1/sqrt2. Sum 4/sqrt2 = 2 sqrt2.
    intra = 0.5
    inter = 2 * math.sqrt(2) / 11
    out = relation_separation(x, labels)
    assert out == pytest.approx(
        {"intra": intra, "inter": inter, "separation": intra - inter, "n": 6}
    )


def test_separation_accepts_any_label_type():
    x = np.array([E1, E1, E2, E2])
    for labels in ([0, 0, 1, 1], np.array([7, 7, 3, 3]), ("p", "p", "q", "q")):
        out = relation_separation(x, labels)
        assert out["intra"] == pytest.approx(1.0)
        assert out["inter"] == pytest.approx(0.0)


def test_separation_length_mismatch():
    with pytest.raises(ValueError, match=r"length 3.*4 rows"):
        relation_separation(np.ones((4, 2)), [0, 0, 1])


def test_separation_single_label():
    with pytest.raises(ValueError, match=r"\['only'\]"):
        relation_separation(np.ones((3, 2)), ["only"] * 3)


def test_separation_no_label_with_two_members():
    with pytest.raises(ValueError, match=r"no label has two members.*'z'"):
        relation_separation(np.eye(3), ["x", "y", "z"])


def test_separation_zero_row_names_row():
    x = np.array([E1, E1, np.zeros(3), E2])
    with pytest.raises(ValueError, match="row 2"):
        relation_separation(x, [0, 0, 1, 1])


# --- alignment -----------------------------------------------------------------


def test_alignment_2d():
    key = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    prompts = np.array([[5.0, 0.0], [1.0, 0.0], [-2.0, -2.0]])
    np.testing.assert_allclose(alignment(key, prompts), [1.0, 0.0, -1.0], atol=1e-15)


def test_alignment_3d_averages_over_prompts():
    key = np.array([[1.0, 0.0], [0.0, 3.0]])
    prompts = np.array(
        [
            [[2.0, 0.0], [0.0, 1.0], [1.0, 1.0]],  # 1, 0, 1/sqrt2
            [[0.0, -1.0], [0.0, 4.0], [3.0, 4.0]],  # -1, 1, 0.8
        ]
    )
    out = alignment(key, prompts)
    assert out.shape == (2,)
    np.testing.assert_allclose(out, [(1 + 1 / math.sqrt(2)) / 3, 0.8 / 3], atol=1e-15)


def test_alignment_3d_with_one_prompt_equals_2d():
    rng = np.random.default_rng(1)
    key = rng.standard_normal((5, 4))
    prompts = rng.standard_normal((5, 4))
    np.testing.assert_allclose(alignment(key, prompts[:, None, :]), alignment(key, prompts))


@pytest.mark.parametrize("shape", [(3, 5), (2, 4), (3, 2, 5), (4, 2, 4), (3, 0, 4), (3, 1, 1, 4)])
def test_alignment_shape_mismatch_names_shapes(shape):
    with pytest.raises(ValueError, match=re.escape(str(shape))):
        alignment(np.ones((3, 4)), np.ones(shape))


def test_alignment_zero_prompt_names_row():
    key = np.ones((3, 2))
    prompts = np.ones((3, 2, 2))
    prompts[1, 1] = 0.0
    with pytest.raises(ValueError, match=r"prompts\[1, 1\].*row 1"):
        alignment(key, prompts)


# --- pca_2d --------------------------------------------------------------------


def test_pca_axis_aligned_by_hand():
    x = np.array([[1.0, 0.0], [-1.0, 0.0], [0.0, 0.5], [0.0, -0.5]])
    coords, ratio = pca_2d(x)
    # Variances 2 and 0.5 (sums of squares), so ratios 0.8 and 0.2; the
    # components are +e1 and +e2, so the coordinates are the data itself.
    np.testing.assert_allclose(coords, x, atol=1e-15)
    np.testing.assert_allclose(ratio, [0.8, 0.2])


def test_pca_sign_rule_and_translation_by_hand():
    # The wide axis is the second column; translating the data changes nothing.
    x = np.array([[0.0, 2.0], [0.0, -2.0], [1.0, 0.0], [-1.0, 0.0]]) + [5.0, -7.0]
    coords, ratio = pca_2d(x)
    np.testing.assert_allclose(coords, [[2.0, 0.0], [-2.0, 0.0], [0.0, 1.0], [0.0, -1.0]], atol=1e-14)
    np.testing.assert_allclose(ratio, [0.8, 0.2])


def test_pca_two_rows():
    coords, ratio = pca_2d(np.array([[0.0, 0.0], [2.0, 2.0]]))
    # Centred rows are -(1, 1) and (1, 1); the component is (1, 1)/sqrt2.
    s = math.sqrt(2)
    np.testing.assert_allclose(coords, [[-s, 0.0], [s, 0.0]], atol=1e-14)
    np.testing.assert_allclose(ratio, [1.0, 0.0], atol=1e-15)


def test_pca_identical_rows():
    coords, ratio = pca_2d(np.ones((4, 3)))
    np.testing.assert_array_equal(coords, np.zeros((4, 2)))
    np.testing.assert_array_equal(ratio, np.zeros(2))


def _planted(seed=0):
    """200 rows in 6-D: strong variance along u, weaker along w, little noise."""
    rng = np.random.default_rng(seed)
    u = np.array([3.0, -1.0, 2.0, 0.0, 1.0, -0.5])
    u /= np.linalg.norm(u)  # largest entry (index 0) is positive
    w = np.array([0.0, 0.0, 0.0, 1.0, 0.0, 0.0])
    x = (
        10.0 * rng.standard_normal((200, 1)) * u
        + 3.0 * rng.standard_normal((200, 1)) * w
        + 0.1 * rng.standard_normal((200, 6))
        + 4.0  # an offset, removed by centring
    )
    return x, u


def _first_component(x, coords):
    """Recover the first component vector: centred(x).T @ coords[:, 0] = s1^2 v1."""
    v = (x - x.mean(axis=0)).T @ coords[:, 0]
    return v / np.linalg.norm(v)


def test_pca_recovers_planted_direction_with_rule_sign():
    x, u = _planted()
    coords, ratio = pca_2d(x)
    v = _first_component(x, coords)
    assert abs(v @ u) > 0.99
    assert v @ u > 0.99  # the sign rule picks +u, whose largest entry is positive
    assert np.abs(v).argmax() == 0 and v[0] > 0
    assert ratio[0] > ratio[1] > 0
    assert ratio.sum() <= 1.0
    assert ratio[0] > 0.85


def test_pca_row_permutation_permutes_coords():
    x, _ = _planted()
    coords, ratio = pca_2d(x)
    perm = np.random.default_rng(5).permutation(len(x))
    coords_p, ratio_p = pca_2d(x[perm])
    # Same component vectors (sign rule included), so the rows just move.
    np.testing.assert_allclose(coords_p, coords[perm], atol=1e-9)
    np.testing.assert_allclose(ratio_p, ratio)
    np.testing.assert_allclose(_first_component(x[perm], coords_p), _first_component(x, coords), atol=1e-12)


def test_pca_negated_input_negates_coords():
    x, u = _planted()
    coords, ratio = pca_2d(x)
    coords_n, ratio_n = pca_2d(-x)
    # Negating the data leaves its covariance, hence the (sign-fixed)
    # components, unchanged; only the projections change sign.
    np.testing.assert_allclose(coords_n, -coords, atol=1e-9)
    np.testing.assert_allclose(ratio_n, ratio)
    assert _first_component(-x, coords_n) @ u > 0.99


def test_pca_errors():
    with pytest.raises(ValueError, match="got 1"):
        pca_2d(np.ones((1, 3)))
    with pytest.raises(ValueError, match="got 1"):
        pca_2d(np.ones((5, 1)))
    with pytest.raises(ValueError, match=r"\(4,\)"):
        pca_2d(np.ones(4))
