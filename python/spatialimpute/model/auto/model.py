"""``method="auto"``: choose, weight and refine the methods on the user's own panel genes."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..._stats import spearman_columns
from ..._validation import SpatialImputeInputError, SpatialImputeWarning
from ...data.neighbors import neighbor_mean
from ...data.normalize import column_moments
from ...data.spatial_graph import section_knn
from ...reliability import DESCRIPTORS, gene_descriptors
from .._base import BaseImputer
from ..knn import KNNImpute
from ..registry import get_method
from .config import AutoArchitecture, AutoSchedule, Candidate, candidates
from .._blocks import default_block_size
from .inner_cv import run_inner_cv, sample_cells
from .intervals import gene_reliability, group_quantiles, interval_scale, local_spread
from .refine import choose_residual_propagation, choose_smoothing, propagate_residuals, residual_graph
from .stacking import combine, gene_moments, member_agreement, stack_weights, zscores

#: Spatial neighbours of the per-cell interval scale and of the reliability descriptors.
SPREAD_NEIGHBORS = 6
#: Largest number of cell groups of the per-cell intervals (fewer for small data).
MAX_CELL_GROUPS = 5
#: Fewest cells per group of the per-cell intervals.
CELLS_PER_GROUP = 500
#: Most worker processes of the inner cross-validation (each holds torch and a fold's data).
MAX_INNER_WORKERS = 8


class AutoImpute(BaseImputer):
    """Self-validating ensemble: the members are judged on the user's own panel genes.

    1. **Inner cross-validation** (:mod:`.inner_cv`): the panel genes are split into
       ``inner_folds`` folds; every candidate (each member; the kNN baseline as a small grid)
       is trained with a fold hidden and predicts it, on at most ``inner_cells`` cells.
    2. **Stacking** (:mod:`.stacking`): non-negative weights of the members' per-gene
       z-scores that maximise the combination's mean per-gene correlation with the measured
       ranks of the held-out panel genes; members with weight 0 are not trained on the full
       panel.
    3. **Refinement** (:mod:`.refine`): smoothing over the spatial neighbours within each
       section, with a neighbourhood size and strength (0 allowed) chosen on the held-out
       genes; then the panel genes' held-out residuals propagated to correlated genes (the
       idea of SPRITE), with a strength (0 allowed) chosen the same way.
    4. **Reliability** (:mod:`.intervals`): per target gene the predicted Spearman
       correlation (descriptor model fitted on what the ensemble did on the held-out genes;
       its descriptors include how well the members agree on the gene) with a conformal
       interval, and per member; per cell and gene a conformal prediction
       interval in ``layers["lower"]`` / ``layers["upper"]``.

    The members' final models are trained on all panel genes and all cells, and the result is
    the weighted, refined combination mapped to the log-normalised scale of the member with
    the largest weight. What was chosen and every member's inner-CV score are in
    :meth:`summary` and ``uns["spatialimpute"]["auto"]``.

    Parameters
    ----------
    spatial, reference, genes, seed, device, **kwargs
        See :class:`~spatialimpute.model._base.BaseImputer`.
    **options
        See :class:`~spatialimpute.model.auto.config.AutoArchitecture`.
    """

    method_name = "auto"

    Architecture = AutoArchitecture
    Schedule = AutoSchedule

    def _uses_counts(self) -> bool:
        return any(get_method(c.method).reads_counts for c in candidates(self.architecture))

    # ----------------------------------------------------------------- training
    def _fit(self) -> None:
        arch, p = self.architecture, self.paired
        if p.n_features < 2:
            raise SpatialImputeInputError("spatial", "at least 2 panel genes shared with the reference for method='auto'",
                                          f"{p.n_features}", "use method='knn' for a panel this small")
        heldout = run_inner_cv(p, candidates(arch), n_folds=arch.inner_folds, max_cells=arch.inner_cells,
                               seed=self.seed, device=self.device, num_threads=self.num_threads,
                               workers=self._inner_workers())
        if not heldout.predictions:
            raise SpatialImputeInputError("members", "at least one member that runs on these data",
                                          "; ".join(f"{k}: {v}" for k, v in heldout.failed.items()),
                                          "add 'knn' to members")
        names = list(heldout.predictions)
        truth = heldout.truth
        preds = [heldout.predictions[n] for n in names]
        weights = stack_weights(truth, preds, seed=self.seed)
        moments = [gene_moments(x) for x in preds]
        anchor = int(np.argmax(weights))
        combined_z = combine(preds, [m for m, _ in moments], [s for _, s in moments], weights)
        combined_sd = gene_moments(combined_z)[1]
        combined = moments[anchor][0] + moments[anchor][1] * combined_z / combined_sd
        coords, sections = p.coords[heldout.cells], p.sample_ids[heldout.cells]
        smoothing, refined = choose_smoothing(truth, combined, coords, sections)
        propagation = self._fit_residual_propagation(heldout, refined)
        final = refined
        if propagation["strength"]:
            graph = residual_graph(p.reference_features, p.reference_features, exclude_self=True)
            final = refined + propagation["strength"] * propagate_residuals(truth - refined, graph)
        final = np.maximum(final, 0.0)  # as the output (log-normalised expression is never negative)
        member_spcc = {n: spearman_columns(truth, x) for n, x in zip(names, preds)}

        by_name = {c.name: c for c in candidates(arch)}
        self._candidates = [by_name[n] for n, w in zip(names, weights) if w > 0]
        self._weights = np.array([w for w in weights if w > 0])
        self._members = {}
        for c in self._candidates:
            self._members[c.name] = get_method(c.method).from_paired(
                p, seed=self.seed, device=self.device, num_threads=self.num_threads, reliability=False,
                **c.kwargs()).train()
        self._smoothing = (smoothing["neighbors"], smoothing["strength"])
        self._anchor = names[anchor]
        graph = section_knn(coords, SPREAD_NEIGHBORS, sections)  # of the inner cells, for the descriptors
        self._fit_scales(heldout.cells, graph)
        self.fit_info = {
            "inner_folds": len(heldout.folds), "inner_cells": int(heldout.cells.size),
            "members": {n: {"weight": float(w), "inner_spcc": float(member_spcc[n].mean()),
                            "inner_seconds": float(heldout.seconds[n])} for n, w in zip(names, weights)},
            "failed": dict(heldout.failed), "anchor": self._anchor,
            "ensemble_inner_spcc": float(spearman_columns(truth, combined).mean()),
            "smoothing": {k: v for k, v in smoothing.items()},
            "residual_propagation": propagation,
        }
        if arch.reliability:
            self._fit_reliability(heldout, graph, names, preds, final, combined,
                                  member_agreement(combined_sd, weights))

    def _fit_residual_propagation(self, heldout, refined: np.ndarray) -> dict:
        """Choose the strength of propagating the panel genes' held-out residuals to the targets.

        The residuals are known only for the cells of the inner cross-validation, so the
        refinement is a candidate only when those are all the cells.
        """
        p = self.paired
        self._residual_strength = 0.0
        if heldout.cells.size < p.n_cells:
            return {"strength": 0.0, "available": False,
                    "why": f"inner cross-validation on {heldout.cells.size} of {p.n_cells} cells"}
        choice = choose_residual_propagation(heldout.truth, refined, p.reference_features)
        if choice["strength"]:
            self._residual_strength = choice["strength"]
            self._residuals = (heldout.truth - refined).astype(np.float32)
            self._residual_graph = residual_graph(p.reference_features, p.reference_targets)
        return {**choice, "available": True}

    def _inner_workers(self) -> int:
        """Processes for the inner cross-validation: one per CPU thread granted (one on a GPU)."""
        if self.device.type != "cpu":
            return 1
        import torch

        from ..._settings import settings

        threads = self.num_threads or settings.num_threads or torch.get_num_threads()
        return int(max(1, min(threads, MAX_INNER_WORKERS)))

    def _fit_scales(self, cells: np.ndarray, graph: np.ndarray) -> None:
        """Per-gene mean and SD of each final member's target prediction, and of the combination, on ``cells``.

        One member's rows at a time, each predicted block by block (memory: two cells x
        targets matrices, and a member's working memory for one block); what the members'
        reliability needs of them is kept as per-gene descriptors (with ``reliability``).
        """
        p, stats = self.paired, self._member_stats()
        self._scales, self._sample_descriptors, z = {}, {}, None
        size = default_block_size(p.n_cells, p.n_targets)
        for c, weight in zip(self._candidates, self._weights):
            member = self._members[c.name]
            rows = np.empty((cells.size, p.n_targets), dtype=np.float32)
            for start in range(0, cells.size, size):
                rows[start:start + size] = member._block_rows(cells[start:start + size], stats[c.name])["X"]
            self._scales[c.name] = gene_moments(rows)
            if self.architecture.reliability:
                self._sample_descriptors[c.name] = (gene_descriptors(rows, p.reference_targets, graph),
                                                    np.ptp(rows, axis=0) == 0)
            part = weight * zscores(rows, *self._scales[c.name])
            z = part if z is None else z + part
            del rows
        self._combined_sd = gene_moments(z)[1]

    def _member_stats(self) -> dict:
        """Each member's global prediction statistics, scanned over the cells the member's own
        rule picks (:meth:`_scan_cells`, e.g. stImpute's sample), once per process."""
        if "member_stats" not in self._cache:
            n, stats = self.paired.n_cells, {}
            size = default_block_size(n, self.paired.n_targets)
            for name, model in self._members.items():
                if model._has_scan():
                    cells = model._scan_cells(np.arange(n), size)
                    stats[name] = model._merge_scans([model._scan_block(cells[s:s + size])
                                                      for s in range(0, cells.size, size)])
                else:
                    stats[name] = None
            self._cache["member_stats"] = stats
        return self._cache["member_stats"]

    def _combine_z(self, cells: np.ndarray) -> np.ndarray:
        """The members' weighted z-score sum for ``cells``, one member's rows held at a time."""
        names = [c.name for c in self._candidates]
        return combine(self._member_rows(cells, names), [self._scales[n][0] for n in names],
                       [self._scales[n][1] for n in names], self._weights)

    def _member_rows(self, cells: np.ndarray, names: list[str]):
        """Each member's rows of ``cells`` in turn. The kNN members (the grid's neighbourhood sizes
        and weightings, fitted in one joint space) share one search for the largest ``k``."""
        stats = self._member_stats()
        knn = [n for n in names if isinstance(self._members[n], KNNImpute)]
        shared = None
        if len(knn) > 1 and len({self._members[n].architecture.n_components for n in knn}) == 1:
            shared = self._members[knn[0]].neighbors(cells, max(self._members[n].architecture.k for n in knn))
        for n in names:
            if shared is not None and n in knn:
                yield self._members[n].average(*shared)
            else:
                yield self._members[n]._block_rows(cells, stats[n])["X"]

    def _fit_reliability(self, heldout, graph, names, preds, final, combined, agreement) -> None:
        """Gene reliability (ensemble and members) and the per-cell interval quantiles.

        ``final`` is the ensemble's refined held-out prediction (as the output is made),
        ``combined`` the combination before refinement (whose spread scales the intervals),
        ``agreement`` the members' agreement on each held-out gene (an extra descriptor of
        the ensemble's reliability).
        """
        p, level = self.paired, self.architecture.interval_level
        cells = heldout.cells
        ref_features = p.reference_features
        self._heldout_descriptors = np.column_stack([gene_descriptors(final, ref_features, graph), agreement])
        self._heldout_spcc = spearman_columns(heldout.truth, final)
        self._member_reliability = {}
        for name in self._members:
            x = preds[names.index(name)]
            target_descriptors, flat = self._sample_descriptors[name]
            estimate = gene_reliability(gene_descriptors(x, ref_features, graph), spearman_columns(heldout.truth, x),
                                        target_descriptors, level=level, seed=self.seed)
            self._member_reliability[name] = np.where(flat[None, :], 0.0, np.stack(estimate))
        del self._sample_descriptors
        from sklearn.cluster import KMeans

        n_groups = int(min(MAX_CELL_GROUPS, max(1, cells.size // CELLS_PER_GROUP)))
        kmeans = KMeans(n_clusters=n_groups, n_init=3, random_state=self.seed).fit(p.spatial_X[cells])
        self._group_centers = kmeans.cluster_centers_.astype(np.float32)
        spread = local_spread(combined, np.arange(cells.size), graph)
        scale = interval_scale(ref_features.std(axis=0), spread)
        self._group_q = group_quantiles(heldout.truth - final, scale, kmeans.labels_, n_groups, level)
        self.fit_info["intervals"] = {"level": level, "cell_groups": n_groups,
                                      "group_quantiles": [float(q) for q in self._group_q]}

    # ----------------------------------------------------------------- prediction
    def _output_layers(self) -> tuple[str, ...]:
        return ("lower", "upper") if self.architecture.reliability else ()

    def _graphs(self) -> tuple[np.ndarray | None, np.ndarray]:
        """Spatial neighbours of every cell: the smoothing graph (``None`` without smoothing) and the spread graph."""
        if "graphs" not in self._cache:
            p = self.paired
            k, strength = self._smoothing
            self._cache["graphs"] = (section_knn(p.coords, k, p.sample_ids) if strength else None,
                                     section_knn(p.coords, SPREAD_NEIGHBORS, p.sample_ids))
        return self._cache["graphs"]

    def _rows_needed(self, cells: np.ndarray) -> np.ndarray:
        """The cells whose members' rows a block of ``cells`` needs: its own and their spatial neighbours."""
        smooth_graph, spread_graph = self._graphs()
        needed = [cells]
        if smooth_graph is not None:
            needed.append(smooth_graph[cells].ravel())
        if self.architecture.reliability:
            needed.append(spread_graph[cells].ravel())
        return np.unique(np.concatenate(needed))

    def _check_blocks(self, blocks: list[np.ndarray]) -> None:
        """Warn, in the calling process (a cluster's workers would keep the warning), when the
        first block needs the members' rows of more than twice its cells."""
        rows = self._rows_needed(blocks[0]).size
        if rows > 2 * blocks[0].size:
            warnings.warn(f"auto: a block of {blocks[0].size} cells needs its members' predictions of {rows} cells "
                          "(the block's cells and their spatial neighbours): the cells are not in spatial order, so "
                          "every block repeats its neighbours' work. Sorting the cells by position first, "
                          "spatial = spatial[si.spatial_order(spatial.obsm['spatial'])] (several sections: pass "
                          "their obs column as sample_ids), limits that work to the blocks' borders.",
                          SpatialImputeWarning, stacklevel=3)

    def _predict_block(self, cells: np.ndarray, stats):
        """The refined combination for ``cells`` (and its interval), from the members' rows of the cells and their neighbours."""
        smooth_graph, spread_graph = self._graphs()
        rows_of = self._rows_needed(cells)
        mean, sd = self._scales[self._anchor]
        combined = (mean + sd * self._combine_z(rows_of) / self._combined_sd).astype(np.float32)
        local = np.searchsorted(rows_of, cells)
        out = combined[local]
        if smooth_graph is not None:
            strength = self._smoothing[1]
            neighbors = np.searchsorted(rows_of, smooth_graph[cells])
            out = (1 - strength) * out + strength * neighbor_mean(combined, neighbors)
        if self._residual_strength:
            out = out + self._residual_strength * propagate_residuals(self._residuals[cells], self._residual_graph)
        out = np.maximum(out, 0.0)  # log-normalised expression is never negative
        if not self.architecture.reliability:
            return out
        spread = local_spread(combined, local, np.searchsorted(rows_of, spread_graph[cells]))
        half = self._group_q[self._cell_groups(cells)][:, None] * interval_scale(
            self._reference_sd(), spread)
        return {"X": out, "lower": np.maximum(out - half, 0.0), "upper": out + half}

    def _cell_groups(self, cells: np.ndarray) -> np.ndarray:
        """Interval group of each cell: the nearest k-means centre of its panel genes."""
        x = np.asarray(self.paired.spatial_X[cells], dtype=np.float32)
        distances = (x * x).sum(axis=1)[:, None] - 2 * x @ self._group_centers.T + (self._group_centers ** 2).sum(axis=1)
        return np.argmin(distances, axis=1)

    def _reference_sd(self) -> np.ndarray:
        if "reference_sd" not in self._cache:
            self._cache["reference_sd"] = column_moments(self.paired.reference_targets)[1]
        return self._cache["reference_sd"]

    def _reliability(self, prediction):
        n = prediction.shape[1]
        if not self.architecture.reliability:
            return np.full(n, np.nan)
        p = self.paired
        cells = sample_cells(p.n_cells, self.architecture.inner_cells, np.random.default_rng(self.seed))
        graph = section_knn(p.coords[cells], SPREAD_NEIGHBORS, p.sample_ids[cells])
        rows = prediction(cells)
        descriptors = np.column_stack([gene_descriptors(rows, p.reference_targets, graph),
                                       member_agreement(self._combined_sd, self._weights)])
        predicted, lower, upper = gene_reliability(self._heldout_descriptors, self._heldout_spcc, descriptors,
                                                   level=self.architecture.interval_level, seed=self.seed)
        flat = np.ptp(rows, axis=0) == 0  # a constant prediction ranks no cells: its correlation is 0
        columns = {"reliability": np.where(flat, 0.0, predicted), "reliability_lower": np.where(flat, 0.0, lower),
                   "reliability_upper": np.where(flat, 0.0, upper)}
        for name, (estimate, low, high) in self._member_reliability.items():
            columns.update({f"reliability_{name}": estimate, f"reliability_{name}_lower": low,
                            f"reliability_{name}_upper": high})
        return columns

    # ----------------------------------------------------------------- save / load
    def _state_dict(self) -> dict:
        state = {"weights": self._weights, "combined_sd": self._combined_sd,
                 "candidates": [[c.name, c.method, [list(o) for o in c.options]] for c in self._candidates],
                 "anchor": self._anchor, "smoothing": list(self._smoothing), "fit_info": self.fit_info,
                 "residual_strength": self._residual_strength,
                 "member_configs": {n: m.config() for n, m in self._members.items()}}
        for name, model in self._members.items():
            state[f"scale_mean.{name}"], state[f"scale_sd.{name}"] = self._scales[name]
            state.update({f"member.{name}.{k}": v for k, v in model._state_dict().items()})
        if self._residual_strength:
            graph = self._residual_graph.tocoo()
            state.update(residuals=self._residuals, residual_rows=graph.row.astype(np.int64),
                         residual_columns=graph.col.astype(np.int64), residual_weights=graph.data)
        if self.architecture.reliability:
            state.update(group_q=self._group_q, group_centers=self._group_centers,
                         heldout_descriptors=self._heldout_descriptors, heldout_spcc=self._heldout_spcc)
            state.update({f"member_reliability.{n}": v for n, v in self._member_reliability.items()})
        return state

    def _load_state_dict(self, state: dict) -> None:
        def array(key):
            value = state[key]
            return value.cpu().numpy() if hasattr(value, "cpu") else np.asarray(value)

        self._candidates = [Candidate(name, method, tuple((k, v) for k, v in options))
                            for name, method, options in state["candidates"]]
        self._weights = array("weights").astype(np.float64)
        if len(self._weights) != len(self._candidates):
            raise ValueError("one weight per member expected")
        self._combined_sd = array("combined_sd")
        self._anchor, self._smoothing = state["anchor"], (int(state["smoothing"][0]), float(state["smoothing"][1]))
        self.fit_info = state["fit_info"]
        self._residual_strength = float(state["residual_strength"])
        if self._residual_strength:
            self._residuals = array("residuals").astype(np.float32)
            import scipy.sparse as sp

            self._residual_graph = sp.csc_matrix(
                (array("residual_weights"), (array("residual_rows"), array("residual_columns"))),
                shape=(self.paired.n_features, self.paired.n_targets))
            if self._residuals.shape != (self.paired.n_cells, self.paired.n_features):
                raise ValueError("residuals of another shape than the data")
        self._members, self._scales = {}, {}
        for c in self._candidates:
            cls, config = get_method(c.method), state["member_configs"][c.name]
            model = cls.from_paired(self.paired, seed=self.seed, device=self.device, num_threads=self.num_threads,
                                    preset=config["preset"])
            model.architecture = cls.Architecture.from_dict(config["architecture"], f"member {c.name}: architecture")
            model.schedule = cls.Schedule.from_dict(config["schedule"], f"member {c.name}: schedule")
            prefix = f"member.{c.name}."
            model._load_state_dict({k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)})
            model.is_trained = True
            self._members[c.name] = model
            self._scales[c.name] = (array(f"scale_mean.{c.name}"), array(f"scale_sd.{c.name}"))
        if self.architecture.reliability:
            self._group_q, self._group_centers = array("group_q"), array("group_centers")
            self._heldout_descriptors, self._heldout_spcc = array("heldout_descriptors"), array("heldout_spcc")
            if self._heldout_descriptors.shape[1] != len(DESCRIPTORS) + 1:
                raise ValueError("reliability descriptors of another kind (saved by an earlier version): "
                                 "train and save the model again")
            self._member_reliability = {c.name: array(f"member_reliability.{c.name}") for c in self._candidates}

    # ----------------------------------------------------------------- reporting
    def summary(self) -> pd.DataFrame:
        """One row per candidate: its mean inner-CV Spearman correlation, weight and time."""
        if not self.is_trained:
            raise RuntimeError("train() the model first")
        return _member_table(self.fit_info)

    def provenance(self) -> dict:
        """Base provenance plus what the inner cross-validation chose (``auto``)."""
        out = super().provenance()
        out["auto"] = dict(getattr(self, "fit_info", {}))
        return out


def _member_table(fit_info: dict) -> pd.DataFrame:
    table = pd.DataFrame.from_dict(fit_info["members"], orient="index")
    table.index.name = "member"
    return table.sort_values(["weight", "inner_spcc"], ascending=False)


def ensemble_summary(result) -> pd.DataFrame:
    """The members' inner-CV scores, weights and times of an ``auto`` result (AnnData or its provenance dict)."""
    provenance = result if isinstance(result, dict) else result.uns["spatialimpute"]
    if provenance.get("method") != "auto":
        raise SpatialImputeInputError("result", "the result of method='auto'", repr(provenance.get("method")),
                                      "pass an AnnData returned by si.impute(..., method='auto')")
    return _member_table(provenance["auto"])
