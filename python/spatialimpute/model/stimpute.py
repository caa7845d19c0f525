"""stImpute: autoencoder joint embedding + kNN + gene-graph GraphSAGE (ALGORITHMS.md Part B).

Pipeline (per model = per gene fold in a cross-validation):

1. The space in which spatial cells find their reference neighbours. ``neighbor_space=
   "autoencoder"`` (the original): an autoencoder on the spatial cells' panel genes (30
   epochs; reference rows only ride along in the shuffled batches), refined in each EM round.
   ``"joint"`` (default, chosen by measurement): the panel genes z-scored within each
   dataset and projected on joint principal components (the kNN baseline's space), fixed.
2. EM rounds: cosine kNN from spatial to reference cells in that space (chunked); E-step =
   full-batch GraphSAGE+MLP steps on the panel genes (neighbour expression gathered on the
   fly from the indices, exact full-batch gradients accumulated over chunks when the batch
   does not fit); M-step (autoencoder space only) = autoencoder refinement towards
   ``(AE(Y) + GNN(X)) / 2``.
3. Predict all genes (panel then targets) through the prediction gene graph with the last
   round's neighbours; blend with the distance-weighted kNN mean of the final space.
4. Reliability (``var["reliability"]``, in [0, 1]): stImpute's MLP (B.8), which learns from the
   in-sample panel-gene predictions their cosine with the measurement, or the package's
   descriptor model fitted on held-out panel genes (:mod:`spatialimpute.reliability`).
"""

from __future__ import annotations

import contextlib

import numpy as np
import torch

from .._settings import derive_seed, progress
from .._validation import SpatialImputeInputError, check_choice
from ..data.embeddings import resolve_gene_embeddings
from ..data.gene_graph import GRAPH_MODES, aggregation_matrix, gene_similarity
from ..data.neighbors import knn_cosine
from ..module.stimpute import (
    ReliabilityMLP,
    StImputeAE,
    StImputeGNN,
    final_blend,
    gnn_forward_chunked,
    gnn_loss_and_backward,
    uncentred_cosine_columns,
    weighted_knn_mean,
)
from ..reliability import reliability_from_heldout
from ._base import BaseImputer
from .knn import find_knn, knn_average, knn_heldout_predictor

__all__ = ["StImpute", "REGIMES", "PRESETS"]

#: The original's size regimes (B.1): "small" when spatial cells < 10,000 and panel genes < 500.
REGIMES = {
    "small": {"k": 50, "gnn_steps": 10, "hidden": 256, "alpha": 0.7, "reliability_steps": 100},
    "large": {"k": 20, "gnn_steps": 50, "hidden": 32, "alpha": 0.5, "reliability_steps": 200},
}

#: batch_cells="auto": full batch while cells x panel genes x k stays below this many
#: (cell, gene, slot) entries, else random batches of about this much work per step.
_AUTO_BATCH_WORK = 20_000_000

#: Where spatial cells look for reference neighbours (see the module docstring).
NEIGHBOR_SPACES = ("joint", "autoencoder")

#: Per-gene reliability models: stImpute's MLP (B.8) or the generic descriptor model.
RELIABILITY_MODELS = ("descriptors", "mlp")

#: Presets: "paper" = the regime table as published; "fast" = the same with the
#: large-regime head width 32 and blend weight 0.5 in both regimes: about 4x less work in
#: the small regime; measured by 5-fold CV, higher accuracy on osmfish_somatosensory (width)
#: and a blend that helps Drosophila and the seqFISH embryo (+0.004, +0.001 mean SPCC) at
#: a small cost on osmFISH and gastrulation (-0.003 each).
PRESETS = ("fast", "paper")


@contextlib.contextmanager
def _few_threads(device: torch.device, n: int = 1):
    """Run many tiny CPU ops on one thread (thread hand-offs cost more than they gain there)."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(n, before))
    try:
        yield
    finally:
        torch.set_num_threads(before)


class StImpute(BaseImputer):
    """stImpute imputation model.

    Parameters
    ----------
    spatial, reference, genes, seed, device, ...
        See :class:`~spatialimpute.model._base.BaseImputer`.
    **params
        See :meth:`default_params`. The main ones: ``gene_embeddings`` (table path, list of
        sources, or ``None`` for the expression-similarity graph), ``esm_fasta`` +
        ``esm_checkpoint`` (local ESM-2), ``graph_mode``, ``regime``.

    Examples
    --------
    >>> model = StImpute(spatial, reference, gene_embeddings="emb.csv.gz")  # doctest: +SKIP
    >>> out = model.impute()                                               # doctest: +SKIP
    """

    method_name = "stimpute"

    @classmethod
    def default_params(cls) -> dict:
        """Hyper-parameters.

        Returns
        -------
        dict
            ``gene_embeddings`` (None), ``esm_fasta`` / ``esm_checkpoint`` / ``esm_pooling``
            ("last") / ``esm_layer`` / ``esm_cache_dir``: embedding sources;
            ``graph_mode`` ("distance_code" | "similarity_paper");
            ``neighbor_space`` ("joint" | "autoencoder", see the module docstring; in 5-fold
            CV at alpha 0.7, "joint" scored higher mean SPCC on osmFISH (0.238 vs 0.229),
            gastrulation (0.107 vs 0.088) and the seqFISH embryo (0.038 vs 0.000), and
            0.004 lower on Drosophila); ``n_components`` (30): joint
            principal components when the panel is larger;
            ``reliability`` ("descriptors" | "mlp", see :data:`RELIABILITY_MODELS`; 5-fold CV
            Spearman(reliability, SPCC) on osmFISH / gastrulation / Drosophila / seqFISH
            embryo: 0.82 / 0.49 / 0.21 / 0.00 for "descriptors", 0.33 / 0.13 / 0.07 / -0.01
            for "mlp" with the autoencoder space);
            ``preset`` ("fast" | "paper", see :data:`PRESETS`);
            ``regime`` ("auto" | "small" | "large"); ``k``, ``gnn_steps``, ``hidden``,
            ``alpha``, ``reliability_steps``: None = from the regime (B.1 table);
            ``ae_input`` ("log" | "standardized"): what the autoencoder (and so the kNN)
            sees: the log-normalised values (the original) or each dataset's values
            standardised per gene with its own mean and sd (removes per-gene platform
            bias between spatial and reference, as SpaGE/Tangram-style joint spaces do; the
            decoder then has no output ReLU and the M-step works in the spatial z-space);
            ``em_rounds`` (2), ``ae_epochs`` (30), ``ae_steps`` (10, per M-step),
            ``latent_dim`` (100), ``ae_batch_size`` (512), ``ae_lr`` (1e-2),
            ``ae_weight_decay`` (1e-4), ``lr`` (1e-2), ``weight_decay`` (1e-2);
            ``batch_cells`` ("auto" | None | int): None = exact full-batch E- and M-steps
            (the original; chunked with exact gradient accumulation when memory requires);
            an int = each E/M step uses a fresh random subset of that many cells (like the
            authors' mini-batch variant, B.9: per-batch centring); "auto" = full batch while
            cells x panel genes x k <= 2e7 (osmFISH, Drosophila, seqFISH embryo), else random
            batches of max(1024, 2e7 / (panel genes x k)) cells, at most one chunk (so a step
            never computes its forward pass twice);
            ``chunk_size``: spatial cells per GNN chunk (None: from ``memory_budget_gb``);
            ``memory_budget_gb`` (1.0): activation memory allowed for one GNN chunk;
            ``reliability_max_cells`` (20000): cells used as the reliability model's inputs
            (a fixed random subset when there are more; the original uses all cells).
        """
        return {
            "gene_embeddings": None,
            "esm_fasta": None,
            "esm_checkpoint": None,
            "esm_pooling": "last",
            "esm_layer": None,
            "esm_cache_dir": None,
            "graph_mode": "distance_code",
            "neighbor_space": "joint",
            "n_components": 30,
            "reliability": "descriptors",
            "preset": "fast",
            "regime": "auto",
            "k": None,
            "gnn_steps": None,
            "hidden": None,
            "alpha": None,
            "reliability_steps": None,
            "ae_input": "log",
            "em_rounds": 2,
            "ae_epochs": 30,
            "ae_steps": 10,
            "latent_dim": 100,
            "ae_batch_size": 512,
            "ae_lr": 1e-2,
            "ae_weight_decay": 1e-4,
            "lr": 1e-2,
            "weight_decay": 1e-2,
            "batch_cells": "auto",
            "chunk_size": None,
            "memory_budget_gb": 1.0,
            "reliability_max_cells": 20000,
        }

    # ------------------------------------------------------------------ settings
    def _check_params(self) -> dict:
        p = self.params
        if p["graph_mode"] not in GRAPH_MODES:
            raise SpatialImputeInputError(
                "graph_mode", f"one of {list(GRAPH_MODES)}", repr(p["graph_mode"]),
                "use 'distance_code' (the authors' code) or 'similarity_paper' (the paper)",
            )
        check_choice(p["neighbor_space"], "neighbor_space", list(NEIGHBOR_SPACES))
        check_choice(p["reliability"], "reliability", list(RELIABILITY_MODELS))
        if p["esm_pooling"] not in ("last", "mean"):
            raise SpatialImputeInputError("esm_pooling", "'last' or 'mean'", repr(p["esm_pooling"]),
                                          "use 'last' (the authors') or 'mean'")
        regime = p["regime"]
        if regime == "auto":
            small = self.paired.n_cells < 10_000 and self.paired.n_features < 500
            regime = "small" if small else "large"
        if regime not in REGIMES:
            raise SpatialImputeInputError("regime", "'auto', 'small' or 'large'", repr(p["regime"]),
                                          "use regime='auto'")
        if p["ae_input"] not in ("log", "standardized"):
            raise SpatialImputeInputError("ae_input", "'log' or 'standardized'", repr(p["ae_input"]),
                                          "use 'log' (the original) or 'standardized'")
        if p["preset"] not in PRESETS:
            raise SpatialImputeInputError("preset", f"one of {list(PRESETS)}", repr(p["preset"]),
                                          "use 'fast' (default) or 'paper' (the published settings)")
        eff = dict(REGIMES[regime])
        if p["preset"] == "fast":
            eff.update(hidden=32, alpha=0.5)
        for key in eff:
            if p[key] is not None:
                eff[key] = p[key]
        for key in ("k", "gnn_steps", "hidden", "reliability_steps"):
            v = eff[key]
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (0 if key in ("gnn_steps", "reliability_steps") else 1):
                raise SpatialImputeInputError(key, "a positive integer", repr(v), f"pass e.g. {key}={REGIMES[regime][key]}")
        if not 0.0 <= float(eff["alpha"]) <= 1.0:
            raise SpatialImputeInputError("alpha", "a number in [0, 1]", repr(eff["alpha"]), "pass e.g. alpha=0.7")
        for key in ("em_rounds", "ae_epochs", "ae_steps", "latent_dim", "ae_batch_size"):
            v = p[key]
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < (1 if key in ("latent_dim", "ae_batch_size", "em_rounds") else 0):
                raise SpatialImputeInputError(key, "a non-negative integer", repr(v), "see StImpute.default_params()")
        if self.paired.n_features < 2:
            raise SpatialImputeInputError(
                "spatial", "at least 2 panel genes shared with the reference as model input",
                f"{self.paired.n_features}", "impute fewer genes at once or use a larger panel",
            )
        eff["k"] = int(min(eff["k"], self.paired.n_reference))
        eff["regime"] = regime
        return eff

    def _chunk(self, n_genes: int, k: int, hidden: int) -> int:
        if self.params["chunk_size"] is not None:
            return max(1, int(self.params["chunk_size"]))
        # Measured peak of a training step: about 12 floats per (cell, gene, neighbour slot).
        floats_per_cell = n_genes * (12 * k + 8 * hidden + 4)
        budget = float(self.params["memory_budget_gb"]) * 2**30 / 4
        return max(1, int(budget // max(floats_per_cell, 1)))

    # ------------------------------------------------------------------ pieces
    def _gene_graphs(self) -> tuple[np.ndarray, np.ndarray]:
        p, pd_ = self.params, self.paired
        genes = list(pd_.feature_genes) + list(pd_.target_genes)
        emb = resolve_gene_embeddings(
            p["gene_embeddings"], esm_fasta=p["esm_fasta"], esm_checkpoint=p["esm_checkpoint"],
            esm_pooling=p["esm_pooling"], esm_layer=p["esm_layer"], esm_cache_dir=p["esm_cache_dir"],
            genes=genes, device=self.device,
        )
        if emb is not None:
            cov = emb.coverage(genes)
            self.embedding_coverage = cov.to_dict()
            if cov.n_covered == 0:
                raise SpatialImputeInputError(
                    "gene_embeddings", "vectors for at least one panel or target gene",
                    f"none of the {cov.n_genes} genes (e.g. {genes[:3]}) in {emb.source or 'the input'}"
                    f" (which has e.g. {list(emb.genes[:3])})",
                    "check that the table's rows are gene symbols of the same species, or pass "
                    "gene_embeddings=None for the expression-similarity graph",
                )
        else:
            self.embedding_coverage = {"n_genes": len(genes), "n_covered": 0, "missing": []}
        sim, _ = gene_similarity(genes, pd_.reference_X, emb)
        nf = pd_.n_features
        a_train = aggregation_matrix(sim[:nf, :nf], p["graph_mode"])
        a_pred = aggregation_matrix(sim, p["graph_mode"])
        return a_train, a_pred

    def _set_ae_space(self, y: torch.Tensor, ref_feat: torch.Tensor) -> None:
        """Per-gene mean/sd of each dataset (standardized AE input) or identity (log)."""
        if self.params["ae_input"] == "log":
            self._ae_stats = None
            return
        stats = {}
        for name, x in (("st", y), ("ref", ref_feat)):
            mu = x.mean(0)
            sd = x.std(0, unbiased=False)
            stats[name] = (mu, torch.where(sd > 0, sd, torch.ones_like(sd)))
        self._ae_stats = stats

    def _to_ae(self, x: torch.Tensor, which: str) -> torch.Tensor:
        if self._ae_stats is None:
            return x
        mu, sd = self._ae_stats[which]
        return (x - mu) / sd

    def _encode(self, ae: StImputeAE, x: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([ae.encode(x[s:s + chunk]) for s in range(0, x.shape[0], chunk)])

    def _train_ae(self, ae, opt, y, ref_feat, gen) -> None:
        """30 epochs over the shuffled stack of spatial and reference rows, 512 per batch;
        only the spatial rows of a batch enter its loss (B.3). The batch split is computed
        on the host once per epoch, so the loop never waits on the device."""
        n_st, n_tot = y.shape[0], y.shape[0] + ref_feat.shape[0]
        bs = int(self.params["ae_batch_size"])
        for _ in progress(range(int(self.params["ae_epochs"])), desc="stImpute AE"):
            perm = torch.randperm(n_tot, generator=gen)
            is_st = perm < n_st
            rows = perm[is_st].to(self.device)
            counts = [int(c) for c in torch.stack([m.sum() for m in is_st.split(bs)]).tolist()]
            total = torch.zeros((), device=self.device)
            start = 0
            for c in counts:
                if c == 0:
                    continue
                xb = y[rows[start:start + c]]
                start += c
                loss = torch.nn.functional.mse_loss(ae(xb), xb)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total = total + loss.detach() * c
            self.log("ae_loss", float(total) / max(n_st, 1))

    def _batch_size(self, k: int, chunk: int) -> int | None:
        b, n = self.params["batch_cells"], self.paired.n_cells
        if b == "auto":
            per_cell = self.paired.n_features * k
            if n * per_cell <= _AUTO_BATCH_WORK or n <= 1024:
                return None
            return min(max(1024, _AUTO_BATCH_WORK // per_cell), chunk)
        if b is None:
            return None
        if not isinstance(b, (int, np.integer)) or isinstance(b, bool) or b < 1:
            raise SpatialImputeInputError("batch_cells", "'auto', None or a positive integer", repr(b),
                                          "use batch_cells=None for exact full-batch steps")
        return None if b >= n else int(b)

    def _batch(self, gen: torch.Generator, size: int) -> torch.Tensor:
        sel = torch.randperm(self.paired.n_cells, generator=gen)[:size]
        return torch.sort(sel).values.to(self.device)

    def _m_step(self, ae, opt, y, gnn_pred, steps: int | None = None) -> None:
        n = y.shape[0]
        chunk = max(1, int(self.params["memory_budget_gb"] * 2**30 / 4 // (y.shape[1] * 6 + 300)))
        for _ in range(int(self.params["ae_steps"]) if steps is None else steps):
            opt.zero_grad(set_to_none=True)
            total = 0.0
            for s in range(0, n, chunk):
                yb = y[s:s + chunk]
                loss = torch.nn.functional.mse_loss((ae(yb) + gnn_pred[s:s + chunk]) / 2, yb, reduction="sum")
                (loss / (n * y.shape[1])).backward()
                total += float(loss.detach())
            opt.step()
            self.log("ae_refine_loss", total / (n * y.shape[1]))

    # ------------------------------------------------------------------ fit
    def _fit_autoencoder(self, y: torch.Tensor, ref_feat: torch.Tensor):
        """Train the autoencoder (B.3); returns it, its optimiser and both datasets in its input space."""
        self._set_ae_space(y, ref_feat)
        y_ae, ref_ae = self._to_ae(y, "st"), self._to_ae(ref_feat, "ref")
        gen = torch.Generator(device="cpu").manual_seed(derive_seed(self.seed, "stimpute-ae-batches"))
        torch.manual_seed(derive_seed(self.seed, "stimpute-ae-init"))
        nf = self.paired.n_features
        ae = StImputeAE(nf, int(self.params["latent_dim"]), output_relu=self.params["ae_input"] == "log").to(self.device)
        opt = torch.optim.Adam(ae.parameters(), lr=self.params["ae_lr"], weight_decay=self.params["ae_weight_decay"])
        with _few_threads(self.device):
            self._train_ae(ae, opt, y_ae, ref_ae, gen)
        return ae, opt, y_ae, ref_ae

    def _joint_neighbors(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine neighbours in the joint z-scored (PCA) space of the panel genes."""
        pd_ = self.paired
        return find_knn(pd_, np.arange(pd_.n_features), np.arange(pd_.n_cells), k=k,
                        n_components=int(self.params["n_components"]), seed=self.seed, device=self.device)

    def _fit(self) -> None:
        eff = self._check_params()
        self.effective_params = eff
        pd_, dev = self.paired, self.device
        nf = pd_.n_features
        k, hidden = eff["k"], eff["hidden"]

        a_train, a_pred = self._gene_graphs()
        y = torch.as_tensor(pd_.spatial_X, dtype=torch.float32, device=dev)
        ref_all = torch.as_tensor(pd_.reference_X, dtype=torch.float32, device=dev)
        ref_feat = ref_all[:, :nf].contiguous()
        agg_train_t = torch.as_tensor(a_train, device=dev).T.contiguous()
        agg_pred_t = torch.as_tensor(a_pred, device=dev).T.contiguous()

        ae = None
        if self.params["neighbor_space"] == "autoencoder":
            ae, ae_opt, y_ae, ref_ae = self._fit_autoencoder(y, ref_feat)

            def neighbors():
                return knn_cosine(self._encode(ae, y_ae), self._encode(ae, ref_ae), k, device=dev)
        else:
            joint = self._joint_neighbors(k)

            def neighbors():
                return joint

        torch.manual_seed(derive_seed(self.seed, "stimpute-gnn-init"))
        gnn = StImputeGNN(k, hidden).to(dev)
        gnn_opt = torch.optim.Adam(gnn.parameters(), lr=self.params["lr"], weight_decay=self.params["weight_decay"])
        chunk_train = self._chunk(nf, k, hidden)
        self.chunk_sizes = {"train": chunk_train}

        batch = self._batch_size(k, chunk_train)
        self.effective_params["batch_cells"] = batch
        batch_gen = torch.Generator(device="cpu").manual_seed(derive_seed(self.seed, "stimpute-batches"))
        idx = None
        for rnd in range(int(self.params["em_rounds"])):
            idx, _ = neighbors()
            gnn.train()
            for _ in progress(range(int(eff["gnn_steps"])), desc=f"stImpute E-step {rnd + 1}"):
                gnn_opt.zero_grad(set_to_none=True)
                if batch is None:
                    loss = gnn_loss_and_backward(gnn, ref_feat, idx, y, agg_train_t, chunk_train)
                else:
                    sel = self._batch(batch_gen, batch)
                    loss = gnn_loss_and_backward(gnn, ref_feat, idx[sel], y[sel], agg_train_t, chunk_train)
                gnn_opt.step()
                self.log("gnn_loss", loss)
            gnn.eval()
            if ae is not None:
                self._refine_autoencoder(ae, ae_opt, gnn, ref_feat, idx, y_ae, agg_train_t, chunk_train, batch,
                                         batch_gen)

        self._ae, self._gnn = ae, gnn
        self._idx_pred = idx  # neighbours of the last round, found before its M-step (B.7.4)
        self._blend_neighbors = neighbors()  # the final space's neighbours, for the kNN-mean blend
        self._agg_pred_t = agg_pred_t
        self._ref_all = ref_all
        self._p_all = self._gnn_all()
        if self.params["reliability"] == "mlp":
            self._train_reliability(y, eff)

    def _refine_autoencoder(self, ae, opt, gnn, ref_feat, idx, y_ae, agg_train_t, chunk, batch, batch_gen) -> None:
        """M-step (B.7.3): move the autoencoder towards the GNN's predictions."""
        if batch is None:
            with torch.no_grad():
                p_train = gnn_forward_chunked(gnn, ref_feat, idx, agg_train_t, chunk)
            self._m_step(ae, opt, y_ae, self._to_ae(p_train, "st"))
            return
        # The GNN is fixed during the M-step: one forward over the union of its batches.
        sels = [self._batch(batch_gen, batch) for _ in range(int(self.params["ae_steps"]))]
        if not sels:
            return
        cells = torch.unique(torch.cat(sels))
        with torch.no_grad():
            p_cells = gnn_forward_chunked(gnn, ref_feat, idx[cells], agg_train_t, chunk)
        for sel in sels:
            p_sel = p_cells[torch.searchsorted(cells, sel)]
            self._m_step(ae, opt, y_ae[sel], self._to_ae(p_sel, "st"), steps=1)

    # ------------------------------------------------------------------ predict
    def _gnn_all(self) -> torch.Tensor:
        eff = self.effective_params
        chunk = self._chunk(self.paired.n_features + self.paired.n_targets, eff["k"], eff["hidden"])
        self.chunk_sizes = {**getattr(self, "chunk_sizes", {}), "predict": chunk}
        with torch.no_grad():
            return gnn_forward_chunked(self._gnn.eval(), self._ref_all, self._idx_pred, self._agg_pred_t, chunk)

    def _reliability_inputs(self, cols: torch.Tensor) -> torch.Tensor:
        return cols.T[:, self._rel_cells] if self._rel_cells is not None else cols.T

    def _train_reliability(self, y: torch.Tensor, eff: dict) -> None:
        """stImpute's reliability MLP (B.8) on the in-sample panel-gene predictions."""
        nf, n = self.paired.n_features, self.paired.n_cells
        m = int(self.params["reliability_max_cells"])
        if n > m:
            g = torch.Generator(device="cpu").manual_seed(derive_seed(self.seed, "stimpute-rel-cells"))
            self._rel_cells = torch.sort(torch.randperm(n, generator=g)[:m]).values.to(self.device)
        else:
            self._rel_cells = None
        p_train = self._p_all[:, :nf]
        x = self._reliability_inputs(p_train)
        target = uncentred_cosine_columns(p_train, y).unsqueeze(1)
        torch.manual_seed(derive_seed(self.seed, "stimpute-rel-init"))
        rel = ReliabilityMLP(x.shape[1], eff["hidden"]).to(self.device)
        opt = torch.optim.Adam(rel.parameters(), lr=self.params["lr"], weight_decay=self.params["weight_decay"])
        with _few_threads(self.device):
            self._fit_reliability(rel, opt, x, target, int(eff["reliability_steps"]))
        self._rel = rel.eval()

    def _fit_reliability(self, rel, opt, x, target, steps) -> None:
        losses = []
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = torch.nn.functional.mse_loss(rel(x), target)
            loss.backward()
            opt.step()
            losses.append(loss.detach())
        for v in (torch.stack(losses).tolist() if losses else []):
            self.log("reliability_loss", v)

    def _predict(self) -> np.ndarray:
        nf = self.paired.n_features
        if self._p_all is None:
            self._p_all = self._gnn_all()
        idx, dist = self._blend_neighbors
        knn_mean = weighted_knn_mean(self._ref_all[:, nf:], idx, dist)
        out = final_blend(self._p_all[:, nf:], knn_mean, float(self.effective_params["alpha"]))
        return out.cpu().numpy().astype(np.float32)

    def _reliability(self, prediction: np.ndarray) -> np.ndarray:
        pd_, nf = self.paired, self.paired.n_features
        if self.params["reliability"] == "mlp":
            with torch.no_grad():
                score = self._rel(self._reliability_inputs(self._p_all[:, nf:])).squeeze(1)
            return np.clip(score.cpu().numpy().astype(np.float64), 0.0, 1.0)
        # Descriptor model: held-out panel genes and the targets are both described through
        # the joint-space kNN stand-in, so the model is applied to the kind of prediction it
        # was fitted on (re-training stImpute per internal gene fold would cost 5 fits).
        k, n_components = int(self.effective_params["k"]), int(self.params["n_components"])
        targets = np.arange(nf, nf + pd_.n_targets)
        joint = self._blend_neighbors if self.params["neighbor_space"] == "joint" else self._joint_neighbors(k)
        stand_in = knn_average(pd_, joint, targets, "similarity", self.device)
        predict_heldout = knn_heldout_predictor(pd_, k=k, n_components=n_components, seed=self.seed,
                                                device=self.device)
        return reliability_from_heldout(pd_, predict_heldout, stand_in, seed=self.seed)

    # ------------------------------------------------------------------ save / load
    def _state_dict(self) -> dict:
        state = {f"gnn.{k}": v for k, v in self._gnn.state_dict().items()}
        if self._ae is not None:
            state.update({f"ae.{k}": v for k, v in self._ae.state_dict().items()})
        if self.params["reliability"] == "mlp":
            state.update({f"rel.{k}": v for k, v in self._rel.state_dict().items()})
            if self._rel_cells is not None:
                state["rel_cells"] = self._rel_cells
        state["idx_pred"] = self._idx_pred.to(torch.int64)
        state["blend_idx"] = self._blend_neighbors[0].to(torch.int64).clone()  # may be idx_pred itself
        state["blend_dist"] = self._blend_neighbors[1]
        state["agg_pred_t"] = self._agg_pred_t
        state["effective_params"] = dict(self.effective_params)
        state["embedding_coverage"] = dict(self.embedding_coverage)
        return state

    def _load_state_dict(self, state: dict) -> None:
        eff = dict(state["effective_params"])
        self.effective_params = eff
        self.embedding_coverage = state.get("embedding_coverage", {})
        nf, dev = self.paired.n_features, self.device
        idx = state["idx_pred"].to(dev, torch.int64)
        if idx.shape[0] != self.paired.n_cells:
            raise SpatialImputeInputError(
                "spatial", f"the {idx.shape[0]} spatial cells the model was trained on",
                f"{self.paired.n_cells} cells", "load the model with the spatial data it was trained with",
            )
        gnn = StImputeGNN(int(eff["k"]), int(eff["hidden"])).to(dev)
        gnn.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("gnn.")})
        self._gnn = gnn.eval()
        self._ae = None
        if any(k.startswith("ae.") for k in state):
            ae = StImputeAE(nf, int(self.params["latent_dim"]), output_relu=self.params["ae_input"] == "log").to(dev)
            ae.load_state_dict({k[3:]: v for k, v in state.items() if k.startswith("ae.")})
            self._ae = ae.eval()
        rel_w = {k[4:]: v for k, v in state.items() if k.startswith("rel.")}
        if rel_w:
            rel = ReliabilityMLP(rel_w["net.0.weight"].shape[1], int(eff["hidden"])).to(dev)
            rel.load_state_dict(rel_w)
            self._rel = rel.eval()
            self._rel_cells = state["rel_cells"].to(dev) if "rel_cells" in state else None
        self._idx_pred = idx
        self._blend_neighbors = (state["blend_idx"].to(dev, torch.int64), state["blend_dist"].to(dev))
        self._agg_pred_t = state["agg_pred_t"].to(dev)
        self._ref_all = torch.as_tensor(self.paired.reference_X, dtype=torch.float32, device=dev)
        self._p_all = None

    def save(self, path) -> None:
        """Save to directory ``path`` (safetensors + JSON); in-memory embedding objects are
        recorded by their description (the gene graph itself is saved)."""
        original = self.params
        ge = original["gene_embeddings"]
        if ge is not None and not isinstance(ge, (str, list, tuple)):
            self.params = {**original, "gene_embeddings": None}
        elif isinstance(ge, (list, tuple)):
            self.params = {**original, "gene_embeddings": [g if isinstance(g, str) else None for g in ge]}
        try:
            super().save(path)
        finally:
            self.params = original

    def provenance(self) -> dict:
        """Base provenance plus the effective regime settings and the embedding coverage."""
        out = super().provenance()
        ge = out["params"].get("gene_embeddings")
        if ge is not None and not isinstance(ge, (str, list)):
            out["params"]["gene_embeddings"] = getattr(ge, "source", type(ge).__name__)
        out["effective_params"] = dict(getattr(self, "effective_params", {}))
        out["embedding_coverage"] = dict(getattr(self, "embedding_coverage", {}))
        out["chunk_sizes"] = dict(getattr(self, "chunk_sizes", {}))
        return out
