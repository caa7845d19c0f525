"""Gene-gene graphs for stImpute (docs/algorithms/stimpute.md, "Gene graph").

Two steps:

1. :func:`gene_similarity` builds a dense ``G x G`` cosine-similarity matrix between genes:
   from reference expression (genes as vectors over reference cells), with the entries of
   gene pairs that both have a protein embedding replaced by the protein cosine similarity
   (the paper's fallback, which the original code lacks; with embeddings for every gene it
   is exactly the protein similarity, and with none exactly the expression similarity).
2. :func:`aggregation_matrix` turns similarities into the row-normalised weights that a
   GraphSAGE layer applies:

   * ``"distance_code"`` (the authors' code): ``d = 1 - S``, ``B = d - I`` (self weight -1),
     ``A = B / (rowsum(B) + 1e-12)``. Neighbours weigh by *dissimilarity*.
   * ``"similarity_paper"`` (the paper): ``A = S+ / rowsum(S+)`` with the diagonal removed
     and negative similarities clipped to 0; self enters only through the concatenation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from .normalize import row_chunks

if TYPE_CHECKING:  # pragma: no cover
    from .embeddings import GeneEmbeddings

__all__ = ["GRAPH_MODES", "gene_similarity", "aggregation_matrix", "build_gene_graph"]

GRAPH_MODES = ("distance_code", "similarity_paper")


def _cosine_columns(x: np.ndarray) -> np.ndarray:
    """Cosine similarity between the columns of ``x`` (float64), accumulated over row chunks.

    The Gram matrix is summed chunk by chunk, so the working memory is the ``G x G`` result
    plus one float64 chunk of rows, however many rows (cells) ``x`` has. An all-zero column
    gets similarity 0 to the others and 1 to itself.
    """
    g = x.shape[1]
    gram = np.zeros((g, g))
    for rows in row_chunks(x):
        part = np.asarray(x[rows], dtype=np.float64)
        gram += part.T @ part
    norms = np.sqrt(np.clip(np.diag(gram), 0.0, None))
    safe = np.where(norms > 0, norms, 1.0)
    gram /= safe[:, None]
    gram /= safe[None, :]
    np.clip(gram, -1.0, 1.0, out=gram)
    np.fill_diagonal(gram, 1.0)
    return gram


def gene_similarity(
    genes: Sequence[str],
    reference_expression: np.ndarray | None,
    embeddings: GeneEmbeddings | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Cosine similarity between genes, protein where available, expression otherwise.

    Parameters
    ----------
    genes
        Gene names, in the order of the graph's nodes.
    reference_expression
        ``(n_reference_cells, len(genes))`` log-normalised reference expression, columns in
        the order of ``genes``. Needed unless every gene has an embedding.
    embeddings
        Optional protein embeddings; genes are matched case-insensitively.

    Returns
    -------
    similarity
        ``(G, G)`` float64, symmetric, diagonal 1.
    has_embedding
        ``(G,)`` bool, genes whose entries came from the protein embedding.
    """
    genes = list(genes)
    g = len(genes)
    if g == 0:
        raise ValueError("genes: expected at least one gene, found none.")
    has = np.zeros(g, dtype=bool)
    prot = None
    if embeddings is not None:
        vecs, has = embeddings.lookup(genes)
        if has.any():
            prot = _cosine_columns(np.asarray(vecs[has]).T)
    if not has.all():
        if reference_expression is None:
            raise ValueError(
                "reference_expression: expected the reference expression of the genes "
                f"without an embedding ({int((~has).sum())} of {g}), found None; fix: pass "
                "the reference matrix or embeddings covering every gene."
            )
        x = np.asarray(reference_expression)
        if x.ndim != 2 or x.shape[1] != g:
            raise ValueError(
                f"reference_expression: expected shape (n_cells, {g}), found {x.shape}; "
                "fix: pass the reference columns of exactly these genes, in this order."
            )
        sim = _cosine_columns(x)
    else:
        sim = np.eye(g)
    if prot is not None:
        pos = np.flatnonzero(has)
        sim[np.ix_(pos, pos)] = prot
    return sim, has


def aggregation_matrix(similarity: np.ndarray, mode: str = "distance_code") -> np.ndarray:
    """Row-normalised GraphSAGE aggregation weights from a gene similarity matrix.

    Parameters
    ----------
    similarity
        ``(G, G)`` cosine similarities (diagonal 1).
    mode
        ``"distance_code"`` or ``"similarity_paper"`` (see module docstring).

    Returns
    -------
    np.ndarray
        ``(G, G)`` float32 matrix ``A``; a layer's neighbour feature is ``A @ h``.
    """
    if mode not in GRAPH_MODES:
        raise ValueError(
            f"graph_mode: expected one of {GRAPH_MODES}, found {mode!r}; fix: pick one of them."
        )
    s = np.asarray(similarity, dtype=np.float64)
    if s.ndim != 2 or s.shape[0] != s.shape[1]:
        raise ValueError(f"similarity: expected a square matrix, found shape {s.shape}.")
    g = s.shape[0]
    if mode == "distance_code":
        b = 1.0 - s
        np.fill_diagonal(b, -1.0)
        denom = b.sum(axis=1) + 1e-12
        # Faithful normaliser; only an exactly vanishing one is guarded (keeps values finite).
        denom = np.where(np.abs(denom) < 1e-12, 1e-12, denom)
        a = b / denom[:, None]
    else:
        w = np.clip(s, 0.0, None)
        np.fill_diagonal(w, 0.0)
        rs = w.sum(axis=1)
        a = np.divide(w, rs[:, None], out=np.zeros_like(w), where=rs[:, None] > 0)
    if g == 1:
        a = np.zeros((1, 1))
    return a.astype(np.float32)


def build_gene_graph(
    genes: Sequence[str],
    reference_expression: np.ndarray | None,
    embeddings: GeneEmbeddings | None = None,
    mode: str = "distance_code",
) -> np.ndarray:
    """:func:`gene_similarity` followed by :func:`aggregation_matrix`."""
    sim, _ = gene_similarity(genes, reference_expression, embeddings)
    return aggregation_matrix(sim, mode)
