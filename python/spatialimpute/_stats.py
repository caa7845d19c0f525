"""Column statistics shared by the benchmark metrics and the reliability model.

Everything works on whole ``(n, g)`` float64 matrices at once, one value per column.
"""

from __future__ import annotations

import numpy as np

__all__ = ["constant_columns", "average_ranks", "pearson_columns", "spearman_columns"]


def constant_columns(x: np.ndarray) -> np.ndarray:
    """Columns whose max equals their min exactly."""
    return x.max(axis=0) == x.min(axis=0)


def average_ranks(x: np.ndarray) -> np.ndarray:
    """Column-wise average ranks (1-based; ties share the mean of their positions).

    Same result as ``scipy.stats.rankdata(x, method="average", axis=0)``, vectorised over
    columns: one stable argsort of the (transposed, contiguous) matrix, tie groups found by
    comparing neighbours, their mean positions by one ``bincount``.
    """
    n_rows, n_cols = x.shape
    xt = np.ascontiguousarray(x.T)
    order = np.argsort(xt, axis=1, kind="stable")
    ordered = np.take_along_axis(xt, order, axis=1)
    new_group = np.empty(xt.shape, dtype=bool)
    new_group[:, 0] = True
    np.not_equal(ordered[:, 1:], ordered[:, :-1], out=new_group[:, 1:])
    group = np.cumsum(new_group.ravel()) - 1  # global tie-group id of each sorted position
    position = np.tile(np.arange(n_rows, dtype=np.float64), n_cols)
    mean_position = np.bincount(group, weights=position) / np.bincount(group)
    flat = np.empty(n_rows * n_cols, dtype=np.float64)
    flat[(order + (np.arange(n_cols) * n_rows)[:, None]).ravel()] = mean_position[group] + 1.0
    return flat.reshape(n_cols, n_rows).T


def pearson_columns(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column-wise Pearson correlation; undefined (a constant column) -> 0, flagged."""
    undefined = constant_columns(x) | constant_columns(y)
    xc = x - x.mean(axis=0)
    yc = y - y.mean(axis=0)
    num = np.einsum("ij,ij->j", xc, yc)
    den = np.sqrt(np.einsum("ij,ij->j", xc, xc) * np.einsum("ij,ij->j", yc, yc))
    r = np.zeros(x.shape[1])
    ok = ~undefined & (den > 0)
    r[ok] = num[ok] / den[ok]
    np.clip(r, -1.0, 1.0, out=r)
    return r, undefined | ~ok


def spearman_columns(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Column-wise Spearman correlation (Pearson on average ranks); a constant column gives 0."""
    return pearson_columns(average_ranks(np.asarray(x, dtype=np.float64)), average_ranks(np.asarray(y, dtype=np.float64)))[0]
