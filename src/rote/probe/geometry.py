"""Geometry of learned representations, in plain numpy.

After memorization, a key token should carry the meaning of its relation: the
representations of facts that share a relation should sit close together
(``relation_separation``), the key-token representation of a fact should point
the same way as the fact's natural-prompt representations (``alignment``), and
a 2-D projection (``pca_2d``) makes both visible in a plot.

Shapes below use n for the number of rows (facts), d for the hidden size and
p for the number of prompts per fact. Every computation is done in float64.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["cosine_matrix", "relation_separation", "alignment", "pca_2d"]


def _as_float(x: np.ndarray, name: str, ndims: tuple[int, ...]) -> np.ndarray:
    """Return ``x`` as a float64 array, checking it has one of ``ndims`` dimensions."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim not in ndims:
        wanted = " or ".join(f"{k}-D" for k in ndims)
        raise ValueError(f"{name} must be {wanted}, got shape {x.shape}")
    return x


def _unit(x: np.ndarray, name: str) -> np.ndarray:
    """Scale every vector along the last axis of ``x`` to unit length.

    ``x`` has shape (..., d); the result has the same shape. A zero vector has
    no direction, so it raises ValueError naming its index (its row first).
    """
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    zeros = np.argwhere(norms[..., 0] == 0)
    if len(zeros):
        index = tuple(int(i) for i in zeros[0])
        where = ", ".join(str(i) for i in index)
        raise ValueError(
            f"{name}[{where}] is a zero vector (row {index[0]}); its cosine is undefined"
        )
    return x / norms


def cosine_matrix(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Cosine similarity of every row of ``a`` with every row of ``b``.

    a: (n, d); b: (m, d), default ``a``. Returns (n, m) float64, where entry
    [i, j] is cos(a[i], b[j]), clipped to [-1, 1] against rounding.
    Raises ValueError if the widths differ or if any row is a zero vector.
    """
    a = _as_float(a, "a", (2,))
    b = a if b is None else _as_float(b, "b", (2,))
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a has shape {a.shape} and b has shape {b.shape}: widths differ")
    ua = _unit(a, "a")
    ub = ua if b is a else _unit(b, "b")
    return np.clip(ua @ ub.T, -1.0, 1.0)


def relation_separation(x: np.ndarray, labels: Sequence) -> dict:
    """How much more alike same-relation rows are than different-relation rows.

    x: (n, d) representations; labels: length n, one hashable relation id per row.
    Returns a dict with
      "intra": mean cosine over pairs of different rows with the same label,
      "inter": mean cosine over pairs of rows with different labels,
      "separation": intra - inter,
      "n": n.
    Means are pooled over pairs, so a label with more members weighs more.
    Raises ValueError if len(labels) != n, if there are fewer than 2 distinct
    labels, or if no label has two members.
    """
    x = _as_float(x, "x", (2,))
    labels = list(labels)
    n = x.shape[0]
    if len(labels) != n:
        raise ValueError(f"labels has length {len(labels)} but x has {n} rows")
    codes_of = {label: code for code, label in enumerate(dict.fromkeys(labels))}
    if len(codes_of) < 2:
        raise ValueError(f"need at least 2 distinct labels, got {list(codes_of)!r}")
    codes = np.array([codes_of[label] for label in labels])
    if np.bincount(codes).max() < 2:
        raise ValueError(f"no label has two members, so there are no same-label pairs: {labels!r}")

    cos = cosine_matrix(x)
    same = codes[:, None] == codes[None, :]
    intra = float(cos[same & ~np.eye(n, dtype=bool)].mean())
    inter = float(cos[~same].mean())
    return {"intra": intra, "inter": inter, "separation": intra - inter, "n": n}


def alignment(key: np.ndarray, prompts: np.ndarray) -> np.ndarray:
    """Per-fact cosine between the key-token view and the natural-prompt view.

    key: (n, d), one key-token representation per fact.
    prompts: (n, d), or (n, p, d) for p prompts per fact.
    Returns (n,) float64: cos(key[i], prompts[i]), or for 3-D prompts the
    mean over j of cos(key[i], prompts[i, j]).
    Raises ValueError naming both shapes if they do not match, or if any
    vector is zero.
    """
    key = _as_float(key, "key", (2,))
    prompts = _as_float(prompts, "prompts", (2, 3))
    n, d = key.shape
    fits = prompts.shape[0] == n and prompts.shape[-1] == d and prompts.size > 0
    if not fits:
        raise ValueError(
            f"key has shape {key.shape} but prompts has shape {prompts.shape}; "
            f"expected ({n}, {d}) or ({n}, p, {d}) with p >= 1"
        )
    uk = _unit(key, "key")
    up = _unit(prompts, "prompts")
    if up.ndim == 2:
        return np.clip(np.einsum("nd,nd->n", uk, up), -1.0, 1.0)
    return np.clip(np.einsum("nd,npd->np", uk, up), -1.0, 1.0).mean(axis=1)


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Project the rows of ``x`` onto their first two principal components.

    x: (n, d) with n >= 2 and d >= 2. The rows are centred and the components
    come from an SVD. Returns
      coords: (n, 2) float64, the centred rows in the component basis;
      explained_variance_ratio: (2,) float64, each component's share of the
        total variance (zeros when all rows are identical).

    Signs are made deterministic: each component vector is flipped so that its
    entry of largest absolute value is positive (the first such entry on a tie).
    The components therefore depend only on the centred covariance, so permuting
    the rows permutes ``coords`` the same way, translating ``x`` leaves ``coords``
    unchanged, and negating ``x`` negates ``coords``. With n == 2 the second
    component is not determined by the data; its coordinates are zero.
    """
    x = _as_float(x, "x", (2,))
    n, d = x.shape
    if n < 2:
        raise ValueError(f"pca_2d needs at least 2 rows, got {n}")
    if d < 2:
        raise ValueError(f"pca_2d needs at least 2 columns, got {d}")

    centred = x - x.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    components = vt[:2]  # (2, d), unit rows
    peaks = components[np.arange(2), np.abs(components).argmax(axis=1)]
    components = components * np.where(peaks < 0, -1.0, 1.0)[:, None]

    variance = s**2
    total = variance.sum()
    ratio = variance[:2] / total if total > 0 else np.zeros(2)
    return centred @ components.T, ratio
