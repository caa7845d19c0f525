"""stImpute: kNN to the reference + gene-graph GraphSAGE + reliability (docs/algorithms/stimpute.md).

Pipeline (per model = per gene fold in a cross-validation):

1. The space in which spatial cells find their reference neighbours: ``neighbor_space=
   "joint"`` (fast preset) = the panel genes z-scored within each dataset and projected on
   joint principal components (the kNN baseline's space), fixed; ``"autoencoder"`` (paper
   preset) = an autoencoder on the spatial cells' panel genes, refined in each EM round.
2. EM rounds: cosine kNN from spatial to reference cells in that space; E-step = GraphSAGE +
   MLP steps on the panel genes (neighbour expression gathered on the fly from the indices),
   each on all cells (paper) or on a random subset of cells bounded by ``step_work`` (fast);
   M-step (autoencoder space only) = autoencoder refinement towards ``(AE(Y) + GNN(X)) / 2``.
3. Predict the target genes through the prediction gene graph with the last round's
   neighbours; blend with the distance-weighted kNN mean of the final space.
4. Reliability (``var["reliability"]``, in [0, 1]): the package's descriptor model fitted on
   held-out panel genes (:mod:`spatialimpute.reliability`, fast preset) or stImpute's MLP,
   which learns from the in-sample panel-gene predictions their cosine with the
   measurement (paper preset).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import numpy as np
import torch

from .._settings import derive_seed, progress
from .._validation import SpatialImputeInputError
from ..data.embeddings import GeneEmbeddings, resolve_gene_embeddings
from ..data.gene_graph import GRAPH_MODES, aggregation_matrix, gene_similarity
from ..data.neighbors import JointNeighbors, knn_average, knn_cosine, knn_heldout_predictor
from ..module.stimpute import (
    ReliabilityMLP,
    StImputeAE,
    StImputeGNN,
    blend_statistics,
    final_blend,
    gnn_forward_chunked,
    gnn_loss_and_backward,
    uncentred_cosine_columns,
    weighted_knn_mean,
)
from ..nn.gene_sage import GeneMixing
from ..reliability import reliability_from_heldout
from ._base import BaseImputer
from ._config import Config, boolean, choice, integer, number

__all__ = ["StImpute", "StImputeArchitecture", "StImputeSchedule", "REGIMES"]

#: The original's size regimes: "small" when spatial cells < 10,000 and panel genes < 500.
REGIMES = {
    "small": {"k": 50, "gnn_steps": 10, "hidden": 256, "alpha": 0.7, "reliability_steps": 100},
    "large": {"k": 20, "gnn_steps": 50, "hidden": 32, "alpha": 0.5, "reliability_steps": 200},
}


def _check_embedding_spec(value, name):
    """``gene_embeddings``: None, a table path, a :class:`GeneEmbeddings`, a DataFrame/mapping, or a list of these."""
    import pandas as pd

    single = (str, os.PathLike, GeneEmbeddings, pd.DataFrame, dict)
    if value is None:
        return None
    if isinstance(value, (list, tuple)) and value and all(isinstance(v, single) for v in value):
        return tuple(str(v) if isinstance(v, os.PathLike) else v for v in value)
    if isinstance(value, single):
        return str(value) if isinstance(value, os.PathLike) else value
    raise SpatialImputeInputError(name, "None, a table path, a GeneEmbeddings/DataFrame/mapping or a list of these",
                                  f"{type(value).__name__}", "pass e.g. gene_embeddings='emb.csv.gz'")


def _check_optional_path(value, name):
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, os.PathLike):
        return str(value)
    raise SpatialImputeInputError(name, "None or a path", f"{type(value).__name__}", f"pass {name}='path'")


def _describe(spec):
    """A saved, JSON-ready description of an embedding source (in-memory objects by their ``source``)."""
    if spec is None or isinstance(spec, str):
        return spec
    if isinstance(spec, tuple):
        return [_describe(s) for s in spec]
    return getattr(spec, "source", None) or None


@dataclasses.dataclass(frozen=True)
class StImputeArchitecture(Config):
    """What an stImpute model is. ``None`` = from the size regime (:data:`REGIMES`).

    ``gene_embeddings``, ``esm_*``: protein-embedding sources of the gene graph (none =
    expression similarity); ``graph_mode``: ``"distance_code"`` (the authors' code) or
    ``"similarity_paper"``; ``graph_mixing``: ``"dense"`` (exact ``G x G`` aggregation) or
    ``"low_rank"`` (its diagonal plus the leading singular vectors of the rest, see
    :meth:`~spatialimpute.nn.gene_sage.GeneMixing.low_rank`); ``neighbor_space``:
    ``"joint"`` or ``"autoencoder"``; ``n_components``: joint principal components;
    ``latent_dim``: autoencoder width; ``regime``: ``"auto"``, ``"small"`` or ``"large"``;
    ``k`` neighbours, ``hidden`` head width, ``alpha`` GNN share of the final blend;
    ``blend_max_cells``: the blend's maxima are taken over a random sample of this many
    spatial cells when there are more (``None``: over all cells, the original; a sample
    lets data in many blocks run the GNN once per cell rather than twice);
    ``reliability``: compute per-gene reliability (NaN otherwise); ``reliability_model``:
    ``"descriptors"`` (held-out panel genes) or ``"mlp"`` (stImpute's in-sample model).
    """

    gene_embeddings: object = dataclasses.field(default=None, metadata={"check": _check_embedding_spec})
    esm_fasta: str | None = dataclasses.field(default=None, metadata={"check": _check_optional_path})
    esm_checkpoint: str | None = dataclasses.field(default=None, metadata={"check": _check_optional_path})
    esm_pooling: str = choice("last", ("last", "mean"))
    esm_layer: int | None = integer(None, minimum=0, optional=True)
    esm_cache_dir: str | None = dataclasses.field(default=None, metadata={"check": _check_optional_path})
    graph_mode: str = choice("distance_code", GRAPH_MODES)
    graph_mixing: str = choice("low_rank", ("low_rank", "dense"))
    neighbor_space: str = choice("joint", ("joint", "autoencoder"))
    n_components: int = integer(30, minimum=1)
    latent_dim: int = integer(100, minimum=1)
    regime: str = choice("auto", ("auto", "small", "large"))
    k: int | None = integer(None, minimum=1, optional=True)
    hidden: int | None = integer(32, minimum=1, optional=True)
    alpha: float | None = number(0.5, minimum=0.0, maximum=1.0, optional=True)
    blend_max_cells: int | None = integer(50_000, minimum=1, optional=True)
    reliability: bool = boolean(True)
    reliability_model: str = choice("descriptors", ("descriptors", "mlp"))

    def to_dict(self) -> dict:
        """JSON-ready values; in-memory embedding objects are described by their source."""
        out = super().to_dict()
        out["gene_embeddings"] = _describe(self.gene_embeddings)
        return out


@dataclasses.dataclass(frozen=True)
class StImputeSchedule(Config):
    """How an stImpute model is trained. ``None`` = from the size regime (:data:`REGIMES`).

    ``em_rounds``; ``gnn_steps`` per round; ``lr`` / ``weight_decay`` (Adam, GNN and
    reliability MLP); ``step_work``: most (cell, gene, neighbour) entries one GNN step sees,
    a random subset of the cells when all of them would exceed it (``None``: every step on
    all cells, the original). With both fixed (fast preset) the GNN's training costs at most
    ``em_rounds * gnn_steps * step_work`` entries, whatever the numbers of cells and genes;
    ``ae_epochs``, ``ae_steps`` (per M-step), ``ae_batch_size``,
    ``ae_lr``, ``ae_weight_decay``: the autoencoder's; ``reliability_steps`` and
    ``reliability_max_cells``: the reliability MLP's; ``memory_budget_gb``: activation
    memory of one GNN chunk (chunks with exact gradient accumulation beyond it).
    """

    em_rounds: int = integer(2, minimum=1)
    gnn_steps: int | None = integer(10, minimum=0, optional=True)
    lr: float = number(1e-2, minimum=0.0, inclusive=False)
    weight_decay: float = number(1e-2, minimum=0.0)
    step_work: int | None = integer(2**21, minimum=1, optional=True)
    ae_epochs: int = integer(30, minimum=0)
    ae_steps: int = integer(10, minimum=0)
    ae_batch_size: int = integer(512, minimum=1)
    ae_lr: float = number(1e-2, minimum=0.0, inclusive=False)
    ae_weight_decay: float = number(1e-4, minimum=0.0)
    reliability_steps: int | None = integer(None, minimum=0, optional=True)
    reliability_max_cells: int = integer(20000, minimum=1)
    memory_budget_gb: float = number(1.0, minimum=0.0, inclusive=False)


#: Bytes of the largest tensor one prediction chunk allocates. Larger buffers lie above
#: glibc's mmap threshold (32 MiB at most), so every chunk would map fresh pages that the
#: kernel zero-fills; below it, the freed buffers of one chunk are reused by the next.
PREDICTION_TENSOR_BYTES = 2**24


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
    preset
        ``"fast"`` (default) or ``"paper"`` (every setting of the original code).
    **options
        See :class:`StImputeArchitecture` and :class:`StImputeSchedule`.

    Examples
    --------
    >>> model = StImpute(spatial, reference, gene_embeddings="emb.csv.gz")  # doctest: +SKIP
    >>> out = model.impute()                                               # doctest: +SKIP
    """

    method_name = "stimpute"
    Architecture = StImputeArchitecture
    Schedule = StImputeSchedule
    presets = {
        "fast": {},
        "paper": {"graph_mixing": "dense", "neighbor_space": "autoencoder", "reliability_model": "mlp",
                  "hidden": None, "alpha": None, "blend_max_cells": None, "gnn_steps": None, "step_work": None},
    }

    # ------------------------------------------------------------------ settings
    def _resolve_regime(self) -> None:
        """Fill the regime-dependent options from the data's size (written back into the configs)."""
        arch, sched, pd_ = self.architecture, self.schedule, self.paired
        regime = arch.regime
        if regime == "auto":
            regime = "small" if pd_.n_cells < 10_000 and pd_.n_features < 500 else "large"
        table = REGIMES[regime]
        k = arch.k if arch.k is not None else table["k"]
        self.architecture = arch.replace(
            regime=regime, k=int(min(k, pd_.n_reference)),
            hidden=arch.hidden if arch.hidden is not None else table["hidden"],
            alpha=arch.alpha if arch.alpha is not None else table["alpha"],
        )
        self.schedule = sched.replace(
            gnn_steps=sched.gnn_steps if sched.gnn_steps is not None else table["gnn_steps"],
            reliability_steps=sched.reliability_steps if sched.reliability_steps is not None
            else table["reliability_steps"],
        )

    def _chunk(self, n_genes: int) -> int:
        """Cells per GNN chunk within the memory budget (about 12 floats per cell, gene and slot)."""
        arch = self.architecture
        floats_per_cell = n_genes * (12 * arch.k + 8 * arch.hidden + 4)
        budget = self.schedule.memory_budget_gb * 2**30 / 4
        return max(1, int(budget // max(floats_per_cell, 1)))

    def _batch_size(self) -> int | None:
        """Cells per E-step (``None``: all), from ``step_work``."""
        work, n = self.schedule.step_work, self.paired.n_cells
        if work is None:
            return None
        size = max(1, work // (self.paired.n_features * self.architecture.k))
        return None if size >= n else size

    # ------------------------------------------------------------------ pieces
    def _gene_graphs(self) -> tuple[GeneMixing, GeneMixing]:
        arch, pd_ = self.architecture, self.paired
        genes = list(pd_.feature_genes) + list(pd_.target_genes)
        emb = resolve_gene_embeddings(
            arch.gene_embeddings if not isinstance(arch.gene_embeddings, tuple) else list(arch.gene_embeddings),
            esm_fasta=arch.esm_fasta, esm_checkpoint=arch.esm_checkpoint, esm_pooling=arch.esm_pooling,
            esm_layer=arch.esm_layer, esm_cache_dir=arch.esm_cache_dir, genes=genes, device=self.device,
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
        build = GeneMixing.dense if arch.graph_mixing == "dense" else GeneMixing.low_rank
        a_train = torch.as_tensor(aggregation_matrix(sim[:nf, :nf], arch.graph_mode))
        a_pred = torch.as_tensor(aggregation_matrix(sim, arch.graph_mode))
        return build(a_train).to(self.device), build(a_pred).to(self.device)

    def _encode(self, ae: StImputeAE, x: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([ae.encode(x[s:s + chunk]) for s in range(0, x.shape[0], chunk)])

    def _train_ae(self, ae, opt, y, n_reference: int, gen) -> None:
        """Epochs over the shuffled stack of spatial and reference rows; only the spatial rows
        of a batch enter its loss (the reference rows only ride along, as in the original).
        The batch split is computed on the host once per epoch."""
        n_st, n_tot = y.shape[0], y.shape[0] + n_reference
        bs = self.schedule.ae_batch_size
        for _ in progress(range(self.schedule.ae_epochs), desc="stImpute AE"):
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

    def _batch(self, gen: torch.Generator, size: int) -> torch.Tensor:
        sel = torch.randperm(self.paired.n_cells, generator=gen)[:size]
        return torch.sort(sel).values.to(self.device)

    def _m_step(self, ae, opt, y, gnn_pred, steps: int | None = None) -> None:
        n = y.shape[0]
        chunk = max(1, int(self.schedule.memory_budget_gb * 2**30 / 4 // (y.shape[1] * 6 + 300)))
        for _ in range(self.schedule.ae_steps if steps is None else steps):
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
    def _fit_autoencoder(self, y: torch.Tensor, n_reference: int):
        """Train the autoencoder; returns it and its optimiser (which the M-steps continue)."""
        gen = torch.Generator(device="cpu").manual_seed(derive_seed(self.seed, "stimpute-ae-batches"))
        torch.manual_seed(derive_seed(self.seed, "stimpute-ae-init"))
        ae = StImputeAE(self.paired.n_features, self.architecture.latent_dim).to(self.device)
        opt = torch.optim.Adam(ae.parameters(), lr=self.schedule.ae_lr, weight_decay=self.schedule.ae_weight_decay)
        with _few_threads(self.device):
            self._train_ae(ae, opt, y, n_reference, gen)
        return ae, opt

    def _fit_joint(self) -> JointNeighbors:
        pd_ = self.paired
        return JointNeighbors.fit(pd_.spatial_X, pd_.reference_features, self.architecture.n_components, self.seed)

    def _joint_neighbors(self, joint: JointNeighbors, cells: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Cosine neighbours of ``cells`` (default: all) in the joint space of the panel genes,
        found for these cells only."""
        x = self.paired.spatial_X if cells is None else self.paired.spatial_X[cells.cpu().numpy()]
        return joint.search(x, self.architecture.k, self.device)

    def _neighbors(self, cells: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Neighbour indices the GNN reads and the (indices, distances) of the blend's kNN mean,
        for ``cells`` (default: all): found for the cells in the joint space, or rows of the
        autoencoder space's tables."""
        if self._joint is not None:
            joint = self._joint_neighbors(self._joint, cells)
            return joint[0], joint
        if cells is None:
            return self._idx_pred, self._blend_neighbors
        return self._idx_pred[cells], (self._blend_neighbors[0][cells], self._blend_neighbors[1][cells])

    def _fit(self) -> None:
        if self.paired.n_features < 2:
            raise SpatialImputeInputError(
                "spatial", "at least 2 panel genes shared with the reference as model input",
                f"{self.paired.n_features}", "impute fewer genes at once or use a larger panel",
            )
        mix_train, mix_pred = self._gene_graphs()  # reads the embedding sources: fails before training
        self._resolve_regime()
        arch, sched = self.architecture, self.schedule
        pd_, dev = self.paired, self.device
        nf, k = pd_.n_features, arch.k

        batch = self._batch_size()
        # the whole panel as one tensor only where a step reads every cell; batches read their rows
        whole = arch.neighbor_space == "autoencoder" or batch is None or (arch.reliability and arch.reliability_model == "mlp")
        y = torch.as_tensor(np.asarray(pd_.spatial_X), device=dev) if whole else None
        ref_all = torch.as_tensor(pd_.reference_X, dtype=torch.float32, device=dev)
        ref_feat = ref_all[:, :nf].contiguous()

        ae, self._joint = None, None
        if arch.neighbor_space == "autoencoder":
            ae, ae_opt = self._fit_autoencoder(y, pd_.n_reference)

            def neighbors():
                return knn_cosine(self._encode(ae, y), self._encode(ae, ref_feat), k, device=dev)
        else:  # neighbours of the cells each step reads, found when it reads them
            self._joint = self._fit_joint()

        torch.manual_seed(derive_seed(self.seed, "stimpute-gnn-init"))
        gnn = StImputeGNN(k, arch.hidden).to(dev)
        gnn_opt = torch.optim.Adam(gnn.parameters(), lr=sched.lr, weight_decay=sched.weight_decay)
        chunk = self._chunk(nf)
        self.fit_info = {"train_chunk_cells": chunk, "batch_cells": batch, "graph_rank": mix_pred.rank}
        batch_gen = torch.Generator(device="cpu").manual_seed(derive_seed(self.seed, "stimpute-batches"))
        idx = None
        for rnd in range(sched.em_rounds):
            if ae is not None:
                idx, _ = neighbors()
            elif batch is None and idx is None:
                idx, _ = self._neighbors()
            gnn.train()
            for _ in progress(range(sched.gnn_steps), desc=f"stImpute E-step {rnd + 1}"):
                gnn_opt.zero_grad(set_to_none=True)
                if batch is None:
                    loss = gnn_loss_and_backward(gnn, ref_feat, idx, y, mix_train, chunk)
                else:
                    sel = self._batch(batch_gen, batch)
                    sel_idx = idx[sel] if ae is not None else self._neighbors(sel)[0]
                    y_sel = torch.as_tensor(pd_.spatial_X[sel.cpu().numpy()], device=dev) if y is None else y[sel]
                    loss = gnn_loss_and_backward(gnn, ref_feat, sel_idx, y_sel, mix_train, chunk)
                gnn_opt.step()
                self.log("gnn_loss", loss)
            gnn.eval()
            if ae is not None:
                self._refine_autoencoder(ae, ae_opt, gnn, ref_feat, idx, y, mix_train, chunk, batch, batch_gen)

        self._ae, self._gnn = ae, gnn
        self._idx_pred = self._blend_neighbors = None  # the joint space's are found per block of cells
        if ae is not None:
            self._idx_pred = idx  # neighbours of the last round, found before its M-step (as the original)
            self._blend_neighbors = neighbors()  # the final space's neighbours, for the kNN-mean blend
        self._mix_pred = mix_pred
        self._ref_all = ref_all
        self._p_all = None
        self._scanned = None  # (cells, blend parts) of the last scanned block
        if arch.reliability and arch.reliability_model == "mlp":
            self._p_all = self._gnn_predict(all_genes=True)
            self._train_reliability(y)

    def _refine_autoencoder(self, ae, opt, gnn, ref_feat, idx, y, mixing, chunk, batch, batch_gen) -> None:
        """M-step: move the autoencoder towards the GNN's predictions (GNN fixed)."""
        if batch is None:
            with torch.no_grad():
                p_train = gnn_forward_chunked(gnn, ref_feat, idx, mixing, chunk)
            self._m_step(ae, opt, y, p_train)
            return
        sels = [self._batch(batch_gen, batch) for _ in range(self.schedule.ae_steps)]
        if not sels:
            return
        cells = torch.unique(torch.cat(sels))
        with torch.no_grad():
            p_cells = gnn_forward_chunked(gnn, ref_feat, idx[cells], mixing, chunk)
        for sel in sels:
            self._m_step(ae, opt, y[sel], p_cells[torch.searchsorted(cells, sel)], steps=1)

    # ------------------------------------------------------------------ predict
    def _gnn_predict(self, all_genes: bool = False, cells: torch.Tensor | None = None,
                     idx: torch.Tensor | None = None) -> torch.Tensor:
        """GNN predictions of the target genes (or of every graph gene) for ``cells`` (default: all);
        ``idx``: their neighbour indices when already found."""
        pd_ = self.paired
        out_genes = None if all_genes else torch.arange(pd_.n_features, pd_.n_features + pd_.n_targets,
                                                        device=self.device)
        arch, n_genes = self.architecture, pd_.n_features + pd_.n_targets
        widest = 4 * n_genes * max(arch.k, 2 * arch.hidden)  # bytes per cell of the largest activation
        chunk = min(self._chunk(n_genes), max(1, PREDICTION_TENSOR_BYTES // widest))
        if idx is None:
            idx, _ = self._neighbors(cells)
        with torch.no_grad():
            if "reference_projection" not in self._cache:  # once per process
                self._cache["reference_projection"] = self._mix_pred.project(self._ref_all)
            return gnn_forward_chunked(self._gnn.eval(), self._ref_all, idx, self._mix_pred, chunk, out_genes,
                                       self._cache["reference_projection"])

    def _reliability_inputs(self, cols: torch.Tensor) -> torch.Tensor:
        return cols.T[:, self._rel_cells] if self._rel_cells is not None else cols.T

    def _train_reliability(self, y: torch.Tensor) -> None:
        """stImpute's reliability MLP on the in-sample panel-gene predictions."""
        nf, n = self.paired.n_features, self.paired.n_cells
        m = self.schedule.reliability_max_cells
        if n > m:
            g = torch.Generator(device="cpu").manual_seed(derive_seed(self.seed, "stimpute-rel-cells"))
            self._rel_cells = torch.sort(torch.randperm(n, generator=g)[:m]).values.to(self.device)
        else:
            self._rel_cells = None
        p_train = self._p_all[:, :nf]
        x = self._reliability_inputs(p_train)
        target = uncentred_cosine_columns(p_train, y).unsqueeze(1)
        torch.manual_seed(derive_seed(self.seed, "stimpute-rel-init"))
        rel = ReliabilityMLP(x.shape[1], self.architecture.hidden).to(self.device)
        opt = torch.optim.Adam(rel.parameters(), lr=self.schedule.lr, weight_decay=self.schedule.weight_decay)
        losses = []
        with _few_threads(self.device):
            for _ in range(self.schedule.reliability_steps):
                opt.zero_grad(set_to_none=True)
                loss = torch.nn.functional.mse_loss(rel(x), target)
                loss.backward()
                opt.step()
                losses.append(loss.detach())
        for v in (torch.stack(losses).tolist() if losses else []):
            self.log("reliability_loss", v)
        self._rel = rel.eval()

    def _blend_parts(self, cells: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The two parts of the final blend for ``cells``: the GNN's target predictions and the kNN mean."""
        nf, k = self.paired.n_features, self.architecture.k
        rows = torch.as_tensor(cells, device=self.device)
        gnn_idx, (idx, dist) = self._neighbors(rows)
        if self._p_all is not None:
            gnn = self._p_all[rows, nf:]
        else:
            gnn = self._gnn_predict(cells=rows, idx=gnn_idx)
        chunk = max(1, PREDICTION_TENSOR_BYTES // (4 * k * self.paired.n_targets))
        return gnn, weighted_knn_mean(self._ref_all[:, nf:], idx, dist, chunk)

    def _scan_block(self, cells: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The block's share of the blend's global maxima (:func:`blend_statistics`).

        The block's parts are kept until the block is predicted, so that data predicted in
        one block (the usual in-memory call) runs the GNN once, not twice.
        """
        parts = self._blend_parts(cells)
        self._scanned = (np.array(cells, copy=True), parts)
        return tuple(t.cpu() for t in blend_statistics(*parts))

    def _scan_cells(self, order: np.ndarray, block_size: int) -> np.ndarray:
        """All cells, or a random sample of ``blend_max_cells`` of them when they fill several blocks."""
        m = self.architecture.blend_max_cells
        if m is None or len(order) <= max(m, block_size):
            return order
        rng = np.random.default_rng(derive_seed(self.seed, "stimpute-blend-cells"))
        return np.sort(rng.choice(len(order), m, replace=False))  # model cell indices, whatever the output order

    def _merge_scans(self, parts: list) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.stack([gmax for gmax, _ in parts]).max(),
                torch.stack([cmax for _, cmax in parts]).max(dim=0).values)

    def _predict_block(self, cells: np.ndarray, stats) -> np.ndarray:
        """``final_blend`` of the block, rescaled with the maxima over all cells or the blend sample (``stats``)."""
        stats = tuple(t.to(self.device) for t in stats)
        scanned = self._scanned
        self._scanned = None
        if scanned is not None and np.array_equal(scanned[0], cells):
            parts = scanned[1]
        else:
            parts = self._blend_parts(cells)
        return final_blend(*parts, float(self.architecture.alpha), stats).cpu().numpy()

    def _reliability(self, prediction) -> np.ndarray:
        arch, pd_, nf = self.architecture, self.paired, self.paired.n_features
        if not arch.reliability:
            return np.full(prediction.shape[1], np.nan)
        if arch.reliability_model == "mlp":
            if self._p_all is not None:
                inputs = self._reliability_inputs(self._p_all[:, nf:])
            else:  # only the cells the reliability model reads
                inputs = self._gnn_predict(cells=self._rel_cells).T
            with torch.no_grad():
                score = self._rel(inputs).squeeze(1)
            return np.clip(score.cpu().numpy().astype(np.float64), 0.0, 1.0)
        # Descriptor model: held-out panel genes and the targets are both described through
        # the joint-space kNN stand-in, so the model is applied to the kind of prediction it
        # was fitted on (re-training stImpute per internal gene fold would cost 5 fits).
        targets = np.arange(nf, nf + pd_.n_targets)
        joint = self._joint if self._joint is not None else self._fit_joint()

        def stand_in(cells: np.ndarray) -> np.ndarray:
            rows = torch.as_tensor(cells, device=self.device)
            return knn_average(pd_, self._joint_neighbors(joint, rows), targets, "similarity", self.device)

        predict_heldout = knn_heldout_predictor(pd_, k=arch.k, n_components=arch.n_components, seed=self.seed,
                                                device=self.device)
        return reliability_from_heldout(pd_, predict_heldout, stand_in, seed=self.seed)

    # ------------------------------------------------------------------ save / load
    def _state_dict(self) -> dict:
        state = {f"gnn.{k}": v for k, v in self._gnn.state_dict().items()}
        if self._ae is not None:
            state.update({f"ae.{k}": v for k, v in self._ae.state_dict().items()})
        if self.architecture.reliability and self.architecture.reliability_model == "mlp":
            state.update({f"rel.{k}": v for k, v in self._rel.state_dict().items()})
            if self._rel_cells is not None:
                state["rel_cells"] = self._rel_cells
        state.update({f"mix.{k}": v for k, v in self._mix_pred.state().items()})
        if self._joint is not None:
            state.update({f"embedding.{k}": v for k, v in self._joint.embedding.state().items()})
        else:
            state["idx_pred"] = self._idx_pred.to(torch.int64)
            state["blend_idx"] = self._blend_neighbors[0].to(torch.int64).clone()  # may be idx_pred itself
            state["blend_dist"] = self._blend_neighbors[1]
        state["embedding_coverage"] = dict(self.embedding_coverage)
        return state

    def _load_state_dict(self, state: dict) -> None:
        arch, dev, pd_ = self.architecture, self.device, self.paired
        if arch.k is None or arch.hidden is None or arch.alpha is None:
            raise SpatialImputeInputError("path", "a saved stImpute model with resolved k, hidden and alpha",
                                          "unresolved options", "the folder was edited: save the model again")
        self.embedding_coverage = state.get("embedding_coverage", {})
        self._joint, self._idx_pred, self._blend_neighbors = None, None, None
        if arch.neighbor_space == "joint":
            self._joint = JointNeighbors.from_state(
                {k[len("embedding."):]: v for k, v in state.items() if k.startswith("embedding.")}, pd_.reference_features)
        else:
            shape = (pd_.n_cells, arch.k)
            idx = state["idx_pred"].to(dev, torch.int64)
            blend = state["blend_idx"].to(dev, torch.int64)
            for name, t in (("idx_pred", idx), ("blend_idx", blend)):
                if tuple(t.shape) != shape or (t.numel() and (int(t.min()) < 0 or int(t.max()) >= pd_.n_reference)):
                    raise SpatialImputeInputError(
                        "path", f"neighbour tables of shape {shape} indexing {pd_.n_reference} reference cells",
                        f"{name} of shape {tuple(t.shape)}", "the folder is damaged or was edited: save the model again")
            self._idx_pred, self._blend_neighbors = idx, (blend, state["blend_dist"].to(dev))
        mixing = GeneMixing.from_state({k[4:]: v for k, v in state.items() if k.startswith("mix.")})
        if mixing.n_genes != pd_.n_features + pd_.n_targets:
            raise SpatialImputeInputError("path", f"a gene graph over {pd_.n_features + pd_.n_targets} genes",
                                          f"{mixing.n_genes} genes", "the folder is damaged: save the model again")
        gnn = StImputeGNN(arch.k, arch.hidden).to(dev)
        gnn.load_state_dict({k[4:]: v for k, v in state.items() if k.startswith("gnn.")})
        self._gnn = gnn.eval()
        self._ae = None
        if any(k.startswith("ae.") for k in state):
            ae = StImputeAE(pd_.n_features, arch.latent_dim).to(dev)
            ae.load_state_dict({k[3:]: v for k, v in state.items() if k.startswith("ae.")})
            self._ae = ae.eval()
        rel_w = {k[4:]: v for k, v in state.items() if k.startswith("rel.")}
        if rel_w:
            rel = ReliabilityMLP(rel_w["net.0.weight"].shape[1], arch.hidden).to(dev)
            rel.load_state_dict(rel_w)
            self._rel = rel.eval()
            self._rel_cells = state["rel_cells"].to(dev) if "rel_cells" in state else None
        self._mix_pred = mixing.to(dev)
        self._ref_all = torch.as_tensor(pd_.reference_X, dtype=torch.float32, device=dev)
        self._p_all = None
        self._scanned = None  # (cells, blend parts) of the last scanned block

    def provenance(self) -> dict:
        """Base provenance plus the embedding coverage and how training was cut into work."""
        out = super().provenance()
        out["embedding_coverage"] = dict(getattr(self, "embedding_coverage", {}))
        out["fit"] = dict(getattr(self, "fit_info", {}))
        return out
