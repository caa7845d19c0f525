"""Gene graph construction for stImpute (ALGORITHMS.md B.2)."""

import numpy as np
import pytest

from spatialimpute.data.embeddings import GeneEmbeddings
from spatialimpute.data.gene_graph import aggregation_matrix, build_gene_graph, gene_similarity


def _expr(seed=0, n=200, g=6):
    rng = np.random.default_rng(seed)
    return rng.gamma(1.0, 1.0, size=(n, g)) * (rng.random((n, g)) < 0.6)


def test_expression_similarity_matches_cosine_and_guards_zero_gene():
    x = _expr()
    x[:, 3] = 0.0  # an all-zero reference gene
    sim, has = gene_similarity(list("ABCDEF"), x)
    assert not has.any()
    assert np.isfinite(sim).all()
    a, b = x[:, 0], x[:, 1]
    assert sim[0, 1] == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert np.allclose(np.diag(sim), 1.0)
    assert np.allclose(sim[3, [0, 1, 2, 4, 5]], 0.0)


def test_protein_entries_replace_expression_only_where_both_genes_have_vectors():
    x = _expr(1)
    vec = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=np.float32)
    emb = GeneEmbeddings(("a", "B", "c"), vec)  # case-insensitive match
    sim, has = gene_similarity(["A", "b", "C", "D"], x[:, :4], emb)
    assert has.tolist() == [True, True, True, False]
    assert sim[0, 1] == pytest.approx(0.0)
    assert sim[0, 2] == pytest.approx(1 / np.sqrt(2))
    expr_sim, _ = gene_similarity(["A", "b", "C", "D"], x[:, :4])
    assert np.allclose(sim[3], expr_sim[3])  # fallback gene keeps expression similarity


def test_distance_code_weights_follow_the_authors_formula():
    s = np.array([[1.0, 0.9, 0.2], [0.9, 1.0, 0.5], [0.2, 0.5, 1.0]])
    a = aggregation_matrix(s, "distance_code")
    b = 1 - s
    np.fill_diagonal(b, -1)
    assert np.allclose(a, b / (b.sum(1, keepdims=True) + 1e-12), atol=1e-6)
    assert np.allclose(a.sum(1), 1.0, atol=1e-5)
    assert np.allclose(np.diag(a), -1.0 / (b.sum(1) + 1e-12), atol=1e-6)


def test_similarity_paper_weights_are_row_stochastic_without_self():
    s = np.array([[1.0, 0.9, -0.2], [0.9, 1.0, 0.5], [-0.2, 0.5, 1.0]])
    a = aggregation_matrix(s, "similarity_paper")
    assert np.allclose(np.diag(a), 0.0)
    assert a[0, 2] == 0.0  # negative similarity clipped
    assert np.allclose(a.sum(1), 1.0)
    assert a[0, 1] == pytest.approx(1.0)


def test_bad_mode_and_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="graph_mode"):
        aggregation_matrix(np.eye(2), "cosine")
    with pytest.raises(ValueError, match="reference_expression"):
        gene_similarity(["A", "B"], np.ones((5, 3)))
    with pytest.raises(ValueError, match="reference_expression"):
        gene_similarity(["A", "B"], None)
    g = build_gene_graph(["A", "B", "C"], _expr(2, g=3), mode="similarity_paper")
    assert g.shape == (3, 3) and g.dtype == np.float32
